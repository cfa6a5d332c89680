//! The registry host: the one place that knows what a host is, which host the HTTP API
//! really lives on (Docker Hub's differs from its name), whether a host is loopback and what
//! the Docker Engine calls it. It does not split prefixes or references (see `prefix` and
//! `reference`), it only validates the first component they hand it.

use std::fmt;
use std::net::{IpAddr, Ipv6Addr};
use std::str::FromStr;

/// The name images on Docker Hub carry in fully qualified references.
pub const DOCKER_HUB: &str = "docker.io";
/// Where Docker Hub's registry API answers.
pub const DOCKER_HUB_API: &str = "registry-1.docker.io";
/// The key the Docker Engine and `config.json` use for Docker Hub credentials.
pub const DOCKER_HUB_SERVER_ADDRESS: &str = "https://index.docker.io/v1/";

/// A validated registry host: a domain name, IPv4 address or bracketed IPv6 address, with an
/// optional port, lowercased. Docker Hub's aliases are folded into `docker.io`.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RegistryHost(String);

/// Why a string is not a registry host.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "invalid registry host {value:?}: {reason}; expected a host name or IP address with an optional port, e.g. `ghcr.io`, `registry.example.com:5443`, `[::1]:5000`"
)]
pub struct HostError {
    value: String,
    reason: &'static str,
}

impl RegistryHost {
    /// Docker Hub, the registry of references whose first component is not a host.
    pub fn docker_hub() -> RegistryHost {
        RegistryHost(DOCKER_HUB.to_owned())
    }

    /// The host as it appears in image references (`docker.io` for Docker Hub).
    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn is_docker_hub(&self) -> bool {
        self.0 == DOCKER_HUB
    }

    /// The host[:port] the registry HTTP API answers on.
    pub fn api_host(&self) -> &str {
        if self.is_docker_hub() { DOCKER_HUB_API } else { &self.0 }
    }

    /// `https://<api host>/v2/`, the base every registry API path hangs off. Loopback and
    /// operator-listed insecure hosts may fall back to plain http at request time.
    pub fn api_base(&self) -> String {
        format!("https://{}/v2/", self.api_host())
    }

    /// What the Docker Engine and `config.json` call this registry: the host, never an org
    /// path, and Docker Hub's historical index URL for Docker Hub.
    pub fn engine_server_address(&self) -> &str {
        if self.is_docker_hub() {
            DOCKER_HUB_SERVER_ADDRESS
        } else {
            &self.0
        }
    }

    /// The host name or address without the port (IPv6 without brackets).
    pub fn name(&self) -> &str {
        split_port(&self.0).0.trim_start_matches('[').trim_end_matches(']')
    }

    pub fn port(&self) -> Option<u16> {
        split_port(&self.0).1.and_then(|port| port.parse().ok())
    }

    /// `localhost` or an address in 127.0.0.0/8 or `::1`: plain http is tolerated there, as
    /// Docker tolerates it, because traffic never leaves the machine.
    pub fn is_loopback(&self) -> bool {
        let name = self.name();
        name == "localhost" || name.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
    }
}

/// Splits `host[:port]` at the port colon, minding IPv6 brackets.
fn split_port(value: &str) -> (&str, Option<&str>) {
    if value.starts_with('[') {
        match value.find(']') {
            Some(end) => match value[end + 1..].strip_prefix(':') {
                Some(port) => (&value[..=end], Some(port)),
                None => (value, None),
            },
            None => (value, None),
        }
    } else {
        match value.rsplit_once(':') {
            Some((name, port)) => (name, Some(port)),
            None => (value, None),
        }
    }
}

/// distribution's domain-name component: alphanumerics, with hyphens inside only.
fn is_domain_component(component: &str) -> bool {
    let bytes = component.as_bytes();
    !bytes.is_empty()
        && bytes[0].is_ascii_alphanumeric()
        && bytes[bytes.len() - 1].is_ascii_alphanumeric()
        && bytes.iter().all(|b| b.is_ascii_alphanumeric() || *b == b'-')
}

/// distribution's rule: the first component of a name is a host if it has a `.` or `:`, is
/// `localhost`, or is a bracketed IPv6 address.
pub(crate) fn looks_like_host(component: &str) -> bool {
    component.contains('.') || component.contains(':') || component == "localhost" || component.starts_with('[')
}

impl FromStr for RegistryHost {
    type Err = HostError;

    fn from_str(value: &str) -> Result<Self, Self::Err> {
        let error = |reason| HostError {
            value: value.to_owned(),
            reason,
        };
        if value.is_empty() {
            return Err(error("the host is empty"));
        }
        let (name, port) = split_port(value);
        if let Some(port) = port {
            if port.is_empty() || !port.bytes().all(|b| b.is_ascii_digit()) {
                return Err(error("the port is not a number"));
            }
            if !port.parse::<u16>().is_ok_and(|port| port > 0) {
                return Err(error("the port is out of range 1-65535"));
            }
        }
        if let Some(inner) = name.strip_prefix('[') {
            let inner = inner
                .strip_suffix(']')
                .ok_or_else(|| error("unclosed `[` around an IPv6 address"))?;
            inner
                .parse::<Ipv6Addr>()
                .map_err(|_| error("not a valid IPv6 address inside `[]`"))?;
        } else if name.is_empty() {
            return Err(error("the host is empty"));
        } else if !name.split('.').all(is_domain_component) {
            return Err(error(
                "not a valid host name (letters, digits, `-` and `.` only; IPv6 needs `[]`)",
            ));
        }
        let lowered = value.to_ascii_lowercase();
        let canonical = match lowered.as_str() {
            "index.docker.io" | "registry-1.docker.io" | "registry.hub.docker.com" => DOCKER_HUB.to_owned(),
            _ => lowered,
        };
        Ok(RegistryHost(canonical))
    }
}

impl fmt::Display for RegistryHost {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for RegistryHost {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "RegistryHost({})", self.0)
    }
}

impl serde::Serialize for RegistryHost {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rstest::rstest;

    #[rstest]
    #[case::ghcr("ghcr.io", "ghcr.io", "ghcr.io", "ghcr.io", false)]
    #[case::with_port(
        "registry.example.com:5443",
        "registry.example.com:5443",
        "registry.example.com:5443",
        "registry.example.com:5443",
        false
    )]
    #[case::localhost("localhost:5000", "localhost:5000", "localhost:5000", "localhost:5000", true)]
    #[case::ipv4_loopback("127.0.0.1:5000", "127.0.0.1:5000", "127.0.0.1:5000", "127.0.0.1:5000", true)]
    #[case::ipv6_loopback("[::1]:5000", "[::1]:5000", "[::1]:5000", "[::1]:5000", true)]
    #[case::ipv6_without_port("[fe80::1]", "[fe80::1]", "[fe80::1]", "[fe80::1]", false)]
    #[case::uppercase_is_folded("GHCR.IO", "ghcr.io", "ghcr.io", "ghcr.io", false)]
    #[case::docker_hub(
        "docker.io",
        "docker.io",
        "registry-1.docker.io",
        "https://index.docker.io/v1/",
        false
    )]
    #[case::docker_hub_index_alias(
        "index.docker.io",
        "docker.io",
        "registry-1.docker.io",
        "https://index.docker.io/v1/",
        false
    )]
    #[case::docker_hub_api_alias(
        "registry-1.docker.io",
        "docker.io",
        "registry-1.docker.io",
        "https://index.docker.io/v1/",
        false
    )]
    #[case::single_label_with_port("myregistry:5000", "myregistry:5000", "myregistry:5000", "myregistry:5000", false)]
    fn host_is_parsed(
        #[case] input: &str,
        #[case] canonical: &str,
        #[case] api_host: &str,
        #[case] server_address: &str,
        #[case] loopback: bool,
    ) {
        let host: RegistryHost = input.parse().expect("valid host");
        assert_eq!(host.as_str(), canonical);
        assert_eq!(host.api_host(), api_host);
        assert_eq!(host.engine_server_address(), server_address);
        assert_eq!(host.is_loopback(), loopback);
        assert_eq!(host.api_base(), format!("https://{api_host}/v2/"));
    }

    #[rstest]
    #[case::empty("", "empty")]
    #[case::port_only(":5000", "empty")]
    #[case::port_not_number("host:abc", "port")]
    #[case::port_zero("host:0", "range")]
    #[case::port_too_big("host:70000", "range")]
    #[case::empty_port("host:", "port")]
    #[case::underscore("my_host.example.com", "host name")]
    #[case::leading_hyphen("-host.example.com", "host name")]
    #[case::empty_label("host..example.com", "host name")]
    #[case::bad_ipv6("[::zz]:5000", "IPv6")]
    #[case::unclosed_ipv6("[::1:5000", "IPv6")]
    #[case::bare_ipv6("::1", "")]
    fn invalid_host_is_rejected(#[case] input: &str, #[case] reason: &str) {
        let error = input.parse::<RegistryHost>().expect_err("must be rejected").to_string();
        assert!(error.contains(reason), "{error}");
        assert!(error.contains(&format!("{input:?}")), "{error}");
    }

    #[test]
    fn port_and_name_are_split_for_ipv6() {
        let host: RegistryHost = "[::1]:5000".parse().expect("valid");
        assert_eq!(host.name(), "::1");
        assert_eq!(host.port(), Some(5000));
    }
}
