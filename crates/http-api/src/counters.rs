//! Webhook request counters, by sender and outcome, for `/metrics`. Counting only.

use std::sync::atomic::{AtomicU64, Ordering};

use crate::hooks::Sender;

/// How one webhook request ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HookOutcome {
    /// It named at least one watched image: checks were asked for.
    Accepted,
    /// It named images, none of them watched: nothing checked.
    Unmatched,
    /// It named nothing (a pull, a delete, a blob, a ping, another event): nothing checked.
    Ignored,
    /// Missing or wrong signature or token.
    Unauthorized,
    /// Not the sender's payload.
    Invalid,
    /// Over the body cap.
    TooLarge,
    /// The endpoint has no secret or token configured.
    Disabled,
    /// Too many bodies were being read at once: answered 503, to be retried.
    Busy,
    /// The body did not arrive within the body timeout.
    Slow,
}

impl HookOutcome {
    pub const ALL: [HookOutcome; 9] = [
        HookOutcome::Accepted,
        HookOutcome::Unmatched,
        HookOutcome::Ignored,
        HookOutcome::Unauthorized,
        HookOutcome::Invalid,
        HookOutcome::TooLarge,
        HookOutcome::Disabled,
        HookOutcome::Busy,
        HookOutcome::Slow,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            HookOutcome::Accepted => "accepted",
            HookOutcome::Unmatched => "unmatched",
            HookOutcome::Ignored => "ignored",
            HookOutcome::Unauthorized => "unauthorized",
            HookOutcome::Invalid => "invalid",
            HookOutcome::TooLarge => "too_large",
            HookOutcome::Disabled => "disabled",
            HookOutcome::Busy => "busy",
            HookOutcome::Slow => "slow",
        }
    }
}

const CELLS: usize = Sender::ALL.len() * HookOutcome::ALL.len();

fn cell(sender: Sender, outcome: HookOutcome) -> usize {
    let s = Sender::ALL.iter().position(|x| *x == sender).unwrap_or(0);
    let o = HookOutcome::ALL.iter().position(|x| *x == outcome).unwrap_or(0);
    s * HookOutcome::ALL.len() + o
}

#[derive(Debug)]
pub(crate) struct HookCounters {
    cells: [AtomicU64; CELLS],
}

impl Default for HookCounters {
    fn default() -> HookCounters {
        HookCounters {
            cells: std::array::from_fn(|_| AtomicU64::new(0)),
        }
    }
}

/// A copy of the counters.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct HookCounts {
    cells: [u64; CELLS],
}

impl HookCounters {
    pub(crate) fn count(&self, sender: Sender, outcome: HookOutcome) {
        self.cells[cell(sender, outcome)].fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn snapshot(&self) -> HookCounts {
        HookCounts {
            cells: std::array::from_fn(|i| self.cells[i].load(Ordering::Relaxed)),
        }
    }
}

impl HookCounts {
    /// Every (sender, outcome, count), zeros included, in a fixed order.
    pub(crate) fn iter(&self) -> impl Iterator<Item = (&'static str, &'static str, u64)> + '_ {
        Sender::ALL.iter().flat_map(move |sender| {
            HookOutcome::ALL
                .iter()
                .map(move |outcome| (sender.as_str(), outcome.as_str(), self.cells[cell(*sender, *outcome)]))
        })
    }
}
