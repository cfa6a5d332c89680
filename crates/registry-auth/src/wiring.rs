//! The wiring: given the settings and the hosts to reach, builds each host's provider and the
//! registry client that uses them, and the one engine-auth answer per host that the Docker
//! refreshers send. THE mapping from a provider kind to the `TokenProvider` that answers its
//! challenges; no other code picks a provider. It reads no environment: everything comes in
//! through [`AuthSettings`].

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;

use async_trait::async_trait;
use auth_ecr::EcrProvider;
use auth_ghcr::BearerTokenProvider;
use registry_core::{
    AuthError, EngineAuthSource, KeychainChain, RegistryClient, RegistryHost, Secret, StaticKeychain, TokenProvider,
    Transport,
};

use crate::engine_auth::EngineAuth;
use crate::hint::auth_hint;
use crate::keychain::DockerConfigKeychain;
use crate::kind::{GHCR_HOST, ProviderKind};
use crate::settings::{AuthSettings, AwsSource, SettingsError};

/// What serves one host: its provider kind and the provider (shared by the digest checks and
/// the Docker pulls, so both use one token cache).
#[derive(Clone, Debug)]
pub struct HostAuth {
    pub kind: ProviderKind,
    pub provider: Arc<dyn TokenProvider>,
}

/// A registry client and what authenticates to each host it was wired for.
#[derive(Debug)]
pub struct Wired {
    pub client: RegistryClient,
    pub hosts: HashMap<RegistryHost, HostAuth>,
}

impl Wired {
    /// The Docker Engine's pull credentials for every wired host, from the same providers.
    pub fn engine_auth(&self) -> EngineAuths {
        EngineAuths {
            providers: self
                .hosts
                .iter()
                .map(|(host, auth)| (host.clone(), auth.provider.clone()))
                .collect(),
        }
    }
}

/// Wires a provider to each of `hosts` and a client that uses them. GHCR and generic
/// registries get the challenge-driven bearer flow (auth-ghcr) over one keychain shared by all
/// of them (see [`keychain_for`]); ECR hosts share one `EcrProvider` (auth-ecr's
/// GetAuthorizationToken), so the AWS configuration is loaded once and hosts of one account
/// and region share one token. Each source is built on first need.
pub async fn wire(
    settings: &AuthSettings,
    transport: Arc<Transport>,
    hosts: &[RegistryHost],
) -> Result<Wired, SettingsError> {
    let mut client = RegistryClient::new(transport.clone());
    let mut wired = HashMap::new();
    let mut keychain: Option<Arc<KeychainChain>> = None;
    let mut ecr: Option<Arc<EcrProvider>> = None;
    for host in hosts {
        let kind = settings.overrides.kind_for(host);
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
                    None => ecr.insert(Arc::new(ecr_provider(&settings.aws).await)).clone(),
                };
                provider.add_registry(host.clone(), registry.clone());
                provider
            }
        };
        client = client.with_provider(host.clone(), provider.clone(), auth_hint(&kind, host));
        wired.insert(host.clone(), HostAuth { kind, provider });
    }
    Ok(Wired { client, hosts: wired })
}

async fn ecr_provider(aws: &AwsSource) -> EcrProvider {
    match aws {
        AwsSource::DefaultChain => EcrProvider::from_default_chain().await,
        AwsSource::Config(sdk) => EcrProvider::with_sdk_config((**sdk).clone()),
    }
}

/// The credential sources of the bearer-flow hosts, built once (Docker's `config.json` is read
/// once per process, not once per host); first match wins: `IMAGEWATCH_REGISTRY_USER`/
/// `_PASSWORD` for their one host; `GHCR_USER`/`GHCR_TOKEN` for the operator's registry,
/// `ghcr.io` and hosts declared `ghcr` (both chosen by the operator, never another host);
/// Docker's `config.json`; Podman's `auth.json`. A malformed file is an error naming it.
pub fn keychain_for(settings: &AuthSettings, hosts: &[RegistryHost]) -> Result<KeychainChain, SettingsError> {
    let mut chain = KeychainChain::default();
    if let Some((host, credentials)) = &settings.registry_credentials {
        chain.push(StaticKeychain::new(host.clone(), credentials.clone()));
    }
    if let Some(credentials) = &settings.ghcr_credentials {
        let mut ghcr_hosts = vec![settings.registry_host.clone()];
        ghcr_hosts.extend(GHCR_HOST.parse::<RegistryHost>().ok());
        ghcr_hosts.extend(
            hosts
                .iter()
                .filter(|host| settings.overrides.kind_for(host) == ProviderKind::Ghcr)
                .cloned(),
        );
        ghcr_hosts.dedup();
        for host in ghcr_hosts {
            chain.push(StaticKeychain::new(host, credentials.clone()));
        }
    }
    let files = settings.docker_config.iter().chain(&settings.podman_auth);
    for path in files {
        let mut file = DockerConfigKeychain::load(path).map_err(|e| SettingsError::new(e.to_string()))?;
        if let Some(dir) = &settings.helper_dir {
            file = file.with_helper_dir(dir);
        }
        chain.push(file);
    }
    Ok(chain)
}

/// The Docker Engine's pull credentials per host: what the host's provider authenticates with
/// (ECR's current password, the configured user and token, ...), as the one [`EngineAuth`]
/// payload. A host that was not wired pulls anonymously.
#[derive(Clone)]
pub struct EngineAuths {
    providers: HashMap<RegistryHost, Arc<dyn TokenProvider>>,
}

impl EngineAuths {
    /// The payload for `host`, if it has credentials.
    pub async fn payload(&self, host: &RegistryHost) -> Result<Option<EngineAuth>, AuthError> {
        let Some(provider) = self.providers.get(host) else {
            return Ok(None);
        };
        Ok(provider
            .engine_credentials(host)
            .await?
            .map(|credentials| EngineAuth::new(host, credentials)))
    }
}

impl fmt::Debug for EngineAuths {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EngineAuths")
            .field("hosts", &self.providers.keys().collect::<Vec<_>>())
            .finish()
    }
}

#[async_trait]
impl EngineAuthSource for EngineAuths {
    async fn registry_auth(&self, host: &RegistryHost) -> Result<Option<Secret>, AuthError> {
        Ok(self.payload(host).await?.map(|payload| payload.header_value()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use registry_core::{Credentials, Keychain, TransportConfig};

    fn host(value: &str) -> RegistryHost {
        value.parse().expect("valid host")
    }

    /// The user name `chain` answers for `value`, if any.
    fn username(chain: &KeychainChain, value: &str) -> Option<String> {
        chain
            .credentials(&host(value))
            .expect("ok")
            .and_then(|c| c.username().map(str::to_owned))
    }

    fn transport() -> Arc<Transport> {
        Arc::new(Transport::new(TransportConfig::default()).expect("transport"))
    }

    #[tokio::test]
    async fn ecr_hosts_share_one_provider_and_others_get_their_own() {
        let mut settings = AuthSettings::new(host("ghcr.io"));
        settings.overrides = "mirror.example.com=ecr:123456789012:us-east-1".parse().expect("valid");
        let ecr = host("123456789012.dkr.ecr.us-east-1.amazonaws.com");
        let mirror = host("mirror.example.com");
        let ghcr = host("ghcr.io");
        let wired = wire(&settings, transport(), &[ecr.clone(), mirror.clone(), ghcr.clone()])
            .await
            .expect("wired");
        let same = |a: &RegistryHost, b: &RegistryHost| {
            std::ptr::addr_eq(
                Arc::as_ptr(&wired.hosts[a].provider),
                Arc::as_ptr(&wired.hosts[b].provider),
            )
        };
        assert!(same(&ecr, &mirror), "ECR hosts must share one EcrProvider");
        assert!(!same(&ecr, &ghcr));
        assert_eq!(wired.hosts.len(), 3);
        assert_eq!(wired.hosts[&mirror].kind.name(), "ecr");
    }

    /// The platform this replaces sends `GHCR_USER`/`GHCR_TOKEN` to whatever registry the prefix
    /// names; they must reach that host and ghcr.io, and no other.
    #[test]
    fn ghcr_credentials_serve_the_operators_registry_and_ghcr_only() {
        let mirror = host("registry.example.com:5443");
        let mut settings = AuthSettings::new(mirror.clone());
        settings.ghcr_credentials = Some(Credentials::basic("bot", "tok"));
        let chain = keychain_for(&settings, std::slice::from_ref(&mirror)).expect("chain");
        let user = |h: &str| username(&chain, h);
        assert_eq!(user("registry.example.com:5443").as_deref(), Some("bot"));
        assert_eq!(user("ghcr.io").as_deref(), Some("bot"));
        assert_eq!(user("quay.io"), None);
        assert_eq!(user("registry.example.com"), None, "another port is another host");
    }

    #[test]
    fn registry_credentials_come_before_ghcr_credentials_on_the_same_host() {
        let mirror = host("registry.example.com");
        let mut settings = AuthSettings::new(mirror.clone());
        settings.ghcr_credentials = Some(Credentials::basic("ghcr-bot", "a"));
        settings.registry_credentials = Some((mirror.clone(), Credentials::basic("registry-bot", "b")));
        let chain = keychain_for(&settings, &[]).expect("chain");
        let found = chain.credentials(&mirror).expect("ok").expect("found");
        assert_eq!(found.username(), Some("registry-bot"));
    }

    #[test]
    fn podman_auth_file_is_a_source_after_dockers() {
        let dir = tempfile::tempdir().expect("tempdir");
        let docker = dir.path().join("config.json");
        let podman = dir.path().join("auth.json");
        std::fs::write(&docker, r#"{"auths":{"a.example.com":{"auth":"ZG9ja2VyOnB3"}}}"#).expect("write");
        std::fs::write(
            &podman,
            r#"{"auths":{"a.example.com":{"auth":"cG9kbWFuOnB3"},"quay.io/team":{"auth":"cG9kbWFuOnB3"}}}"#,
        )
        .expect("write");
        let mut settings = AuthSettings::new(host("a.example.com"));
        settings.docker_config = Some(docker);
        settings.podman_auth = vec![dir.path().join("missing.json"), podman];
        let chain = keychain_for(&settings, &[]).expect("chain");
        let user = |h: &str| username(&chain, h);
        assert_eq!(user("a.example.com").as_deref(), Some("docker"));
        assert_eq!(user("quay.io").as_deref(), Some("podman"));
    }

    #[tokio::test]
    async fn engine_auth_is_the_payload_of_the_hosts_provider() {
        let mirror = host("registry.example.com:5443");
        let mut settings = AuthSettings::new(mirror.clone());
        settings.registry_credentials = Some((mirror.clone(), Credentials::basic("bot", "pw")));
        let wired = wire(&settings, transport(), std::slice::from_ref(&mirror))
            .await
            .expect("wired");
        let auths = wired.engine_auth();
        let payload = auths.payload(&mirror).await.expect("ok").expect("credentials");
        let header = auths.registry_auth(&mirror).await.expect("ok").expect("credentials");
        assert_eq!(header.expose(), payload.header_value().expose());
        assert_eq!(payload.server_address(), "registry.example.com:5443");
        assert!(
            auths
                .registry_auth(&host("other.example.com"))
                .await
                .expect("ok")
                .is_none()
        );
    }
}
