//! registry-core: the vocabulary every imagewatch crate shares and the only crate that knows
//! the registry wire format. Strings from the environment, the command line and HTTP become
//! the validated types below at the edge; everything inside passes those types.

pub mod challenge;
pub mod client;
pub mod digest;
pub mod ecr;
pub mod engine_auth;
pub mod host;
pub mod keychain;
mod path;
pub mod prefix;
pub mod provider;
pub mod reference;
pub mod scope;
pub mod secret;

pub use challenge::{AuthScheme, Challenge, ChallengeError};
pub use client::{RegistryClient, RegistryError, Transport, TransportConfig};
pub use digest::{Digest, DigestError};
pub use ecr::EcrRegistry;
pub use engine_auth::EngineAuth;
pub use host::{HostError, RegistryHost};
pub use keychain::{DockerConfigKeychain, Keychain, KeychainChain, KeychainError, StaticKeychain};
pub use prefix::{DEFAULT_PREFIX, DEFAULT_RUNTIMES, PREFIX_ENV, PrefixError, RegistryPrefix};
pub use provider::{AuthError, Authorization, ProviderKind, ProviderOverrides, TokenProvider};
pub use reference::{ImageReference, ReferenceError, Tag};
pub use scope::Scope;
pub use secret::{Credentials, Secret};
