//! Checks on demand. A [`TriggerHandle`] asks the running loop ([`Watcher::run`]) to check one
//! watched image, or every image, now; polling goes on as the safety net.
//!
//! Requests coalesce: while an image waits in the queue, further requests for it add nothing,
//! so however many arrive at once, an image costs at most the check in flight plus one queued.
//! The handle never talks to a registry and never decides that anything moved: the loop does,
//! by asking the registry, exactly as a poll would.
//!
//! [`Watcher::run`]: crate::Watcher::run

use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard};

use registry_core::ImageReference;
use tokio::sync::{Notify, watch};

use crate::watch_set::WatchSet;

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

/// Identifies the pass that will serve a request; see [`TriggerHandle::wait`].
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
}

#[derive(Debug)]
struct Queue {
    all: bool,
    images: Vec<ImageReference>,
    /// The id of the pass the queued requests will be served by.
    batch: u64,
    counts: TriggerCounts,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct Progress {
    /// The last pass finished.
    served: u64,
    /// The loop returned; nothing queued will be served until it runs again.
    stopped: bool,
}

#[derive(Debug)]
struct Shared {
    set: WatchSet,
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
    pub(crate) id: u64,
    pub(crate) all: bool,
    pub(crate) images: Vec<ImageReference>,
}

impl TriggerHandle {
    pub(crate) fn new(set: WatchSet) -> TriggerHandle {
        TriggerHandle {
            shared: Arc::new(Shared {
                set,
                queue: Mutex::new(Queue {
                    all: false,
                    images: Vec::new(),
                    batch: 1,
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

    /// The images a request may name.
    pub fn watch_set(&self) -> &WatchSet {
        &self.shared.set
    }

    /// Asks for a check of `image` (a reference of the watch set; a `tag@digest` form is taken
    /// by its tag).
    pub fn check(&self, image: &ImageReference) -> Result<(TriggerOutcome, Ticket), NotWatched> {
        let image = image.without_digest();
        if !self.shared.set.images().iter().any(|known| known.reference() == &image) {
            return Err(NotWatched {
                image: image.to_string(),
                watched: self.shared.set.len(),
            });
        }
        let mut queue = self.queue();
        let ticket = Ticket(queue.batch);
        if queue.all || queue.images.contains(&image) {
            queue.counts.coalesced += 1;
            return Ok((TriggerOutcome::Coalesced, ticket));
        }
        queue.images.push(image);
        queue.counts.queued += 1;
        drop(queue);
        self.shared.wake.notify_one();
        Ok((TriggerOutcome::Queued, ticket))
    }

    /// Asks for a check of every image.
    pub fn check_all(&self) -> (TriggerOutcome, Ticket) {
        let mut queue = self.queue();
        let ticket = Ticket(queue.batch);
        if queue.all {
            queue.counts.coalesced += 1;
            return (TriggerOutcome::Coalesced, ticket);
        }
        queue.all = true;
        queue.images.clear();
        queue.counts.queued += 1;
        drop(queue);
        self.shared.wake.notify_one();
        (TriggerOutcome::Queued, ticket)
    }

    /// Waits until the pass serving `ticket` has finished: true then, false if the loop stopped
    /// first. Waits for a loop that has not started yet; put a timeout around it.
    pub async fn wait(&self, ticket: Ticket) -> bool {
        let mut progress = self.shared.progress.subscribe();
        match progress
            .wait_for(|progress| progress.served >= ticket.0 || progress.stopped)
            .await
        {
            Ok(progress) => progress.served >= ticket.0,
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

    /// Takes every queued request as one pass, if there is any.
    pub(crate) fn take(&self) -> Option<Batch> {
        let mut queue = self.queue();
        if !queue.all && queue.images.is_empty() {
            return None;
        }
        let batch = Batch {
            id: queue.batch,
            all: std::mem::take(&mut queue.all),
            images: std::mem::take(&mut queue.images),
        };
        queue.batch += 1;
        Some(batch)
    }

    /// The pass `id` finished.
    pub(crate) fn served(&self, id: u64) {
        self.shared
            .progress
            .send_modify(|progress| progress.served = progress.served.max(id));
    }

    pub(crate) fn set_running(&self, running: bool) {
        self.shared.progress.send_modify(|progress| progress.stopped = !running);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reference(value: &str) -> ImageReference {
        value.parse().expect("valid")
    }

    fn handle() -> TriggerHandle {
        let mut set = WatchSet::new();
        set.add_image(reference("ghcr.io/a/one:latest")).expect("valid");
        set.add_image(reference("ghcr.io/a/two:latest")).expect("valid");
        TriggerHandle::new(set)
    }

    #[test]
    fn requests_for_a_queued_image_coalesce_until_the_loop_takes_it() {
        let handle = handle();
        let one = reference("ghcr.io/a/one:latest");
        let outcomes: Vec<TriggerOutcome> = (0..50).map(|_| handle.check(&one).expect("watched").0).collect();
        assert_eq!(outcomes[0], TriggerOutcome::Queued);
        assert!(outcomes[1..].iter().all(|o| *o == TriggerOutcome::Coalesced));
        let batch = handle.take().expect("one pass");
        assert_eq!(batch.images, vec![one.clone()]);
        assert!(handle.take().is_none(), "nothing left");
        // While that pass is in flight, one more may queue.
        assert_eq!(handle.check(&one).expect("watched").0, TriggerOutcome::Queued);
        assert_eq!(handle.check(&one).expect("watched").0, TriggerOutcome::Coalesced);
        assert_eq!(
            handle.counts(),
            TriggerCounts {
                queued: 2,
                coalesced: 50
            }
        );
    }

    #[test]
    fn a_queued_full_check_covers_single_images() {
        let handle = handle();
        assert_eq!(handle.check_all().0, TriggerOutcome::Queued);
        assert_eq!(
            handle.check(&reference("ghcr.io/a/two")).expect("watched").0,
            TriggerOutcome::Coalesced
        );
        assert_eq!(handle.check_all().0, TriggerOutcome::Coalesced);
        let batch = handle.take().expect("one pass");
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
        let batch = handle.take().expect("queued");
        let (_, later) = handle.check_all();
        handle.served(batch.id);
        assert!(handle.wait(ticket).await);
        handle.set_running(false);
        assert!(!handle.wait(later).await, "stopped before serving it");
        assert!(handle.is_stopped());
    }
}
