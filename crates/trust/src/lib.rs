//! The trust gate's verification: cosign signatures over one exact digest, checked against
//! public keys before imagewatch refreshes to it.
//!
//! - [`key`]: public keys as cosign writes them, their fingerprints, one signature check.
//! - [`payload`]: what a signature vouches for (simple-signing payload, in-toto statement).
//! - [`bundle`]: sigstore bundles (DSSE envelopes) as cosign 3 attaches them.
//! - [`verifier`]: where signatures are (legacy `.sig` tag, OCI 1.1 referrers) and the search.
//! - [`policy`]: which keys an image must be signed by.
//! - [`verdict`]: what a verification concludes.
//!
//! Architecture invariant: this crate depends on registry-core only; every registry request
//! goes through its `RegistryClient` (same challenge cache, tokens and bounds as the digest
//! checks). The cryptography is RustCrypto's; nothing here implements a primitive.

pub mod bundle;
pub mod key;
pub mod payload;
pub mod policy;
pub mod verdict;
pub mod verifier;

pub use key::{KeyError, PublicKey};
pub use policy::{PatternError, Policy};
pub use verdict::{Failure, Location, Verification};
pub use verifier::{Verifier, fallback_tag, legacy_tag};
