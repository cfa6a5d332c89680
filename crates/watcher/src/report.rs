//! What one tick did, image by image: the value `Watcher::tick` returns, so callers (the CLI's
//! `--once`, tests) judge a tick without reading logs.

use std::fmt;
use std::time::{Duration, SystemTime};

use registry_core::{Digest, ImageReference};

use crate::refresher::{RefreshError, RefreshOutcome};
use crate::source::CheckError;

/// What happened to one image in one tick.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ImageStatus {
    /// First observation: the digest is remembered, nothing is refreshed.
    Seeded { digest: Digest },
    /// Same digest as last seen.
    Unchanged { digest: Digest },
    /// The digest moved and the refresher succeeded; the new digest is now the seen one.
    Refreshed {
        old: Digest,
        new: Digest,
        outcome: RefreshOutcome,
    },
    /// The digest moved and the refresher failed; the old digest stays seen, so the next tick
    /// retries.
    RefreshFailed {
        old: Digest,
        new: Digest,
        error: RefreshError,
    },
    /// The digest moved to one whose refresh already failed `failures` times; the next attempt
    /// waits `retry_in` (see `retry`), unless the digest moves again.
    RefreshDeferred {
        old: Digest,
        new: Digest,
        failures: u32,
        retry_in: Duration,
    },
    /// The digest moved to one the trust gate holds (no valid signature yet); the old digest
    /// stays applied, and the gate is asked again in `retry_in` (or at the next tick).
    Unverified {
        old: Digest,
        new: Digest,
        reason: String,
        retry_in: Duration,
    },
    /// The digest moved to one first seen less than the cooldown ago; it is refreshed to once
    /// it has stayed the tag's digest for `remaining` more.
    CoolingDown {
        old: Digest,
        new: Digest,
        remaining: Duration,
    },
    /// The digest could not be fetched.
    CheckFailed { error: CheckError },
    /// Not checked: its registry asked us to back off for this long yet.
    BackedOff { remaining: Duration },
    /// Not checked or not refreshed because the watcher is stopping; retried at the next start.
    Interrupted,
    /// The digest moved and another replica of a shared state store leads (`leader`, when
    /// known): the move is recorded for it and not refreshed here.
    StandingBy {
        old: Digest,
        new: Digest,
        leader: Option<String>,
    },
}

impl ImageStatus {
    /// Whether the image ended the tick not known to be up to date.
    pub fn is_failure(&self) -> bool {
        matches!(
            self,
            ImageStatus::RefreshFailed { .. }
                | ImageStatus::RefreshDeferred { .. }
                | ImageStatus::Unverified { .. }
                | ImageStatus::CheckFailed { .. }
                | ImageStatus::BackedOff { .. }
                | ImageStatus::Interrupted
        )
    }

    /// Every [`label`](ImageStatus::label), in [`index`](ImageStatus::index) order.
    pub const LABELS: [&'static str; 11] = [
        "seeded",
        "unchanged",
        "refreshed",
        "refresh_failed",
        "refresh_deferred",
        "check_failed",
        "backed_off",
        "interrupted",
        "unverified",
        "cooling_down",
        "standing_by",
    ];

    /// The variant's position in [`LABELS`](ImageStatus::LABELS).
    pub fn index(&self) -> usize {
        match self {
            ImageStatus::Seeded { .. } => 0,
            ImageStatus::Unchanged { .. } => 1,
            ImageStatus::Refreshed { .. } => 2,
            ImageStatus::RefreshFailed { .. } => 3,
            ImageStatus::RefreshDeferred { .. } => 4,
            ImageStatus::CheckFailed { .. } => 5,
            ImageStatus::BackedOff { .. } => 6,
            ImageStatus::Interrupted => 7,
            ImageStatus::Unverified { .. } => 8,
            ImageStatus::CoolingDown { .. } => 9,
            ImageStatus::StandingBy { .. } => 10,
        }
    }

    /// A stable snake_case name for logs.
    pub fn label(&self) -> &'static str {
        ImageStatus::LABELS[self.index()]
    }
}

impl fmt::Display for ImageStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ImageStatus::Seeded { digest } => write!(f, "seeded at {}", digest.short()),
            ImageStatus::Unchanged { digest } => write!(f, "unchanged at {}", digest.short()),
            ImageStatus::Refreshed { old, new, outcome } => {
                write!(f, "moved {} -> {}, refreshed: {outcome}", old.short(), new.short())
            }
            ImageStatus::RefreshFailed { old, new, error } => {
                write!(f, "moved {} -> {}, refresh failed: {error}", old.short(), new.short())
            }
            ImageStatus::RefreshDeferred {
                old,
                new,
                failures,
                retry_in,
            } => write!(
                f,
                "moved {} -> {}, whose refresh failed {failures} time(s); next attempt in {}s",
                old.short(),
                new.short(),
                retry_in.as_secs()
            ),
            ImageStatus::Unverified {
                old,
                new,
                reason,
                retry_in,
            } => write!(
                f,
                "moved {} -> {}, not refreshed: unverified ({reason}); checked again in {}s",
                old.short(),
                new.short(),
                retry_in.as_secs()
            ),
            ImageStatus::CoolingDown { old, new, remaining } => write!(
                f,
                "moved {} -> {}, cooling down: refreshed in {}s if it stays",
                old.short(),
                new.short(),
                remaining.as_secs()
            ),
            ImageStatus::CheckFailed { error } => write!(f, "check failed: {error}"),
            ImageStatus::BackedOff { remaining } => {
                write!(f, "skipped: registry backed off for {}s more", remaining.as_secs())
            }
            ImageStatus::Interrupted => f.write_str("interrupted by shutdown"),
            ImageStatus::StandingBy { old, new, leader } => write!(
                f,
                "moved {} -> {}, left to the leading replica ({})",
                old.short(),
                new.short(),
                leader.as_deref().unwrap_or("none yet")
            ),
        }
    }
}

/// One image's line in a tick report.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ImageReport {
    pub image: ImageReference,
    pub runtime: Option<String>,
    pub status: ImageStatus,
}

/// Counts per status, for the one-line tick summary.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TickCounts {
    pub seeded: usize,
    pub unchanged: usize,
    pub refreshed: usize,
    pub refresh_failed: usize,
    pub refresh_deferred: usize,
    pub check_failed: usize,
    pub backed_off: usize,
    pub interrupted: usize,
    pub unverified: usize,
    pub cooling_down: usize,
    pub standing_by: usize,
}

/// Everything one tick did, in watch-set order.
#[derive(Clone, Debug)]
pub struct TickReport {
    pub started_at: SystemTime,
    pub duration: Duration,
    pub images: Vec<ImageReport>,
    /// Set when the state file could not be written at the end of the tick.
    pub state_error: Option<String>,
}

impl TickReport {
    /// Whether any image failed (or was skipped) or the state could not be saved.
    pub fn failed(&self) -> bool {
        self.state_error.is_some() || self.images.iter().any(|image| image.status.is_failure())
    }

    pub fn status_of(&self, image: &ImageReference) -> Option<&ImageStatus> {
        self.images
            .iter()
            .find(|report| &report.image == image)
            .map(|report| &report.status)
    }

    pub fn counts(&self) -> TickCounts {
        let mut counts = TickCounts::default();
        for image in &self.images {
            let slot = match image.status {
                ImageStatus::Seeded { .. } => &mut counts.seeded,
                ImageStatus::Unchanged { .. } => &mut counts.unchanged,
                ImageStatus::Refreshed { .. } => &mut counts.refreshed,
                ImageStatus::RefreshFailed { .. } => &mut counts.refresh_failed,
                ImageStatus::RefreshDeferred { .. } => &mut counts.refresh_deferred,
                ImageStatus::CheckFailed { .. } => &mut counts.check_failed,
                ImageStatus::BackedOff { .. } => &mut counts.backed_off,
                ImageStatus::Interrupted => &mut counts.interrupted,
                ImageStatus::Unverified { .. } => &mut counts.unverified,
                ImageStatus::CoolingDown { .. } => &mut counts.cooling_down,
                ImageStatus::StandingBy { .. } => &mut counts.standing_by,
            };
            *slot += 1;
        }
        counts
    }
}

impl fmt::Display for TickReport {
    /// One line per image: `<image>: <status>`, outside text in the status escaped (a refresh
    /// outcome carries what a receiver or a command said).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        use registry_core::outside::escaped;
        for image in &self.images {
            writeln!(f, "{}: {}", image.image, escaped(&image.status.to_string()))?;
        }
        if let Some(error) = &self.state_error {
            writeln!(f, "state file: {}", escaped(&error.to_string()))?;
        }
        Ok(())
    }
}
