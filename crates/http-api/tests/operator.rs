//! The operator's endpoints against the REAL registry: `POST /check` (bearer token, one image or
//! all, waiting or not), `/status` reflecting a check and a refresh, `/metrics` parsing as
//! Prometheus text with counters that move with the work done, `/healthz` following the loop.

mod common;

use std::time::Duration;

use common::{API_TOKEN, Harness, Options, json, send};
use http_api::METRICS_CONTENT_TYPE;
use registry_core::Secret;
use test_support::HttpRequest;

fn with_api_token() -> Options {
    Options {
        config: Box::new(|mut config| {
            config.api_token = Some(Secret::new(API_TOKEN));
            config
        }),
        ..Options::default()
    }
}

fn check(h: &Harness, query: &str) -> HttpRequest {
    HttpRequest::new("POST", &h.url(&format!("/check{query}"))).header("Authorization", &format!("Bearer {API_TOKEN}"))
}

async fn metrics(h: &Harness) -> common::prom::Samples {
    let response = send(HttpRequest::get(&h.url("/metrics"))).await;
    assert_eq!(response.status, 200);
    assert_eq!(response.header("content-type"), Some(METRICS_CONTENT_TYPE));
    common::prom::parse(&response.text()).unwrap_or_else(|e| panic!("{e}\n{}", response.text()))
}

fn delta(before: &common::prom::Samples, after: &common::prom::Samples, key: &str) -> f64 {
    let value = |samples: &common::prom::Samples| {
        *samples
            .get(key)
            .unwrap_or_else(|| panic!("no sample {key} in {:?}", samples.keys().collect::<Vec<_>>()))
    };
    value(after) - value(before)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_then_status_and_metrics_follow_a_check_and_a_refresh() {
    let mut h = Harness::start("operator-flow", with_api_token()).await;
    let v1 = h.push("org/app", "app v1").await;
    h.run().await;
    let image = h.reference("org/app").to_string();

    let status = json(&send(HttpRequest::get(&h.url("/status"))).await);
    assert_eq!(status["watching"], true);
    assert!(status["last_tick"].is_string(), "{status}");
    let entry = &status["images"][0];
    assert_eq!(entry["image"], image);
    assert_eq!(entry["last_result"], "seeded");
    assert_eq!(entry["seen_digest"], v1.as_str());
    assert_eq!(entry["last_digest"], v1.as_str());
    assert!(entry["last_check"].is_string(), "{entry}");
    assert_eq!(entry["last_refresh"], serde_json::Value::Null);
    assert_eq!(entry["last_error"], serde_json::Value::Null);

    let before = metrics(&h).await;
    assert_eq!(before["imagewatch_up"], 1.0);
    assert_eq!(before["imagewatch_watched_images"], 1.0);
    assert_eq!(before["imagewatch_checks_total{result=\"seeded\"}"], 1.0);

    let v2 = h.push("org/app", "app v2").await;
    let response = send(check(&h, &format!("?image={image}&wait=true"))).await;
    assert_eq!(response.status, 200, "{}", response.text());
    let answer = json(&response);
    assert_eq!(answer["scope"], image);
    assert_eq!(answer["outcome"], "queued");
    assert_eq!(answer["served"], true);
    let entry = &answer["images"][0];
    assert_eq!(entry["last_result"], "refreshed", "{answer}");
    assert_eq!(entry["seen_digest"], v2.as_str());
    assert_eq!(entry["last_refresh"]["result"], "success");
    assert_eq!(entry["last_refresh"]["old_digest"], v1.as_str());
    assert_eq!(entry["last_refresh"]["new_digest"], v2.as_str());
    assert_eq!(entry["last_refresh"]["detail"], "recorded");
    assert_eq!(h.refresher.fired().len(), 1);

    let status = json(&send(HttpRequest::get(&h.url("/status"))).await);
    assert_eq!(status["images"][0]["last_refresh"]["new_digest"], v2.as_str());
    assert_eq!(status["images"][0]["checks"], 2);

    let after = metrics(&h).await;
    for (key, moved) in [
        ("imagewatch_checks_total{result=\"refreshed\"}", 1.0),
        ("imagewatch_checks_total{result=\"seeded\"}", 0.0),
        ("imagewatch_refreshes_total{result=\"success\"}", 1.0),
        ("imagewatch_refreshes_total{result=\"failure\"}", 0.0),
        ("imagewatch_triggers_total{outcome=\"queued\"}", 1.0),
        ("imagewatch_tick_duration_seconds_count{kind=\"triggered\"}", 1.0),
        ("imagewatch_tick_duration_seconds_count{kind=\"poll\"}", 0.0),
        ("imagewatch_registry_requests_total{kind=\"manifest_head\"}", 1.0),
        ("imagewatch_registry_requests_total{kind=\"probe\"}", 0.0),
        ("imagewatch_check_errors_total{kind=\"not_found\"}", 0.0),
    ] {
        assert_eq!(delta(&before, &after, key), moved, "{key}");
    }
    assert!(after["imagewatch_tick_duration_seconds_sum{kind=\"triggered\"}"] > 0.0);
    assert!(after.contains_key("imagewatch_token_exchanges_total"));
    assert!(after["imagewatch_last_tick_timestamp_seconds"] > 1.7e9);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_check_shows_in_status_and_in_errors_by_kind() {
    let mut h = Harness::start(
        "operator-error",
        Options {
            watched: vec!["org/app", "org/missing"],
            ..Options::default()
        },
    )
    .await;
    h.push("org/app", "app v1").await;
    h.run().await;
    let before = metrics(&h).await;
    let missing = h.reference("org/missing").to_string();
    let response = send(HttpRequest::new(
        "POST",
        &h.url(&format!("/check?image={missing}&wait=1")),
    ))
    .await;
    assert_eq!(response.status, 200, "{}", response.text());
    let entry = &json(&response)["images"][0];
    assert_eq!(entry["last_result"], "check_failed");
    assert_eq!(entry["last_error"]["kind"], "not_found");
    assert!(
        entry["last_error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("org/missing")),
        "{entry}"
    );
    assert_eq!(entry["last_digest"], serde_json::Value::Null);
    let after = metrics(&h).await;
    assert_eq!(
        delta(&before, &after, "imagewatch_check_errors_total{kind=\"not_found\"}"),
        1.0
    );
    assert_eq!(
        delta(&before, &after, "imagewatch_checks_total{result=\"check_failed\"}"),
        1.0
    );
    // Without a token configured (loopback), /check is open.
    let response = send(HttpRequest::new("POST", &h.url("/check"))).await;
    assert_eq!(response.status, 202, "{}", response.text());
    assert_eq!(json(&response)["scope"], "all");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_needs_the_bearer_token_and_a_watched_valid_reference() {
    let mut h = Harness::start("operator-check-auth", with_api_token()).await;
    h.push("org/app", "app v1").await;
    h.run().await;
    let queued = h.triggers.counts();
    for (what, request, status) in [
        ("no token", HttpRequest::new("POST", &h.url("/check")), 401),
        (
            "wrong token",
            HttpRequest::new("POST", &h.url("/check")).header("Authorization", "Bearer nope"),
            401,
        ),
        (
            "query token is not accepted for /check",
            HttpRequest::new("POST", &h.url(&format!("/check?token={API_TOKEN}"))),
            401,
        ),
        ("invalid reference", check(&h, "?image=Not%20An%20Image"), 400),
        (
            "unwatched image",
            check(&h, &format!("?image={}/org/other:latest", h.registry.host())),
            404,
        ),
    ] {
        let response = send(request).await;
        assert_eq!(response.status, status, "{what}: {}", response.text());
        if status == 401 {
            assert_eq!(
                response.header("www-authenticate"),
                Some("Bearer realm=\"imagewatch\""),
                "{what}"
            );
        }
    }
    assert_eq!(h.triggers.counts(), queued, "refused requests queue nothing");

    let response = send(check(&h, "")).await;
    assert_eq!(response.status, 202, "{}", response.text());
    assert_eq!(json(&response)["scope"], "all");
    let response = send(check(&h, &format!("?image={}/org/app", h.registry.host()))).await;
    assert_eq!(
        response.status,
        202,
        "an implicit :latest is the watched tag: {}",
        response.text()
    );
    let get = send(HttpRequest::get(&h.url("/check"))).await;
    assert_eq!(get.status, 405, "GET /check");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn healthz_follows_the_watch_loop() {
    let mut h = Harness::start("operator-healthz", Options::default()).await;
    h.push("org/app", "app v1").await;
    let before_start = send(HttpRequest::get(&h.url("/healthz"))).await;
    assert_eq!(before_start.status, 200, "{}", before_start.text());
    h.run().await;
    let running = send(HttpRequest::get(&h.url("/healthz"))).await;
    assert_eq!((running.status, json(&running)["status"].clone()), (200, "ok".into()));
    h.stop_watcher().await;
    let stopped = send(HttpRequest::get(&h.url("/healthz"))).await;
    assert_eq!(stopped.status, 503, "{}", stopped.text());
    let samples = metrics(&h).await;
    assert_eq!(samples["imagewatch_up"], 0.0);
    // A check asked for while the loop is stopped is not served: waiting answers 202, not 200.
    let waited = send(HttpRequest::new("POST", &h.url("/check?wait=true")).timeout(Duration::from_secs(5))).await;
    assert_eq!(waited.status, 202, "{}", waited.text());
    assert_eq!(json(&waited)["served"], false);
}
