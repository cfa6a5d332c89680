//! The trust gate: what a moved digest must pass before the [`Refresher`](crate::Refresher)
//! sees it. The watcher asks a [`Gate`] once per move (and again, backed off, while it holds);
//! how the gate decides (signatures, keys, registries) is not this crate's business — the cli
//! wires one up from the trust crate. A held digest is neither refreshed to nor recorded as
//! applied, so a later check that admits it refreshes.

use std::fmt;

use async_trait::async_trait;
use registry_core::{Digest, ImageReference};

/// Why a digest was admitted: what the refresher's event carries.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Attestation {
    /// The fingerprint of the key whose signature verified (`SHA256:<hex>` of its SPKI DER).
    pub key_fingerprint: String,
    /// Where the signature was found, e.g. `tag sha256-<hex>.sig` or `referrer sha256:<hex>`.
    pub found: String,
}

/// A gate's answer for one digest.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum GateVerdict {
    /// Refresh to it; `Some` when a signature vouched for it, `None` when no policy applies.
    Admit(Option<Attestation>),
    /// Do not refresh to it (yet), for this reason (one line, for status and logs).
    Hold(String),
}

/// Decides whether a moved digest may be refreshed to.
#[async_trait]
pub trait Gate: Send + Sync + fmt::Debug {
    /// Whether `digest`, the new digest of `image`, may be refreshed to now.
    async fn admit(&self, image: &ImageReference, digest: &Digest) -> GateVerdict;
}
