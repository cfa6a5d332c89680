//! A scriptable HTTP server for faults a real registry cannot produce on demand.
//!
//! Owns routes, scripted reply sequences, hangs, delays, and the record of every request. It is
//! deliberately NOT a fake registry: it knows nothing of manifests or tokens; tests script the
//! exact bytes they need.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderName, HeaderValue, StatusCode};
use axum::response::Response;

use crate::http::{ServerThread, first_header, header_pairs};

/// One scripted reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    /// Status code.
    pub status: u16,
    /// Headers, in order; a name may repeat (e.g. several `WWW-Authenticate`).
    pub headers: Vec<(String, String)>,
    /// Body bytes.
    pub body: Vec<u8>,
    /// Wait this long before answering.
    pub delay: Option<Duration>,
    /// Never answer (the connection stays open until the client gives up or the server drops).
    pub hang: bool,
}

impl Reply {
    /// An empty reply with `status`.
    pub fn status(status: u16) -> Reply {
        Reply {
            status,
            headers: Vec::new(),
            body: Vec::new(),
            delay: None,
            hang: false,
        }
    }

    /// `status` with a JSON body (and `Content-Type: application/json`).
    pub fn json(status: u16, value: &serde_json::Value) -> Reply {
        Reply::status(status)
            .header("Content-Type", "application/json")
            .body(value.to_string())
    }

    /// A redirect (`status` 301/302/307/308) to `location` (any host:port).
    pub fn redirect(status: u16, location: &str) -> Reply {
        Reply::status(status).header("Location", location)
    }

    /// A 401 carrying each of `challenges` as its own `WWW-Authenticate` header.
    pub fn unauthorized(challenges: &[&str]) -> Reply {
        challenges
            .iter()
            .fold(Reply::status(401), |r, c| r.header("WWW-Authenticate", c))
    }

    /// A 429 with `Retry-After: <secs>`.
    pub fn too_many_requests(retry_after_secs: u64) -> Reply {
        Reply::status(429).header("Retry-After", &retry_after_secs.to_string())
    }

    /// A reply that never comes.
    pub fn hang() -> Reply {
        Reply {
            hang: true,
            ..Reply::status(200)
        }
    }

    /// Adds a header (repeatable).
    pub fn header(mut self, name: &str, value: &str) -> Reply {
        self.headers.push((name.to_string(), value.to_string()));
        self
    }

    /// Sets the body.
    pub fn body(mut self, body: impl Into<Vec<u8>>) -> Reply {
        self.body = body.into();
        self
    }

    /// Delays the answer.
    pub fn delay(mut self, delay: Duration) -> Reply {
        self.delay = Some(delay);
        self
    }
}

/// A request the fault server received.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordedRequest {
    /// Method.
    pub method: String,
    /// Path (no query).
    pub path: String,
    /// Raw query string, if any.
    pub query: Option<String>,
    /// Headers (names lowercased), in order.
    pub headers: Vec<(String, String)>,
    /// Body bytes.
    pub body: Vec<u8>,
}

impl RecordedRequest {
    /// First value of header `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        first_header(&self.headers, name)
    }

    /// The `Authorization` header, if sent.
    pub fn authorization(&self) -> Option<&str> {
        self.header("authorization")
    }
}

#[derive(Debug)]
struct Route {
    method: Option<String>,
    path: String,
    prefix: bool,
    replies: VecDeque<Reply>,
    last: Option<Reply>,
}

impl Route {
    fn matches(&self, method: &str, path: &str) -> bool {
        let method_ok = self.method.as_deref().is_none_or(|m| m.eq_ignore_ascii_case(method));
        let path_ok = if self.prefix {
            path.starts_with(&self.path)
        } else {
            path == self.path
        };
        method_ok && path_ok
    }

    /// Next reply of the sequence; the last one repeats forever.
    fn next(&mut self) -> Option<Reply> {
        match self.replies.pop_front() {
            Some(r) => {
                self.last = Some(r.clone());
                Some(r)
            }
            None => self.last.clone(),
        }
    }
}

#[derive(Debug, Default)]
struct Shared {
    routes: Vec<Route>,
    requests: Vec<RecordedRequest>,
}

fn lock(m: &Mutex<Shared>) -> MutexGuard<'_, Shared> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// An in-process scriptable HTTP server on 127.0.0.1 (own thread and runtime).
///
/// Why: 429 then 200, a hanging endpoint, two `WWW-Authenticate` headers, a redirect to
/// another host, and "were credentials sent here?" are needed on demand and cannot be had
/// from a real registry. Unmatched requests get 404 and are recorded too.
pub struct FaultServer {
    shared: Arc<Mutex<Shared>>,
    server: ServerThread,
}

impl std::fmt::Debug for FaultServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FaultServer")
            .field("addr", &self.server.addr())
            .finish()
    }
}

impl Default for FaultServer {
    fn default() -> Self {
        FaultServer::start()
    }
}

impl FaultServer {
    /// Starts serving (no routes yet).
    pub fn start() -> FaultServer {
        let shared = Arc::new(Mutex::new(Shared::default()));
        let router = Router::new().fallback(handle).with_state(shared.clone());
        let server = ServerThread::spawn("fault-server", router);
        FaultServer { shared, server }
    }

    /// `127.0.0.1:PORT`.
    pub fn host(&self) -> String {
        self.server.addr().to_string()
    }

    /// `http://127.0.0.1:PORT`.
    pub fn base_url(&self) -> String {
        format!("http://{}", self.server.addr())
    }

    /// `base_url() + path`.
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base_url())
    }

    /// Scripts `method` (`"*"` for any) on `path` (a trailing `*` makes it a prefix) to answer
    /// `replies` in order; the last reply then repeats. A later `on` for the same method and
    /// path replaces the earlier script; routes are matched most-recent first.
    ///
    /// # Panics
    /// When `replies` is empty.
    pub fn on(&self, method: &str, path: &str, replies: impl IntoIterator<Item = Reply>) {
        let replies: VecDeque<Reply> = replies.into_iter().collect();
        assert!(!replies.is_empty(), "a route needs at least one reply");
        let method = (method != "*").then(|| method.to_ascii_uppercase());
        let (path, prefix) = match path.strip_suffix('*') {
            Some(p) => (p.to_string(), true),
            None => (path.to_string(), false),
        };
        let mut shared = lock(&self.shared);
        shared
            .routes
            .retain(|r| !(r.method == method && r.path == path && r.prefix == prefix));
        shared.routes.push(Route {
            method,
            path,
            prefix,
            replies,
            last: None,
        });
    }

    /// Every request received so far, in order.
    pub fn requests(&self) -> Vec<RecordedRequest> {
        lock(&self.shared).requests.clone()
    }

    /// Requests whose path is `path`.
    pub fn requests_to(&self, path: &str) -> Vec<RecordedRequest> {
        self.requests().into_iter().filter(|r| r.path == path).collect()
    }

    /// Forgets recorded requests (routes stay).
    pub fn clear_requests(&self) {
        lock(&self.shared).requests.clear();
    }

    /// Removes all routes.
    pub fn clear_routes(&self) {
        lock(&self.shared).routes.clear();
    }
}

async fn handle(State(shared): State<Arc<Mutex<Shared>>>, req: Request) -> Response {
    let method = req.method().to_string();
    let path = req.uri().path().to_string();
    let query = req.uri().query().map(str::to_string);
    let headers = header_pairs(req.headers());
    let body = axum::body::to_bytes(req.into_body(), 64 * 1024 * 1024)
        .await
        .map(|b| b.to_vec())
        .unwrap_or_default();
    let reply = {
        let mut shared = lock(&shared);
        shared.requests.push(RecordedRequest {
            method: method.clone(),
            path: path.clone(),
            query,
            headers,
            body,
        });
        shared
            .routes
            .iter_mut()
            .rev()
            .find(|r| r.matches(&method, &path))
            .and_then(Route::next)
    };
    let Some(reply) = reply else {
        let mut resp = Response::new(Body::from(format!("no route for {method} {path}")));
        *resp.status_mut() = StatusCode::NOT_FOUND;
        return resp;
    };
    if reply.hang {
        std::future::pending::<()>().await;
    }
    if let Some(delay) = reply.delay {
        tokio::time::sleep(delay).await;
    }
    let mut resp = Response::new(Body::from(reply.body));
    *resp.status_mut() = StatusCode::from_u16(reply.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    for (name, value) in &reply.headers {
        if let (Ok(n), Ok(v)) = (HeaderName::from_bytes(name.as_bytes()), HeaderValue::from_str(value)) {
            resp.headers_mut().append(n, v);
        }
    }
    resp
}
