//! Notifications people read: one message per tick that moved something (refreshed, failed,
//! rolled back, or a move seen in monitor-only mode), in the shape each service documents:
//! Slack-compatible incoming webhooks (`text`), Discord webhooks (`embeds`), Microsoft Teams
//! Workflows webhooks (an Adaptive Card message), ntfy (plain body, `Title`/`Tags`/`Priority`
//! headers), Gotify (`/message` JSON) and the Apprise API (`/notify` JSON, which fans out to its
//! services). Ticks where nothing moved send nothing.
//!
//! The URLs hold secrets (Slack's and Discord's paths, a Gotify or Teams token in the query): they
//! reach only their host, over https (plain http only to loopback), never follow a redirect, and
//! appear in logs and errors as their origin alone.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use serde_json::{Value, json};
use tokio::sync::mpsc;
use tracing::{info, warn};
use watcher::{ImageStatus, TickReport};

use crate::webhook::redacted_url;

/// Discord refuses an embed description over 4,096 characters; the others take more, but a
/// message nobody scrolls through helps nobody.
const BODY_LIMIT: usize = 3500;

/// The shape a service expects.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NotifyFormat {
    Slack,
    Discord,
    Teams,
    Ntfy,
    Gotify,
    Apprise,
}

impl NotifyFormat {
    pub const ALL: [NotifyFormat; 6] = [
        NotifyFormat::Slack,
        NotifyFormat::Discord,
        NotifyFormat::Teams,
        NotifyFormat::Ntfy,
        NotifyFormat::Gotify,
        NotifyFormat::Apprise,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            NotifyFormat::Slack => "slack",
            NotifyFormat::Discord => "discord",
            NotifyFormat::Teams => "teams",
            NotifyFormat::Ntfy => "ntfy",
            NotifyFormat::Gotify => "gotify",
            NotifyFormat::Apprise => "apprise",
        }
    }
}

impl FromStr for NotifyFormat {
    type Err = String;

    fn from_str(value: &str) -> Result<Self, Self::Err> {
        NotifyFormat::ALL
            .into_iter()
            .find(|format| format.as_str() == value)
            .ok_or_else(|| {
                format!("unknown notification format {value:?}; expected one of slack, discord, teams, ntfy, gotify, apprise")
            })
    }
}

/// One place messages go.
#[derive(Clone)]
pub struct NotifyTarget {
    pub format: NotifyFormat,
    url: reqwest::Url,
}

impl NotifyTarget {
    /// Parses `FORMAT=URL` (`slack=https://hooks.slack.com/services/...`).
    pub fn parse(value: &str) -> Result<NotifyTarget, String> {
        let (format, url) = value
            .split_once('=')
            .ok_or_else(|| "expected FORMAT=URL, e.g. `ntfy=https://ntfy.sh/my-topic`".to_owned())?;
        let format: NotifyFormat = format.trim().parse()?;
        let url: reqwest::Url = url
            .trim()
            .parse()
            .map_err(|e| format!("the {} URL is not a URL ({e}); expected `https://...`", format.as_str()))?;
        NotifyTarget::new(format, url)
    }

    /// A target; the URL must be https, or http to a loopback host.
    pub fn new(format: NotifyFormat, url: reqwest::Url) -> Result<NotifyTarget, String> {
        let loopback = url.host_str().is_some_and(|host| {
            host == "localhost"
                || host
                    .trim_matches(['[', ']'])
                    .parse::<std::net::IpAddr>()
                    .is_ok_and(|ip| ip.is_loopback())
        });
        match url.scheme() {
            "https" => {}
            "http" if loopback => {}
            _ => {
                return Err(format!(
                    "the {} URL {} must be https (plain http only to loopback): it holds a secret",
                    format.as_str(),
                    redacted_url(&url)
                ));
            }
        }
        Ok(NotifyTarget { format, url })
    }

    /// The URL as logs may show it.
    pub fn redacted(&self) -> String {
        redacted_url(&self.url)
    }
}

impl fmt::Debug for NotifyTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NotifyTarget")
            .field("format", &self.format)
            .field("url", &self.redacted())
            .finish()
    }
}

/// What one tick moved, for people.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Summary {
    /// Images whose digest moved, refreshed or not.
    pub moved: usize,
    pub refreshed: usize,
    pub failed: usize,
    /// Of `failed`, those whose old container was put back.
    pub rolled_back: usize,
    /// One line per moved image.
    pub lines: Vec<String>,
}

impl Summary {
    /// What `report` moved; `None` when nothing did (nothing worth a message).
    pub fn of(report: &TickReport) -> Option<Summary> {
        let mut summary = Summary::default();
        for image in &report.images {
            match &image.status {
                ImageStatus::Refreshed { old, new, outcome } => {
                    summary.moved += 1;
                    if outcome.summary().starts_with("monitor only") {
                        summary
                            .lines
                            .push(format!("moved: {} {} -> {}", image.image, old.short(), new.short()));
                    } else {
                        summary.refreshed += 1;
                        summary.lines.push(format!(
                            "refreshed: {} {} -> {}: {}",
                            image.image,
                            old.short(),
                            new.short(),
                            outcome.summary()
                        ));
                    }
                }
                ImageStatus::RefreshFailed { old, new, error } => {
                    summary.moved += 1;
                    summary.failed += 1;
                    let rolled_back = error.message().contains("rolled back");
                    if rolled_back {
                        summary.rolled_back += 1;
                    }
                    summary.lines.push(format!(
                        "{}: {} {} -> {}: {}",
                        if rolled_back { "failed, rolled back" } else { "failed" },
                        image.image,
                        old.short(),
                        new.short(),
                        error.message()
                    ));
                }
                _ => {}
            }
        }
        (summary.moved > 0).then_some(summary)
    }

    /// `imagewatch: 2 moved, 1 refreshed, 1 failed (1 rolled back)`.
    pub fn title(&self) -> String {
        let mut title = format!("imagewatch: {} moved, {} refreshed", self.moved, self.refreshed);
        if self.failed > 0 {
            title.push_str(&format!(", {} failed", self.failed));
            if self.rolled_back > 0 {
                title.push_str(&format!(" ({} rolled back)", self.rolled_back));
            }
        }
        title
    }

    /// The lines, cut to [`BODY_LIMIT`] characters.
    pub fn body(&self) -> String {
        let body = self.lines.join("\n");
        if body.chars().count() <= BODY_LIMIT {
            return body;
        }
        let kept: String = body.chars().take(BODY_LIMIT).collect();
        format!("{kept}\n...")
    }

    fn failed_any(&self) -> bool {
        self.failed > 0
    }
}

/// The request for `target`: body, content type and extra headers.
pub fn request(format: NotifyFormat, summary: &Summary) -> (Vec<u8>, &'static str, Vec<(&'static str, String)>) {
    let title = summary.title();
    let body = summary.body();
    let json_body = |value: Value| (value.to_string().into_bytes(), "application/json", Vec::new());
    match format {
        NotifyFormat::Slack => json_body(json!({ "text": format!("*{title}*\n{body}") })),
        NotifyFormat::Discord => json_body(json!({
            "username": "imagewatch",
            "embeds": [{
                "title": title,
                "description": body,
                // Discord's red and green, as decimal RGB.
                "color": if summary.failed_any() { 15548997 } else { 5763719 },
            }],
        })),
        NotifyFormat::Teams => json_body(json!({
            "type": "message",
            "attachments": [{
                "contentType": "application/vnd.microsoft.card.adaptive",
                "contentUrl": null,
                "content": {
                    "$schema": "http://adaptivecards.io/schemas/adaptive-card.json",
                    "type": "AdaptiveCard",
                    "version": "1.4",
                    "body": [
                        { "type": "TextBlock", "text": title, "weight": "Bolder", "size": "Medium", "wrap": true },
                        { "type": "TextBlock", "text": body, "wrap": true },
                    ],
                },
            }],
        })),
        NotifyFormat::Ntfy => (
            body.into_bytes(),
            "text/plain; charset=utf-8",
            vec![
                // Header values must be ASCII; the title is built from ASCII only.
                ("Title", title),
                (
                    "Tags",
                    if summary.failed_any() {
                        "warning"
                    } else {
                        "white_check_mark"
                    }
                    .to_owned(),
                ),
                (
                    "Priority",
                    if summary.failed_any() { "high" } else { "default" }.to_owned(),
                ),
            ],
        ),
        NotifyFormat::Gotify => json_body(json!({
            "title": title,
            "message": body,
            "priority": if summary.failed_any() { 8 } else { 4 },
        })),
        NotifyFormat::Apprise => json_body(json!({
            "title": title,
            "body": body,
            "type": if summary.failed_any() { "failure" } else { "success" },
            "format": "text",
        })),
    }
}

/// Why a message was not delivered.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum NotifyError {
    #[error("{format} notification to {url} answered HTTP {status}")]
    Refused {
        format: &'static str,
        url: String,
        status: u16,
    },
    #[error("{format} notification to {url} not delivered: {reason}")]
    Unreachable {
        format: &'static str,
        url: String,
        reason: String,
    },
}

/// Sends one message per eventful tick to every target.
#[derive(Clone, Debug)]
pub struct Notifier {
    targets: Vec<NotifyTarget>,
    client: reqwest::Client,
}

impl Notifier {
    pub fn new(targets: Vec<NotifyTarget>, timeout: Duration) -> Result<Notifier, String> {
        let client = reqwest::Client::builder()
            .timeout(timeout)
            .connect_timeout(timeout)
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("imagewatch/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| format!("notification client cannot be built: {e}"))?;
        Ok(Notifier { targets, client })
    }

    /// Tells every target what `report` moved (nothing when nothing moved). Answers one result
    /// per target, in order.
    pub async fn notify(&self, report: &TickReport) -> Vec<Result<(), NotifyError>> {
        let Some(summary) = Summary::of(report) else {
            return Vec::new();
        };
        let mut results = Vec::with_capacity(self.targets.len());
        for target in &self.targets {
            let result = self.send(target, &summary).await;
            match &result {
                Ok(()) => info!(format = target.format.as_str(), url = %target.redacted(), "notified"),
                Err(error) => warn!(error = %error, "notification not delivered"),
            }
            results.push(result);
        }
        results
    }

    async fn send(&self, target: &NotifyTarget, summary: &Summary) -> Result<(), NotifyError> {
        let (body, content_type, headers) = request(target.format, summary);
        let mut request = self
            .client
            .post(target.url.clone())
            .header(reqwest::header::CONTENT_TYPE, content_type)
            .body(body);
        for (name, value) in headers {
            request = request.header(name, value);
        }
        let answer = request.send().await.map_err(|e| NotifyError::Unreachable {
            format: target.format.as_str(),
            url: target.redacted(),
            // Without the URL: reqwest's errors carry it whole.
            reason: e.without_url().to_string(),
        })?;
        let status = answer.status();
        if status.is_success() {
            Ok(())
        } else {
            Err(NotifyError::Refused {
                format: target.format.as_str(),
                url: target.redacted(),
                status: status.as_u16(),
            })
        }
    }

    /// Notifies for every report received until the channel closes.
    pub async fn serve(self, mut reports: mpsc::Receiver<TickReport>) {
        while let Some(report) = reports.recv().await {
            self.notify(&report).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rstest::rstest;

    #[rstest]
    #[case::plain_http_elsewhere("slack=http://hooks.example.com/services/T/B/s3cret", "must be https")]
    #[case::unknown_format("pager=https://example.com/x", "unknown notification format")]
    #[case::no_equals("https://example.com/x", "expected FORMAT=URL")]
    fn bad_target_is_a_one_line_error_without_the_secret(#[case] input: &str, #[case] expected: &str) {
        let error = NotifyTarget::parse(input).expect_err("refused");
        assert!(error.contains(expected), "{error}");
        assert!(!error.contains("s3cret"), "{error}");
    }

    #[test]
    fn debug_of_a_target_hides_path_and_query() {
        let target = NotifyTarget::parse("gotify=https://gotify.example.com/message?token=s3cret").expect("valid");
        let printed = format!("{target:?}");
        assert!(!printed.contains("s3cret"), "{printed}");
        assert!(printed.contains("https://gotify.example.com/***"), "{printed}");
    }
}
