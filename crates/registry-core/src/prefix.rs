//! `MOLECULE_IMAGE_REGISTRY`: where workspace images live, split into the registry HOST and
//! the repository path under it. Every surface that talks to a registry (digest checks, token
//! requests, Docker pulls) takes its host from here, never from a hard-coded name.

use std::fmt;
use std::str::FromStr;

use crate::host::RegistryHost;
use crate::path::path_problem;
use crate::reference::{ImageReference, Tag};

/// The environment variable that names the image prefix.
pub const PREFIX_ENV: &str = "MOLECULE_IMAGE_REGISTRY";
/// The prefix used when the variable is unset or blank.
pub const DEFAULT_PREFIX: &str = "ghcr.io/molecule-ai";
/// The runtimes whose workspace images are watched unless told otherwise.
pub const DEFAULT_RUNTIMES: &[&str] = &[
    "claude-code",
    "langgraph",
    "crewai",
    "autogen",
    "deepagents",
    "hermes",
    "gemini-cli",
    "openclaw",
];
/// The moving tag the workspace images are published under.
pub const WORKSPACE_TAG: &str = "latest";

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
    /// Reads [`PREFIX_ENV`] from the process environment.
    pub fn from_env() -> Result<RegistryPrefix, PrefixError> {
        Self::from_env_value(std::env::var(PREFIX_ENV).ok().as_deref())
    }

    /// Interprets the variable's value: unset or blank means [`DEFAULT_PREFIX`].
    pub fn from_env_value(value: Option<&str>) -> Result<RegistryPrefix, PrefixError> {
        match value.map(str::trim) {
            None | Some("") => Self::parse_named(DEFAULT_PREFIX, PREFIX_ENV),
            Some(value) => Self::parse_named(value, PREFIX_ENV),
        }
    }

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

    /// `<prefix>/workspace-template-<runtime>:latest`.
    pub fn runtime_image(&self, runtime: &str) -> Result<ImageReference, crate::reference::ReferenceError> {
        let repository = self.repository(&format!("workspace-template-{runtime}"));
        ImageReference::from_parts(self.host.clone(), &repository, Some(Tag::latest()), None)
    }
}

/// distribution's rule: the first component is a host if it has a `.` or `:` or is `localhost`.
pub(crate) fn looks_like_host(component: &str) -> bool {
    component.contains('.') || component.contains(':') || component == "localhost" || component.starts_with('[')
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
        let error = RegistryPrefix::from_env_value(Some(input))
            .expect_err("must be rejected")
            .to_string();
        assert!(error.contains(PREFIX_ENV), "{error}");
        assert!(error.contains(&format!("{input:?}")), "{error}");
        assert!(error.contains(reason), "{error}");
        assert!(error.contains("expected"), "{error}");
    }

    #[rstest]
    #[case::unset(None)]
    #[case::empty(Some(""))]
    #[case::blank(Some("   "))]
    fn unset_or_blank_means_default(#[case] value: Option<&str>) {
        let prefix = RegistryPrefix::from_env_value(value).expect("default is valid");
        assert_eq!(prefix.to_string(), DEFAULT_PREFIX);
        assert_eq!(prefix.host().as_str(), "ghcr.io");
    }

    #[rstest]
    #[case(
        "ghcr.io/molecule-ai",
        "langgraph",
        "ghcr.io/molecule-ai/workspace-template-langgraph:latest"
    )]
    #[case(
        "registry.example.com",
        "crewai",
        "registry.example.com/workspace-template-crewai:latest"
    )]
    #[case("molecule-ai", "hermes", "docker.io/molecule-ai/workspace-template-hermes:latest")]
    #[case("[::1]:5000/x", "autogen", "[::1]:5000/x/workspace-template-autogen:latest")]
    fn runtime_image_hangs_off_the_prefix(#[case] prefix: &str, #[case] runtime: &str, #[case] expected: &str) {
        let prefix: RegistryPrefix = prefix.parse().expect("valid");
        let image = prefix.runtime_image(runtime).expect("valid runtime");
        assert_eq!(image.to_string(), expected);
        assert_eq!(image.host(), prefix.host());
    }

    #[test]
    fn invalid_runtime_name_is_rejected() {
        let prefix: RegistryPrefix = DEFAULT_PREFIX.parse().expect("valid");
        assert!(prefix.runtime_image("Claude Code").is_err());
    }

    #[test]
    fn every_default_runtime_makes_a_valid_image() {
        let prefix: RegistryPrefix = DEFAULT_PREFIX.parse().expect("valid");
        for runtime in DEFAULT_RUNTIMES {
            prefix.runtime_image(runtime).expect("default runtime image is valid");
        }
    }
}
