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
use axum::extract::{Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::Response;
use test_support::{ServerThread, Upstream};

struct Proxy {
    upstream: Upstream,
    challenges: Vec<HeaderValue>,
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
            .field("upstream", &self.proxy.upstream.base())
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
            // The client's Host passes, so the registry's upload `Location`s name the front.
            upstream: Upstream::new(upstream, true),
            challenges,
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

async fn forward(State(proxy): State<Arc<Proxy>>, req: Request) -> Response {
    let mut out = match proxy.upstream.forward(req).await {
        Ok(answer) | Err(answer) => answer,
    };
    if out.status() == StatusCode::UNAUTHORIZED {
        proxy.rewritten.fetch_add(1, Ordering::Relaxed);
        out.headers_mut().remove(header::WWW_AUTHENTICATE);
        for challenge in &proxy.challenges {
            out.headers_mut().append(header::WWW_AUTHENTICATE, challenge.clone());
        }
    }
    out
}
