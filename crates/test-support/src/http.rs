//! HTTP plumbing shared by the in-process servers and the tests: a server that runs on its own
//! thread and runtime, and a small synchronous client.
//!
//! Why its own thread: a test may block its thread in `std::process::Command` (skopeo pushing
//! through the token server) while the server must keep answering; a server spawned on the
//! test's current-thread runtime would deadlock. It must not know any component's routes.

use std::net::SocketAddr;
use std::thread::JoinHandle;
use std::time::Duration;

use axum::Router;
use tokio::sync::oneshot;

/// An axum router served on 127.0.0.1 (OS-picked port) from a dedicated thread with its own
/// current-thread tokio runtime. Dropping it stops the server and cancels in-flight requests
/// (including handlers that never answer).
///
/// Public so that tools outside this crate (xtask's challenge-rewriting proxy) serve their
/// own routers the same way instead of writing the thread and runtime again.
#[derive(Debug)]
pub struct ServerThread {
    addr: SocketAddr,
    shutdown: Option<oneshot::Sender<()>>,
    join: Option<JoinHandle<()>>,
}

impl ServerThread {
    /// Binds and starts serving before returning, so the port accepts connections at once.
    ///
    /// # Panics
    /// When binding 127.0.0.1:0 or building the runtime fails.
    pub fn spawn(name: &str, router: Router) -> ServerThread {
        let listener = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap_or_else(|e| panic!("test-support: {name}: cannot bind 127.0.0.1:0: {e}"));
        listener
            .set_nonblocking(true)
            .unwrap_or_else(|e| panic!("test-support: {name}: set_nonblocking: {e}"));
        let addr = listener
            .local_addr()
            .unwrap_or_else(|e| panic!("test-support: {name}: local_addr: {e}"));
        let (tx, rx) = oneshot::channel::<()>();
        let thread_name = format!("test-support-{name}");
        let join = std::thread::Builder::new()
            .name(thread_name.clone())
            .spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .unwrap_or_else(|e| panic!("test-support: {thread_name}: runtime: {e}"));
                rt.block_on(async move {
                    let listener = match tokio::net::TcpListener::from_std(listener) {
                        Ok(l) => l,
                        Err(e) => panic!("test-support: {thread_name}: listener: {e}"),
                    };
                    tokio::select! {
                        res = axum::serve(listener, router) => {
                            if let Err(e) = res {
                                eprintln!("test-support: {thread_name}: server error: {e}");
                            }
                        }
                        _ = rx => {}
                    }
                });
                // Drop in-flight connection tasks (hanging handlers) without waiting on them.
                rt.shutdown_background();
            })
            .unwrap_or_else(|e| panic!("test-support: {name}: cannot spawn thread: {e}"));
        ServerThread {
            addr,
            shutdown: Some(tx),
            join: Some(join),
        }
    }

    /// The bound address (always 127.0.0.1).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }
}

impl Drop for ServerThread {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(join) = self.join.take() {
            let _ = join.join();
        }
    }
}

/// A response as seen by [`http_send`]: status, every header (repeated ones kept, in order),
/// body bytes.
#[derive(Debug, Clone)]
pub struct HttpResponse {
    /// HTTP status code.
    pub status: u16,
    /// Header names lowercased, values as received, in order; repeated headers appear once per
    /// occurrence.
    pub headers: Vec<(String, String)>,
    /// The body.
    pub body: Vec<u8>,
}

impl HttpResponse {
    /// The first value of header `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        first_header(&self.headers, name)
    }

    /// Every value of header `name` (case-insensitive), in order.
    pub fn header_all(&self, name: &str) -> Vec<&str> {
        self.headers
            .iter()
            .filter(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
            .collect()
    }

    /// The body as (lossy) UTF-8.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// A request for [`http_send`]. Built with [`HttpRequest::get`] and friends.
#[derive(Debug, Clone)]
pub struct HttpRequest {
    /// Method, e.g. "GET".
    pub method: String,
    /// Absolute URL.
    pub url: String,
    /// Extra headers.
    pub headers: Vec<(String, String)>,
    /// Body bytes (empty for none).
    pub body: Vec<u8>,
    /// PEM of an extra CA to trust (a [`TestCa`](crate::TestCa)); only that CA is trusted
    /// when set.
    pub ca_pem: Option<String>,
    /// Whole-request timeout.
    pub timeout: Duration,
}

impl HttpRequest {
    /// A request with `method` to `url`, 10 s timeout, no headers.
    pub fn new(method: &str, url: &str) -> HttpRequest {
        HttpRequest {
            method: method.to_string(),
            url: url.to_string(),
            headers: Vec::new(),
            body: Vec::new(),
            ca_pem: None,
            timeout: Duration::from_secs(10),
        }
    }

    /// A GET to `url`.
    pub fn get(url: &str) -> HttpRequest {
        HttpRequest::new("GET", url)
    }

    /// Adds a header.
    pub fn header(mut self, name: &str, value: &str) -> HttpRequest {
        self.headers.push((name.to_string(), value.to_string()));
        self
    }

    /// Sets the body.
    pub fn body(mut self, body: impl Into<Vec<u8>>) -> HttpRequest {
        self.body = body.into();
        self
    }

    /// Trusts (only) this CA for https.
    pub fn ca(mut self, ca_pem: &str) -> HttpRequest {
        self.ca_pem = Some(ca_pem.to_string());
        self
    }

    /// Sets the timeout.
    pub fn timeout(mut self, timeout: Duration) -> HttpRequest {
        self.timeout = timeout;
        self
    }

    /// Sends it; see [`http_send`].
    pub fn send(&self) -> Result<HttpResponse, String> {
        http_send(self)
    }
}

/// Sends one request synchronously: no redirects followed, no proxy, no decompression.
///
/// Why: tests and readiness probes need a plain blocking client that works from any context,
/// including inside a `#[tokio::test]` (it runs on a short-lived thread with its own runtime).
pub fn http_send(req: &HttpRequest) -> Result<HttpResponse, String> {
    let req = req.clone();
    std::thread::scope(|s| {
        s.spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(|e| format!("runtime: {e}"))?;
            rt.block_on(send_async(&req))
        })
        .join()
        .map_err(|_| "the http client thread panicked".to_string())?
    })
}

/// Shorthand for a GET with [`http_send`].
pub fn http_get(url: &str) -> Result<HttpResponse, String> {
    http_send(&HttpRequest::get(url))
}

pub(crate) fn client(ca_pem: Option<&str>, timeout: Duration) -> Result<reqwest::Client, String> {
    let mut builder = reqwest::Client::builder()
        .no_proxy()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(timeout);
    if let Some(pem) = ca_pem {
        let cert = reqwest::Certificate::from_pem(pem.as_bytes()).map_err(|e| e.to_string())?;
        builder = builder.tls_certs_only([cert]);
    }
    builder.build().map_err(|e| format!("http client: {e}"))
}

async fn send_async(req: &HttpRequest) -> Result<HttpResponse, String> {
    let client = client(req.ca_pem.as_deref(), req.timeout)?;
    let method =
        reqwest::Method::from_bytes(req.method.as_bytes()).map_err(|e| format!("bad method {:?}: {e}", req.method))?;
    let mut builder = client.request(method, &req.url);
    for (k, v) in &req.headers {
        builder = builder.header(k, v);
    }
    if !req.body.is_empty() {
        builder = builder.body(req.body.clone());
    }
    let resp = builder
        .send()
        .await
        .map_err(|e| format!("{} {}: {e:?}", req.method, req.url))?;
    let status = resp.status().as_u16();
    let headers = header_pairs(resp.headers());
    let body = resp
        .bytes()
        .await
        .map_err(|e| format!("{} {}: reading body: {e}", req.method, req.url))?
        .to_vec();
    Ok(HttpResponse { status, headers, body })
}

/// Every header of `map` as (lowercase name, lossy UTF-8 value), in order, repeats kept.
pub(crate) fn header_pairs(map: &axum::http::HeaderMap) -> Vec<(String, String)> {
    map.iter()
        .map(|(k, v)| {
            (
                k.as_str().to_string(),
                String::from_utf8_lossy(v.as_bytes()).into_owned(),
            )
        })
        .collect()
}

/// The first value of header `name` (case-insensitive) among `headers`.
pub(crate) fn first_header<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str())
}

/// The `User-Agent` of readiness probes, so request logs can leave them out.
pub const READINESS_USER_AGENT: &str = "test-support-readiness-probe";

/// A readiness probe: true when `url` answers anything over HTTP(S).
pub(crate) fn answers_http(url: &str, ca_pem: Option<&str>) -> bool {
    let mut req = HttpRequest::get(url)
        .timeout(Duration::from_secs(2))
        .header("User-Agent", READINESS_USER_AGENT);
    req.ca_pem = ca_pem.map(str::to_string);
    http_send(&req).is_ok()
}

/// The upstream of an in-process pass-through proxy (moto's counter, xtask's challenge
/// rewriter): forwards method, path and query, body and end-to-end headers, and answers with
/// the upstream's status, headers and body. No redirects followed, no proxy.
#[derive(Debug)]
pub struct Upstream {
    base: String,
    client: reqwest::Client,
    keep_host: bool,
}

impl Upstream {
    /// Forwards to `base` (`http://HOST:PORT`). With `keep_host` the client's `Host` header
    /// passes too, so upstream URLs (e.g. a registry's upload `Location`) name the proxy's
    /// front; without it the request names `base`.
    ///
    /// # Panics
    /// When the HTTP client cannot be built.
    pub fn new(base: &str, keep_host: bool) -> Upstream {
        Upstream {
            base: base.trim_end_matches('/').to_string(),
            client: reqwest::Client::builder()
                .no_proxy()
                .redirect(reqwest::redirect::Policy::none())
                .build()
                .unwrap_or_else(|e| panic!("test-support: http client: {e}")),
            keep_host,
        }
    }

    /// The base URL requests go to.
    pub fn base(&self) -> &str {
        &self.base
    }

    /// Passes `req` on. `Err` is the answer to give instead: 400 when the request body cannot
    /// be read, 502 when the upstream does not answer.
    pub async fn forward(
        &self,
        req: axum::extract::Request,
    ) -> Result<axum::response::Response, axum::response::Response> {
        use axum::http::StatusCode;
        use axum::response::IntoResponse;
        let method = req.method().clone();
        let path = req.uri().path_and_query().map_or("/", |p| p.as_str()).to_string();
        let headers = req.headers().clone();
        let body = axum::body::to_bytes(req.into_body(), 512 * 1024 * 1024)
            .await
            .map_err(|e| (StatusCode::BAD_REQUEST, e.to_string()).into_response())?;
        let mut upstream = self.client.request(method, format!("{}{path}", self.base)).body(body);
        for (name, value) in &headers {
            if !hop_by_hop(name) && (self.keep_host || name != axum::http::header::HOST) {
                upstream = upstream.header(name, value);
            }
        }
        let answer = upstream
            .send()
            .await
            .map_err(|e| (StatusCode::BAD_GATEWAY, format!("{} unreachable: {e}", self.base)).into_response())?;
        let status = answer.status();
        let answer_headers = answer.headers().clone();
        let bytes = answer.bytes().await.unwrap_or_default();
        let mut out = axum::response::Response::new(axum::body::Body::from(bytes));
        *out.status_mut() = status;
        for (name, value) in &answer_headers {
            if !hop_by_hop(name) {
                out.headers_mut().append(name.clone(), value.clone());
            }
        }
        Ok(out)
    }
}

/// Headers of one connection, not of the message: never passed on by a proxy.
fn hop_by_hop(name: &axum::http::HeaderName) -> bool {
    matches!(
        name.as_str(),
        "connection" | "keep-alive" | "transfer-encoding" | "content-length" | "upgrade" | "te" | "trailer"
    )
}
