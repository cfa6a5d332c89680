//! Request counters: what the client actually put on the wire, by kind. The bench and the
//! metrics endpoint read them; nothing in the client decides anything from them.

use std::sync::atomic::{AtomicU64, Ordering};

/// What a request was for. Every HTTP exchange the [`Transport`](super::Transport) completes is
/// counted under one kind (redirect hops count once each).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum RequestKind {
    /// The one unauthenticated `GET /v2/` per registry that learns its challenge.
    Probe,
    /// `HEAD /v2/<name>/manifests/<ref>`.
    ManifestHead,
    /// `GET /v2/<name>/manifests/<ref>` (the fallback when HEAD says too little).
    ManifestGet,
    /// A request to a token realm.
    Token,
    /// A signature artifact: a `GET` of a signature manifest, a referrers index or a blob.
    Artifact,
}

/// Atomic counters shared by the transport and the client. Cheap to read at any time.
#[derive(Debug, Default)]
pub struct ClientStats {
    probes: AtomicU64,
    manifest_heads: AtomicU64,
    manifest_gets: AtomicU64,
    token_requests: AtomicU64,
    artifact_gets: AtomicU64,
    unauthorized: AtomicU64,
    redirects: AtomicU64,
    transport_errors: AtomicU64,
}

/// A point-in-time copy of [`ClientStats`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct StatsSnapshot {
    /// Unauthenticated `GET /v2/` probes.
    pub probes: u64,
    /// Manifest HEAD requests answered.
    pub manifest_heads: u64,
    /// Manifest GET requests answered.
    pub manifest_gets: u64,
    /// Requests answered by token realms (token exchanges).
    pub token_requests: u64,
    /// Signature artifact requests answered (manifests, referrers, blobs).
    pub artifact_gets: u64,
    /// 401 answers from registries (probes included).
    pub unauthorized: u64,
    /// Redirects followed.
    pub redirects: u64,
    /// Requests that got no HTTP answer (refused, timed out, TLS failure).
    pub transport_errors: u64,
}

impl StatsSnapshot {
    /// Manifest requests of either method.
    pub fn manifest_requests(&self) -> u64 {
        self.manifest_heads + self.manifest_gets
    }

    /// The counts accumulated since `earlier`.
    pub fn since(&self, earlier: &StatsSnapshot) -> StatsSnapshot {
        StatsSnapshot {
            probes: self.probes - earlier.probes,
            manifest_heads: self.manifest_heads - earlier.manifest_heads,
            manifest_gets: self.manifest_gets - earlier.manifest_gets,
            token_requests: self.token_requests - earlier.token_requests,
            artifact_gets: self.artifact_gets - earlier.artifact_gets,
            unauthorized: self.unauthorized - earlier.unauthorized,
            redirects: self.redirects - earlier.redirects,
            transport_errors: self.transport_errors - earlier.transport_errors,
        }
    }
}

impl ClientStats {
    pub(crate) fn answered(&self, kind: RequestKind, status: u16) {
        let counter = match kind {
            RequestKind::Probe => &self.probes,
            RequestKind::ManifestHead => &self.manifest_heads,
            RequestKind::ManifestGet => &self.manifest_gets,
            RequestKind::Token => &self.token_requests,
            RequestKind::Artifact => &self.artifact_gets,
        };
        counter.fetch_add(1, Ordering::Relaxed);
        if status == 401 && kind != RequestKind::Token {
            self.unauthorized.fetch_add(1, Ordering::Relaxed);
        }
    }

    pub(crate) fn redirected(&self) {
        self.redirects.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn failed(&self) {
        self.transport_errors.fetch_add(1, Ordering::Relaxed);
    }

    pub fn snapshot(&self) -> StatsSnapshot {
        StatsSnapshot {
            probes: self.probes.load(Ordering::Relaxed),
            manifest_heads: self.manifest_heads.load(Ordering::Relaxed),
            manifest_gets: self.manifest_gets.load(Ordering::Relaxed),
            token_requests: self.token_requests.load(Ordering::Relaxed),
            artifact_gets: self.artifact_gets.load(Ordering::Relaxed),
            unauthorized: self.unauthorized.load(Ordering::Relaxed),
            redirects: self.redirects.load(Ordering::Relaxed),
            transport_errors: self.transport_errors.load(Ordering::Relaxed),
        }
    }
}
