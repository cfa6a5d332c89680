//! Refresh retries. A move whose refresh failed is offered again at the next tick; if the same
//! digest keeps failing, it is offered less and less often (2, 4, 8, ... ticks later, at most an
//! hour): a Docker recreate that must stop the old container first (stop-first) costs a short
//! outage at every attempt with a broken image, and even a start-first attempt costs a pull and
//! a settle period. A newer digest is tried at once: it may be the fix. The schedule of a
//! failing image is on the status board (`/status`).

use std::collections::HashMap;
use std::time::Duration;

use registry_core::{Digest, ImageReference};
use tokio::time::Instant;

/// The longest wait between two attempts at the same failing digest.
pub const MAX_RETRY_DELAY: Duration = Duration::from_secs(3600);

/// Failed refreshes per image, by the digest that failed.
#[derive(Debug, Default)]
pub(crate) struct RefreshRetries {
    failed: HashMap<ImageReference, Failed>,
}

#[derive(Debug)]
struct Failed {
    digest: Digest,
    failures: u32,
    not_before: Instant,
}

impl RefreshRetries {
    /// How long a refresh of `image` to `digest` must still wait; `None` when it may run now.
    pub(crate) fn wait(&self, image: &ImageReference, digest: &Digest, now: Instant) -> Option<(u32, Duration)> {
        let failed = self.failed.get(image).filter(|failed| &failed.digest == digest)?;
        let remaining = failed.not_before.saturating_duration_since(now);
        (!remaining.is_zero()).then_some((failed.failures, remaining))
    }

    /// Records a failed refresh; returns the delay before the same digest is tried again.
    pub(crate) fn failed(
        &mut self,
        image: &ImageReference,
        digest: &Digest,
        interval: Duration,
        now: Instant,
    ) -> Duration {
        let failures = match self.failed.get(image) {
            Some(failed) if &failed.digest == digest => failed.failures + 1,
            _ => 1,
        };
        let delay = retry_delay(failures, interval);
        self.failed.insert(
            image.clone(),
            Failed {
                digest: digest.clone(),
                failures,
                not_before: now + delay,
            },
        );
        delay
    }

    /// Failed attempts in a row at the image's failing digest.
    pub(crate) fn failures(&self, image: &ImageReference) -> u32 {
        self.failed.get(image).map_or(0, |failed| failed.failures)
    }

    pub(crate) fn succeeded(&mut self, image: &ImageReference) {
        self.failed.remove(image);
    }
}

/// The wait after the `failures`-th failure: none after the first (the next check retries, even
/// one triggered sooner than the next tick), then `2^(failures−1)` ticks, doubling. Half an
/// interval is taken off so that a tick arriving early by its jitter (at most half an interval)
/// still gets its turn.
pub(crate) fn retry_delay(failures: u32, interval: Duration) -> Duration {
    if failures <= 1 {
        return Duration::ZERO;
    }
    let ticks = 2u32.saturating_pow(failures - 1);
    interval
        .saturating_mul(ticks)
        .saturating_sub(interval / 2)
        .min(MAX_RETRY_DELAY)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rstest::rstest;

    const MINUTE: Duration = Duration::from_secs(60);

    #[rstest]
    #[case::first_failure_retries_at_the_next_check(1, Duration::ZERO)]
    #[case::second_waits_two_ticks(2, MINUTE * 3 / 2)]
    #[case::third_waits_four(3, MINUTE * 7 / 2)]
    #[case::fourth_waits_eight(4, MINUTE * 15 / 2)]
    #[case::capped(7, MINUTE * 60)]
    #[case::huge_count_does_not_overflow(u32::MAX, MINUTE * 60)]
    fn delay_grows_and_is_capped(#[case] failures: u32, #[case] expected: Duration) {
        assert_eq!(retry_delay(failures, MINUTE), expected);
    }

    #[test]
    fn a_newer_digest_is_not_held_back_by_an_older_failure() {
        let image: ImageReference = "ghcr.io/a/b:latest".parse().expect("valid");
        let broken: Digest = format!("sha256:{}", "b".repeat(64)).parse().expect("valid");
        let fixed: Digest = format!("sha256:{}", "c".repeat(64)).parse().expect("valid");
        let now = Instant::now();
        let mut retries = RefreshRetries::default();
        retries.failed(&image, &broken, MINUTE, now);
        retries.failed(&image, &broken, MINUTE, now);
        assert_eq!(retries.wait(&image, &broken, now), Some((2, MINUTE * 3 / 2)));
        assert_eq!(retries.wait(&image, &fixed, now), None);
        assert_eq!(retries.wait(&image, &broken, now + MINUTE * 2), None);
        retries.succeeded(&image);
        assert_eq!(retries.wait(&image, &broken, now), None);
    }
}
