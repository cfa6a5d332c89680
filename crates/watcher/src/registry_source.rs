//! The real [`DigestSource`]: `registry_core`'s [`RegistryClient`], with its batch API so one
//! token exchange covers many repositories of a registry. Maps [`RegistryError`] to the kinds
//! the watcher backs off on.

use std::sync::Arc;

use async_trait::async_trait;
use futures_util::StreamExt as _;
use registry_core::client::{RegistryClient, RegistryError};
use registry_core::{Digest, ImageReference};

use crate::source::{CheckError, CheckErrorKind, DigestSource};

/// Digests from registries, through one shared [`RegistryClient`] (its challenge cache and the
/// providers' token caches are what keep a warm check at one request).
#[derive(Clone, Debug)]
pub struct RegistrySource {
    client: Arc<RegistryClient>,
}

impl RegistrySource {
    pub fn new(client: Arc<RegistryClient>) -> RegistrySource {
        RegistrySource { client }
    }

    pub fn client(&self) -> &Arc<RegistryClient> {
        &self.client
    }
}

#[async_trait]
impl DigestSource for RegistrySource {
    async fn digest(&self, image: &ImageReference) -> Result<Digest, CheckError> {
        self.client.manifest_digest(image).await.map_err(|e| check_error(&e))
    }

    async fn digests(&self, images: &[ImageReference], concurrency: usize) -> Vec<Result<Digest, CheckError>> {
        self.client
            .manifest_digests(images, concurrency)
            .await
            .into_iter()
            .map(|(_, result)| result.map_err(|e| check_error(&e)))
            .collect()
    }

    async fn digests_as_ready(
        &self,
        images: &[ImageReference],
        concurrency: usize,
        ready: &(dyn Fn(usize, Result<Digest, CheckError>) + Send + Sync),
    ) {
        let mut answers = std::pin::pin!(self.client.manifest_digests_as_ready(images, concurrency));
        while let Some((index, answer)) = answers.next().await {
            ready(index, answer.map_err(|e| check_error(&e)));
        }
    }
}

/// The watcher's view of a registry error: its kind, its message, its `Retry-After`.
pub fn check_error(error: &RegistryError) -> CheckError {
    let kind = match error {
        RegistryError::Auth { .. } => CheckErrorKind::Unauthorized,
        RegistryError::NotFound { .. } => CheckErrorKind::NotFound,
        RegistryError::RateLimited { .. } => CheckErrorKind::RateLimited,
        RegistryError::Server { status, .. } if *status >= 500 => CheckErrorKind::Server,
        RegistryError::Server { .. } => CheckErrorKind::Other,
        RegistryError::Timeout { .. } | RegistryError::Unreachable { .. } => CheckErrorKind::Unreachable,
        RegistryError::Malformed { .. } | RegistryError::DigestMismatch { .. } => CheckErrorKind::Protocol,
        RegistryError::Insecure { .. } => CheckErrorKind::Other,
    };
    CheckError::new(kind, error.to_string())
        .with_retry_after(error.retry_after())
        .with_timed_out(matches!(error, RegistryError::Timeout { .. }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use registry_core::RegistryHost;
    use rstest::rstest;
    use std::time::Duration;

    fn host() -> RegistryHost {
        "ghcr.io".parse().expect("valid")
    }

    #[rstest]
    #[case::rate_limited(
        RegistryError::RateLimited { host: host(), retry_after: Some(Duration::from_secs(7)) },
        CheckErrorKind::RateLimited,
        Some(7)
    )]
    #[case::bad_gateway(
        RegistryError::Server { host: host(), status: 502, what: "manifest".into() },
        CheckErrorKind::Server,
        None
    )]
    #[case::unexpected_4xx(
        RegistryError::Server { host: host(), status: 418, what: "manifest".into() },
        CheckErrorKind::Other,
        None
    )]
    #[case::refused(
        RegistryError::Unreachable { host: host(), reason: "connection refused".into() },
        CheckErrorKind::Unreachable,
        None
    )]
    #[case::not_found(RegistryError::NotFound { host: host(), image: "a/b:latest".into() }, CheckErrorKind::NotFound, None)]
    fn registry_errors_map_to_watcher_kinds(
        #[case] error: RegistryError,
        #[case] kind: CheckErrorKind,
        #[case] retry_after: Option<u64>,
    ) {
        let mapped = check_error(&error);
        assert_eq!(mapped.kind(), kind);
        assert_eq!(mapped.retry_after(), retry_after.map(Duration::from_secs));
        assert_eq!(mapped.message(), error.to_string());
    }

    #[test]
    fn only_a_timeout_is_marked_timed_out() {
        let refused = RegistryError::Unreachable {
            host: host(),
            reason: "connection refused".into(),
        };
        assert!(!check_error(&refused).timed_out());
        let timeout = RegistryError::Timeout {
            host: host(),
            url: "https://ghcr.io/v2/".into(),
            after: Duration::from_secs(10),
        };
        let mapped = check_error(&timeout);
        assert_eq!(mapped.kind(), CheckErrorKind::Unreachable);
        assert!(mapped.timed_out());
    }
}
