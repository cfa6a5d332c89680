//! The HTTP transport every registry and token request goes through: one reqwest client
//! (rustls), https by default, the scheme remembered per host, timeouts, size-capped bodies
//! and redirects followed by hand so that credentials never leave the origin they were meant
//! for. It knows nothing of manifests or tokens beyond the byte caps; it never turns TLS
//! verification off.
//!
//! Architecture invariant: every rule about where a credential may go lives in
//! [`credentials_allowed`], [`redirect_allowed`] and [`credentials_survive_redirect`]; every
//! request that carries one passes them.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use reqwest::header::{ACCEPT, AUTHORIZATION, CONTENT_TYPE, HeaderMap, HeaderValue, LOCATION};
use reqwest::{Method, StatusCode};
use url::{Host, Url};

use super::stats::{ClientStats, RequestKind};
use crate::host::RegistryHost;
use crate::provider::Authorization;
use crate::secret::{Credentials, Secret};

/// How long to wait for a TCP connection (and TLS handshake) unless configured.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a whole request, body included, may take unless configured.
pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// The largest manifest body accepted (distribution itself refuses larger manifests).
pub const MAX_MANIFEST_BYTES: usize = 4 * 1024 * 1024;
/// The largest token-endpoint body accepted.
pub const MAX_TOKEN_BYTES: usize = 1024 * 1024;
/// Redirect hops followed before giving up.
pub const MAX_REDIRECTS: usize = 10;

/// How the transport connects.
#[derive(Clone, Debug)]
pub struct TransportConfig {
    pub connect_timeout: Duration,
    /// The whole request, from connecting to the last body byte.
    pub request_timeout: Duration,
    /// Non-loopback hosts the operator allows plain http for (tried after https fails).
    /// Credentials are still never sent to them over plain http.
    pub insecure_hosts: Vec<RegistryHost>,
    /// A PEM file of extra CA certificates trusted besides the system's.
    pub ca_bundle: Option<PathBuf>,
    pub max_manifest_bytes: usize,
    pub max_token_bytes: usize,
    pub user_agent: String,
}

impl Default for TransportConfig {
    fn default() -> TransportConfig {
        TransportConfig {
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            request_timeout: DEFAULT_REQUEST_TIMEOUT,
            insecure_hosts: Vec::new(),
            ca_bundle: None,
            max_manifest_bytes: MAX_MANIFEST_BYTES,
            max_token_bytes: MAX_TOKEN_BYTES,
            user_agent: concat!("imagewatch/", env!("CARGO_PKG_VERSION")).to_owned(),
        }
    }
}

/// Why a request got no usable answer. Never carries a secret: URLs here are registry and
/// realm URLs, whose query holds only `service` and `scope`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TransportError {
    #[error("{url} did not answer within {after:?}")]
    Timeout { url: String, after: Duration },
    #[error("cannot reach {url}: {reason}")]
    Unreachable { url: String, reason: String },
    #[error("{url} answered a body over the {cap}-byte cap for {what}")]
    TooLarge {
        url: String,
        cap: usize,
        what: &'static str,
    },
    #[error("refusing {url}: {reason}")]
    Insecure { url: String, reason: String },
    #[error("bad redirect from {url}: {reason}")]
    Redirect { url: String, reason: String },
    #[error("invalid transport configuration: {0}")]
    Config(String),
}

/// An answered request: the final status, headers and body (capped), and the URL that
/// answered (after redirects).
#[derive(Debug, Clone)]
pub struct Response {
    pub status: u16,
    pub headers: HeaderMap,
    pub body: Vec<u8>,
    pub url: Url,
}

impl Response {
    /// A header as text, when present and visible ASCII.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|value| value.to_str().ok())
    }

    /// Every value of a header that may repeat (`WWW-Authenticate`).
    pub fn header_all(&self, name: &str) -> Vec<&str> {
        self.headers
            .get_all(name)
            .iter()
            .filter_map(|value| value.to_str().ok())
            .collect()
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Scheme {
    Https,
    Http,
}

impl Scheme {
    fn as_str(self) -> &'static str {
        match self {
            Scheme::Https => "https",
            Scheme::Http => "http",
        }
    }
}

/// The shared HTTP transport. Cheap to share behind an `Arc`; the connection pool is reused
/// across every registry and realm.
#[derive(Debug)]
pub struct Transport {
    client: reqwest::Client,
    config: TransportConfig,
    schemes: Mutex<HashMap<String, Scheme>>,
    stats: Arc<ClientStats>,
}

/// What one request looks like before it is sent.
struct Outgoing<'a> {
    method: Method,
    url: Url,
    authorization: Option<&'a Secret>,
    accept: Option<&'a str>,
    form: Option<Vec<(String, String)>>,
    cap: usize,
    what: &'static str,
    kind: RequestKind,
}

/// A failure plus whether it happened before any HTTP was spoken (refused connection, TLS
/// handshake with a plain-http server), which is when plain http may be tried.
struct SendFailure {
    error: TransportError,
    before_http: bool,
}

impl From<TransportError> for SendFailure {
    fn from(error: TransportError) -> SendFailure {
        SendFailure {
            error,
            before_http: false,
        }
    }
}

impl Transport {
    /// Builds the client. Fails when the CA bundle cannot be read or holds no certificate.
    pub fn new(config: TransportConfig) -> Result<Transport, TransportError> {
        let mut builder = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .connect_timeout(config.connect_timeout)
            .timeout(config.request_timeout)
            .user_agent(config.user_agent.clone());
        if let Some(path) = &config.ca_bundle {
            let pem = std::fs::read(path)
                .map_err(|e| TransportError::Config(format!("cannot read the CA bundle {}: {e}", path.display())))?;
            let certificates = reqwest::Certificate::from_pem_bundle(&pem).map_err(|e| {
                TransportError::Config(format!("the CA bundle {} is not PEM certificates: {e}", path.display()))
            })?;
            if certificates.is_empty() {
                return Err(TransportError::Config(format!(
                    "the CA bundle {} holds no certificate (expected `-----BEGIN CERTIFICATE-----` blocks)",
                    path.display()
                )));
            }
            builder = builder.tls_certs_merge(certificates);
        }
        let client = builder
            .build()
            .map_err(|e| TransportError::Config(format!("cannot build the HTTP client: {e}")))?;
        Ok(Transport {
            client,
            config,
            schemes: Mutex::new(HashMap::new()),
            stats: Arc::new(ClientStats::default()),
        })
    }

    pub fn config(&self) -> &TransportConfig {
        &self.config
    }

    /// The counters of every request this transport sent.
    pub fn stats(&self) -> &Arc<ClientStats> {
        &self.stats
    }

    /// Whether `host` may be spoken to over plain http at all (after https failed).
    pub fn plain_http_allowed(&self, host: &RegistryHost) -> bool {
        host.is_loopback() || self.config.insecure_hosts.contains(host)
    }

    /// `GET <url>` to a token realm, with Basic credentials when given. Credentials are refused
    /// before any request unless the realm is https or loopback.
    pub async fn get_token(&self, url: &Url, basic: Option<&Credentials>) -> Result<Response, TransportError> {
        let header = match basic {
            None => None,
            Some(credentials) => Some(credentials.basic_header().ok_or_else(|| {
                TransportError::Config(format!(
                    "only Basic credentials can go with a token GET to {url}, not {credentials}"
                ))
            })?),
        };
        // send() refuses the credentials before any request unless the realm may have them.
        self.send(Outgoing {
            method: Method::GET,
            url: url.clone(),
            authorization: header.as_ref(),
            accept: Some("application/json"),
            form: None,
            cap: self.config.max_token_bytes,
            what: "a token response",
            kind: RequestKind::Token,
        })
        .await
        .map_err(|failure| failure.error)
    }

    /// `POST <url>` with a form (OAuth2 refresh-token grant). The form carries a secret, so the
    /// realm must be https or loopback.
    pub async fn post_token_form(&self, url: &Url, form: Vec<(String, String)>) -> Result<Response, TransportError> {
        self.send(Outgoing {
            method: Method::POST,
            url: url.clone(),
            authorization: None,
            accept: Some("application/json"),
            form: Some(form),
            cap: self.config.max_token_bytes,
            what: "a token response",
            kind: RequestKind::Token,
        })
        .await
        .map_err(|failure| failure.error)
    }

    /// A request to a registry's API (`path` relative to `/v2/`), https first; plain http
    /// only for loopback or operator-listed hosts after https failed to connect. The scheme
    /// that worked is remembered for the host.
    pub(crate) async fn registry_request(
        &self,
        host: &RegistryHost,
        method: Method,
        path: &str,
        authorization: Option<&Authorization>,
        accept: Option<&str>,
        kind: RequestKind,
    ) -> Result<Response, TransportError> {
        let secret = authorization.map(|a| Secret::new(a.header_value()));
        let remembered = self.lock_schemes().get(host.api_host()).copied();
        let cap = if method == Method::HEAD {
            0
        } else {
            self.config.max_manifest_bytes
        };
        let outgoing = |scheme: Scheme| -> Result<Outgoing<'_>, TransportError> {
            let url = format!("{}://{}/v2/{path}", scheme.as_str(), host.api_host());
            Ok(Outgoing {
                method: method.clone(),
                url: Url::parse(&url).map_err(|e| TransportError::Config(format!("invalid URL {url:?}: {e}")))?,
                authorization: secret.as_ref(),
                accept,
                form: None,
                cap,
                what: "a manifest",
                kind,
            })
        };
        if let Some(scheme) = remembered {
            return self.send(outgoing(scheme)?).await.map_err(|failure| failure.error);
        }
        match self.send(outgoing(Scheme::Https)?).await {
            Ok(response) => {
                self.remember(host, Scheme::Https);
                Ok(response)
            }
            Err(failure) if failure.before_http && self.plain_http_allowed(host) => {
                tracing::debug!(host = %host, error = %failure.error, "https failed; trying plain http");
                let response = self
                    .send(outgoing(Scheme::Http)?)
                    .await
                    .map_err(|failure| failure.error)?;
                self.remember(host, Scheme::Http);
                Ok(response)
            }
            Err(failure) => Err(failure.error),
        }
    }

    fn lock_schemes(&self) -> std::sync::MutexGuard<'_, HashMap<String, Scheme>> {
        self.schemes.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn remember(&self, host: &RegistryHost, scheme: Scheme) {
        self.lock_schemes().insert(host.api_host().to_owned(), scheme);
    }

    async fn send(&self, outgoing: Outgoing<'_>) -> Result<Response, SendFailure> {
        let Outgoing {
            mut method,
            mut url,
            mut authorization,
            accept,
            mut form,
            cap,
            what,
            kind,
        } = outgoing;
        for _ in 0..=MAX_REDIRECTS {
            if authorization.is_some() || form.is_some() {
                check_credentials_allowed(&url)?;
            }
            let mut request = self.client.request(method.clone(), url.clone());
            if let Some(secret) = authorization {
                let mut value = HeaderValue::from_str(secret.expose()).map_err(|_| {
                    TransportError::Config(format!("the Authorization value for {url} is not a valid header value"))
                })?;
                value.set_sensitive(true);
                request = request.header(AUTHORIZATION, value);
            }
            if let Some(accept) = accept {
                request = request.header(ACCEPT, accept);
            }
            if let Some(form) = &form {
                let body = url::form_urlencoded::Serializer::new(String::new())
                    .extend_pairs(form.iter())
                    .finish();
                request = request
                    .header(CONTENT_TYPE, "application/x-www-form-urlencoded")
                    .body(body);
            }
            let mut response = match request.send().await {
                Ok(response) => response,
                Err(error) => {
                    self.stats.failed();
                    return Err(self.classify(&url, &error));
                }
            };
            let status = response.status();
            self.stats.answered(kind, status.as_u16());
            if status.is_redirection()
                && let Some(location) = response.headers().get(LOCATION)
            {
                let location = location.to_str().map_err(|_| TransportError::Redirect {
                    url: url.to_string(),
                    reason: "the Location header is not text".into(),
                })?;
                let next = url.join(location).map_err(|e| TransportError::Redirect {
                    url: url.to_string(),
                    reason: format!("Location {location:?} is not a URL: {e}"),
                })?;
                redirect_allowed(&url, &next).map_err(|reason| TransportError::Insecure {
                    url: next.to_string(),
                    reason,
                })?;
                let rewrites_to_get =
                    status == StatusCode::SEE_OTHER || (method == Method::POST && matches!(status.as_u16(), 301 | 302));
                if rewrites_to_get {
                    method = Method::GET;
                    form = None;
                }
                if !credentials_survive_redirect(&url, &next) {
                    if form.is_some() {
                        return Err(TransportError::Insecure {
                            url: next.to_string(),
                            reason: format!("a credential form posted to {url} would be re-sent to another origin"),
                        }
                        .into());
                    }
                    if authorization.is_some() {
                        tracing::debug!(from = %url.origin().ascii_serialization(), to = %next.origin().ascii_serialization(), "redirect to another origin: credentials dropped");
                    }
                    authorization = None;
                }
                self.stats.redirected();
                url = next;
                continue;
            }
            let headers = response.headers().clone();
            let mut body = Vec::new();
            if method != Method::HEAD {
                if response.content_length().is_some_and(|len| len > cap as u64) {
                    return Err(too_large(&url, cap, what).into());
                }
                loop {
                    match response.chunk().await {
                        Ok(Some(chunk)) => {
                            if body.len() + chunk.len() > cap {
                                return Err(too_large(&url, cap, what).into());
                            }
                            body.extend_from_slice(&chunk);
                        }
                        Ok(None) => break,
                        Err(error) => return Err(self.classify(&url, &error)),
                    }
                }
            }
            return Ok(Response {
                status: status.as_u16(),
                headers,
                body,
                url,
            });
        }
        Err(TransportError::Redirect {
            url: url.to_string(),
            reason: format!("more than {MAX_REDIRECTS} redirects"),
        }
        .into())
    }

    fn classify(&self, url: &Url, error: &reqwest::Error) -> SendFailure {
        let shown = redacted(url);
        if error.is_timeout() {
            return TransportError::Timeout {
                url: shown,
                after: self.config.request_timeout,
            }
            .into();
        }
        if let Some(reason) = certificate_problem(error) {
            return TransportError::Unreachable {
                url: shown,
                reason: format!(
                    "the TLS certificate is not trusted ({reason}); give the registry's CA with the CA bundle option (verification is never turned off)"
                ),
            }
            .into();
        }
        SendFailure {
            error: TransportError::Unreachable {
                url: shown,
                reason: error_chain(error),
            },
            before_http: error.is_connect(),
        }
    }
}

fn too_large(url: &Url, cap: usize, what: &'static str) -> TransportError {
    TransportError::TooLarge {
        url: redacted(url),
        cap,
        what,
    }
}

/// The URL for messages: no user info (a URL should never carry any, but be sure).
fn redacted(url: &Url) -> String {
    let mut url = url.clone();
    let _ = url.set_username("");
    let _ = url.set_password(None);
    url.to_string()
}

/// The error's causes, joined, for a message (reqwest's own text only repeats the URL).
fn error_chain(error: &(dyn std::error::Error + 'static)) -> String {
    let Some(first) = error.source() else {
        return error.to_string();
    };
    let mut message = first.to_string();
    let mut source = first.source();
    while let Some(cause) = source {
        let text = cause.to_string();
        if !message.contains(&text) {
            message.push_str(": ");
            message.push_str(&text);
        }
        source = cause.source();
    }
    message
}

/// A rustls certificate rejection somewhere in the error's causes. rustls errors arrive
/// wrapped in `io::Error`s (nested), whose `source()` skips the wrapped error itself, so each
/// cause is unwrapped with `get_ref` too.
fn certificate_problem(error: &(dyn std::error::Error + 'static)) -> Option<String> {
    let mut current: Option<&(dyn std::error::Error + 'static)> = Some(error);
    while let Some(cause) = current {
        let mut inner = Some(cause);
        while let Some(candidate) = inner {
            if let Some(rustls::Error::InvalidCertificate(problem)) = candidate.downcast_ref::<rustls::Error>() {
                return Some(format!("{problem:?}"));
            }
            inner = candidate
                .downcast_ref::<std::io::Error>()
                .and_then(|io| io.get_ref())
                .map(|e| e as _);
        }
        current = cause.source();
    }
    None
}

/// Whether `url` names a loopback host (`localhost`, 127.0.0.0/8, `::1`).
pub fn is_loopback_url(url: &Url) -> bool {
    match url.host() {
        Some(Host::Domain(domain)) => domain.eq_ignore_ascii_case("localhost"),
        Some(Host::Ipv4(ip)) => ip.is_loopback(),
        Some(Host::Ipv6(ip)) => ip.is_loopback(),
        None => false,
    }
}

/// Whether credentials may be sent to `url`: over https anywhere, over plain http only to a
/// loopback host, where the traffic never leaves the machine. `Err` says why not.
pub fn credentials_allowed(url: &Url) -> Result<(), String> {
    match url.scheme() {
        "https" => Ok(()),
        "http" if is_loopback_url(url) => Ok(()),
        "http" => Err(format!(
            "credentials are never sent over plain http to a host that is not loopback ({}); serve it over https (trusting its CA with the CA bundle option)",
            url.host_str().unwrap_or("")
        )),
        other => Err(format!("unsupported URL scheme {other:?} (expected https)")),
    }
}

fn check_credentials_allowed(url: &Url) -> Result<(), TransportError> {
    credentials_allowed(url).map_err(|reason| TransportError::Insecure {
        url: redacted(url),
        reason,
    })
}

/// Whether a redirect from `from` to `to` may be followed at all: never from https down to
/// plain http on a non-loopback host, never to a scheme other than http(s).
pub fn redirect_allowed(from: &Url, to: &Url) -> Result<(), String> {
    match (from.scheme(), to.scheme()) {
        (_, "https") => Ok(()),
        ("https", "http") if !is_loopback_url(to) => Err(format!(
            "a redirect from https to plain http ({}) is not followed",
            to.host_str().unwrap_or("")
        )),
        (_, "http") => Ok(()),
        (_, other) => Err(format!("a redirect to scheme {other:?} is not followed")),
    }
}

/// Whether credentials meant for `from` may go along to `to`: only to the same host and port,
/// and never from https to plain http.
pub fn credentials_survive_redirect(from: &Url, to: &Url) -> bool {
    let same_authority = from.host() == to.host() && from.port_or_known_default() == to.port_or_known_default();
    let downgrade = from.scheme() == "https" && to.scheme() != "https";
    same_authority && !downgrade
}

#[cfg(test)]
mod tests {
    use super::*;
    use rstest::rstest;

    fn url(value: &str) -> Url {
        Url::parse(value).expect("valid URL")
    }

    #[rstest]
    #[case::https_anywhere("https://example.com/token", true)]
    #[case::http_loopback_v4("http://127.0.0.1:5001/token", true)]
    #[case::http_loopback_range("http://127.8.9.10/token", true)]
    #[case::http_localhost("http://localhost:5001/token", true)]
    #[case::http_loopback_v6("http://[::1]:5001/token", true)]
    #[case::http_remote("http://example.com/token", false)]
    #[case::http_private_ip("http://10.0.0.5:5000/token", false)]
    #[case::http_localhost_lookalike("http://localhost.example.com/token", false)]
    #[case::ftp("ftp://example.com/token", false)]
    fn credentials_go_only_over_https_or_to_loopback(#[case] target: &str, #[case] allowed: bool) {
        assert_eq!(credentials_allowed(&url(target)).is_ok(), allowed, "{target}");
    }

    #[rstest]
    #[case::same_origin("https://r.example/v2/a", "https://r.example/v2/b", true)]
    #[case::explicit_default_port("https://r.example/v2/a", "https://r.example:443/v2/b", true)]
    #[case::other_host("https://r.example/v2/a", "https://cdn.example/blob", false)]
    #[case::other_port("http://127.0.0.1:5000/v2/a", "http://127.0.0.1:5001/v2/a", false)]
    #[case::downgrade("https://127.0.0.1:5000/v2/a", "http://127.0.0.1:5000/v2/a", false)]
    #[case::upgrade_same_authority("http://127.0.0.1:5000/v2/a", "https://127.0.0.1:5000/v2/a", true)]
    #[case::subdomain("https://example.com/a", "https://evil.example.com/a", false)]
    fn credentials_follow_a_redirect_only_within_the_origin(
        #[case] from: &str,
        #[case] to: &str,
        #[case] carried: bool,
    ) {
        assert_eq!(credentials_survive_redirect(&url(from), &url(to)), carried);
    }

    #[rstest]
    #[case::https_to_https("https://a.example/", "https://b.example/", true)]
    #[case::http_to_https("http://127.0.0.1/", "https://b.example/", true)]
    #[case::https_to_remote_http("https://a.example/", "http://b.example/", false)]
    #[case::https_to_loopback_http("https://127.0.0.1:1/", "http://127.0.0.1:2/", true)]
    #[case::to_file("https://a.example/", "file:///etc/passwd", false)]
    fn redirects_never_downgrade_to_remote_plain_http(#[case] from: &str, #[case] to: &str, #[case] allowed: bool) {
        assert_eq!(redirect_allowed(&url(from), &url(to)).is_ok(), allowed);
    }

    #[tokio::test]
    async fn token_realm_over_remote_http_is_refused_before_any_request() {
        let transport = Transport::new(TransportConfig::default()).expect("transport");
        let error = transport
            .get_token(
                &url("http://example.com/token"),
                Some(&Credentials::basic("u", "hunter2")),
            )
            .await
            .expect_err("must be refused");
        assert!(matches!(error, TransportError::Insecure { .. }), "{error}");
        assert!(!error.to_string().contains("hunter2"));
        assert_eq!(
            transport.stats().snapshot(),
            Default::default(),
            "no request may have been sent"
        );
    }

    #[tokio::test]
    async fn unreadable_ca_bundle_is_a_clear_error_naming_the_path() {
        let config = TransportConfig {
            ca_bundle: Some("/nonexistent/ca.pem".into()),
            ..TransportConfig::default()
        };
        let error = Transport::new(config).expect_err("must fail").to_string();
        assert!(error.contains("/nonexistent/ca.pem"), "{error}");
    }
}
