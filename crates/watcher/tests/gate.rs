//! The trust gate and the cooldown in the loop, pinned with a fake digest source, a fake gate
//! and a fake refresher: what is held is neither refreshed to nor recorded as applied, an
//! admitted digest carries its attestation to the refresher, re-checks back off, and a cooldown
//! restarts when the digest moves on. (The real signatures and registry are tested in
//! `crates/trust/tests` and `crates/cli/tests/trust_gate.rs`.)

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use registry_core::{Digest, ImageReference};
use watcher::{
    Attestation, CheckError, CheckErrorKind, DigestSource, Gate, GateVerdict, ImageStatus, RefreshError, RefreshEvent,
    RefreshOutcome, Refresher, StateFile, WatchSet, Watcher, WatcherConfig,
};

const A: &str = "ghcr.io/molecule-ai/workspace-template-a:latest";

fn digest(c: char) -> Digest {
    format!("sha256:{}", c.to_string().repeat(64)).parse().expect("valid")
}

fn reference(image: &str) -> ImageReference {
    image.parse().expect("valid")
}

#[derive(Debug, Default)]
struct Source {
    answers: Mutex<HashMap<String, Digest>>,
}

impl Source {
    fn publish(&self, c: char) {
        self.answers
            .lock()
            .expect("lock")
            .insert(reference(A).to_string(), digest(c));
    }
}

#[async_trait]
impl DigestSource for Source {
    async fn digest(&self, image: &ImageReference) -> Result<Digest, CheckError> {
        self.answers
            .lock()
            .expect("lock")
            .get(&image.to_string())
            .cloned()
            .ok_or_else(|| CheckError::new(CheckErrorKind::NotFound, "no such tag"))
    }
}

/// Admits the digests it was told are signed; counts what it was asked.
#[derive(Debug, Default)]
struct FakeGate {
    signed: Mutex<Vec<Digest>>,
    asked: Mutex<Vec<Digest>>,
}

impl FakeGate {
    fn sign(&self, c: char) {
        self.signed.lock().expect("lock").push(digest(c));
    }

    fn asked(&self) -> usize {
        self.asked.lock().expect("lock").len()
    }
}

#[async_trait]
impl Gate for FakeGate {
    async fn admit(&self, _image: &ImageReference, digest: &Digest) -> GateVerdict {
        self.asked.lock().expect("lock").push(digest.clone());
        if self.signed.lock().expect("lock").contains(digest) {
            GateVerdict::Admit(Some(Attestation {
                key_fingerprint: "SHA256:feed".into(),
                found: "tag sha256-x.sig".into(),
            }))
        } else {
            GateVerdict::Hold("no signature: none yet".into())
        }
    }
}

#[derive(Debug, Default)]
struct Recorder {
    events: Mutex<Vec<RefreshEvent>>,
}

#[async_trait]
impl Refresher for Recorder {
    fn name(&self) -> &'static str {
        "recorder"
    }

    async fn refresh(&self, event: &RefreshEvent) -> Result<RefreshOutcome, RefreshError> {
        self.events.lock().expect("lock").push(event.clone());
        Ok(RefreshOutcome::new("recorded"))
    }
}

struct Harness {
    source: Arc<Source>,
    gate: Arc<FakeGate>,
    refresher: Arc<Recorder>,
}

impl Harness {
    fn new() -> Harness {
        Harness {
            source: Arc::default(),
            gate: Arc::default(),
            refresher: Arc::default(),
        }
    }

    fn watcher(&self, config: WatcherConfig) -> Watcher {
        let mut set = WatchSet::new();
        set.add_image(reference(A)).expect("valid");
        Watcher::new(set, self.source.clone(), self.refresher.clone(), config)
            .expect("watcher")
            .with_gate(self.gate.clone())
    }

    fn refreshed_to(&self) -> Vec<Digest> {
        self.refresher
            .events
            .lock()
            .expect("lock")
            .iter()
            .map(|event| event.new_digest.clone())
            .collect()
    }
}

fn label(report: &watcher::TickReport) -> &'static str {
    report.status_of(&reference(A)).map_or("absent", ImageStatus::label)
}

#[tokio::test(start_paused = true)]
async fn a_held_digest_is_not_refreshed_to_nor_applied_and_a_later_signature_lets_it_through() {
    let h = Harness::new();
    let dir = tempfile::tempdir().expect("tempdir");
    let state = dir.path().join("state.json");
    let config = WatcherConfig {
        state_file: Some(state.clone()),
        ..WatcherConfig::default()
    };
    h.source.publish('a');
    let mut watcher = h.watcher(config);
    assert_eq!(label(&watcher.tick().await), "seeded");
    assert_eq!(h.gate.asked(), 0, "a first sighting deploys nothing and asks nothing");

    h.source.publish('b');
    let report = watcher.tick().await;
    assert_eq!(label(&report), "unverified");
    assert!(report.failed(), "an unverified move is not up to date");
    assert!(h.refreshed_to().is_empty());
    assert_eq!(watcher.seen(&reference(A)), Some(&digest('a')));
    assert_eq!(
        StateFile::new(&state).load().expect("loads").digests[&reference(A)],
        digest('a')
    );
    let status = watcher.status().image(&reference(A)).expect("watched");
    assert_eq!(status.seen_digest, Some(digest('a')));
    let pending = status.pending.expect("pending");
    assert_eq!((pending.digest, pending.status), (digest('b'), "unverified"));
    let metrics = watcher.status().metrics();
    assert!(metrics.checks.contains(&("unverified", 1)), "{:?}", metrics.checks);

    h.gate.sign('b');
    let report = watcher.tick().await;
    assert_eq!(label(&report), "refreshed");
    let events = h.refresher.events.lock().expect("lock").clone();
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].new_digest, digest('b'));
    let verification = events[0].verification.clone().expect("attested");
    assert_eq!(verification.key_fingerprint, "SHA256:feed");
    assert_eq!(events[0].to_json()["verification"]["found"], "tag sha256-x.sig");
    assert_eq!(watcher.seen(&reference(A)), Some(&digest('b')));
    assert_eq!(watcher.status().image(&reference(A)).expect("watched").pending, None);
}

#[tokio::test(start_paused = true)]
async fn triggered_rechecks_of_a_held_digest_back_off_and_polls_always_ask() {
    let h = Harness::new();
    let config = WatcherConfig {
        interval: Duration::from_secs(60),
        ..WatcherConfig::default()
    };
    h.source.publish('a');
    let mut watcher = h.watcher(config);
    watcher.tick().await;
    h.source.publish('b');
    let report = watcher.check_images(&[reference(A)]).await;
    let Some(ImageStatus::Unverified { retry_in, .. }) = report.status_of(&reference(A)) else {
        panic!("expected unverified: {report}");
    };
    assert_eq!(*retry_in, Duration::from_secs(5));
    assert_eq!(h.gate.asked(), 1);
    // A triggered check before the back-off passes does not ask the gate again.
    watcher.check_images(&[reference(A)]).await;
    assert_eq!(h.gate.asked(), 1);
    tokio::time::advance(Duration::from_secs(5)).await;
    let report = watcher.check_images(&[reference(A)]).await;
    let Some(ImageStatus::Unverified { retry_in, .. }) = report.status_of(&reference(A)) else {
        panic!("expected unverified: {report}");
    };
    assert_eq!((h.gate.asked(), *retry_in), (2, Duration::from_secs(10)), "doubled");
    for _ in 0..5 {
        watcher.tick().await;
    }
    assert_eq!(h.gate.asked(), 7, "every poll asks");
    let report = watcher.tick().await;
    let Some(ImageStatus::Unverified { retry_in, .. }) = report.status_of(&reference(A)) else {
        panic!("expected unverified: {report}");
    };
    assert_eq!(*retry_in, Duration::from_secs(60), "capped at the interval");
    // A newer digest starts the back-off over.
    h.source.publish('c');
    let report = watcher.tick().await;
    let Some(ImageStatus::Unverified { retry_in, .. }) = report.status_of(&reference(A)) else {
        panic!("expected unverified: {report}");
    };
    assert_eq!(*retry_in, Duration::from_secs(5));
    assert!(h.refreshed_to().is_empty());
}

#[tokio::test]
async fn a_cooldown_restarts_when_the_digest_moves_on_and_survives_a_restart() {
    let h = Harness::new();
    h.gate.sign('b');
    h.gate.sign('c');
    let dir = tempfile::tempdir().expect("tempdir");
    let config = WatcherConfig {
        state_file: Some(dir.path().join("state.json")),
        ..WatcherConfig::default()
    };
    let cooldown = Duration::from_secs(3);
    h.source.publish('a');
    let mut watcher = h.watcher(config.clone()).with_cooldown(cooldown);
    watcher.tick().await;
    h.source.publish('b');
    assert_eq!(label(&watcher.tick().await), "cooling_down");
    assert_eq!(h.gate.asked(), 0, "the gate is asked once the cooldown is over");
    tokio::time::sleep(Duration::from_millis(1000)).await;
    h.source.publish('c');
    assert_eq!(
        label(&watcher.tick().await),
        "cooling_down",
        "c starts its own cooldown"
    );
    drop(watcher);
    let state = StateFile::new(dir.path().join("state.json"));
    let first_seen = state.load().expect("loads").first_seen[&reference(A)].clone();
    assert_eq!(first_seen.digest, digest('c'));
    tokio::time::sleep(Duration::from_millis(1000)).await;
    // A new watcher on the same state file: c's first sighting is remembered, not restarted.
    let mut watcher = h.watcher(config).with_cooldown(cooldown);
    assert_eq!(label(&watcher.tick().await), "cooling_down");
    assert_eq!(state.load().expect("loads").first_seen[&reference(A)], first_seen);
    // First-seen times are kept to the second, rounded up: wait out the cooldown and that second.
    tokio::time::sleep(Duration::from_millis(3000)).await;
    assert_eq!(label(&watcher.tick().await), "refreshed");
    assert_eq!(
        h.refreshed_to(),
        vec![digest('c')],
        "b was replaced during its cooldown"
    );
}

#[tokio::test(start_paused = true)]
async fn the_running_loop_rechecks_a_held_digest_and_refreshes_soon_after_it_is_signed() {
    let h = Harness::new();
    let config = WatcherConfig {
        interval: Duration::from_secs(3600),
        jitter: 0.0,
        ..WatcherConfig::default()
    };
    h.source.publish('a');
    let mut watcher = h.watcher(config);
    watcher.tick().await;
    for _ in 0..3 {
        assert_eq!(label(&watcher.tick().await), "unchanged");
    }
    assert_eq!(h.gate.asked(), 0, "no move, no signature request");
    h.source.publish('b');
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let gate = h.gate.clone();
    let script = async move {
        // CI signs 3 s after the push; the hourly poll is far away.
        tokio::time::sleep(Duration::from_secs(3)).await;
        gate.sign('b');
        tokio::time::sleep(Duration::from_secs(10)).await;
        let _ = stop.send(());
    };
    let (run, ()) = tokio::join!(
        watcher.run(async move {
            let _ = stopped.await;
        }),
        script
    );
    run.expect("stops cleanly");
    assert_eq!(h.refreshed_to(), vec![digest('b')], "refreshed by the 5 s recheck");
    assert_eq!(h.gate.asked(), 2, "asked at the start and at the recheck");
}
