//! The tick semantics, pinned with a fake digest source and a fake refresher: these test the
//! loop's decisions, not a registry (the real-registry tests live in `crates/refresh/tests`).

use std::collections::HashMap;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use registry_core::{Digest, ImageReference};
use rstest::rstest;
use tokio::sync::Notify;
use watcher::{
    BackoffPolicy, CheckError, CheckErrorKind, DigestSource, ImageStatus, RefreshError, RefreshEvent, RefreshOutcome,
    Refresher, StateFile, WatchSet, Watcher, WatcherConfig,
};

const A: &str = "ghcr.io/molecule-ai/workspace-template-a:latest";
const B: &str = "ghcr.io/molecule-ai/workspace-template-b:latest";
const C: &str = "quay.io/other/c:v1";

fn digest(c: char) -> Digest {
    format!("sha256:{}", c.to_string().repeat(64)).parse().expect("valid")
}

fn reference(image: &str) -> ImageReference {
    image.parse().expect("valid")
}

fn set(images: &[&str]) -> WatchSet {
    let mut set = WatchSet::new();
    for image in images {
        set.add_image(reference(image)).expect("valid");
    }
    set
}

#[derive(Debug, Default)]
struct FakeSource {
    answers: Mutex<HashMap<String, Result<Digest, CheckError>>>,
    calls: Mutex<Vec<String>>,
    delay: Option<Duration>,
    in_flight: AtomicUsize,
    max_in_flight: AtomicUsize,
}

impl FakeSource {
    fn answer(&self, image: &str, answer: Result<Digest, CheckError>) {
        self.answers
            .lock()
            .expect("lock")
            .insert(reference(image).to_string(), answer);
    }

    fn publish(&self, image: &str, c: char) {
        self.answer(image, Ok(digest(c)));
    }

    fn calls_for(&self, image: &str) -> usize {
        let image = reference(image).to_string();
        self.calls.lock().expect("lock").iter().filter(|c| **c == image).count()
    }
}

#[async_trait]
impl DigestSource for FakeSource {
    async fn digest(&self, image: &ImageReference) -> Result<Digest, CheckError> {
        let now = self.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
        self.max_in_flight.fetch_max(now, Ordering::SeqCst);
        self.calls.lock().expect("lock").push(image.to_string());
        if let Some(delay) = self.delay {
            tokio::time::sleep(delay).await;
        }
        self.in_flight.fetch_sub(1, Ordering::SeqCst);
        self.answers
            .lock()
            .expect("lock")
            .get(&image.to_string())
            .cloned()
            .unwrap_or_else(|| Err(CheckError::new(CheckErrorKind::NotFound, "no such tag")))
    }
}

#[derive(Debug, Default)]
struct FakeRefresher {
    events: Mutex<Vec<RefreshEvent>>,
    failures_left: AtomicUsize,
    delay: Option<Duration>,
    started: Notify,
    finished: AtomicUsize,
}

impl FakeRefresher {
    fn events(&self) -> Vec<RefreshEvent> {
        self.events.lock().expect("lock").clone()
    }
}

#[async_trait]
impl Refresher for FakeRefresher {
    fn name(&self) -> &'static str {
        "fake"
    }

    async fn refresh(&self, event: &RefreshEvent) -> Result<RefreshOutcome, RefreshError> {
        self.events.lock().expect("lock").push(event.clone());
        self.started.notify_one();
        if let Some(delay) = self.delay {
            tokio::time::sleep(delay).await;
        }
        self.finished.fetch_add(1, Ordering::SeqCst);
        let fail = self
            .failures_left
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok();
        if fail {
            Err(RefreshError::new("the fake refresher was told to fail"))
        } else {
            Ok(RefreshOutcome::new("fake refresh done"))
        }
    }
}

struct Harness {
    source: Arc<FakeSource>,
    refresher: Arc<FakeRefresher>,
}

impl Harness {
    fn new() -> Harness {
        Harness::with(FakeSource::default(), FakeRefresher::default())
    }

    /// A harness whose first `failures` refreshes fail.
    fn failing_refreshes(failures: usize) -> Harness {
        Harness::with(
            FakeSource::default(),
            FakeRefresher {
                failures_left: AtomicUsize::new(failures),
                ..FakeRefresher::default()
            },
        )
    }

    fn with(source: FakeSource, refresher: FakeRefresher) -> Harness {
        Harness {
            source: Arc::new(source),
            refresher: Arc::new(refresher),
        }
    }

    fn watcher(&self, set: WatchSet, config: WatcherConfig) -> Watcher {
        Watcher::new(set, self.source.clone(), self.refresher.clone(), config).expect("watcher starts")
    }
}

fn with_state(path: &Path) -> WatcherConfig {
    WatcherConfig {
        state_file: Some(path.to_owned()),
        ..WatcherConfig::default()
    }
}

fn label(watcher_report: &watcher::TickReport, image: &str) -> &'static str {
    watcher_report
        .status_of(&reference(image))
        .map_or("absent", ImageStatus::label)
}

#[tokio::test]
async fn first_tick_only_seeds() {
    let h = Harness::new();
    h.source.publish(A, 'a');
    h.source.publish(B, 'b');
    let mut watcher = h.watcher(set(&[A, B]), WatcherConfig::default());
    let report = watcher.tick().await;
    assert_eq!(
        report.status_of(&reference(A)),
        Some(&ImageStatus::Seeded { digest: digest('a') })
    );
    assert_eq!(label(&report, B), "seeded");
    assert!(h.refresher.events().is_empty());
    assert!(!report.failed());
    assert_eq!(watcher.seen(&reference(A)), Some(&digest('a')));
}

#[tokio::test]
async fn unchanged_digest_never_refreshes_over_several_ticks() {
    let h = Harness::new();
    h.source.publish(A, 'a');
    let mut watcher = h.watcher(set(&[A]), WatcherConfig::default());
    watcher.tick().await;
    for _ in 0..3 {
        let report = watcher.tick().await;
        assert_eq!(label(&report, A), "unchanged");
    }
    assert!(h.refresher.events().is_empty());
    assert_eq!(h.source.calls_for(A), 4);
}

#[tokio::test]
async fn one_moved_of_two_refreshes_that_one_once() {
    let h = Harness::new();
    h.source.publish(A, 'a');
    h.source.publish(B, 'b');
    let mut set = set(&[B]);
    set.add_runtime(&"ghcr.io/molecule-ai".parse().expect("valid"), "a")
        .expect("valid");
    let mut watcher = h.watcher(set, WatcherConfig::default());
    watcher.tick().await;
    h.source.publish(A, 'c');
    let report = watcher.tick().await;
    assert!(
        matches!(report.status_of(&reference(A)), Some(ImageStatus::Refreshed { old, new, .. }) if *old == digest('a') && *new == digest('c'))
    );
    assert_eq!(label(&report, B), "unchanged");
    let events = h.refresher.events();
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].image, reference(A));
    assert_eq!(events[0].runtime.as_deref(), Some("a"));
    assert_eq!(events[0].host.as_str(), "ghcr.io");
    assert_eq!(
        (&events[0].old_digest, &events[0].new_digest),
        (&digest('a'), &digest('c'))
    );
    let report = watcher.tick().await;
    assert_eq!(label(&report, A), "unchanged");
    assert_eq!(h.refresher.events().len(), 1, "refreshed exactly once");
}

#[tokio::test]
async fn failed_refresh_rolls_back_and_the_next_tick_retries() {
    let h = Harness::failing_refreshes(1);
    h.source.publish(A, 'a');
    let mut watcher = h.watcher(set(&[A]), WatcherConfig::default());
    watcher.tick().await;
    h.source.publish(A, 'b');
    let report = watcher.tick().await;
    assert_eq!(label(&report, A), "refresh_failed");
    assert!(report.failed());
    assert_eq!(watcher.seen(&reference(A)), Some(&digest('a')), "rolled back");
    let report = watcher.tick().await;
    assert_eq!(label(&report, A), "refreshed");
    assert_eq!(watcher.seen(&reference(A)), Some(&digest('b')));
    let report = watcher.tick().await;
    assert_eq!(label(&report, A), "unchanged");
    let events = h.refresher.events();
    assert_eq!(events.len(), 2);
    assert_eq!(
        events[0],
        RefreshEvent {
            time: events[0].time,
            ..events[1].clone()
        },
        "same move offered again"
    );
}

#[tokio::test(start_paused = true)]
async fn a_digest_whose_refresh_keeps_failing_is_retried_less_and_less_often_but_a_newer_one_at_once() {
    let h = Harness::failing_refreshes(usize::MAX);
    let interval = Duration::from_secs(60);
    let config = WatcherConfig {
        interval,
        ..WatcherConfig::default()
    };
    h.source.publish(A, 'a');
    let mut watcher = h.watcher(set(&[A]), config);
    watcher.tick().await;
    h.source.publish(A, 'b');
    let mut attempts = Vec::new();
    for _ in 0..12 {
        let report = watcher.tick().await;
        attempts.push(label(&report, A));
        assert!(report.failed(), "an image whose move is not applied is not up to date");
        tokio::time::advance(interval).await;
    }
    // Failed at tick 0, retried at the next tick (1), then 2 and 4 ticks later (3, 7).
    let tried: Vec<usize> = attempts
        .iter()
        .enumerate()
        .filter(|(_, label)| **label == "refresh_failed")
        .map(|(tick, _)| tick)
        .collect();
    assert_eq!(tried, vec![0, 1, 3, 7], "{attempts:?}");
    assert!(
        attempts
            .iter()
            .all(|label| ["refresh_failed", "refresh_deferred"].contains(label))
    );
    assert_eq!(h.refresher.events().len(), 4);
    assert_eq!(watcher.seen(&reference(A)), Some(&digest('a')));
    let retry = watcher
        .status()
        .image(&reference(A))
        .and_then(|state| state.retry)
        .expect("the status board shows the retry schedule");
    assert_eq!((retry.digest, retry.failures), (digest('b'), 4));
    assert!(
        retry.next_attempt > std::time::SystemTime::now(),
        "the next attempt is ahead"
    );

    h.source.publish(A, 'c');
    let report = watcher.tick().await;
    assert_eq!(label(&report, A), "refresh_failed", "a newer digest is tried at once");
    let retry = watcher.status().image(&reference(A)).and_then(|state| state.retry);
    assert_eq!(retry.map(|r| (r.digest, r.failures)), Some((digest('c'), 1)));
    assert_eq!(
        h.refresher.events().last().map(|event| event.new_digest.clone()),
        Some(digest('c'))
    );
}

#[rstest]
#[case::not_found(CheckErrorKind::NotFound)]
#[case::unauthorized(CheckErrorKind::Unauthorized)]
#[case::unreachable(CheckErrorKind::Unreachable)]
#[case::protocol(CheckErrorKind::Protocol)]
#[tokio::test]
async fn fetch_error_is_reported_for_that_image_and_others_go_on(#[case] kind: CheckErrorKind) {
    let h = Harness::new();
    h.source.publish(A, 'a');
    h.source.publish(B, 'b');
    let mut watcher = h.watcher(set(&[A, B]), WatcherConfig::default());
    watcher.tick().await;
    h.source.answer(A, Err(CheckError::new(kind, "boom")));
    h.source.publish(B, 'c');
    let report = watcher.tick().await;
    assert!(
        matches!(report.status_of(&reference(A)), Some(ImageStatus::CheckFailed { error }) if error.kind() == kind)
    );
    assert_eq!(label(&report, B), "refreshed");
    assert!(report.failed());
    assert_eq!(
        watcher.seen(&reference(A)),
        Some(&digest('a')),
        "a failed check forgets nothing"
    );
    h.source.publish(A, 'a');
    assert_eq!(label(&watcher.tick().await, A), "unchanged");
}

#[rstest]
#[case::state_file_catches_the_move(true, "refreshed", 1)]
#[case::memory_only_misses_it(false, "seeded", 0)]
#[tokio::test]
async fn digest_moved_while_down_is_refreshed_at_first_tick_with_a_state_file(
    #[case] persist: bool,
    #[case] first_tick: &str,
    #[case] refreshes: usize,
) {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = if persist {
        with_state(&dir.path().join("state.json"))
    } else {
        WatcherConfig::default()
    };
    let h = Harness::new();
    h.source.publish(A, 'a');
    h.source.publish(B, 'b');
    {
        let mut watcher = h.watcher(set(&[A, B]), config.clone());
        watcher.tick().await;
    }
    h.source.publish(A, 'c');
    let mut restarted = h.watcher(set(&[A, B]), config);
    let report = restarted.tick().await;
    assert_eq!(label(&report, A), first_tick);
    assert_eq!(h.refresher.events().len(), refreshes);
    if persist {
        assert_eq!(label(&report, B), "unchanged");
        let saved = StateFile::new(dir.path().join("state.json")).load().expect("loads");
        assert_eq!(saved.digests.get(&reference(A)), Some(&digest('c')));
    }
}

#[tokio::test]
async fn failed_refresh_is_not_persisted_as_done() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("state.json");
    let h = Harness::failing_refreshes(1);
    h.source.publish(A, 'a');
    let mut watcher = h.watcher(set(&[A]), with_state(&path));
    watcher.tick().await;
    h.source.publish(A, 'b');
    assert_eq!(label(&watcher.tick().await, A), "refresh_failed");
    drop(watcher);
    let mut restarted = h.watcher(set(&[A]), with_state(&path));
    assert_eq!(label(&restarted.tick().await, A), "refreshed", "retried after restart");
}

#[tokio::test]
async fn corrupt_state_file_is_set_aside_and_the_watcher_starts_empty() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("state.json");
    std::fs::write(&path, "{\"version\": 1, \"images\": {\"ghcr.io/a/b:latest\": 42").expect("writes");
    let h = Harness::new();
    h.source.publish(A, 'a');
    let mut watcher = h.watcher(set(&[A]), with_state(&path));
    let aside = watcher.state_set_aside().expect("reported").clone();
    assert!(aside.moved_to.exists());
    assert!(std::fs::read_to_string(&aside.moved_to).expect("kept").contains("42"));
    assert_eq!(label(&watcher.tick().await, A), "seeded");
    let saved = StateFile::new(&path).load().expect("a fresh, valid file");
    assert_eq!(saved.digests.get(&reference(A)), Some(&digest('a')));
}

#[tokio::test(start_paused = true)]
async fn rate_limit_backs_off_that_host_for_retry_after_and_others_go_on() {
    let h = Harness::new();
    h.source.publish(A, 'a');
    h.source.publish(B, 'b');
    h.source.publish(C, 'c');
    let config = WatcherConfig {
        concurrency: 1,
        ..WatcherConfig::default()
    };
    let mut watcher = h.watcher(set(&[A, B, C]), config);
    watcher.tick().await;
    h.source.answer(
        A,
        Err(CheckError::new(CheckErrorKind::RateLimited, "429 Too Many Requests")
            .with_retry_after(Some(Duration::from_secs(30)))),
    );
    h.source.publish(C, 'd');
    let report = watcher.tick().await;
    assert_eq!(label(&report, A), "check_failed");
    assert_eq!(label(&report, B), "unchanged", "checked in the same batch");
    assert_eq!(label(&report, C), "refreshed", "another host goes on");

    tokio::time::advance(Duration::from_secs(20)).await;
    h.source.publish(A, 'a');
    let report = watcher.tick().await;
    assert!(
        matches!(report.status_of(&reference(A)), Some(ImageStatus::BackedOff { remaining }) if *remaining == Duration::from_secs(10))
    );
    assert_eq!(
        label(&report, B),
        "backed_off",
        "the whole host pauses, despite B's success"
    );
    assert_eq!(label(&report, C), "unchanged");
    assert_eq!(h.source.calls_for(A), 2, "not asked during the pause");
    assert_eq!(h.source.calls_for(B), 2);

    tokio::time::advance(Duration::from_secs(11)).await;
    let report = watcher.tick().await;
    assert_eq!(label(&report, A), "unchanged");
    assert_eq!(label(&report, B), "unchanged");
    assert!(!report.failed());
}

#[tokio::test(start_paused = true)]
async fn many_images_rate_limited_in_one_tick_pause_their_host_once() {
    let h = Harness::new();
    h.source.publish(A, 'a');
    h.source.publish(B, 'b');
    let mut watcher = h.watcher(set(&[A, B]), WatcherConfig::default());
    watcher.tick().await;
    for image in [A, B] {
        h.source
            .answer(image, Err(CheckError::new(CheckErrorKind::RateLimited, "429")));
    }
    assert_eq!(label(&watcher.tick().await, A), "check_failed");
    let default_pause = BackoffPolicy::default().rate_limit_default;
    tokio::time::advance(default_pause - Duration::from_secs(1)).await;
    assert_eq!(label(&watcher.tick().await, B), "backed_off");
    tokio::time::advance(Duration::from_secs(2)).await;
    h.source.publish(A, 'a');
    h.source.publish(B, 'b');
    let report = watcher.tick().await;
    assert_eq!(
        (label(&report, A), label(&report, B)),
        ("unchanged", "unchanged"),
        "one tick's 429s are one step of the back-off, however many images met them"
    );
}

#[tokio::test(start_paused = true)]
async fn repeated_server_errors_back_off_that_host() {
    let h = Harness::new();
    h.source.publish(A, 'a');
    h.source.publish(C, 'c');
    let config = WatcherConfig {
        backoff: BackoffPolicy {
            server_errors_before_backoff: 2,
            server_error_base: Duration::from_secs(60),
            ..BackoffPolicy::default()
        },
        ..WatcherConfig::default()
    };
    let mut watcher = h.watcher(set(&[A, C]), config);
    watcher.tick().await;
    h.source
        .answer(A, Err(CheckError::new(CheckErrorKind::Server, "502 Bad Gateway")));
    assert_eq!(label(&watcher.tick().await, A), "check_failed");
    assert_eq!(label(&watcher.tick().await, A), "check_failed");
    assert_eq!(label(&watcher.tick().await, A), "backed_off");
    assert_eq!(h.source.calls_for(A), 3);
    tokio::time::advance(Duration::from_secs(61)).await;
    h.source.publish(A, 'a');
    let report = watcher.tick().await;
    assert_eq!(label(&report, A), "unchanged");
    assert_eq!(h.source.calls_for(C), 5, "the other host was checked every tick");
}

#[rstest]
#[case(1)]
#[case(3)]
#[tokio::test(start_paused = true)]
async fn checks_run_concurrently_up_to_the_bound(#[case] bound: usize) {
    let h = Harness::with(
        FakeSource {
            delay: Some(Duration::from_millis(100)),
            ..FakeSource::default()
        },
        FakeRefresher::default(),
    );
    let images: Vec<String> = (0..7).map(|i| format!("ghcr.io/x/img{i}:latest")).collect();
    for image in &images {
        h.source.publish(image, 'a');
    }
    let refs: Vec<&str> = images.iter().map(String::as_str).collect();
    let config = WatcherConfig {
        concurrency: bound,
        ..WatcherConfig::default()
    };
    let mut watcher = h.watcher(set(&refs), config);
    let report = watcher.tick().await;
    assert_eq!(report.counts().seeded, 7);
    assert_eq!(h.source.max_in_flight.load(Ordering::SeqCst), bound);
    assert_eq!(
        report.images.iter().map(|i| i.image.to_string()).collect::<Vec<_>>(),
        images,
        "reported in watch-set order"
    );
}

#[tokio::test(start_paused = true)]
async fn shutdown_lets_the_refresh_in_flight_finish_starts_no_other_and_saves_state() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("state.json");
    StateFile::new(&path)
        .save(&HashMap::from([
            (reference(A), digest('a')),
            (reference(B), digest('b')),
        ]))
        .expect("seeds the state");
    let h = Harness::with(
        FakeSource::default(),
        FakeRefresher {
            delay: Some(Duration::from_secs(5)),
            ..FakeRefresher::default()
        },
    );
    h.source.publish(A, 'c');
    h.source.publish(B, 'd');
    let mut watcher = h.watcher(set(&[A, B]), with_state(&path));
    let refresher = h.refresher.clone();
    watcher
        .run(async move { refresher.started.notified().await })
        .await
        .expect("stops cleanly");
    assert_eq!(h.refresher.events().len(), 1, "B's refresh never started");
    assert_eq!(h.refresher.finished.load(Ordering::SeqCst), 1, "A's refresh finished");
    let saved = StateFile::new(&path).load().expect("loads").digests;
    assert_eq!(saved.get(&reference(A)), Some(&digest('c')));
    assert_eq!(
        saved.get(&reference(B)),
        Some(&digest('b')),
        "B is retried at the next start"
    );
}

#[tokio::test(start_paused = true)]
async fn run_ticks_at_start_then_every_interval_until_shutdown() {
    let h = Harness::new();
    h.source.publish(A, 'a');
    let config = WatcherConfig {
        interval: Duration::from_secs(60),
        jitter: 0.0,
        ..WatcherConfig::default()
    };
    let mut watcher = h.watcher(set(&[A]), config);
    watcher
        .run(tokio::time::sleep(Duration::from_secs(150)))
        .await
        .expect("stops");
    assert_eq!(h.source.calls_for(A), 3, "at 0 s, 60 s and 120 s");
}

#[rstest]
#[case(0.0)]
#[case(0.1)]
#[case(0.5)]
#[case(7.0)]
fn next_delay_stays_within_the_jitter(#[case] jitter: f64) {
    let config = WatcherConfig {
        interval: Duration::from_secs(100),
        jitter,
        ..WatcherConfig::default()
    };
    let spread = jitter.clamp(0.0, watcher::MAX_JITTER);
    for _ in 0..200 {
        let delay = config.next_delay().as_secs_f64();
        assert!(
            delay >= 100.0 * (1.0 - spread) - 1e-6 && delay <= 100.0 * (1.0 + spread) + 1e-6,
            "{delay}"
        );
    }
}
