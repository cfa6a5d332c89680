//! The one place that decides, per registry host, which provider kind serves it and where its
//! credentials come from. Every command that talks to a registry or the Docker Engine goes
//! through here, so no command can pin a host or an auth flow of its own.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

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

/// The credential sources for `host`, first match wins: `GHCR_USER`/`GHCR_TOKEN` (GHCR provider
/// kind only), `IMAGEWATCH_REGISTRY_USER`/`IMAGEWATCH_REGISTRY_PASSWORD` (for
/// `IMAGEWATCH_REGISTRY_HOST`, else the prefix's host), then Docker's `config.json`. A
/// half-set pair of variables or a malformed `config.json` is a configuration error.
pub fn keychain_for(settings: &Settings, host: &RegistryHost, kind: &ProviderKind) -> Result<KeychainChain, Failure> {
    let mut chain = KeychainChain::default();
    if *kind == ProviderKind::Ghcr
        && let Some(ghcr) = StaticKeychain::ghcr_from_env(host.clone())
    {
        chain.push(ghcr);
    }
    if let Some(generic) = StaticKeychain::registry_from_env(settings.prefix.host()).map_err(Failure::config)? {
        chain.push(generic);
    }
    chain.push(DockerConfigKeychain::from_env().map_err(Failure::config)?);
    Ok(chain)
}

/// THE mapping from a host's provider kind to the `TokenProvider` that answers its challenges.
/// GHCR and generic registries get the challenge-driven bearer flow (auth-ghcr) over the
/// host's keychain; ECR registries get auth-ecr's GetAuthorizationToken provider.
pub async fn provider_for(
    settings: &Settings,
    transport: &Arc<Transport>,
    host: &RegistryHost,
) -> Result<Arc<dyn TokenProvider>, Failure> {
    Ok(match settings.kind_for(host) {
        kind @ (ProviderKind::Ghcr | ProviderKind::Generic) => Arc::new(BearerTokenProvider::new(
            transport.clone(),
            Arc::new(keychain_for(settings, host, &kind)?),
        )),
        ProviderKind::Ecr(registry) => Arc::new(
            auth_ecr::EcrProvider::from_env()
                .await
                .with_registry(host.clone(), registry),
        ),
    })
}

/// A registry client with the provider `provider_for` picks for each of `hosts`.
pub async fn registry_client(
    settings: &Settings,
    transport: Arc<Transport>,
    hosts: &[RegistryHost],
) -> Result<RegistryClient, Failure> {
    let mut client = RegistryClient::new(transport.clone());
    for host in hosts {
        let provider = provider_for(settings, &transport, host).await?;
        client = client.with_provider(host.clone(), settings.kind_for(host), provider);
    }
    Ok(client)
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
    provider_for(settings, &transport, host)
        .await?
        .engine_credentials(host)
        .await
        .map_err(Failure::check)
}
