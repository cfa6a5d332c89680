//! What the auth room is told, as values: the operator's registry host, provider overrides,
//! fixed credentials, where the credential files are and how to reach AWS. The edge builds it,
//! from the process environment through [`AuthSettings::from_vars`] or field by field; this
//! module never reads the environment itself, so a platform embedding the crate decides where
//! every setting comes from.

use std::fmt;
use std::path::{Path, PathBuf};

use registry_core::{Credentials, RegistryHost};

use crate::kind::ProviderOverrides;
use crate::vars;

/// How ECR hosts reach the AWS API.
#[derive(Clone, Debug, Default)]
pub enum AwsSource {
    /// The AWS SDK's default chain (environment, profile, SSO, web identity, ECS, instance
    /// metadata), which the SDK reads itself, loaded once when the first ECR host is wired.
    #[default]
    DefaultChain,
    /// An explicit SDK configuration (credentials, endpoint), e.g. a platform's own or a test's.
    Config(Box<aws_types::SdkConfig>),
}

/// Everything the auth room needs to decide who authenticates to a host, and with what.
#[derive(Clone, Debug)]
pub struct AuthSettings {
    /// The operator's registry: the host of the configured image prefix.
    pub registry_host: RegistryHost,
    /// Hosts that do not look like what they are.
    pub overrides: ProviderOverrides,
    /// `GHCR_USER`/`GHCR_TOKEN`: for the operator's registry, for `ghcr.io`, and for hosts the
    /// operator declared `ghcr`; never for any other host.
    pub ghcr_credentials: Option<Credentials>,
    /// `IMAGEWATCH_REGISTRY_USER`/`_PASSWORD`: for exactly this host.
    pub registry_credentials: Option<(RegistryHost, Credentials)>,
    /// Docker's `config.json`, asked after the fixed credentials.
    pub docker_config: Option<PathBuf>,
    /// Podman's `auth.json` candidates, asked after Docker's file, in order.
    pub podman_auth: Vec<PathBuf>,
    /// Where `docker-credential-*` helpers are run from instead of `PATH` (tests).
    pub helper_dir: Option<PathBuf>,
    pub aws: AwsSource,
}

/// A setting that cannot be used; names the variable, never its secret value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct SettingsError(String);

impl SettingsError {
    pub(crate) fn new(message: String) -> SettingsError {
        SettingsError(message)
    }
}

impl AuthSettings {
    /// No credentials anywhere, no files, the AWS default chain: anonymous unless told more.
    pub fn new(registry_host: RegistryHost) -> AuthSettings {
        AuthSettings {
            registry_host,
            overrides: ProviderOverrides::default(),
            ghcr_credentials: None,
            registry_credentials: None,
            docker_config: None,
            podman_auth: Vec::new(),
            helper_dir: None,
            aws: AwsSource::DefaultChain,
        }
    }

    /// The settings the variables in [`vars`] describe, looked up through `var` (the edge
    /// passes the process environment). Blank counts as unset. Half of a user/password pair, an
    /// invalid host or override is an error naming the variable.
    pub fn from_vars(
        registry_host: RegistryHost,
        var: impl Fn(&str) -> Option<String>,
    ) -> Result<AuthSettings, SettingsError> {
        let get = |name: &str| var(name).map(|v| v.trim().to_owned()).filter(|v| !v.is_empty());
        let overrides = match get(vars::PROVIDERS) {
            Some(value) => value.parse().map_err(|e| SettingsError(format!("{e}")))?,
            None => ProviderOverrides::default(),
        };
        let ghcr_credentials = pair(&get, vars::GHCR_USER, vars::GHCR_TOKEN)?;
        let registry_credentials = match pair(&get, vars::REGISTRY_USER, vars::REGISTRY_PASSWORD)? {
            None => None,
            Some(credentials) => {
                let host = match get(vars::REGISTRY_HOST) {
                    Some(value) => value
                        .parse::<RegistryHost>()
                        .map_err(|e| SettingsError(format!("{}: {e}", vars::REGISTRY_HOST)))?,
                    None => registry_host.clone(),
                };
                Some((host, credentials))
            }
        };
        let home = get(vars::HOME).map(PathBuf::from);
        let docker_config = match get(vars::DOCKER_CONFIG) {
            Some(dir) => Some(Path::new(&dir).join("config.json")),
            None => home.as_ref().map(|home| home.join(".docker").join("config.json")),
        };
        let podman_auth = match get(vars::REGISTRY_AUTH_FILE) {
            Some(file) => vec![PathBuf::from(file)],
            None => {
                let runtime = get(vars::XDG_RUNTIME_DIR).map(|dir| Path::new(&dir).join("containers/auth.json"));
                let config = get(vars::XDG_CONFIG_HOME)
                    .map(PathBuf::from)
                    .or_else(|| home.as_ref().map(|home| home.join(".config")))
                    .map(|dir| dir.join("containers/auth.json"));
                runtime.into_iter().chain(config).collect()
            }
        };
        Ok(AuthSettings {
            overrides,
            ghcr_credentials,
            registry_credentials,
            docker_config,
            podman_auth,
            ..AuthSettings::new(registry_host)
        })
    }
}

/// A user and a password variable: both set, or neither.
fn pair(
    get: &impl Fn(&str) -> Option<String>,
    user: &str,
    password: &str,
) -> Result<Option<Credentials>, SettingsError> {
    match (get(user), get(password)) {
        (Some(name), Some(secret)) => Ok(Some(Credentials::basic(name, secret))),
        (None, None) => Ok(None),
        (found, _) => {
            let (set, unset) = if found.is_some() {
                (user, password)
            } else {
                (password, user)
            };
            Err(SettingsError(format!(
                "{set} is set but {unset} is not; set both or neither"
            )))
        }
    }
}

impl fmt::Display for AwsSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AwsSource::DefaultChain => f.write_str("the AWS default credential chain"),
            AwsSource::Config(_) => f.write_str("a given AWS SDK configuration"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rstest::rstest;

    fn host(value: &str) -> RegistryHost {
        value.parse().expect("valid host")
    }

    fn lookup<'a>(pairs: &'a [(&'a str, &'a str)]) -> impl Fn(&str) -> Option<String> + 'a {
        move |name| pairs.iter().find(|(k, _)| *k == name).map(|(_, v)| (*v).to_owned())
    }

    fn settings(pairs: &[(&str, &str)]) -> Result<AuthSettings, SettingsError> {
        AuthSettings::from_vars(host("registry.example.com:5443"), lookup(pairs))
    }

    #[test]
    fn registry_credentials_apply_to_the_registry_host_by_default() {
        let settings = settings(&[(vars::REGISTRY_USER, "bot"), (vars::REGISTRY_PASSWORD, "pw")]).expect("valid");
        let (for_host, credentials) = settings.registry_credentials.expect("configured");
        assert_eq!(for_host, host("registry.example.com:5443"));
        assert_eq!(credentials.username(), Some("bot"));
    }

    #[test]
    fn registry_host_variable_names_another_host() {
        let settings = settings(&[
            (vars::REGISTRY_HOST, "gitea.example.com"),
            (vars::REGISTRY_USER, "bot"),
            (vars::REGISTRY_PASSWORD, "pw"),
        ])
        .expect("valid");
        assert_eq!(
            settings.registry_credentials.expect("configured").0,
            host("gitea.example.com")
        );
    }

    #[rstest]
    #[case::user_only(&[(vars::REGISTRY_USER, "bot")], "IMAGEWATCH_REGISTRY_PASSWORD is not")]
    #[case::password_only(&[(vars::REGISTRY_PASSWORD, "pw")], "IMAGEWATCH_REGISTRY_USER is not")]
    #[case::ghcr_user_only(&[(vars::GHCR_USER, "bot")], "GHCR_TOKEN is not")]
    #[case::bad_host(&[(vars::REGISTRY_HOST, "not a host"), (vars::REGISTRY_USER, "u"), (vars::REGISTRY_PASSWORD, "pw")], "IMAGEWATCH_REGISTRY_HOST")]
    #[case::bad_override(&[(vars::PROVIDERS, "x=quay")], "IMAGEWATCH_PROVIDERS")]
    fn half_configured_settings_are_errors_without_the_secret(#[case] pairs: &[(&str, &str)], #[case] expected: &str) {
        let error = settings(pairs).expect_err("invalid").to_string();
        assert!(error.contains(expected), "{error}");
        assert!(!error.contains("pw"), "{error}");
    }

    #[test]
    fn nothing_set_means_anonymous() {
        let settings = settings(&[(vars::GHCR_USER, "  ")]).expect("valid");
        assert!(settings.ghcr_credentials.is_none() && settings.registry_credentials.is_none());
        assert!(settings.docker_config.is_none() && settings.podman_auth.is_empty());
    }

    #[rstest]
    #[case::docker_config_dir(&[("DOCKER_CONFIG", "/etc/dc"), ("HOME", "/home/u")], "/etc/dc/config.json")]
    #[case::home(&[("HOME", "/home/u")], "/home/u/.docker/config.json")]
    #[case::blank_docker_config(&[("DOCKER_CONFIG", " "), ("HOME", "/home/u")], "/home/u/.docker/config.json")]
    fn docker_config_path_follows_docker(#[case] pairs: &[(&str, &str)], #[case] expected: &str) {
        assert_eq!(
            settings(pairs).expect("valid").docker_config,
            Some(PathBuf::from(expected))
        );
    }

    #[rstest]
    #[case::auth_file(&[("REGISTRY_AUTH_FILE", "/etc/auth.json"), ("XDG_RUNTIME_DIR", "/run/user/1")], &["/etc/auth.json"])]
    #[case::runtime_then_config(&[("XDG_RUNTIME_DIR", "/run/user/1"), ("HOME", "/home/u")], &["/run/user/1/containers/auth.json", "/home/u/.config/containers/auth.json"])]
    #[case::xdg_config_home(&[("XDG_CONFIG_HOME", "/cfg")], &["/cfg/containers/auth.json"])]
    fn podman_auth_paths_follow_podman(#[case] pairs: &[(&str, &str)], #[case] expected: &[&str]) {
        let expected: Vec<PathBuf> = expected.iter().map(PathBuf::from).collect();
        assert_eq!(settings(pairs).expect("valid").podman_auth, expected);
    }
}
