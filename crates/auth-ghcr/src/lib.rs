//! auth-ghcr: the Docker Registry v2 bearer-token flow, driven by the registry's challenge.
//! It serves GHCR and every registry speaking distribution's token spec (Docker Hub, Gitea,
//! Harbor, Quay, GitLab, distribution itself), plus Basic challenges (htpasswd, Harbor).
//!
//! It owns the token exchange and the token cache; it does not choose which registry to ask
//! or send manifest requests (registry-core's client does), and it never hard-codes a realm:
//! every token URL comes from a `WWW-Authenticate` challenge. Requests go through
//! registry-core's `Transport`, so its rules hold here too: Basic credentials go to a realm
//! only over https or to loopback, never on a redirect to another origin.

mod provider;
pub mod token;

pub use provider::{BearerTokenProvider, CLIENT_ID};
