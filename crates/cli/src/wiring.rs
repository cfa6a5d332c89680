//! The one place that decides, per registry host, which provider kind serves it and where its
//! credentials come from. Every command that talks to a registry or the Docker Engine goes
//! through here, so no command can pin a host or an auth flow of its own.

use registry_core::keychain::StaticKeychain;
use registry_core::{Credentials, KeychainChain, ProviderKind, ProviderOverrides, RegistryHost, RegistryPrefix};

use crate::exit::Failure;

/// The configured prefix and the provider overrides, read from the environment.
#[derive(Debug)]
pub struct Settings {
    pub prefix: RegistryPrefix,
    pub overrides: ProviderOverrides,
}

impl Settings {
    pub fn from_env() -> Result<Settings, Failure> {
        Ok(Settings {
            prefix: RegistryPrefix::from_env().map_err(Failure::config)?,
            overrides: ProviderOverrides::from_env().map_err(Failure::config)?,
        })
    }

    pub fn kind_for(&self, host: &RegistryHost) -> ProviderKind {
        self.overrides.kind_for(host)
    }
}

/// The credential sources for `host`: `GHCR_USER`/`GHCR_TOKEN` serve the GHCR provider kind.
pub fn keychain_for(host: &RegistryHost, kind: &ProviderKind) -> KeychainChain {
    let mut chain = KeychainChain::default();
    if *kind == ProviderKind::Ghcr
        && let Some(ghcr) = StaticKeychain::ghcr_from_env(host.clone())
    {
        chain.push(ghcr);
    }
    chain
}

/// The credentials the Docker Engine should pull from `host` with, if any.
pub async fn engine_credentials(settings: &Settings, host: &RegistryHost) -> Result<Option<Credentials>, Failure> {
    use registry_core::Keychain as _;
    let kind = settings.kind_for(host);
    keychain_for(host, &kind).credentials(host).map_err(Failure::check)
}
