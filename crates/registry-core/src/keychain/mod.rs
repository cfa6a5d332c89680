//! Where credentials come from, separate from how they are used: a `Keychain` answers "what
//! credentials do I hold for this host?". No credentials is `Ok(None)` — anonymous — never an
//! error by itself.
//!
//! The sources, each a `Keychain`:
//! - [`StaticKeychain::ghcr_from_env`]: `GHCR_USER`/`GHCR_TOKEN`, for the GHCR provider's host.
//! - [`StaticKeychain::registry_from_env`]: the generic per-host source for every other
//!   registry. `IMAGEWATCH_REGISTRY_USER` and `IMAGEWATCH_REGISTRY_PASSWORD` (both or
//!   neither) are credentials for ONE host: `IMAGEWATCH_REGISTRY_HOST` when set, else the host
//!   of the configured prefix (`MOLECULE_IMAGE_REGISTRY`). They never go to any other host.
//! - [`DockerConfigKeychain`]: Docker's `config.json` (`$DOCKER_CONFIG/config.json`, else
//!   `~/.docker/config.json`): `auths`, `credHelpers` and `credsStore`, the helpers run as
//!   `docker-credential-<name> get`. A missing file means no credentials; a malformed one is an
//!   error naming the path.
//!
//! Reading never logs a secret; errors name the host, the source and what is wrong.

mod docker_config;
mod environment;

use std::fmt;

use crate::host::RegistryHost;
use crate::secret::Credentials;

pub use docker_config::{CREDENTIAL_HELPER_TIMEOUT, DOCKER_CONFIG_ENV, DockerConfigKeychain};
pub use environment::{
    GHCR_TOKEN_ENV, GHCR_USER_ENV, REGISTRY_HOST_ENV, REGISTRY_PASSWORD_ENV, REGISTRY_USER_ENV, StaticKeychain,
};

/// Why a credential source failed (unreadable file, failing helper). Never carries a secret.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("credentials for {host} from {source_name}: {message}")]
pub struct KeychainError {
    pub host: String,
    pub source_name: String,
    pub message: String,
}

/// A source of credentials per registry host.
pub trait Keychain: Send + Sync + fmt::Debug {
    fn credentials(&self, host: &RegistryHost) -> Result<Option<Credentials>, KeychainError>;
}
/// Several sources asked in order; the first that knows the host wins.
#[derive(Debug, Default)]
pub struct KeychainChain(Vec<Box<dyn Keychain>>);

impl KeychainChain {
    pub fn push(&mut self, keychain: impl Keychain + 'static) {
        self.0.push(Box::new(keychain));
    }
}

impl Keychain for KeychainChain {
    fn credentials(&self, host: &RegistryHost) -> Result<Option<Credentials>, KeychainError> {
        for keychain in &self.0 {
            if let Some(credentials) = keychain.credentials(host)? {
                return Ok(Some(credentials));
            }
        }
        Ok(None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chain_takes_the_first_source_that_knows_the_host() {
        let host: RegistryHost = "ghcr.io".parse().expect("valid");
        let mut chain = KeychainChain::default();
        chain.push(StaticKeychain::new(
            "quay.io".parse().expect("valid"),
            Credentials::basic("q", "p"),
        ));
        chain.push(StaticKeychain::new(host.clone(), Credentials::basic("first", "p")));
        chain.push(StaticKeychain::new(host.clone(), Credentials::basic("second", "p")));
        let found = chain.credentials(&host).expect("ok").expect("found");
        assert_eq!(found.username(), Some("first"));
    }
}
