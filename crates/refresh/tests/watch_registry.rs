//! The watcher end to end against a REAL registry (Debian's docker-registry) with images pushed
//! by skopeo, digests read by `registry_core`'s client, and the exec refresher running a real
//! command: it fires exactly once per push, never for an unchanged tag, and a registry killed
//! mid-run gives per-tick errors and recovery, not a crash.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use refresh::{ExecConfig, ExecRefresher};
use registry_core::ImageReference;
use registry_core::client::{RegistryClient, Transport, TransportConfig};
use test_support::{ImageSpec, ManifestFormat, Registry, RegistryTls, WorkDir, build_image, skopeo};
use watcher::{CheckErrorKind, ImageStatus, RegistrySource, WatchSet, Watcher, WatcherConfig};

struct Setup {
    wd: WorkDir,
    registry: Registry,
    fired_log: PathBuf,
}

impl Setup {
    fn new(label: &str) -> Setup {
        let wd = WorkDir::new(label);
        let registry = Registry::anonymous(&wd);
        let fired_log = wd.join("fired.log");
        Setup {
            wd,
            registry,
            fired_log,
        }
    }

    fn reference(&self, name: &str) -> ImageReference {
        self.registry.image_ref(name, "latest").parse().expect("reference")
    }

    /// Pushes a distinct image to `name:latest` and answers the registry's digest for it.
    fn push(&self, name: &str, content: &str) -> String {
        let layout = build_image(&self.wd, &ImageSpec::with_content(content));
        skopeo::push(
            &layout,
            &self.registry.image_ref(name, "latest"),
            ManifestFormat::Oci,
            None,
            &RegistryTls::Plain,
        )
    }

    fn watcher(&self, images: &[&str], interval: Duration) -> Watcher {
        let mut set = WatchSet::new();
        for image in images {
            set.add_image(self.reference(image)).expect("valid");
        }
        let transport = Transport::new(TransportConfig {
            connect_timeout: Duration::from_millis(500),
            request_timeout: Duration::from_secs(5),
            ..TransportConfig::default()
        })
        .expect("transport");
        let source = RegistrySource::new(Arc::new(RegistryClient::new(Arc::new(transport))));
        let script = format!(
            "echo \"$IMAGEWATCH_IMAGE $IMAGEWATCH_OLD_DIGEST $IMAGEWATCH_NEW_DIGEST\" >> '{}'",
            self.fired_log.display()
        );
        let refresher = ExecRefresher::new(ExecConfig::new("/bin/sh", vec!["-c".into(), script]));
        let config = WatcherConfig {
            interval,
            jitter: 0.0,
            concurrency: 4,
            state_file: Some(self.wd.join("state.json")),
            ..WatcherConfig::default()
        };
        Watcher::new(set, Arc::new(source), Arc::new(refresher), config).expect("watcher")
    }

    fn fired(&self) -> Vec<String> {
        fired(&self.fired_log)
    }
}

fn fired(log: &Path) -> Vec<String> {
    std::fs::read_to_string(log)
        .map(|text| text.lines().map(str::to_owned).collect())
        .unwrap_or_default()
}

fn label(report: &watcher::TickReport, image: &ImageReference) -> &'static str {
    report.status_of(image).map_or("absent", ImageStatus::label)
}

#[tokio::test]
async fn exec_refresher_fires_exactly_once_per_push_and_never_for_an_unchanged_tag() {
    let setup = Setup::new("watch-exec-once");
    let app = setup.reference("org/app");
    let other = setup.reference("org/other");
    let v1 = setup.push("org/app", "app v1");
    setup.push("org/other", "other v1");
    let mut watcher = setup.watcher(&["org/app", "org/other"], Duration::from_secs(60));

    let report = watcher.tick().await;
    assert_eq!((label(&report, &app), label(&report, &other)), ("seeded", "seeded"));
    for _ in 0..3 {
        let report = watcher.tick().await;
        assert_eq!(
            (label(&report, &app), label(&report, &other)),
            ("unchanged", "unchanged")
        );
    }
    assert!(setup.fired().is_empty(), "{:?}", setup.fired());

    let v2 = setup.push("org/app", "app v2");
    let report = watcher.tick().await;
    assert_eq!(label(&report, &app), "refreshed", "{report}");
    assert_eq!(label(&report, &other), "unchanged");
    assert_eq!(setup.fired(), vec![format!("{app} {v1} {v2}")]);
    for _ in 0..3 {
        assert_eq!(label(&watcher.tick().await, &app), "unchanged");
    }
    assert_eq!(setup.fired().len(), 1, "one push, one refresh");

    // Pushing the same content again does not move the digest.
    setup.push("org/app", "app v2");
    assert_eq!(label(&watcher.tick().await, &app), "unchanged");

    let v3 = setup.push("org/app", "app v3");
    assert_eq!(label(&watcher.tick().await, &app), "refreshed");
    assert_eq!(
        setup.fired(),
        vec![format!("{app} {v1} {v2}"), format!("{app} {v2} {v3}")]
    );
    assert!(!setup.fired().iter().any(|line| line.contains("org/other")));
}

#[tokio::test]
async fn registry_killed_mid_run_gives_per_tick_errors_then_recovers() {
    let mut setup = Setup::new("watch-registry-down");
    let app = setup.reference("org/app");
    let v1 = setup.push("org/app", "app v1");
    let mut watcher = setup.watcher(&["org/app"], Duration::from_secs(60));
    assert_eq!(label(&watcher.tick().await, &app), "seeded");

    setup.registry.stop();
    for _ in 0..2 {
        let report = watcher.tick().await;
        assert!(report.failed());
        assert!(
            matches!(report.status_of(&app), Some(ImageStatus::CheckFailed { error }) if error.kind() == CheckErrorKind::Unreachable),
            "{report}"
        );
    }
    assert!(setup.fired().is_empty());

    setup.registry.restart();
    let report = watcher.tick().await;
    assert_eq!(label(&report, &app), "unchanged", "{report}");
    assert!(!report.failed());
    let v2 = setup.push("org/app", "app v2");
    assert_eq!(label(&watcher.tick().await, &app), "refreshed");
    assert_eq!(setup.fired(), vec![format!("{app} {v1} {v2}")]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_loop_notices_a_push_within_one_interval_and_saves_state_on_stop() {
    let setup = Setup::new("watch-run-loop");
    let app = setup.reference("org/app");
    let v1 = setup.push("org/app", "app v1");
    let mut watcher = setup.watcher(&["org/app"], Duration::from_millis(200));
    let state = setup.wd.join("state.json");
    let log = setup.fired_log.clone();
    let layout = build_image(&setup.wd, &ImageSpec::with_content("app v2"));
    let destination = setup.registry.image_ref("org/app", "latest");

    let pusher = async {
        // Wait for the first tick to seed (the state file appears), then push a new version.
        for _ in 0..200 {
            if state.exists() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        assert!(state.exists(), "the first tick never saved its state");
        tokio::task::spawn_blocking(move || {
            skopeo::push(&layout, &destination, ManifestFormat::Oci, None, &RegistryTls::Plain)
        })
        .await
        .expect("push")
    };
    let shutdown = async {
        for _ in 0..400 {
            if !fired(&log).is_empty() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        panic!("the push was not noticed within 10 s");
    };
    let (run, v2) = tokio::join!(watcher.run(shutdown), pusher);
    run.expect("stopped cleanly");
    assert_eq!(fired(&log), vec![format!("{app} {v1} {v2}")]);
    let saved = watcher::StateFile::new(&state).load().expect("state");
    assert_eq!(saved.digests.get(&app).map(ToString::to_string), Some(v2));
}
