//! The operator's window of `imagewatch watch`: registry webhooks that trigger checks now,
//! `POST /check`, `GET /healthz`, `GET /status` and `GET /metrics`, served by axum.
//!
//! | route | auth | answers |
//! |---|---|---|
//! | `POST /hooks/distribution` | hook token (`?token=` or bearer); none on loopback without one | 202 + what was checked |
//! | `POST /hooks/dockerhub` | hook token, as above | 202 |
//! | `POST /hooks/github` | `X-Hub-Signature-256: sha256=<HMAC-SHA256 hex>` | 202; 200 to `ping` |
//! | `POST /hooks/gitea` | `X-Gitea-Signature` (or `X-Forgejo-Signature`): HMAC-SHA256 hex | 202 |
//! | `POST /check[?image=REF][&wait=true]` | `Authorization: Bearer <api token>` when one is set | 202 (200 after waiting) |
//! | `GET /status` | the API token when listening beyond loopback | 200 |
//! | `GET /healthz`, `/metrics` | none | 200 |
//!
//! Tokens are checked from the request head before any body is read; signed hooks (GitHub,
//! Gitea) need the body for their HMAC, so their reads are bounded in size, time and number at
//! once. Requests a browser makes for a web page are refused (see `origin`); connections are
//! capped and their heads bounded in size and time (see `serve`).
//!
//! Architecture invariant: a payload only NAMES an image ([`NamedImage`]); the name selects
//! watched images, which the watcher checks against the registry through its
//! [`TriggerHandle`]. Nothing here decides that a digest moved, adds to the watch set, or
//! contacts a URL found in a request. It depends on `watcher` and `registry-core` only.

mod auth;
mod counters;
pub mod hooks;
mod listen;
mod metrics;
mod named;
mod origin;
mod routes;
mod serve;

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use registry_core::Secret;
use registry_core::client::ClientStats;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tracing::{info, warn};
use watcher::{StatusBoard, TriggerHandle};

pub use auth::{Refusal, sign, verify_signature, verify_token};
pub use counters::HookOutcome;
pub use hooks::distribution::ENVELOPE_MEDIA_TYPE;
pub use hooks::{PayloadError, Sender};
pub use listen::{ListenAddr, ListenError};
pub use metrics::CONTENT_TYPE as METRICS_CONTENT_TYPE;
pub use named::{HostHint, NamedImage, WatchIndex};
pub use serve::{ConnectionLimits, DEFAULT_CONNECTION_LIMITS};

/// Request bodies above this are refused with 413 (webhook payloads are a few KiB).
pub const DEFAULT_MAX_BODY: usize = 1024 * 1024;
/// The longest `POST /check?wait=true` waits for its check before answering 202.
pub const DEFAULT_CHECK_WAIT: Duration = Duration::from_secs(30);
/// The longest a client may take to send a request body once its head arrived.
pub const DEFAULT_BODY_TIMEOUT: Duration = Duration::from_secs(10);
/// Request bodies read at once, over every connection: with [`DEFAULT_MAX_BODY`], 8 MiB of
/// body buffers at most. A sender over it gets 503 with `Retry-After` (senders retry).
pub const DEFAULT_MAX_BODIES: usize = 8;

/// Secrets and limits. Empty secrets count as none.
#[derive(Clone, Debug)]
pub struct ApiConfig {
    /// Required as `Authorization: Bearer` by `POST /check` when set.
    pub api_token: Option<Secret>,
    /// Required by the distribution and Docker Hub hooks (which cannot sign) when set.
    pub hook_token: Option<Secret>,
    /// Enables `POST /hooks/github`: the HMAC key of `X-Hub-Signature-256`.
    pub github_secret: Option<Secret>,
    /// Enables `POST /hooks/gitea`: the HMAC key of `X-Gitea-Signature`.
    pub gitea_secret: Option<Secret>,
    /// Accept the distribution and Docker Hub hooks without a hook token. Only for an API that
    /// listens on loopback: see [`ApiConfig::for_listen`].
    pub unauthenticated_hooks: bool,
    pub max_body: usize,
    pub check_wait: Duration,
    /// The longest a body may take to arrive once its request head did.
    pub body_timeout: Duration,
    /// Bodies read at once over all connections (the in-flight body memory is this times
    /// `max_body`).
    pub max_bodies: usize,
    /// Connection count, head size and head time.
    pub connections: ConnectionLimits,
    /// Whether `GET /status` needs the API token (set beyond loopback: it names every image).
    pub status_needs_token: bool,
    /// Whether the `Host` header must name this machine (set on loopback, where a browser's
    /// DNS rebinding is the threat) or one of `allowed_hosts`.
    pub host_check: bool,
    /// Host names (`name` or `name:port`) the API answers to besides IP addresses and
    /// `localhost`; listing any turns the `Host` check on beyond loopback too.
    pub allowed_hosts: Vec<String>,
}

/// An API exposed beyond loopback without a token for `POST /check`.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error(
    "listening on {addr} exposes the API beyond this machine, so POST /check needs an API token; set one, or listen on 127.0.0.1"
)]
pub struct ExposureError {
    pub addr: String,
}

impl ApiConfig {
    /// Defaults for an API on `listen`: token-less hooks only on loopback.
    pub fn for_listen(listen: &ListenAddr) -> ApiConfig {
        ApiConfig {
            api_token: None,
            hook_token: None,
            github_secret: None,
            gitea_secret: None,
            unauthenticated_hooks: listen.is_loopback(),
            max_body: DEFAULT_MAX_BODY,
            check_wait: DEFAULT_CHECK_WAIT,
            body_timeout: DEFAULT_BODY_TIMEOUT,
            max_bodies: DEFAULT_MAX_BODIES,
            connections: DEFAULT_CONNECTION_LIMITS,
            status_needs_token: !listen.is_loopback(),
            host_check: listen.is_loopback(),
            allowed_hosts: Vec::new(),
        }
    }

    /// Refuses an API beyond loopback without an API token.
    pub fn check_exposure(&self, listen: &ListenAddr) -> Result<(), ExposureError> {
        if listen.is_loopback() || self.api_token.as_ref().is_some_and(|t| !t.is_empty()) {
            Ok(())
        } else {
            Err(ExposureError {
                addr: listen.to_string(),
            })
        }
    }

    fn normalised(mut self) -> ApiConfig {
        for secret in [
            &mut self.api_token,
            &mut self.hook_token,
            &mut self.github_secret,
            &mut self.gitea_secret,
        ] {
            if secret.as_ref().is_some_and(Secret::is_empty) {
                *secret = None;
            }
        }
        self.max_body = self.max_body.max(1);
        self.max_bodies = self.max_bodies.max(1);
        for host in &mut self.allowed_hosts {
            *host = host.trim().trim_end_matches('.').to_ascii_lowercase();
        }
        self.allowed_hosts.retain(|host| !host.is_empty());
        self
    }
}

/// What the API serves: the watcher's trigger handle and status board, and optionally the
/// registry client's request counters.
#[derive(Debug)]
pub struct Api {
    config: ApiConfig,
    triggers: TriggerHandle,
    status: StatusBoard,
    registry: Option<Arc<ClientStats>>,
    leadership: Option<tokio::sync::watch::Receiver<watcher::Leadership>>,
}

impl Api {
    pub fn new(config: ApiConfig, triggers: TriggerHandle, status: StatusBoard) -> Api {
        Api {
            config: config.normalised(),
            triggers,
            status,
            registry: None,
            leadership: None,
        }
    }

    /// Shows these request counters in `/metrics`.
    pub fn with_registry_stats(mut self, stats: Arc<ClientStats>) -> Api {
        self.registry = Some(stats);
        self
    }

    /// Shows which replica leads (and this one's role) in `/status` and `/metrics`.
    pub fn with_leadership(mut self, leadership: tokio::sync::watch::Receiver<watcher::Leadership>) -> Api {
        self.leadership = Some(leadership);
        self
    }

    /// The axum router (for embedding; [`Server`] serves it).
    pub fn router(self) -> axum::Router {
        let bodies = Arc::new(tokio::sync::Semaphore::new(self.config.max_bodies));
        routes::router(Arc::new(routes::Shared {
            config: self.config,
            triggers: self.triggers,
            status: self.status,
            registry: self.registry,
            leadership: self.leadership,
            hooks: counters::HookCounters::default(),
            bodies,
        }))
    }

    /// Which endpoints can be used, for the startup log.
    fn enabled(&self) -> Vec<&'static str> {
        let c = &self.config;
        let token_hooks = c.hook_token.is_some() || c.unauthenticated_hooks;
        let mut enabled = vec!["/healthz", "/status", "/metrics", "/check"];
        if token_hooks {
            enabled.extend(["/hooks/distribution", "/hooks/dockerhub"]);
        }
        if c.github_secret.is_some() {
            enabled.push("/hooks/github");
        }
        if c.gitea_secret.is_some() {
            enabled.push("/hooks/gitea");
        }
        enabled
    }
}

/// The API served on a listener from a tokio task, until [`Server::shutdown`] (or drop).
#[derive(Debug)]
pub struct Server {
    local_addr: SocketAddr,
    stop: Option<watch::Sender<bool>>,
    task: Option<JoinHandle<io::Result<()>>>,
}

impl Server {
    /// Binds `listen` and serves.
    pub async fn bind(listen: ListenAddr, api: Api) -> io::Result<Server> {
        let listener = TcpListener::bind(listen.socket_addr())
            .await
            .map_err(|e| io::Error::new(e.kind(), format!("cannot listen on {listen}: {e}")))?;
        Server::serve(listener, api)
    }

    /// Serves on a listener already bound (so its port can be known before the API exists).
    pub fn serve(listener: TcpListener, api: Api) -> io::Result<Server> {
        let local_addr = listener.local_addr()?;
        info!(
            addr = %local_addr,
            endpoints = api.enabled().join(" "),
            check_token = api.config.api_token.is_some(),
            "http api listening"
        );
        let limits = api.config.connections;
        info!(
            max_connections = limits.max_connections,
            header_timeout = %humantime::format_duration(limits.header_timeout),
            body_timeout = %humantime::format_duration(api.config.body_timeout),
            max_bodies = api.config.max_bodies,
            max_body = api.config.max_body,
            "http api limits"
        );
        let router = api.router();
        let (stop, stopped) = watch::channel(false);
        let task = tokio::spawn(serve::serve(listener, router, limits, stopped));
        Ok(Server {
            local_addr,
            stop: Some(stop),
            task: Some(task),
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Stops accepting, lets requests in flight finish for up to 5 s, then drops the rest.
    pub async fn shutdown(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(true);
        }
        if let Some(mut task) = self.task.take() {
            match tokio::time::timeout(Duration::from_secs(5), &mut task).await {
                Ok(Ok(Ok(()))) => info!("http api stopped"),
                Ok(Ok(Err(error))) => warn!(error = %error, "http api stopped with an error"),
                Ok(Err(error)) => warn!(error = %error, "http api task failed"),
                Err(_) => {
                    warn!("http api requests still open after 5 s; dropping them");
                    task.abort();
                }
            }
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(true);
        }
    }
}
