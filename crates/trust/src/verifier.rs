//! Finding and verifying the signatures of one digest, through registry-core's client (its
//! challenge cache, token providers and transport bounds). Two places are searched, as cosign
//! writes them: the legacy tag `sha256-<hex>.sig` (simple-signing payload layers, signature in
//! the `dev.cosignproject.cosign/signature` annotation), then the OCI 1.1 referrers of the digest
//! (sigstore bundles), from the referrers API or, where a registry does not serve it, the
//! referrers tag schema (`sha256-<hex>` tag index).
//!
//! Costs: a found legacy signature is 2 requests (its manifest, its payload blob); a found
//! bundle 4 more (the `.sig` miss, the index, its manifest, its blob) once a registry is known
//! not to serve the referrers API (learnt at the first miss and kept for the process). Blobs and
//! manifests fetched by digest are cached (content-addressed, bounded), and a verified
//! (image, digest) is remembered, so a refresh retried after a failure costs nothing here.
//! Every artifact is size-bounded, layers and referrers read are capped, and the whole search
//! is bounded in time.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use registry_core::client::{ARTIFACT_MANIFEST_ACCEPT, REFERRERS_ACCEPT};
use registry_core::{Digest, ImageReference, RegistryClient, RegistryHost};
use serde::Deserialize;

use crate::bundle::{BUNDLE_MEDIA_TYPE_PREFIX, verify_bundle};
use crate::key::PublicKey;
use crate::payload::{check_simple_signing, decode_base64, escape};
use crate::verdict::{Failure, Location, Verification};

/// The layer annotation holding a legacy signature (base64).
pub const SIGNATURE_ANNOTATION: &str = "dev.cosignproject.cosign/signature";

/// The largest signature manifest or referrers index read.
pub const MAX_MANIFEST_BYTES: usize = 256 * 1024;
/// The largest simple-signing payload or bundle read.
pub const MAX_BLOB_BYTES: u64 = 256 * 1024;
/// A signature manifest with more layers is refused unread (cosign adds one per signature).
pub const MAX_LAYERS: usize = 64;
/// Signature payloads or referrers fetched per search, at most.
pub const MAX_FETCHES: usize = 8;
/// How long one search may take, all requests included.
pub const DEFAULT_VERIFY_TIMEOUT: Duration = Duration::from_secs(60);

/// Bounds of the content cache (blobs and manifests fetched by digest).
const CACHE_ENTRIES: usize = 512;
const CACHE_BYTES: usize = 16 * 1024 * 1024;
const VERIFIED_ENTRIES: usize = 4096;

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Descriptor {
    #[serde(default)]
    media_type: String,
    digest: String,
    #[serde(default)]
    size: u64,
    #[serde(default)]
    artifact_type: Option<String>,
    #[serde(default)]
    annotations: BTreeMap<String, String>,
}

#[derive(Deserialize)]
struct Manifest {
    #[serde(default)]
    layers: Vec<Descriptor>,
    #[serde(default)]
    subject: Option<Descriptor>,
}

#[derive(Deserialize)]
struct Index {
    #[serde(default)]
    manifests: Vec<Descriptor>,
}

#[derive(Debug, Default)]
struct Cache {
    content: HashMap<Digest, Arc<Vec<u8>>>,
    content_bytes: usize,
    no_referrers_api: HashSet<RegistryHost>,
    verified: HashMap<(ImageReference, Digest), Verification>,
}

/// Verifies signatures of digests. Share one per process (its caches are what keep a re-check
/// cheap); it holds the same `RegistryClient` as the digest checks.
#[derive(Debug)]
pub struct Verifier {
    client: Arc<RegistryClient>,
    cache: Mutex<Cache>,
    timeout: Duration,
}

impl Verifier {
    pub fn new(client: Arc<RegistryClient>) -> Verifier {
        Verifier {
            client,
            cache: Mutex::new(Cache::default()),
            timeout: DEFAULT_VERIFY_TIMEOUT,
        }
    }

    /// The bound on one search, requests included.
    pub fn with_timeout(mut self, timeout: Duration) -> Verifier {
        self.timeout = timeout;
        self
    }

    fn cache(&self) -> std::sync::MutexGuard<'_, Cache> {
        self.cache.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Whether a signature by one of `keys` vouches for `digest` of `image`'s repository.
    pub async fn verify(
        &self,
        image: &ImageReference,
        digest: &Digest,
        keys: &[PublicKey],
    ) -> Result<Verification, Failure> {
        if keys.is_empty() {
            return Err(Failure::WrongKey("no key is accepted for this image".to_owned()));
        }
        let remembered = self
            .cache()
            .verified
            .get(&(image.without_digest(), digest.clone()))
            .cloned();
        if let Some(verification) = remembered
            && keys.iter().any(|key| key.fingerprint() == verification.key_fingerprint)
        {
            return Ok(verification);
        }
        let search = self.search(image, digest, keys);
        let outcome = match tokio::time::timeout(self.timeout, search).await {
            Ok(outcome) => outcome,
            Err(_) => Err(Failure::Registry(format!(
                "the signature search took over {}s",
                self.timeout.as_secs()
            ))),
        };
        if let Ok(verification) = &outcome {
            let mut cache = self.cache();
            if cache.verified.len() >= VERIFIED_ENTRIES {
                cache.verified.clear();
            }
            cache
                .verified
                .insert((image.without_digest(), digest.clone()), verification.clone());
        }
        outcome
    }

    async fn search(
        &self,
        image: &ImageReference,
        digest: &Digest,
        keys: &[PublicKey],
    ) -> Result<Verification, Failure> {
        let legacy = match self.legacy(image, digest, keys).await {
            Ok(verification) => return Ok(verification),
            Err(failure) => failure,
        };
        let referrers = match self.referrers(image, digest, keys).await {
            Ok(verification) => return Ok(verification),
            Err(failure) => failure,
        };
        Err(match (legacy, referrers) {
            (Failure::NoSignature(_), Failure::NoSignature(_)) => Failure::NoSignature(format!(
                "no signature for {} in {} (neither the tag {} nor a sigstore bundle referrer)",
                digest.short(),
                image.repository(),
                legacy_tag(digest)
            )),
            (legacy, referrers) if referrers.rank() > legacy.rank() => referrers,
            (legacy, _) => legacy,
        })
    }

    /// cosign's `sha256-<hex>.sig` tag.
    async fn legacy(
        &self,
        image: &ImageReference,
        digest: &Digest,
        keys: &[PublicKey],
    ) -> Result<Verification, Failure> {
        let (host, repository) = (image.host(), image.repository());
        let tag = legacy_tag(digest);
        let manifest = self
            .client
            .artifact_manifest(host, repository, &tag, ARTIFACT_MANIFEST_ACCEPT)
            .await
            .map_err(registry_failure)?
            .ok_or_else(|| Failure::NoSignature(format!("no tag {tag}")))?;
        let manifest: Manifest = parse_bounded(&manifest.body, &format!("the signature manifest {tag}"))?;
        if manifest.layers.len() > MAX_LAYERS {
            return Err(Failure::Malformed(format!(
                "the signature manifest {tag} has {} layers (at most {MAX_LAYERS} are read)",
                manifest.layers.len()
            )));
        }
        let signed: Vec<&Descriptor> = manifest
            .layers
            .iter()
            .filter(|layer| layer.annotations.contains_key(SIGNATURE_ANNOTATION))
            .collect();
        if signed.is_empty() {
            return Err(Failure::Malformed(format!(
                "no layer of {tag} carries a {SIGNATURE_ANNOTATION} annotation"
            )));
        }
        let mut best: Option<Failure> = None;
        // The newest signature is the last layer cosign appended.
        for layer in signed.into_iter().rev().take(MAX_FETCHES) {
            match self.legacy_layer(image, digest, keys, layer).await {
                Ok(key) => return Ok(Verification::by(key, Location::Tag(tag))),
                Err(failure) => keep_best(&mut best, failure),
            }
        }
        Err(best.unwrap_or_else(|| Failure::NoSignature(format!("no signature layer in {tag}"))))
    }

    async fn legacy_layer<'k>(
        &self,
        image: &ImageReference,
        digest: &Digest,
        keys: &'k [PublicKey],
        layer: &Descriptor,
    ) -> Result<&'k PublicKey, Failure> {
        let signature = decode_base64(&layer.annotations[SIGNATURE_ANNOTATION], "the signature annotation")?;
        let payload = self
            .blob(image, &layer.digest, layer.size, "a signature payload")
            .await?;
        let key = keys
            .iter()
            .find(|key| key.verifies(&payload, &signature))
            .ok_or_else(|| {
                Failure::WrongKey(format!(
                    "the signature verifies with none of the {} accepted key(s)",
                    keys.len()
                ))
            })?;
        check_simple_signing(&payload, image, digest)?;
        Ok(key)
    }

    /// OCI 1.1 referrers carrying sigstore bundles.
    async fn referrers(
        &self,
        image: &ImageReference,
        digest: &Digest,
        keys: &[PublicKey],
    ) -> Result<Verification, Failure> {
        let (host, repository) = (image.host(), image.repository());
        let skip_api = self.cache().no_referrers_api.contains(host);
        let mut listed = None;
        if !skip_api {
            match self
                .client
                .referrers(host, repository, digest)
                .await
                .map_err(registry_failure)?
            {
                Some(body) => listed = Some((body, "referrers API")),
                None => {
                    tracing::debug!(host = %host, "no referrers API; using the referrers tag schema");
                    self.cache().no_referrers_api.insert(host.clone());
                }
            }
        }
        let (body, via) = match listed {
            Some(listed) => listed,
            None => {
                let tag = fallback_tag(digest);
                let index = self
                    .client
                    .artifact_manifest(host, repository, &tag, REFERRERS_ACCEPT)
                    .await
                    .map_err(registry_failure)?
                    .ok_or_else(|| Failure::NoSignature(format!("no referrers tag {tag}")))?;
                (index.body, "referrers tag")
            }
        };
        let index: Index = parse_bounded(&body, &format!("the referrers of {}", digest.short()))?;
        let bundles: Vec<&Descriptor> = index
            .manifests
            .iter()
            .filter(|descriptor| {
                descriptor
                    .artifact_type
                    .as_deref()
                    .is_some_and(|artifact| artifact.starts_with(BUNDLE_MEDIA_TYPE_PREFIX))
            })
            .collect();
        let mut best: Option<Failure> = None;
        for descriptor in bundles.into_iter().rev().take(MAX_FETCHES) {
            match self.referrer(image, digest, keys, descriptor).await {
                Ok(key) => {
                    let manifest = descriptor.digest.clone();
                    return Ok(Verification::by(key, Location::Referrer { manifest, via }));
                }
                Err(failure) => keep_best(&mut best, failure),
            }
        }
        Err(best.unwrap_or_else(|| Failure::NoSignature(format!("no sigstore bundle among the referrers ({via})"))))
    }

    async fn referrer<'k>(
        &self,
        image: &ImageReference,
        digest: &Digest,
        keys: &'k [PublicKey],
        descriptor: &Descriptor,
    ) -> Result<&'k PublicKey, Failure> {
        let manifest_digest = parse_digest(&descriptor.digest)?;
        let body = self.manifest_by_digest(image, &manifest_digest).await?;
        let manifest: Manifest = parse_bounded(&body, &format!("the referrer {}", manifest_digest.short()))?;
        let subject = manifest
            .subject
            .as_ref()
            .map(|subject| subject.digest.as_str())
            .unwrap_or("none");
        if subject != digest.as_str() {
            return Err(Failure::OtherDigest(format!(
                "the referrer {} has subject {}, not {}",
                manifest_digest.short(),
                escape(subject),
                digest.short()
            )));
        }
        let layer = manifest
            .layers
            .iter()
            .take(MAX_LAYERS)
            .find(|layer| layer.media_type.starts_with(BUNDLE_MEDIA_TYPE_PREFIX))
            .ok_or_else(|| {
                Failure::Malformed(format!(
                    "the referrer {} has no sigstore bundle layer",
                    manifest_digest.short()
                ))
            })?;
        let bundle = self.blob(image, &layer.digest, layer.size, "a sigstore bundle").await?;
        verify_bundle(&bundle, keys, image, digest)
    }

    /// A manifest by digest, from the cache when fetched before.
    async fn manifest_by_digest(&self, image: &ImageReference, digest: &Digest) -> Result<Arc<Vec<u8>>, Failure> {
        if let Some(body) = self.cache().content.get(digest).cloned() {
            return Ok(body);
        }
        let manifest = self
            .client
            .artifact_manifest(
                image.host(),
                image.repository(),
                digest.as_str(),
                ARTIFACT_MANIFEST_ACCEPT,
            )
            .await
            .map_err(registry_failure)?
            .ok_or_else(|| Failure::Malformed(format!("the referrer {} is listed but missing", digest.short())))?;
        Ok(self.remember(digest, manifest.body))
    }

    /// A blob by digest (size-checked before the request), from the cache when fetched before.
    async fn blob(&self, image: &ImageReference, digest: &str, size: u64, what: &str) -> Result<Arc<Vec<u8>>, Failure> {
        let digest = parse_digest(digest)?;
        if size > MAX_BLOB_BYTES {
            return Err(Failure::Malformed(format!(
                "{what} of {size} bytes is over the {MAX_BLOB_BYTES}-byte bound"
            )));
        }
        if let Some(body) = self.cache().content.get(&digest).cloned() {
            return Ok(body);
        }
        let body = self
            .client
            .artifact_blob(image.host(), image.repository(), &digest)
            .await
            .map_err(registry_failure)?
            .ok_or_else(|| Failure::Malformed(format!("{what} {} is referenced but missing", digest.short())))?;
        if body.len() as u64 > MAX_BLOB_BYTES {
            return Err(Failure::Malformed(format!(
                "{what} of {} bytes is over the {MAX_BLOB_BYTES}-byte bound",
                body.len()
            )));
        }
        Ok(self.remember(&digest, body))
    }

    fn remember(&self, digest: &Digest, body: Vec<u8>) -> Arc<Vec<u8>> {
        let body = Arc::new(body);
        let mut cache = self.cache();
        if cache.content.len() >= CACHE_ENTRIES || cache.content_bytes + body.len() > CACHE_BYTES {
            cache.content.clear();
            cache.content_bytes = 0;
        }
        cache.content_bytes += body.len();
        cache.content.insert(digest.clone(), body.clone());
        body
    }
}

/// cosign's legacy signature tag for `digest`: `sha256-<hex>.sig`.
pub fn legacy_tag(digest: &Digest) -> String {
    format!("{}.sig", fallback_tag(digest))
}

/// The referrers tag schema's tag for `digest`: `sha256-<hex>`.
pub fn fallback_tag(digest: &Digest) -> String {
    format!("{}-{}", digest.algorithm(), digest.encoded())
}

fn keep_best(best: &mut Option<Failure>, failure: Failure) {
    if best.as_ref().is_none_or(|current| failure.rank() > current.rank()) {
        *best = Some(failure);
    }
}

fn parse_digest(text: &str) -> Result<Digest, Failure> {
    text.parse()
        .map_err(|_| Failure::Malformed(format!("{:?} is not a digest", escape(text))))
}

fn parse_bounded<T: serde::de::DeserializeOwned>(body: &[u8], what: &str) -> Result<T, Failure> {
    if body.len() > MAX_MANIFEST_BYTES {
        return Err(Failure::Malformed(format!(
            "{what} is {} bytes, over the {MAX_MANIFEST_BYTES}-byte bound",
            body.len()
        )));
    }
    serde_json::from_slice(body).map_err(|e| Failure::Malformed(format!("{what} does not parse: {e}")))
}

fn registry_failure(error: registry_core::RegistryError) -> Failure {
    Failure::Registry(error.to_string())
}
