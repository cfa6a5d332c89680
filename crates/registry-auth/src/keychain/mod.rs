//! The credential sources that read something: Docker's `config.json` and Podman's `auth.json`
//! (with the credential helpers they name). Fixed credentials and the chain are registry-core's
//! `StaticKeychain` and `KeychainChain`. Which files, in which order, the settings decide.

mod docker_config;

pub use docker_config::{CREDENTIAL_HELPER_TIMEOUT, DockerConfigKeychain};
