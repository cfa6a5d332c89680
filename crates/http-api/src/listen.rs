//! Where the API listens: `--listen` turned into a socket address at the edge. A bare port means
//! loopback (`127.0.0.1:PORT`); anything else must be an explicit `IP:PORT` (or
//! `localhost:PORT`), so exposing the API beyond the machine is always a written choice. It
//! does not bind; [`Server`](crate::Server) does.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::str::FromStr;

/// A validated listen address.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ListenAddr(SocketAddr);

/// Why a `--listen` value is not an address.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error(
    "invalid listen address {value:?}: {reason}; expected a port (`8080`, on 127.0.0.1) or `IP:PORT` (`127.0.0.1:8080`, `[::1]:8080`, `0.0.0.0:8080`)"
)]
pub struct ListenError {
    value: String,
    reason: &'static str,
}

impl ListenAddr {
    pub fn socket_addr(&self) -> SocketAddr {
        self.0
    }

    /// Whether only this machine can connect (127.0.0.0/8 or `::1`).
    pub fn is_loopback(&self) -> bool {
        self.0.ip().is_loopback()
    }
}

impl From<SocketAddr> for ListenAddr {
    fn from(addr: SocketAddr) -> ListenAddr {
        ListenAddr(addr)
    }
}

impl fmt::Display for ListenAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl FromStr for ListenAddr {
    type Err = ListenError;

    fn from_str(value: &str) -> Result<ListenAddr, ListenError> {
        let error = |reason| ListenError {
            value: value.to_owned(),
            reason,
        };
        let trimmed = value.trim();
        if trimmed.is_empty() {
            return Err(error("it is empty"));
        }
        if trimmed.bytes().all(|b| b.is_ascii_digit()) {
            let port: u16 = trimmed.parse().map_err(|_| error("the port is out of range 0-65535"))?;
            return Ok(ListenAddr(SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), port)));
        }
        if let Some(port) = trimmed.strip_prefix("localhost:") {
            let port: u16 = port.parse().map_err(|_| error("the port is not a number in 0-65535"))?;
            return Ok(ListenAddr(SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), port)));
        }
        if trimmed.starts_with(':') {
            return Err(error(
                "the address is missing (write `0.0.0.0:PORT` to listen on every interface)",
            ));
        }
        trimmed
            .parse::<SocketAddr>()
            .map(ListenAddr)
            .map_err(|_| error("not a port, `localhost:PORT` or an IP address with a port"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rstest::rstest;

    #[rstest]
    #[case::bare_port_is_loopback("8080", Some(("127.0.0.1:8080", true)))]
    #[case::padded("  9000 ", Some(("127.0.0.1:9000", true)))]
    #[case::explicit_loopback("127.0.0.1:8080", Some(("127.0.0.1:8080", true)))]
    #[case::other_loopback_address("127.0.0.2:8080", Some(("127.0.0.2:8080", true)))]
    #[case::localhost("localhost:8080", Some(("127.0.0.1:8080", true)))]
    #[case::ipv6_loopback("[::1]:8080", Some(("[::1]:8080", true)))]
    #[case::every_interface("0.0.0.0:8080", Some(("0.0.0.0:8080", false)))]
    #[case::a_lan_address("192.168.1.5:8080", Some(("192.168.1.5:8080", false)))]
    #[case::port_zero_picks_one("0", Some(("127.0.0.1:0", true)))]
    #[case::empty("", None)]
    #[case::port_too_large("70000", None)]
    #[case::colon_port_is_ambiguous(":8080", None)]
    #[case::host_name("example.com:8080", None)]
    #[case::no_port("127.0.0.1", None)]
    fn listen_address_parses_to_a_socket(#[case] input: &str, #[case] expected: Option<(&str, bool)>) {
        let parsed = input.parse::<ListenAddr>();
        match expected {
            Some((addr, loopback)) => {
                let parsed = parsed.expect("valid");
                assert_eq!(parsed.to_string(), addr);
                assert_eq!(parsed.is_loopback(), loopback);
            }
            None => {
                let error = parsed.expect_err("invalid").to_string();
                assert!(error.contains("expected a port"), "{error}");
            }
        }
    }
}
