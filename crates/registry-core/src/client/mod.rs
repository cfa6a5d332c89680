//! The registry HTTP client: the only code in imagewatch that speaks the registry wire.
//!
//! - [`transport`]: one reqwest client with the safety rules (https first, timeouts, capped
//!   bodies, credentials never leaving their origin or going over remote plain http).
//! - [`registry`]: manifest digests, the per-host challenge cache, the batch API.
//! - [`artifacts`]: signature artifacts (manifests by tag, blobs, the referrers API).
//! - [`error`]: [`RegistryError`], in kinds a watcher can act on.
//! - [`stats`]: request counters by kind.
//!
//! Architecture invariant: no token URL is written anywhere in this module; every realm comes
//! from a registry's `WWW-Authenticate` challenge.

pub mod artifacts;
pub mod error;
pub mod registry;
pub mod stats;
pub mod transport;

pub use artifacts::{ARTIFACT_MANIFEST_ACCEPT, ArtifactManifest, REFERRERS_ACCEPT};
pub use error::{RegistryError, parse_retry_after};
pub use registry::{
    DEFAULT_GLOBAL_CONCURRENCY, DEFAULT_SCOPE_BATCH, DEFAULT_SCOPE_BATCH_BYTES, DigestResult, MANIFEST_ACCEPT,
    RegistryClient,
};
pub use stats::{ClientStats, RequestKind, StatsSnapshot};
pub use transport::{
    DEFAULT_CONNECT_TIMEOUT, DEFAULT_REQUEST_TIMEOUT, MAX_MANIFEST_BYTES, MAX_TOKEN_BYTES, Response, Transport,
    TransportConfig, TransportError, credentials_allowed, credentials_survive_redirect, is_loopback_url,
    redirect_allowed,
};
