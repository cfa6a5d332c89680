//! Where digests come from: the [`DigestSource`] seam and the error it reports. The watcher
//! only needs an error's kind (to decide on back-off) and an optional `Retry-After`; it never
//! looks at HTTP or tokens itself.

use std::fmt;
use std::time::Duration;

use async_trait::async_trait;
use futures_util::StreamExt as _;
use registry_core::{Digest, ImageReference};

/// What kind of failure a digest check met: decides back-off and shows in reports.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum CheckErrorKind {
    /// 429: the registry asks for fewer requests (see [`CheckError::retry_after`]).
    RateLimited,
    /// A 5xx answer: the registry (or a proxy before it) is failing.
    Server,
    /// 401/403, or no usable credentials.
    Unauthorized,
    /// The repository or tag does not exist.
    NotFound,
    /// Connection refused, DNS, TLS or a timeout: nothing usable came back.
    Unreachable,
    /// The registry answered, but not with a digest this project understands.
    Protocol,
    /// Anything else.
    Other,
}

impl CheckErrorKind {
    /// Every kind, in a fixed order (for metrics that list each one).
    pub const ALL: [CheckErrorKind; 7] = [
        CheckErrorKind::RateLimited,
        CheckErrorKind::Server,
        CheckErrorKind::Unauthorized,
        CheckErrorKind::NotFound,
        CheckErrorKind::Unreachable,
        CheckErrorKind::Protocol,
        CheckErrorKind::Other,
    ];

    /// A stable snake_case name for logs and reports.
    pub fn as_str(self) -> &'static str {
        match self {
            CheckErrorKind::RateLimited => "rate_limited",
            CheckErrorKind::Server => "server",
            CheckErrorKind::Unauthorized => "unauthorized",
            CheckErrorKind::NotFound => "not_found",
            CheckErrorKind::Unreachable => "unreachable",
            CheckErrorKind::Protocol => "protocol",
            CheckErrorKind::Other => "other",
        }
    }
}

impl fmt::Display for CheckErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A failed digest check: its kind, a message for people, and how long the registry asked us
/// to wait, if it said.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{kind}: {message}")]
pub struct CheckError {
    kind: CheckErrorKind,
    message: String,
    retry_after: Option<Duration>,
    timed_out: bool,
}

impl CheckError {
    pub fn new(kind: CheckErrorKind, message: impl Into<String>) -> CheckError {
        CheckError {
            kind,
            message: message.into(),
            retry_after: None,
            timed_out: false,
        }
    }

    /// Marks a check that gave up waiting for an answer (a hung host), as opposed to one
    /// refused at once: only the first kind of [`CheckErrorKind::Unreachable`] costs enough to
    /// back the host off.
    pub fn with_timed_out(mut self, timed_out: bool) -> CheckError {
        self.timed_out = timed_out;
        self
    }

    pub fn with_retry_after(mut self, retry_after: Option<Duration>) -> CheckError {
        self.retry_after = retry_after;
        self
    }

    pub fn kind(&self) -> CheckErrorKind {
        self.kind
    }

    pub fn message(&self) -> &str {
        &self.message
    }

    pub fn retry_after(&self) -> Option<Duration> {
        self.retry_after
    }

    /// Whether the check timed out (see [`CheckError::with_timed_out`]).
    pub fn timed_out(&self) -> bool {
        self.timed_out
    }
}

/// Answers the current manifest digest of a moving reference (a tag). It must answer the digest
/// the registry serves for the tag — the index digest for a multi-arch tag — every time, so two
/// answers for an unchanged tag are equal.
#[async_trait]
pub trait DigestSource: Send + Sync + fmt::Debug {
    async fn digest(&self, image: &ImageReference) -> Result<Digest, CheckError>;

    /// The digests of several images, in input order, at most `concurrency` checks at once.
    /// The default calls [`DigestSource::digest`] for each; a source that can share work across
    /// images (one token exchange for many repositories) overrides it.
    async fn digests(&self, images: &[ImageReference], concurrency: usize) -> Vec<Result<Digest, CheckError>> {
        // Indices rather than references: a closure over `&ImageReference` trips the
        // higher-ranked `Send` check of the boxed future.
        futures_util::stream::iter(0..images.len())
            .map(|index| self.digest(&images[index]))
            .buffered(concurrency.max(1))
            .collect()
            .await
    }

    /// The digests of several images, each handed to `ready` with its index in `images` as
    /// soon as it is known, at most `concurrency` checks at once (per registry host, for a
    /// source that knows hosts). The watcher observes answers as they arrive, so one slow
    /// image (or host) holds back no other. The default runs [`DigestSource::digest`] for
    /// each, completing in any order.
    async fn digests_as_ready(
        &self,
        images: &[ImageReference],
        concurrency: usize,
        ready: &(dyn Fn(usize, Result<Digest, CheckError>) + Send + Sync),
    ) {
        let mut answers = futures_util::stream::iter(0..images.len())
            .map(|index| async move { (index, self.digest(&images[index]).await) })
            .buffer_unordered(concurrency.max(1));
        while let Some((index, answer)) = answers.next().await {
            ready(index, answer);
        }
    }
}
