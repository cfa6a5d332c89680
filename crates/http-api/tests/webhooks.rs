//! Webhooks against the REAL registry: distribution's own notifications make a skopeo push
//! refresh in well under 2 s while the poll interval is 10 minutes; signed endpoints refuse
//! missing, wrong and tampered signatures; a replayed body checks the registry and refreshes
//! nothing; bodies over the cap get 413; unwatched images cost no registry request; a storm of
//! 50 hooks for one image costs at most 2 manifest requests at the registry.

mod common;

use std::time::{Duration, Instant};

use common::{
    GITEA_SECRET, GITHUB_SECRET, HOOK_TOKEN, Harness, Options, distribution_push, dockerhub_push, gitea_created,
    github_published, json, post, send,
};
use http_api::{DEFAULT_MAX_BODY, ENVELOPE_MEDIA_TYPE, sign};
use rstest::rstest;
use test_support::HttpRequest;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registry_notification_of_a_push_refreshes_within_two_seconds_while_polling_every_ten_minutes() {
    let mut h = Harness::start(
        "hook-latency",
        Options {
            notifications: true,
            ..Options::default()
        },
    )
    .await;
    let v1 = h.push("org/app", "app v1").await;
    h.run().await;
    let seeded = h.status.image(&h.reference("org/app")).expect("watched");
    assert_eq!(seeded.seen_digest.as_ref().map(|d| d.as_str()), Some(v1.as_str()));
    // v1's own notification triggers a check too; a hook within the trigger spacing (1 s) of
    // the previous triggered check of the same image waits for it, which is not what this test
    // measures.
    h.wait_for_check("org/app", 1).await;
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let follow_ups = h.triggers.counts().follow_ups;

    let started = Instant::now();
    let v2 = h.push("org/app", "app v2").await;
    let pushed = Instant::now();
    let fired = h.refresher.wait_for(1, Duration::from_secs(10)).await;
    if fired.is_empty() {
        let metrics = send(HttpRequest::get(&h.url("/metrics"))).await.text();
        let status = send(HttpRequest::get(&h.url("/status"))).await.text();
        panic!("the push was not noticed within 10 s\n{status}\n{metrics}");
    }
    let refresh = &fired[0];
    let put = common::manifest_put_at(&h.registry, "org/app", "latest").expect("the registry logged the PUT");
    let after_put = refresh.wall.duration_since(put).unwrap_or(Duration::ZERO);
    let after_skopeo = refresh.at.saturating_duration_since(pushed);
    let follow_ups = h.triggers.counts().follow_ups - follow_ups;
    println!(
        "push -> refresh: {} ms after the registry stored the manifest, {} ms after skopeo returned, {} ms after skopeo started ({} follow-up check(s) for a tag not readable yet)",
        after_put.as_millis(),
        after_skopeo.as_millis(),
        refresh.at.duration_since(started).as_millis(),
        follow_ups,
    );
    assert!(
        after_put < Duration::from_secs(2),
        "refresh {after_put:?} after the manifest PUT"
    );
    assert!(
        after_skopeo < Duration::from_secs(2),
        "refresh {after_skopeo:?} after skopeo returned"
    );
    assert_eq!(refresh.event.old_digest.as_str(), v1);
    assert_eq!(refresh.event.new_digest.as_str(), v2);

    // Our own HEADs make the registry send pull events; they must not trigger checks in a loop.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let checks = h.checks_of("org/app");
    assert!(checks <= 4, "{checks} checks: pull events must not trigger checks");
    let metrics = h.status.metrics();
    let polls = metrics
        .tick_durations
        .iter()
        .find(|(k, _)| *k == "poll")
        .map(|(_, h)| h.count);
    assert_eq!(polls, Some(1), "only the first tick polled");
    assert_eq!(h.refresher.fired().len(), 1);
    let text = send(HttpRequest::get(&h.url("/metrics"))).await.text();
    let samples = common::prom::parse(&text).expect("valid exposition");
    let accepted = samples["imagewatch_webhooks_total{outcome=\"accepted\",sender=\"distribution\"}"];
    let ignored = samples["imagewatch_webhooks_total{outcome=\"ignored\",sender=\"distribution\"}"];
    println!("distribution notifications: {accepted} named the image, {ignored} named nothing (blobs, pulls)");
    assert!(accepted >= 1.0);
    assert_eq!(
        samples["imagewatch_webhooks_total{outcome=\"unauthorized\",sender=\"distribution\"}"],
        0.0
    );
}

/// Sends `body` to a signed endpoint with the given signature header value (None: no header).
async fn signed(h: &Harness, sender: &str, body: &str, signature: Option<String>) -> test_support::HttpResponse {
    let (path, header, event) = match sender {
        "github" => ("/hooks/github", "X-Hub-Signature-256", ("X-GitHub-Event", "package")),
        _ => ("/hooks/gitea", "X-Gitea-Signature", ("X-Gitea-Event", "package")),
    };
    let mut request = post(&h.url(path), body.as_bytes().to_vec()).header(event.0, event.1);
    if let Some(signature) = signature {
        request = request.header(header, &signature);
    }
    send(request).await
}

fn good_signature(sender: &str, body: &str) -> String {
    match sender {
        "github" => format!("sha256={}", sign(GITHUB_SECRET, body.as_bytes())),
        _ => sign(GITEA_SECRET, body.as_bytes()),
    }
}

#[rstest]
#[case::github("github")]
#[case::gitea("gitea")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signed_hook_refuses_missing_wrong_and_tampered_signatures_and_a_replay_refreshes_nothing(
    #[case] sender: &str,
) {
    let mut h = Harness::start(&format!("hook-signed-{sender}"), Options::default()).await;
    let v1 = h.push("org/app", "app v1").await;
    h.run().await;
    let host = h.registry.host();
    let queued_before = h.triggers.counts();
    let body = match sender {
        "github" => github_published(&host, "org", "app", "latest", &v1),
        _ => gitea_created(&host, "org", "app", "latest"),
    };

    let missing = signed(&h, sender, &body, None).await;
    assert_eq!(missing.status, 401, "{}", missing.text());
    let wrong_key = match sender {
        "github" => format!("sha256={}", sign("not-the-secret", body.as_bytes())),
        _ => sign("not-the-secret", body.as_bytes()),
    };
    let wrong = signed(&h, sender, &body, Some(wrong_key)).await;
    assert_eq!(wrong.status, 401, "{}", wrong.text());
    let tampered_body = body.replace("latest", "latesT");
    let tampered = signed(&h, sender, &tampered_body, Some(good_signature(sender, &body))).await;
    assert_eq!(tampered.status, 401, "a signature of another body: {}", tampered.text());
    assert_eq!(h.triggers.counts(), queued_before, "a refused hook asks for nothing");

    let v2 = h.push("org/app", "app v2").await;
    let body = match sender {
        "github" => github_published(&host, "org", "app", "latest", &v2),
        _ => gitea_created(&host, "org", "app", "latest"),
    };
    let checks = h.checks_of("org/app");
    let good = signed(&h, sender, &body, Some(good_signature(sender, &body))).await;
    assert_eq!(good.status, 202, "{}", good.text());
    let answer = json(&good);
    assert_eq!(answer["checks"][0]["image"], h.reference("org/app").to_string());
    assert_eq!(answer["checks"][0]["outcome"], "queued");
    let fired = h.refresher.wait_for(1, Duration::from_secs(5)).await;
    assert_eq!(fired.len(), 1, "the signed hook refreshed");
    assert_eq!(
        (fired[0].event.old_digest.as_str(), fired[0].event.new_digest.as_str()),
        (v1.as_str(), v2.as_str())
    );
    h.wait_for_check("org/app", checks).await;

    // The same body and signature again: the registry is asked, the digest is the seen one.
    let checks = h.checks_of("org/app");
    let replay = signed(&h, sender, &body, Some(good_signature(sender, &body))).await;
    assert_eq!(replay.status, 202, "{}", replay.text());
    h.wait_for_check("org/app", checks).await;
    let state = h.status.image(&h.reference("org/app")).expect("watched");
    assert_eq!(state.last_result, Some("unchanged"));
    assert_eq!(h.refresher.fired().len(), 1, "a replay refreshes nothing");
}

#[rstest]
#[case::distribution("/hooks/distribution")]
#[case::dockerhub("/hooks/dockerhub")]
#[case::github("/hooks/github")]
#[case::gitea("/hooks/gitea")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn body_over_the_cap_is_refused_with_413_and_one_at_the_cap_is_read(#[case] path: &str) {
    let h = Harness::start("hook-oversized", Options::default()).await;
    let url = format!("{}{path}?token={HOOK_TOKEN}", h.base);
    // Signed hooks read a body only behind a well-formed signature header (this one is wrong).
    let signature = ("X-Hub-Signature-256", format!("sha256={}", "0".repeat(64)));
    let post = |url: &str, body: Vec<u8>| {
        post(url, body)
            .header(signature.0, &signature.1)
            .header("X-Gitea-Signature", &"0".repeat(64))
    };
    let over = vec![b' '; DEFAULT_MAX_BODY + 1];
    let response = send(post(&url, over)).await;
    assert_eq!(response.status, 413, "{}", response.text());
    assert!(response.text().contains("capped"), "{}", response.text());

    // A body of exactly the cap is read (and then judged on its merits: padding is valid JSON
    // whitespace, signatures are missing).
    let mut at_cap = br#"{"events":[]}"#.to_vec();
    at_cap.resize(DEFAULT_MAX_BODY, b' ');
    let response = send(post(&url, at_cap)).await;
    assert_ne!(response.status, 413, "{}", response.text());
    let text = send(HttpRequest::get(&h.url("/metrics"))).await.text();
    let samples = common::prom::parse(&text).expect("valid exposition");
    let sender = path.trim_start_matches("/hooks/");
    assert_eq!(
        samples[&format!("imagewatch_webhooks_total{{outcome=\"too_large\",sender=\"{sender}\"}}")],
        1.0
    );
}

#[rstest]
#[case::distribution("distribution")]
#[case::dockerhub("dockerhub")]
#[case::github("github")]
#[case::gitea("gitea")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unwatched_image_is_accepted_and_costs_no_registry_request(#[case] sender: &str) {
    let mut h = Harness::start(&format!("hook-unwatched-{sender}"), Options::default()).await;
    h.push("org/app", "app v1").await;
    h.run().await;
    let host = h.registry.host();
    let before = h.registry_stats();
    let mark = h.registry.mark();
    let queued = h.triggers.counts();
    let (path, body, headers): (&str, String, Vec<(&str, String)>) = match sender {
        "distribution" => (
            "/hooks/distribution",
            distribution_push(&host, "org/other", "latest", &common::nobody()),
            vec![("Authorization", format!("Bearer {HOOK_TOKEN}"))],
        ),
        "dockerhub" => (
            "/hooks/dockerhub",
            dockerhub_push("org/app", "latest"),
            vec![("Authorization", format!("Bearer {HOOK_TOKEN}"))],
        ),
        "github" => {
            let body = github_published(&host, "org", "app", "v9", &common::nobody());
            let signature = good_signature("github", &body);
            (
                "/hooks/github",
                body,
                vec![("X-GitHub-Event", "package".into()), ("X-Hub-Signature-256", signature)],
            )
        }
        _ => {
            let body = gitea_created(&host, "someone", "app", "latest");
            let signature = good_signature("gitea", &body);
            ("/hooks/gitea", body, vec![("X-Gitea-Signature", signature)])
        }
    };
    let mut request = post(&h.url(path), body.into_bytes());
    for (name, value) in &headers {
        request = request.header(name, value);
    }
    let response = send(request).await;
    assert_eq!(response.status, 202, "{}", response.text());
    let answer = json(&response);
    assert_eq!(answer["named"].as_array().map(Vec::len), Some(1), "{answer}");
    assert_eq!(answer["checks"], serde_json::json!([]), "{answer}");
    assert_eq!(h.triggers.counts(), queued, "nothing queued");
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(h.registry_stats(), before, "no request from the client");
    let log = h.registry.requests_since(&mark);
    assert_eq!(log.len(), 0, "the registry saw: {}", log.summary());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn storm_of_fifty_hooks_for_one_image_costs_at_most_two_manifest_requests() {
    let mut h = Harness::start("hook-storm", Options::default()).await;
    h.push("org/app", "app v1").await;
    h.run().await;
    let v2 = h.push("org/app", "app v2").await;
    let before = h.registry_stats();
    let mark = h.registry.mark();
    let body = distribution_push(&h.registry.host(), "org/app", "latest", &v2);
    let url = h.url("/hooks/distribution");
    let statuses = tokio::task::spawn_blocking(move || {
        std::thread::scope(|scope| {
            let threads: Vec<_> = (0..50)
                .map(|_| {
                    let request = post(&url, body.clone().into_bytes())
                        .header("Content-Type", ENVELOPE_MEDIA_TYPE)
                        .header("Authorization", &format!("Bearer {HOOK_TOKEN}"));
                    scope.spawn(move || request.send().map(|r| r.status))
                })
                .collect();
            threads
                .into_iter()
                .map(|t| t.join().expect("thread").expect("sent"))
                .collect::<Vec<u16>>()
        })
    })
    .await
    .expect("storm");
    assert!(statuses.iter().all(|s| *s == 202), "{statuses:?}");
    let fired = h.refresher.wait_for(1, Duration::from_secs(5)).await;
    assert_eq!(fired.len(), 1, "one push, one refresh");
    // A check queued behind the first starts one trigger spacing (1 s) after it: let it run
    // (and anything else that would come) before counting.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let counted = h.registry.requests_since(&mark).for_repository("org/app");
    let client = h.registry_stats().since(&before);
    let storm_at_registry = counted.manifest_reads();
    let storm_at_client = client.manifest_requests();
    let counts = h.triggers.counts();
    println!(
        "50 concurrent hooks: {storm_at_registry} manifest request(s) at the registry ({storm_at_client} counted by the client), {} check(s) of the image, triggers queued {} / coalesced {} / follow-ups {}",
        h.checks_of("org/app") - 1,
        counts.queued,
        counts.coalesced,
        counts.follow_ups
    );
    assert!(
        (1..=2).contains(&storm_at_registry),
        "{storm_at_registry} manifest requests:\n{}",
        counted.summary()
    );
    assert_eq!(storm_at_registry as u64, storm_at_client);
    assert_eq!(h.refresher.fired().len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_hooks_need_the_hook_token_as_bearer_or_query() {
    let mut h = Harness::start("hook-token", Options::default()).await;
    h.push("org/app", "app v1").await;
    h.run().await;
    let body = distribution_push(&h.registry.host(), "org/app", "latest", &common::nobody());
    for (what, url, header, expected) in [
        ("no token", h.url("/hooks/distribution"), None, 401),
        ("wrong query token", h.url("/hooks/distribution?token=nope"), None, 401),
        (
            "wrong bearer",
            h.url("/hooks/distribution"),
            Some("Bearer nope".to_owned()),
            401,
        ),
        (
            "query token",
            h.url(&format!("/hooks/distribution?token={HOOK_TOKEN}")),
            None,
            202,
        ),
        (
            "bearer",
            h.url("/hooks/distribution"),
            Some(format!("Bearer {HOOK_TOKEN}")),
            202,
        ),
        ("dockerhub without a token", h.url("/hooks/dockerhub"), None, 401),
    ] {
        let mut request = post(&url, body.clone().into_bytes());
        if let Some(value) = &header {
            request = request.header("Authorization", value);
        }
        let response = send(request).await;
        assert_eq!(response.status, expected, "{what}: {}", response.text());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn endpoints_without_their_secret_are_disabled() {
    let h = Harness::start(
        "hook-disabled",
        Options {
            config: Box::new(|mut config| {
                config.github_secret = None;
                config.gitea_secret = None;
                config.hook_token = None;
                // As when listening beyond loopback without a hook token.
                config.unauthenticated_hooks = false;
                config
            }),
            ..Options::default()
        },
    )
    .await;
    for path in [
        "/hooks/github",
        "/hooks/gitea",
        "/hooks/distribution",
        "/hooks/dockerhub",
    ] {
        let response = send(post(&h.url(path), b"{}".to_vec())).await;
        assert_eq!(response.status, 404, "{path}: {}", response.text());
        assert!(response.text().contains("disabled"), "{}", response.text());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn github_ping_is_answered_and_checks_nothing() {
    let h = Harness::start("hook-ping", Options::default()).await;
    let body = r#"{"zen":"Keep it logically awesome.","hook_id":1}"#;
    let response = send(
        post(&h.url("/hooks/github"), body.as_bytes().to_vec())
            .header("X-GitHub-Event", "ping")
            .header("X-Hub-Signature-256", &good_signature("github", body)),
    )
    .await;
    assert_eq!(response.status, 200, "{}", response.text());
    assert_eq!(h.triggers.counts().queued, 0);
}
