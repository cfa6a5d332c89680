//! The names of the environment variables `AuthSettings::from_vars` looks up, as the platform
//! and the tools it stands beside spell them. Names only: nothing here reads them.

/// Credentials of the operator's registry and of GHCR, as the platform always had them.
pub const GHCR_USER: &str = "GHCR_USER";
pub const GHCR_TOKEN: &str = "GHCR_TOKEN";
/// The generic per-host source: a user name and a password or token ...
pub const REGISTRY_USER: &str = "IMAGEWATCH_REGISTRY_USER";
pub const REGISTRY_PASSWORD: &str = "IMAGEWATCH_REGISTRY_PASSWORD";
/// ... for this host, else for the operator's registry host.
pub const REGISTRY_HOST: &str = "IMAGEWATCH_REGISTRY_HOST";
/// `HOST=KIND,...` provider overrides.
pub const PROVIDERS: &str = "IMAGEWATCH_PROVIDERS";
/// Docker's configuration directory (`config.json` inside), else `$HOME/.docker`.
pub const DOCKER_CONFIG: &str = "DOCKER_CONFIG";
pub const HOME: &str = "HOME";
/// Podman's credential file when set; else `$XDG_RUNTIME_DIR/containers/auth.json`, then
/// `$XDG_CONFIG_HOME/containers/auth.json` (`~/.config/...`).
pub const REGISTRY_AUTH_FILE: &str = "REGISTRY_AUTH_FILE";
pub const XDG_RUNTIME_DIR: &str = "XDG_RUNTIME_DIR";
pub const XDG_CONFIG_HOME: &str = "XDG_CONFIG_HOME";
