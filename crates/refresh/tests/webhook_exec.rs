//! The webhook refresher against a real HTTP server (test-support's fault server, scripted per
//! test) and the exec refresher against real processes.

use std::time::{Duration, SystemTime};

use hmac::{Hmac, Mac};
use refresh::exec::{
    ENV_HOST, ENV_IMAGE, ENV_NEW_DIGEST, ENV_OLD_DIGEST, ENV_RUNTIME, ENV_TIME, ENV_VERIFIED_AT, ENV_VERIFIED_KEY,
};
use refresh::webhook::{EVENT_HEADER, SIGNATURE_HEADER};
use refresh::{ExecConfig, ExecError, ExecRefresher, WebhookConfig, WebhookError, WebhookRefresher};
use registry_core::{Digest, Secret};
use rstest::rstest;
use sha2::Sha256;
use test_support::{FaultServer, Reply};
use watcher::{RefreshEvent, Refresher};

const SECRET: &str = "w3bh00k-s3cret";

fn digest(c: char) -> Digest {
    format!("sha256:{}", c.to_string().repeat(64)).parse().expect("valid")
}

fn event() -> RefreshEvent {
    RefreshEvent::new(
        "127.0.0.1:5000/molecule-ai/workspace-template-hermes:latest"
            .parse()
            .expect("valid"),
        Some("hermes".into()),
        digest('a'),
        digest('b'),
        SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000),
    )
}

/// The hook path the configured URL carries (its `tok3n` stands for a token in a path).
const HOOK: &str = "/hooks/tok3n";

/// A server answering POSTs to [`HOOK`] with `replies`, in order (the last one repeats).
fn hook_server(replies: impl IntoIterator<Item = Reply>) -> FaultServer {
    let server = FaultServer::start();
    server.on("POST", HOOK, replies);
    server
}

fn webhook(server: &FaultServer, attempts: u32, timeout: Duration) -> WebhookRefresher {
    let mut config = WebhookConfig::new(server.url(HOOK).parse().expect("url"));
    config.secret = Some(Secret::new(SECRET));
    config.attempts = attempts;
    config.timeout = timeout;
    config.backoff = Duration::from_millis(20);
    WebhookRefresher::new(config).expect("client")
}

#[tokio::test]
async fn webhook_posts_the_event_signed_over_the_exact_body() {
    let server = hook_server([Reply::status(204)]);
    let delivery = webhook(&server, 3, Duration::from_secs(5))
        .deliver(&event())
        .await
        .expect("delivered");
    assert_eq!((delivery.status, delivery.attempts), (204, 1));
    let requests = server.requests_to(HOOK);
    assert_eq!(requests.len(), 1);
    let request = &requests[0];
    assert_eq!(request.header("content-type"), Some("application/json"));
    assert_eq!(request.header(EVENT_HEADER), Some("digest-moved"));
    let mut mac = Hmac::<Sha256>::new_from_slice(SECRET.as_bytes()).expect("key");
    mac.update(&request.body);
    let expected = format!("sha256={}", hex::encode(mac.finalize().into_bytes()));
    assert_eq!(request.header(SIGNATURE_HEADER), Some(expected.as_str()));
    let body: serde_json::Value = serde_json::from_slice(&request.body).expect("json");
    assert_eq!(
        body,
        serde_json::json!({
            "image": "127.0.0.1:5000/molecule-ai/workspace-template-hermes:latest",
            "runtime": "hermes",
            "host": "127.0.0.1:5000",
            "old_digest": digest('a').as_str(),
            "new_digest": digest('b').as_str(),
            "time": "2027-01-15T08:00:00Z",
            "verification": null,
        })
    );
}

#[tokio::test]
async fn unsigned_webhook_sends_no_signature() {
    let server = FaultServer::start();
    server.on("POST", "/plain", [Reply::status(200)]);
    let refresher =
        WebhookRefresher::new(WebhookConfig::new(server.url("/plain").parse().expect("url"))).expect("client");
    refresher.deliver(&event()).await.expect("delivered");
    assert_eq!(server.requests_to("/plain")[0].header(SIGNATURE_HEADER), None);
}

#[rstest]
#[case::unavailable_then_ok(vec![Reply::status(503), Reply::status(200)], Ok(2), 2)]
#[case::rate_limited_then_ok(vec![Reply::too_many_requests(0), Reply::status(202)], Ok(2), 2)]
#[case::always_failing_gives_up(vec![Reply::status(500)], Err(500), 3)]
#[case::client_error_is_not_retried(vec![Reply::status(400).body("bad event")], Err(400), 1)]
#[case::redirect_is_not_followed(vec![Reply::redirect(302, "http://127.0.0.1:1/elsewhere")], Err(302), 1)]
#[tokio::test]
async fn webhook_retries_only_transient_answers_and_only_2xx_succeeds(
    #[case] replies: Vec<Reply>,
    #[case] expected: Result<u32, u16>,
    #[case] requests: usize,
) {
    let server = hook_server(replies);
    let result = webhook(&server, 3, Duration::from_secs(5)).deliver(&event()).await;
    match (result, expected) {
        (Ok(delivery), Ok(attempts)) => assert_eq!(delivery.attempts, attempts),
        (Err(WebhookError::Refused { status, .. }), Err(expected)) => assert_eq!(status, expected),
        (other, expected) => panic!("{other:?} but expected {expected:?}"),
    }
    let seen = server.requests_to(HOOK);
    assert_eq!(seen.len(), requests);
    assert!(
        seen.windows(2).all(|pair| pair[0].body == pair[1].body),
        "same body every try"
    );
}

#[tokio::test]
async fn webhook_that_never_answers_times_out_each_attempt() {
    let server = hook_server([Reply::hang()]);
    let started = std::time::Instant::now();
    let error = webhook(&server, 2, Duration::from_millis(300))
        .deliver(&event())
        .await
        .expect_err("times out");
    assert!(
        matches!(&error, WebhookError::Unreachable { attempts: 2, reason, .. } if reason.contains("no answer")),
        "{error:?}"
    );
    assert!(started.elapsed() < Duration::from_secs(5));
}

#[tokio::test]
async fn webhook_failure_through_the_refresher_hides_secret_and_path() {
    let server = hook_server([Reply::status(403).body("nope")]);
    let error = webhook(&server, 1, Duration::from_secs(5))
        .refresh(&event())
        .await
        .expect_err("refused");
    let message = error.to_string();
    assert!(message.contains("403") && message.contains("nope"), "{message}");
    assert!(!message.contains(SECRET) && !message.contains("tok3n"), "{message}");
}

#[tokio::test]
async fn unreachable_webhook_is_reported_not_panicked() {
    let port = test_support::free_port();
    let mut config = WebhookConfig::new(format!("http://127.0.0.1:{port}/x").parse().expect("url"));
    config.attempts = 2;
    config.backoff = Duration::from_millis(10);
    let error = WebhookRefresher::new(config)
        .expect("client")
        .deliver(&event())
        .await
        .expect_err("refused");
    assert!(
        matches!(error, WebhookError::Unreachable { attempts: 2, .. }),
        "{error:?}"
    );
}

fn sh(script: &str, timeout: Duration) -> ExecRefresher {
    let mut config = ExecConfig::new("/bin/sh", vec!["-c".into(), script.into()]);
    config.timeout = timeout;
    ExecRefresher::new(config)
}

#[tokio::test]
async fn command_gets_the_event_in_its_environment() {
    let script = format!(
        "printf '%s|%s|%s|%s|%s|%s' \"${ENV_IMAGE}\" \"${ENV_RUNTIME}\" \"${ENV_HOST}\" \"${ENV_OLD_DIGEST}\" \"${ENV_NEW_DIGEST}\" \"${ENV_TIME}\""
    );
    let run = sh(&script, Duration::from_secs(10))
        .run(&event())
        .await
        .expect("exit 0");
    assert_eq!(
        run.stdout,
        format!(
            "127.0.0.1:5000/molecule-ai/workspace-template-hermes:latest|hermes|127.0.0.1:5000|{}|{}|2027-01-15T08:00:00Z",
            digest('a'),
            digest('b')
        )
    );
}

/// The test process has a full environment (CARGO_*, HOME, PATH...): the program sees only the
/// event's variables and what the configuration lists.
#[tokio::test]
async fn command_inherits_only_the_listed_variables() {
    let mut config = ExecConfig::new("/usr/bin/env", vec![]);
    config.inherited = vec![
        ("PATH".into(), Secret::new("/usr/bin:/bin")),
        ("DEPLOY_KEY".into(), Secret::new("named-by-the-operator")),
    ];
    let run = ExecRefresher::new(config).run(&event()).await.expect("exit 0");
    let mut names: Vec<&str> = run
        .stdout
        .lines()
        .filter_map(|line| line.split_once('=').map(|(name, _)| name))
        .collect();
    names.sort_unstable();
    assert_eq!(
        names,
        [
            "DEPLOY_KEY",
            ENV_HOST,
            ENV_IMAGE,
            ENV_NEW_DIGEST,
            ENV_OLD_DIGEST,
            ENV_RUNTIME,
            ENV_TIME,
            ENV_VERIFIED_AT,
            ENV_VERIFIED_KEY,
            "PATH"
        ]
    );
    assert!(run.stdout.contains("DEPLOY_KEY=named-by-the-operator"));
}

#[test]
fn inherited_values_are_redacted_in_debug() {
    let mut config = ExecConfig::new("/bin/true", vec![]);
    config.inherited = vec![("DEPLOY_KEY".into(), Secret::new("named-by-the-operator"))];
    assert!(!format!("{config:?}").contains("named-by-the-operator"));
}

#[tokio::test]
async fn command_and_webhook_get_the_signature_that_admitted_the_digest() {
    let event = event().with_verification(Some(watcher::Attestation {
        key_fingerprint: "SHA256:0123".into(),
        found: "tag sha256-bbbb.sig".into(),
    }));
    let script = format!("printf '%s|%s' \"${ENV_VERIFIED_KEY}\" \"${ENV_VERIFIED_AT}\"");
    let run = sh(&script, Duration::from_secs(10)).run(&event).await.expect("exit 0");
    assert_eq!(run.stdout, "SHA256:0123|tag sha256-bbbb.sig");
    let unverified = sh(&script, Duration::from_secs(10))
        .run(&self::event())
        .await
        .expect("exit 0");
    assert_eq!(unverified.stdout, "|", "empty when no policy applies");
    let server = hook_server([Reply::status(204)]);
    webhook(&server, 1, Duration::from_secs(5))
        .deliver(&event)
        .await
        .expect("delivered");
    let body: serde_json::Value = serde_json::from_slice(&server.requests_to(HOOK)[0].body).expect("json");
    assert_eq!(
        body["verification"],
        serde_json::json!({"key_fingerprint": "SHA256:0123", "found": "tag sha256-bbbb.sig"})
    );
}

#[tokio::test]
async fn arguments_are_passed_without_a_shell() {
    let refresher = ExecRefresher::new(ExecConfig::new(
        "/bin/echo",
        vec!["$IMAGEWATCH_IMAGE".into(), "a b;c".into()],
    ));
    let run = refresher.run(&event()).await.expect("exit 0");
    assert_eq!(run.stdout, "$IMAGEWATCH_IMAGE a b;c\n");
}

#[tokio::test]
async fn what_the_command_printed_is_in_the_refresh_outcome() {
    let outcome = sh("echo recreated ws-1", Duration::from_secs(10))
        .refresh(&event())
        .await
        .expect("exit 0");
    assert_eq!(outcome.summary(), "/bin/sh exited with code 0: recreated ws-1");
}

#[tokio::test]
async fn a_silent_command_has_a_bare_outcome() {
    let outcome = sh("true", Duration::from_secs(10))
        .refresh(&event())
        .await
        .expect("exit 0");
    assert_eq!(outcome.summary(), "/bin/sh exited with code 0");
}

#[tokio::test]
async fn non_zero_exit_fails_with_the_code_and_the_stderr_tail() {
    let error = sh(
        "echo starting; echo 'registry said no' >&2; exit 3",
        Duration::from_secs(10),
    )
    .run(&event())
    .await
    .expect_err("exit 3");
    assert!(
        matches!(&error, ExecError::Failed { code: Some(3), stderr, .. } if stderr == "registry said no"),
        "{error:?}"
    );
    let message = sh("exit 3", Duration::from_secs(10))
        .refresh(&event())
        .await
        .expect_err("fails")
        .to_string();
    assert!(message.contains("code 3") && message.contains("(empty)"), "{message}");
}

#[tokio::test]
async fn long_stderr_is_cut_to_its_tail() {
    let error = sh(
        "i=0; while [ $i -lt 500 ]; do echo \"line $i\" >&2; i=$((i+1)); done; exit 1",
        Duration::from_secs(10),
    )
    .run(&event())
    .await
    .expect_err("exit 1");
    let ExecError::Failed { stderr, .. } = error else {
        panic!("{error:?}")
    };
    assert!(stderr.starts_with("...") && stderr.ends_with("line 499"), "{stderr}");
    assert!(stderr.len() < 1100, "{}", stderr.len());
}

#[tokio::test]
async fn command_that_hangs_is_killed_at_the_timeout() {
    let started = std::time::Instant::now();
    let error = sh("exec sleep 30", Duration::from_millis(300))
        .run(&event())
        .await
        .expect_err("times out");
    assert!(matches!(error, ExecError::Timeout { .. }), "{error:?}");
    assert!(started.elapsed() < Duration::from_secs(5));
}

#[tokio::test]
async fn missing_program_is_a_clear_error() {
    let error = ExecRefresher::new(ExecConfig::new("/nonexistent/refresh-hook", vec![]))
        .run(&event())
        .await
        .expect_err("no such program");
    assert!(
        matches!(&error, ExecError::Spawn { program, .. } if program == "/nonexistent/refresh-hook"),
        "{error:?}"
    );
}
