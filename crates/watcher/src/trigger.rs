//! Checks on demand. A [`TriggerHandle`] asks the running loop ([`Watcher::run`]) to check one
//! watched image, or every image, now; polling goes on as the safety net.
//!
//! Requests coalesce, so a storm does not multiply registry requests:
//! - while an image waits in the queue, further requests for it add nothing (at most one check
//!   in flight plus one queued);
//! - a queued image starts no sooner than [`WatcherConfig::trigger_spacing`] after its previous
//!   triggered check started, so a burst spread over that long still costs two checks, and the
//!   first request of a quiet image is served at once.
//!
//! A request is always served by a check that starts after it was made. The handle never talks
//! to a registry and never decides that anything moved: the loop does, by asking the registry,
//! exactly as a poll would.
//!
//! A request may say which digest its sender claims the tag now has ([`TriggerHandle::check_expecting`]).
//! The claim decides nothing; it is a hint that buys quick follow-up checks while the registry
//! still answers something else: registries announce a push before the tag is readable
//! everywhere (distribution sends its event before it links the tag; CDN-backed registries
//! answer from caches), and a check that lands in that gap would otherwise leave the move to the
//! next poll. The follow-ups start [`FOLLOW_UP_FIRST`] after the check that missed the claim and
//! double each time, until the registry answers the claimed digest or [`FOLLOW_UP_WINDOW`] has
//! passed since the request.
//!
//! [`Watcher::run`]: crate::Watcher::run
//! [`WatcherConfig::trigger_spacing`]: crate::WatcherConfig::trigger_spacing

use std::collections::{BTreeSet, HashMap, HashSet};
use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard, RwLock};
use std::time::Duration;

use registry_core::{Digest, ImageReference};
use tokio::sync::{Notify, watch};
use tokio::time::Instant;

use crate::watch_set::WatchSet;

/// How long after a check that did not see a claimed digest the first follow-up starts; each
/// further one waits twice as long as the one before.
pub const FOLLOW_UP_FIRST: Duration = Duration::from_millis(25);

/// How long after a request with a claim its follow-ups may go on; the last one is checked at
/// the window's end.
pub const FOLLOW_UP_WINDOW: Duration = Duration::from_secs(2);

/// A claimed digest being waited for.
#[derive(Debug)]
struct Hint {
    claim: Digest,
    since: Instant,
    follow_ups: u32,
}

/// What became of one request.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum TriggerOutcome {
    /// A check was queued for it.
    Queued,
    /// A check already waiting in the queue covers it: nothing was added.
    Coalesced,
}

impl TriggerOutcome {
    /// A stable snake_case name for responses and metric labels.
    pub fn as_str(self) -> &'static str {
        match self {
            TriggerOutcome::Queued => "queued",
            TriggerOutcome::Coalesced => "coalesced",
        }
    }
}

impl fmt::Display for TriggerOutcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Identifies the queued check that serves a request; see [`TriggerHandle::wait`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Ticket(u64);

/// A request named an image outside the watch set.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{image} is not watched; expected one of the {watched} reference(s) of the watch set")]
pub struct NotWatched {
    pub image: String,
    pub watched: usize,
}

/// Requests since start.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TriggerCounts {
    pub queued: u64,
    pub coalesced: u64,
    /// Follow-up checks queued because the registry did not answer a claimed digest yet.
    pub follow_ups: u64,
}

#[derive(Debug)]
struct Queue {
    /// A check of every image, with its ticket.
    all: Option<u64>,
    /// Single images, each once, with their tickets, in request order.
    images: Vec<(ImageReference, u64)>,
    /// The tickets of `images` by image, so a request finds its queued check in O(1).
    queued: HashMap<ImageReference, u64>,
    /// When each image's last triggered check started.
    started: HashMap<ImageReference, Instant>,
    /// The digest the latest request for an image claims, until a pass takes the image.
    claims: HashMap<ImageReference, Digest>,
    /// When queued follow-ups become due (instead of the spacing).
    follow_ups: HashMap<ImageReference, Instant>,
    /// The claim each image's follow-ups wait for, and since when.
    hints: HashMap<ImageReference, Hint>,
    /// Images a triggered check is in flight for: a queued request for one waits until it
    /// ends, so an image has at most one triggered check in flight however slow its host.
    busy: HashSet<ImageReference>,
    /// A triggered check of every image is in flight.
    all_busy: bool,
    next_ticket: u64,
    counts: TriggerCounts,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
struct Progress {
    /// Tickets queued and not yet served.
    outstanding: BTreeSet<u64>,
    /// The loop returned; nothing queued will be served until it runs again.
    stopped: bool,
}

#[derive(Debug)]
struct Shared {
    /// Replaced whole when the watch set changes at run time.
    set: RwLock<Arc<WatchSet>>,
    spacing: Duration,
    queue: Mutex<Queue>,
    wake: Notify,
    progress: watch::Sender<Progress>,
}

/// Asks the watcher's loop for checks now. Cheap to clone; get one with
/// [`Watcher::trigger`](crate::Watcher::trigger).
#[derive(Clone, Debug)]
pub struct TriggerHandle {
    shared: Arc<Shared>,
}

/// What the loop takes from the queue for one pass.
#[derive(Debug)]
pub(crate) struct Batch {
    pub(crate) tickets: Vec<u64>,
    pub(crate) all: bool,
    pub(crate) images: Vec<ImageReference>,
    /// Claimed digests of the images this pass checks.
    pub(crate) claims: Vec<(ImageReference, Digest)>,
}

/// What [`TriggerHandle::take`] found.
#[derive(Debug)]
pub(crate) struct Taken {
    pub(crate) batch: Option<Batch>,
    /// When images held back by the spacing become due.
    pub(crate) next_due: Option<Instant>,
}

impl TriggerHandle {
    pub(crate) fn new(set: Arc<WatchSet>, spacing: Duration) -> TriggerHandle {
        TriggerHandle {
            shared: Arc::new(Shared {
                set: RwLock::new(set),
                spacing,
                queue: Mutex::new(Queue {
                    all: None,
                    images: Vec::new(),
                    queued: HashMap::new(),
                    started: HashMap::new(),
                    claims: HashMap::new(),
                    follow_ups: HashMap::new(),
                    hints: HashMap::new(),
                    busy: HashSet::new(),
                    all_busy: false,
                    next_ticket: 1,
                    counts: TriggerCounts::default(),
                }),
                wake: Notify::new(),
                progress: watch::Sender::new(Progress::default()),
            }),
        }
    }

    fn queue(&self) -> MutexGuard<'_, Queue> {
        // Updates are single assignments and pushes: a panic cannot leave them half done.
        self.shared
            .queue
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The images a request may name, now.
    pub fn watch_set(&self) -> Arc<WatchSet> {
        self.shared
            .set
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone()
    }

    /// The watch set changed: requests may name the images of `set` from now on.
    pub(crate) fn replace_set(&self, set: Arc<WatchSet>) {
        *self.shared.set.write().unwrap_or_else(|poisoned| poisoned.into_inner()) = set;
    }

    /// Asks for a check of `image` (a reference of the watch set; a `tag@digest` form is taken
    /// by its tag).
    pub fn check(&self, image: &ImageReference) -> Result<(TriggerOutcome, Ticket), NotWatched> {
        self.check_expecting(image, None)
    }

    /// Like [`TriggerHandle::check`], with the digest the sender claims the tag has now (see the
    /// module documentation: it can only add follow-up checks).
    pub fn check_expecting(
        &self,
        image: &ImageReference,
        claim: Option<Digest>,
    ) -> Result<(TriggerOutcome, Ticket), NotWatched> {
        let image = image.without_digest();
        let set = self.watch_set();
        if set.get(&image).is_none() {
            return Err(NotWatched {
                image: image.to_string(),
                watched: set.len(),
            });
        }
        let mut queue = self.queue();
        if let Some(claim) = claim {
            let since = Instant::now();
            queue.hints.insert(
                image.clone(),
                Hint {
                    claim: claim.clone(),
                    since,
                    follow_ups: 0,
                },
            );
            queue.claims.insert(image.clone(), claim);
        }
        let covering = queue.all.or_else(|| queue.queued.get(&image).copied());
        if let Some(ticket) = covering {
            queue.counts.coalesced += 1;
            return Ok((TriggerOutcome::Coalesced, Ticket(ticket)));
        }
        let ticket = self.enqueue(&mut queue);
        queue.counts.queued += 1;
        queue.queued.insert(image.clone(), ticket);
        queue.images.push((image, ticket));
        drop(queue);
        self.shared.wake.notify_one();
        Ok((TriggerOutcome::Queued, Ticket(ticket)))
    }

    /// Asks for a check of every image (never held back by the spacing).
    pub fn check_all(&self) -> (TriggerOutcome, Ticket) {
        let mut queue = self.queue();
        if let Some(ticket) = queue.all {
            queue.counts.coalesced += 1;
            return (TriggerOutcome::Coalesced, Ticket(ticket));
        }
        let ticket = self.enqueue(&mut queue);
        queue.counts.queued += 1;
        queue.all = Some(ticket);
        drop(queue);
        self.shared.wake.notify_one();
        (TriggerOutcome::Queued, Ticket(ticket))
    }

    /// A new ticket, outstanding until a pass serves it.
    fn enqueue(&self, queue: &mut Queue) -> u64 {
        let ticket = queue.next_ticket;
        queue.next_ticket += 1;
        self.shared.progress.send_modify(|progress| {
            progress.outstanding.insert(ticket);
        });
        ticket
    }

    /// Waits until the check serving `ticket` has finished: true then, false if the loop stopped
    /// first. Waits for a loop that has not started yet; put a timeout around it.
    pub async fn wait(&self, ticket: Ticket) -> bool {
        let mut progress = self.shared.progress.subscribe();
        match progress
            .wait_for(|progress| !progress.outstanding.contains(&ticket.0) || progress.stopped)
            .await
        {
            Ok(progress) => !progress.outstanding.contains(&ticket.0),
            Err(_) => false,
        }
    }

    /// Requests counted since start.
    pub fn counts(&self) -> TriggerCounts {
        self.queue().counts
    }

    /// True after the loop returned (until it runs again).
    pub fn is_stopped(&self) -> bool {
        self.shared.progress.borrow().stopped
    }

    /// Resolves when a request may be waiting (spurious wake-ups are possible: `take` decides).
    pub(crate) async fn wait_for_work(&self) {
        self.shared.wake.notified().await;
    }

    /// Takes every request that is due at `now` as one pass: a check of all images if one was
    /// asked for (it covers the single ones), else the single images whose previous triggered
    /// check started at least the spacing ago.
    pub(crate) fn take(&self, now: Instant) -> Taken {
        let spacing = self.shared.spacing;
        let mut queue = self.queue();
        if !queue.all_busy
            && let Some(ticket) = queue.all.take()
        {
            queue.all_busy = true;
            let mut tickets = vec![ticket];
            tickets.extend(queue.images.drain(..).map(|(_, t)| t));
            queue.queued.clear();
            for image in self.watch_set().images() {
                queue.started.insert(image.reference().clone(), now);
            }
            queue.follow_ups.clear();
            return Taken {
                batch: Some(Batch {
                    tickets,
                    all: true,
                    images: Vec::new(),
                    claims: queue.claims.drain().collect(),
                }),
                next_due: None,
            };
        }
        let due_at = |queue: &Queue, image: &ImageReference| {
            queue
                .follow_ups
                .get(image)
                .copied()
                .or_else(|| queue.started.get(image).map(|started| *started + spacing))
        };
        let busy = |queue: &Queue, image: &ImageReference| queue.all_busy || queue.busy.contains(image);
        let (due, held): (Vec<_>, Vec<_>) = std::mem::take(&mut queue.images)
            .into_iter()
            .partition(|(image, _)| !busy(&queue, image) && due_at(&queue, image).is_none_or(|at| at <= now));
        // A busy image is taken when its check ends (which wakes the loop), not at a time.
        let next_due = held
            .iter()
            .filter(|(image, _)| !busy(&queue, image))
            .filter_map(|(image, _)| due_at(&queue, image))
            .min();
        queue.images = held;
        for (image, _) in &due {
            queue.queued.remove(image);
            queue.started.insert(image.clone(), now);
            queue.follow_ups.remove(image);
            queue.busy.insert(image.clone());
        }
        let claims = due
            .iter()
            .filter_map(|(image, _)| queue.claims.remove(image).map(|claim| (image.clone(), claim)))
            .collect();
        let batch = (!due.is_empty()).then(|| {
            let (images, tickets) = due.into_iter().unzip();
            Batch {
                tickets,
                all: false,
                images,
                claims,
            }
        });
        Taken { batch, next_due }
    }

    /// Queues one more check of `image`, whose check did not answer `claim`: due
    /// [`FOLLOW_UP_FIRST`] after `now`, twice as long after each further miss, the last at the
    /// end of [`FOLLOW_UP_WINDOW`] from the request. Nothing is queued when the claim is not
    /// the latest one for the image, the window has passed, or a check of it is queued already.
    pub(crate) fn follow_up(&self, image: &ImageReference, claim: &Digest, now: Instant) {
        let mut queue = self.queue();
        if queue.all.is_some() || queue.queued.contains_key(image) {
            return;
        }
        let Some(hint) = queue.hints.get_mut(image).filter(|hint| hint.claim == *claim) else {
            return;
        };
        let end = hint.since + FOLLOW_UP_WINDOW;
        let due = (now + FOLLOW_UP_FIRST.saturating_mul(1 << hint.follow_ups.min(16))).min(end);
        if now >= end {
            queue.hints.remove(image);
            return;
        }
        hint.follow_ups += 1;
        let ticket = self.enqueue(&mut queue);
        queue.counts.follow_ups += 1;
        queue.follow_ups.insert(image.clone(), due);
        queue.claims.insert(image.clone(), claim.clone());
        queue.queued.insert(image.clone(), ticket);
        queue.images.push((image.clone(), ticket));
        drop(queue);
        self.shared.wake.notify_one();
    }

    /// Queues a check of `image` due at `due` (a digest held by the cooldown or the trust gate
    /// is looked at again then), unless a check of it is queued already.
    pub(crate) fn recheck(&self, image: &ImageReference, due: Instant) {
        let mut queue = self.queue();
        if queue.all.is_some() || queue.queued.contains_key(image) {
            return;
        }
        let ticket = self.enqueue(&mut queue);
        queue.follow_ups.insert(image.clone(), due);
        queue.queued.insert(image.clone(), ticket);
        queue.images.push((image.clone(), ticket));
        drop(queue);
        self.shared.wake.notify_one();
    }

    /// The registry answered the claim `image` was waited for: no more follow-ups for it.
    pub(crate) fn claim_met(&self, image: &ImageReference, claim: &Digest) {
        let mut queue = self.queue();
        if queue.hints.get(image).is_some_and(|hint| hint.claim == *claim) {
            queue.hints.remove(image);
        }
    }

    /// The round serving `batch` finished: its tickets are served and its images may be
    /// taken again.
    pub(crate) fn done(&self, batch: &Batch) {
        let mut queue = self.queue();
        if batch.all {
            queue.all_busy = false;
        }
        for image in &batch.images {
            queue.busy.remove(image);
        }
        let waiting = queue.all.is_some() || !queue.images.is_empty();
        drop(queue);
        self.served(&batch.tickets);
        if waiting {
            self.shared.wake.notify_one();
        }
    }

    /// The pass serving `tickets` finished.
    pub(crate) fn served(&self, tickets: &[u64]) {
        self.shared.progress.send_modify(|progress| {
            for ticket in tickets {
                progress.outstanding.remove(ticket);
            }
        });
    }

    pub(crate) fn set_running(&self, running: bool) {
        self.shared.progress.send_modify(|progress| progress.stopped = !running);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SPACING: Duration = Duration::from_secs(1);

    fn reference(value: &str) -> ImageReference {
        value.parse().expect("valid")
    }

    fn handle() -> TriggerHandle {
        let mut set = WatchSet::new();
        set.add_image(reference("ghcr.io/a/one:latest")).expect("valid");
        set.add_image(reference("ghcr.io/a/two:latest")).expect("valid");
        TriggerHandle::new(Arc::new(set), SPACING)
    }

    #[test]
    fn requests_for_a_queued_image_coalesce_until_the_loop_takes_it() {
        let handle = handle();
        let one = reference("ghcr.io/a/one:latest");
        let now = Instant::now();
        let outcomes: Vec<TriggerOutcome> = (0..50).map(|_| handle.check(&one).expect("watched").0).collect();
        assert_eq!(outcomes[0], TriggerOutcome::Queued);
        assert!(outcomes[1..].iter().all(|o| *o == TriggerOutcome::Coalesced));
        let batch = handle.take(now).batch.expect("one pass");
        assert_eq!(batch.images, vec![one.clone()]);
        assert!(handle.take(now).batch.is_none(), "nothing left");
        // While that pass is in flight, one more may queue.
        assert_eq!(handle.check(&one).expect("watched").0, TriggerOutcome::Queued);
        assert_eq!(handle.check(&one).expect("watched").0, TriggerOutcome::Coalesced);
        assert_eq!(
            handle.counts(),
            TriggerCounts {
                queued: 2,
                coalesced: 50,
                follow_ups: 0
            }
        );
    }

    #[test]
    fn a_queued_image_waits_for_the_spacing_others_do_not() {
        let handle = handle();
        let (one, two) = (reference("ghcr.io/a/one:latest"), reference("ghcr.io/a/two:latest"));
        let start = Instant::now();
        handle.check(&one).expect("watched");
        let first = handle.take(start).batch.expect("due");
        assert_eq!(first.images, vec![one.clone()]);
        handle.done(&first);
        let later = start + Duration::from_millis(300);
        handle.check(&one).expect("watched");
        handle.check(&two).expect("watched");
        let taken = handle.take(later);
        assert_eq!(taken.batch.expect("two is due").images, vec![two]);
        assert_eq!(taken.next_due, Some(start + SPACING), "one is held back");
        assert!(handle.take(start + Duration::from_millis(999)).batch.is_none());
        assert_eq!(handle.take(start + SPACING).batch.expect("due now").images, vec![one]);
    }

    #[test]
    fn an_image_whose_triggered_check_is_in_flight_waits_for_it_to_end() {
        let handle = handle();
        let one = reference("ghcr.io/a/one:latest");
        let start = Instant::now();
        handle.check(&one).expect("watched");
        let first = handle.take(start).batch.expect("due");
        handle.check(&one).expect("watched");
        let late = start + SPACING * 10;
        let taken = handle.take(late);
        assert!(taken.batch.is_none(), "the first check is still in flight");
        assert_eq!(taken.next_due, None, "taken when the first ends, not at a time");
        handle.done(&first);
        assert_eq!(handle.take(late).batch.expect("due now").images, vec![one]);
    }

    #[test]
    fn a_queued_full_check_covers_single_images_and_is_never_held_back() {
        let handle = handle();
        let now = Instant::now();
        handle.check(&reference("ghcr.io/a/one")).expect("watched");
        handle.take(now);
        assert_eq!(handle.check_all().0, TriggerOutcome::Queued);
        assert_eq!(
            handle.check(&reference("ghcr.io/a/two")).expect("watched").0,
            TriggerOutcome::Coalesced
        );
        assert_eq!(handle.check_all().0, TriggerOutcome::Coalesced);
        let batch = handle.take(now).batch.expect("one pass");
        assert!(batch.all && batch.images.is_empty());
    }

    #[test]
    fn unwatched_image_is_refused_and_digest_form_is_taken_by_its_tag() {
        let handle = handle();
        let error = handle
            .check(&reference("ghcr.io/a/three:latest"))
            .expect_err("not watched");
        assert!(error.to_string().contains("ghcr.io/a/three:latest"), "{error}");
        let pinned = reference(&format!("ghcr.io/a/one:latest@sha256:{}", "a".repeat(64)));
        assert!(handle.check(&pinned).is_ok());
    }

    #[tokio::test]
    async fn wait_resolves_when_the_serving_pass_finishes_or_the_loop_stops() {
        let handle = handle();
        let (_, ticket) = handle.check_all();
        let batch = handle.take(Instant::now()).batch.expect("queued");
        let (_, later) = handle.check_all();
        handle.served(&batch.tickets);
        assert!(handle.wait(ticket).await);
        handle.set_running(false);
        assert!(!handle.wait(later).await, "stopped before serving it");
        assert!(handle.is_stopped());
    }

    #[test]
    fn follow_ups_double_from_the_first_delay_until_the_window_ends() {
        let handle = handle();
        let one = reference("ghcr.io/a/one:latest");
        let claim = |c: char| -> Digest { format!("sha256:{}", c.to_string().repeat(64)).parse().expect("valid") };
        handle.check_expecting(&one, Some(claim('a'))).expect("watched");
        handle.check_expecting(&one, Some(claim('b'))).expect("watched");
        let mut now = Instant::now();
        let batch = handle.take(now).batch.expect("due");
        assert_eq!(
            batch.claims,
            vec![(one.clone(), claim('b'))],
            "the latest claim goes with the pass"
        );
        handle.done(&batch);
        handle.follow_up(&one, &claim('a'), now);
        assert_eq!(handle.counts().follow_ups, 0, "a superseded claim buys nothing");
        let mut delays = Vec::new();
        loop {
            handle.follow_up(&one, &claim('b'), now);
            let taken = handle.take(now);
            let Some(due) = taken.next_due else {
                assert!(taken.batch.is_none());
                break;
            };
            delays.push(due - now);
            let batch = handle.take(due).batch.expect("due after its delay");
            assert_eq!(
                batch.claims,
                vec![(one.clone(), claim('b'))],
                "each follow-up carries the claim"
            );
            handle.done(&batch);
            now = due;
        }
        let ms: Vec<u128> = delays.iter().map(Duration::as_millis).collect();
        assert_eq!(ms[..6], [25, 50, 100, 200, 400, 800]);
        let total: Duration = delays.iter().sum();
        assert!(total <= FOLLOW_UP_WINDOW + Duration::from_millis(5), "{ms:?}");
        assert!(
            total >= FOLLOW_UP_WINDOW - Duration::from_millis(5),
            "the last one at the window's end: {ms:?}"
        );
    }

    #[test]
    fn a_met_claim_stops_the_follow_ups() {
        let handle = handle();
        let one = reference("ghcr.io/a/one:latest");
        let claim: Digest = format!("sha256:{}", "c".repeat(64)).parse().expect("valid");
        handle.check_expecting(&one, Some(claim.clone())).expect("watched");
        let now = Instant::now();
        let batch = handle.take(now).batch.expect("due");
        handle.done(&batch);
        handle.claim_met(&one, &claim);
        handle.follow_up(&one, &claim, now);
        assert_eq!(handle.counts().follow_ups, 0);
    }
}
