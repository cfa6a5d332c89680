//! The registry flavours of the test matrix, each built from real components on 127.0.0.1:
//! what runs, which host a client talks to, which provider kind that host maps to (through
//! the same `IMAGEWATCH_PROVIDERS` syntax an operator would write), and how a client with
//! good, missing or wrong credentials is made for it.
//!
//! It owns the wiring of components into registry shapes; it must not run checks (that is
//! `checks`).

use std::path::PathBuf;
use std::sync::Arc;

use aws_config::SdkConfig;
use aws_credential_types::provider::error::CredentialsError;
use aws_credential_types::provider::{ProvideCredentials, SharedCredentialsProvider, future};
use registry_auth::{AuthSettings, AwsSource, ProviderKind, Wired};
use registry_core::client::{Transport, TransportConfig};
use registry_core::{Credentials, RegistryHost};
use test_support::{
    Moto, NginxFront, Registry, RegistryAuth, RegistryConfig, RegistryTls, TestCa, TokenServer, TokenServerConfig,
    WorkDir, free_port,
};
use tokio::runtime::Runtime;

use super::legacy_front::LegacyGiteaFront;

/// The user every authenticated flavour pushes and pulls as (except ECR's `AWS`).
pub const USER: &str = "matrix-user";
pub const PASSWORD: &str = "matrix-password-1";
/// Repositories under this prefix are private on the token-mode flavours.
pub const PRIVATE_PREFIX: &str = "private";

/// Which credentials a client for a flavour holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Access {
    Good,
    Missing,
    Wrong,
}

/// How clients of a flavour authenticate.
#[derive(Debug)]
enum Auth {
    /// No auth at all.
    Anonymous,
    /// User and password in the host's keychain (bearer flow or Basic).
    Keychain { user: String, password: String },
    /// ECR: AWS keys for moto's GetAuthorizationToken.
    Ecr(Moto),
}

/// One running flavour. Dropping it stops every component (children are killed on drop).
#[derive(Debug)]
pub struct Flavour {
    pub name: &'static str,
    /// What runs, in one line, for the matrix output.
    pub shape: String,
    /// The host clients and skopeo talk to.
    pub host: RegistryHost,
    /// `HOST=KIND`, as `IMAGEWATCH_PROVIDERS` would say it.
    pub providers: String,
    pub skopeo_tls: RegistryTls,
    pub ca_bundle: PathBuf,
    pub registry: Registry,
    pub token: Option<TokenServer>,
    auth: Auth,
    _fronts: Vec<NginxFront>,
    legacy: Option<LegacyGiteaFront>,
}

impl Flavour {
    /// A flavour clients reach over TLS with the test CA, mapped to `kind`, with no token
    /// server and no fronts; callers override the rest with struct update syntax.
    fn new(
        name: &'static str,
        host: RegistryHost,
        kind: &str,
        shape: String,
        ca: &TestCa,
        registry: Registry,
        auth: Auth,
    ) -> Flavour {
        Flavour {
            name,
            shape,
            providers: format!("{host}={kind}"),
            host,
            skopeo_tls: RegistryTls::ca(ca),
            ca_bundle: ca.ca_cert_path.clone(),
            registry,
            token: None,
            auth,
            _fronts: Vec::new(),
            legacy: None,
        }
    }

    /// `host/repository:tag`.
    pub fn image_ref(&self, repository: &str, tag: &str) -> String {
        format!("{}/{repository}:{tag}", self.host)
    }

    /// The credentials skopeo pushes and inspects with.
    pub fn push_creds(&self) -> Option<(String, String)> {
        match &self.auth {
            Auth::Anonymous => None,
            Auth::Keychain { user, password } => Some((user.clone(), password.clone())),
            Auth::Ecr(_) => Some(("AWS".to_owned(), Moto::expected_password())),
        }
    }

    /// The secret a wrong-credentials client must never print.
    pub fn secret(&self) -> Option<String> {
        self.push_creds().map(|(_, password)| password)
    }

    /// Whether the registry asks for credentials at all.
    pub fn has_auth(&self) -> bool {
        !matches!(self.auth, Auth::Anonymous)
    }

    /// A repository that needs credentials: under [`PRIVATE_PREFIX`] on token flavours, any on
    /// htpasswd (Basic, ECR) flavours; `None` on an anonymous registry.
    pub fn private_repository(&self) -> Option<String> {
        self.has_auth().then(|| format!("{PRIVATE_PREFIX}/{}", self.name))
    }

    /// How many 401 challenges the gitea-legacy rewriter replaced (`None` on other flavours).
    pub fn legacy_rewrites(&self) -> Option<usize> {
        self.legacy.as_ref().map(LegacyGiteaFront::rewritten)
    }

    /// The provider kind the host maps to through the override, as an operator would write it.
    pub fn kind(&self) -> Result<ProviderKind, String> {
        Ok(self.settings(Access::Good)?.overrides.kind_for(&self.host))
    }

    /// What an operator of this flavour would configure: the override, the credentials
    /// `access` asks for as `IMAGEWATCH_REGISTRY_USER`/`_PASSWORD`, and for ECR an AWS SDK
    /// configuration that reaches moto (with keys, or with none).
    fn settings(&self, access: Access) -> Result<AuthSettings, String> {
        let mut settings = AuthSettings::new(self.host.clone());
        settings.overrides = self.providers.parse().map_err(|e| format!("{e}"))?;
        match &self.auth {
            Auth::Anonymous => {}
            Auth::Keychain { user, password } => {
                let password = match access {
                    Access::Good => Some(password.clone()),
                    Access::Wrong => Some(format!("wrong-{password}")),
                    Access::Missing => None,
                };
                settings.registry_credentials =
                    password.map(|password| (self.host.clone(), Credentials::basic(user.as_str(), password.as_str())));
            }
            Auth::Ecr(moto) => {
                if access == Access::Wrong {
                    // AWS refusing the caller: moto accepts any keys, so the proxy answers the
                    // next GetAuthorizationToken with 403 AccessDeniedException.
                    moto.fail_get_authorization_token(1, 403);
                }
                settings.aws = AwsSource::Config(Box::new(if access == Access::Missing {
                    without_keys(moto)
                } else {
                    moto.sdk_config()
                }));
            }
        }
        Ok(settings)
    }

    /// The client and providers the library's wiring (`registry_auth::wire`, what the binary
    /// and a platform call) builds for this host, trusting the test CA through the client's
    /// extra-CA option.
    pub fn wired(&self, rt: &Runtime, access: Access) -> Result<Wired, String> {
        let transport = Arc::new(
            Transport::new(TransportConfig {
                ca_bundle: Some(self.ca_bundle.clone()),
                ..TransportConfig::default()
            })
            .map_err(|e| format!("transport: {e}"))?,
        );
        let settings = self.settings(access)?;
        if matches!(self.kind()?, ProviderKind::Ecr(_)) != matches!(self.auth, Auth::Ecr(_)) {
            return Err(format!(
                "{} maps to {} but its auth is {:?}",
                self.host,
                self.kind()?,
                self.auth
            ));
        }
        rt.block_on(registry_auth::wire(
            &settings,
            transport,
            std::slice::from_ref(&self.host),
        ))
        .map_err(|e| format!("wiring: {e}"))
    }
}

/// What the default AWS credential chain answers on a machine with no credentials anywhere:
/// `CredentialsNotLoaded` (without waiting for instance metadata, which is not here).
#[derive(Debug)]
struct EmptyChain;

impl ProvideCredentials for EmptyChain {
    fn provide_credentials<'a>(&'a self) -> future::ProvideCredentials<'a>
    where
        Self: 'a,
    {
        future::ProvideCredentials::ready(Err(CredentialsError::not_loaded(
            "no providers in chain provided credentials",
        )))
    }
}

/// moto's endpoint with the credential chain of a machine that has no AWS credentials.
fn without_keys(moto: &Moto) -> SdkConfig {
    moto.sdk_config()
        .into_builder()
        .credentials_provider(SharedCredentialsProvider::new(EmptyChain))
        .build()
}

fn host(value: &str) -> RegistryHost {
    value
        .parse()
        .unwrap_or_else(|e| panic!("xtask: {value:?} is not a registry host: {e}"))
}

fn token_config(realm_path: &str, service: &str) -> TokenServerConfig {
    TokenServerConfig::new()
        .realm_path(realm_path)
        .service(service)
        .user(USER, PASSWORD, &["*"])
        .private(&format!("{PRIVATE_PREFIX}/*"))
}

fn keychain_auth() -> Auth {
    Auth::Keychain {
        user: USER.to_owned(),
        password: PASSWORD.to_owned(),
    }
}

/// A token-mode registry (plain http, loopback) behind an nginx TLS front that also serves the
/// realm at `realm_path` on the SAME host:port: the GHCR and Gitea shape.
fn same_origin_token(
    wd: &WorkDir,
    ca: &TestCa,
    name: &'static str,
    realm_path: &str,
    service: &str,
    kind: &str,
) -> Flavour {
    let token = TokenServer::start(wd, token_config(realm_path, service));
    let front_port = free_port();
    let mut auth = token.token_auth();
    auth.realm = format!("https://127.0.0.1:{front_port}{realm_path}");
    let registry = Registry::start(wd, RegistryConfig::with_auth(RegistryAuth::Token(auth.clone())));
    let front = NginxFront::start_on(
        wd,
        ca,
        front_port,
        &[(realm_path, &token.base_url()), ("/v2/", &registry.base_url())],
    );
    let host = host(&front.host());
    let shape = format!(
        "nginx TLS {host} -> registry (token mode); realm {} service {service} on the same origin \
         [token service: test-support's own token server, not {name}'s]",
        auth.realm
    );
    Flavour {
        token: Some(token),
        _fronts: vec![front],
        ..Flavour::new(name, host, kind, shape, ca, registry, keychain_auth())
    }
}

pub fn ghcr(wd: &WorkDir, ca: &TestCa) -> Flavour {
    same_origin_token(wd, ca, "ghcr", "/token", "ghcr.io", "ghcr")
}

pub fn gitea(wd: &WorkDir, ca: &TestCa) -> Flavour {
    same_origin_token(wd, ca, "gitea", "/v2/token", "container_registry", "generic")
}

/// Gitea's older challenge: `Bearer realm=".../v2/token"` WITHOUT `service`, plus a second
/// `Basic` challenge. Distribution cannot be configured to send that, so xtask's
/// challenge-rewriting proxy sits between nginx and the registry and replaces the
/// registry's challenge on every 401 (everything else passes through unchanged).
pub fn gitea_legacy(wd: &WorkDir, ca: &TestCa) -> Flavour {
    let token = TokenServer::start(wd, token_config("/v2/token", "container_registry"));
    let front_port = free_port();
    let realm = format!("https://127.0.0.1:{front_port}/v2/token");
    let mut auth = token.token_auth();
    auth.realm = realm.clone();
    let registry = Registry::start(wd, RegistryConfig::with_auth(RegistryAuth::Token(auth)));
    let legacy = LegacyGiteaFront::start(&registry.base_url(), &realm);
    let front = NginxFront::start_on(
        wd,
        ca,
        front_port,
        &[("/v2/token", &token.base_url()), ("/v2/", &legacy.base_url())],
    );
    let host = host(&front.host());
    let shape = format!(
        "nginx TLS {host} -> xtask challenge rewriter -> registry (token mode); 401s answer \
         `Bearer realm=\"{realm}\"` (no service) + `Basic realm=\"Gitea Package API\"` \
         [challenge emulated: distribution cannot emit it; token service: test-support's own token server]"
    );
    Flavour {
        token: Some(token),
        _fronts: vec![front],
        legacy: Some(legacy),
        ..Flavour::new("gitea-legacy", host, "generic", shape, ca, registry, keychain_auth())
    }
}

/// Docker Hub's shape: the registry on one host:port (TLS), the realm on ANOTHER (an nginx
/// TLS front for the token server), service `registry.docker.io`.
pub fn dockerhub(wd: &WorkDir, ca: &TestCa) -> Flavour {
    let token = TokenServer::start(wd, token_config("/token", "registry.docker.io"));
    let front = NginxFront::start(wd, ca, &[("/token", &token.base_url())]);
    let mut auth = token.token_auth();
    auth.realm = front.url("/token");
    let registry = Registry::start(wd, RegistryConfig::with_auth(RegistryAuth::Token(auth.clone())).tls(ca));
    let host = host(&registry.host());
    let shape = format!(
        "registry TLS {host} (token mode); realm {} (another host:port) service registry.docker.io \
         [token service: test-support's own token server, not Docker Hub's]",
        auth.realm
    );
    Flavour {
        token: Some(token),
        _fronts: vec![front],
        ..Flavour::new("dockerhub", host, "generic", shape, ca, registry, keychain_auth())
    }
}

/// ECR's shape: moto answers GetAuthorizationToken; an htpasswd registry (TLS) holds user
/// `AWS` with moto's deterministic password; the host is declared ECR through the override.
pub fn ecr(wd: &WorkDir, ca: &TestCa) -> Flavour {
    let moto = Moto::start(wd);
    let registry = Registry::start(
        wd,
        RegistryConfig::with_auth(RegistryAuth::Htpasswd {
            realm: "ecr-standin".to_owned(),
            users: vec![("AWS".to_owned(), Moto::expected_password())],
        })
        .tls(ca),
    );
    let host = host(&registry.host());
    let shape = format!(
        "moto {} (GetAuthorizationToken, counted) + htpasswd registry TLS {host} holding AWS:<moto password>",
        moto.endpoint_url()
    );
    let kind = format!("ecr:{}:{}", Moto::ACCOUNT_ID, Moto::REGION);
    Flavour::new("ecr", host, &kind, shape, ca, registry, Auth::Ecr(moto))
}

/// Harbor-like Basic: an htpasswd registry over TLS.
pub fn basic(wd: &WorkDir, ca: &TestCa) -> Flavour {
    let registry = Registry::start(
        wd,
        RegistryConfig::with_auth(RegistryAuth::Htpasswd {
            realm: "harbor".to_owned(),
            users: vec![(USER.to_owned(), PASSWORD.to_owned())],
        })
        .tls(ca),
    );
    let host = host(&registry.host());
    let shape = format!("htpasswd registry TLS {host} (Basic realm=\"harbor\")");
    Flavour::new("basic", host, "generic", shape, ca, registry, keychain_auth())
}

/// No auth, plain http on loopback (the client's https-first probe falls back).
pub fn anonymous(wd: &WorkDir, ca: &TestCa) -> Flavour {
    let registry = Registry::anonymous(wd);
    let host = host(&registry.host());
    let shape = format!("anonymous registry, plain http {host} (loopback)");
    Flavour {
        skopeo_tls: RegistryTls::Plain,
        ..Flavour::new("anonymous", host, "generic", shape, ca, registry, Auth::Anonymous)
    }
}

/// Every flavour, in matrix order: (name, constructor).
pub type Constructor = fn(&WorkDir, &TestCa) -> Flavour;

pub const ALL: [(&str, Constructor); 7] = [
    ("ghcr", ghcr),
    ("gitea", gitea),
    ("gitea-legacy", gitea_legacy),
    ("dockerhub", dockerhub),
    ("ecr", ecr),
    ("basic", basic),
    ("anonymous", anonymous),
];
