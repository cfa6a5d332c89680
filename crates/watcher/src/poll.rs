//! The poll loop. [`Watcher::tick`] checks every watched image once (concurrently, bounded),
//! observes each answer as it arrives, seeds first observations, calls the refresher once per
//! moved digest (one at a time) and keeps the old digest when a refresh fails, so the next tick
//! retries. [`Watcher::run`] ticks at start and then every interval (with jitter) until its
//! shutdown future resolves; an in-flight refresh finishes first and the state is saved last.
//! It serves the checks asked for through its [`TriggerHandle`] (webhooks, `POST /check`) at
//! once, each batch a round of its own beside the poll in flight, and records every outcome on
//! its [`StatusBoard`].
//!
//! Between a move and its refresh stand two optional checks: the cooldown (a new digest must
//! have been the tag's digest for a while, timed from when it was first seen and persisted) and
//! the trust [`Gate`] (a signature over the exact digest). A digest held by either is not
//! refreshed to and not recorded as applied; it is checked again, sooner than the interval:
//! when its cooldown ends, and 5 s, 10 s, 20 s ... (up to the interval) after the gate held it.
//!
//! With a [`StateStore`] shared by replicas, the seen digests are read again before each pass
//! and only the replica the store names leader refreshes; the others record the moves they see
//! and stand by. A replica that becomes leader checks every image at once.

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime};

use registry_core::{Digest, ImageReference, RegistryHost};
use tokio::sync::{mpsc, watch};
use tracing::{debug, error, info, warn};

use crate::backoff::{BackoffPolicy, Backoffs};
use crate::gate::{Gate, GateVerdict};
use crate::refresher::{RefreshEvent, Refresher};
use crate::report::{ImageReport, ImageStatus, TickReport};
use crate::retry::RefreshRetries;
use crate::source::{CheckError, CheckErrorKind, DigestSource};
use crate::state::{FirstSeen, SetAside, StateFile};
use crate::status::{RetryRecord, StatusBoard, TickKind};
use crate::store::{Leadership, StateStore, StoreError};
use crate::trigger::{Batch, TriggerHandle};
use crate::watch_set::{WatchSet, WatchedImage};

/// The largest jitter fraction honoured: more would let two ticks run back to back.
pub const MAX_JITTER: f64 = 0.5;

/// The first wait before the gate is asked again about a digest it held; each further hold
/// doubles it, up to the poll interval.
pub const FIRST_RECHECK: Duration = Duration::from_secs(5);

/// How a watcher polls.
#[derive(Clone, Debug)]
pub struct WatcherConfig {
    /// Time between the starts of two ticks, before jitter.
    pub interval: Duration,
    /// Jitter as a fraction of the interval: 0.1 spreads ticks over ±10 % (at most ±50 %).
    pub jitter: f64,
    /// How many digest checks run at once.
    pub concurrency: usize,
    /// Where seen digests persist across restarts; `None` keeps them in memory only.
    pub state_file: Option<PathBuf>,
    pub backoff: BackoffPolicy,
    /// The least time between the starts of two triggered checks of one image: requests in
    /// between wait for it (coalesced into one check), so a burst of webhooks costs two checks.
    pub trigger_spacing: Duration,
}

impl Default for WatcherConfig {
    fn default() -> WatcherConfig {
        WatcherConfig {
            interval: Duration::from_secs(5 * 60),
            jitter: 0.1,
            concurrency: 8,
            state_file: None,
            backoff: BackoffPolicy::default(),
            trigger_spacing: Duration::from_secs(1),
        }
    }
}

impl WatcherConfig {
    /// The wait before the next tick: the interval, moved by up to ±`jitter` of itself.
    pub fn next_delay(&self) -> Duration {
        let jitter = self.jitter.clamp(0.0, MAX_JITTER);
        let factor = 1.0 + jitter * (fastrand::f64() * 2.0 - 1.0);
        self.interval.mul_f64(factor)
    }
}

/// New settings for a running watcher (a reloaded config file): those that may change live
/// and, when they change, the source and the refresher. What was seen, the back-offs and the
/// counters are kept. The watch set is not among them: it changes through
/// [`Watcher::follow_watch_set`] (or [`Watcher::replace_watch_set`]), whoever changes it.
#[derive(Debug)]
pub struct Reload {
    pub source: Option<Arc<dyn DigestSource>>,
    pub refresher: Option<Arc<dyn Refresher>>,
    pub interval: Duration,
    pub jitter: f64,
    pub concurrency: usize,
}

/// Hands reloads to [`Watcher::run`]; get one with [`Watcher::reloader`]. Cheap to clone.
#[derive(Clone, Debug)]
pub struct Reloader(mpsc::UnboundedSender<Reload>);

impl Reloader {
    /// Queues `reload` for the running loop, which applies it between two answers.
    pub fn reload(&self, reload: Reload) {
        let _ = self.0.send(reload);
    }
}

/// The watcher: a watch set, a digest source, a refresher and what it has seen.
#[derive(Debug)]
pub struct Watcher {
    /// Shared with the trigger queue: one copy of the set, however many images it holds.
    set: Arc<WatchSet>,
    source: Arc<dyn DigestSource>,
    refresher: Arc<dyn Refresher>,
    config: WatcherConfig,
    state: Option<Arc<dyn StateStore>>,
    /// Refreshes done whose record in a shared store failed: written before the next pass.
    unrecorded: HashMap<ImageReference, Digest>,
    state_set_aside: Option<SetAside>,
    seen: HashMap<ImageReference, Digest>,
    dirty: bool,
    backoffs: Mutex<Backoffs>,
    retries: RefreshRetries,
    status: StatusBoard,
    triggers: TriggerHandle,
    /// Whole new watch sets, from whoever changes the set at run time (see
    /// [`Watcher::follow_watch_set`]).
    set_updates: Option<watch::Receiver<WatchSet>>,
    /// Each pass's report, for whoever tells people (see [`Watcher::send_reports_to`]).
    reports: Option<mpsc::Sender<TickReport>>,
    gate: Option<Arc<dyn Gate>>,
    cooldown: Duration,
    /// Per image, the moved-to digest under cooldown and when it was first seen (persisted).
    first_seen: HashMap<ImageReference, FirstSeen>,
    /// Per image, the digest the gate holds, how often it held it, and when to ask again.
    holds: HashMap<ImageReference, Hold>,
    /// Settings to take while running (see [`Watcher::reloader`]).
    reloader: Reloader,
    reloads: Option<mpsc::UnboundedReceiver<Reload>>,
}

#[derive(Debug)]
struct Hold {
    digest: Digest,
    holds: u32,
    reason: String,
    next: tokio::time::Instant,
}

/// What a round's check task reports.
enum Event {
    /// The answer for the image at this position of the round.
    Checked(u64, usize, Result<Digest, CheckError>),
    /// The round's source call returned (or its task ended): what is still missing never comes.
    Finished(u64),
}

type Events = mpsc::UnboundedSender<Event>;

/// Sends [`Event::Finished`] when the check task ends, however it ends.
struct FinishOnDrop(Events, u64);

impl Drop for FinishOnDrop {
    fn drop(&mut self) {
        let _ = self.0.send(Event::Finished(self.1));
    }
}

/// Aborts a round's check task when the round is dropped (a shutdown abandons it).
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// One host's images in a round, for its back-off decision once they are all answered.
#[derive(Default)]
struct HostProgress {
    positions: Vec<usize>,
    left: usize,
}

/// One set of checks in flight: a poll of the watch set, or a triggered batch. Its answers are
/// observed as they arrive, in whatever order the hosts give them; its report lists the
/// images in the order they were given.
struct Round {
    kind: TickKind,
    /// The trigger requests it serves, when triggered.
    batch: Option<Batch>,
    images: Vec<WatchedImage>,
    reports: Vec<Option<ImageStatus>>,
    /// Each checked image's outcome, for the back-off.
    outcomes: Vec<Option<Result<(), CheckError>>>,
    hosts: HashMap<RegistryHost, HostProgress>,
    outstanding: usize,
    started_at: SystemTime,
    started: tokio::time::Instant,
    _checks: Option<AbortOnDrop>,
}

impl Round {
    /// Whether this round counts as the poll tick (a poll, or a triggered check of all images).
    fn is_full(&self) -> bool {
        self.kind == TickKind::Poll || self.batch.as_ref().is_some_and(|batch| batch.all)
    }
}

/// A round that finished: what it did, and whether it counted as the poll tick.
struct Finished {
    report: TickReport,
    full: bool,
    poll: bool,
}

impl Watcher {
    /// Builds a watcher, loading the state file if one is configured. A corrupt state file is
    /// renamed aside and reported (see [`Watcher::state_set_aside`]); a path that is not a
    /// regular file, an unreadable or oversized file, or one that cannot be moved is an error.
    pub fn new(
        set: WatchSet,
        source: Arc<dyn DigestSource>,
        refresher: Arc<dyn Refresher>,
        config: WatcherConfig,
    ) -> Result<Watcher, StoreError> {
        let watched: Vec<ImageReference> = set.images().iter().map(|image| image.reference().clone()).collect();
        let state = config
            .state_file
            .clone()
            .map(|path| StateFile::new(path).watching(watched));
        let loaded = match &state {
            Some(file) => Some(file.load()?),
            None => None,
        };
        let state = state.map(|file| Arc::new(file) as Arc<dyn StateStore>);
        Ok(Watcher::build(set, source, refresher, config, state, loaded))
    }

    /// Like [`Watcher::new`], with seen digests in `store` (`config.state_file` is ignored).
    pub async fn with_store(
        set: WatchSet,
        source: Arc<dyn DigestSource>,
        refresher: Arc<dyn Refresher>,
        config: WatcherConfig,
        store: Arc<dyn StateStore>,
    ) -> Result<Watcher, StoreError> {
        let loaded = store.load().await?;
        Ok(Watcher::build(
            set,
            source,
            refresher,
            config,
            Some(store),
            Some(loaded),
        ))
    }

    fn build(
        set: WatchSet,
        source: Arc<dyn DigestSource>,
        refresher: Arc<dyn Refresher>,
        config: WatcherConfig,
        state: Option<Arc<dyn StateStore>>,
        loaded: Option<crate::state::LoadedState>,
    ) -> Watcher {
        let mut seen = HashMap::new();
        let mut first_seen = HashMap::new();
        let mut state_set_aside = None;
        if let (Some(store), Some(loaded)) = (&state, loaded) {
            for warning in &loaded.warnings {
                warn!(path = %store.location(), "state file: {warning}");
            }
            if let Some(aside) = &loaded.set_aside {
                error!(
                    path = %store.location(),
                    moved_to = %aside.moved_to.display(),
                    reason = %aside.reason,
                    "state file unusable; renamed aside, starting from an empty state"
                );
            } else {
                info!(path = %store.location(), images = loaded.digests.len(), "state loaded");
            }
            seen = loaded.digests;
            first_seen = loaded.first_seen;
            state_set_aside = loaded.set_aside;
        }
        let status = StatusBoard::new(&set, |image| seen.get(image).cloned());
        let set = Arc::new(set);
        let (reloader, reloads) = mpsc::unbounded_channel();
        Watcher {
            reloader: Reloader(reloader),
            reloads: Some(reloads),
            backoffs: Mutex::new(Backoffs::new(config.backoff.clone())),
            retries: RefreshRetries::default(),
            status,
            triggers: TriggerHandle::new(set.clone(), config.trigger_spacing),
            set,
            source,
            refresher,
            config,
            state,
            unrecorded: HashMap::new(),
            state_set_aside,
            seen,
            dirty: false,
            set_updates: None,
            reports: None,
            gate: None,
            cooldown: Duration::ZERO,
            first_seen,
            holds: HashMap::new(),
        }
    }

    /// Every moved digest must pass `gate` before it is refreshed to.
    pub fn with_gate(mut self, gate: Arc<dyn Gate>) -> Watcher {
        self.gate = Some(gate);
        self
    }

    /// A moved digest is refreshed to only once it has been the tag's digest for `cooldown`,
    /// timed from when this watcher (or an earlier run with the same state file) first saw it.
    pub fn with_cooldown(mut self, cooldown: Duration) -> Watcher {
        self.cooldown = cooldown;
        self
    }

    /// Sends a copy of every pass's report to `reports` once the pass is done. A full channel
    /// drops the report (with a warning) rather than slow the loop down.
    pub fn send_reports_to(&mut self, reports: mpsc::Sender<TickReport>) {
        self.reports = Some(reports);
    }

    /// From now on [`Watcher::run`] takes each set sent on `updates` as its new watch set,
    /// between two answers (rounds in flight finish with the images they started with; only
    /// the latest set counts).
    /// The set the channel holds when `run` starts is applied first. When every sender is
    /// gone, the last set stays.
    pub fn follow_watch_set(&mut self, mut updates: watch::Receiver<WatchSet>) {
        updates.mark_changed();
        self.set_updates = Some(updates);
    }

    /// Replaces the watch set: images that stay keep their digests and status, new ones are
    /// checked at the next pass (a first sight seeds), the others are no longer checked (their
    /// seen digests stay, so one that comes back is not re-seeded over a missed move). Answers
    /// the images added.
    pub fn replace_watch_set(&mut self, set: WatchSet) -> Vec<ImageReference> {
        let added: Vec<ImageReference> = set
            .images()
            .iter()
            .filter(|image| self.set.get(image.reference()).is_none())
            .map(|image| image.reference().clone())
            .collect();
        let removed = self
            .set
            .images()
            .iter()
            .filter(|image| set.get(image.reference()).is_none())
            .count();
        if added.is_empty() && removed == 0 && set == *self.set {
            return added;
        }
        for image in self.set.images() {
            if set.get(image.reference()).is_none() {
                self.retries.succeeded(image.reference());
            }
        }
        self.status.replace_set(&set, |image| self.seen.get(image).cloned());
        info!(images = set.len(), added = added.len(), removed, "watch set changed");
        let set = Arc::new(set);
        self.triggers.replace_set(set.clone());
        self.set = set;
        added
    }

    pub fn watch_set(&self) -> &WatchSet {
        &self.set
    }

    pub fn config(&self) -> &WatcherConfig {
        &self.config
    }

    /// The digest last seen (and, after a move, successfully refreshed) for `image`.
    pub fn seen(&self, image: &ImageReference) -> Option<&Digest> {
        self.seen.get(image)
    }

    /// The state file that was unusable at start and where it was moved, if that happened.
    pub fn state_set_aside(&self) -> Option<&SetAside> {
        self.state_set_aside.as_ref()
    }

    /// Asks [`Watcher::run`] for checks now, from anywhere (requests coalesce per image).
    pub fn trigger(&self) -> TriggerHandle {
        self.triggers.clone()
    }

    /// Applies new settings to [`Watcher::run`] while it runs (see [`Reload`]).
    pub fn reloader(&self) -> Reloader {
        self.reloader.clone()
    }

    /// Takes `reload` now: rounds in flight finish with the source they started with. Answers
    /// whether the interval changed.
    pub fn apply_reload(&mut self, reload: Reload) -> bool {
        let Reload {
            source,
            refresher,
            interval,
            jitter,
            concurrency,
        } = reload;
        if let Some(source) = source {
            self.source = source;
        }
        if let Some(refresher) = refresher {
            self.refresher = refresher;
        }
        let interval_changed = self.config.interval != interval;
        self.config.interval = interval;
        self.config.jitter = jitter;
        self.config.concurrency = concurrency.max(1);
        info!(
            interval_secs = interval.as_secs(),
            concurrency,
            refresher = self.refresher.name(),
            "settings reloaded"
        );
        interval_changed
    }

    /// What is known per image, and the counters, as the loop goes.
    pub fn status(&self) -> StatusBoard {
        self.status.clone()
    }

    /// Checks every image once, refreshes moved ones and saves the state if it changed.
    pub async fn tick(&mut self) -> TickReport {
        let images = self.set.images().to_vec();
        self.once(images, TickKind::Poll).await
    }

    /// Like [`Watcher::tick`] for some images only (references outside the watch set are
    /// skipped): what a triggered check does.
    pub async fn check_images(&mut self, images: &[ImageReference]) -> TickReport {
        let images = self.watched(images);
        self.once(images, TickKind::Triggered).await
    }

    /// One round, driven to its end.
    async fn once(&mut self, images: Vec<WatchedImage>, kind: TickKind) -> TickReport {
        let (events, mut received) = mpsc::unbounded_channel();
        let mut rounds = HashMap::new();
        let round = self.start_round(0, images, kind, None, &events).await;
        rounds.insert(0, round);
        loop {
            if let Some(finished) = self.finish_if_done(&mut rounds, 0).await {
                return finished.report;
            }
            match received.recv().await {
                Some(event) => {
                    self.on_event(event, &mut rounds).await;
                }
                None => unreachable!("the sender is held here"),
            }
        }
    }

    /// The watched images named, in the order named, each once.
    fn watched(&self, references: &[ImageReference]) -> Vec<WatchedImage> {
        let mut taken: HashSet<&ImageReference> = HashSet::new();
        let mut images: Vec<WatchedImage> = Vec::new();
        for reference in references {
            if let Some(image) = self.set.get(reference)
                && taken.insert(image.reference())
            {
                images.push(image.clone());
            }
        }
        images
    }

    /// Ticks now, then every interval (with jitter), until `shutdown` resolves, and serves what
    /// is asked through [`Watcher::trigger`] at once, even while a tick is in flight: each
    /// request becomes a round of its own, checked beside the rounds already running, so an
    /// on-demand check never waits for a slow host of the poll. A triggered check of some
    /// images leaves the poll schedule alone; a triggered check of all images counts as the
    /// tick. A shutdown lets a refresh in flight finish, abandons the checks still in flight
    /// and starts no other; the state is saved before returning.
    pub async fn run<F: Future<Output = ()>>(&mut self, shutdown: F) -> Result<(), StoreError> {
        let mut shutdown = std::pin::pin!(shutdown);
        let triggers = self.triggers.clone();
        triggers.set_running(true);
        info!(
            images = self.set.len(),
            interval_secs = self.config.interval.as_secs(),
            refresher = self.refresher.name(),
            "watching"
        );
        let mut leadership = self.state.as_ref().and_then(|store| store.leadership_changes());
        // Became leader while a poll was in flight: poll again once it ends.
        let mut poll_again = false;
        let (events, mut received) = mpsc::unbounded_channel();
        let mut reloads = self.reloads.take();
        let mut rounds: HashMap<u64, Round> = HashMap::new();
        let mut next_id: u64 = 0;
        // When the next poll starts; `None` while a poll is in flight.
        let mut next_poll = Some(tokio::time::Instant::now());
        // When requests held back by the trigger spacing become due.
        let mut next_due: Option<tokio::time::Instant> = None;
        let mut set_updates = self.set_updates.take();
        // A set already waiting is the one the first tick runs on.
        if let Some(updates) = &mut set_updates
            && updates.has_changed().unwrap_or(false)
        {
            let set = updates.borrow_and_update().clone();
            self.replace_watch_set(set);
        }
        loop {
            let started = tokio::select! {
                biased;
                () = &mut shutdown => {
                    info!("shutdown requested");
                    break;
                }
                Some(event) = received.recv() => self.on_event(event, &mut rounds).await,
                Some(reload) = next_reload(&mut reloads) => {
                    // A shorter interval takes effect at once, not after the poll scheduled
                    // with the old one.
                    if self.apply_reload(reload)
                        && let Some(at) = next_poll
                    {
                        next_poll = Some(at.min(tokio::time::Instant::now() + self.config.next_delay()));
                    }
                    None
                }
                () = tokio::time::sleep_until(next_poll.unwrap_or_else(far_future)), if next_poll.is_some() => {
                    next_poll = None;
                    next_id += 1;
                    let images = self.set.images().to_vec();
                    let round = self.start_round(next_id, images, TickKind::Poll, None, &events).await;
                    rounds.insert(next_id, round);
                    Some(next_id)
                }
                () = triggers.wait_for_work() => {
                    self.take_triggered(&triggers, &mut next_id, &mut next_due, &mut rounds, &events).await
                }
                () = tokio::time::sleep_until(next_due.unwrap_or_else(far_future)), if next_due.is_some() => {
                    self.take_triggered(&triggers, &mut next_id, &mut next_due, &mut rounds, &events).await
                }
                () = became_leader(&mut leadership) => {
                    info!("this replica leads now; checking every image");
                    match next_poll {
                        Some(_) => next_poll = Some(tokio::time::Instant::now()),
                        None => poll_again = true,
                    }
                    None
                }
                changed = next_set(&mut set_updates) => {
                    match changed {
                        Some(set) => {
                            for image in self.replace_watch_set(set) {
                                // First sight: seeded now rather than at the next tick.
                                let _ = triggers.check(&image);
                            }
                        }
                        None => set_updates = None,
                    }
                    None
                }
            };
            if let Some(id) = started
                && let Some(finished) = self.finish_if_done(&mut rounds, id).await
                && finished.full
            {
                // A poll reschedules the next one; a full triggered check postpones a pending one.
                let delay = self.config.next_delay();
                debug!(delay_secs = delay.as_secs(), "next tick");
                if finished.poll && std::mem::take(&mut poll_again) {
                    next_poll = Some(tokio::time::Instant::now());
                } else if next_poll.is_some() || finished.poll {
                    next_poll = Some(tokio::time::Instant::now() + delay);
                }
            }
        }
        let abandoned: Vec<u64> = rounds.keys().copied().collect();
        for id in abandoned {
            if let Some(round) = rounds.remove(&id) {
                if round.outstanding > 0 {
                    warn!(
                        kind = round.kind.as_str(),
                        unanswered = round.outstanding,
                        "shutdown during checks; the unanswered ones are dropped"
                    );
                }
                self.finish_round(round).await;
            }
        }
        self.reloads = reloads;
        triggers.set_running(false);
        self.set_updates = set_updates;
        self.save_state().await?;
        info!("stopped");
        Ok(())
    }

    /// Starts a round for the requests that are due, if any; answers its id.
    async fn take_triggered(
        &mut self,
        triggers: &TriggerHandle,
        next_id: &mut u64,
        next_due: &mut Option<tokio::time::Instant>,
        rounds: &mut HashMap<u64, Round>,
        events: &Events,
    ) -> Option<u64> {
        let taken = triggers.take(tokio::time::Instant::now());
        *next_due = taken.next_due;
        let batch = taken.batch?;
        let images = if batch.all {
            self.set.images().to_vec()
        } else {
            self.watched(&batch.images)
        };
        *next_id += 1;
        let round = self
            .start_round(*next_id, images, TickKind::Triggered, Some(batch), events)
            .await;
        rounds.insert(*next_id, round);
        Some(*next_id)
    }

    /// Writes the state file now if anything changed since the last write.
    pub async fn save_state(&mut self) -> Result<(), StoreError> {
        if let Some(store) = &self.state
            && self.dirty
        {
            for (image, digest) in std::mem::take(&mut self.unrecorded) {
                if let Err(error) = store.record_refreshed(&image, &digest).await {
                    self.unrecorded.insert(image, digest);
                    return Err(error);
                }
            }
            store.save(&self.seen, &self.first_seen).await?;
            self.dirty = false;
            debug!(path = %store.location(), images = self.seen.len(), "state saved");
        }
        Ok(())
    }

    /// A shared store's seen digests replace ours (a standby learns what the leader refreshed);
    /// first sights not saved yet are kept. Unreadable: ours stand, and a refresh waits for the
    /// store to answer who leads.
    async fn reload_shared(&mut self) {
        let Some(store) = self.state.clone().filter(|store| store.shared()) else {
            return;
        };
        if !self.unrecorded.is_empty() && self.save_state().await.is_err() {
            return;
        }
        match store.load().await {
            Ok(loaded) => {
                for (image, digest) in loaded.digests {
                    self.seen.insert(image, digest);
                }
            }
            Err(error) => {
                warn!(store = %store.location(), error = %error, "state store unreadable; using the digests seen here")
            }
        }
    }

    fn backoffs(&self) -> MutexGuard<'_, Backoffs> {
        // A panic while holding the lock cannot leave the map half-updated in a way that matters.
        self.backoffs.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Starts the checks of `images` (skipping hosts that are backed off) in a task of their
    /// own, which reports each answer as it arrives. A shared store's digests are read first.
    async fn start_round(
        &mut self,
        id: u64,
        images: Vec<WatchedImage>,
        kind: TickKind,
        batch: Option<Batch>,
        events: &Events,
    ) -> Round {
        let started_at = SystemTime::now();
        self.reload_shared().await;
        let now = tokio::time::Instant::now();
        let mut reports: Vec<Option<ImageStatus>> = Vec::with_capacity(images.len());
        let mut to_check: Vec<ImageReference> = Vec::new();
        let mut positions: Vec<usize> = Vec::new();
        let mut hosts: HashMap<RegistryHost, HostProgress> = HashMap::new();
        {
            let backoffs = self.backoffs();
            for (position, image) in images.iter().enumerate() {
                match backoffs.paused_until(image.host(), now) {
                    Some(until) => {
                        let remaining = until - now;
                        debug!(
                            image = %image.reference(),
                            host = %image.host(),
                            remaining_secs = remaining.as_secs(),
                            "registry backed off; skipped"
                        );
                        reports.push(Some(ImageStatus::BackedOff { remaining }));
                    }
                    None => {
                        reports.push(None);
                        to_check.push(image.reference().clone());
                        positions.push(position);
                        let host = hosts.entry(image.host().clone()).or_default();
                        host.positions.push(position);
                        host.left += 1;
                    }
                }
            }
        }
        for (position, status) in reports.iter().enumerate() {
            if let (Some(status), Some(image)) = (status, images.get(position)) {
                self.status.record(image.reference(), status, SystemTime::now());
            }
        }
        let outstanding = to_check.len();
        let checks = (!to_check.is_empty()).then(|| {
            let source = self.source.clone();
            let concurrency = self.config.concurrency.max(1);
            let events = events.clone();
            AbortOnDrop(tokio::spawn(async move {
                let _finished = FinishOnDrop(events.clone(), id);
                let ready = |index: usize, result: Result<Digest, CheckError>| {
                    if let Some(position) = positions.get(index) {
                        let _ = events.send(Event::Checked(id, *position, result));
                    }
                };
                source.digests_as_ready(&to_check, concurrency, &ready).await;
            }))
        });
        Round {
            kind,
            batch,
            outcomes: vec![None; images.len()],
            images,
            reports,
            hosts,
            outstanding,
            started_at,
            started: now,
            _checks: checks,
        }
    }

    /// Observes one answer (refreshing when it moved); answers the round's id.
    async fn on_event(&mut self, event: Event, rounds: &mut HashMap<u64, Round>) -> Option<u64> {
        let (id, position, result) = match event {
            Event::Checked(id, position, result) => (id, position, result),
            Event::Finished(id) => {
                let round = rounds.get_mut(&id)?;
                let missing: Vec<usize> = (0..round.reports.len())
                    .filter(|position| round.reports[*position].is_none())
                    .collect();
                for position in missing {
                    let error = CheckError::new(CheckErrorKind::Other, "the digest source answered too few results");
                    self.settle(round, position, Err(error)).await;
                }
                return Some(id);
            }
        };
        let round = rounds.get_mut(&id)?;
        if round.reports.get(position).is_none_or(Option::is_some) {
            return Some(id);
        }
        self.settle(round, position, result).await;
        Some(id)
    }

    /// Records the answer for the image at `position` of `round`.
    async fn settle(&mut self, round: &mut Round, position: usize, result: Result<Digest, CheckError>) {
        let image = round.images[position].clone();
        let status = match result {
            Err(error) => {
                warn!(
                    image = %image.reference(),
                    host = %image.host(),
                    kind = %error.kind(),
                    error = %error.message(),
                    "digest check failed"
                );
                round.outcomes[position] = Some(Err(error.clone()));
                ImageStatus::CheckFailed { error }
            }
            Ok(digest) => {
                round.outcomes[position] = Some(Ok(()));
                self.observe(&image, digest, round.kind).await
            }
        };
        self.status.record(image.reference(), &status, SystemTime::now());
        round.reports[position] = Some(status);
        round.outstanding = round.outstanding.saturating_sub(1);
        if let Some(host) = round.hosts.get_mut(image.host()) {
            host.left = host.left.saturating_sub(1);
            if host.left == 0 {
                let outcomes = host.positions.iter().filter_map(|p| round.outcomes[*p].as_ref());
                self.update_backoff(image.host(), outcomes);
                if round.hosts.len() > 1 {
                    info!(
                        kind = round.kind.as_str(),
                        host = %image.host(),
                        images = round.hosts[image.host()].positions.len(),
                        duration_ms = u64::try_from(round.started.elapsed().as_millis()).unwrap_or(u64::MAX),
                        "host checked"
                    );
                }
            }
        }
    }

    /// Ends round `id` if nothing of it is outstanding.
    async fn finish_if_done(&mut self, rounds: &mut HashMap<u64, Round>, id: u64) -> Option<Finished> {
        if rounds.get(&id)?.outstanding > 0 {
            return None;
        }
        let round = rounds.remove(&id)?;
        Some(self.finish_round(round).await)
    }

    /// Reports a round (images without an answer as interrupted), serves its trigger
    /// requests and queues follow-ups for claims the registry did not answer yet.
    async fn finish_round(&mut self, round: Round) -> Finished {
        let full = round.is_full();
        let kind = round.kind;
        let poll = kind == TickKind::Poll;
        let reports = round
            .images
            .into_iter()
            .zip(round.reports)
            .map(|(image, status)| ImageReport {
                image: image.reference().clone(),
                runtime: image.runtime().map(str::to_owned),
                status: status.unwrap_or(ImageStatus::Interrupted),
            })
            .collect();
        let report = self.finish(kind, round.started_at, round.started, reports).await;
        if let Some(batch) = &round.batch {
            self.triggers.done(batch);
            follow_up_claims(&self.triggers, batch, &report);
        }
        Finished { report, full, poll }
    }

    /// One back-off decision per host per round: a 429, a 5xx or a timeout counts even when
    /// another image of the host succeeded; a host with only successes is cleared.
    fn update_backoff<'a>(&self, host: &RegistryHost, results: impl Iterator<Item = &'a Result<(), CheckError>>) {
        let now = tokio::time::Instant::now();
        let mut any_success = false;
        // The host's one pausing error of this round: a 429 over the others, the longest
        // `Retry-After` first. Recording each image's error would escalate the pause by the
        // number of images on the host, not by ticks.
        let mut pausing: Option<&CheckError> = None;
        for result in results {
            match result {
                Ok(()) => any_success = true,
                Err(error)
                    if matches!(error.kind(), CheckErrorKind::RateLimited | CheckErrorKind::Server)
                        || (error.kind() == CheckErrorKind::Unreachable && error.timed_out()) =>
                {
                    let rank = |e: &CheckError| (e.kind() == CheckErrorKind::RateLimited, e.retry_after());
                    if pausing.is_none_or(|current| rank(error) > rank(current)) {
                        pausing = Some(error);
                    }
                }
                Err(_) => {}
            }
        }
        let mut backoffs = self.backoffs();
        let Some(error) = pausing else {
            if any_success {
                backoffs.record_success(host);
            }
            return;
        };
        if let Some(pause) = backoffs.record_error(host, error, now) {
            warn!(
                host = %host,
                kind = %error.kind(),
                pause_secs = pause.as_secs(),
                "registry backing off: its images are skipped until the pause passes"
            );
        }
    }

    /// Compares a fetched digest with the seen one and acts.
    async fn observe(&mut self, image: &WatchedImage, digest: Digest, kind: TickKind) -> ImageStatus {
        let reference = image.reference();
        let Some(old) = self.seen.get(reference).cloned() else {
            info!(image = %reference, host = %image.host(), digest = %digest.short(), "seeded");
            self.seen.insert(reference.clone(), digest.clone());
            self.dirty = true;
            return ImageStatus::Seeded { digest };
        };
        if old == digest {
            debug!(image = %reference, digest = %digest.short(), "unchanged");
            self.holds.remove(reference);
            if self.first_seen.remove(reference).is_some() {
                self.dirty = true;
            }
            return ImageStatus::Unchanged { digest };
        }
        if let Some(remaining) = self.cooling_down(reference, &digest) {
            info!(
                image = %reference,
                old = %old.short(),
                new = %digest.short(),
                remaining_secs = remaining.as_secs(),
                "moved; cooling down before the refresh"
            );
            self.triggers
                .recheck(reference, tokio::time::Instant::now() + remaining);
            return ImageStatus::CoolingDown {
                old,
                new: digest,
                remaining,
            };
        }
        let now = tokio::time::Instant::now();
        if let Some((failures, retry_in)) = self.retries.wait(reference, &digest, now) {
            debug!(
                image = %reference,
                new = %digest.short(),
                failures,
                retry_in_secs = retry_in.as_secs(),
                "moved to a digest whose refresh failed; waiting before the next attempt"
            );
            return ImageStatus::RefreshDeferred {
                old,
                new: digest,
                failures,
                retry_in,
            };
        }
        let leadership = match &self.state {
            Some(store) => store.leadership().await,
            None => Leadership::Sole,
        };
        if !leadership.may_refresh() {
            if let Some(store) = &self.state
                && let Err(error) = store.record_move(reference, &old, &digest).await
            {
                warn!(image = %reference, error = %error, "move not recorded in the state store");
            }
            info!(
                image = %reference,
                old = %old.short(),
                new = %digest.short(),
                leader = leadership.leader().unwrap_or("none yet"),
                "moved; another replica leads and refreshes it"
            );
            return ImageStatus::StandingBy {
                old,
                new: digest,
                leader: leadership.leader().map(str::to_owned),
            };
        }
        let verification = match self.admit(reference, &digest, kind).await {
            Ok(verification) => verification,
            Err((reason, retry_in)) => {
                return ImageStatus::Unverified {
                    old,
                    new: digest,
                    reason,
                    retry_in,
                };
            }
        };
        let event = RefreshEvent::new(
            reference.clone(),
            image.runtime().map(str::to_owned),
            old.clone(),
            digest.clone(),
            SystemTime::now(),
        )
        .with_verification(verification);
        info!(
            image = %reference,
            host = %image.host(),
            runtime = image.runtime().unwrap_or(""),
            old = %old.short(),
            new = %digest.short(),
            refresher = self.refresher.name(),
            "digest moved; refreshing"
        );
        match self.refresher.refresh(&event).await {
            Ok(outcome) => {
                info!(image = %reference, new = %digest.short(), outcome = %outcome, "refreshed");
                self.retries.succeeded(reference);
                self.holds.remove(reference);
                self.first_seen.remove(reference);
                self.status.record_retry(reference, None);
                self.seen.insert(reference.clone(), digest.clone());
                self.dirty = true;
                if let Some(store) = self.state.as_ref().filter(|store| store.shared())
                    && let Err(error) = store.record_refreshed(reference, &digest).await
                {
                    error!(image = %reference, error = %error, "refresh not recorded in the state store yet; retried before the next pass");
                    self.unrecorded.insert(reference.clone(), digest.clone());
                }
                ImageStatus::Refreshed {
                    old,
                    new: digest,
                    outcome,
                }
            }
            Err(error) => {
                let retry_in = self.retries.failed(reference, &digest, self.config.interval, now);
                let failures = self.retries.failures(reference);
                self.status.record_retry(
                    reference,
                    Some(RetryRecord {
                        digest: digest.clone(),
                        failures,
                        next_attempt: SystemTime::now() + retry_in,
                    }),
                );
                error!(
                    image = %reference,
                    old = %old.short(),
                    new = %digest.short(),
                    error = %error,
                    retry_in_secs = retry_in.as_secs(),
                    "refresh failed; keeping the old digest so a later tick retries"
                );
                ImageStatus::RefreshFailed {
                    old,
                    new: digest,
                    error,
                }
            }
        }
    }

    /// How long `digest` (which `image` moved to) must still cool down, starting its cooldown
    /// when it is new; `None` when it may go ahead.
    fn cooling_down(&mut self, image: &ImageReference, digest: &Digest) -> Option<Duration> {
        if self.cooldown.is_zero() {
            return None;
        }
        let now = SystemTime::now();
        let first_seen = match self.first_seen.get(image) {
            Some(first) if &first.digest == digest => first.time(),
            _ => {
                self.first_seen
                    .insert(image.clone(), FirstSeen::new(digest.clone(), now));
                self.dirty = true;
                now
            }
        };
        let elapsed = now.duration_since(first_seen).unwrap_or_default();
        let remaining = self.cooldown.saturating_sub(elapsed);
        // Persisted times have whole seconds: round up so a cooldown never ends early.
        (!remaining.is_zero())
            .then(|| Duration::from_secs(remaining.as_secs() + u64::from(remaining.subsec_nanos() > 0)))
    }

    /// Asks the gate about `digest`: `Ok` with what vouched for it, or `Err` with why it is
    /// held and when it is asked again. A triggered pass before that time does not ask again
    /// (the recheck is already queued); a poll always asks.
    async fn admit(
        &mut self,
        image: &ImageReference,
        digest: &Digest,
        kind: TickKind,
    ) -> Result<Option<crate::gate::Attestation>, (String, Duration)> {
        let Some(gate) = self.gate.clone() else {
            return Ok(None);
        };
        let now = tokio::time::Instant::now();
        if kind == TickKind::Triggered
            && let Some(hold) = self.holds.get(image)
            && &hold.digest == digest
            && hold.next > now
        {
            return Err((hold.reason.clone(), hold.next - now));
        }
        match gate.admit(image, digest).await {
            GateVerdict::Admit(verification) => {
                if let Some(verification) = &verification {
                    info!(
                        image = %image,
                        digest = %digest.short(),
                        key = %verification.key_fingerprint,
                        found = %verification.found,
                        "signature verified"
                    );
                }
                self.holds.remove(image);
                Ok(verification)
            }
            GateVerdict::Hold(reason) => {
                let holds = match self.holds.get(image) {
                    Some(hold) if &hold.digest == digest => hold.holds.saturating_add(1),
                    _ => 1,
                };
                let wait = FIRST_RECHECK
                    .saturating_mul(1u32 << (holds - 1).min(20))
                    .min(self.config.interval.max(FIRST_RECHECK));
                warn!(
                    image = %image,
                    digest = %digest.short(),
                    reason = %reason,
                    recheck_secs = wait.as_secs(),
                    "unverified: not refreshing to this digest"
                );
                self.holds.insert(
                    image.clone(),
                    Hold {
                        digest: digest.clone(),
                        holds,
                        reason: reason.clone(),
                        next: now + wait,
                    },
                );
                self.triggers.recheck(image, now + wait);
                Err((reason, wait))
            }
        }
    }

    async fn finish(
        &mut self,
        kind: TickKind,
        started_at: SystemTime,
        started: tokio::time::Instant,
        images: Vec<ImageReport>,
    ) -> TickReport {
        let state_error = match self.save_state().await {
            Ok(()) => None,
            Err(error) => {
                error!(error = %error, "state not saved");
                Some(error.to_string())
            }
        };
        let report = TickReport {
            started_at,
            duration: started.elapsed(),
            images,
            state_error,
        };
        self.status.record_tick(kind, report.duration, SystemTime::now());
        if let Some(reports) = &self.reports
            && let Err(mpsc::error::TrySendError::Full(_)) = reports.try_send(report.clone())
        {
            warn!("the tick report reader is behind; this tick's report is dropped");
        }
        let counts = report.counts();
        let failed = report.failed();
        info!(
            kind = kind.as_str(),
            seeded = counts.seeded,
            unchanged = counts.unchanged,
            refreshed = counts.refreshed,
            refresh_failed = counts.refresh_failed,
            refresh_deferred = counts.refresh_deferred,
            check_failed = counts.check_failed,
            backed_off = counts.backed_off,
            interrupted = counts.interrupted,
            unverified = counts.unverified,
            cooling_down = counts.cooling_down,
            standing_by = counts.standing_by,
            duration_ms = u64::try_from(report.duration.as_millis()).unwrap_or(u64::MAX),
            failed,
            "tick done"
        );
        report
    }
}

/// Resolves when the store's leadership turns to this replica; never without a store that changes.
async fn became_leader(changes: &mut Option<watch::Receiver<Leadership>>) {
    let Some(receiver) = changes else {
        return std::future::pending().await;
    };
    loop {
        if receiver.changed().await.is_err() {
            *changes = None;
            return std::future::pending().await;
        }
        if receiver.borrow_and_update().may_refresh() {
            return;
        }
    }
}

/// A claimed digest the registry did not answer (it answered the digest already seen, a first
/// one, or an error): check again soon, in case the tag was not readable yet. distribution, for
/// one, sends its push event before it links the tag, and a read in between answers the old
/// digest or a 500 (`invalid checksum digest format`). A claim answered ends its follow-ups.
fn follow_up_claims(triggers: &TriggerHandle, batch: &Batch, report: &TickReport) {
    for (image, claim) in &batch.claims {
        let answered = match report.status_of(image) {
            Some(ImageStatus::Unchanged { digest } | ImageStatus::Seeded { digest }) if digest != claim => {
                digest.short()
            }
            Some(ImageStatus::CheckFailed { error }) => error.kind().as_str().to_owned(),
            _ => {
                triggers.claim_met(image, claim);
                continue;
            }
        };
        debug!(
            image = %image,
            answered = %answered,
            claimed = %claim.short(),
            "the registry does not answer the announced digest yet; checking again soon"
        );
        triggers.follow_up(image, claim, tokio::time::Instant::now());
    }
}

/// The next set sent on `updates`; `None` once every sender is gone. Never resolves without a
/// channel.
async fn next_set(updates: &mut Option<watch::Receiver<WatchSet>>) -> Option<WatchSet> {
    let Some(receiver) = updates else {
        return std::future::pending().await;
    };
    match receiver.changed().await {
        Ok(()) => Some(receiver.borrow_and_update().clone()),
        Err(_) => None,
    }
}

/// The next reload, or never when there is no channel.
async fn next_reload(reloads: &mut Option<mpsc::UnboundedReceiver<Reload>>) -> Option<Reload> {
    match reloads {
        Some(reloads) => reloads.recv().await,
        None => std::future::pending().await,
    }
}

/// An instant no timer reaches (for a disabled `select!` branch's placeholder).
fn far_future() -> tokio::time::Instant {
    tokio::time::Instant::now() + Duration::from_secs(86_400 * 365)
}
