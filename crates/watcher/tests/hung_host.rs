//! A hung registry beside Debian's real `docker-registry`, through the real `RegistrySource`:
//! while the poll's checks of the hung host are still in flight, the healthy host's images are
//! already on the status board, and an on-demand check of one of them is served at once
//! instead of queueing behind the poll. The hung host is test-support's fault server
//! (in-process), because a real registry cannot hang on demand.

use std::sync::Arc;
use std::time::Duration;

use registry_core::ImageReference;
use registry_core::client::{RegistryClient, Transport, TransportConfig};
use test_support::{
    FaultServer, ImageSpec, ManifestFormat, Registry, RegistryTls, Reply, WorkDir, build_image, skopeo,
};
use tokio::sync::oneshot;
use watcher::{MonitorOnly, RegistrySource, WatchSet, Watcher, WatcherConfig};

const TIMEOUT: Duration = Duration::from_secs(3);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_on_demand_check_of_a_healthy_host_does_not_wait_for_a_hung_one() {
    let wd = WorkDir::new("hung-host");
    let registry = Registry::anonymous(&wd);
    let image = build_image(&wd, &ImageSpec::with_content("hung-host"));
    let healthy = registry.image_ref("org/healthy", "latest");
    skopeo::push(&image, &healthy, ManifestFormat::Oci, None, &RegistryTls::Plain);
    let hung = FaultServer::start();
    hung.on("*", "/v2/*", [Reply::hang()]);

    let healthy: ImageReference = healthy.parse().expect("reference");
    let stuck: ImageReference = format!("{}/org/stuck:latest", hung.host()).parse().expect("reference");
    let mut set = WatchSet::new();
    set.add_image(stuck.clone()).expect("valid");
    set.add_image(healthy.clone()).expect("valid");
    let transport = Transport::new(TransportConfig {
        request_timeout: TIMEOUT,
        ..TransportConfig::default()
    })
    .expect("transport");
    let source = RegistrySource::new(Arc::new(RegistryClient::new(Arc::new(transport))));
    let config = WatcherConfig {
        interval: Duration::from_secs(600),
        jitter: 0.0,
        ..WatcherConfig::default()
    };
    let mut watcher = Watcher::new(set, Arc::new(source), Arc::new(MonitorOnly), config).expect("watcher");
    let trigger = watcher.trigger();
    let status = watcher.status();

    let (stop, stopped) = oneshot::channel::<()>();
    let script = async move {
        // The first poll is in flight, its hung check not due to time out for seconds.
        tokio::time::sleep(Duration::from_millis(700)).await;
        let polled = status.image(&healthy).expect("watched");
        assert_eq!(
            polled.last_digest.as_ref().map(|d| d.as_str()),
            Some(image.digest.as_str()),
            "the healthy host's answer is recorded while the hung host is still being asked"
        );
        let asked = tokio::time::Instant::now();
        let (_, ticket) = trigger.check(&healthy).expect("watched");
        assert!(trigger.wait(ticket).await, "served");
        let waited = asked.elapsed();
        assert!(
            waited < Duration::from_secs(1),
            "the on-demand check took {waited:?}, as if behind the hung poll"
        );
        assert_eq!(status.image(&healthy).expect("watched").checks, 2);
        assert_eq!(status.image(&stuck).expect("watched").checks, 0, "still in flight");
        let _ = stop.send(());
    };
    let (run, ()) = tokio::join!(
        watcher.run(async move {
            let _ = stopped.await;
        }),
        script
    );
    run.expect("stops cleanly");
}
