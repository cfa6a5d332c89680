//! Per-registry back-off: a 429 (honouring `Retry-After`), or repeated 5xx answers or timeouts
//! from one host pause that host's checks until the back-off passes; other hosts go on. A
//! refused connection does not: it costs nothing to ask again, and a registry that restarts is
//! checked at the next tick. Time is tokio's, so tests can pause and advance it.

use std::collections::HashMap;
use std::time::Duration;

use registry_core::RegistryHost;
use tokio::time::Instant;

use crate::source::{CheckError, CheckErrorKind};

/// When and how long to back off.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BackoffPolicy {
    /// Consecutive ticks with a 5xx answer or a timeout from one host before it is paused.
    pub server_errors_before_backoff: u32,
    /// The first pause after repeated 5xx; doubles with each further one.
    pub server_error_base: Duration,
    /// The pause after a tick with a 429 without `Retry-After`; doubles with each further one.
    pub rate_limit_default: Duration,
    /// No computed pause is longer than this.
    pub max: Duration,
    /// A `Retry-After` longer than this is capped to it.
    pub retry_after_max: Duration,
}

impl Default for BackoffPolicy {
    fn default() -> BackoffPolicy {
        BackoffPolicy {
            server_errors_before_backoff: 2,
            server_error_base: Duration::from_secs(30),
            rate_limit_default: Duration::from_secs(60),
            max: Duration::from_secs(15 * 60),
            retry_after_max: Duration::from_secs(60 * 60),
        }
    }
}

#[derive(Debug, Default)]
struct HostState {
    until: Option<Instant>,
    server_errors: u32,
    rate_limits: u32,
}

/// The back-off state of every host seen.
#[derive(Debug, Default)]
pub(crate) struct Backoffs {
    policy: BackoffPolicy,
    hosts: HashMap<RegistryHost, HostState>,
}

impl Backoffs {
    pub(crate) fn new(policy: BackoffPolicy) -> Backoffs {
        Backoffs {
            policy,
            hosts: HashMap::new(),
        }
    }

    /// When `host` may be asked again, if it is paused now.
    pub(crate) fn paused_until(&self, host: &RegistryHost, now: Instant) -> Option<Instant> {
        self.hosts
            .get(host)
            .and_then(|state| state.until)
            .filter(|until| *until > now)
    }

    pub(crate) fn record_success(&mut self, host: &RegistryHost) {
        self.hosts.remove(host);
    }

    /// Notes a failed check; answers the new pause when this failure starts or extends one.
    pub(crate) fn record_error(&mut self, host: &RegistryHost, error: &CheckError, now: Instant) -> Option<Duration> {
        let policy = &self.policy;
        let state = self.hosts.entry(host.clone()).or_default();
        let pause = match error.kind() {
            CheckErrorKind::RateLimited => {
                state.rate_limits += 1;
                match error.retry_after() {
                    Some(retry_after) => retry_after.min(policy.retry_after_max),
                    None => doubled(policy.rate_limit_default, state.rate_limits - 1, policy.max),
                }
            }
            CheckErrorKind::Unreachable if !error.timed_out() => return None,
            CheckErrorKind::Server | CheckErrorKind::Unreachable => {
                state.server_errors += 1;
                if state.server_errors < policy.server_errors_before_backoff {
                    return None;
                }
                let beyond = state.server_errors - policy.server_errors_before_backoff;
                doubled(policy.server_error_base, beyond, policy.max)
            }
            _ => return None,
        };
        let until = now + pause;
        if state.until.is_some_and(|current| current >= until) {
            return None;
        }
        state.until = Some(until);
        Some(pause)
    }
}

fn doubled(base: Duration, times: u32, max: Duration) -> Duration {
    base.saturating_mul(2u32.saturating_pow(times.min(16))).min(max)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rstest::rstest;

    fn host() -> RegistryHost {
        "ghcr.io".parse().expect("valid")
    }

    #[rstest]
    #[case::retry_after_honoured(CheckErrorKind::RateLimited, Some(45), false, 1, Some(45))]
    #[case::retry_after_capped(CheckErrorKind::RateLimited, Some(86_400), false, 1, Some(3_600))]
    #[case::rate_limit_default(CheckErrorKind::RateLimited, None, false, 1, Some(60))]
    #[case::rate_limit_doubles(CheckErrorKind::RateLimited, None, false, 3, Some(240))]
    #[case::one_server_error_is_tolerated(CheckErrorKind::Server, None, false, 1, None)]
    #[case::repeated_server_errors_pause(CheckErrorKind::Server, None, false, 2, Some(30))]
    #[case::server_pause_doubles_and_caps(CheckErrorKind::Server, None, false, 12, Some(900))]
    #[case::not_found_never_pauses(CheckErrorKind::NotFound, None, false, 5, None)]
    #[case::unreachable_never_pauses(CheckErrorKind::Unreachable, None, false, 5, None)]
    #[case::one_timeout_is_tolerated(CheckErrorKind::Unreachable, None, true, 1, None)]
    #[case::a_host_that_keeps_timing_out_pauses(CheckErrorKind::Unreachable, None, true, 3, Some(60))]
    fn pause_follows_the_policy(
        #[case] kind: CheckErrorKind,
        #[case] retry_after: Option<u64>,
        #[case] timed_out: bool,
        #[case] failures: u32,
        #[case] expected_secs: Option<u64>,
    ) {
        let mut backoffs = Backoffs::new(BackoffPolicy::default());
        let error = CheckError::new(kind, "x")
            .with_retry_after(retry_after.map(Duration::from_secs))
            .with_timed_out(timed_out);
        let now = Instant::now();
        let mut last = None;
        for i in 1..=failures {
            // Each failure is reported after the previous pause ran out.
            let later = now + Duration::from_secs(100_000 * u64::from(i));
            last = backoffs.record_error(&host(), &error, later);
        }
        assert_eq!(last, expected_secs.map(Duration::from_secs));
    }

    #[test]
    fn success_clears_the_pause_and_the_counts() {
        let mut backoffs = Backoffs::new(BackoffPolicy::default());
        let now = Instant::now();
        let error = CheckError::new(CheckErrorKind::Server, "502");
        backoffs.record_error(&host(), &error, now);
        assert!(backoffs.record_error(&host(), &error, now).is_some());
        assert!(backoffs.paused_until(&host(), now).is_some());
        backoffs.record_success(&host());
        assert!(backoffs.paused_until(&host(), now).is_none());
        assert!(backoffs.record_error(&host(), &error, now).is_none(), "count restarted");
    }

    #[test]
    fn pause_ends_on_time_and_is_per_host() {
        let mut backoffs = Backoffs::new(BackoffPolicy::default());
        let now = Instant::now();
        let error = CheckError::new(CheckErrorKind::RateLimited, "429").with_retry_after(Some(Duration::from_secs(10)));
        backoffs.record_error(&host(), &error, now);
        let other: RegistryHost = "quay.io".parse().expect("valid");
        assert!(backoffs.paused_until(&other, now).is_none());
        assert!(backoffs.paused_until(&host(), now + Duration::from_secs(9)).is_some());
        assert!(backoffs.paused_until(&host(), now + Duration::from_secs(10)).is_none());
    }
}
