//! Credentials from the process environment: `GHCR_USER`/`GHCR_TOKEN` for the GHCR host and
//! `IMAGEWATCH_REGISTRY_USER`/`IMAGEWATCH_REGISTRY_PASSWORD` for exactly one other host. Each
//! becomes a `StaticKeychain` that answers for its one host and no other.

use crate::host::RegistryHost;
use crate::secret::Credentials;

use super::{Keychain, KeychainError};

/// Environment variables GHCR credentials are read from, as the platform always has.
pub const GHCR_USER_ENV: &str = "GHCR_USER";
pub const GHCR_TOKEN_ENV: &str = "GHCR_TOKEN";
/// The generic per-host source: a user name and a password or token ...
pub const REGISTRY_USER_ENV: &str = "IMAGEWATCH_REGISTRY_USER";
pub const REGISTRY_PASSWORD_ENV: &str = "IMAGEWATCH_REGISTRY_PASSWORD";
/// ... for this host, else for the host of the configured prefix.
pub const REGISTRY_HOST_ENV: &str = "IMAGEWATCH_REGISTRY_HOST";

/// Fixed credentials for one host: `GHCR_USER`/`GHCR_TOKEN` for the GHCR host, or whatever
/// the operator configured for a host.
#[derive(Clone, Debug)]
pub struct StaticKeychain {
    host: RegistryHost,
    credentials: Credentials,
}

impl StaticKeychain {
    pub fn new(host: RegistryHost, credentials: Credentials) -> StaticKeychain {
        StaticKeychain { host, credentials }
    }

    /// `GHCR_USER`/`GHCR_TOKEN` for `host`, when both are set and non-empty.
    pub fn ghcr_from_env(host: RegistryHost) -> Option<StaticKeychain> {
        let user = std::env::var(GHCR_USER_ENV).ok().filter(|v| !v.trim().is_empty())?;
        let token = std::env::var(GHCR_TOKEN_ENV).ok().filter(|v| !v.trim().is_empty())?;
        Some(StaticKeychain::new(host, Credentials::basic(user.trim(), token.trim())))
    }

    /// The generic per-host source from the process environment; see the module doc.
    pub fn registry_from_env(prefix_host: &RegistryHost) -> Result<Option<StaticKeychain>, KeychainError> {
        Self::registry_from_vars(prefix_host, |name| std::env::var(name).ok())
    }

    /// [`StaticKeychain::registry_from_env`] over any variable lookup. Blank counts as unset;
    /// only one of user and password set is an error, as is an invalid host.
    pub fn registry_from_vars(
        prefix_host: &RegistryHost,
        var: impl Fn(&str) -> Option<String>,
    ) -> Result<Option<StaticKeychain>, KeychainError> {
        let get = |name: &str| var(name).map(|v| v.trim().to_owned()).filter(|v| !v.is_empty());
        let host = match get(REGISTRY_HOST_ENV) {
            Some(value) => value.parse::<RegistryHost>().map_err(|e| KeychainError {
                host: value.clone(),
                source_name: REGISTRY_HOST_ENV.into(),
                message: e.to_string(),
            })?,
            None => prefix_host.clone(),
        };
        match (get(REGISTRY_USER_ENV), get(REGISTRY_PASSWORD_ENV)) {
            (Some(user), Some(password)) => Ok(Some(StaticKeychain::new(host, Credentials::basic(user, password)))),
            (None, None) => Ok(None),
            (user, _) => {
                let (set, unset) = if user.is_some() {
                    (REGISTRY_USER_ENV, REGISTRY_PASSWORD_ENV)
                } else {
                    (REGISTRY_PASSWORD_ENV, REGISTRY_USER_ENV)
                };
                Err(KeychainError {
                    host: host.to_string(),
                    source_name: "the environment".into(),
                    message: format!("{set} is set but {unset} is not; set both or neither"),
                })
            }
        }
    }

    pub fn host(&self) -> &RegistryHost {
        &self.host
    }
}

impl Keychain for StaticKeychain {
    fn credentials(&self, host: &RegistryHost) -> Result<Option<Credentials>, KeychainError> {
        Ok((host == &self.host).then(|| self.credentials.clone()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rstest::rstest;

    fn host(value: &str) -> RegistryHost {
        value.parse().expect("valid host")
    }

    fn basic(credentials: Option<Credentials>) -> Option<(String, String)> {
        match credentials {
            Some(Credentials::Basic { username, password }) => Some((username, password.expose().to_owned())),
            _ => None,
        }
    }

    fn vars(pairs: &'static [(&'static str, &'static str)]) -> impl Fn(&str) -> Option<String> {
        move |name| pairs.iter().find(|(k, _)| *k == name).map(|(_, v)| (*v).to_owned())
    }

    #[test]
    fn registry_env_credentials_apply_to_the_prefix_host_only() {
        let prefix = host("registry.example.com:5443");
        let keychain = StaticKeychain::registry_from_vars(
            &prefix,
            vars(&[
                ("IMAGEWATCH_REGISTRY_USER", "bot"),
                ("IMAGEWATCH_REGISTRY_PASSWORD", "pw"),
            ]),
        )
        .expect("valid")
        .expect("configured");
        assert_eq!(keychain.host(), &prefix);
        assert_eq!(
            basic(keychain.credentials(&prefix).expect("ok")),
            Some(("bot".into(), "pw".into()))
        );
        assert_eq!(keychain.credentials(&host("ghcr.io")).expect("ok"), None);
    }

    #[test]
    fn registry_env_host_overrides_the_prefix_host() {
        let keychain = StaticKeychain::registry_from_vars(
            &host("ghcr.io"),
            vars(&[
                ("IMAGEWATCH_REGISTRY_HOST", "gitea.example.com"),
                ("IMAGEWATCH_REGISTRY_USER", "bot"),
                ("IMAGEWATCH_REGISTRY_PASSWORD", "pw"),
            ]),
        )
        .expect("valid")
        .expect("configured");
        assert_eq!(keychain.host(), &host("gitea.example.com"));
    }

    #[rstest]
    #[case::user_only(&[("IMAGEWATCH_REGISTRY_USER", "bot")], "IMAGEWATCH_REGISTRY_PASSWORD is not")]
    #[case::password_only(&[("IMAGEWATCH_REGISTRY_PASSWORD", "pw")], "IMAGEWATCH_REGISTRY_USER is not")]
    #[case::bad_host(&[("IMAGEWATCH_REGISTRY_HOST", "not a host")], "invalid registry host")]
    fn half_configured_registry_env_is_an_error(
        #[case] pairs: &'static [(&'static str, &'static str)],
        #[case] expected: &str,
    ) {
        let error = StaticKeychain::registry_from_vars(&host("r.example.com"), vars(pairs))
            .expect_err("invalid")
            .to_string();
        assert!(error.contains(expected), "{error}");
        assert!(!error.contains("pw"), "{error}");
    }

    #[test]
    fn unset_registry_env_means_no_source() {
        assert!(
            StaticKeychain::registry_from_vars(&host("r.example.com"), vars(&[]))
                .expect("valid")
                .is_none()
        );
    }

    #[test]
    fn static_keychain_answers_only_its_host() {
        let ghcr: RegistryHost = "ghcr.io".parse().expect("valid");
        let other: RegistryHost = "quay.io".parse().expect("valid");
        let keychain = StaticKeychain::new(ghcr.clone(), Credentials::basic("u", "p"));
        assert_eq!(
            keychain
                .credentials(&ghcr)
                .expect("ok")
                .and_then(|c| c.username().map(str::to_owned)),
            Some("u".into())
        );
        assert_eq!(keychain.credentials(&other).expect("ok"), None);
    }
}
