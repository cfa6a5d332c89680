//! The auth seams. A `TokenProvider` turns a registry's challenge into an `Authorization`
//! header and yields the credentials the Docker Engine pulls with; an `EngineAuthSource` gives
//! the Engine's `X-Registry-Auth` value for a host. Which provider serves which host is decided
//! above this crate (registry-auth); implementations live in the auth crates. This module holds
//! no protocol and names no provider.

use std::fmt;

use async_trait::async_trait;

use crate::challenge::Challenge;
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

/// The Docker Engine's pull credentials for a host: the `X-Registry-Auth` header value, built
/// by whoever decides who authenticates to that host. A refresher sends it as is, so what it
/// pulls with is exactly what `imagewatch auth-header` prints.
#[async_trait]
pub trait EngineAuthSource: Send + Sync + fmt::Debug {
    /// `Ok(None)` pulls anonymously.
    async fn registry_auth(&self, host: &RegistryHost) -> Result<Option<Secret>, AuthError>;
}

/// Anonymous pulls everywhere.
#[derive(Clone, Copy, Debug, Default)]
pub struct AnonymousPulls;

#[async_trait]
impl EngineAuthSource for AnonymousPulls {
    async fn registry_auth(&self, _host: &RegistryHost) -> Result<Option<Secret>, AuthError> {
        Ok(None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn authorization_debug_hides_the_token() {
        let authorization = Authorization::bearer("tok3n");
        assert!(!format!("{authorization:?}").contains("tok3n"));
        assert_eq!(authorization.header_value(), "Bearer tok3n");
    }
}
