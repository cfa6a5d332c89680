//! The state store seam: where seen digests live and, when replicas share a store, which replica
//! may refresh. [`StateFile`] (one process, a JSON file) implements [`StateStore`] here; a store
//! shared by replicas (PostgreSQL) lives in its own crate and adds leadership and the moves seen
//! but not refreshed yet.
//!
//! It must not decide when to refresh: the poll loop asks [`StateStore::leadership`] right
//! before each refresh and records what happened.

use std::collections::HashMap;
use std::fmt;

use async_trait::async_trait;
use registry_core::{Digest, ImageReference};
use tokio::sync::watch;

use crate::state::{FirstSeen, LoadedState, StateError, StateFile};

/// Who may refresh now.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Leadership {
    /// The only watcher on its state: always refreshes.
    Sole,
    /// This replica holds the shared store's leader lock: it refreshes.
    Leader { replica: String },
    /// Another replica leads (`leader`, when known) or none does yet: this one checks and
    /// records the moves it sees, and refreshes nothing.
    Standby { replica: String, leader: Option<String> },
}

impl Leadership {
    pub fn may_refresh(&self) -> bool {
        matches!(self, Leadership::Sole | Leadership::Leader { .. })
    }

    /// The replica that leads, when known (`None` for [`Leadership::Sole`]).
    pub fn leader(&self) -> Option<&str> {
        match self {
            Leadership::Sole => None,
            Leadership::Leader { replica } => Some(replica),
            Leadership::Standby { leader, .. } => leader.as_deref(),
        }
    }

    /// This replica's name (`None` for [`Leadership::Sole`]).
    pub fn replica(&self) -> Option<&str> {
        match self {
            Leadership::Sole => None,
            Leadership::Leader { replica } | Leadership::Standby { replica, .. } => Some(replica),
        }
    }

    /// `sole`, `leader` or `standby`.
    pub fn role(&self) -> &'static str {
        match self {
            Leadership::Sole => "sole",
            Leadership::Leader { .. } => "leader",
            Leadership::Standby { .. } => "standby",
        }
    }
}

/// A state store could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error(transparent)]
    File(#[from] StateError),
    #[error("state store {location}: {message}")]
    Shared { location: String, message: String },
}

/// Where seen digests persist, and who may act on a move.
#[async_trait]
pub trait StateStore: Send + Sync + fmt::Debug {
    /// Where it is, for logs (a path, or a database without its password).
    fn location(&self) -> String;

    /// Whether other replicas write it too: then it is read again before each pass, so a
    /// standby knows what the leader refreshed.
    fn shared(&self) -> bool {
        false
    }

    async fn load(&self) -> Result<LoadedState, StoreError>;

    /// Persists what is seen. A file rewrites its snapshot; a shared store adds first sights
    /// only and never overwrites a digest (refreshes go through [`StateStore::record_refreshed`]).
    /// `first_seen` holds when each not-yet-applied digest was first seen (for the cooldown);
    /// a store may keep it or not.
    async fn save(
        &self,
        seen: &HashMap<ImageReference, Digest>,
        first_seen: &HashMap<ImageReference, FirstSeen>,
    ) -> Result<(), StoreError>;

    /// A move seen and not refreshed here (this replica stands by): kept for the leader.
    async fn record_move(&self, _image: &ImageReference, _old: &Digest, _new: &Digest) -> Result<(), StoreError> {
        Ok(())
    }

    /// A move refreshed: `new` is the seen digest from now on and the move is no longer pending.
    async fn record_refreshed(&self, _image: &ImageReference, _new: &Digest) -> Result<(), StoreError> {
        Ok(())
    }

    /// Who may refresh, checked now (called right before each refresh).
    async fn leadership(&self) -> Leadership {
        Leadership::Sole
    }

    /// Leadership as it changes; `None` when it never does.
    fn leadership_changes(&self) -> Option<watch::Receiver<Leadership>> {
        None
    }
}

#[async_trait]
impl StateStore for StateFile {
    fn location(&self) -> String {
        self.path().display().to_string()
    }

    async fn load(&self) -> Result<LoadedState, StoreError> {
        Ok(StateFile::load(self)?)
    }

    async fn save(
        &self,
        seen: &HashMap<ImageReference, Digest>,
        first_seen: &HashMap<ImageReference, FirstSeen>,
    ) -> Result<(), StoreError> {
        Ok(StateFile::save_with(self, seen, first_seen)?)
    }
}
