//! Docker's `config.json` as a credential source: `auths`, `credHelpers` and `credsStore`,
//! looked up the way the Docker CLI looks them up. Podman's `auth.json` has the same format
//! (containers-auth.json(5), keys may carry a repository path) and is read by the same code.
//! Where the files are is the settings' business; this module only reads the path it is given.

use std::collections::BTreeMap;
use std::fmt;
use std::io::{Read as _, Write as _};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use base64::Engine as _;

use registry_core::{Credentials, Keychain, KeychainError, RegistryHost, Secret};

/// How long a credential helper may take to answer.
pub const CREDENTIAL_HELPER_TIMEOUT: Duration = Duration::from_secs(20);

/// Docker's `config.json`, read once when built; credential helpers run at each lookup (their
/// answers may rotate, e.g. the ECR helper's).
///
/// Lookup for a host, as Docker does it: its `credHelpers` entry, else `credsStore`, then the
/// `auths` entry. Keys match as `host`, `https://host`, `http://host` (any path after), and
/// Docker Hub's `https://index.docker.io/v1/` for `docker.io`.
pub struct DockerConfigKeychain {
    path: PathBuf,
    auths: BTreeMap<String, AuthEntry>,
    cred_helpers: BTreeMap<String, String>,
    creds_store: Option<String>,
    helper_dir: Option<PathBuf>,
}

/// One `auths` entry. No `Debug`: it holds secrets.
#[derive(serde::Deserialize, Default, Clone)]
struct AuthEntry {
    #[serde(default)]
    auth: Option<String>,
    #[serde(default)]
    username: Option<String>,
    #[serde(default)]
    password: Option<String>,
    #[serde(default)]
    identitytoken: Option<String>,
    #[serde(default)]
    registrytoken: Option<String>,
}

#[derive(serde::Deserialize, Default)]
struct ConfigFile {
    #[serde(default)]
    auths: BTreeMap<String, AuthEntry>,
    #[serde(default, rename = "credHelpers")]
    cred_helpers: BTreeMap<String, String>,
    #[serde(default, rename = "credsStore")]
    creds_store: Option<String>,
}

/// What a credential helper prints for `get`.
#[derive(serde::Deserialize)]
struct HelperAnswer {
    #[serde(rename = "Username", default)]
    username: String,
    #[serde(rename = "Secret", default)]
    secret: String,
}

impl DockerConfigKeychain {
    /// Reads `path`. A missing file is an empty config; unreadable or malformed is an error.
    pub fn load(path: &Path) -> Result<DockerConfigKeychain, KeychainError> {
        let error = |message: String| KeychainError {
            host: "any registry".into(),
            source_name: path.display().to_string(),
            message,
        };
        let config = match std::fs::read(path) {
            Ok(bytes) => serde_json::from_slice::<ConfigFile>(&bytes).map_err(|e| {
                error(format!(
                    "malformed Docker config ({}); expected JSON with `auths`, `credHelpers`, `credsStore`",
                    without_values(&e)
                ))
            })?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => ConfigFile::default(),
            Err(e) => return Err(error(format!("cannot read it: {e}"))),
        };
        Ok(DockerConfigKeychain {
            path: path.to_owned(),
            auths: config.auths,
            cred_helpers: config.cred_helpers,
            creds_store: config.creds_store.filter(|s| !s.trim().is_empty()),
            helper_dir: None,
        })
    }

    /// Runs helpers from `dir` instead of looking them up on `PATH`.
    pub fn with_helper_dir(mut self, dir: impl Into<PathBuf>) -> DockerConfigKeychain {
        self.helper_dir = Some(dir.into());
        self
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    fn error(&self, host: &RegistryHost, message: String) -> KeychainError {
        KeychainError {
            host: host.to_string(),
            source_name: self.path.display().to_string(),
            message,
        }
    }

    fn auths_entry(&self, host: &RegistryHost) -> Option<(&String, &AuthEntry)> {
        self.auths.iter().find(|(key, _)| key_matches(key, host))
    }

    fn auths_credentials(&self, host: &RegistryHost) -> Result<Option<Credentials>, KeychainError> {
        let Some((_, entry)) = self.auths_entry(host) else {
            return Ok(None);
        };
        let non_empty = |v: &Option<String>| v.as_ref().filter(|v| !v.is_empty()).cloned();
        if let Some(token) = non_empty(&entry.identitytoken) {
            return Ok(Some(Credentials::IdentityToken(Secret::new(token))));
        }
        if let Some(token) = non_empty(&entry.registrytoken) {
            return Ok(Some(Credentials::Bearer(Secret::new(token))));
        }
        if let Some(auth) = non_empty(&entry.auth) {
            let decoded = base64::engine::general_purpose::STANDARD
                .decode(auth.trim())
                .ok()
                .and_then(|bytes| String::from_utf8(bytes).ok())
                .ok_or_else(|| self.error(host, "its `auth` value is not base64 of `user:password`".into()))?;
            let (user, password) = decoded
                .split_once(':')
                .ok_or_else(|| self.error(host, "its `auth` value decodes to no `user:password` pair".into()))?;
            return Ok(Some(Credentials::basic(user, password)));
        }
        match (non_empty(&entry.username), non_empty(&entry.password)) {
            (Some(user), Some(password)) => Ok(Some(Credentials::basic(user, password))),
            // A bare entry: the placeholder Docker writes when a credsStore holds the secret.
            _ => Ok(None),
        }
    }

    /// Runs `docker-credential-<helper> get` with `server` on stdin.
    fn run_helper(
        &self,
        host: &RegistryHost,
        helper: &str,
        server: &str,
    ) -> Result<Option<Credentials>, KeychainError> {
        let program_name = format!("docker-credential-{helper}");
        let program = match &self.helper_dir {
            Some(dir) => dir.join(&program_name),
            None => PathBuf::from(&program_name),
        };
        let mut child = Command::new(&program)
            .arg("get")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| {
                self.error(
                    host,
                    if e.kind() == std::io::ErrorKind::NotFound {
                        format!("the credential helper {program_name} is configured but not found on PATH; install it or remove it from the config")
                    } else {
                        format!("cannot run the credential helper {program_name}: {e}")
                    },
                )
            })?;
        if let Some(mut stdin) = child.stdin.take() {
            // A helper that exits without reading stdin is reported by its exit status below.
            let _ = stdin.write_all(server.as_bytes());
        }
        let read_all = |pipe: Option<Box<dyn std::io::Read + Send>>| {
            std::thread::spawn(move || {
                let mut bytes = Vec::new();
                if let Some(pipe) = pipe {
                    let _ = pipe.take(1024 * 1024).read_to_end(&mut bytes);
                }
                bytes
            })
        };
        let stdout = read_all(
            child
                .stdout
                .take()
                .map(|p| Box::new(p) as Box<dyn std::io::Read + Send>),
        );
        let stderr = read_all(
            child
                .stderr
                .take()
                .map(|p| Box::new(p) as Box<dyn std::io::Read + Send>),
        );
        let deadline = Instant::now() + CREDENTIAL_HELPER_TIMEOUT;
        let status = loop {
            match child.try_wait() {
                Ok(Some(status)) => break status,
                Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(10)),
                Ok(None) => {
                    let _ = child.kill();
                    let _ = child.wait();
                    return Err(self.error(
                        host,
                        format!(
                            "the credential helper {program_name} did not answer within {}s",
                            CREDENTIAL_HELPER_TIMEOUT.as_secs()
                        ),
                    ));
                }
                Err(e) => return Err(self.error(host, format!("waiting for {program_name}: {e}"))),
            }
        };
        let stdout = stdout.join().unwrap_or_default();
        let stderr = stderr.join().unwrap_or_default();
        if !status.success() {
            let said = String::from_utf8_lossy(if stdout.is_empty() { &stderr } else { &stdout })
                .trim()
                .to_owned();
            if said.to_ascii_lowercase().contains("credentials not found") {
                return Ok(None);
            }
            let said: String = said.chars().take(200).collect();
            return Err(self.error(
                host,
                format!("the credential helper {program_name} failed ({status}): {said}"),
            ));
        }
        let answer: HelperAnswer = serde_json::from_slice(&stdout).map_err(|e| {
            self.error(
                host,
                format!(
                    "the credential helper {program_name} printed no JSON `{{\"Username\",\"Secret\"}}` ({})",
                    without_values(&e)
                ),
            )
        })?;
        if answer.secret.is_empty() {
            return Ok(None);
        }
        Ok(Some(if answer.username == "<token>" {
            Credentials::IdentityToken(Secret::new(answer.secret))
        } else {
            Credentials::basic(answer.username, answer.secret)
        }))
    }
}

impl Keychain for DockerConfigKeychain {
    fn credentials(&self, host: &RegistryHost) -> Result<Option<Credentials>, KeychainError> {
        if let Some((key, helper)) = self.cred_helpers.iter().find(|(key, _)| key_matches(key, host)) {
            if let Some(credentials) = self.run_helper(host, helper, key)? {
                return Ok(Some(credentials));
            }
        } else if let Some(store) = &self.creds_store {
            // The key the login was stored under, else what Docker calls the registry.
            let server = self
                .auths_entry(host)
                .map_or_else(|| host.engine_server_address().to_owned(), |(key, _)| key.clone());
            if let Some(credentials) = self.run_helper(host, store, &server)? {
                return Ok(Some(credentials));
            }
        }
        self.auths_credentials(host)
    }
}

impl fmt::Debug for DockerConfigKeychain {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DockerConfigKeychain")
            .field("path", &self.path)
            .field("auths", &self.auths.keys().collect::<Vec<_>>())
            .field("cred_helpers", &self.cred_helpers)
            .field("creds_store", &self.creds_store)
            .finish()
    }
}

/// Whether a `config.json` key (`host`, `https://host/any/path`) names `host`.
fn key_matches(key: &str, host: &RegistryHost) -> bool {
    let bare = key
        .trim()
        .strip_prefix("https://")
        .or_else(|| key.trim().strip_prefix("http://"))
        .unwrap_or(key.trim());
    let authority = bare.split('/').next().unwrap_or("");
    authority.parse::<RegistryHost>().is_ok_and(|parsed| &parsed == host)
}
/// A JSON error said without the value it met: serde's own message quotes it, and in a Docker
/// config or a helper's answer that value is a credential (`"auths":{"host":"<base64>"}`).
fn without_values(error: &serde_json::Error) -> String {
    let what = match error.classify() {
        serde_json::error::Category::Io => "it could not be read",
        serde_json::error::Category::Syntax => "it is not valid JSON",
        serde_json::error::Category::Data => "a value has the wrong type or shape",
        serde_json::error::Category::Eof => "it ends too early",
    };
    format!("{what} at line {} column {}", error.line(), error.column())
}

#[cfg(test)]
mod tests {
    use super::*;
    use rstest::rstest;

    fn host(value: &str) -> RegistryHost {
        value.parse().expect("valid host")
    }

    fn write_config(dir: &Path, json: &str) -> PathBuf {
        let path = dir.join("config.json");
        std::fs::write(&path, json).expect("write config");
        path
    }

    /// A fake `docker-credential-NAME` that answers from a shell snippet.
    fn write_helper(dir: &Path, name: &str, body: &str) {
        use std::os::unix::fs::PermissionsExt as _;
        let path = dir.join(format!("docker-credential-{name}"));
        std::fs::write(&path, format!("#!/bin/sh\n{body}\n")).expect("write helper");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    }

    fn basic(credentials: Option<Credentials>) -> Option<(String, String)> {
        match credentials {
            Some(Credentials::Basic { username, password }) => Some((username, password.expose().to_owned())),
            _ => None,
        }
    }

    #[rstest]
    #[case::bare_host("registry.example.com", "registry.example.com")]
    #[case::https_key("https://registry.example.com", "registry.example.com")]
    #[case::http_key_with_path("http://registry.example.com/v2/", "registry.example.com")]
    #[case::port("localhost:5000", "localhost:5000")]
    #[case::docker_hub_index("https://index.docker.io/v1/", "docker.io")]
    fn auths_key_forms_match_the_host(#[case] key: &str, #[case] lookup: &str) {
        let dir = tempfile::tempdir().expect("tempdir");
        // "user:pa:ss" — the password may hold colons.
        let path = write_config(
            dir.path(),
            &format!(r#"{{"auths":{{"{key}":{{"auth":"dXNlcjpwYTpzcw=="}}}}}}"#),
        );
        let keychain = DockerConfigKeychain::load(&path).expect("loads");
        assert_eq!(
            basic(keychain.credentials(&host(lookup)).expect("ok")),
            Some(("user".into(), "pa:ss".into()))
        );
        assert_eq!(keychain.credentials(&host("other.example.com")).expect("ok"), None);
    }

    #[test]
    fn auths_username_password_and_identity_token_are_read() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = write_config(
            dir.path(),
            r#"{"auths":{
                "a.example.com":{"username":"alice","password":"pw"},
                "b.example.com":{"auth":"","identitytoken":"refresh-me"},
                "c.example.com":{}
            }}"#,
        );
        let keychain = DockerConfigKeychain::load(&path).expect("loads");
        assert_eq!(
            basic(keychain.credentials(&host("a.example.com")).expect("ok")),
            Some(("alice".into(), "pw".into()))
        );
        assert!(matches!(
            keychain.credentials(&host("b.example.com")).expect("ok"),
            Some(Credentials::IdentityToken(token)) if token.expose() == "refresh-me"
        ));
        assert_eq!(keychain.credentials(&host("c.example.com")).expect("ok"), None);
        assert!(!format!("{keychain:?}").contains("refresh-me"));
    }

    #[test]
    fn missing_config_file_means_no_credentials() {
        let dir = tempfile::tempdir().expect("tempdir");
        let keychain = DockerConfigKeychain::load(&dir.path().join("config.json")).expect("missing is fine");
        assert_eq!(keychain.credentials(&host("ghcr.io")).expect("ok"), None);
    }

    #[rstest]
    #[case::not_json("{not json")]
    #[case::auths_not_a_map(r#"{"auths":[]}"#)]
    #[case::entry_is_the_credential_string(r#"{"auths":{"a.example.com":"dXNlcjpzM2NyZXQtcHc="}}"#)]
    #[case::auth_is_a_number(r#"{"auths":{"a.example.com":{"auth":12345}}}"#)]
    fn malformed_config_file_is_an_error_naming_the_path_not_the_value(#[case] content: &str) {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = write_config(dir.path(), content);
        let error = DockerConfigKeychain::load(&path).expect_err("malformed").to_string();
        assert!(error.contains(&path.display().to_string()), "{error}");
        assert!(error.contains("malformed"), "{error}");
        for value in ["dXNlcjpzM2NyZXQtcHc=", "12345"] {
            assert!(!error.contains(value), "{error}");
        }
    }

    #[test]
    fn bad_auth_value_is_an_error_without_the_value() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = write_config(dir.path(), r#"{"auths":{"a.example.com":{"auth":"bm9jb2xvbg=="}}}"#);
        let keychain = DockerConfigKeychain::load(&path).expect("loads");
        let error = keychain
            .credentials(&host("a.example.com"))
            .expect_err("bad")
            .to_string();
        assert!(
            error.contains("user:password") && !error.contains("bm9jb2xvbg"),
            "{error}"
        );
    }

    #[test]
    fn cred_helper_gets_the_server_url_on_stdin_and_its_answer_is_used() {
        let dir = tempfile::tempdir().expect("tempdir");
        // Echo what arrived on stdin back as the user name, to prove what was sent.
        write_helper(
            dir.path(),
            "fake",
            r#"[ "$1" = get ] || exit 3; read server; printf '{"ServerURL":"%s","Username":"%s","Secret":"s3cret"}' "$server" "$server""#,
        );
        write_helper(
            dir.path(),
            "tokens",
            r#"printf '{"ServerURL":"x","Username":"<token>","Secret":"idtok"}'"#,
        );
        let path = write_config(
            dir.path(),
            r#"{"credHelpers":{"registry.example.com":"fake","id.example.com":"tokens"},
                "auths":{"registry.example.com":{"auth":"dXNlcjpwYXNz"}}}"#,
        );
        let keychain = DockerConfigKeychain::load(&path)
            .expect("loads")
            .with_helper_dir(dir.path());
        assert_eq!(
            basic(keychain.credentials(&host("registry.example.com")).expect("ok")),
            Some(("registry.example.com".into(), "s3cret".into()))
        );
        assert!(matches!(
            keychain.credentials(&host("id.example.com")).expect("ok"),
            Some(Credentials::IdentityToken(token)) if token.expose() == "idtok"
        ));
    }

    #[test]
    fn creds_store_is_asked_for_docker_hub_under_its_index_url() {
        let dir = tempfile::tempdir().expect("tempdir");
        write_helper(
            dir.path(),
            "store",
            r#"read server; [ "$server" = "https://index.docker.io/v1/" ] || { echo "credentials not found in native keychain"; exit 1; }; printf '{"Username":"hub","Secret":"pw"}'"#,
        );
        let path = write_config(
            dir.path(),
            r#"{"credsStore":"store","auths":{"https://index.docker.io/v1/":{}}}"#,
        );
        let keychain = DockerConfigKeychain::load(&path)
            .expect("loads")
            .with_helper_dir(dir.path());
        assert_eq!(
            basic(keychain.credentials(&host("docker.io")).expect("ok")),
            Some(("hub".into(), "pw".into()))
        );
        // "credentials not found" is no credentials, not an error.
        assert_eq!(keychain.credentials(&host("quay.io")).expect("ok"), None);
    }

    #[test]
    fn creds_store_miss_falls_back_to_auths() {
        let dir = tempfile::tempdir().expect("tempdir");
        write_helper(
            dir.path(),
            "empty",
            r#"echo "credentials not found in native keychain"; exit 1"#,
        );
        let path = write_config(
            dir.path(),
            r#"{"credsStore":"empty","auths":{"a.example.com":{"auth":"dXNlcjpwYXNz"}}}"#,
        );
        let keychain = DockerConfigKeychain::load(&path)
            .expect("loads")
            .with_helper_dir(dir.path());
        assert_eq!(
            basic(keychain.credentials(&host("a.example.com")).expect("ok")),
            Some(("user".into(), "pass".into()))
        );
    }

    #[rstest]
    #[case::missing_helper("nonexistent", "", "not found on PATH")]
    #[case::failing_helper("broken", "echo boom >&2; exit 7", "boom")]
    #[case::garbage_answer("garbage", "echo hello", "no JSON")]
    fn a_configured_helper_that_fails_is_a_clear_error(#[case] name: &str, #[case] body: &str, #[case] expected: &str) {
        let dir = tempfile::tempdir().expect("tempdir");
        if !body.is_empty() {
            write_helper(dir.path(), name, body);
        }
        let path = write_config(
            dir.path(),
            &format!(r#"{{"credHelpers":{{"a.example.com":"{name}"}}}}"#),
        );
        let keychain = DockerConfigKeychain::load(&path)
            .expect("loads")
            .with_helper_dir(dir.path());
        let error = keychain
            .credentials(&host("a.example.com"))
            .expect_err("fails")
            .to_string();
        assert!(error.contains(expected), "{error}");
        assert!(error.contains(&format!("docker-credential-{name}")), "{error}");
        assert!(error.contains("a.example.com"), "{error}");
    }
}
