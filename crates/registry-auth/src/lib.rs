//! registry-auth: the auth room. It answers "who authenticates to this host, and with what":
//! the provider kind of each host (`kind`: ECR, GHCR, generic, and the operator's overrides),
//! the credential sources (`keychain`: Docker's `config.json`, Podman's `auth.json`, credential
//! helpers; fixed credentials from the settings), the hints auth errors give (`hint`), the
//! Docker Engine's pull payload (`engine_auth`), and the wiring (`wiring::wire`) that builds the
//! registry client and each host's provider.
//!
//! A platform calls [`wire`] at startup with [`AuthSettings`] of its own making; the
//! `imagewatch` binary makes them from its environment. It must not read the process
//! environment (the AWS SDK's default chain, chosen with [`AwsSource::DefaultChain`], reads its
//! own), and nothing below the wiring depends on it: the watcher and the refreshers see only
//! registry-core's `RegistryClient` and `EngineAuthSource`.

pub mod engine_auth;
pub mod hint;
pub mod keychain;
pub mod kind;
pub mod settings;
pub mod vars;
pub mod wiring;

pub use auth_ecr::EcrRegistry;
pub use engine_auth::EngineAuth;
pub use keychain::DockerConfigKeychain;
pub use kind::{OverrideError, ProviderKind, ProviderOverrides};
pub use settings::{AuthSettings, AwsSource, SettingsError};
pub use wiring::{EngineAuths, HostAuth, Wired, keychain_for, wire};
