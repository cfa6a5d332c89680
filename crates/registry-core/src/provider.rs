//! The auth seam. A `TokenProvider` turns a registry's challenge into an `Authorization`
//! header and yields the credentials the Docker Engine pulls with; the kind of provider for a
//! host is chosen here, from the host alone or from the operator's override. Implementations
//! live in the auth crates; this module holds no protocol of its own.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use async_trait::async_trait;

use crate::challenge::Challenge;
use crate::ecr::EcrRegistry;
use crate::host::RegistryHost;
use crate::scope::Scope;
use crate::secret::{Credentials, Secret};

/// The value of an `Authorization` header, never printed.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct Authorization(Secret);

impl Authorization {
    pub fn bearer(token: &str) -> Authorization {
        Authorization(Secret::new(format!("Bearer {token}")))
    }

    /// From credentials that a registry accepts directly (Basic or a ready bearer token).
    pub fn from_credentials(credentials: &Credentials) -> Option<Authorization> {
        match credentials {
            Credentials::Basic { .. } => credentials.basic_header().map(Authorization),
            Credentials::Bearer(token) => Some(Authorization::bearer(token.expose())),
            Credentials::IdentityToken(_) => None,
        }
    }

    pub fn header_value(&self) -> &str {
        self.0.expose()
    }
}

/// Why a provider could not authorize. Messages name the host or realm and what to configure;
/// they never carry a secret.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    #[error("{realm} refused the credentials (HTTP {status}): {hint}")]
    Denied { realm: String, status: u16, hint: String },
    #[error("the token endpoint {realm} answered something that is not a token: {reason}")]
    BadTokenResponse { realm: String, reason: String },
    #[error("cannot reach {url}: {reason}")]
    Unreachable { url: String, reason: String },
    #[error("refusing to send credentials to {url}: {reason}")]
    Unsafe { url: String, reason: String },
    #[error("{host} asks for {scheme} authentication, which imagewatch does not speak")]
    UnsupportedScheme { host: String, scheme: String },
    #[error("{provider} credentials for {host}: {message}")]
    Provider {
        provider: &'static str,
        host: String,
        message: String,
    },
}

/// Answers a registry's challenges for one or more hosts.
#[async_trait]
pub trait TokenProvider: Send + Sync + fmt::Debug {
    /// The `Authorization` value that answers `challenge` from `host` for `scopes`, or `None`
    /// to go on anonymously (no credentials is not an error by itself). Several scopes may be
    /// asked at once so one exchange covers a batch of repositories.
    async fn authorization(
        &self,
        host: &RegistryHost,
        challenge: &Challenge,
        scopes: &[Scope],
    ) -> Result<Option<Authorization>, AuthError>;

    /// The registry rejected what `authorization` gave for these scopes (`invalid_token`,
    /// `insufficient_scope`): drop any cached value so the next call fetches afresh.
    fn reject(&self, _host: &RegistryHost, _scopes: &[Scope]) {}

    /// The credentials the Docker Engine should pull from `host` with, if any.
    async fn engine_credentials(&self, host: &RegistryHost) -> Result<Option<Credentials>, AuthError>;
}

/// Which kind of provider serves a host.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ProviderKind {
    /// AWS ECR private registry: GetAuthorizationToken, then Basic.
    Ecr(EcrRegistry),
    /// GHCR: the challenge-driven token flow with `GHCR_USER`/`GHCR_TOKEN`.
    Ghcr,
    /// Any other registry: the challenge-driven token flow with per-host credentials.
    Generic,
}

impl ProviderKind {
    /// The kind a host gets unless the operator overrides it.
    pub fn detect(host: &RegistryHost) -> ProviderKind {
        if let Some(ecr) = EcrRegistry::from_host(host) {
            ProviderKind::Ecr(ecr)
        } else if host.as_str() == "ghcr.io" {
            ProviderKind::Ghcr
        } else {
            ProviderKind::Generic
        }
    }

    /// The short name used in configuration and output.
    pub fn name(&self) -> &'static str {
        match self {
            ProviderKind::Ecr(_) => "ecr",
            ProviderKind::Ghcr => "ghcr",
            ProviderKind::Generic => "generic",
        }
    }
}

impl fmt::Display for ProviderKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The environment variable that overrides the provider kind of hosts.
pub const PROVIDERS_ENV: &str = "IMAGEWATCH_PROVIDERS";

/// Operator overrides for hosts that do not look like what they are: a mirror of GHCR, a
/// test registry that stands in for ECR. Written `HOST=KIND` separated by commas, where KIND is
/// `generic`, `ghcr` or `ecr:ACCOUNT:REGION`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ProviderOverrides(BTreeMap<RegistryHost, ProviderKind>);

/// Why an override list was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "{PROVIDERS_ENV}={value:?} is invalid: {reason}; expected `HOST=KIND[,HOST=KIND...]` with KIND `generic`, `ghcr` or `ecr:ACCOUNT:REGION`"
)]
pub struct OverrideError {
    value: String,
    reason: String,
}

impl ProviderOverrides {
    pub fn from_env() -> Result<ProviderOverrides, OverrideError> {
        std::env::var(PROVIDERS_ENV).map_or(Ok(ProviderOverrides::default()), |value| value.parse())
    }

    pub fn insert(&mut self, host: RegistryHost, kind: ProviderKind) {
        self.0.insert(host, kind);
    }

    /// The override for `host`, else what the host looks like.
    pub fn kind_for(&self, host: &RegistryHost) -> ProviderKind {
        self.0.get(host).cloned().unwrap_or_else(|| ProviderKind::detect(host))
    }
}

impl FromStr for ProviderOverrides {
    type Err = OverrideError;

    fn from_str(value: &str) -> Result<Self, Self::Err> {
        let error = |reason: String| OverrideError {
            value: value.to_owned(),
            reason,
        };
        let mut overrides = ProviderOverrides::default();
        for entry in value.split(',').map(str::trim).filter(|entry| !entry.is_empty()) {
            let (host, kind) = entry
                .split_once('=')
                .ok_or_else(|| error(format!("{entry:?} has no `=`")))?;
            let host: RegistryHost = host
                .trim()
                .parse()
                .map_err(|e: crate::host::HostError| error(e.to_string()))?;
            let kind = match kind.trim().split(':').collect::<Vec<_>>().as_slice() {
                ["generic"] => ProviderKind::Generic,
                ["ghcr"] => ProviderKind::Ghcr,
                ["ecr", account, region]
                    if account.len() == 12 && account.bytes().all(|b| b.is_ascii_digit()) && !region.is_empty() =>
                {
                    ProviderKind::Ecr(EcrRegistry {
                        account: (*account).to_owned(),
                        region: (*region).to_owned(),
                        fips: false,
                    })
                }
                _ => {
                    return Err(error(format!(
                        "{kind:?} is not a provider kind (ECR needs a 12-digit account and a region)"
                    )));
                }
            };
            overrides.insert(host, kind);
        }
        Ok(overrides)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rstest::rstest;

    fn host(value: &str) -> RegistryHost {
        value.parse().expect("valid host")
    }

    #[rstest]
    #[case("ghcr.io", "ghcr")]
    #[case("004947743811.dkr.ecr.us-east-2.amazonaws.com", "ecr")]
    #[case("004947743811.dkr.ecr.us-east-2.amazonaws.com.evil.example", "generic")]
    #[case("gitea.example.com", "generic")]
    #[case("docker.io", "generic")]
    #[case("localhost:5000", "generic")]
    fn provider_kind_follows_the_host(#[case] input: &str, #[case] kind: &str) {
        assert_eq!(ProviderKind::detect(&host(input)).name(), kind);
    }

    #[test]
    fn override_makes_a_test_registry_ecr() {
        let overrides: ProviderOverrides = "127.0.0.1:5000=ecr:123456789012:us-east-1, mirror.example.com=ghcr"
            .parse()
            .expect("valid");
        assert_eq!(
            overrides.kind_for(&host("127.0.0.1:5000")),
            ProviderKind::Ecr(EcrRegistry {
                account: "123456789012".into(),
                region: "us-east-1".into(),
                fips: false
            })
        );
        assert_eq!(overrides.kind_for(&host("mirror.example.com")), ProviderKind::Ghcr);
        assert_eq!(overrides.kind_for(&host("ghcr.io")), ProviderKind::Ghcr);
        assert_eq!(overrides.kind_for(&host("other.example.com")), ProviderKind::Generic);
    }

    #[rstest]
    #[case::no_equals("localhost:5000")]
    #[case::unknown_kind("localhost:5000=quay")]
    #[case::ecr_without_region("localhost:5000=ecr:123456789012")]
    #[case::ecr_bad_account("localhost:5000=ecr:12:us-east-1")]
    #[case::bad_host("bad host=generic")]
    fn malformed_override_is_rejected(#[case] input: &str) {
        let error = input
            .parse::<ProviderOverrides>()
            .expect_err("must be rejected")
            .to_string();
        assert!(error.contains(PROVIDERS_ENV) && error.contains("expected"), "{error}");
    }

    #[test]
    fn authorization_debug_hides_the_token() {
        let authorization = Authorization::bearer("tok3n");
        assert!(!format!("{authorization:?}").contains("tok3n"));
        assert_eq!(authorization.header_value(), "Bearer tok3n");
    }
}
