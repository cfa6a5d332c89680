//! Which kind of provider serves a host: ECR, GHCR or the generic challenge-driven flow, from
//! the host's name alone or from the operator's override (`HOST=KIND`). It decides; it builds
//! no provider and reads no environment.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use auth_ecr::EcrRegistry;
use registry_core::RegistryHost;

use crate::vars::PROVIDERS as PROVIDERS_ENV;

/// GHCR's registry host.
pub const GHCR_HOST: &str = "ghcr.io";

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
        } else if host.as_str() == GHCR_HOST {
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
                .map_err(|e: registry_core::HostError| error(e.to_string()))?;
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
}
