//! Where the Docker refresher's pull credentials come from: the [`EngineAuthSource`] seam. The
//! CLI supplies one backed by its per-host providers, so this crate depends on no auth crate.

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;

use async_trait::async_trait;
use bollard::auth::DockerCredentials;
use registry_core::{AuthError, Credentials, EngineAuth, RegistryHost, TokenProvider};

/// The `X-Registry-Auth` payload for pulls from a host, if it needs one.
#[async_trait]
pub trait EngineAuthSource: Send + Sync + fmt::Debug {
    /// `Ok(None)` pulls anonymously.
    async fn engine_auth(&self, host: &RegistryHost) -> Result<Option<EngineAuth>, AuthError>;
}

/// Anonymous pulls everywhere.
#[derive(Clone, Copy, Debug, Default)]
pub struct AnonymousPulls;

#[async_trait]
impl EngineAuthSource for AnonymousPulls {
    async fn engine_auth(&self, _host: &RegistryHost) -> Result<Option<EngineAuth>, AuthError> {
        Ok(None)
    }
}

/// Fixed credentials per host (tests, or a single configured registry).
#[derive(Clone, Debug, Default)]
pub struct StaticEngineAuth {
    credentials: HashMap<RegistryHost, Credentials>,
}

impl StaticEngineAuth {
    pub fn new() -> StaticEngineAuth {
        StaticEngineAuth::default()
    }

    pub fn with(mut self, host: RegistryHost, credentials: Credentials) -> StaticEngineAuth {
        self.credentials.insert(host, credentials);
        self
    }
}

#[async_trait]
impl EngineAuthSource for StaticEngineAuth {
    async fn engine_auth(&self, host: &RegistryHost) -> Result<Option<EngineAuth>, AuthError> {
        Ok(self
            .credentials
            .get(host)
            .map(|credentials| EngineAuth::new(host, credentials.clone())))
    }
}

/// Asks each host's [`TokenProvider`] for engine credentials (ECR's current password, GHCR's
/// user and token, ...). `select` maps a host to its provider; `None` pulls anonymously.
pub struct ProviderEngineAuth<F> {
    select: F,
}

impl<F> ProviderEngineAuth<F>
where
    F: Fn(&RegistryHost) -> Option<Arc<dyn TokenProvider>> + Send + Sync,
{
    pub fn new(select: F) -> ProviderEngineAuth<F> {
        ProviderEngineAuth { select }
    }
}

impl<F> fmt::Debug for ProviderEngineAuth<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ProviderEngineAuth")
    }
}

#[async_trait]
impl<F> EngineAuthSource for ProviderEngineAuth<F>
where
    F: Fn(&RegistryHost) -> Option<Arc<dyn TokenProvider>> + Send + Sync,
{
    async fn engine_auth(&self, host: &RegistryHost) -> Result<Option<EngineAuth>, AuthError> {
        let Some(provider) = (self.select)(host) else {
            return Ok(None);
        };
        Ok(provider
            .engine_credentials(host)
            .await?
            .map(|credentials| EngineAuth::new(host, credentials)))
    }
}

/// bollard's form of the payload: `serveraddress` is the registry host (Docker Hub's
/// `https://index.docker.io/v1/`), never a path. Its `Debug` shows the password: never log it.
pub(crate) fn docker_credentials(auth: &EngineAuth) -> DockerCredentials {
    let mut credentials = DockerCredentials {
        serveraddress: Some(auth.server_address().to_owned()),
        ..DockerCredentials::default()
    };
    match auth.credentials() {
        Credentials::Basic { username, password } => {
            credentials.username = Some(username.clone());
            credentials.password = Some(password.expose().to_owned());
        }
        Credentials::IdentityToken(token) => credentials.identitytoken = Some(token.expose().to_owned()),
        Credentials::Bearer(token) => credentials.registrytoken = Some(token.expose().to_owned()),
    }
    credentials
}

/// bollard 0.21 encodes `X-Registry-Auth` with the STANDARD base64 alphabet, but the engine
/// decodes it as base64url, and on a decoding error silently pulls with NO credentials. A
/// payload whose encoding holds `+` or `/` (it depends on the password's bytes) would then fail
/// as "unauthorized" with the right password. This rewrites the header to base64url.
pub(crate) fn url_safe_registry_auth(mut request: bollard::BollardRequest) -> bollard::BollardRequest {
    let fixed = request
        .headers()
        .get("X-Registry-Auth")
        .and_then(|value| value.to_str().ok())
        .filter(|value| value.contains(['+', '/']))
        .map(|value| value.replace('+', "-").replace('/', "_"));
    if let Some(fixed) = fixed
        && let Ok(value) = fixed.parse()
    {
        request.headers_mut().insert("X-Registry-Auth", value);
    }
    request
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payload_carries_the_host_as_serveraddress() {
        let host: RegistryHost = "127.0.0.1:5000".parse().expect("valid");
        let auth = EngineAuth::new(&host, Credentials::basic("alice", "pw"));
        let credentials = docker_credentials(&auth);
        assert_eq!(credentials.serveraddress.as_deref(), Some("127.0.0.1:5000"));
        assert_eq!(credentials.username.as_deref(), Some("alice"));
        assert_eq!(credentials.password.as_deref(), Some("pw"));
        let hub = EngineAuth::new(&RegistryHost::docker_hub(), Credentials::basic("u", "p"));
        assert_eq!(
            docker_credentials(&hub).serveraddress.as_deref(),
            Some("https://index.docker.io/v1/")
        );
    }

    #[tokio::test]
    async fn static_source_answers_only_its_hosts() {
        let host: RegistryHost = "127.0.0.1:5000".parse().expect("valid");
        let source = StaticEngineAuth::new().with(host.clone(), Credentials::basic("u", "p"));
        assert!(source.engine_auth(&host).await.expect("ok").is_some());
        let other: RegistryHost = "ghcr.io".parse().expect("valid");
        assert!(source.engine_auth(&other).await.expect("ok").is_none());
    }
}
