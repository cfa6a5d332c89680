//! An in-process token server implementing the distribution token spec
//! (`GET <realm>?service=..&scope=..`), minting JWTs the real `docker-registry` accepts.
//!
//! Owns the grant rules (intersection of asked and allowed), the signing key and its
//! certificate (the registry's `rootcertbundle`), and the record of every exchange. It must not
//! know how a registry is started; [`TokenServer::registry_auth`] hands over what a registry
//! config needs.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, Once};
use std::time::{SystemTime, UNIX_EPOCH};

use axum::Router;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use rcgen::{CertificateParams, KeyPair};
use serde::Serialize;

use crate::WorkDir;
use crate::http::ServerThread;
use crate::registry::{RegistryAuth, TokenAuth};

/// Which JSON field(s) carry the token in a successful answer. Real servers differ: Docker Hub
/// sends both, Gitea only `token`, some OAuth-style servers only `access_token`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenField {
    /// `{"token": ...}`
    Token,
    /// `{"access_token": ...}`
    AccessToken,
    /// Both fields, same value.
    Both,
}

/// An injected failure, answered instead of a token (the request is still recorded).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TokenFault {
    /// This status with a JSON error body.
    Status(u16),
    /// 200 with a body that is not JSON.
    MalformedJson,
    /// 200 with JSON that has neither `token` nor `access_token`.
    NoTokenField,
    /// Fail the next `n` requests with the given fault, then answer normally again.
    Times(usize, Box<TokenFault>),
}

/// A user of the token server: password and the repositories they may pull and push.
#[derive(Clone, PartialEq, Eq)]
pub struct TokenUser {
    /// Basic auth password.
    pub password: String,
    /// Repository patterns: exact name, `*` (all), or a `prefix/*`.
    pub repos: Vec<String>,
}

impl std::fmt::Debug for TokenUser {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenUser")
            .field("password", &"<redacted>")
            .field("repos", &self.repos)
            .finish()
    }
}

/// Configuration of a [`TokenServer`]; build with [`TokenServerConfig::new`] and the setters.
/// It can be changed while running with [`TokenServer::update`].
#[derive(Debug, Clone)]
pub struct TokenServerConfig {
    /// Path of the realm on the token server, e.g. `/token` or `/v2/token`.
    pub realm_path: String,
    /// The service name: the JWT `aud`, and what the registry is configured with.
    pub service: String,
    /// The JWT `iss`.
    pub issuer: String,
    /// `expires_in` in the answer; `None` omits the field (clients must assume 60 s).
    pub expires_in: Option<u64>,
    /// Lifetime written into the JWT `exp` claim, in seconds from now; `None` uses
    /// `expires_in` (or 60). A negative value mints already-expired tokens.
    pub jwt_lifetime: Option<i64>,
    /// Which field carries the token.
    pub token_field: TokenField,
    /// Whether to send `issued_at` (RFC 3339).
    pub issued_at: bool,
    /// Users by name.
    pub users: BTreeMap<String, TokenUser>,
    /// Repository patterns (exact, `*`, `prefix/*`) that need a user allowed for them; any
    /// other repository is public (anonymous pull).
    pub private_repos: Vec<String>,
    /// Only the first N requested scopes are considered (emulates registries that look at the
    /// first scope only).
    pub max_scopes: Option<usize>,
    /// An injected failure.
    pub fault: Option<TokenFault>,
}

impl Default for TokenServerConfig {
    fn default() -> Self {
        TokenServerConfig::new()
    }
}

impl TokenServerConfig {
    /// Realm `/token`, service `imagewatch-test-registry`, issuer `imagewatch-test-issuer`,
    /// `expires_in` 300, field `token`, `issued_at` sent, no users, every repository public.
    pub fn new() -> TokenServerConfig {
        TokenServerConfig {
            realm_path: "/token".to_string(),
            service: "imagewatch-test-registry".to_string(),
            issuer: "imagewatch-test-issuer".to_string(),
            expires_in: Some(300),
            jwt_lifetime: None,
            token_field: TokenField::Token,
            issued_at: true,
            users: BTreeMap::new(),
            private_repos: Vec::new(),
            max_scopes: None,
            fault: None,
        }
    }

    /// Sets the realm path (must start with `/`).
    pub fn realm_path(mut self, path: &str) -> Self {
        assert!(path.starts_with('/'), "realm path must start with '/': {path:?}");
        self.realm_path = path.to_string();
        self
    }

    /// Sets the service name (JWT `aud`).
    pub fn service(mut self, service: &str) -> Self {
        self.service = service.to_string();
        self
    }

    /// Sets the issuer (JWT `iss`).
    pub fn issuer(mut self, issuer: &str) -> Self {
        self.issuer = issuer.to_string();
        self
    }

    /// Sets `expires_in` (`None` omits it).
    pub fn expires_in(mut self, secs: Option<u64>) -> Self {
        self.expires_in = secs;
        self
    }

    /// Sets the JWT lifetime independently of `expires_in` (negative: already expired).
    pub fn jwt_lifetime(mut self, secs: i64) -> Self {
        self.jwt_lifetime = Some(secs);
        self
    }

    /// Sets which field carries the token.
    pub fn token_field(mut self, field: TokenField) -> Self {
        self.token_field = field;
        self
    }

    /// Whether to send `issued_at`.
    pub fn issued_at(mut self, send: bool) -> Self {
        self.issued_at = send;
        self
    }

    /// Adds a user allowed to pull and push `repos` (patterns: exact, `*`, `prefix/*`).
    pub fn user(mut self, name: &str, password: &str, repos: &[&str]) -> Self {
        self.users.insert(
            name.to_string(),
            TokenUser {
                password: password.to_string(),
                repos: repos.iter().map(|r| r.to_string()).collect(),
            },
        );
        self
    }

    /// Marks repositories (patterns) private: only users allowed for them get access.
    pub fn private(mut self, pattern: &str) -> Self {
        self.private_repos.push(pattern.to_string());
        self
    }

    /// Considers only the first `n` scopes of a request.
    pub fn max_scopes(mut self, n: usize) -> Self {
        self.max_scopes = Some(n);
        self
    }

    /// Injects a fault.
    pub fn fault(mut self, fault: TokenFault) -> Self {
        self.fault = Some(fault);
        self
    }

    /// The actions `user` (None: anonymous) may perform on repository `name`.
    fn allowed_actions(&self, user: Option<&str>, name: &str) -> Vec<&'static str> {
        let mut allowed = Vec::new();
        let private = self.private_repos.iter().any(|p| pattern_matches(p, name));
        if !private {
            allowed.push("pull");
        }
        if let Some(user) = user.and_then(|u| self.users.get(u))
            && user.repos.iter().any(|p| pattern_matches(p, name))
        {
            for action in ["pull", "push", "delete", "*"] {
                if !allowed.contains(&action) {
                    allowed.push(action);
                }
            }
        }
        allowed
    }
}

fn pattern_matches(pattern: &str, name: &str) -> bool {
    if pattern == "*" {
        return true;
    }
    match pattern.strip_suffix("/*") {
        Some(prefix) => name.strip_prefix(prefix).is_some_and(|rest| rest.starts_with('/')),
        None => pattern == name,
    }
}

/// What authentication a token request carried.
#[derive(Clone, PartialEq, Eq)]
pub enum SeenAuth {
    /// No `Authorization` header: an anonymous exchange.
    None,
    /// Basic credentials; `valid` tells whether user and password matched.
    Basic {
        /// The user name sent.
        user: String,
        /// Whether the password was right for a known user.
        valid: bool,
    },
    /// Some other scheme (e.g. a Bearer token sent to the realm); the scheme name.
    Other(String),
}

impl std::fmt::Debug for SeenAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SeenAuth::None => write!(f, "None"),
            SeenAuth::Basic { user, valid } => write!(f, "Basic({user}, valid={valid})"),
            SeenAuth::Other(scheme) => write!(f, "Other({scheme})"),
        }
    }
}

/// One access entry of a minted token: `repository:name:actions`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Access {
    /// Resource type, always `repository` here.
    #[serde(rename = "type")]
    pub kind: String,
    /// Repository name.
    pub name: String,
    /// Granted actions (a subset of those asked, in asked order).
    pub actions: Vec<String>,
}

/// The record of one request to the token server.
#[derive(Debug, Clone)]
pub struct TokenRequest {
    /// The path requested.
    pub path: String,
    /// The raw query string.
    pub query: String,
    /// The `service` parameter, if any.
    pub service: Option<String>,
    /// Every scope asked, repeated parameters and space-separated lists flattened, in order.
    pub scopes: Vec<String>,
    /// The authentication seen.
    pub auth: SeenAuth,
    /// What the token grants (empty when no token was minted).
    pub granted: Vec<Access>,
    /// The status answered.
    pub status: u16,
    /// The token minted and sent, if any (decode it with [`decode_jwt_claims`]).
    pub token: Option<String>,
}

impl TokenRequest {
    /// The Basic user, if Basic auth was sent.
    pub fn basic_user(&self) -> Option<&str> {
        match &self.auth {
            SeenAuth::Basic { user, .. } => Some(user),
            _ => None,
        }
    }

    /// Granted scopes in the `repository:name:a,b` form.
    pub fn granted_scopes(&self) -> Vec<String> {
        self.granted
            .iter()
            .map(|a| format!("{}:{}:{}", a.kind, a.name, a.actions.join(",")))
            .collect()
    }
}

struct Shared {
    config: TokenServerConfig,
    requests: Vec<TokenRequest>,
}

struct Signer {
    key: EncodingKey,
    x5c: String,
}

struct AppState {
    shared: Mutex<Shared>,
    signer: Signer,
}

fn lock(m: &Mutex<Shared>) -> MutexGuard<'_, Shared> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// An in-process token server (its own thread and runtime) for registries in token mode.
///
/// Why: the real distribution registry verifies JWTs against a `rootcertbundle`; this server
/// mints such JWTs (ES256, key named by an `x5c` header holding a self-signed certificate that
/// is also written as the bundle) with grant rules and faults a test controls, and records every
/// exchange so tests can count them.
pub struct TokenServer {
    state: Arc<AppState>,
    server: ServerThread,
    bundle_path: PathBuf,
    cert_pem: String,
    _work_dir: WorkDir,
}

impl std::fmt::Debug for TokenServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenServer")
            .field("addr", &self.server.addr())
            .field("bundle", &self.bundle_path)
            .finish()
    }
}

fn install_jwt_crypto() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        // Explicit, so feature unification (another crate enabling `aws_lc_rs`) cannot leave
        // jsonwebtoken without a provider. An Err means one is installed already: fine.
        let _ =
            jsonwebtoken::crypto::CryptoProvider::install_default(&jsonwebtoken::crypto::rust_crypto::DEFAULT_PROVIDER);
    });
}

impl TokenServer {
    /// Generates the signing key and certificate (written to `work_dir/token*/signer.crt`),
    /// then starts serving on 127.0.0.1 (OS-picked port).
    ///
    /// # Panics
    /// When key generation or binding fails.
    pub fn start(work_dir: &WorkDir, config: TokenServerConfig) -> TokenServer {
        install_jwt_crypto();
        let dir = work_dir.fresh_dir("token");
        let key = KeyPair::generate().unwrap_or_else(|e| panic!("test-support: token key: {e}"));
        let mut params = CertificateParams::new(Vec::<String>::new())
            .unwrap_or_else(|e| panic!("test-support: token cert params: {e}"));
        params.distinguished_name = crate::ca::name("imagewatch test token signer");
        let cert = params
            .self_signed(&key)
            .unwrap_or_else(|e| panic!("test-support: token cert: {e}"));
        let cert_pem = cert.pem();
        let bundle_path = work_dir.write(&dir.join("signer.crt"), &cert_pem);
        work_dir.write(&dir.join("signer.key"), key.serialize_pem());
        let signer = Signer {
            key: EncodingKey::from_ec_der(&key.serialize_der()),
            x5c: STANDARD.encode(cert.der()),
        };
        let state = Arc::new(AppState {
            shared: Mutex::new(Shared {
                config,
                requests: Vec::new(),
            }),
            signer,
        });
        let router = Router::new().fallback(handle).with_state(state.clone());
        let server = ServerThread::spawn("token-server", router);
        TokenServer {
            state,
            server,
            bundle_path,
            cert_pem,
            _work_dir: work_dir.clone(),
        }
    }

    /// `127.0.0.1:PORT`.
    pub fn host(&self) -> String {
        self.server.addr().to_string()
    }

    /// `http://127.0.0.1:PORT`.
    pub fn base_url(&self) -> String {
        format!("http://{}", self.server.addr())
    }

    /// The full realm URL: base URL plus the configured realm path.
    pub fn realm_url(&self) -> String {
        format!("{}{}", self.base_url(), self.config().realm_path)
    }

    /// The service name (JWT `aud`).
    pub fn service(&self) -> String {
        self.config().service
    }

    /// The issuer (JWT `iss`).
    pub fn issuer(&self) -> String {
        self.config().issuer
    }

    /// The PEM file of the signing certificate: the registry's `rootcertbundle`.
    pub fn rootcertbundle_path(&self) -> &Path {
        &self.bundle_path
    }

    /// The signing certificate (PEM).
    pub fn cert_pem(&self) -> &str {
        &self.cert_pem
    }

    /// What a registry in token mode needs, with the realm pointing at this server.
    pub fn registry_auth(&self) -> RegistryAuth {
        RegistryAuth::Token(self.token_auth())
    }

    /// Like [`registry_auth`](Self::registry_auth) but the bare [`TokenAuth`], e.g. to replace
    /// the realm with a front's URL.
    pub fn token_auth(&self) -> TokenAuth {
        TokenAuth {
            realm: self.realm_url(),
            service: self.service(),
            issuer: self.issuer(),
            rootcertbundle: self.bundle_path.clone(),
        }
    }

    /// A copy of the current configuration.
    pub fn config(&self) -> TokenServerConfig {
        lock(&self.state.shared).config.clone()
    }

    /// Changes the configuration while running (users, faults, lifetimes, ...).
    pub fn update(&self, change: impl FnOnce(&mut TokenServerConfig)) {
        change(&mut lock(&self.state.shared).config);
    }

    /// Sets or clears the injected fault.
    pub fn set_fault(&self, fault: Option<TokenFault>) {
        self.update(|c| c.fault = fault);
    }

    /// Every request received so far, in order.
    pub fn requests(&self) -> Vec<TokenRequest> {
        lock(&self.state.shared).requests.clone()
    }

    /// Number of requests received (any outcome).
    pub fn request_count(&self) -> usize {
        lock(&self.state.shared).requests.len()
    }

    /// Number of successful exchanges (a token was minted and sent).
    pub fn exchange_count(&self) -> usize {
        lock(&self.state.shared)
            .requests
            .iter()
            .filter(|r| r.token.is_some())
            .count()
    }

    /// Forgets the recorded requests.
    pub fn clear(&self) {
        lock(&self.state.shared).requests.clear();
    }

    /// Mints a token directly (not recorded), e.g. for a test that sends a token of another
    /// repository. `lifetime` in seconds may be negative.
    pub fn mint(&self, subject: &str, access: &[Access], lifetime: i64) -> String {
        let config = self.config();
        mint(&self.state.signer, &config, subject, access, lifetime)
            .unwrap_or_else(|e| panic!("test-support: minting a token: {e}"))
    }
}

/// Decodes a JWT's claims WITHOUT verifying it (tests inspecting what was minted or sent).
///
/// # Panics
/// When `jwt` is not three base64url parts with JSON in the middle.
pub fn decode_jwt_claims(jwt: &str) -> serde_json::Value {
    let payload = jwt
        .split('.')
        .nth(1)
        .unwrap_or_else(|| panic!("not a JWT (no payload part): {jwt:?}"));
    let bytes = URL_SAFE_NO_PAD
        .decode(payload.trim_end_matches('='))
        .unwrap_or_else(|e| panic!("JWT payload is not base64url: {e}"));
    serde_json::from_slice(&bytes).unwrap_or_else(|e| panic!("JWT payload is not JSON: {e}"))
}

pub(crate) fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

fn mint(
    signer: &Signer,
    config: &TokenServerConfig,
    subject: &str,
    access: &[Access],
    lifetime: i64,
) -> Result<String, String> {
    #[derive(Serialize)]
    struct Claims<'a> {
        iss: &'a str,
        sub: &'a str,
        aud: &'a str,
        exp: i64,
        nbf: i64,
        iat: i64,
        jti: String,
        access: &'a [Access],
    }
    let now = unix_now();
    let claims = Claims {
        iss: &config.issuer,
        sub: subject,
        aud: &config.service,
        exp: now + lifetime,
        nbf: now - 5,
        iat: now,
        jti: random_hex(16),
        access,
    };
    let mut header = Header::new(Algorithm::ES256);
    header.typ = Some("JWT".to_string());
    header.x5c = Some(vec![signer.x5c.clone()]);
    jsonwebtoken::encode(&header, &claims, &signer.key).map_err(|e| e.to_string())
}

fn random_hex(bytes: usize) -> String {
    use sha2::Digest as _;
    use std::sync::atomic::{AtomicU64, Ordering};
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    let seed = format!("{n}-{nanos}-{}", std::process::id());
    let digest = sha2::Sha256::digest(seed.as_bytes());
    hex::encode(&digest[..bytes.min(32)])
}

/// Splits `repository:name:a,b` into (type, name, actions).
fn parse_scope(scope: &str) -> Option<(&str, &str, Vec<&str>)> {
    let (kind, rest) = scope.split_once(':')?;
    let (name, actions) = rest.rsplit_once(':')?;
    Some((kind, name, actions.split(',').filter(|a| !a.is_empty()).collect()))
}

fn parse_query(query: &str) -> Vec<(String, String)> {
    query
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|pair| {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            (percent_decode(k), percent_decode(v))
        })
        .collect()
}

/// Decodes `%XX` and `+` (form encoding) in a query component.
pub(crate) fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        if b == b'+' {
            out.push(b' ');
        } else if b == b'%'
            && i + 2 < bytes.len()
            && bytes[i + 1].is_ascii_hexdigit()
            && bytes[i + 2].is_ascii_hexdigit()
        {
            let hi = (bytes[i + 1] as char).to_digit(16).unwrap_or(0);
            let lo = (bytes[i + 2] as char).to_digit(16).unwrap_or(0);
            out.push((hi * 16 + lo) as u8);
            i += 2;
        } else {
            out.push(b);
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn seen_auth(headers: &HeaderMap, config: &TokenServerConfig) -> SeenAuth {
    let Some(value) = headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()) else {
        return SeenAuth::None;
    };
    let (scheme, rest) = value.split_once(' ').unwrap_or((value, ""));
    if !scheme.eq_ignore_ascii_case("basic") {
        return SeenAuth::Other(scheme.to_string());
    }
    let decoded = STANDARD
        .decode(rest.trim())
        .ok()
        .map(|b| String::from_utf8_lossy(&b).into_owned())
        .unwrap_or_default();
    let (user, password) = decoded.split_once(':').unwrap_or((&decoded, ""));
    let valid = config.users.get(user).is_some_and(|u| u.password == password);
    SeenAuth::Basic {
        user: user.to_string(),
        valid,
    }
}

fn rfc3339(unix: i64) -> String {
    // Civil-from-days (Howard Hinnant), UTC.
    let days = unix.div_euclid(86_400);
    let secs = unix.rem_euclid(86_400);
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = if m <= 2 { y + 1 } else { y };
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        secs / 3600,
        secs % 3600 / 60,
        secs % 60
    )
}

fn json_error(status: StatusCode, code: &str, message: &str) -> Response {
    let body = serde_json::json!({"errors": [{"code": code, "message": message, "detail": null}]});
    (status, axum::Json(body)).into_response()
}

async fn handle(State(state): State<Arc<AppState>>, req: Request) -> Response {
    let path = req.uri().path().to_string();
    let query = req.uri().query().unwrap_or("").to_string();
    let params = parse_query(&query);
    let service = params.iter().find(|(k, _)| k == "service").map(|(_, v)| v.clone());
    let scopes: Vec<String> = params
        .iter()
        .filter(|(k, _)| k == "scope")
        .flat_map(|(_, v)| {
            v.split(' ')
                .filter(|s| !s.is_empty())
                .map(str::to_string)
                .collect::<Vec<_>>()
        })
        .collect();

    let mut shared = lock(&state.shared);
    let auth = seen_auth(req.headers(), &shared.config);
    let mut record = TokenRequest {
        path: path.clone(),
        query,
        service,
        scopes: scopes.clone(),
        auth: auth.clone(),
        granted: Vec::new(),
        status: 200,
        token: None,
    };

    if path != shared.config.realm_path {
        record.status = 404;
        shared.requests.push(record);
        return json_error(StatusCode::NOT_FOUND, "NOT_FOUND", "not the realm path");
    }
    if req.method() != axum::http::Method::GET {
        record.status = 405;
        shared.requests.push(record);
        return json_error(StatusCode::METHOD_NOT_ALLOWED, "UNSUPPORTED", "only GET is implemented");
    }

    // Faults first: a broken token server answers the same whoever asks.
    if let Some(fault) = shared.config.fault.clone() {
        let active = match fault {
            TokenFault::Times(0, _) => {
                shared.config.fault = None;
                None
            }
            TokenFault::Times(n, inner) => {
                shared.config.fault = if n > 1 {
                    Some(TokenFault::Times(n - 1, inner.clone()))
                } else {
                    None
                };
                Some(*inner)
            }
            other => Some(other),
        };
        if let Some(active) = active {
            let response = match active {
                TokenFault::Status(code) => {
                    let status = StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
                    record.status = status.as_u16();
                    json_error(status, "INJECTED", "injected fault")
                }
                TokenFault::MalformedJson => {
                    record.status = 200;
                    (
                        StatusCode::OK,
                        [(header::CONTENT_TYPE, "application/json")],
                        "{\"token\": \"unterminated",
                    )
                        .into_response()
                }
                TokenFault::NoTokenField | TokenFault::Times(..) => {
                    record.status = 200;
                    (StatusCode::OK, axum::Json(serde_json::json!({"expires_in": 300}))).into_response()
                }
            };
            shared.requests.push(record);
            return response;
        }
    }

    let user = match &auth {
        SeenAuth::Basic { user, valid: true } => Some(user.clone()),
        SeenAuth::Basic { valid: false, .. } => {
            record.status = 401;
            shared.requests.push(record);
            let mut response = json_error(StatusCode::UNAUTHORIZED, "UNAUTHORIZED", "invalid credentials");
            if let Ok(v) = "Basic realm=\"imagewatch-test-token\"".parse() {
                response.headers_mut().insert(header::WWW_AUTHENTICATE, v);
            }
            return response;
        }
        SeenAuth::None | SeenAuth::Other(_) => None,
    };

    let considered = match shared.config.max_scopes {
        Some(n) => &scopes[..n.min(scopes.len())],
        None => &scopes[..],
    };
    let mut granted: Vec<Access> = Vec::new();
    for scope in considered {
        let Some((kind, name, asked)) = parse_scope(scope) else {
            continue;
        };
        if kind != "repository" {
            continue;
        }
        let allowed = shared.config.allowed_actions(user.as_deref(), name);
        let actions: Vec<String> = asked
            .iter()
            .filter(|a| allowed.contains(a))
            .map(|a| a.to_string())
            .collect();
        if actions.is_empty() {
            continue;
        }
        match granted.iter_mut().find(|g| g.name == name) {
            Some(existing) => {
                for a in actions {
                    if !existing.actions.contains(&a) {
                        existing.actions.push(a);
                    }
                }
            }
            None => granted.push(Access {
                kind: "repository".to_string(),
                name: name.to_string(),
                actions,
            }),
        }
    }

    let config = &shared.config;
    let lifetime = config
        .jwt_lifetime
        .unwrap_or_else(|| config.expires_in.map_or(60, |e| e as i64));
    let token = match mint(&state.signer, config, user.as_deref().unwrap_or(""), &granted, lifetime) {
        Ok(t) => t,
        Err(e) => {
            record.status = 500;
            shared.requests.push(record);
            return json_error(StatusCode::INTERNAL_SERVER_ERROR, "MINT", &e);
        }
    };
    let mut body = serde_json::Map::new();
    if matches!(config.token_field, TokenField::Token | TokenField::Both) {
        body.insert("token".into(), token.clone().into());
    }
    if matches!(config.token_field, TokenField::AccessToken | TokenField::Both) {
        body.insert("access_token".into(), token.clone().into());
    }
    if let Some(e) = config.expires_in {
        body.insert("expires_in".into(), e.into());
    }
    if config.issued_at {
        body.insert("issued_at".into(), rfc3339(unix_now()).into());
    }
    record.granted = granted;
    record.token = Some(token);
    shared.requests.push(record);
    (StatusCode::OK, axum::Json(serde_json::Value::Object(body))).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_formats_known_instants() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(rfc3339(1_700_000_000), "2023-11-14T22:13:20Z");
    }

    #[test]
    fn patterns_match_exact_star_and_prefix() {
        assert!(pattern_matches("*", "a/b"));
        assert!(pattern_matches("org/*", "org/img"));
        assert!(!pattern_matches("org/*", "organisation/img"));
        assert!(pattern_matches("org/img", "org/img"));
        assert!(!pattern_matches("org/img", "org/img2"));
    }

    #[test]
    fn scopes_parse_with_names_containing_slashes() {
        assert_eq!(
            parse_scope("repository:org/img:pull,push"),
            Some(("repository", "org/img", vec!["pull", "push"]))
        );
        assert_eq!(percent_decode("repository%3Aa%2Fb%3Apull+x"), "repository:a/b:pull x");
        assert_eq!(percent_decode("100%"), "100%");
    }
}
