//! The poll loop. [`Watcher::tick`] checks every watched image once (concurrently, bounded),
//! seeds first observations, calls the refresher once per moved digest (one at a time) and
//! keeps the old digest when a refresh fails, so the next tick retries. [`Watcher::run`] ticks
//! at start and then every interval (with jitter) until its shutdown future resolves; an
//! in-flight refresh finishes first and the state is saved last. Between ticks it serves the
//! checks asked for through its [`TriggerHandle`] (webhooks, `POST /check`), one pass at a time,
//! and records every outcome on its [`StatusBoard`].
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

use std::collections::HashMap;
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

/// The watcher: a watch set, a digest source, a refresher and what it has seen.
#[derive(Debug)]
pub struct Watcher {
    set: WatchSet,
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
}

#[derive(Debug)]
struct Hold {
    digest: Digest,
    holds: u32,
    reason: String,
    next: tokio::time::Instant,
}

enum Checked {
    Fetched(Result<Digest, CheckError>),
    BackedOff(Duration),
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
        Watcher {
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
    /// between passes (a set sent during a pass waits for its end; only the latest counts).
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
        if added.is_empty() && removed == 0 && set == self.set {
            return added;
        }
        for image in self.set.images() {
            if set.get(image.reference()).is_none() {
                self.retries.succeeded(image.reference());
            }
        }
        self.status.replace_set(&set, |image| self.seen.get(image).cloned());
        self.triggers.replace_set(set.clone());
        info!(images = set.len(), added = added.len(), removed, "watch set changed");
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

    /// What is known per image, and the counters, as the loop goes.
    pub fn status(&self) -> StatusBoard {
        self.status.clone()
    }

    /// Checks every image once, refreshes moved ones and saves the state if it changed.
    pub async fn tick(&mut self) -> TickReport {
        let (_stop, stopped) = watch::channel(false);
        let images = self.set.images().to_vec();
        self.pass(images, TickKind::Poll, stopped).await
    }

    /// Like [`Watcher::tick`] for some images only (references outside the watch set are
    /// skipped): what a triggered check does.
    pub async fn check_images(&mut self, images: &[ImageReference]) -> TickReport {
        let (_stop, stopped) = watch::channel(false);
        let images = self.watched(images);
        self.pass(images, TickKind::Triggered, stopped).await
    }

    /// The watched images named, in the order named, each once.
    fn watched(&self, references: &[ImageReference]) -> Vec<WatchedImage> {
        let mut images: Vec<WatchedImage> = Vec::new();
        for reference in references {
            if let Some(image) = self.set.get(reference)
                && !images.contains(image)
            {
                images.push(image.clone());
            }
        }
        images
    }

    /// Ticks now, then every interval (with jitter), until `shutdown` resolves. Between ticks it
    /// serves what was asked through [`Watcher::trigger`], one pass at a time: a request that
    /// arrives during a pass waits for the next. A triggered check of some images leaves the
    /// poll schedule alone; a triggered check of all images counts as the tick. A shutdown
    /// during a pass abandons checks still in flight, lets a refresh in flight finish and
    /// starts no other; the state is saved before returning.
    pub async fn run<F: Future<Output = ()>>(&mut self, shutdown: F) -> Result<(), StoreError> {
        let (stop, stopped) = watch::channel(false);
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
        let mut next_poll = tokio::time::Instant::now();
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
            let due = next_due;
            let woken = tokio::select! {
                () = tokio::time::sleep_until(next_poll) => false,
                () = triggers.wait_for_work() => true,
                () = tokio::time::sleep_until(due.unwrap_or(next_poll)), if due.is_some() => true,
                () = became_leader(&mut leadership) => {
                    info!("this replica leads now; checking every image");
                    false
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
                    continue;
                }
                () = &mut shutdown => {
                    info!("shutdown requested");
                    break;
                }
            };
            let batch = if woken {
                let taken = triggers.take(tokio::time::Instant::now());
                next_due = taken.next_due;
                match taken.batch {
                    Some(batch) => Some(batch),
                    None => continue,
                }
            } else {
                None
            };
            let (images, kind) = match &batch {
                Some(batch) if !batch.all => (self.watched(&batch.images), TickKind::Triggered),
                Some(_) => (self.set.images().to_vec(), TickKind::Triggered),
                None => (self.set.images().to_vec(), TickKind::Poll),
            };
            let mut stopping = false;
            let report = {
                let pass = self.pass(images, kind, stopped.clone());
                let mut pass = std::pin::pin!(pass);
                tokio::select! {
                    report = &mut pass => Some(report),
                    () = &mut shutdown => {
                        info!("shutdown requested; finishing the refresh in flight");
                        stopping = true;
                        let _ = stop.send(true);
                        pass.await;
                        None
                    }
                }
            };
            if let Some(batch) = &batch {
                triggers.served(&batch.tickets);
                if let Some(report) = &report {
                    follow_up_claims(&triggers, batch, report);
                }
            }
            if stopping {
                break;
            }
            if batch.as_ref().is_none_or(|batch| batch.all) {
                let delay = self.config.next_delay();
                debug!(delay_secs = delay.as_secs(), "next tick");
                next_poll = tokio::time::Instant::now() + delay;
            }
        }
        triggers.set_running(false);
        self.set_updates = set_updates;
        self.save_state().await?;
        info!("stopped");
        Ok(())
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

    /// One pass over `images`: check, observe, refresh, save, record.
    async fn pass(
        &mut self,
        images: Vec<WatchedImage>,
        kind: TickKind,
        mut stopped: watch::Receiver<bool>,
    ) -> TickReport {
        let started_at = SystemTime::now();
        let started = tokio::time::Instant::now();
        self.reload_shared().await;

        let checks = self.check_all(&images);
        let checked = tokio::select! {
            checked = checks => Some(checked),
            _ = stopped.wait_for(|stop| *stop) => None,
        };
        let Some(checked) = checked else {
            warn!("shutdown during checks; this tick's results are dropped");
            return self.finish(kind, started_at, started, interrupted(&images)).await;
        };

        let mut reports = Vec::with_capacity(images.len());
        for (image, checked) in images.iter().zip(checked) {
            let status = match checked {
                Checked::BackedOff(remaining) => ImageStatus::BackedOff { remaining },
                Checked::Fetched(Err(error)) => {
                    warn!(
                        image = %image.reference(),
                        host = %image.host(),
                        kind = %error.kind(),
                        error = %error.message(),
                        "digest check failed"
                    );
                    ImageStatus::CheckFailed { error }
                }
                Checked::Fetched(Ok(digest)) => {
                    // Read the flag in a statement of its own: a `watch` borrow held across the
                    // refresh would block the sender that wants to set it.
                    let stopping = *stopped.borrow();
                    self.observe(image, digest, stopping, kind).await
                }
            };
            self.status.record(image.reference(), &status, SystemTime::now());
            reports.push(ImageReport {
                image: image.reference().clone(),
                runtime: image.runtime().map(str::to_owned),
                status,
            });
        }
        self.finish(kind, started_at, started, reports).await
    }

    /// Fetches every digest in one batch (at most `concurrency` at once), skipping hosts that
    /// are backed off, then updates each host's back-off from its results. Answers in set order.
    async fn check_all(&self, images: &[WatchedImage]) -> Vec<Checked> {
        let now = tokio::time::Instant::now();
        let paused: Vec<Option<Duration>> = {
            let backoffs = self.backoffs();
            images
                .iter()
                .map(|image| backoffs.paused_until(image.host(), now).map(|until| until - now))
                .collect()
        };
        for (image, remaining) in images.iter().zip(&paused) {
            if let Some(remaining) = remaining {
                debug!(
                    image = %image.reference(),
                    host = %image.host(),
                    remaining_secs = remaining.as_secs(),
                    "registry backed off; skipped"
                );
            }
        }
        let to_check: Vec<ImageReference> = images
            .iter()
            .zip(&paused)
            .filter(|(_, remaining)| remaining.is_none())
            .map(|(image, _)| image.reference().clone())
            .collect();
        let mut fetched = if to_check.is_empty() {
            Vec::new()
        } else {
            self.source.digests(&to_check, self.config.concurrency.max(1)).await
        }
        .into_iter();
        let checked: Vec<Checked> = paused
            .into_iter()
            .map(|remaining| match remaining {
                Some(remaining) => Checked::BackedOff(remaining),
                None => Checked::Fetched(fetched.next().unwrap_or_else(|| {
                    Err(CheckError::new(
                        CheckErrorKind::Other,
                        "the digest source answered too few results",
                    ))
                })),
            })
            .collect();
        self.update_backoffs(images, &checked);
        checked
    }

    /// One back-off decision per host per tick: a 429 or a 5xx in this tick counts even when
    /// another image of the host succeeded; a host with only successes is cleared.
    fn update_backoffs(&self, images: &[WatchedImage], checked: &[Checked]) {
        let now = tokio::time::Instant::now();
        let mut backoffs = self.backoffs();
        let mut hosts: Vec<&RegistryHost> = Vec::new();
        for image in images {
            if !hosts.contains(&image.host()) {
                hosts.push(image.host());
            }
        }
        for host in hosts {
            let results = images
                .iter()
                .zip(checked)
                .filter(|(image, _)| image.host() == host)
                .filter_map(|(_, checked)| match checked {
                    Checked::Fetched(result) => Some(result),
                    Checked::BackedOff(_) => None,
                });
            let mut any_success = false;
            // The host's one pausing error of this tick: a 429 over a 5xx, the longest
            // `Retry-After` first. Recording each image's error would escalate the pause by the
            // number of images on the host, not by ticks.
            let mut pausing: Option<&CheckError> = None;
            for result in results {
                match result {
                    Ok(_) => any_success = true,
                    Err(error) if matches!(error.kind(), CheckErrorKind::RateLimited | CheckErrorKind::Server) => {
                        let rank = |e: &CheckError| (e.kind() == CheckErrorKind::RateLimited, e.retry_after());
                        if pausing.is_none_or(|current| rank(error) > rank(current)) {
                            pausing = Some(error);
                        }
                    }
                    Err(_) => {}
                }
            }
            let Some(error) = pausing else {
                if any_success {
                    backoffs.record_success(host);
                }
                continue;
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
    }

    /// Compares a fetched digest with the seen one and acts.
    async fn observe(&mut self, image: &WatchedImage, digest: Digest, stopping: bool, kind: TickKind) -> ImageStatus {
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
        if stopping {
            info!(image = %reference, old = %old.short(), new = %digest.short(), "moved; not refreshing while stopping");
            return ImageStatus::Interrupted;
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
/// one, or an error): check once more, a moment later, in case the tag was not readable yet.
/// distribution, for one, sends its push event before it links the tag, and a read in between
/// answers the old digest or a 500 (`invalid checksum digest format`).
fn follow_up_claims(triggers: &TriggerHandle, batch: &Batch, report: &TickReport) {
    for (image, claim) in &batch.claims {
        let answered = match report.status_of(image) {
            Some(ImageStatus::Unchanged { digest } | ImageStatus::Seeded { digest }) if digest != claim => {
                digest.short()
            }
            Some(ImageStatus::CheckFailed { error }) => error.kind().as_str().to_owned(),
            _ => continue,
        };
        debug!(
            image = %image,
            answered = %answered,
            claimed = %claim.short(),
            "the registry does not answer the announced digest yet; checking once more"
        );
        triggers.follow_up(image, tokio::time::Instant::now());
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

fn interrupted(images: &[WatchedImage]) -> Vec<ImageReport> {
    images
        .iter()
        .map(|image| ImageReport {
            image: image.reference().clone(),
            runtime: image.runtime().map(str::to_owned),
            status: ImageStatus::Interrupted,
        })
        .collect()
}
