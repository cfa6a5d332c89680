//! The verifier against a REAL registry (Debian's docker-registry 2.8, anonymous) holding images
//! pushed by skopeo and signatures made by `openssl` in cosign's two layouts (the legacy
//! `sha256-<hex>.sig` tag, and a sigstore-bundle referrer listed by the referrers tag schema,
//! since distribution 2.8 does not serve the referrers API). Each case is one verdict.

use std::sync::Arc;
use std::time::Duration;

use registry_core::client::{RegistryClient, Transport, TransportConfig};
use registry_core::{Digest, ImageReference};
use rstest::rstest;
use test_support::signing::{
    KeyAlgorithm, SignatureLayer, SigningKey, digest_tag, dsse_bundle, push_blob, push_bundle_referrer,
    push_legacy_signature, push_manifest, push_raw_legacy_manifest,
};
use test_support::{ImageSpec, ManifestFormat, Registry, RegistryTls, WorkDir, build_image, skopeo};
use trust::{PublicKey, Verifier};

struct Setup {
    wd: WorkDir,
    registry: Registry,
    client: Arc<RegistryClient>,
}

impl Setup {
    fn new(label: &str) -> Setup {
        let wd = WorkDir::new(label);
        let registry = Registry::anonymous(&wd);
        let transport = Transport::new(TransportConfig {
            request_timeout: Duration::from_secs(5),
            ..TransportConfig::default()
        })
        .expect("transport");
        Setup {
            wd,
            registry,
            client: Arc::new(RegistryClient::new(Arc::new(transport))),
        }
    }

    fn base(&self) -> String {
        self.registry.base_url()
    }

    fn reference(&self, name: &str, tag: &str) -> ImageReference {
        self.registry.image_ref(name, tag).parse().expect("reference")
    }

    /// `host/name`, as cosign writes it in `docker-reference`.
    fn repository(&self, name: &str) -> String {
        format!("{}/{name}", self.registry.host())
    }

    /// Pushes a distinct image to `name:tag`; answers its digest and manifest size.
    fn push(&self, name: &str, tag: &str, content: &str) -> (String, usize) {
        let layout = build_image(&self.wd, &ImageSpec::with_content(content));
        let digest = skopeo::push(
            &layout,
            &self.registry.image_ref(name, tag),
            ManifestFormat::Oci,
            None,
            &RegistryTls::Plain,
        );
        let size = skopeo::inspect_raw(&self.registry.image_ref(name, tag), None, &RegistryTls::Plain).len();
        (digest, size)
    }

    fn key(&self, name: &str, algorithm: KeyAlgorithm) -> SigningKey {
        SigningKey::generate(&self.wd, name, algorithm)
    }

    fn public(&self, key: &SigningKey) -> PublicKey {
        PublicKey::load(key.public_key_path()).expect("public key")
    }

    fn sign_legacy(&self, key: &SigningKey, name: &str, digest: &str) {
        let layer = SignatureLayer::new(key, &self.repository(name), digest);
        push_legacy_signature(&self.base(), name, digest, &[layer]);
    }

    async fn verify(&self, name: &str, tag: &str, digest: &str, keys: &[PublicKey]) -> Result<String, String> {
        let digest: Digest = digest.parse().expect("digest");
        Verifier::new(self.client.clone())
            .verify(&self.reference(name, tag), &digest, keys)
            .await
            .map(|verification| verification.location.to_string())
            .map_err(|failure| format!("{}|{failure}", failure.kind()))
    }
}

#[derive(Debug, Clone, Copy)]
enum Scenario {
    SignedLegacy(KeyAlgorithm),
    SignedReferrer,
    Unsigned,
    OtherKey,
    ReferrerOtherKey,
    CopiedFromAnotherDigest,
    ReferrerOverAnotherDigest,
    OtherRepository,
    HugeManifest,
    HundredsOfLayers,
    MalformedManifest,
    BundleThatDoesNotParse,
    OneGoodLayerAmongBadOnes,
}

#[rstest]
#[case::signed_legacy_p256(Scenario::SignedLegacy(KeyAlgorithm::EcdsaP256), "ok|tag sha256-")]
#[case::signed_legacy_p384(Scenario::SignedLegacy(KeyAlgorithm::EcdsaP384), "ok|tag sha256-")]
#[case::signed_legacy_ed25519(Scenario::SignedLegacy(KeyAlgorithm::Ed25519), "ok|tag sha256-")]
#[case::signed_legacy_rsa(Scenario::SignedLegacy(KeyAlgorithm::Rsa2048), "ok|tag sha256-")]
#[case::signed_referrer_bundle(Scenario::SignedReferrer, "ok|referrer sha256:")]
#[case::unsigned(Scenario::Unsigned, "no_signature|")]
#[case::signed_by_another_key(Scenario::OtherKey, "wrong_key|")]
#[case::bundle_by_another_key(Scenario::ReferrerOtherKey, "wrong_key|")]
#[case::signature_copied_from_another_digest(Scenario::CopiedFromAnotherDigest, "other_digest|")]
#[case::bundle_over_another_digest(Scenario::ReferrerOverAnotherDigest, "other_digest|")]
#[case::signature_naming_another_repository(Scenario::OtherRepository, "wrong_repository|")]
#[case::huge_signature_manifest(Scenario::HugeManifest, "malformed|")]
#[case::hundreds_of_layers(Scenario::HundredsOfLayers, "malformed|")]
#[case::malformed_signature_manifest(Scenario::MalformedManifest, "malformed|")]
#[case::bundle_that_does_not_parse(Scenario::BundleThatDoesNotParse, "malformed|")]
#[case::one_good_layer_among_bad_ones(Scenario::OneGoodLayerAmongBadOnes, "ok|tag sha256-")]
#[tokio::test]
async fn verdict(#[case] scenario: Scenario, #[case] expected: &str) {
    let s = Setup::new("trust-verdict");
    let name = "team/app";
    let algorithm = match scenario {
        Scenario::SignedLegacy(algorithm) => algorithm,
        _ => KeyAlgorithm::EcdsaP256,
    };
    let key = s.key("ours", algorithm);
    let other = s.key("theirs", KeyAlgorithm::EcdsaP256);
    let (v1, v1_size) = s.push(name, "v1", "one");
    let (digest, size) = s.push(name, "latest", "two");
    let base = s.base();
    match scenario {
        Scenario::SignedLegacy(_) => s.sign_legacy(&key, name, &digest),
        Scenario::SignedReferrer => {
            let bundle = dsse_bundle(&key, &s.repository(name), &digest);
            push_bundle_referrer(&base, name, &digest, size, &bundle, &[]);
        }
        Scenario::Unsigned => {}
        Scenario::OtherKey => s.sign_legacy(&other, name, &digest),
        Scenario::ReferrerOtherKey => {
            let bundle = dsse_bundle(&other, &s.repository(name), &digest);
            push_bundle_referrer(&base, name, &digest, size, &bundle, &[]);
        }
        Scenario::CopiedFromAnotherDigest => {
            // A valid signature of v1, put where v2's signature belongs.
            let layer = SignatureLayer::new(&key, &s.repository(name), &v1);
            push_legacy_signature(&base, name, &digest, &[layer]);
        }
        Scenario::ReferrerOverAnotherDigest => {
            // A bundle for v1 whose referrer manifest is listed under v2's referrers tag.
            let bundle = dsse_bundle(&key, &s.repository(name), &v1);
            let referrer = push_bundle_referrer(&base, name, &v1, v1_size, &bundle, &[]);
            let index = serde_json::to_vec(&serde_json::json!({
                "schemaVersion": 2,
                "mediaType": "application/vnd.oci.image.index.v1+json",
                "manifests": [referrer],
            }))
            .expect("json");
            push_manifest(
                &base,
                name,
                &digest_tag(&digest),
                "application/vnd.oci.image.index.v1+json",
                &index,
            );
        }
        Scenario::OtherRepository => {
            let layer = SignatureLayer::new(&key, &s.repository("team/other"), &digest);
            push_legacy_signature(&base, name, &digest, &[layer]);
        }
        Scenario::HugeManifest => {
            let config = b"{}";
            let config_digest = push_blob(&base, name, config);
            let manifest = serde_json::to_vec(&serde_json::json!({
                "schemaVersion": 2,
                "mediaType": "application/vnd.oci.image.manifest.v1+json",
                "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": config_digest, "size": config.len()},
                "layers": [],
                "annotations": {"padding": "x".repeat(300 * 1024)},
            }))
            .expect("json");
            push_raw_legacy_manifest(&base, name, &digest, &manifest);
        }
        Scenario::HundredsOfLayers => {
            let layer = SignatureLayer::new(&key, &s.repository(name), &digest);
            let layers = vec![layer; 300];
            push_legacy_signature(&base, name, &digest, &layers);
        }
        Scenario::MalformedManifest => {
            // A manifest the registry stores, whose signature annotation is not base64.
            let layer = SignatureLayer::new(&key, &s.repository(name), &digest);
            let manifest = push_legacy_signature(&base, name, &digest, &[layer]);
            let mut manifest: serde_json::Value = serde_json::from_slice(&manifest).expect("json");
            manifest["layers"][0]["annotations"]["dev.cosignproject.cosign/signature"] = "%%% not base64".into();
            push_raw_legacy_manifest(&base, name, &digest, &serde_json::to_vec(&manifest).expect("json"));
        }
        Scenario::BundleThatDoesNotParse => {
            push_bundle_referrer(&base, name, &digest, size, b"{\"mediaType\": 42", &[]);
        }
        Scenario::OneGoodLayerAmongBadOnes => {
            let good = SignatureLayer::new(&key, &s.repository(name), &digest);
            let wrong_key = SignatureLayer::new(&other, &s.repository(name), &digest);
            let garbage = SignatureLayer {
                payload: b"{}".to_vec(),
                signature: b"nonsense".to_vec(),
            };
            push_legacy_signature(&base, name, &digest, &[good, wrong_key, garbage]);
        }
    }
    let outcome = s.verify(name, "latest", &digest, &[s.public(&key)]).await;
    let (expected_kind, expected_text) = expected.split_once('|').expect("kind|text");
    match outcome {
        Ok(location) => {
            assert_eq!(expected_kind, "ok", "verified ({location}) but expected {expected}");
            assert!(location.starts_with(expected_text), "{location}");
        }
        Err(failure) => {
            let (kind, message) = failure.split_once('|').expect("kind|message");
            assert_eq!(kind, expected_kind, "{message}");
            assert!(!message.contains('\n'), "one line: {message}");
        }
    }
}

#[tokio::test]
async fn a_move_costs_at_most_four_signature_requests_and_a_recheck_fetches_no_blob_again() {
    let s = Setup::new("trust-requests");
    let name = "team/app";
    let key = s.key("ours", KeyAlgorithm::EcdsaP256);
    let other = s.key("theirs", KeyAlgorithm::EcdsaP256);
    let keys = [s.public(&key)];
    let verifier = Verifier::new(s.client.clone());
    let reference = s.reference(name, "latest");
    let artifact_gets = || s.client.stats().snapshot().artifact_gets;

    // Legacy signature: its manifest and its payload.
    let (legacy, _) = s.push(name, "latest", "legacy");
    s.sign_legacy(&key, name, &legacy);
    let before = artifact_gets();
    let digest: Digest = legacy.parse().expect("digest");
    verifier.verify(&reference, &digest, &keys).await.expect("verified");
    assert_eq!(artifact_gets() - before, 2, "legacy: .sig manifest + payload blob");
    let before = artifact_gets();
    verifier.verify(&reference, &digest, &keys).await.expect("verified");
    assert_eq!(artifact_gets() - before, 0, "a verified digest is remembered");

    // An unsigned digest teaches the verifier that distribution has no referrers API.
    let (unsigned, _) = s.push(name, "latest", "unsigned");
    let digest: Digest = unsigned.parse().expect("digest");
    let before = artifact_gets();
    verifier.verify(&reference, &digest, &keys).await.expect_err("unsigned");
    assert_eq!(
        artifact_gets() - before,
        3,
        ".sig miss, referrers API 404, referrers tag miss"
    );

    // A bundle referrer, listed by the referrers tag schema.
    let (bundled, size) = s.push(name, "latest", "bundled");
    let bundle = dsse_bundle(&key, &s.repository(name), &bundled);
    push_bundle_referrer(&s.base(), name, &bundled, size, &bundle, &[]);
    let digest: Digest = bundled.parse().expect("digest");
    let before = artifact_gets();
    let verification = verifier.verify(&reference, &digest, &keys).await.expect("verified");
    assert!(
        verification.location.to_string().contains("referrers tag"),
        "{}",
        verification.location
    );
    assert_eq!(
        artifact_gets() - before,
        4,
        ".sig miss, referrers tag, referrer manifest, bundle"
    );

    // Signed by another key: a re-check reads the tag again but not the payload blob.
    let (foreign, _) = s.push(name, "latest", "foreign");
    s.sign_legacy(&other, name, &foreign);
    let digest: Digest = foreign.parse().expect("digest");
    let before = artifact_gets();
    let failure = verifier
        .verify(&reference, &digest, &keys)
        .await
        .expect_err("wrong key");
    assert_eq!(failure.kind(), "wrong_key");
    assert_eq!(
        artifact_gets() - before,
        3,
        ".sig manifest, payload blob, referrers tag miss"
    );
    let before = artifact_gets();
    verifier
        .verify(&reference, &digest, &keys)
        .await
        .expect_err("wrong key");
    assert_eq!(artifact_gets() - before, 2, "the payload blob comes from the cache");
}
