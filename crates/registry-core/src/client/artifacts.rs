//! Signature artifacts on the wire: a manifest by tag or digest (cosign's `sha256-<hex>.sig`
//! tag, a referrer), a blob by digest, and the OCI 1.1 referrers API. Requests go through the
//! same challenge cache, token provider and transport bounds (timeouts, body cap, credential
//! rules) as the digest checks, under the image's own `pull` scope, so a token fetched for the
//! check serves them too.
//!
//! It only fetches: which artifact to ask for, and whether it verifies, is the trust crate's.

use reqwest::Method;

use super::error::RegistryError;
use super::registry::{HostAuth, RegistryClient, preferred_challenge, rate_limited};
use super::stats::RequestKind;
use super::transport::Response;
use crate::digest::Digest;
use crate::host::RegistryHost;
use crate::scope::Scope;

/// What a signature manifest may be: cosign writes OCI image manifests (older releases Docker
/// v2 ones).
pub const ARTIFACT_MANIFEST_ACCEPT: &str =
    "application/vnd.oci.image.manifest.v1+json, application/vnd.docker.distribution.manifest.v2+json";

/// A referrers list: an OCI image index (from the API or the referrers tag schema).
pub const REFERRERS_ACCEPT: &str = "application/vnd.oci.image.index.v1+json";

/// A manifest as the registry served it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ArtifactManifest {
    /// The sha256 of the exact bytes (checked against `Docker-Content-Digest` when sent).
    pub digest: Digest,
    pub media_type: Option<String>,
    pub body: Vec<u8>,
}

impl RegistryClient {
    /// The manifest `reference` (a tag or a digest) of `repository`; `None` when the registry
    /// has none (404). A manifest fetched by digest must hash to it.
    pub async fn artifact_manifest(
        &self,
        host: &RegistryHost,
        repository: &str,
        reference: &str,
        accept: &str,
    ) -> Result<Option<ArtifactManifest>, RegistryError> {
        let path = format!("{repository}/manifests/{reference}");
        let Some(response) = self.artifact_get(host, repository, &path, accept).await? else {
            return Ok(None);
        };
        let digest = Digest::sha256_of(&response.body);
        let claimed = reference
            .parse::<Digest>()
            .ok()
            .or_else(|| response.header("docker-content-digest")?.trim().parse().ok());
        if let Some(claimed) = claimed
            && claimed.algorithm() == "sha256"
            && claimed != digest
        {
            return Err(RegistryError::Malformed {
                host: host.clone(),
                reason: format!(
                    "the manifest {repository}:{reference} hashes to {} but should be {}",
                    digest.short(),
                    claimed.short()
                ),
            });
        }
        Ok(Some(ArtifactManifest {
            digest,
            media_type: response.header("content-type").map(str::to_owned),
            body: response.body,
        }))
    }

    /// The blob `digest` of `repository`, checked against its digest; `None` on 404.
    pub async fn artifact_blob(
        &self,
        host: &RegistryHost,
        repository: &str,
        digest: &Digest,
    ) -> Result<Option<Vec<u8>>, RegistryError> {
        let path = format!("{repository}/blobs/{digest}", digest = digest.as_str());
        let Some(response) = self.artifact_get(host, repository, &path, "*/*").await? else {
            return Ok(None);
        };
        if digest.algorithm() == "sha256" && Digest::sha256_of(&response.body) != *digest {
            return Err(RegistryError::Malformed {
                host: host.clone(),
                reason: format!(
                    "the blob {} of {repository} does not hash to its digest",
                    digest.short()
                ),
            });
        }
        Ok(Some(response.body))
    }

    /// `GET /v2/<repository>/referrers/<subject>`: the index of manifests whose `subject` is
    /// `subject`. `None` when the registry does not serve the API (404); the caller then reads
    /// the referrers tag schema (`sha256-<hex>` tag) with [`RegistryClient::artifact_manifest`].
    pub async fn referrers(
        &self,
        host: &RegistryHost,
        repository: &str,
        subject: &Digest,
    ) -> Result<Option<Vec<u8>>, RegistryError> {
        let path = format!("{repository}/referrers/{}", subject.as_str());
        Ok(self
            .artifact_get(host, repository, &path, REFERRERS_ACCEPT)
            .await?
            .map(|response| response.body))
    }

    /// One authenticated GET under `repository`'s pull scope: 2xx is the answer, 404 is
    /// `None`, a rejected token is retried once with the new challenge.
    async fn artifact_get(
        &self,
        host: &RegistryHost,
        repository: &str,
        path: &str,
        accept: &str,
    ) -> Result<Option<Response>, RegistryError> {
        let entry = self.entry(host);
        let scopes = [Scope::pull(repository)];
        let mut auth = self.host_auth(host, &entry).await?;
        let mut retried_auth = false;
        loop {
            let authorization = match &auth {
                HostAuth::Challenged(challenge) => self.authorize(host, challenge, &scopes).await?,
                _ => None,
            };
            let response = self
                .transport()
                .registry_request(
                    host,
                    Method::GET,
                    path,
                    authorization.as_ref(),
                    Some(accept),
                    RequestKind::Artifact,
                )
                .await
                .map_err(|error| RegistryError::from_transport(host, error))?;
            match response.status {
                200..=299 => return Ok(Some(response)),
                404 => return Ok(None),
                401 if !retried_auth => {
                    retried_auth = true;
                    if authorization.is_some() {
                        self.reject(host, &scopes);
                    }
                    match preferred_challenge(&response) {
                        Some(challenge) => {
                            auth = HostAuth::Challenged(challenge);
                            entry.set(auth.clone());
                        }
                        None if authorization.is_none() => return Err(self.no_challenge_error(host, &response)),
                        None => {}
                    }
                }
                401 | 403 => {
                    if authorization.is_some() {
                        self.reject(host, &scopes);
                    }
                    return Err(RegistryError::Auth {
                        host: host.clone(),
                        realm: match &auth {
                            HostAuth::Challenged(challenge) => challenge.realm().unwrap_or("-").to_owned(),
                            _ => "-".to_owned(),
                        },
                        reason: format!("pull access to {repository} refused for GET /v2/{path}"),
                        hint: self.hint(host),
                    });
                }
                429 => return Err(rate_limited(host, &response)),
                status => {
                    return Err(RegistryError::Server {
                        host: host.clone(),
                        status,
                        what: format!("GET /v2/{path}"),
                    });
                }
            }
        }
    }
}
