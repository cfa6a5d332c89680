//! The registry client against Debian's real `docker-registry` (no auth): digests agree with
//! `skopeo inspect` for an OCI manifest, a Docker v2 manifest and a multi-arch index, a second
//! push moves the digest, and the registry's own log shows the request budget.

use std::sync::Arc;

use registry_core::client::{RegistryClient, Transport, TransportConfig};
use registry_core::{Digest, ImageReference};
use test_support::{ImageSpec, ManifestFormat, Registry, RegistryTls, WorkDir, build_image, build_multi_arch, skopeo};

fn client() -> RegistryClient {
    RegistryClient::new(Arc::new(Transport::new(TransportConfig::default()).expect("transport")))
}

fn parse(reference: &str) -> ImageReference {
    reference.parse().expect("reference")
}

fn skopeo_digest(reference: &str) -> Digest {
    skopeo::inspect_digest(reference, None, &RegistryTls::Plain)
        .parse()
        .expect("skopeo digest")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn digests_match_skopeo_for_every_manifest_kind_and_move_on_push() {
    let wd = WorkDir::new("client-anonymous");
    let registry = Registry::anonymous(&wd);
    let oci = registry.image_ref("org/oci", "latest");
    let docker = registry.image_ref("org/docker", "latest");
    let index = registry.image_ref("org/multi", "latest");
    skopeo::push(
        &build_image(&wd, &ImageSpec::with_content("oci-v1")),
        &oci,
        ManifestFormat::Oci,
        None,
        &RegistryTls::Plain,
    );
    skopeo::push(
        &build_image(&wd, &ImageSpec::with_content("docker-v1")),
        &docker,
        ManifestFormat::DockerV2,
        None,
        &RegistryTls::Plain,
    );
    let multi = build_multi_arch(&wd, &ImageSpec::with_content("multi-v1"));
    skopeo::push(&multi, &index, ManifestFormat::Oci, None, &RegistryTls::Plain);

    let client = client();
    for reference in [&oci, &docker, &index] {
        let ours = client.manifest_digest(&parse(reference)).await.expect("digest");
        assert_eq!(ours, skopeo_digest(reference), "{reference}");
    }
    let index_digest = client.manifest_digest(&parse(&index)).await.expect("digest");
    assert_eq!(
        index_digest.as_str(),
        multi.digest,
        "a multi-arch tag answers the index digest"
    );

    // skopeo's inspections are in the registry log too: count ours at the client.
    let stats = client.stats().snapshot();
    assert_eq!(stats.probes, 1, "one probe for the registry");
    assert_eq!(
        (stats.manifest_heads, stats.manifest_gets),
        (4, 0),
        "one HEAD per check"
    );

    // A second push to the same tag moves the digest; the client sees it on the next check.
    let before = client.manifest_digest(&parse(&oci)).await.expect("digest");
    let v2 = build_image(&wd, &ImageSpec::with_content("oci-v2"));
    skopeo::push(&v2, &oci, ManifestFormat::Oci, None, &RegistryTls::Plain);
    let after = client.manifest_digest(&parse(&oci)).await.expect("digest");
    assert_ne!(before, after);
    assert_eq!(after.as_str(), v2.digest);
    assert_eq!(after, skopeo_digest(&oci));

    // A pinned reference verifies; an unknown tag is NotFound.
    let pinned = parse(&format!("{}/org/oci@{after}", registry.host()));
    assert_eq!(client.manifest_digest(&pinned).await.expect("pinned"), after);
    let missing = client
        .manifest_digest(&parse(&registry.image_ref("org/oci", "nope")))
        .await
        .expect_err("no such tag");
    assert_eq!(missing.kind(), "not_found", "{missing}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_anonymous_registry_costs_one_head_per_check_counted_at_the_registry() {
    let wd = WorkDir::new("client-anonymous-count");
    let registry = Registry::anonymous(&wd);
    let image = build_image(&wd, &ImageSpec::with_content("count"));
    let repositories = ["a/one", "a/two", "a/three"];
    for repository in repositories {
        skopeo::push(
            &image,
            &registry.image_ref(repository, "latest"),
            ManifestFormat::Oci,
            None,
            &RegistryTls::Plain,
        );
    }
    let references: Vec<ImageReference> = repositories
        .iter()
        .map(|r| parse(&registry.image_ref(r, "latest")))
        .collect();
    let client = client();
    let mark = registry.mark();
    for _ in 0..2 {
        let results = client.manifest_digests(&references, 4).await;
        for (reference, result) in results {
            assert_eq!(result.expect("digest").as_str(), image.digest, "{reference}");
        }
    }
    let log = registry.requests_since(&mark);
    assert_eq!(log.pings(), 1, "{}", log.summary());
    assert_eq!(log.manifest_heads(), 2 * repositories.len(), "{}", log.summary());
    assert_eq!(log.manifest_gets(), 0, "{}", log.summary());
    assert_eq!(log.len(), 1 + 2 * repositories.len(), "{}", log.summary());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tls_registry_is_verified_against_the_ca_bundle_and_never_downgraded() {
    let wd = WorkDir::new("client-tls");
    let ca = test_support::TestCa::new(&wd);
    let registry = Registry::start(&wd, test_support::RegistryConfig::anonymous().tls(&ca));
    let reference = registry.image_ref("org/tls", "latest");
    let image = build_image(&wd, &ImageSpec::with_content("tls"));
    skopeo::push(&image, &reference, ManifestFormat::Oci, None, &RegistryTls::ca(&ca));

    let trusting = RegistryClient::new(Arc::new(
        Transport::new(TransportConfig {
            ca_bundle: Some(ca.ca_cert_path.clone()),
            ..TransportConfig::default()
        })
        .expect("transport"),
    ));
    let digest = trusting
        .manifest_digest(&parse(&reference))
        .await
        .expect("digest over https");
    assert_eq!(digest.as_str(), image.digest);
    assert_eq!(
        trusting.stats().snapshot().transport_errors,
        0,
        "https worked first time"
    );

    // Without the CA the certificate is refused — and a loopback host is NOT retried over
    // plain http, which would hide the problem.
    let error = client()
        .manifest_digest(&parse(&reference))
        .await
        .expect_err("untrusted certificate");
    let message = error.to_string();
    assert_eq!(error.kind(), "unreachable", "{message}");
    assert!(
        message.contains("not trusted") && message.contains("CA bundle"),
        "{message}"
    );
}
