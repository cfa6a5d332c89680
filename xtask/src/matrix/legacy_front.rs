//! A pass-through HTTP proxy that rewrites registry challenges into the form older Gitea
//! releases sent: `Bearer realm="<root>/v2/token"` without `service`, followed by a second
//! `Basic realm="Gitea Package API"` header. Every other byte passes unchanged (including the
//! `Host` header, so the registry's upload `Location`s name the front).
//!
//! Why: CNCF distribution always puts `service` in its challenge; this is the only part of
//! the gitea-legacy flavour that is not the real registry, and the matrix says so.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use axum::Router;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderName, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use test_support::ServerThread;

struct Proxy {
    upstream: String,
    challenges: Vec<HeaderValue>,
    client: reqwest::Client,
    rewritten: AtomicUsize,
}

/// The running proxy (a [`ServerThread`]: own thread and runtime, 127.0.0.1, OS-picked port);
/// stops on drop.
pub struct LegacyGiteaFront {
    proxy: Arc<Proxy>,
    server: ServerThread,
}

impl std::fmt::Debug for LegacyGiteaFront {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LegacyGiteaFront")
            .field("addr", &self.server.addr())
            .field("upstream", &self.proxy.upstream)
            .field("rewritten", &self.rewritten())
            .finish()
    }
}

impl LegacyGiteaFront {
    /// Proxies to `upstream` (a registry base URL), answering 401s with the old challenges for
    /// `realm`.
    ///
    /// # Panics
    /// When the challenges are not header values, or binding or building the runtime fails.
    pub fn start(upstream: &str, realm: &str) -> LegacyGiteaFront {
        let challenges = [
            format!("Bearer realm=\"{realm}\""),
            "Basic realm=\"Gitea Package API\"".to_owned(),
        ]
        .iter()
        .map(|c| HeaderValue::from_str(c).unwrap_or_else(|e| panic!("xtask: challenge {c:?}: {e}")))
        .collect();
        let proxy = Arc::new(Proxy {
            upstream: upstream.trim_end_matches('/').to_owned(),
            challenges,
            client: reqwest::Client::builder()
                .no_proxy()
                .redirect(reqwest::redirect::Policy::none())
                .build()
                .unwrap_or_else(|e| panic!("xtask: http client: {e}")),
            rewritten: AtomicUsize::new(0),
        });
        let router = Router::new().fallback(forward).with_state(proxy.clone());
        let server = ServerThread::spawn("legacy-gitea-front", router);
        LegacyGiteaFront { proxy, server }
    }

    /// `http://127.0.0.1:PORT`.
    pub fn base_url(&self) -> String {
        format!("http://{}", self.server.addr())
    }

    /// How many 401 challenges were rewritten so far.
    pub fn rewritten(&self) -> usize {
        self.proxy.rewritten.load(Ordering::Relaxed)
    }
}

fn hop_by_hop(name: &HeaderName) -> bool {
    matches!(
        name.as_str(),
        "connection" | "keep-alive" | "transfer-encoding" | "content-length" | "upgrade" | "te" | "trailer"
    )
}

async fn forward(State(proxy): State<Arc<Proxy>>, req: Request) -> Response {
    let method = req.method().clone();
    let path = req.uri().path_and_query().map_or("/", |p| p.as_str()).to_owned();
    let headers = req.headers().clone();
    let body = match axum::body::to_bytes(req.into_body(), 512 * 1024 * 1024).await {
        Ok(body) => body,
        Err(e) => return (StatusCode::BAD_REQUEST, e.to_string()).into_response(),
    };
    let mut upstream = proxy
        .client
        .request(method, format!("{}{path}", proxy.upstream))
        .body(body);
    for (name, value) in &headers {
        if !hop_by_hop(name) {
            upstream = upstream.header(name, value);
        }
    }
    let answer = match upstream.send().await {
        Ok(answer) => answer,
        Err(e) => return (StatusCode::BAD_GATEWAY, format!("registry unreachable: {e}")).into_response(),
    };
    let status = answer.status();
    let answer_headers = answer.headers().clone();
    let bytes = answer.bytes().await.unwrap_or_default();
    let mut out = Response::new(Body::from(bytes));
    *out.status_mut() = status;
    for (name, value) in &answer_headers {
        let replaced = status == StatusCode::UNAUTHORIZED && name == header::WWW_AUTHENTICATE;
        if !hop_by_hop(name) && !replaced {
            out.headers_mut().append(name.clone(), value.clone());
        }
    }
    if status == StatusCode::UNAUTHORIZED {
        proxy.rewritten.fetch_add(1, Ordering::Relaxed);
        for challenge in &proxy.challenges {
            out.headers_mut().append(header::WWW_AUTHENTICATE, challenge.clone());
        }
    }
    out
}
