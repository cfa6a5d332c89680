//! The one place that decides, per registry host, which provider kind serves it and where its
//! credentials come from. Every command that talks to a registry or the Docker Engine goes
//! through here, so no command can pin a host or an auth flow of its own.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use auth_ecr::EcrProvider;
use auth_ghcr::BearerTokenProvider;
use registry_core::client::{
    DEFAULT_CONNECT_TIMEOUT, DEFAULT_REQUEST_TIMEOUT, RegistryClient, Transport, TransportConfig,
};
use registry_core::keychain::{DockerConfigKeychain, StaticKeychain};
use registry_core::{
    Credentials, KeychainChain, ProviderKind, ProviderOverrides, RegistryHost, RegistryPrefix, TokenProvider,
};

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

/// The credential sources of the non-ECR hosts among `hosts`, built once (Docker's
/// `config.json` is read once per process, not once per host); first match wins:
/// `GHCR_USER`/`GHCR_TOKEN` (for hosts of the GHCR provider kind only),
/// `IMAGEWATCH_REGISTRY_USER`/`IMAGEWATCH_REGISTRY_PASSWORD` (for `IMAGEWATCH_REGISTRY_HOST`,
/// else the prefix's host), then Docker's `config.json`. A half-set pair of variables or a
/// malformed `config.json` is a configuration error.
pub fn keychain_for(settings: &Settings, hosts: &[RegistryHost]) -> Result<KeychainChain, Failure> {
    let mut chain = KeychainChain::default();
    for host in hosts
        .iter()
        .filter(|host| settings.kind_for(host) == ProviderKind::Ghcr)
    {
        if let Some(ghcr) = StaticKeychain::ghcr_from_env(host.clone()) {
            chain.push(ghcr);
        }
    }
    if let Some(generic) = StaticKeychain::registry_from_env(settings.prefix.host()).map_err(Failure::config)? {
        chain.push(generic);
    }
    chain.push(DockerConfigKeychain::from_env().map_err(Failure::config)?);
    Ok(chain)
}

/// A registry client and the provider of each host it was wired for. The same provider serves
/// a host's digest checks and its Docker pulls, so both share one token cache.
pub struct Wired {
    pub client: RegistryClient,
    pub providers: HashMap<RegistryHost, Arc<dyn TokenProvider>>,
}

/// Wires a provider to each of `hosts` and a client that uses them. THE mapping from a host's
/// provider kind to the `TokenProvider` that answers its challenges: GHCR and generic
/// registries get the challenge-driven bearer flow (auth-ghcr) over one keychain shared by all
/// of them (see [`keychain_for`]); ECR hosts share one `EcrProvider` (auth-ecr's
/// GetAuthorizationToken), so the AWS configuration is loaded once and hosts of one account
/// and region share one token. Each source is built on first need.
pub async fn wire(settings: &Settings, transport: Arc<Transport>, hosts: &[RegistryHost]) -> Result<Wired, Failure> {
    let mut client = RegistryClient::new(transport.clone());
    let mut providers = HashMap::new();
    let mut keychain: Option<Arc<KeychainChain>> = None;
    let mut ecr: Option<Arc<EcrProvider>> = None;
    for host in hosts {
        let kind = settings.kind_for(host);
        let provider: Arc<dyn TokenProvider> = match &kind {
            ProviderKind::Ghcr | ProviderKind::Generic => {
                let keychain = match &keychain {
                    Some(keychain) => keychain.clone(),
                    None => keychain.insert(Arc::new(keychain_for(settings, hosts)?)).clone(),
                };
                Arc::new(BearerTokenProvider::new(transport.clone(), keychain))
            }
            ProviderKind::Ecr(registry) => {
                let provider = match &ecr {
                    Some(provider) => provider.clone(),
                    None => ecr.insert(Arc::new(EcrProvider::from_env().await)).clone(),
                };
                provider.add_registry(host.clone(), registry.clone());
                provider
            }
        };
        client = client.with_provider(host.clone(), kind, provider.clone());
        providers.insert(host.clone(), provider);
    }
    Ok(Wired { client, providers })
}

/// How imagewatch reaches registries: flags with environment fallbacks, shared by every
/// command that talks to a registry.
#[derive(Debug, Clone, clap::Args)]
pub struct TransportArgs {
    /// A registry host that may be reached over plain http when https fails (repeatable;
    /// loopback hosts always may). Credentials are never sent to it over plain http.
    #[arg(
        long = "insecure-registry",
        value_name = "HOST",
        env = "IMAGEWATCH_INSECURE_REGISTRIES",
        value_delimiter = ','
    )]
    pub insecure_registries: Vec<String>,
    /// A PEM file of extra CA certificates to trust besides the system's.
    #[arg(long, value_name = "PEM", env = "IMAGEWATCH_CA_BUNDLE")]
    pub ca_bundle: Option<PathBuf>,
    /// Seconds a whole registry request may take.
    #[arg(long = "request-timeout", value_name = "SECONDS", env = "IMAGEWATCH_REQUEST_TIMEOUT", default_value_t = DEFAULT_REQUEST_TIMEOUT.as_secs_f64())]
    pub request_timeout: f64,
    /// Seconds to wait for a connection.
    #[arg(long = "connect-timeout", value_name = "SECONDS", env = "IMAGEWATCH_CONNECT_TIMEOUT", default_value_t = DEFAULT_CONNECT_TIMEOUT.as_secs_f64())]
    pub connect_timeout: f64,
}

impl TransportArgs {
    /// The transport these flags describe; an invalid host, timeout or CA bundle is a
    /// configuration error.
    pub fn transport(&self) -> Result<Arc<Transport>, Failure> {
        let seconds = |value: f64, flag: &str| {
            Duration::try_from_secs_f64(value)
                .ok()
                .filter(|d| !d.is_zero())
                .ok_or_else(|| Failure::Config(format!("--{flag} {value} is not a positive number of seconds")))
        };
        let insecure_hosts = self
            .insecure_registries
            .iter()
            .map(|host| host.trim())
            .filter(|host| !host.is_empty())
            .map(|host| host.parse::<RegistryHost>().map_err(Failure::config))
            .collect::<Result<Vec<_>, _>>()?;
        let config = TransportConfig {
            connect_timeout: seconds(self.connect_timeout, "connect-timeout")?,
            request_timeout: seconds(self.request_timeout, "request-timeout")?,
            insecure_hosts,
            ca_bundle: self.ca_bundle.clone(),
            ..TransportConfig::default()
        };
        Ok(Arc::new(Transport::new(config).map_err(Failure::config)?))
    }
}

/// The credentials the Docker Engine should pull from `host` with, if any: what the host's
/// provider would authenticate with.
pub async fn engine_credentials(settings: &Settings, host: &RegistryHost) -> Result<Option<Credentials>, Failure> {
    let transport = Arc::new(Transport::new(TransportConfig::default()).map_err(Failure::config)?);
    let wired = wire(settings, transport, std::slice::from_ref(host)).await?;
    match wired.providers.get(host) {
        Some(provider) => provider.engine_credentials(host).await.map_err(Failure::check),
        None => Ok(None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn host(value: &str) -> RegistryHost {
        value.parse().expect("valid host")
    }

    #[tokio::test]
    async fn ecr_hosts_share_one_provider_and_others_get_their_own() {
        let settings = Settings {
            prefix: "ghcr.io/molecule-ai".parse().expect("valid"),
            overrides: "mirror.example.com=ecr:123456789012:us-east-1".parse().expect("valid"),
        };
        let ecr = host("123456789012.dkr.ecr.us-east-1.amazonaws.com");
        let mirror = host("mirror.example.com");
        let ghcr = host("ghcr.io");
        let transport = Arc::new(Transport::new(TransportConfig::default()).expect("transport"));
        let wired = wire(&settings, transport, &[ecr.clone(), mirror.clone(), ghcr.clone()])
            .await
            .expect("wired");
        let same = |a: &RegistryHost, b: &RegistryHost| {
            std::ptr::addr_eq(Arc::as_ptr(&wired.providers[a]), Arc::as_ptr(&wired.providers[b]))
        };
        assert!(same(&ecr, &mirror), "ECR hosts must share one EcrProvider");
        assert!(!same(&ecr, &ghcr));
        assert_eq!(wired.providers.len(), 3);
    }
}
