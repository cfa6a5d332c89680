//! The fault server answers scripted sequences, hangs, redirects and records what it got.

use std::time::{Duration, Instant};

use test_support::*;

#[test]
fn scripted_sequence_repeats_its_last_reply_and_records_authorization() {
    let server = FaultServer::start();
    server.on(
        "GET",
        "/v2/app/manifests/latest",
        [
            Reply::too_many_requests(2).header("RateLimit-Remaining", "0"),
            Reply::status(200).header("Docker-Content-Digest", "sha256:abc"),
        ],
    );
    let url = server.url("/v2/app/manifests/latest");
    let first = http_send(&HttpRequest::get(&url).header("Authorization", "Bearer t0k")).expect("answers");
    assert_eq!(first.status, 429);
    assert_eq!(first.header("retry-after"), Some("2"));
    for _ in 0..2 {
        let next = http_get(&url).expect("answers");
        assert_eq!(next.status, 200);
        assert_eq!(next.header("docker-content-digest"), Some("sha256:abc"));
    }
    let requests = server.requests_to("/v2/app/manifests/latest");
    assert_eq!(requests.len(), 3);
    assert_eq!(requests[0].authorization(), Some("Bearer t0k"));
    assert_eq!(requests[1].authorization(), None);
    assert_eq!(http_get(&server.url("/other")).expect("answers").status, 404);
}

#[test]
fn multiple_challenges_redirects_and_hangs() {
    let server = FaultServer::start();
    let other = FaultServer::start();
    other.on("*", "/elsewhere*", [Reply::status(204)]);
    server.on(
        "GET",
        "/v2/",
        [Reply::unauthorized(&[
            "Basic realm=\"x\"",
            "Bearer realm=\"https://a/token\",service=\"s\"",
        ])],
    );
    server.on("GET", "/redirect", [Reply::redirect(307, &other.url("/elsewhere/x"))]);
    server.on("GET", "/hang", [Reply::hang()]);

    let challenged = http_get(&server.url("/v2/")).expect("answers");
    assert_eq!(challenged.header_all("www-authenticate").len(), 2);

    let redirected = http_get(&server.url("/redirect")).expect("answers");
    assert_eq!(redirected.status, 307);
    let location = redirected.header("location").expect("Location");
    assert_eq!(http_get(location).expect("answers").status, 204);
    assert_eq!(other.requests().len(), 1);

    let start = Instant::now();
    let hung = http_send(&HttpRequest::get(&server.url("/hang")).timeout(Duration::from_millis(300)));
    assert!(hung.is_err(), "a hanging route never answers");
    assert!(start.elapsed() < Duration::from_secs(5));
}

#[tokio::test(flavor = "current_thread")]
async fn usable_from_a_current_thread_tokio_test() {
    let server = FaultServer::start();
    server.on("GET", "/ok", [Reply::json(200, &serde_json::json!({"ok": true}))]);
    // A blocking call from the test's only runtime thread: the server runs elsewhere.
    let resp = http_get(&server.url("/ok")).expect("answers");
    assert_eq!(resp.text(), r#"{"ok":true}"#);
}
