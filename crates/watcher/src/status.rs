//! What the watcher knows right now, for operators: per image, the digest the registry last
//! answered, the digest last acted on, when it was last checked, its last error and its last
//! refresh; and counters (checks by result, errors by kind, refreshes by result, tick durations)
//! for metrics.
//!
//! It owns no decisions: the poll loop writes here after each image and each tick, readers (the
//! HTTP API) take copies with [`StatusBoard::images`] and [`StatusBoard::metrics`]. No lock is
//! held across an await, and none while the other is taken.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime};

use registry_core::{Digest, ImageReference};

use crate::report::ImageStatus;
use crate::source::CheckErrorKind;
use crate::watch_set::{WatchSet, WatchedImage};

/// Every [`ImageStatus`] label, in a fixed order (the `result` label of check counters).
pub const CHECK_RESULTS: [&str; 8] = ImageStatus::LABELS;

/// Upper bounds (seconds) of the tick-duration histogram's buckets; `+Inf` is implied.
pub const TICK_BUCKETS: [f64; 14] = [
    0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0,
];

/// Why a pass over images ran.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum TickKind {
    /// The interval came round (or [`Watcher::tick`](crate::Watcher::tick) was called).
    Poll,
    /// Something asked for it now: a webhook or `POST /check` through a
    /// [`TriggerHandle`](crate::TriggerHandle).
    Triggered,
}

impl TickKind {
    pub const ALL: [TickKind; 2] = [TickKind::Poll, TickKind::Triggered];

    /// A stable snake_case name for logs and metric labels.
    pub fn as_str(self) -> &'static str {
        match self {
            TickKind::Poll => "poll",
            TickKind::Triggered => "triggered",
        }
    }

    fn index(self) -> usize {
        match self {
            TickKind::Poll => 0,
            TickKind::Triggered => 1,
        }
    }
}

/// An image's last error: a failed check (its kind) or a failed refresh (kind `refresh`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ErrorRecord {
    pub at: SystemTime,
    /// A [`CheckErrorKind`] name, or `refresh`.
    pub kind: &'static str,
    pub message: String,
}

/// An image's last refresh attempt.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RefreshRecord {
    pub at: SystemTime,
    pub old: Digest,
    pub new: Digest,
    pub succeeded: bool,
    /// The refresher's outcome summary, or its error.
    pub detail: String,
}

/// What is known about one watched image.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ImageState {
    pub image: ImageReference,
    pub runtime: Option<String>,
    /// The digest last acted on (seeded or refreshed): what the state file holds.
    pub seen_digest: Option<Digest>,
    /// The digest the registry answered at the last successful check.
    pub last_digest: Option<Digest>,
    /// When the registry was last asked (successfully or not).
    pub last_check: Option<SystemTime>,
    /// The [`ImageStatus`] label of the last pass that reached this image.
    pub last_result: Option<&'static str>,
    /// Kept after a later success, with its time: the last error, not the current state.
    pub last_error: Option<ErrorRecord>,
    pub last_refresh: Option<RefreshRecord>,
    /// Registry checks made for this image since start.
    pub checks: u64,
}

/// One histogram, as cumulative bucket counts (one per [`TICK_BUCKETS`] bound, then `+Inf`).
#[derive(Clone, Debug, PartialEq)]
pub struct HistogramSnapshot {
    pub bounds: &'static [f64],
    /// Cumulative counts: `cumulative[i]` observations were ≤ `bounds[i]`; the last is `+Inf`.
    pub cumulative: Vec<u64>,
    pub count: u64,
    /// Sum of observations, in seconds.
    pub sum: f64,
}

/// The watcher's counters at one instant.
#[derive(Clone, Debug, PartialEq)]
pub struct WatcherMetrics {
    /// Per [`CHECK_RESULTS`] label, in that order.
    pub checks: Vec<(&'static str, u64)>,
    /// Failed checks per [`CheckErrorKind`], every kind present.
    pub check_errors: Vec<(&'static str, u64)>,
    pub refreshes_succeeded: u64,
    pub refreshes_failed: u64,
    /// Tick durations per [`TickKind`].
    pub tick_durations: Vec<(&'static str, HistogramSnapshot)>,
    /// When the last pass (of either kind) finished.
    pub last_tick: Option<SystemTime>,
    pub images: usize,
}

#[derive(Debug, Default, Clone)]
struct Histogram {
    buckets: [u64; TICK_BUCKETS.len() + 1],
    count: u64,
    sum: Duration,
}

impl Histogram {
    fn observe(&mut self, value: Duration) {
        let seconds = value.as_secs_f64();
        let slot = TICK_BUCKETS
            .iter()
            .position(|bound| seconds <= *bound)
            .unwrap_or(TICK_BUCKETS.len());
        self.buckets[slot] += 1;
        self.count += 1;
        self.sum += value;
    }

    fn snapshot(&self) -> HistogramSnapshot {
        let mut running = 0;
        let cumulative = self
            .buckets
            .iter()
            .map(|count| {
                running += count;
                running
            })
            .collect();
        HistogramSnapshot {
            bounds: &TICK_BUCKETS,
            cumulative,
            count: self.count,
            sum: self.sum.as_secs_f64(),
        }
    }
}

#[derive(Debug, Default)]
struct Counters {
    checks: [u64; CHECK_RESULTS.len()],
    check_errors: [u64; CheckErrorKind::ALL.len()],
    refreshes_succeeded: u64,
    refreshes_failed: u64,
    ticks: [Histogram; TickKind::ALL.len()],
    last_tick: Option<SystemTime>,
}

#[derive(Debug)]
struct Board {
    images: Mutex<Images>,
    counters: Mutex<Counters>,
}

/// Every image's state, in watch-set order, and each image's index in it (a tick records
/// every image, so finding one must not scan the board). One lock for both: a reload swaps
/// them together.
#[derive(Debug)]
struct Images {
    positions: HashMap<ImageReference, usize>,
    states: Vec<ImageState>,
}

impl Images {
    fn new(set: &WatchSet, mut state_of: impl FnMut(&WatchedImage) -> ImageState) -> Images {
        let states: Vec<ImageState> = set.images().iter().map(&mut state_of).collect();
        Images {
            positions: states
                .iter()
                .enumerate()
                .map(|(index, state)| (state.image.clone(), index))
                .collect(),
            states,
        }
    }
}

fn fresh_state(image: &WatchedImage, seen: Option<Digest>) -> ImageState {
    ImageState {
        image: image.reference().clone(),
        runtime: image.runtime().map(str::to_owned),
        seen_digest: seen,
        last_digest: None,
        last_check: None,
        last_result: None,
        last_error: None,
        last_refresh: None,
        checks: 0,
    }
}

/// Shared, cheap to clone: the watcher writes, any number of readers copy.
#[derive(Clone, Debug)]
pub struct StatusBoard {
    board: Arc<Board>,
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // Every write is a plain field update: a panic elsewhere cannot leave it half done.
    mutex.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl StatusBoard {
    /// A board for `set`, with the digests already seen (from the state file).
    pub fn new(set: &WatchSet, seen: impl Fn(&ImageReference) -> Option<Digest>) -> StatusBoard {
        let images = Images::new(set, |image| fresh_state(image, seen(image.reference())));
        StatusBoard {
            board: Arc::new(Board {
                images: Mutex::new(images),
                counters: Mutex::new(Counters::default()),
            }),
        }
    }

    /// The board for a new watch set: images still watched keep their state (and place in
    /// the new order), new ones start fresh with the digest already seen, if any.
    pub(crate) fn reindex(&self, set: &WatchSet, seen: impl Fn(&ImageReference) -> Option<Digest>) {
        let mut images = lock(&self.board.images);
        let mut old = std::mem::replace(
            &mut *images,
            Images {
                positions: HashMap::new(),
                states: Vec::new(),
            },
        );
        *images = Images::new(set, |image| match old.positions.get(image.reference()) {
            Some(&index) => {
                let mut state = std::mem::replace(&mut old.states[index], fresh_state(image, None));
                state.runtime = image.runtime().map(str::to_owned);
                state
            }
            None => fresh_state(image, seen(image.reference())),
        });
    }

    /// A copy of every image's state, in watch-set order.
    pub fn images(&self) -> Vec<ImageState> {
        lock(&self.board.images).states.clone()
    }

    /// A copy of one image's state.
    pub fn image(&self, image: &ImageReference) -> Option<ImageState> {
        let images = lock(&self.board.images);
        let index = *images.positions.get(image)?;
        images.states.get(index).cloned()
    }

    /// The counters now.
    pub fn metrics(&self) -> WatcherMetrics {
        let images = lock(&self.board.images).states.len();
        let counters = lock(&self.board.counters);
        WatcherMetrics {
            checks: CHECK_RESULTS.iter().copied().zip(counters.checks).collect(),
            check_errors: CheckErrorKind::ALL
                .iter()
                .map(|kind| kind.as_str())
                .zip(counters.check_errors)
                .collect(),
            refreshes_succeeded: counters.refreshes_succeeded,
            refreshes_failed: counters.refreshes_failed,
            tick_durations: TickKind::ALL
                .iter()
                .map(|kind| (kind.as_str(), counters.ticks[kind.index()].snapshot()))
                .collect(),
            last_tick: counters.last_tick,
            images,
        }
    }

    /// Notes what one pass did to one image, at `at`.
    pub(crate) fn record(&self, image: &ImageReference, status: &ImageStatus, at: SystemTime) {
        {
            let mut counters = lock(&self.board.counters);
            counters.checks[status.index()] += 1;
            match status {
                ImageStatus::CheckFailed { error } => {
                    if let Some(slot) = CheckErrorKind::ALL.iter().position(|kind| *kind == error.kind()) {
                        counters.check_errors[slot] += 1;
                    }
                }
                ImageStatus::Refreshed { .. } => counters.refreshes_succeeded += 1,
                ImageStatus::RefreshFailed { .. } => counters.refreshes_failed += 1,
                _ => {}
            }
        }
        let mut images = lock(&self.board.images);
        let Some(&index) = images.positions.get(image) else {
            return;
        };
        let state = &mut images.states[index];
        state.last_result = Some(status.label());
        let checked = !matches!(status, ImageStatus::BackedOff { .. } | ImageStatus::Interrupted);
        if checked {
            state.last_check = Some(at);
            state.checks += 1;
        }
        match status {
            ImageStatus::Seeded { digest } => {
                state.last_digest = Some(digest.clone());
                state.seen_digest = Some(digest.clone());
            }
            ImageStatus::Unchanged { digest } => state.last_digest = Some(digest.clone()),
            ImageStatus::Refreshed { old, new, outcome } => {
                state.last_digest = Some(new.clone());
                state.seen_digest = Some(new.clone());
                state.last_refresh = Some(RefreshRecord {
                    at,
                    old: old.clone(),
                    new: new.clone(),
                    succeeded: true,
                    detail: outcome.summary().to_owned(),
                });
            }
            ImageStatus::RefreshFailed { old, new, error } => {
                state.last_digest = Some(new.clone());
                state.last_refresh = Some(RefreshRecord {
                    at,
                    old: old.clone(),
                    new: new.clone(),
                    succeeded: false,
                    detail: error.message().to_owned(),
                });
                state.last_error = Some(ErrorRecord {
                    at,
                    kind: "refresh",
                    message: error.message().to_owned(),
                });
            }
            ImageStatus::RefreshDeferred { new, .. } => state.last_digest = Some(new.clone()),
            ImageStatus::CheckFailed { error } => {
                state.last_error = Some(ErrorRecord {
                    at,
                    kind: error.kind().as_str(),
                    message: error.message().to_owned(),
                });
            }
            ImageStatus::BackedOff { .. } | ImageStatus::Interrupted => {}
        }
    }

    /// Notes a finished pass.
    pub(crate) fn record_tick(&self, kind: TickKind, duration: Duration, at: SystemTime) {
        let mut counters = lock(&self.board.counters);
        counters.ticks[kind.index()].observe(duration);
        counters.last_tick = Some(at);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::refresher::{RefreshError, RefreshOutcome};
    use crate::source::CheckError;

    fn digest(c: char) -> Digest {
        format!("sha256:{}", c.to_string().repeat(64)).parse().expect("valid")
    }

    fn board() -> (StatusBoard, ImageReference) {
        let image: ImageReference = "ghcr.io/a/b:latest".parse().expect("valid");
        let mut set = WatchSet::new();
        set.add_image(image.clone()).expect("valid");
        (StatusBoard::new(&set, |_| Some(digest('a'))), image)
    }

    #[test]
    fn refresh_then_check_error_keeps_both_records_and_counts_each() {
        let (board, image) = board();
        let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(100);
        let t1 = t0 + Duration::from_secs(60);
        board.record(
            &image,
            &ImageStatus::Refreshed {
                old: digest('a'),
                new: digest('b'),
                outcome: RefreshOutcome::new("done"),
            },
            t0,
        );
        board.record(
            &image,
            &ImageStatus::CheckFailed {
                error: CheckError::new(CheckErrorKind::RateLimited, "429"),
            },
            t1,
        );
        let state = board.image(&image).expect("watched");
        assert_eq!(state.seen_digest, Some(digest('b')));
        assert_eq!(state.last_digest, Some(digest('b')));
        assert_eq!(state.last_check, Some(t1));
        assert_eq!(state.last_result, Some("check_failed"));
        assert_eq!(state.checks, 2);
        let refresh = state.last_refresh.expect("refreshed");
        assert!(refresh.succeeded);
        assert_eq!(refresh.at, t0);
        assert_eq!(state.last_error.expect("failed").kind, "rate_limited");

        let metrics = board.metrics();
        assert!(metrics.checks.contains(&("refreshed", 1)));
        assert!(metrics.checks.contains(&("check_failed", 1)));
        assert!(metrics.check_errors.contains(&("rate_limited", 1)));
        assert_eq!((metrics.refreshes_succeeded, metrics.refreshes_failed), (1, 0));
    }

    #[test]
    fn failed_refresh_keeps_the_seen_digest_and_records_a_refresh_error() {
        let (board, image) = board();
        let at = SystemTime::UNIX_EPOCH;
        board.record(
            &image,
            &ImageStatus::RefreshFailed {
                old: digest('a'),
                new: digest('c'),
                error: RefreshError::new("engine down"),
            },
            at,
        );
        let state = board.image(&image).expect("watched");
        assert_eq!(state.seen_digest, Some(digest('a')));
        assert_eq!(state.last_digest, Some(digest('c')));
        assert_eq!(state.last_error.expect("error").kind, "refresh");
        assert_eq!(board.metrics().refreshes_failed, 1);
    }

    #[test]
    fn backed_off_is_not_a_check() {
        let (board, image) = board();
        board.record(
            &image,
            &ImageStatus::BackedOff {
                remaining: Duration::from_secs(5),
            },
            SystemTime::UNIX_EPOCH,
        );
        let state = board.image(&image).expect("watched");
        assert_eq!((state.checks, state.last_check), (0, None));
        assert_eq!(state.last_result, Some("backed_off"));
    }

    #[test]
    fn tick_histogram_is_cumulative_and_ends_at_the_count() {
        let (board, _) = board();
        for millis in [5, 40, 40, 700_000] {
            board.record_tick(TickKind::Poll, Duration::from_millis(millis), SystemTime::UNIX_EPOCH);
        }
        let metrics = board.metrics();
        let (label, poll) = &metrics.tick_durations[0];
        assert_eq!(*label, "poll");
        assert_eq!(poll.count, 4);
        assert_eq!(poll.cumulative[0], 1, "5 ms <= 10 ms");
        assert_eq!(poll.cumulative[2], 3, "40 ms <= 50 ms");
        assert_eq!(
            poll.cumulative[TICK_BUCKETS.len() - 1],
            3,
            "700 s is above the last bound"
        );
        assert_eq!(poll.cumulative.last(), Some(&4));
        assert!((poll.sum - 700.085).abs() < 1e-9);
        assert_eq!(metrics.tick_durations[1].1.count, 0);
    }
}
