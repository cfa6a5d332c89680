//! The credential-source seam, separate from how credentials are used: a `Keychain` answers
//! "what credentials do I hold for this host?". No credentials is `Ok(None)` — anonymous —
//! never an error by itself. Beside the trait: a chain of sources and fixed credentials for one
//! host. The sources that read files or run helpers (Docker's and Podman's files, credential
//! helpers) live in registry-auth; this module reads nothing.

use std::fmt;

use crate::host::RegistryHost;
use crate::secret::Credentials;

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

/// Fixed credentials for exactly one host: what the operator configured for it. It answers for
/// that host and no other.
#[derive(Clone, Debug)]
pub struct StaticKeychain {
    host: RegistryHost,
    credentials: Credentials,
}

impl StaticKeychain {
    pub fn new(host: RegistryHost, credentials: Credentials) -> StaticKeychain {
        StaticKeychain { host, credentials }
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
