//! Every host on its own: a hung registry beside Debian's real `docker-registry`. The hung one
//! is test-support's fault server (in-process), because a real registry cannot hang on demand.
//! The real registry's answers arrive while the hung host's checks are still in flight, and
//! the hung host costs one request timeout per batch, not one per image.

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::StreamExt as _;
use registry_core::ImageReference;
use registry_core::client::{RegistryClient, RegistryError, Transport, TransportConfig};
use rstest::rstest;
use test_support::{
    FaultServer, ImageSpec, ManifestFormat, Registry, RegistryTls, Reply, WorkDir, build_image, skopeo,
};

const TIMEOUT: Duration = Duration::from_millis(1500);
const HUNG_IMAGES: usize = 6;
const CONCURRENCY: usize = 2;

#[rstest]
#[case::probe_hangs(Reply::hang(), Reply::hang(), 0)]
#[case::manifests_hang(Reply::status(200), Reply::hang(), CONCURRENCY)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hung_host_delays_no_other_host_and_costs_one_timeout(
    #[case] probe: Reply,
    #[case] manifest: Reply,
    #[case] manifest_requests: usize,
) {
    let wd = WorkDir::new("hosts-apart");
    let registry = Registry::anonymous(&wd);
    let image = build_image(&wd, &ImageSpec::with_content("hosts-apart"));
    let healthy: Vec<String> = ["org/one", "org/two", "org/three"]
        .iter()
        .map(|name| registry.image_ref(name, "latest"))
        .collect();
    for reference in &healthy {
        skopeo::push(&image, reference, ManifestFormat::Oci, None, &RegistryTls::Plain);
    }
    let hung = FaultServer::start();
    hung.on("GET", "/v2/", [probe]);
    hung.on("*", "/v2/org/*", [manifest]);
    // The hung host first, so an ordered pipeline would put its checks at the head.
    let mut references: Vec<ImageReference> = (0..HUNG_IMAGES)
        .map(|i| {
            format!("{}/org/stuck-{i}:latest", hung.host())
                .parse()
                .expect("reference")
        })
        .collect();
    references.extend(healthy.iter().map(|r| r.parse::<ImageReference>().expect("reference")));
    let transport = Transport::new(TransportConfig {
        request_timeout: TIMEOUT,
        ..TransportConfig::default()
    })
    .expect("transport");
    let client = RegistryClient::new(Arc::new(transport));

    let started = Instant::now();
    let mut arrivals: Vec<(usize, Duration, bool)> = Vec::new();
    let mut answers = std::pin::pin!(client.manifest_digests_as_ready(&references, CONCURRENCY));
    while let Some((index, outcome)) = answers.next().await {
        if index >= HUNG_IMAGES {
            assert_eq!(outcome.as_ref().map(|d| d.as_str()), Ok(image.digest.as_str()));
        } else {
            assert!(matches!(outcome, Err(RegistryError::Timeout { .. })), "{outcome:?}");
        }
        arrivals.push((index, started.elapsed(), index >= HUNG_IMAGES));
    }
    let total = started.elapsed();

    assert_eq!(arrivals.len(), references.len(), "every image answered once");
    let last_healthy = arrivals.iter().filter(|a| a.2).map(|a| a.1).max().expect("healthy");
    let first_hung = arrivals.iter().filter(|a| !a.2).map(|a| a.1).min().expect("hung");
    assert!(
        last_healthy < TIMEOUT / 2,
        "the healthy host answered in {last_healthy:?}, not held behind the hung one"
    );
    assert!(first_hung >= TIMEOUT, "the hung host timed out: {first_hung:?}");
    assert!(
        total < TIMEOUT * 2,
        "one timeout for the hung host, not one per image: {total:?}"
    );
    let sent = hung
        .requests()
        .iter()
        .filter(|r| r.path.starts_with("/v2/org/"))
        .count();
    assert_eq!(sent, manifest_requests, "checks after the first timeouts are not sent");
}
