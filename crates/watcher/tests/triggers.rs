//! Checks on demand through `Watcher::trigger`, pinned with a slow fake digest source on paused
//! time: a storm for one image costs the check in flight plus one queued, a triggered check of
//! some images leaves the poll schedule alone, a triggered check of all images is the tick, and
//! every pass lands on the status board.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use registry_core::{Digest, ImageReference};
use tokio::sync::oneshot;
use watcher::{
    CheckError, CheckErrorKind, DigestSource, MonitorOnly, TriggerOutcome, WatchSet, Watcher, WatcherConfig,
};

const A: &str = "ghcr.io/org/a:latest";
const B: &str = "ghcr.io/org/b:latest";

fn digest(c: char) -> Digest {
    format!("sha256:{}", c.to_string().repeat(64)).parse().expect("valid")
}

fn reference(image: &str) -> ImageReference {
    image.parse().expect("valid")
}

/// Answers after `delay`, counting calls per image.
#[derive(Debug)]
struct SlowSource {
    delay: Duration,
    answers: Mutex<HashMap<ImageReference, Result<Digest, CheckError>>>,
    calls: Mutex<Vec<ImageReference>>,
}

impl SlowSource {
    fn new(delay: Duration) -> SlowSource {
        SlowSource {
            delay,
            answers: Mutex::new(HashMap::new()),
            calls: Mutex::new(Vec::new()),
        }
    }

    fn answer(&self, image: &str, answer: Result<Digest, CheckError>) {
        self.answers.lock().expect("lock").insert(reference(image), answer);
    }

    fn calls_for(&self, image: &str) -> usize {
        let image = reference(image);
        self.calls.lock().expect("lock").iter().filter(|c| **c == image).count()
    }
}

#[async_trait]
impl DigestSource for SlowSource {
    async fn digest(&self, image: &ImageReference) -> Result<Digest, CheckError> {
        self.calls.lock().expect("lock").push(image.clone());
        tokio::time::sleep(self.delay).await;
        self.answers
            .lock()
            .expect("lock")
            .get(image)
            .cloned()
            .unwrap_or_else(|| Err(CheckError::new(CheckErrorKind::NotFound, "no such tag")))
    }
}

/// A source answering `a...` for A and `b...` for B after `delay`.
fn answering_a_and_b(delay: Duration) -> Arc<SlowSource> {
    let source = Arc::new(SlowSource::new(delay));
    source.answer(A, Ok(digest('a')));
    source.answer(B, Ok(digest('b')));
    source
}

fn watcher(source: &Arc<SlowSource>, interval: Duration) -> Watcher {
    let mut set = WatchSet::new();
    set.add_image(reference(A)).expect("valid");
    set.add_image(reference(B)).expect("valid");
    let config = WatcherConfig {
        interval,
        jitter: 0.0,
        ..WatcherConfig::default()
    };
    Watcher::new(set, source.clone(), Arc::new(MonitorOnly), config).expect("watcher")
}

/// Runs the watcher while `script` runs, then stops it.
async fn run_while<F: std::future::Future<Output = ()>>(watcher: &mut Watcher, script: F) {
    let (tx, rx) = oneshot::channel::<()>();
    let script = async move {
        script.await;
        let _ = tx.send(());
    };
    let (run, ()) = tokio::join!(
        watcher.run(async move {
            let _ = rx.await;
        }),
        script
    );
    run.expect("stops cleanly");
}

#[tokio::test(start_paused = true)]
async fn storm_for_one_image_costs_the_check_in_flight_plus_one_queued() {
    let source = answering_a_and_b(Duration::from_secs(1));
    let mut watcher = watcher(&source, Duration::from_secs(600));
    let trigger = watcher.trigger();
    let a = reference(A);
    run_while(&mut watcher, async {
        tokio::time::sleep(Duration::from_secs(5)).await;
        let (first, _) = trigger.check(&a).expect("watched");
        assert_eq!(first, TriggerOutcome::Queued);
        tokio::time::sleep(Duration::from_millis(500)).await;
        let storm: Vec<_> = (0..50).map(|_| trigger.check(&a).expect("watched")).collect();
        assert_eq!(
            storm[0].0,
            TriggerOutcome::Queued,
            "one may queue behind the one in flight"
        );
        assert!(
            storm[1..]
                .iter()
                .all(|(outcome, _)| *outcome == TriggerOutcome::Coalesced)
        );
        assert!(trigger.wait(storm[49].1).await, "served");
    })
    .await;
    assert_eq!(
        source.calls_for(A),
        3,
        "the first tick, the check in flight, the one queued"
    );
    assert_eq!(source.calls_for(B), 1, "only the first tick");
    let counts = trigger.counts();
    assert_eq!((counts.queued, counts.coalesced), (2, 49));
}

#[tokio::test(start_paused = true)]
async fn triggered_check_of_one_image_leaves_the_poll_schedule_alone() {
    let source = answering_a_and_b(Duration::ZERO);
    let mut watcher = watcher(&source, Duration::from_secs(60));
    let trigger = watcher.trigger();
    run_while(&mut watcher, async {
        tokio::time::sleep(Duration::from_secs(10)).await;
        let (_, ticket) = trigger.check(&reference(A)).expect("watched");
        assert!(trigger.wait(ticket).await);
        tokio::time::sleep(Duration::from_secs(115)).await;
    })
    .await;
    assert_eq!(
        source.calls_for(A),
        4,
        "polls at 0, 60 and 120 s, and the trigger at 10 s"
    );
    assert_eq!(source.calls_for(B), 3, "polls only");
}

#[tokio::test(start_paused = true)]
async fn triggered_check_of_every_image_counts_as_the_tick() {
    let source = answering_a_and_b(Duration::ZERO);
    let mut watcher = watcher(&source, Duration::from_secs(60));
    let trigger = watcher.trigger();
    run_while(&mut watcher, async {
        tokio::time::sleep(Duration::from_secs(10)).await;
        let (_, ticket) = trigger.check_all();
        assert!(trigger.wait(ticket).await);
        tokio::time::sleep(Duration::from_secs(115)).await;
    })
    .await;
    assert_eq!(
        source.calls_for(B),
        3,
        "at 0 s, the trigger at 10 s, then 70 s (not 60 and 120)"
    );
}

#[tokio::test(start_paused = true)]
async fn every_pass_lands_on_the_status_board() {
    let source = Arc::new(SlowSource::new(Duration::from_millis(30)));
    source.answer(A, Ok(digest('a')));
    source.answer(
        B,
        Err(CheckError::new(CheckErrorKind::Unauthorized, "401 for anonymous")),
    );
    let mut watcher = watcher(&source, Duration::from_secs(600));
    let trigger = watcher.trigger();
    let status = watcher.status();
    run_while(&mut watcher, async {
        tokio::time::sleep(Duration::from_secs(1)).await;
        source.answer(A, Ok(digest('c')));
        let (_, ticket) = trigger.check(&reference(A)).expect("watched");
        assert!(trigger.wait(ticket).await);
    })
    .await;
    let images = status.images();
    assert_eq!(images[0].image, reference(A));
    assert_eq!(images[0].last_digest, Some(digest('c')));
    assert_eq!(
        images[0].seen_digest,
        Some(digest('c')),
        "monitor-only refresh succeeds"
    );
    assert_eq!(images[0].checks, 2);
    assert_eq!(images[0].last_result, Some("refreshed"));
    assert!(
        images[0]
            .last_refresh
            .as_ref()
            .is_some_and(|r| r.succeeded && r.old == digest('a'))
    );
    assert_eq!(images[1].last_result, Some("check_failed"));
    assert_eq!(images[1].last_error.as_ref().map(|e| e.kind), Some("unauthorized"));
    assert_eq!(images[1].last_digest, None);

    let metrics = status.metrics();
    let count = |kind: &str| {
        metrics
            .tick_durations
            .iter()
            .find(|(label, _)| *label == kind)
            .map_or(0, |(_, histogram)| histogram.count)
    };
    assert_eq!((count("poll"), count("triggered")), (1, 1));
    assert!(metrics.checks.contains(&("seeded", 1)));
    assert!(metrics.checks.contains(&("refreshed", 1)));
    assert!(metrics.check_errors.contains(&("unauthorized", 1)));
    assert_eq!(metrics.refreshes_succeeded, 1);
    assert!(metrics.last_tick.is_some());
}

#[tokio::test(start_paused = true)]
async fn a_burst_spread_over_the_spacing_costs_two_checks_and_the_second_waits_for_it() {
    let source = Arc::new(SlowSource::new(Duration::from_millis(10)));
    source.answer(A, Ok(digest('a')));
    source.answer(B, Ok(digest('b')));
    let mut watcher = watcher(&source, Duration::from_secs(600));
    let trigger = watcher.trigger();
    let status = watcher.status();
    let a = reference(A);
    let started = tokio::time::Instant::now();
    let mut second_check_at = None;
    run_while(&mut watcher, async {
        tokio::time::sleep(Duration::from_secs(5)).await;
        let mut last = None;
        for _ in 0..10 {
            last = Some(trigger.check(&a).expect("watched").1);
            tokio::time::sleep(Duration::from_millis(90)).await;
        }
        assert!(trigger.wait(last.expect("sent")).await);
        second_check_at = Some(started.elapsed());
    })
    .await;
    assert_eq!(source.calls_for(A), 3, "the first tick, then two for the burst of ten");
    let served = second_check_at.expect("served");
    assert!(
        served >= Duration::from_secs(6) && served < Duration::from_millis(6100),
        "the second check starts one spacing after the first: {served:?}"
    );
    assert_eq!(status.image(&a).expect("watched").checks, 3);
}

/// Answers `before` for the first call, `lagging` for the second (a registry that announced a
/// push before the tag was readable), then `after`.
#[derive(Debug)]
struct LaggingSource {
    calls: Mutex<usize>,
    before: Digest,
    lagging: Result<Digest, CheckError>,
    after: Digest,
}

#[async_trait]
impl DigestSource for LaggingSource {
    async fn digest(&self, _image: &ImageReference) -> Result<Digest, CheckError> {
        let mut calls = self.calls.lock().expect("lock");
        *calls += 1;
        match *calls {
            1 => Ok(self.before.clone()),
            2 => self.lagging.clone(),
            _ => Ok(self.after.clone()),
        }
    }
}

#[rstest::rstest]
#[case::old_digest_then_the_new_one(digest('b'), Ok(digest('a')), digest('b'), "refreshed", 1)]
#[case::tag_half_written_then_the_new_one(
    digest('b'),
    Err(CheckError::new(CheckErrorKind::Server, "500 invalid checksum digest format")),
    digest('b'),
    "refreshed",
    1
)]
// 25, 50, 100, 200, 400 and 800 ms, then the window's end at 2 s.
#[case::claim_that_never_comes_true(digest('f'), Ok(digest('a')), digest('a'), "unchanged", 7)]
#[tokio::test(start_paused = true)]
async fn a_claimed_digest_not_answered_yet_is_checked_again_until_it_shows_or_the_window_ends(
    #[case] claim: Digest,
    #[case] lagging: Result<Digest, CheckError>,
    #[case] after: Digest,
    #[case] expected_result: &str,
    #[case] follow_ups: u64,
) {
    // Call 1: the first tick. Call 2: the triggered check, still lagging. Then the follow-ups,
    // until the claim shows or the window ends.
    let source = Arc::new(LaggingSource {
        calls: Mutex::new(0),
        before: digest('a'),
        lagging,
        after,
    });
    let mut set = WatchSet::new();
    set.add_image(reference(A)).expect("valid");
    let config = WatcherConfig {
        interval: Duration::from_secs(600),
        jitter: 0.0,
        ..WatcherConfig::default()
    };
    let mut watcher = Watcher::new(set, source.clone(), Arc::new(MonitorOnly), config).expect("watcher");
    let trigger = watcher.trigger();
    let status = watcher.status();
    let a = reference(A);
    run_while(&mut watcher, async {
        tokio::time::sleep(Duration::from_secs(5)).await;
        let (_, ticket) = trigger.check_expecting(&a, Some(claim)).expect("watched");
        assert!(trigger.wait(ticket).await);
        tokio::time::sleep(Duration::from_secs(5)).await;
    })
    .await;
    assert_eq!(*source.calls.lock().expect("lock"), 2 + follow_ups as usize);
    assert_eq!(trigger.counts().follow_ups, follow_ups);
    assert_eq!(status.image(&a).expect("watched").last_result, Some(expected_result));
}

#[tokio::test(start_paused = true)]
async fn a_replaced_watch_set_is_followed_between_passes_and_new_images_are_seeded_at_once() {
    let source = answering_a_and_b(Duration::ZERO);
    let mut watcher = watcher(&source, Duration::from_secs(600));
    let trigger = watcher.trigger();
    let status = watcher.status();
    let mut only_a = WatchSet::new();
    only_a.add_image(reference(A)).expect("valid");
    let (updates, receiver) = tokio::sync::watch::channel(only_a.clone());
    watcher.follow_watch_set(receiver);
    run_while(&mut watcher, async {
        tokio::time::sleep(Duration::from_secs(1)).await;
        assert!(trigger.check(&reference(B)).is_err(), "B left the set");
        assert_eq!(status.images().len(), 1);
        let mut both = only_a.clone();
        both.add_image(reference(B)).expect("valid");
        updates.send(both).expect("watcher follows");
        tokio::time::sleep(Duration::from_secs(1)).await;
        let images = status.images();
        assert_eq!(images.len(), 2, "B is back");
        assert_eq!(images[1].seen_digest, Some(digest('b')), "and was seeded at once");
        // The first tick ran on the set waiting in the channel ({A}), so B was checked once:
        // when it came back. Counted before the next request, whose check may or may not run
        // before the shutdown.
        assert_eq!(source.calls_for(B), 1);
        assert_eq!(source.calls_for(A), 1, "the ticks' schedule is untouched");
        assert!(trigger.check(&reference(B)).is_ok(), "B may be asked for again");
    })
    .await;
}

#[tokio::test(start_paused = true)]
async fn a_reload_takes_new_settings_live_and_keeps_what_was_seen() {
    let first = answering_a_and_b(Duration::ZERO);
    let second = answering_a_and_b(Duration::ZERO);
    let mut watcher = watcher(&first, Duration::from_secs(600));
    let status = watcher.status();
    let reloader = watcher.reloader();
    run_while(&mut watcher, async {
        tokio::time::sleep(Duration::from_secs(5)).await;
        assert_eq!(first.calls_for(A), 1, "the first tick");
        reloader.reload(watcher::Reload {
            source: Some(second.clone()),
            refresher: None,
            interval: Duration::from_secs(10),
            jitter: 0.0,
            concurrency: 4,
        });
        // The poll scheduled for 600 s comes 10 s after the reload instead.
        tokio::time::sleep(Duration::from_secs(11)).await;
    })
    .await;
    assert_eq!(first.calls_for(A), 1, "the old source is no longer asked");
    assert_eq!(second.calls_for(A), 1, "the new interval and source took effect");
    let a = status.image(&reference(A)).expect("watched");
    assert_eq!(a.checks, 2, "A keeps its state across the reload");
    assert_eq!(a.last_result, Some("unchanged"), "what was seen is kept: no re-seed");
    assert_eq!(watcher.config().interval, Duration::from_secs(10));
}
