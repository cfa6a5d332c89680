//! What happens when a digest moves: the [`Refresher`] seam, the event it receives and what it
//! answers. Implementations (Docker, webhook, command) live outside this crate; only
//! [`MonitorOnly`], which does nothing, lives here.

use std::fmt;
use std::time::SystemTime;

use async_trait::async_trait;
use registry_core::{Digest, ImageReference, RegistryHost};

use crate::gate::Attestation;

/// A watched image whose digest moved: what a refresher acts on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RefreshEvent {
    pub image: ImageReference,
    /// The runtime the image serves, when it is a runtime image of the prefix.
    pub runtime: Option<String>,
    pub host: RegistryHost,
    pub old_digest: Digest,
    pub new_digest: Digest,
    /// When the move was noticed.
    pub time: SystemTime,
    /// The signature that vouched for `new_digest`, when a trust policy applies to the image.
    pub verification: Option<Attestation>,
}

impl RefreshEvent {
    pub fn new(
        image: ImageReference,
        runtime: Option<String>,
        old_digest: Digest,
        new_digest: Digest,
        time: SystemTime,
    ) -> RefreshEvent {
        RefreshEvent {
            host: image.host().clone(),
            image,
            runtime,
            old_digest,
            new_digest,
            time,
            verification: None,
        }
    }

    /// The event with the signature that admitted its digest.
    pub fn with_verification(mut self, verification: Option<Attestation>) -> RefreshEvent {
        self.verification = verification;
        self
    }

    /// The time in RFC 3339, UTC, to the second (`2026-11-27T22:57:04Z`).
    pub fn time_rfc3339(&self) -> String {
        humantime::format_rfc3339_seconds(self.time).to_string()
    }

    /// The event as sent to webhooks: `image`, `runtime` (or null), `host`, `old_digest`,
    /// `new_digest`, `time`, `verification` (`{key_fingerprint, found}` or null).
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::json!({
            "image": self.image.to_string(),
            "runtime": self.runtime,
            "host": self.host.as_str(),
            "old_digest": self.old_digest.as_str(),
            "new_digest": self.new_digest.as_str(),
            "time": self.time_rfc3339(),
            "verification": self.verification.as_ref().map(|v| serde_json::json!({
                "key_fingerprint": v.key_fingerprint,
                "found": v.found,
            })),
        })
    }
}

/// What a successful refresh did, in a line for logs and reports.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RefreshOutcome {
    summary: String,
}

impl RefreshOutcome {
    pub fn new(summary: impl Into<String>) -> RefreshOutcome {
        RefreshOutcome {
            summary: summary.into(),
        }
    }

    pub fn summary(&self) -> &str {
        &self.summary
    }
}

impl fmt::Display for RefreshOutcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.summary)
    }
}

/// A failed refresh. The watcher keeps the old digest as seen, so the next tick retries.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct RefreshError {
    message: String,
}

impl RefreshError {
    pub fn new(message: impl Into<String>) -> RefreshError {
        RefreshError {
            message: message.into(),
        }
    }

    pub fn message(&self) -> &str {
        &self.message
    }
}

/// Acts on a moved digest. Called once per move; an `Err` means "not done", and the same move is
/// offered again at the next tick, so an implementation should be safe to call again.
#[async_trait]
pub trait Refresher: Send + Sync + fmt::Debug {
    /// A short name for logs (`docker`, `webhook`, `exec`, `none`).
    fn name(&self) -> &'static str;

    async fn refresh(&self, event: &RefreshEvent) -> Result<RefreshOutcome, RefreshError>;
}

/// Monitor only: notes the move and does nothing (the default unless refresh is opted into).
#[derive(Clone, Copy, Debug, Default)]
pub struct MonitorOnly;

#[async_trait]
impl Refresher for MonitorOnly {
    fn name(&self) -> &'static str {
        "none"
    }

    async fn refresh(&self, _event: &RefreshEvent) -> Result<RefreshOutcome, RefreshError> {
        Ok(RefreshOutcome::new("monitor only: nothing refreshed"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn event_json_has_every_field_and_an_rfc3339_time() {
        let old: Digest = format!("sha256:{}", "a".repeat(64)).parse().expect("valid");
        let new: Digest = format!("sha256:{}", "b".repeat(64)).parse().expect("valid");
        let event = RefreshEvent::new(
            "127.0.0.1:5000/x/img:v1".parse().expect("valid"),
            Some("hermes".into()),
            old.clone(),
            new.clone(),
            SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000),
        );
        let json = event.to_json();
        assert_eq!(json["image"], "127.0.0.1:5000/x/img:v1");
        assert_eq!(json["runtime"], "hermes");
        assert_eq!(json["host"], "127.0.0.1:5000");
        assert_eq!(json["old_digest"], old.as_str());
        assert_eq!(json["new_digest"], new.as_str());
        assert_eq!(json["time"], "2027-01-15T08:00:00Z");
    }
}
