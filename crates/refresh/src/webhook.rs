//! The webhook refresher: POSTs the event as JSON, optionally signed with HMAC-SHA256 over the
//! exact body (`X-Imagewatch-Signature-256: sha256=<hex>`, the GitHub convention), retrying
//! transient failures a bounded number of times. Only a 2xx answer is success; redirects are
//! not followed (a signed body must not wander to another host). The secret and the URL's path
//! and query (which often hold a token) never reach a log or an error.

use std::fmt;
use std::time::Duration;

use async_trait::async_trait;
use hmac::{Hmac, Mac};
use registry_core::Secret;
use sha2::Sha256;
use tracing::{debug, info, warn};
use watcher::{RefreshError, RefreshEvent, RefreshOutcome, Refresher};

/// The header carrying the body's signature.
pub const SIGNATURE_HEADER: &str = "X-Imagewatch-Signature-256";
/// The header naming the event type.
pub const EVENT_HEADER: &str = "X-Imagewatch-Event";
/// The event type sent.
pub const EVENT_NAME: &str = "digest-moved";
/// How much of a refusing answer's body goes into the error.
const BODY_SNIPPET: usize = 300;

/// Where and how to deliver.
#[derive(Clone)]
pub struct WebhookConfig {
    pub url: reqwest::Url,
    /// Signs each body when set.
    pub secret: Option<Secret>,
    /// Per attempt, connection included.
    pub timeout: Duration,
    /// Attempts in all (at least 1).
    pub attempts: u32,
    /// Wait before the second attempt; doubles before each further one.
    pub backoff: Duration,
}

impl WebhookConfig {
    pub fn new(url: reqwest::Url) -> WebhookConfig {
        WebhookConfig {
            url,
            secret: None,
            timeout: Duration::from_secs(10),
            attempts: 3,
            backoff: Duration::from_secs(1),
        }
    }
}

impl fmt::Debug for WebhookConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WebhookConfig")
            .field("url", &redacted_url(&self.url))
            .field("signed", &self.secret.is_some())
            .field("timeout", &self.timeout)
            .field("attempts", &self.attempts)
            .field("backoff", &self.backoff)
            .finish()
    }
}

/// Why a delivery failed, after every attempt.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum WebhookError {
    #[error("webhook {url} answered HTTP {status} after {attempts} attempt(s): {body}")]
    Refused {
        url: String,
        status: u16,
        attempts: u32,
        body: String,
    },
    #[error("webhook {url} not reached after {attempts} attempt(s): {reason}")]
    Unreachable { url: String, attempts: u32, reason: String },
    #[error("webhook client cannot be built: {0}")]
    Client(String),
    #[error("webhook URL {url} is not http(s); expected `https://...` (or `http://` for loopback)")]
    Scheme { url: String },
}

/// A successful delivery.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Delivery {
    pub status: u16,
    pub attempts: u32,
}

/// The webhook refresher.
#[derive(Clone, Debug)]
pub struct WebhookRefresher {
    config: WebhookConfig,
    client: reqwest::Client,
}

impl WebhookRefresher {
    pub fn new(config: WebhookConfig) -> Result<WebhookRefresher, WebhookError> {
        if !matches!(config.url.scheme(), "http" | "https") {
            return Err(WebhookError::Scheme {
                url: redacted_url(&config.url),
            });
        }
        let client = reqwest::Client::builder()
            .timeout(config.timeout)
            .connect_timeout(config.timeout)
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("imagewatch/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| WebhookError::Client(e.to_string()))?;
        Ok(WebhookRefresher { config, client })
    }

    pub fn config(&self) -> &WebhookConfig {
        &self.config
    }

    /// Sends `event`, retrying connection failures, timeouts, 408, 429 and 5xx.
    pub async fn deliver(&self, event: &RefreshEvent) -> Result<Delivery, WebhookError> {
        let body = serde_json::to_vec(&event.to_json()).map_err(|e| WebhookError::Client(e.to_string()))?;
        let signature = self.config.secret.as_ref().map(|secret| signature(secret, &body));
        let url = redacted_url(&self.config.url);
        let attempts = self.config.attempts.max(1);
        let mut last: Option<WebhookError> = None;
        for attempt in 1..=attempts {
            if attempt > 1 {
                let pause = self.config.backoff.saturating_mul(2u32.saturating_pow(attempt - 2));
                debug!(url = %url, attempt, pause_ms = u64::try_from(pause.as_millis()).unwrap_or(u64::MAX), "retrying webhook");
                tokio::time::sleep(pause).await;
            }
            let mut request = self
                .client
                .post(self.config.url.clone())
                .header(reqwest::header::CONTENT_TYPE, "application/json")
                .header(EVENT_HEADER, EVENT_NAME)
                .body(body.clone());
            if let Some(signature) = &signature {
                request = request.header(SIGNATURE_HEADER, signature.as_str());
            }
            match request.send().await {
                Ok(response) if response.status().is_success() => {
                    let status = response.status().as_u16();
                    info!(url = %url, status, attempt, image = %event.image, "webhook delivered");
                    return Ok(Delivery {
                        status,
                        attempts: attempt,
                    });
                }
                Ok(response) => {
                    let status = response.status().as_u16();
                    let text = response.text().await.unwrap_or_default();
                    let error = WebhookError::Refused {
                        url: url.clone(),
                        status,
                        attempts: attempt,
                        body: snippet(&text),
                    };
                    let transient = status == 408 || status == 429 || status >= 500;
                    warn!(url = %url, status, attempt, transient, "webhook refused");
                    if !transient {
                        return Err(error);
                    }
                    last = Some(error);
                }
                Err(error) => {
                    let reason = if error.is_timeout() {
                        format!("no answer within {}s", self.config.timeout.as_secs_f64())
                    } else {
                        // reqwest's message names the URL; keep only the cause chain's tail.
                        root_cause(&error)
                    };
                    warn!(url = %url, attempt, reason = %reason, "webhook not reached");
                    last = Some(WebhookError::Unreachable {
                        url: url.clone(),
                        attempts: attempt,
                        reason,
                    });
                }
            }
        }
        Err(last.unwrap_or_else(|| WebhookError::Unreachable {
            url,
            attempts,
            reason: "no attempt made".into(),
        }))
    }
}

#[async_trait]
impl Refresher for WebhookRefresher {
    fn name(&self) -> &'static str {
        "webhook"
    }

    async fn refresh(&self, event: &RefreshEvent) -> Result<RefreshOutcome, RefreshError> {
        match self.deliver(event).await {
            Ok(delivery) => Ok(RefreshOutcome::new(format!(
                "webhook answered HTTP {} (attempt {})",
                delivery.status, delivery.attempts
            ))),
            Err(error) => Err(RefreshError::new(error.to_string())),
        }
    }
}

/// `sha256=<lowercase hex HMAC-SHA256 of body keyed with secret>`.
pub fn signature(secret: &Secret, body: &[u8]) -> String {
    // HMAC takes keys of any length, so this cannot fail.
    let mut mac = match Hmac::<Sha256>::new_from_slice(secret.expose().as_bytes()) {
        Ok(mac) => mac,
        Err(_) => unreachable!("HMAC accepts any key length"),
    };
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

/// The URL's origin only: paths and queries of webhook URLs often carry tokens.
pub fn redacted_url(url: &reqwest::Url) -> String {
    let origin = url.origin().ascii_serialization();
    if url.path() == "/" && url.query().is_none() {
        origin
    } else {
        format!("{origin}/***")
    }
}

fn root_cause(error: &(dyn std::error::Error + 'static)) -> String {
    let mut cause = error;
    while let Some(next) = cause.source() {
        cause = next;
    }
    cause.to_string()
}

fn snippet(text: &str) -> String {
    let text = text.trim();
    if text.len() <= BODY_SNIPPET {
        return text.to_owned();
    }
    let mut end = BODY_SNIPPET;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}...", &text[..end])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signature_matches_a_known_hmac_vector() {
        // RFC 4231 test case 2.
        let secret = Secret::new("Jefe");
        assert_eq!(
            signature(&secret, b"what do ya want for nothing?"),
            "sha256=5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }

    #[test]
    fn debug_and_errors_hide_the_secret_and_the_path() {
        let mut config = WebhookConfig::new("https://hooks.example.com/services/T0/B0/tok3n".parse().expect("url"));
        config.secret = Some(Secret::new("hunter2"));
        let printed = format!("{config:?}");
        assert!(!printed.contains("hunter2") && !printed.contains("tok3n"), "{printed}");
        assert!(printed.contains("https://hooks.example.com/***"), "{printed}");
    }
}
