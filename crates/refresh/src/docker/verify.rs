//! Whether a just started container has proven itself: one look at its inspect answer.

use std::time::Duration;

use bollard::models::{ContainerInspectResponse, ContainerStateStatusEnum, HealthStatusEnum};

/// At most this many characters of logs or probe output in a failure message (the end is kept).
pub(super) const OUTPUT_LIMIT: usize = 1000;

/// What one look at a just started container says.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) enum Verdict {
    /// Not proven yet: look again.
    Wait,
    /// Running through the settle period and, when it has a health check, healthy.
    Proven { health: Option<HealthStatusEnum> },
    /// Exited, restarted or otherwise not running: why, without its logs.
    Down(String),
    /// Its health check said no, or did not say yes in time.
    Unhealthy(String),
}

/// Judges a container `elapsed` after its start: it must be running, never restarted, through
/// `settle`; with a health check (`State.Health`) it must also become `healthy`, and fails on
/// `unhealthy` or when still `starting` at `health_timeout` (counted from the start).
pub(super) fn judge(
    container: &ContainerInspectResponse,
    elapsed: Duration,
    settle: Duration,
    health_timeout: Duration,
) -> Verdict {
    let state = container.state.clone().unwrap_or_default();
    let exit_code = state.exit_code.unwrap_or(0);
    let restarts = container.restart_count.unwrap_or(0);
    if state.restarting == Some(true) || restarts > 0 {
        let last_exit = if exit_code == 0 {
            String::new()
        } else {
            format!(" (last exit code {exit_code})")
        };
        return Verdict::Down(format!(
            "is crash-looping: exited and was restarted by its restart policy {} time(s){last_exit}",
            restarts.max(1)
        ));
    }
    if state.running != Some(true) {
        let mut why = match state.status {
            Some(ContainerStateStatusEnum::EXITED | ContainerStateStatusEnum::DEAD) | None => {
                format!("exited with code {exit_code}")
            }
            Some(status) => format!("is not running (status {status}, exit code {exit_code})"),
        };
        why.push_str(&format!(" {:.1}s after its start", elapsed.as_secs_f32()));
        if state.oom_killed == Some(true) {
            why.push_str(", killed for running out of memory");
        }
        if let Some(error) = state.error.filter(|e| !e.is_empty()) {
            why.push_str(&format!(" ({error})"));
        }
        return Verdict::Down(why);
    }
    let health = state
        .health
        .filter(|h| !matches!(h.status, None | Some(HealthStatusEnum::NONE | HealthStatusEnum::EMPTY)));
    let Some(health) = health else {
        return if elapsed >= settle {
            Verdict::Proven { health: None }
        } else {
            Verdict::Wait
        };
    };
    let last_probe = || {
        health.log.as_ref().and_then(|log| log.last()).map_or_else(
            || "no probe has finished".to_owned(),
            |probe| {
                let output = probe
                    .output
                    .as_deref()
                    .unwrap_or("")
                    .split_whitespace()
                    .collect::<Vec<_>>()
                    .join(" ");
                let output = if output.is_empty() {
                    "no output".to_owned()
                } else {
                    clip_front(&output)
                };
                format!("last probe exit code {}: {output}", probe.exit_code.unwrap_or(-1))
            },
        )
    };
    match health.status {
        Some(HealthStatusEnum::UNHEALTHY) => Verdict::Unhealthy(format!(
            "is unhealthy after {} failing health probe(s) ({})",
            health.failing_streak.unwrap_or(0),
            last_probe()
        )),
        Some(HealthStatusEnum::HEALTHY) if elapsed >= settle => Verdict::Proven {
            health: Some(HealthStatusEnum::HEALTHY),
        },
        Some(status) if status != HealthStatusEnum::HEALTHY && elapsed >= health_timeout.max(settle) => {
            Verdict::Unhealthy(format!(
                "was not healthy within {:.1}s (health status {status}; {})",
                health_timeout.max(settle).as_secs_f32(),
                last_probe()
            ))
        }
        _ => Verdict::Wait,
    }
}

/// `text` cut to its last [`OUTPUT_LIMIT`] characters (the end says the most).
pub(super) fn clip_front(text: &str) -> String {
    let count = text.chars().count();
    if count <= OUTPUT_LIMIT {
        text.to_owned()
    } else {
        let kept: String = text.chars().skip(count - OUTPUT_LIMIT).collect();
        format!("...{kept}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bollard::models::{ContainerState, Health, HealthcheckResult};
    use rstest::rstest;

    const RUNNING: ContainerStateStatusEnum = ContainerStateStatusEnum::RUNNING;
    const EXITED: ContainerStateStatusEnum = ContainerStateStatusEnum::EXITED;
    const CREATED: ContainerStateStatusEnum = ContainerStateStatusEnum::CREATED;
    const STARTING: HealthStatusEnum = HealthStatusEnum::STARTING;
    const HEALTHY: HealthStatusEnum = HealthStatusEnum::HEALTHY;
    const UNHEALTHY: HealthStatusEnum = HealthStatusEnum::UNHEALTHY;

    /// A container as inspect shows it: `running`, `status`, `exit_code`, `restarts`, and the
    /// health status with the last probe's output when it has a health check.
    fn started(
        running: bool,
        status: ContainerStateStatusEnum,
        exit_code: i64,
        restarts: i64,
        health: Option<(HealthStatusEnum, &str)>,
    ) -> ContainerInspectResponse {
        ContainerInspectResponse {
            restart_count: Some(restarts),
            state: Some(ContainerState {
                running: Some(running),
                restarting: Some(false),
                status: Some(status),
                exit_code: Some(exit_code),
                health: health.map(|(status, output)| Health {
                    status: Some(status),
                    failing_streak: Some(i64::from(status == HealthStatusEnum::UNHEALTHY)),
                    log: Some(vec![HealthcheckResult {
                        exit_code: Some(i64::from(status == HealthStatusEnum::UNHEALTHY)),
                        output: Some(output.to_owned()),
                        ..HealthcheckResult::default()
                    }]),
                }),
                ..ContainerState::default()
            }),
            ..ContainerInspectResponse::default()
        }
    }

    enum Expect {
        Wait,
        Proven,
        Down(&'static str),
        Unhealthy(&'static str),
    }

    const SETTLE: Duration = Duration::from_secs(5);
    const HEALTH: Duration = Duration::from_secs(60);

    #[rstest]
    #[case::running_within_settle(started(true, RUNNING, 0, 0, None), 1, Expect::Wait)]
    #[case::running_through_settle(started(true, RUNNING, 0, 0, None), 5, Expect::Proven)]
    #[case::exited_at_once(started(false, EXITED, 3, 0, None), 0, Expect::Down("exited with code 3"))]
    #[case::exited_cleanly_still_down(started(false, EXITED, 0, 0, None), 0, Expect::Down("exited with code 0"))]
    #[case::restarted_by_policy(
        started(true, RUNNING, 0, 2, None),
        1,
        Expect::Down("restarted by its restart policy 2 time(s)")
    )]
    #[case::never_started(started(false, CREATED, 0, 0, None), 0, Expect::Down("not running (status created"))]
    #[case::starting_health(started(true, RUNNING, 0, 0, Some((STARTING, ""))), 30, Expect::Wait)]
    #[case::healthy_before_settle(started(true, RUNNING, 0, 0, Some((HEALTHY, ""))), 1, Expect::Wait)]
    #[case::healthy_after_settle(started(true, RUNNING, 0, 0, Some((HEALTHY, ""))), 5, Expect::Proven)]
    #[case::unhealthy(started(true, RUNNING, 0, 0, Some((UNHEALTHY, "db down\n"))), 1, Expect::Unhealthy("unhealthy after 1 failing health probe(s) (last probe exit code 1: db down)"))]
    #[case::health_timeout(started(true, RUNNING, 0, 0, Some((STARTING, ""))), 60, Expect::Unhealthy("not healthy within 60.0s (health status starting"))]
    #[case::health_none_is_no_check(started(true, RUNNING, 0, 0, Some((HealthStatusEnum::NONE, ""))), 5, Expect::Proven)]
    #[case::exit_beats_health(started(false, EXITED, 137, 0, Some((HEALTHY, ""))), 9, Expect::Down("exited with code 137"))]
    fn new_container_proves_itself_by_running_through_settle_and_being_healthy(
        #[case] container: ContainerInspectResponse,
        #[case] elapsed_secs: u64,
        #[case] expected: Expect,
    ) {
        let verdict = judge(&container, Duration::from_secs(elapsed_secs), SETTLE, HEALTH);
        match (&verdict, expected) {
            (Verdict::Wait, Expect::Wait) | (Verdict::Proven { .. }, Expect::Proven) => {}
            (Verdict::Down(why), Expect::Down(part)) | (Verdict::Unhealthy(why), Expect::Unhealthy(part)) => {
                assert!(why.contains(part), "{why:?} lacks {part:?}");
            }
            _ => panic!("unexpected verdict {verdict:?}"),
        }
    }

    #[test]
    fn clip_keeps_the_end_of_long_output() {
        let long = format!("{}end", "x".repeat(OUTPUT_LIMIT));
        let clipped = clip_front(&long);
        assert!(clipped.starts_with("...") && clipped.ends_with("end"), "{clipped}");
        assert_eq!(clipped.chars().count(), OUTPUT_LIMIT + 3);
        assert_eq!(clip_front("short"), "short");
    }
}
