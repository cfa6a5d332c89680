//! The watcher: which images to watch ([`WatchSet`]), what was seen ([`StateFile`], or any
//! [`StateStore`]), and when to refresh ([`Watcher`]). Digests come through the [`DigestSource`]
//! seam and moves go out through the [`Refresher`] seam, after the trust [`Gate`] and the
//! cooldown admit them. What it knows is readable at any time from its [`StatusBoard`]; checks
//! can be asked for now through its [`TriggerHandle`].
//!
//! Architecture invariant: this crate holds no auth code and no HTTP; it depends only on
//! `registry-core`. Refreshers (Docker, webhook, command) live in the `refresh` crate.

mod backoff;
pub mod gate;
mod poll;
pub mod refresher;
pub mod registry_source;
pub mod report;
mod retry;
pub mod source;
pub mod state;
pub mod status;
pub mod store;
pub mod trigger;
pub mod watch_set;

pub use backoff::BackoffPolicy;
pub use gate::{Attestation, Gate, GateVerdict};
pub use poll::{MAX_JITTER, Reload, Reloader, Watcher, WatcherConfig};
pub use refresher::{MonitorOnly, RefreshError, RefreshEvent, RefreshOutcome, Refresher};
pub use registry_source::RegistrySource;
pub use report::{ImageReport, ImageStatus, TickCounts, TickReport};
pub use retry::MAX_RETRY_DELAY;
pub use source::{CheckError, CheckErrorKind, DigestSource};
pub use state::{FirstSeen, LoadedState, STATE_VERSION, SetAside, StateError, StateFile};
pub use status::{
    ErrorRecord, ImageState, PendingRecord, RefreshRecord, RetryRecord, StatusBoard, TickKind, WatcherMetrics,
};
pub use store::{Leadership, StateStore, StoreError};
pub use trigger::{
    FOLLOW_UP_FIRST, FOLLOW_UP_WINDOW, NotWatched, Ticket, TriggerCounts, TriggerHandle, TriggerOutcome,
};
pub use watch_set::{DEFAULT_RUNTIMES, WatchSet, WatchSetError, WatchedImage, runtime_image};
