//! The registry client: manifest digests through whatever authentication each registry asks
//! for, in as few requests as possible. It owns the per-host challenge cache and the request
//! sequence (probe once, HEAD, GET fallback, one retry on a rejected token); the tokens
//! themselves belong to the host's `TokenProvider`.
//!
//! The request budget it keeps: one unauthenticated `GET /v2/` per registry for the life of
//! the client, then one `HEAD` per image check, with the provider's token reused while valid.
//! The batch API asks the provider for tokens covering many repositories at once, so N
//! repositories of one registry cost ceil(N / batch size) token exchanges.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, PoisonError};

use futures_util::StreamExt as _;
use reqwest::Method;

use super::error::{RegistryError, default_hint, parse_retry_after};
use super::stats::{ClientStats, RequestKind};
use super::transport::{Response, Transport};
use crate::challenge::{AuthScheme, Challenge};
use crate::digest::Digest;
use crate::host::RegistryHost;
use crate::provider::{Authorization, TokenProvider};
use crate::reference::ImageReference;
use crate::scope::Scope;

/// The manifest media types a digest check accepts: all four, so a registry neither answers
/// 404 for an OCI image nor converts a Docker v2 manifest to schema 1 (another digest).
pub const MANIFEST_ACCEPT: &str = "application/vnd.oci.image.index.v1+json, application/vnd.oci.image.manifest.v1+json, application/vnd.docker.distribution.manifest.list.v2+json, application/vnd.docker.distribution.manifest.v2+json";

/// The most scopes one token request of the batch API asks for unless configured; the size
/// bound ([`DEFAULT_SCOPE_BATCH_BYTES`]) usually closes a batch first.
pub const DEFAULT_SCOPE_BATCH: usize = 100;

/// How many bytes the scopes of one batch may add to the token, estimated as the base64 of
/// each repository's JWT `access` entry. With a JWT's header, other claims and signature
/// (under 1 KiB for the common realms) the `Authorization` header stays near 6 KiB, under
/// the 8 KiB a header line may have behind common proxies (nginx's default buffers); the
/// request's query string is smaller still.
pub const DEFAULT_SCOPE_BATCH_BYTES: usize = 5 * 1024;

/// How many checks run at once over all hosts together unless configured.
pub const DEFAULT_GLOBAL_CONCURRENCY: usize = 64;

/// What a registry is known to want, learnt from the probe and from every 401 since.
#[derive(Clone, Debug)]
pub(super) enum HostAuth {
    Unknown,
    /// `/v2/` answered without a challenge.
    Anonymous,
    Challenged(Challenge),
}

#[derive(Debug)]
pub(super) struct HostEntry {
    /// Held while probing, so concurrent first checks share one probe.
    probe: tokio::sync::Mutex<()>,
    auth: Mutex<HostAuth>,
}

impl HostEntry {
    fn auth(&self) -> HostAuth {
        self.auth.lock().unwrap_or_else(PoisonError::into_inner).clone()
    }

    pub(super) fn set(&self, auth: HostAuth) {
        *self.auth.lock().unwrap_or_else(PoisonError::into_inner) = auth;
    }
}

#[derive(Clone, Debug)]
struct ProviderEntry {
    provider: Arc<dyn TokenProvider>,
    /// What the operator configures to give credentials for the host, for auth errors.
    hint: Arc<str>,
}

/// Asks registries for manifest digests. Share one per process: its challenge cache and the
/// providers' token caches are what keep a warm check at one request.
#[derive(Debug)]
pub struct RegistryClient {
    transport: Arc<Transport>,
    providers: HashMap<RegistryHost, ProviderEntry>,
    default_provider: Option<Arc<dyn TokenProvider>>,
    hosts: Mutex<HashMap<RegistryHost, Arc<HostEntry>>>,
    scope_batch: usize,
    scope_batch_bytes: usize,
    /// Bounds the checks in flight over all hosts and calls together.
    global: tokio::sync::Semaphore,
}

/// One image's outcome in a batch.
pub type DigestResult = (ImageReference, Result<Digest, RegistryError>);

impl RegistryClient {
    /// A client with no provider: registries that want credentials fail with an `Auth` error
    /// until one is added.
    pub fn new(transport: Arc<Transport>) -> RegistryClient {
        RegistryClient {
            transport,
            providers: HashMap::new(),
            default_provider: None,
            hosts: Mutex::new(HashMap::new()),
            scope_batch: DEFAULT_SCOPE_BATCH,
            scope_batch_bytes: DEFAULT_SCOPE_BATCH_BYTES,
            global: tokio::sync::Semaphore::new(DEFAULT_GLOBAL_CONCURRENCY),
        }
    }

    /// The provider for `host`, and `hint`: what an auth error tells the operator to configure
    /// (the wiring that chose the provider knows; this client does not).
    pub fn with_provider(
        mut self,
        host: RegistryHost,
        provider: Arc<dyn TokenProvider>,
        hint: impl Into<String>,
    ) -> Self {
        let hint = Arc::from(hint.into());
        self.providers.insert(host, ProviderEntry { provider, hint });
        self
    }

    /// The provider for hosts without their own.
    pub fn with_default_provider(mut self, provider: Arc<dyn TokenProvider>) -> Self {
        self.default_provider = Some(provider);
        self
    }

    /// Scopes per token request in [`RegistryClient::manifest_digests`] (at least 1).
    pub fn with_scope_batch(mut self, scopes: usize) -> Self {
        self.scope_batch = scopes.max(1);
        self
    }

    /// The most bytes the scopes of one batch may add to its token (see
    /// [`DEFAULT_SCOPE_BATCH_BYTES`]); a batch always holds at least one scope.
    pub fn with_scope_batch_bytes(mut self, bytes: usize) -> Self {
        self.scope_batch_bytes = bytes;
        self
    }

    /// The most checks in flight over all hosts together (at least 1); each host's share is
    /// the `concurrency` given to [`RegistryClient::manifest_digests`].
    pub fn with_global_concurrency(mut self, checks: usize) -> Self {
        self.global = tokio::sync::Semaphore::new(checks.max(1));
        self
    }

    pub fn transport(&self) -> &Arc<Transport> {
        &self.transport
    }

    /// The request counters (shared with the transport).
    pub fn stats(&self) -> &Arc<ClientStats> {
        self.transport.stats()
    }

    /// Forgets what `host` was learnt to want, so the next check probes it again.
    pub fn forget_host(&self, host: &RegistryHost) {
        self.lock_hosts().remove(host);
    }

    /// The digest `reference` points at now. A `@digest` reference is verified against the
    /// registry's answer.
    #[tracing::instrument(level = "debug", skip_all, fields(image = %reference))]
    pub async fn manifest_digest(&self, reference: &ImageReference) -> Result<Digest, RegistryError> {
        let digest = self.check(reference).await?;
        tracing::debug!(host = %reference.host(), digest = %digest.short(), "manifest digest");
        Ok(digest)
    }

    /// The digests of many images, in input order: [`RegistryClient::manifest_digests_as_ready`],
    /// matched back to its input.
    pub async fn manifest_digests(&self, references: &[ImageReference], concurrency: usize) -> Vec<DigestResult> {
        let mut slots: Vec<Option<Result<Digest, RegistryError>>> = vec![None; references.len()];
        let mut ready = std::pin::pin!(self.manifest_digests_as_ready(references, concurrency));
        while let Some((index, outcome)) = ready.next().await {
            if let Some(slot) = slots.get_mut(index) {
                *slot = Some(outcome);
            }
        }
        references
            .iter()
            .cloned()
            .zip(slots)
            .map(|(reference, slot)| {
                let outcome = slot.unwrap_or_else(|| {
                    Err(RegistryError::Malformed {
                        host: reference.host().clone(),
                        reason: format!("no check of {reference} finished"),
                    })
                });
                (reference, outcome)
            })
            .collect()
    }

    /// The digests of many images, each as soon as it is known, with its index in
    /// `references`. Every registry host is on its own: it is probed, its repositories are
    /// pre-authorised in batches bounded by token size, and its checks run up to `concurrency`
    /// at a time (all hosts together at most the client's global cap), hosts in parallel, so a
    /// slow or hung host never delays another's answers. Once a check of a host times out or
    /// cannot connect, its checks not yet sent in this call fail at once with that cause.
    pub fn manifest_digests_as_ready<'a>(
        &'a self,
        references: &'a [ImageReference],
        concurrency: usize,
    ) -> impl futures_util::Stream<Item = (usize, Result<Digest, RegistryError>)> + Send + 'a {
        let concurrency = concurrency.max(1);
        let mut by_host: Vec<(&RegistryHost, Vec<usize>)> = Vec::new();
        let mut host_index: HashMap<&RegistryHost, usize> = HashMap::new();
        for (index, reference) in references.iter().enumerate() {
            let slot = *host_index.entry(reference.host()).or_insert_with(|| {
                by_host.push((reference.host(), Vec::new()));
                by_host.len() - 1
            });
            by_host[slot].1.push(index);
        }
        futures_util::stream::select_all(
            by_host
                .into_iter()
                .map(|(host, indices)| Box::pin(self.host_checks(host, references, indices, concurrency))),
        )
    }

    /// One host's share of [`RegistryClient::manifest_digests_as_ready`].
    fn host_checks<'a>(
        &'a self,
        host: &'a RegistryHost,
        references: &'a [ImageReference],
        indices: Vec<usize>,
        concurrency: usize,
    ) -> impl futures_util::Stream<Item = (usize, Result<Digest, RegistryError>)> + Send + 'a {
        futures_util::stream::once(async move {
            let prepared = self.prepare_host(host, references, &indices, concurrency).await;
            let halted: Arc<Mutex<Option<RegistryError>>> = Arc::new(Mutex::new(None));
            futures_util::stream::iter(indices)
                .map(move |index| {
                    let reference = &references[index];
                    let doomed = match &prepared {
                        Err(error) => Some(error.clone()),
                        Ok(failed) => failed.get(reference.repository()).cloned(),
                    };
                    let halted = halted.clone();
                    async move {
                        if let Some(error) = doomed {
                            return (index, Err(error));
                        }
                        let _permit = self.global.acquire().await.ok();
                        if let Some(cause) = lock(&halted).clone() {
                            return (index, Err(not_asked(host, &cause)));
                        }
                        let outcome = self.manifest_digest(reference).await;
                        if let Err(error @ (RegistryError::Timeout { .. } | RegistryError::Unreachable { .. })) =
                            &outcome
                        {
                            lock(&halted).get_or_insert_with(|| error.clone());
                        }
                        (index, outcome)
                    }
                })
                .buffer_unordered(concurrency)
        })
        .flatten()
    }

    /// Probes `host` if unknown and pre-authorises the repositories of `indices` in batches;
    /// answers the batches' failures by repository, or the probe's failure for every image.
    async fn prepare_host(
        &self,
        host: &RegistryHost,
        references: &[ImageReference],
        indices: &[usize],
        concurrency: usize,
    ) -> Result<HashMap<String, RegistryError>, RegistryError> {
        let mut failed = HashMap::new();
        let challenge = match self.host_auth(host, &self.entry(host)).await? {
            HostAuth::Challenged(challenge) if challenge.scheme() == &AuthScheme::Bearer => challenge,
            _ => return Ok(failed),
        };
        let mut seen: HashSet<&str> = HashSet::new();
        let repositories: Vec<&str> = indices
            .iter()
            .map(|index| references[*index].repository())
            .filter(|repository| seen.insert(repository))
            .collect();
        let batches = scope_batches(&repositories, self.scope_batch, self.scope_batch_bytes);
        let outcomes: Vec<(Vec<Scope>, Result<(), RegistryError>)> = futures_util::stream::iter(batches)
            .map(|scopes| {
                let challenge = &challenge;
                async move {
                    let outcome = self.authorize(host, challenge, &scopes).await.map(drop);
                    (scopes, outcome)
                }
            })
            .buffer_unordered(concurrency)
            .collect()
            .await;
        for (scopes, outcome) in outcomes {
            if let Err(error) = outcome {
                tracing::debug!(host = %host, scopes = scopes.len(), error = %error, "batch token request failed");
                for scope in scopes {
                    failed.insert(scope.name().to_owned(), error.clone());
                }
            }
        }
        Ok(failed)
    }

    fn lock_hosts(&self) -> std::sync::MutexGuard<'_, HashMap<RegistryHost, Arc<HostEntry>>> {
        self.hosts.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub(super) fn entry(&self, host: &RegistryHost) -> Arc<HostEntry> {
        let mut hosts = self.lock_hosts();
        if let Some(entry) = hosts.get(host) {
            return entry.clone();
        }
        let entry = Arc::new(HostEntry {
            probe: tokio::sync::Mutex::new(()),
            auth: Mutex::new(HostAuth::Unknown),
        });
        hosts.insert(host.clone(), entry.clone());
        entry
    }

    fn provider(&self, host: &RegistryHost) -> Option<ProviderEntry> {
        self.providers.get(host).cloned().or_else(|| {
            self.default_provider.as_ref().map(|provider| ProviderEntry {
                provider: provider.clone(),
                hint: Arc::from(default_hint(host)),
            })
        })
    }

    pub(super) fn hint(&self, host: &RegistryHost) -> String {
        self.providers
            .get(host)
            .map_or_else(|| default_hint(host), |entry| entry.hint.to_string())
    }

    /// What `host` (whose cache entry is `entry`) wants, probing it (once, shared by
    /// concurrent callers) when unknown.
    pub(super) async fn host_auth(&self, host: &RegistryHost, entry: &HostEntry) -> Result<HostAuth, RegistryError> {
        let known = entry.auth();
        if !matches!(known, HostAuth::Unknown) {
            return Ok(known);
        }
        let _probing = entry.probe.lock().await;
        let known = entry.auth();
        if !matches!(known, HostAuth::Unknown) {
            return Ok(known);
        }
        let response = self
            .transport
            .registry_request(host, Method::GET, "", None, None, RequestKind::Probe)
            .await
            .map_err(|error| RegistryError::from_transport(host, error))?;
        let learnt = match response.status {
            401 => match preferred_challenge(&response) {
                Some(challenge) => HostAuth::Challenged(challenge),
                None => return Err(self.no_challenge_error(host, &response)),
            },
            429 => return Err(rate_limited(host, &response)),
            status if status >= 500 => {
                return Err(RegistryError::Server {
                    host: host.clone(),
                    status,
                    what: "GET /v2/".into(),
                });
            }
            // 200, or anything else a registry may answer on /v2/ (some answer 404 there):
            // try without credentials and learn from the first 401, if any.
            _ => HostAuth::Anonymous,
        };
        tracing::debug!(host = %host, auth = ?learnt_name(&learnt), "registry probed");
        entry.set(learnt.clone());
        Ok(learnt)
    }

    pub(super) fn no_challenge_error(&self, host: &RegistryHost, response: &Response) -> RegistryError {
        let headers = response.header_all("www-authenticate").join(" | ");
        RegistryError::Auth {
            host: host.clone(),
            realm: "-".into(),
            reason: if headers.is_empty() {
                "HTTP 401 without a WWW-Authenticate challenge".into()
            } else {
                format!("HTTP 401 with no challenge imagewatch can answer: {headers}")
            },
            hint: self.hint(host),
        }
    }

    pub(super) async fn authorize(
        &self,
        host: &RegistryHost,
        challenge: &Challenge,
        scopes: &[Scope],
    ) -> Result<Option<Authorization>, RegistryError> {
        let realm = challenge.realm().unwrap_or("-");
        let Some(entry) = self.provider(host) else {
            return Err(RegistryError::Auth {
                host: host.clone(),
                realm: realm.to_owned(),
                reason: format!(
                    "the registry asks for {} authentication and no credential provider is configured for it",
                    challenge.scheme()
                ),
                hint: self.hint(host),
            });
        };
        entry
            .provider
            .authorization(host, challenge, scopes)
            .await
            .map_err(|error| RegistryError::from_auth(host, realm, &entry.hint, error))
    }

    pub(super) fn reject(&self, host: &RegistryHost, scopes: &[Scope]) {
        if let Some(entry) = self.provider(host) {
            entry.provider.reject(host, scopes);
        }
    }

    async fn check(&self, reference: &ImageReference) -> Result<Digest, RegistryError> {
        let host = reference.host();
        let entry = self.entry(host);
        let scopes = [Scope::pull(reference.repository())];
        let path = format!(
            "{}/manifests/{}",
            reference.repository(),
            reference.manifest_reference()
        );
        let mut auth = self.host_auth(host, &entry).await?;
        let mut method = Method::HEAD;
        let mut retried_auth = false;
        loop {
            let authorization = match &auth {
                HostAuth::Challenged(challenge) => self.authorize(host, challenge, &scopes).await?,
                _ => None,
            };
            let kind = if method == Method::HEAD {
                RequestKind::ManifestHead
            } else {
                RequestKind::ManifestGet
            };
            let response = self
                .transport
                .registry_request(
                    host,
                    method.clone(),
                    &path,
                    authorization.as_ref(),
                    Some(MANIFEST_ACCEPT),
                    kind,
                )
                .await
                .map_err(|error| RegistryError::from_transport(host, error))?;
            match response.status {
                200..=299 => {
                    if let Some(digest) = self.digest_of(reference, &method, &response)? {
                        return verify_pin(reference, digest);
                    }
                    // HEAD without Docker-Content-Digest: the body's hash is the answer.
                    tracing::debug!(host = %host, "HEAD carried no Docker-Content-Digest; falling back to GET");
                    method = Method::GET;
                }
                401 => {
                    let challenge = preferred_challenge(&response);
                    let problem = challenge.as_ref().and_then(|c| c.error().map(str::to_owned));
                    if authorization.is_some() {
                        // Whatever the provider cached for this scope is known bad now.
                        self.reject(host, &scopes);
                    }
                    if retried_auth {
                        return Err(self
                            .denied(reference, &auth, authorization.is_some(), problem.as_deref())
                            .await);
                    }
                    retried_auth = true;
                    tracing::debug!(host = %host, problem = ?problem, "registry answered 401; retrying once");
                    match challenge {
                        Some(challenge) => {
                            auth = HostAuth::Challenged(challenge);
                            entry.set(auth.clone());
                        }
                        None if authorization.is_none() => return Err(self.no_challenge_error(host, &response)),
                        None => {}
                    }
                }
                404 | 405 if method == Method::HEAD => {
                    tracing::debug!(host = %host, status = response.status, "HEAD refused; falling back to GET");
                    method = Method::GET;
                }
                403 => {
                    return Err(self
                        .denied(reference, &auth, authorization.is_some(), Some("denied"))
                        .await);
                }
                404 => {
                    return Err(RegistryError::NotFound {
                        host: host.clone(),
                        image: reference.to_string(),
                    });
                }
                429 => return Err(rate_limited(host, &response)),
                status => {
                    return Err(RegistryError::Server {
                        host: host.clone(),
                        status,
                        what: format!("{method} /v2/{path}"),
                    });
                }
            }
        }
    }

    /// The digest a successful answer gives: `Docker-Content-Digest`, validated; on a GET
    /// without it, the sha256 of the exact body bytes. `None` for a HEAD without it.
    fn digest_of(
        &self,
        reference: &ImageReference,
        method: &Method,
        response: &Response,
    ) -> Result<Option<Digest>, RegistryError> {
        let host = reference.host();
        let header = match response.header("docker-content-digest") {
            Some(value) => Some(value.trim().parse::<Digest>().map_err(|e| RegistryError::Malformed {
                host: host.clone(),
                reason: format!("Docker-Content-Digest for {reference}: {e}"),
            })?),
            None => None,
        };
        if *method == Method::HEAD {
            return Ok(header);
        }
        let computed = Digest::sha256_of(&response.body);
        match header {
            Some(header) if header.algorithm() == "sha256" && header != computed => Err(RegistryError::Malformed {
                host: host.clone(),
                reason: format!(
                    "the manifest body of {reference} hashes to {} but Docker-Content-Digest says {}",
                    computed.short(),
                    header.short()
                ),
            }),
            Some(header) => Ok(Some(header)),
            None => Ok(Some(computed)),
        }
    }

    async fn denied(
        &self,
        reference: &ImageReference,
        auth: &HostAuth,
        sent: bool,
        problem: Option<&str>,
    ) -> RegistryError {
        let host = reference.host();
        let realm = match auth {
            HostAuth::Challenged(challenge) => challenge.realm().unwrap_or("-").to_owned(),
            _ => "-".to_owned(),
        };
        let reason = if sent {
            let who = self.who(host).await;
            match problem {
                Some("insufficient_scope") => format!(
                    "pull access to {} is not granted to {who} (insufficient_scope)",
                    reference.repository()
                ),
                Some("invalid_token") => format!("{host} rejected the token for {who} twice (invalid_token)"),
                Some("denied") => format!("{host} denied {who} access to {reference} (HTTP 403)"),
                _ => format!("{host} rejected {who} for {reference}"),
            }
        } else {
            format!("{reference} needs credentials and none are configured for {host}")
        };
        RegistryError::Auth {
            host: host.clone(),
            realm,
            reason,
            hint: self.hint(host),
        }
    }

    /// Whose access was refused, for an error message: the credentials' safe description, or
    /// anonymous access.
    async fn who(&self, host: &RegistryHost) -> String {
        let configured = match self.provider(host) {
            Some(entry) => entry.provider.engine_credentials(host).await.ok().flatten(),
            None => None,
        };
        match configured {
            Some(credentials) => credentials.to_string(),
            None => format!("anonymous requests (no credentials are configured for {host})"),
        }
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The error of a check not sent because an earlier one of its host found it down.
fn not_asked(host: &RegistryHost, cause: &RegistryError) -> RegistryError {
    match cause {
        RegistryError::Timeout { url, after, .. } => RegistryError::Timeout {
            host: host.clone(),
            url: url.clone(),
            after: *after,
        },
        other => RegistryError::Unreachable {
            host: host.clone(),
            reason: format!("not asked, an earlier check of this host failed: {other}"),
        },
    }
}

/// What one scope adds to a token, estimated: the base64 of its JWT `access` entry,
/// `{"type":"repository","name":"<name>","actions":["pull"]},`.
fn token_bytes(repository: &str) -> usize {
    (repository.len() + 50) * 4 / 3
}

/// `repositories` as pull scopes in batches of at most `count` scopes and at most `bytes`
/// of estimated token growth each (one scope per batch at least).
fn scope_batches(repositories: &[&str], count: usize, bytes: usize) -> Vec<Vec<Scope>> {
    let mut batches: Vec<Vec<Scope>> = Vec::new();
    let mut current: Vec<Scope> = Vec::new();
    let mut size = 0;
    for repository in repositories {
        let cost = token_bytes(repository);
        if !current.is_empty() && (current.len() >= count || size + cost > bytes) {
            batches.push(std::mem::take(&mut current));
            size = 0;
        }
        current.push(Scope::pull(repository));
        size += cost;
    }
    if !current.is_empty() {
        batches.push(current);
    }
    batches
}

fn learnt_name(auth: &HostAuth) -> String {
    match auth {
        HostAuth::Unknown => "unknown".into(),
        HostAuth::Anonymous => "anonymous".into(),
        HostAuth::Challenged(challenge) => challenge.scheme().to_string(),
    }
}

/// The challenge to answer from a 401: Bearer with a realm before Basic. Malformed headers are
/// skipped when another one parses.
pub(super) fn preferred_challenge(response: &Response) -> Option<Challenge> {
    let (challenges, errors) = Challenge::parse_all(response.header_all("www-authenticate"));
    for error in &errors {
        tracing::debug!(error = %error, "unparsable WWW-Authenticate header");
    }
    Challenge::preferred(&challenges).cloned()
}

pub(super) fn rate_limited(host: &RegistryHost, response: &Response) -> RegistryError {
    RegistryError::RateLimited {
        host: host.clone(),
        retry_after: response
            .header("retry-after")
            .and_then(|value| parse_retry_after(value, std::time::SystemTime::now())),
    }
}

fn verify_pin(reference: &ImageReference, digest: Digest) -> Result<Digest, RegistryError> {
    match reference.digest() {
        Some(expected) if expected != &digest => Err(RegistryError::DigestMismatch {
            host: reference.host().clone(),
            image: reference.to_string(),
            expected: expected.clone(),
            actual: digest,
        }),
        _ => Ok(digest),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rstest::rstest;

    fn names(count: usize, length: usize) -> Vec<String> {
        (0..count).map(|i| format!("{i:0length$}")).collect()
    }

    #[rstest]
    #[case::short_names_fill_by_size(1000, 14, 100, 5 * 1024, 17)]
    #[case::long_names_make_smaller_batches(100, 200, 100, 5 * 1024, 7)]
    #[case::count_cap_closes_first(100, 4, 10, 5 * 1024, 10)]
    #[case::one_scope_over_the_budget_still_goes_alone(3, 100, 100, 10, 3)]
    fn batches_are_bounded_by_estimated_token_size_and_count(
        #[case] repositories: usize,
        #[case] length: usize,
        #[case] count: usize,
        #[case] bytes: usize,
        #[case] expected: usize,
    ) {
        let names = names(repositories, length);
        let refs: Vec<&str> = names.iter().map(String::as_str).collect();
        let batches = scope_batches(&refs, count, bytes);
        assert_eq!(batches.len(), expected);
        assert_eq!(
            batches.iter().map(Vec::len).sum::<usize>(),
            repositories,
            "every scope once"
        );
        for batch in &batches {
            let size: usize = batch.iter().map(|scope| token_bytes(scope.name())).sum();
            assert!(
                batch.len() == 1 || (size <= bytes && batch.len() <= count),
                "{} scopes, {size} bytes",
                batch.len()
            );
        }
    }
}
