//! `imagewatch watch`'s trust flags (`--verify-key`, `--verify-image`, `--cooldown`) turned into
//! a `trust::Policy` at the edge, and the gate that puts the trust crate's verifier in front of
//! the refresher. A key file that cannot be used stops the command (exit 2) naming the file.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use registry_core::{Digest, ImageReference, RegistryClient};
use trust::{Policy, PublicKey, Verifier};
use watcher::{Attestation, Gate, GateVerdict};

use crate::exit::Failure;

#[derive(Debug, clap::Args)]
pub struct TrustArgs {
    /// Refresh only to digests signed by this key (a cosign public key PEM, `cosign.pub`);
    /// repeatable: any of them will do. Applies to every watched image without a
    /// `--verify-image` rule.
    #[arg(
        long = "verify-key",
        value_name = "PATH",
        env = "IMAGEWATCH_VERIFY_KEYS",
        value_delimiter = ',',
        help_heading = "Trust"
    )]
    verify_keys: Vec<PathBuf>,
    /// Images matching PATTERN (`host/path`, `*` for any characters, optionally `:tag`) must be
    /// signed by KEY instead (repeatable; a pattern given twice accepts either key).
    #[arg(
        long = "verify-image",
        value_name = "PATTERN=KEY",
        env = "IMAGEWATCH_VERIFY_IMAGES",
        value_delimiter = ',',
        value_parser = rule,
        help_heading = "Trust"
    )]
    verify_images: Vec<(String, PathBuf)>,
    /// Refresh to a new digest only once it has been the tag's digest this long (from when it
    /// was first seen, kept in the state file); a digest replaced meanwhile is never refreshed to.
    #[arg(long, value_name = "DURATION", env = "IMAGEWATCH_COOLDOWN", value_parser = cooldown, help_heading = "Trust")]
    cooldown: Option<Duration>,
}

fn rule(value: &str) -> Result<(String, PathBuf), String> {
    match value.trim().split_once('=') {
        Some((pattern, key)) if !pattern.trim().is_empty() && !key.trim().is_empty() => {
            Ok((pattern.trim().to_owned(), PathBuf::from(key.trim())))
        }
        _ => Err(format!(
            "{value:?} is not PATTERN=KEY; expected e.g. `ghcr.io/team/*=/etc/imagewatch/cosign.pub`"
        )),
    }
}

fn cooldown(value: &str) -> Result<Duration, String> {
    humantime::parse_duration(value.trim())
        .map_err(|e| format!("{e}; expected a duration such as `10m`, `1h` or `0s` (off)"))
}

impl TrustArgs {
    /// The policy, with every key file read and parsed now.
    pub fn policy(&self) -> Result<Policy, Failure> {
        let mut keys = Vec::new();
        for path in self.verify_keys.iter().filter(|path| !path.as_os_str().is_empty()) {
            keys.push(PublicKey::load(path).map_err(Failure::config)?);
        }
        let mut policy = Policy::new(keys);
        for (pattern, path) in &self.verify_images {
            let key = PublicKey::load(path).map_err(Failure::config)?;
            policy
                .add_rule(pattern, key)
                .map_err(|e| Failure::Config(format!("--verify-image: {e}")))?;
        }
        Ok(policy)
    }

    pub fn cooldown(&self) -> Duration {
        self.cooldown.unwrap_or_default()
    }
}

/// The trust crate's verifier as the watcher's gate: images the policy gives no key pass.
#[derive(Debug)]
pub struct TrustGate {
    verifier: Verifier,
    policy: Policy,
}

impl TrustGate {
    pub fn new(client: Arc<RegistryClient>, policy: Policy) -> TrustGate {
        TrustGate {
            verifier: Verifier::new(client),
            policy,
        }
    }
}

#[async_trait]
impl Gate for TrustGate {
    async fn admit(&self, image: &ImageReference, digest: &Digest) -> GateVerdict {
        let keys = self.policy.keys_for(image);
        if keys.is_empty() {
            return GateVerdict::Admit(None);
        }
        match self.verifier.verify(image, digest, &keys).await {
            Ok(verification) => GateVerdict::Admit(Some(Attestation {
                key_fingerprint: verification.key_fingerprint,
                found: verification.location.to_string(),
            })),
            Err(failure) => GateVerdict::Hold(failure.to_string()),
        }
    }
}
