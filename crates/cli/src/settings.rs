//! The edge's reading of the process environment for every command: the image prefix
//! (`MOLECULE_IMAGE_REGISTRY`, the product's default when unset) and the auth room's settings.
//! The one place outside clap's `env = ...` flags that reads `std::env`; everything below
//! receives values.

use registry_auth::AuthSettings;
use registry_core::RegistryPrefix;

use crate::exit::Failure;

/// The environment variable that names the image prefix.
pub const PREFIX_ENV: &str = "MOLECULE_IMAGE_REGISTRY";
/// The prefix used when the variable is unset or blank.
pub const DEFAULT_PREFIX: &str = "ghcr.io/molecule-ai";

/// The configured prefix and what authenticates to its registry and any other.
#[derive(Debug)]
pub struct Settings {
    pub prefix: RegistryPrefix,
    pub auth: AuthSettings,
}

impl Settings {
    pub fn from_env() -> Result<Settings, Failure> {
        Settings::from_vars(|name| std::env::var(name).ok())
    }

    /// [`Settings::from_env`] over any variable lookup.
    pub fn from_vars(var: impl Fn(&str) -> Option<String>) -> Result<Settings, Failure> {
        let prefix = prefix(var(PREFIX_ENV).as_deref()).map_err(Failure::config)?;
        let auth = AuthSettings::from_vars(prefix.host().clone(), var).map_err(Failure::config)?;
        Ok(Settings { prefix, auth })
    }
}

/// The variable's value: unset or blank means [`DEFAULT_PREFIX`].
fn prefix(value: Option<&str>) -> Result<RegistryPrefix, registry_core::PrefixError> {
    match value.map(str::trim) {
        None | Some("") => RegistryPrefix::parse_named(DEFAULT_PREFIX, PREFIX_ENV),
        Some(value) => RegistryPrefix::parse_named(value, PREFIX_ENV),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rstest::rstest;

    #[rstest]
    #[case::unset(None)]
    #[case::empty(Some(""))]
    #[case::blank(Some("   "))]
    fn unset_or_blank_means_default(#[case] value: Option<&str>) {
        let prefix = prefix(value).expect("default is valid");
        assert_eq!(prefix.to_string(), DEFAULT_PREFIX);
        assert_eq!(prefix.host().as_str(), "ghcr.io");
    }

    #[test]
    fn the_prefix_host_is_the_auth_rooms_registry_host() {
        let settings =
            Settings::from_vars(|name| (name == PREFIX_ENV).then(|| "registry.example.com:5443/acme/team".into()))
                .expect("valid");
        assert_eq!(settings.auth.registry_host.as_str(), "registry.example.com:5443");
    }
}
