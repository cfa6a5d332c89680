//! Image signatures for tests, made by the `openssl` command (not by imagewatch's code) and
//! stored in an anonymous registry the way cosign stores them:
//!
//! - the legacy layout: tag `sha256-<hex>.sig`, an OCI manifest whose layers are
//!   simple-signing payloads (`application/vnd.dev.cosign.simplesigning.v1+json`) with the
//!   base64 signature in the `dev.cosignproject.cosign/signature` annotation;
//! - the OCI 1.1 layout cosign 3 writes: a referrer manifest (`subject` = the image,
//!   `artifactType` = the sigstore bundle media type) whose one layer is a bundle with a DSSE
//!   envelope over an in-toto statement, listed by the referrers tag schema index
//!   (`sha256-<hex>` tag), which is what a registry without the referrers API (distribution
//!   2.8) offers.
//!
//! The artifacts are pushed with plain registry API calls (blob upload, manifest PUT).

use std::path::{Path, PathBuf};
use std::process::Command;

use base64::Engine as _;

use crate::http::HttpRequest;
use crate::image::sha256_digest;
use crate::workdir::WorkDir;

/// The simple-signing layer media type.
pub const SIMPLE_SIGNING_MEDIA_TYPE: &str = "application/vnd.dev.cosign.simplesigning.v1+json";
/// The sigstore bundle media type cosign 3 writes.
pub const BUNDLE_MEDIA_TYPE: &str = "application/vnd.dev.sigstore.bundle.v0.3+json";
const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
/// Generous: a loaded machine runs many registries at once.
const PUSH_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(60);

/// Key algorithms cosign verifies.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KeyAlgorithm {
    /// ECDSA on P-256 with SHA-256 (cosign's default).
    EcdsaP256,
    /// ECDSA on P-384 with SHA-384.
    EcdsaP384,
    /// Ed25519.
    Ed25519,
    /// RSA 2048, PKCS #1 v1.5 with SHA-256.
    Rsa2048,
}

/// A key pair made by `openssl genpkey`, in PEM files.
#[derive(Debug, Clone)]
pub struct SigningKey {
    algorithm: KeyAlgorithm,
    private: PathBuf,
    public: PathBuf,
}

fn openssl(args: &[&str]) -> Vec<u8> {
    let output = Command::new("openssl")
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("openssl {args:?}: {e}"));
    assert!(
        output.status.success(),
        "openssl {args:?} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    output.stdout
}

impl SigningKey {
    /// A new key pair `<name>.key` / `<name>.pub` in `wd`.
    pub fn generate(wd: &WorkDir, name: &str, algorithm: KeyAlgorithm) -> SigningKey {
        let private = wd.join(&format!("{name}.key"));
        let public = wd.join(&format!("{name}.pub"));
        let private_s = private.to_str().expect("utf-8 path");
        match algorithm {
            KeyAlgorithm::EcdsaP256 => openssl(&[
                "genpkey",
                "-algorithm",
                "EC",
                "-pkeyopt",
                "ec_paramgen_curve:P-256",
                "-out",
                private_s,
            ]),
            KeyAlgorithm::EcdsaP384 => openssl(&[
                "genpkey",
                "-algorithm",
                "EC",
                "-pkeyopt",
                "ec_paramgen_curve:P-384",
                "-out",
                private_s,
            ]),
            KeyAlgorithm::Ed25519 => openssl(&["genpkey", "-algorithm", "ED25519", "-out", private_s]),
            KeyAlgorithm::Rsa2048 => openssl(&[
                "genpkey",
                "-algorithm",
                "RSA",
                "-pkeyopt",
                "rsa_keygen_bits:2048",
                "-out",
                private_s,
            ]),
        };
        openssl(&[
            "pkey",
            "-in",
            private_s,
            "-pubout",
            "-out",
            public.to_str().expect("utf-8 path"),
        ]);
        SigningKey {
            algorithm,
            private,
            public,
        }
    }

    /// The public key PEM file (what `cosign.pub` is).
    pub fn public_key_path(&self) -> &Path {
        &self.public
    }

    /// openssl's signature over `message`: ASN.1 DER for ECDSA, PKCS #1 v1.5 for RSA (SHA-256,
    /// SHA-384 for P-384), raw Ed25519.
    pub fn sign(&self, message: &[u8]) -> Vec<u8> {
        let dir = tempfile::tempdir().expect("tempdir");
        let input = dir.path().join("message");
        std::fs::write(&input, message).expect("write message");
        let (private, input) = (
            self.private.to_str().expect("utf-8 path"),
            input.to_str().expect("utf-8 path"),
        );
        match self.algorithm {
            KeyAlgorithm::EcdsaP256 | KeyAlgorithm::Rsa2048 => openssl(&["dgst", "-sha256", "-sign", private, input]),
            KeyAlgorithm::EcdsaP384 => openssl(&["dgst", "-sha384", "-sign", private, input]),
            KeyAlgorithm::Ed25519 => openssl(&["pkeyutl", "-sign", "-inkey", private, "-rawin", "-in", input]),
        }
    }
}

/// cosign's simple-signing payload for `digest` of `docker_reference` (`host/path`).
pub fn simple_signing_payload(docker_reference: &str, digest: &str) -> Vec<u8> {
    serde_json::to_vec(&serde_json::json!({
        "critical": {
            "identity": {"docker-reference": docker_reference},
            "image": {"docker-manifest-digest": digest},
            "type": "cosign container image signature",
        },
        "optional": null,
    }))
    .expect("json")
}

/// `sha256-<hex>` for `sha256:<hex>`.
pub fn digest_tag(digest: &str) -> String {
    digest.replacen(':', "-", 1)
}

/// Uploads a blob to `repository` of the registry at `base` (`http://127.0.0.1:PORT`).
pub fn push_blob(base: &str, repository: &str, bytes: &[u8]) -> String {
    let digest = sha256_digest(bytes);
    let started = HttpRequest::new("POST", &format!("{base}/v2/{repository}/blobs/uploads/"))
        .timeout(PUSH_TIMEOUT)
        .send()
        .expect("start upload");
    assert_eq!(started.status, 202, "start upload: {}", started.text());
    let location = started.header("location").expect("upload location").to_owned();
    let location = if location.starts_with("http") {
        location
    } else {
        format!("{base}{location}")
    };
    let separator = if location.contains('?') { '&' } else { '?' };
    let done = HttpRequest::new("PUT", &format!("{location}{separator}digest={digest}"))
        .header("content-type", "application/octet-stream")
        .body(bytes.to_vec())
        .timeout(PUSH_TIMEOUT)
        .send()
        .expect("finish upload");
    assert_eq!(done.status, 201, "finish upload: {}", done.text());
    digest
}

/// PUTs a manifest under `reference` (a tag or digest); answers its digest.
pub fn push_manifest(base: &str, repository: &str, reference: &str, media_type: &str, body: &[u8]) -> String {
    let response = HttpRequest::new("PUT", &format!("{base}/v2/{repository}/manifests/{reference}"))
        .header("content-type", media_type)
        .body(body.to_vec())
        .timeout(PUSH_TIMEOUT)
        .send()
        .expect("put manifest");
    assert_eq!(response.status, 201, "put manifest {reference}: {}", response.text());
    sha256_digest(body)
}

fn descriptor(media_type: &str, digest: &str, size: usize) -> serde_json::Value {
    serde_json::json!({"mediaType": media_type, "digest": digest, "size": size})
}

/// One layer of a legacy signature manifest: a payload and its signature.
#[derive(Debug, Clone)]
pub struct SignatureLayer {
    /// The simple-signing payload (the layer blob).
    pub payload: Vec<u8>,
    /// The signature over it (the annotation, base64-encoded when pushed).
    pub signature: Vec<u8>,
}

impl SignatureLayer {
    /// `key`'s signature over the simple-signing payload for `digest` of `docker_reference`.
    pub fn new(key: &SigningKey, docker_reference: &str, digest: &str) -> SignatureLayer {
        let payload = simple_signing_payload(docker_reference, digest);
        SignatureLayer {
            signature: key.sign(&payload),
            payload,
        }
    }
}

/// Pushes cosign's legacy layout: the layers under tag `sha256-<hex>.sig` of `image_digest`
/// (replacing what was there). Answers the signature manifest's bytes.
pub fn push_legacy_signature(base: &str, repository: &str, image_digest: &str, layers: &[SignatureLayer]) -> Vec<u8> {
    let (manifest, blobs) = legacy_signature_parts(layers);
    let mut pushed = std::collections::HashSet::new();
    for blob in &blobs {
        if pushed.insert(sha256_digest(blob)) {
            push_blob(base, repository, blob);
        }
    }
    push_raw_legacy_manifest(base, repository, image_digest, &manifest);
    manifest
}

/// PUTs `manifest` as the `sha256-<hex>.sig` tag of `image_digest` as given (bad input tests).
pub fn push_raw_legacy_manifest(base: &str, repository: &str, image_digest: &str, manifest: &[u8]) -> String {
    let tag = format!("{}.sig", digest_tag(image_digest));
    push_manifest(base, repository, &tag, OCI_MANIFEST, manifest)
}

/// DSSE's pre-authentication encoding.
pub fn pae(payload_type: &str, payload: &[u8]) -> Vec<u8> {
    let mut encoded = format!("DSSEv1 {} {payload_type} {} ", payload_type.len(), payload.len()).into_bytes();
    encoded.extend_from_slice(payload);
    encoded
}

/// A sigstore bundle (v0.3) with `key`'s DSSE signature over an in-toto statement whose subject
/// is `digest` of `name`.
pub fn dsse_bundle(key: &SigningKey, name: &str, digest: &str) -> Vec<u8> {
    let hex = digest.strip_prefix("sha256:").expect("a sha256 digest");
    let statement = serde_json::to_vec(&serde_json::json!({
        "_type": "https://in-toto.io/Statement/v1",
        "subject": [{"name": name, "digest": {"sha256": hex}}],
        "predicateType": "https://sigstore.dev/cosign/sign/v1",
        "predicate": {},
    }))
    .expect("json");
    let payload_type = "application/vnd.in-toto+json";
    let signature = key.sign(&pae(payload_type, &statement));
    let b64 = base64::engine::general_purpose::STANDARD;
    serde_json::to_vec(&serde_json::json!({
        "mediaType": BUNDLE_MEDIA_TYPE,
        "verificationMaterial": {"publicKey": {"hint": ""}, "tlogEntries": []},
        "dsseEnvelope": {
            "payload": b64.encode(&statement),
            "payloadType": payload_type,
            "signatures": [{"sig": b64.encode(&signature), "keyid": ""}],
        },
    }))
    .expect("json")
}

/// Pushes `bundle` as an OCI 1.1 referrer of `subject_digest` (manifest pushed by digest) and
/// lists it in the referrers tag schema index `sha256-<hex>`, beside `also_listed` (earlier
/// referrers' descriptors). Answers the referrer's descriptor.
pub fn push_bundle_referrer(
    base: &str,
    repository: &str,
    subject_digest: &str,
    subject_size: usize,
    bundle: &[u8],
    also_listed: &[serde_json::Value],
) -> serde_json::Value {
    let empty = b"{}";
    let empty_digest = push_blob(base, repository, empty);
    let bundle_digest = push_blob(base, repository, bundle);
    let manifest = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "artifactType": BUNDLE_MEDIA_TYPE,
        "config": descriptor("application/vnd.oci.empty.v1+json", &empty_digest, empty.len()),
        "layers": [descriptor(BUNDLE_MEDIA_TYPE, &bundle_digest, bundle.len())],
        "subject": descriptor(OCI_MANIFEST, subject_digest, subject_size),
    }))
    .expect("json");
    let manifest_digest = sha256_digest(&manifest);
    push_manifest(base, repository, &manifest_digest, OCI_MANIFEST, &manifest);
    let mut referrer = descriptor(OCI_MANIFEST, &manifest_digest, manifest.len());
    referrer["artifactType"] = BUNDLE_MEDIA_TYPE.into();
    let mut manifests = also_listed.to_vec();
    manifests.push(referrer.clone());
    let index = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": OCI_INDEX,
        "manifests": manifests,
    }))
    .expect("json");
    push_manifest(base, repository, &digest_tag(subject_digest), OCI_INDEX, &index);
    referrer
}

/// cosign's legacy signature manifest for `layers`, with its blobs (config first), so it can
/// be written into an OCI layout and pushed by skopeo to a registry that needs credentials.
fn legacy_signature_parts(layers: &[SignatureLayer]) -> (Vec<u8>, Vec<Vec<u8>>) {
    let config = br#"{"architecture":"","os":"","config":{},"rootfs":{"type":"layers","diff_ids":[]}}"#.to_vec();
    let mut blobs = vec![config.clone()];
    let mut descriptors = Vec::new();
    for layer in layers {
        let digest = sha256_digest(&layer.payload);
        let mut descriptor = descriptor(SIMPLE_SIGNING_MEDIA_TYPE, &digest, layer.payload.len());
        descriptor["annotations"] = serde_json::json!({
            "dev.cosignproject.cosign/signature": base64::engine::general_purpose::STANDARD.encode(&layer.signature),
        });
        descriptors.push(descriptor);
        blobs.push(layer.payload.clone());
    }
    let manifest = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": descriptor("application/vnd.oci.image.config.v1+json", &sha256_digest(&config), config.len()),
        "layers": descriptors,
    }))
    .expect("json");
    (manifest, blobs)
}

/// An OCI layout holding cosign's legacy signature manifest for `layers`; push it with
/// [`crate::skopeo::push`] (OCI format, digests kept) to `<repository>:sha256-<hex>.sig`.
pub fn legacy_signature_layout(wd: &WorkDir, layers: &[SignatureLayer]) -> crate::image::OciLayout {
    let (manifest, blobs) = legacy_signature_parts(layers);
    let dir = wd.fresh_dir("signature-layout");
    let blob_dir = dir.join("blobs/sha256");
    std::fs::create_dir_all(&blob_dir).expect("blob dir");
    for blob in blobs.iter().chain(std::iter::once(&manifest)) {
        let digest = sha256_digest(blob);
        std::fs::write(blob_dir.join(digest.trim_start_matches("sha256:")), blob).expect("blob");
    }
    let digest = sha256_digest(&manifest);
    std::fs::write(dir.join("oci-layout"), br#"{"imageLayoutVersion":"1.0.0"}"#).expect("oci-layout");
    let index = serde_json::json!({
        "schemaVersion": 2,
        "manifests": [{
            "mediaType": OCI_MANIFEST,
            "digest": digest,
            "size": manifest.len(),
            "annotations": {"org.opencontainers.image.ref.name": crate::image::OciLayout::TAG},
        }],
    });
    std::fs::write(dir.join("index.json"), serde_json::to_vec(&index).expect("json")).expect("index.json");
    crate::image::OciLayout {
        dir,
        digest,
        media_type: OCI_MANIFEST.to_owned(),
        manifests: Vec::new(),
    }
}
