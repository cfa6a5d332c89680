//! Notification formats against a local receiver: test-support's in-process fault server stands
//! in for Slack, Discord, Teams, ntfy, Gotify and the Apprise API (none of them is reachable
//! from a test, and none ships a server to run). Each case checks the request against the shape
//! the service documents: method, content type, the fields it requires and their types.

use std::time::{Duration, SystemTime};

use refresh::{Notifier, NotifyError, NotifyTarget};
use registry_core::Digest;
use rstest::rstest;
use serde_json::Value;
use test_support::{FaultServer, RecordedRequest, Reply};
use watcher::{ImageReport, ImageStatus, RefreshError, RefreshOutcome, TickReport};

fn digest(c: char) -> Digest {
    format!("sha256:{}", c.to_string().repeat(64)).parse().expect("valid")
}

fn image(status: ImageStatus, name: &str) -> ImageReport {
    ImageReport {
        image: format!("127.0.0.1:5000/team/{name}:latest").parse().expect("valid"),
        runtime: None,
        status,
    }
}

/// A tick that refreshed one image, failed (and rolled back) another and left a third alone.
fn eventful_tick() -> TickReport {
    TickReport {
        started_at: SystemTime::now(),
        duration: Duration::from_millis(40),
        images: vec![
            image(
                ImageStatus::Refreshed {
                    old: digest('a'),
                    new: digest('b'),
                    outcome: RefreshOutcome::new("pulled 1234; recreated 1 (web)"),
                },
                "web",
            ),
            image(
                ImageStatus::RefreshFailed {
                    old: digest('c'),
                    new: digest('d'),
                    error: RefreshError::new(
                        "container api: verify failed: exited with code 1; rolled back: the old container runs again",
                    ),
                },
                "api",
            ),
            image(ImageStatus::Unchanged { digest: digest('e') }, "db"),
        ],
        state_error: None,
    }
}

fn quiet_tick() -> TickReport {
    TickReport {
        images: vec![image(ImageStatus::Unchanged { digest: digest('e') }, "db")],
        ..eventful_tick()
    }
}

fn json(request: &RecordedRequest) -> Value {
    assert_eq!(request.header("content-type"), Some("application/json"));
    serde_json::from_slice(&request.body).expect("a JSON body")
}

fn text<'a>(value: &'a Value, pointer: &str) -> &'a str {
    value
        .pointer(pointer)
        .and_then(Value::as_str)
        .unwrap_or_else(|| panic!("{pointer} is not a string in {value}"))
}

/// Slack incoming webhook: `{"text": ...}` (the one required field).
fn slack(request: &RecordedRequest) -> String {
    text(&json(request), "/text").to_owned()
}

/// Discord execute-webhook: `embeds[]` of `title` and `description` (at most 4,096 characters),
/// integer `color`.
fn discord(request: &RecordedRequest) -> String {
    let body = json(request);
    let embed = &body["embeds"][0];
    assert!(embed["color"].is_u64(), "{body}");
    let description = text(embed, "/description");
    assert!(description.chars().count() <= 4096);
    format!("{}\n{description}", text(embed, "/title"))
}

/// Teams Workflows webhook: a `message` whose attachment is an Adaptive Card.
fn teams(request: &RecordedRequest) -> String {
    let body = json(request);
    assert_eq!(text(&body, "/type"), "message");
    let attachment = &body["attachments"][0];
    assert_eq!(
        text(attachment, "/contentType"),
        "application/vnd.microsoft.card.adaptive"
    );
    let card = &attachment["content"];
    assert_eq!(text(card, "/type"), "AdaptiveCard");
    assert!(text(card, "/version").starts_with("1."));
    card["body"]
        .as_array()
        .expect("card body")
        .iter()
        .map(|block| {
            assert_eq!(text(block, "/type"), "TextBlock");
            text(block, "/text").to_owned()
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// ntfy publish: the message is the plain body; `Title`, `Tags`, `Priority` headers.
fn ntfy(request: &RecordedRequest) -> String {
    assert!(
        request
            .header("content-type")
            .is_some_and(|c| c.starts_with("text/plain"))
    );
    assert_eq!(request.header("priority"), Some("high"), "a failure is high priority");
    assert_eq!(request.header("tags"), Some("warning"));
    format!(
        "{}\n{}",
        request.header("title").expect("Title header"),
        String::from_utf8(request.body.clone()).expect("utf-8")
    )
}

/// Gotify `POST /message`: `title`, `message`, integer `priority`.
fn gotify(request: &RecordedRequest) -> String {
    let body = json(request);
    assert!(body["priority"].is_i64(), "{body}");
    format!("{}\n{}", text(&body, "/title"), text(&body, "/message"))
}

/// Apprise API `POST /notify/{key}`: `body` (required), `title`, `type` one of info, success,
/// warning, failure, and `format`.
fn apprise(request: &RecordedRequest) -> String {
    let body = json(request);
    assert_eq!(text(&body, "/type"), "failure");
    assert!(["text", "markdown", "html"].contains(&text(&body, "/format")));
    format!("{}\n{}", text(&body, "/title"), text(&body, "/body"))
}

#[rstest]
#[case::slack("slack", "/services/T0001/B0002/s3cretpath", None, slack)]
#[case::discord("discord", "/api/webhooks/1234/s3cretpath", None, discord)]
#[case::teams("teams", "/workflows/abc/triggers/manual/paths/invoke", Some("sig=s3cretsig"), teams)]
#[case::ntfy("ntfy", "/imagewatch-s3crettopic", None, ntfy)]
#[case::gotify("gotify", "/message", Some("token=s3cretapptoken"), gotify)]
#[case::apprise("apprise", "/notify/s3cretkey", None, apprise)]
#[tokio::test]
async fn one_message_per_tick_in_the_shape_the_service_documents(
    #[case] format: &str,
    #[case] path: &str,
    #[case] query: Option<&str>,
    #[case] shape: fn(&RecordedRequest) -> String,
) {
    let server = FaultServer::start();
    server.on("POST", path, [Reply::status(200)]);
    let url = match query {
        Some(query) => format!("{}?{query}", server.url(path)),
        None => server.url(path),
    };
    let target = NotifyTarget::parse(&format!("{format}={url}")).expect("valid target");
    let notifier = Notifier::new(vec![target], Duration::from_secs(5)).expect("client");

    assert!(
        notifier.notify(&quiet_tick()).await.is_empty(),
        "nothing moved: no message"
    );
    let results = notifier.notify(&eventful_tick()).await;
    assert_eq!(results, vec![Ok(())]);

    let requests = server.requests_to(path);
    assert_eq!(requests.len(), 1, "one message for the whole tick");
    assert_eq!(requests[0].method, "POST");
    assert_eq!(requests[0].query.as_deref(), query);
    let message = shape(&requests[0]);
    assert!(
        message.contains("imagewatch: 2 moved, 1 refreshed, 1 failed (1 rolled back)"),
        "{message}"
    );
    assert!(
        message.contains("refreshed: 127.0.0.1:5000/team/web:latest"),
        "{message}"
    );
    assert!(
        message.contains("failed, rolled back: 127.0.0.1:5000/team/api:latest"),
        "{message}"
    );
    assert!(
        !message.contains("team/db"),
        "an unchanged image is not mentioned: {message}"
    );
}

#[tokio::test]
async fn a_refused_message_names_the_service_but_not_the_secret_in_its_url() {
    let server = FaultServer::start();
    server.on("POST", "/api/webhooks/1/s3cretpath", [Reply::status(401)]);
    let target = NotifyTarget::parse(&format!("discord={}", server.url("/api/webhooks/1/s3cretpath"))).expect("valid");
    let notifier = Notifier::new(vec![target], Duration::from_secs(5)).expect("client");
    let results = notifier.notify(&eventful_tick()).await;
    let [Err(error)] = results.as_slice() else {
        panic!("{results:?}")
    };
    assert!(matches!(error, NotifyError::Refused { status: 401, .. }), "{error}");
    let message = error.to_string();
    assert!(
        message.starts_with("discord notification to http://127.0.0.1:"),
        "{message}"
    );
    assert!(!message.contains("s3cret"), "{message}");
}
