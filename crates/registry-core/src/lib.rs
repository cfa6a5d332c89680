//! registry-core: the vocabulary every imagewatch crate shares and the only crate that knows
//! the registry wire format. Strings from the environment, the command line and HTTP become
//! the validated types below at the edge; everything inside passes those types.

pub mod challenge;
pub mod client;
pub mod digest;
pub mod host;
pub mod keychain;
pub mod outside;
mod path;
pub mod prefix;
pub mod provider;
pub mod reference;
pub mod scope;
pub mod secret;

pub use challenge::{AuthScheme, Challenge, ChallengeError};
pub use client::{RegistryClient, RegistryError, Transport, TransportConfig};
pub use digest::{Digest, DigestError};
pub use host::{HostError, RegistryHost};
pub use keychain::{Keychain, KeychainChain, KeychainError, StaticKeychain};
pub use prefix::{PrefixError, RegistryPrefix};
pub use provider::{AnonymousPulls, AuthError, Authorization, EngineAuthSource, TokenProvider};
pub use reference::{DEFAULT_TAG, ImageReference, ReferenceError, Tag};
pub use scope::Scope;
pub use secret::{Credentials, Secret};
