//! What can go wrong asking a registry for a digest, in kinds a caller can act on: fix the
//! configuration (`Auth`, `Insecure`), wait (`RateLimited` with its `Retry-After`), retry
//! later (`Server`, `Timeout`, `Unreachable`), or give up on the image (`NotFound`,
//! `DigestMismatch`, `Malformed`). Messages name the host, the image and what to configure;
//! they never carry a secret.

use std::time::{Duration, SystemTime};

use crate::digest::Digest;
use crate::host::RegistryHost;
use crate::provider::AuthError;

use super::transport::TransportError;

/// Why a digest could not be had.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RegistryError {
    /// The registry (or its token realm) wants credentials it did not get or refused.
    #[error("authentication to {host} failed (realm {realm}): {reason}; {hint}")]
    Auth {
        host: RegistryHost,
        realm: String,
        reason: String,
        /// What to configure, e.g. "set GHCR_USER and GHCR_TOKEN".
        hint: String,
    },
    /// The repository or tag does not exist (or is invisible to these credentials).
    #[error("{image} was not found on {host} (HTTP 404); check the repository name and tag")]
    NotFound { host: RegistryHost, image: String },
    /// HTTP 429: back off, for `retry_after` when the registry said so.
    #[error("{host} is rate limiting (HTTP 429){}", retry_after.map(|d| format!("; retry after {}s", d.as_secs())).unwrap_or_default())]
    RateLimited {
        host: RegistryHost,
        retry_after: Option<Duration>,
    },
    /// An HTTP status the client cannot act on (5xx, or an unexpected 4xx).
    #[error("{host} answered HTTP {status} for {what}")]
    Server {
        host: RegistryHost,
        status: u16,
        what: String,
    },
    /// No answer within the request timeout.
    #[error("{url} ({host}) did not answer within {}s", after.as_secs_f64())]
    Timeout {
        host: RegistryHost,
        url: String,
        after: Duration,
    },
    /// No connection (refused, DNS, TLS).
    #[error("cannot reach {host}: {reason}")]
    Unreachable { host: RegistryHost, reason: String },
    /// The answer made no sense (bad digest header, oversized body, a digest that does not
    /// match the body).
    #[error("{host} answered a malformed response: {reason}")]
    Malformed { host: RegistryHost, reason: String },
    /// A `@digest` reference whose registry answers another digest.
    #[error("{image}: {host} answered {}, but the reference pins {}", actual.short(), expected.short())]
    DigestMismatch {
        host: RegistryHost,
        image: String,
        expected: Digest,
        actual: Digest,
    },
    /// A request that would have put credentials at risk was not sent.
    #[error("refused an insecure request for {host}: {reason}")]
    Insecure { host: RegistryHost, reason: String },
}

impl RegistryError {
    /// A short, stable name for metrics labels and JSON output.
    pub fn kind(&self) -> &'static str {
        match self {
            RegistryError::Auth { .. } => "auth",
            RegistryError::NotFound { .. } => "not_found",
            RegistryError::RateLimited { .. } => "rate_limited",
            RegistryError::Server { .. } => "server",
            RegistryError::Timeout { .. } => "timeout",
            RegistryError::Unreachable { .. } => "unreachable",
            RegistryError::Malformed { .. } => "malformed",
            RegistryError::DigestMismatch { .. } => "digest_mismatch",
            RegistryError::Insecure { .. } => "insecure",
        }
    }

    /// How long the registry asked to be left alone, for `RateLimited`.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            RegistryError::RateLimited { retry_after, .. } => *retry_after,
            _ => None,
        }
    }

    /// Whether asking again later may succeed without a configuration change.
    pub fn is_transient(&self) -> bool {
        matches!(
            self,
            RegistryError::RateLimited { .. }
                | RegistryError::Server { .. }
                | RegistryError::Timeout { .. }
                | RegistryError::Unreachable { .. }
        )
    }

    /// The registry host the error is about.
    pub fn host(&self) -> &RegistryHost {
        match self {
            RegistryError::Auth { host, .. }
            | RegistryError::NotFound { host, .. }
            | RegistryError::RateLimited { host, .. }
            | RegistryError::Server { host, .. }
            | RegistryError::Timeout { host, .. }
            | RegistryError::Unreachable { host, .. }
            | RegistryError::Malformed { host, .. }
            | RegistryError::DigestMismatch { host, .. }
            | RegistryError::Insecure { host, .. } => host,
        }
    }

    pub(crate) fn from_transport(host: &RegistryHost, error: TransportError) -> RegistryError {
        let host = host.clone();
        match error {
            TransportError::Timeout { url, after } => RegistryError::Timeout { host, url, after },
            TransportError::Unreachable { url, reason } => RegistryError::Unreachable {
                host,
                reason: format!("{url}: {reason}"),
            },
            TransportError::Config(_) => RegistryError::Unreachable {
                host,
                reason: error.to_string(),
            },
            TransportError::TooLarge { .. } | TransportError::Redirect { .. } => RegistryError::Malformed {
                host,
                reason: error.to_string(),
            },
            TransportError::Insecure { .. } => RegistryError::Insecure {
                host,
                reason: error.to_string(),
            },
        }
    }

    pub(crate) fn from_auth(host: &RegistryHost, realm: &str, hint: &str, error: AuthError) -> RegistryError {
        let host = host.clone();
        match error {
            AuthError::Unreachable { .. } => RegistryError::Unreachable {
                host,
                reason: error.to_string(),
            },
            AuthError::Unsafe { .. } => RegistryError::Insecure {
                host,
                reason: error.to_string(),
            },
            AuthError::Denied { .. }
            | AuthError::BadTokenResponse { .. }
            | AuthError::UnsupportedScheme { .. }
            | AuthError::Provider { .. } => RegistryError::Auth {
                hint: hint.to_owned(),
                host,
                realm: realm.to_owned(),
                reason: error.to_string(),
            },
        }
    }
}

/// The hint for a host nobody wired a provider for.
pub(crate) fn default_hint(host: &RegistryHost) -> String {
    format!("configure credentials for {host}")
}

/// The longest `Retry-After` taken as said: a day (the watcher caps its pause lower still).
pub const MAX_RETRY_AFTER: Duration = Duration::from_secs(24 * 3600);

/// `Retry-After`: delay-seconds or an HTTP-date (counted from `now`; a date in the past is 0),
/// at most [`MAX_RETRY_AFTER`], so no later clock arithmetic can overflow.
pub fn parse_retry_after(value: &str, now: SystemTime) -> Option<Duration> {
    let value = value.trim();
    if let Ok(seconds) = value.parse::<u64>() {
        return Some(Duration::from_secs(seconds).min(MAX_RETRY_AFTER));
    }
    let when = httpdate::parse_http_date(value).ok()?;
    Some(when.duration_since(now).unwrap_or(Duration::ZERO).min(MAX_RETRY_AFTER))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use rstest::rstest;

    proptest! {
        /// A registry's `Retry-After` is outside input: any value is read without a panic, and
        /// whatever it says is never more than the cap.
        #[test]
        fn any_retry_after_is_bounded(value in "\\PC{0,40}", seconds in any::<u64>(), now in 0u64..4_000_000_000) {
            let now = SystemTime::UNIX_EPOCH + Duration::from_secs(now);
            for value in [value, seconds.to_string(), format!(" {seconds} ")] {
                if let Some(delay) = parse_retry_after(&value, now) {
                    prop_assert!(delay <= MAX_RETRY_AFTER, "{value:?} -> {delay:?}");
                }
            }
        }
    }

    #[rstest]
    #[case::seconds("120", Some(120))]
    #[case::padded(" 7 ", Some(7))]
    #[case::zero("0", Some(0))]
    #[case::http_date_ahead("Thu, 01 Jan 1970 00:01:40 GMT", Some(60))]
    #[case::http_date_past("Thu, 01 Jan 1970 00:00:10 GMT", Some(0))]
    #[case::negative("-5", None)]
    #[case::huge_is_capped("18446744073709551615", Some(24 * 3600))]
    #[case::far_date_is_capped("Fri, 31 Dec 9999 23:59:59 GMT", Some(24 * 3600))]
    #[case::garbage("soon", None)]
    fn retry_after_reads_seconds_and_http_dates(#[case] value: &str, #[case] expected: Option<u64>) {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(40);
        assert_eq!(parse_retry_after(value, now), expected.map(Duration::from_secs));
    }

    #[test]
    fn kinds_are_stable_names() {
        let host: RegistryHost = "ghcr.io".parse().expect("valid");
        let limited = RegistryError::RateLimited {
            host: host.clone(),
            retry_after: Some(Duration::from_secs(9)),
        };
        assert_eq!(limited.kind(), "rate_limited");
        assert_eq!(limited.retry_after(), Some(Duration::from_secs(9)));
        assert!(limited.to_string().contains("retry after 9s"), "{limited}");
        assert!(limited.is_transient());
        let not_found = RegistryError::NotFound {
            host,
            image: "ghcr.io/a/b:latest".into(),
        };
        assert_eq!(not_found.kind(), "not_found");
        assert_eq!(not_found.retry_after(), None);
        assert!(!not_found.is_transient());
    }
}
