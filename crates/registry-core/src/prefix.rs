//! An image prefix (what `MOLECULE_IMAGE_REGISTRY` holds): where images live, split into the
//! registry HOST and the repository path under it. Every surface that talks to a registry
//! (digest checks, token requests, Docker pulls) takes its host from here, never from a
//! hard-coded name. It reads no environment and knows no product defaults: the edge hands it
//! the value and names the source.

use std::fmt;
use std::str::FromStr;

use crate::host::{RegistryHost, looks_like_host};
use crate::path::path_problem;

/// A registry host and the repository path images live under (possibly empty for a bare host).
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct RegistryPrefix {
    host: RegistryHost,
    path: String,
}

/// Why a prefix was rejected; names the value and the form expected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "{source_name}={value:?} is not a valid image prefix: {reason}; expected `host[:port]/path` such as `ghcr.io/molecule-ai` or `004947743811.dkr.ecr.us-east-2.amazonaws.com/molecule-ai`"
)]
pub struct PrefixError {
    source_name: String,
    value: String,
    reason: String,
}

impl RegistryPrefix {
    /// Parses a prefix, naming `source_name` (a variable or flag) in errors.
    pub fn parse_named(raw: &str, source_name: &str) -> Result<RegistryPrefix, PrefixError> {
        let error = |reason: String| PrefixError {
            source_name: source_name.to_owned(),
            value: raw.to_owned(),
            reason,
        };
        let value = raw.trim();
        let value = value.strip_suffix('/').unwrap_or(value);
        if value.is_empty() {
            return Err(error("it is empty".into()));
        }
        if value.starts_with('/') {
            return Err(error("the host is empty (the value starts with `/`)".into()));
        }
        if value.contains("://") {
            return Err(error("it has a URL scheme; give the host without `https://`".into()));
        }
        if value.chars().any(char::is_whitespace) {
            return Err(error("it contains whitespace".into()));
        }
        // `user:password@host/path` (URL userinfo): refused without echoing the value.
        if let Some((userinfo, _)) = value.split_once('@')
            && !userinfo.contains('/')
        {
            return Err(PrefixError {
                source_name: source_name.to_owned(),
                value: "***@...".to_owned(),
                reason: "credentials in the registry address; give them in the credential variables or Docker's config.json, not in the prefix".into(),
            });
        }
        if value.contains('@') {
            return Err(error(
                "it contains a digest (`@`); a prefix names a repository path only".into(),
            ));
        }
        let (first, rest) = match value.split_once('/') {
            Some((first, rest)) => (first, Some(rest)),
            None => (value, None),
        };
        let (host, path) = if looks_like_host(first) {
            let host = first.parse::<RegistryHost>().map_err(|e| error(e.to_string()))?;
            (host, rest.unwrap_or(""))
        } else {
            (RegistryHost::docker_hub(), value)
        };
        if path.contains(':') {
            return Err(error(
                "it contains a tag (`:` in the path); a prefix names a repository path only".into(),
            ));
        }
        if (!path.is_empty() || rest.is_some())
            && let Some(problem) = path_problem(path)
        {
            return Err(error(format!("the path {path:?} {problem}")));
        }
        Ok(RegistryPrefix {
            host,
            path: path.to_owned(),
        })
    }

    pub fn host(&self) -> &RegistryHost {
        &self.host
    }

    /// The repository path under the host; empty for a bare host.
    pub fn path(&self) -> &str {
        &self.path
    }

    /// The repository name of `image` under this prefix.
    pub fn repository(&self, image: &str) -> String {
        if self.path.is_empty() {
            image.to_owned()
        } else {
            format!("{}/{image}", self.path)
        }
    }
}

impl FromStr for RegistryPrefix {
    type Err = PrefixError;

    fn from_str(value: &str) -> Result<Self, Self::Err> {
        Self::parse_named(value, "prefix")
    }
}

impl fmt::Display for RegistryPrefix {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.path.is_empty() {
            write!(f, "{}", self.host)
        } else {
            write!(f, "{}/{}", self.host, self.path)
        }
    }
}

impl fmt::Debug for RegistryPrefix {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "RegistryPrefix({self})")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rstest::rstest;

    #[rstest]
    #[case::ghcr("ghcr.io/molecule-ai", "ghcr.io", "molecule-ai")]
    #[case::ecr(
        "004947743811.dkr.ecr.us-east-2.amazonaws.com/molecule-ai",
        "004947743811.dkr.ecr.us-east-2.amazonaws.com",
        "molecule-ai"
    )]
    #[case::port_and_nested_path("registry.example.com:5443/a/b", "registry.example.com:5443", "a/b")]
    #[case::localhost("localhost:5000/x", "localhost:5000", "x")]
    #[case::bare_localhost("localhost", "localhost", "")]
    #[case::ipv6("[::1]:5000/x", "[::1]:5000", "x")]
    #[case::bare_host("registry.example.com", "registry.example.com", "")]
    #[case::bare_host_trailing_slash("registry.example.com/", "registry.example.com", "")]
    #[case::docker_hub_namespace("molecule-ai", "docker.io", "molecule-ai")]
    #[case::docker_hub_nested("molecule-ai/team", "docker.io", "molecule-ai/team")]
    #[case::explicit_docker_hub("docker.io/molecule-ai", "docker.io", "molecule-ai")]
    #[case::whitespace_and_trailing_slash("  ghcr.io/molecule-ai/ \n", "ghcr.io", "molecule-ai")]
    #[case::uppercase_host_is_folded("GHCR.io/molecule-ai", "ghcr.io", "molecule-ai")]
    #[case::host_without_dot_but_port("myregistry:5000/team", "myregistry:5000", "team")]
    #[case::gitea_user("gitea.example.com/molecule", "gitea.example.com", "molecule")]
    fn prefix_splits_host_and_path(#[case] input: &str, #[case] host: &str, #[case] path: &str) {
        let prefix: RegistryPrefix = input.parse().expect("valid prefix");
        assert_eq!(prefix.host().as_str(), host);
        assert_eq!(prefix.path(), path);
        assert!(!prefix.host().as_str().is_empty());
    }

    #[rstest]
    #[case::scheme("https://ghcr.io/molecule-ai", "scheme")]
    #[case::uppercase_path("ghcr.io/Molecule-AI", "uppercase")]
    #[case::empty_component("ghcr.io//molecule-ai", "empty component")]
    #[case::double_trailing_slash("ghcr.io/molecule-ai//", "empty component")]
    #[case::space_inside("ghcr.io/molecule ai", "whitespace")]
    #[case::tag("ghcr.io/molecule-ai/img:latest", "tag")]
    #[case::digest("ghcr.io/molecule-ai@sha256:abc", "digest")]
    #[case::empty_host("/molecule-ai", "empty")]
    #[case::port_without_host(":5000/molecule-ai", "empty")]
    #[case::bad_port("ghcr.io:http/molecule-ai", "port")]
    #[case::only_slash("/", "empty")]
    #[case::uppercase_docker_hub_namespace("MoleculeAI", "uppercase")]
    #[case::invalid_separator("ghcr.io/molecule..ai", "component")]
    fn malformed_prefix_is_rejected_naming_variable_and_value(#[case] input: &str, #[case] reason: &str) {
        let error = RegistryPrefix::parse_named(input, "MOLECULE_IMAGE_REGISTRY")
            .expect_err("must be rejected")
            .to_string();
        assert!(error.contains("MOLECULE_IMAGE_REGISTRY"), "{error}");
        assert!(error.contains(&format!("{input:?}")), "{error}");
        assert!(error.contains(reason), "{error}");
        assert!(error.contains("expected"), "{error}");
    }

    #[rstest]
    #[case::user_and_password("user:pw-9f2c@registry.example.com/x")]
    #[case::token_only("pw-9f2c@ghcr.io/molecule-ai")]
    fn credentials_in_the_prefix_are_refused_without_echoing_them(#[case] input: &str) {
        let error = RegistryPrefix::parse_named(input, "MOLECULE_IMAGE_REGISTRY")
            .expect_err("must be rejected")
            .to_string();
        assert!(error.contains("credentials in the registry address"), "{error}");
        assert!(!error.contains("pw-9f2c") && !error.contains("digest"), "{error}");
    }
}
