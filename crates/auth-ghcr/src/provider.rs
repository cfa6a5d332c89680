//! [`BearerTokenProvider`]: answers Bearer challenges with tokens from the challenge's realm
//! and Basic challenges with the keychain's credentials, caching tokens per (host, realm,
//! service) partition with one exchange in flight per scope set; a cached token is handed out
//! without asking the keychain again.

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Instant, SystemTime};

use async_trait::async_trait;
use registry_core::client::{Transport, TransportError};
use registry_core::{
    AuthError, AuthScheme, Authorization, Challenge, Credentials, Keychain, RegistryHost, Scope, TokenProvider,
};
use tokio::sync::watch;
use url::Url;

use crate::token::{jwt_grants, parse_answer, usable_for};

/// The `client_id` sent with an OAuth2 refresh-token grant.
pub const CLIENT_ID: &str = "imagewatch";

/// One cache partition: tokens from one realm for one registry host (credentials are per
/// host, so two hosts sharing a realm never share a token).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct RealmKey {
    host: RegistryHost,
    realm: String,
    service: Option<String>,
}

type Shared = Option<Result<Arc<CachedToken>, AuthError>>;

/// What a token request does after looking at the cache.
enum Next {
    Wait(watch::Receiver<Shared>),
    Exchange(BTreeSet<Scope>, watch::Sender<Shared>),
}

struct CachedToken {
    authorization: Authorization,
    asked: BTreeSet<Scope>,
    /// What the token may be used for: the JWT's `access` claim when it has one, else what
    /// was asked (less what the registry has since refused).
    granted: Vec<Scope>,
    grants_known: bool,
    usable_until: Instant,
}

impl CachedToken {
    fn covers(&self, wanted: &BTreeSet<Scope>) -> bool {
        wanted.iter().all(|w| self.grants(w))
    }

    fn grants(&self, scope: &Scope) -> bool {
        self.granted.iter().any(|g| g.covers(scope))
    }
}

#[derive(Default)]
struct RealmCache {
    tokens: Vec<Arc<CachedToken>>,
    inflight: Vec<(BTreeSet<Scope>, watch::Receiver<Shared>)>,
    /// The realm has granted less in one batch than it grants scope by scope: ask one scope
    /// per request from now on.
    no_batch: bool,
    /// A batch answer granted less than asked; confirmed as `no_batch` when a single-scope
    /// request then grants one of the missing scopes.
    batch_shortfall: BTreeSet<Scope>,
}

impl RealmCache {
    /// A usable token for `wanted`, or the scopes no usable token covers. Several scopes
    /// covered by different tokens count as found (the first scope's token is returned).
    fn find(&mut self, wanted: &BTreeSet<Scope>, now: Instant) -> Result<Arc<CachedToken>, BTreeSet<Scope>> {
        self.tokens.retain(|token| token.usable_until > now);
        if let Some(token) = self.tokens.iter().find(|token| token.covers(wanted)) {
            return Ok(token.clone());
        }
        let missing: BTreeSet<Scope> = wanted
            .iter()
            .filter(|scope| !self.tokens.iter().any(|t| t.grants(scope)))
            .cloned()
            .collect();
        match (missing.is_empty(), wanted.first()) {
            (true, Some(first)) => self.tokens.iter().find(|t| t.grants(first)).cloned().ok_or(missing),
            _ => Err(missing),
        }
    }

    fn inflight_covering(&self, wanted: &BTreeSet<Scope>) -> Option<watch::Receiver<Shared>> {
        self.inflight
            .iter()
            .find(|(asked, _)| wanted.is_subset(asked))
            .map(|(_, receiver)| receiver.clone())
    }
}

#[derive(Default)]
struct State {
    realms: HashMap<RealmKey, RealmCache>,
}

/// Removes an in-flight marker when its exchange ends or is cancelled, so waiters never wait
/// on an exchange that no longer runs.
struct InflightGuard {
    state: Arc<Mutex<State>>,
    key: RealmKey,
    asked: BTreeSet<Scope>,
}

impl Drop for InflightGuard {
    fn drop(&mut self) {
        let mut state = lock(&self.state);
        if let Some(realm) = state.realms.get_mut(&self.key) {
            realm.inflight.retain(|(asked, _)| asked != &self.asked);
        }
    }
}

fn lock(state: &Mutex<State>) -> MutexGuard<'_, State> {
    state.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The challenge-driven token flow of distribution's token spec, for GHCR and every registry
/// that speaks it (Docker Hub, Gitea, Harbor, Quay, GitLab, distribution itself).
///
/// - Bearer challenge: `GET <realm>?service=..&scope=..&scope=..` (no `service` when the
///   challenge has none), with the keychain's Basic credentials for the registry host when it
///   has some and the realm is https or loopback; `token` or `access_token` accepted. An
///   identity token (refresh token) is exchanged with an OAuth2 `POST` instead; a ready bearer
///   token from the keychain is used as is.
/// - Basic challenge: the keychain's Basic credentials.
///
/// Several scopes in one call are asked in one exchange and cached as one token, which then
/// serves any later call for a subset of them. Once a realm is seen granting less per batch
/// than scope by scope (a JWT `access` claim says so, or the registry refuses a batch token
/// for one of its scopes), it is asked one scope at a time; a multi-scope call then exchanges
/// for the FIRST of its scopes no cached token covers, and returns that token — callers
/// pre-authorizing a batch use the call to warm the cache, never the returned value for the
/// other scopes.
pub struct BearerTokenProvider {
    transport: Arc<Transport>,
    keychain: Arc<dyn Keychain>,
    state: Arc<Mutex<State>>,
}

impl std::fmt::Debug for BearerTokenProvider {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let state = lock(&self.state);
        f.debug_struct("BearerTokenProvider")
            .field("keychain", &self.keychain)
            .field("realms", &state.realms.len())
            .finish()
    }
}

impl BearerTokenProvider {
    pub fn new(transport: Arc<Transport>, keychain: Arc<dyn Keychain>) -> BearerTokenProvider {
        BearerTokenProvider {
            transport,
            keychain,
            state: Arc::new(Mutex::new(State::default())),
        }
    }

    /// Tokens currently cached and usable (for tests and metrics).
    pub fn cached_tokens(&self) -> usize {
        let now = Instant::now();
        lock(&self.state)
            .realms
            .values()
            .map(|realm| realm.tokens.iter().filter(|t| t.usable_until > now).count())
            .sum()
    }

    /// Whether the realm serving `host` is asked one scope per request.
    pub fn batching_disabled(&self, host: &RegistryHost) -> bool {
        lock(&self.state)
            .realms
            .iter()
            .any(|(key, realm)| &key.host == host && realm.no_batch)
    }

    async fn keychain_credentials(&self, host: &RegistryHost) -> Result<Option<Credentials>, AuthError> {
        let keychain = self.keychain.clone();
        let lookup = host.clone();
        // Credential helpers are processes: keep them off the async workers.
        let answer = tokio::task::spawn_blocking(move || keychain.credentials(&lookup))
            .await
            .map_err(|e| AuthError::Provider {
                provider: "keychain",
                host: host.to_string(),
                message: format!("the credential lookup did not finish: {e}"),
            })?;
        answer.map_err(|e| AuthError::Provider {
            provider: "keychain",
            host: host.to_string(),
            message: e.to_string(),
        })
    }

    /// A cached, usable token for `wanted`: the warm path, with no keychain lookup.
    fn cached(&self, key: &RealmKey, wanted: &BTreeSet<Scope>) -> Option<Authorization> {
        let mut state = lock(&self.state);
        let token = state.realms.get_mut(key)?.find(wanted, Instant::now()).ok()?;
        Some(token.authorization.clone())
    }

    /// A token for `wanted` from the cache, an exchange in flight, or a new exchange made with
    /// `credentials` (the keychain's answer, looked up once by the caller).
    async fn token(
        &self,
        key: &RealmKey,
        wanted: &BTreeSet<Scope>,
        credentials: Option<&Credentials>,
    ) -> Result<Authorization, AuthError> {
        loop {
            let next = {
                let mut state = lock(&self.state);
                let cache = state.realms.entry(key.clone()).or_default();
                let missing = match cache.find(wanted, Instant::now()) {
                    Ok(token) => return Ok(token.authorization.clone()),
                    Err(missing) => missing,
                };
                if let Some(receiver) = cache.inflight_covering(&missing) {
                    Next::Wait(receiver)
                } else {
                    // Ask only for what no cached token covers; one scope at a time once the
                    // realm is known to under-grant batches.
                    let asked: BTreeSet<Scope> = if cache.no_batch {
                        missing.into_iter().take(1).collect()
                    } else {
                        missing
                    };
                    let (sender, receiver) = watch::channel(None);
                    cache.inflight.push((asked.clone(), receiver));
                    Next::Exchange(asked, sender)
                }
            };
            match next {
                Next::Wait(mut receiver) => {
                    // Someone is already exchanging for a superset: share their answer.
                    let shared = receiver.wait_for(Option::is_some).await.map(|v| v.clone());
                    match shared {
                        Ok(Some(Ok(token))) if token.covers(wanted) => return Ok(token.authorization.clone()),
                        Ok(Some(Err(error))) => return Err(error),
                        // Granted less than we need, or the exchange was cancelled: look again.
                        _ => continue,
                    }
                }
                Next::Exchange(asked, sender) => {
                    let guard = InflightGuard {
                        state: self.state.clone(),
                        key: key.clone(),
                        asked: asked.clone(),
                    };
                    let result = self.exchange(key, &asked, credentials).await.map(Arc::new);
                    if let Ok(token) = &result {
                        self.store(key, token.clone());
                    }
                    sender.send_replace(Some(result.clone()));
                    drop(guard);
                    return result.map(|token| token.authorization.clone());
                }
            }
        }
    }

    fn store(&self, key: &RealmKey, token: Arc<CachedToken>) {
        let mut state = lock(&self.state);
        let cache = state.realms.entry(key.clone()).or_default();
        if token.grants_known {
            if token.asked.len() > 1 {
                let missing: Vec<Scope> = token
                    .asked
                    .iter()
                    .filter(|asked| !token.grants(asked))
                    .cloned()
                    .collect();
                if !missing.is_empty() {
                    tracing::debug!(realm = %key.realm, asked = token.asked.len(), missing = missing.len(), "batch token granted less than asked");
                    cache.batch_shortfall.extend(missing);
                }
            } else if token.asked.iter().any(|scope| cache.batch_shortfall.contains(scope))
                && token.covers(&token.asked)
            {
                // One scope at a time got what the batch did not: the realm under-grants batches.
                tracing::info!(host = %key.host, realm = %key.realm, "the token realm grants fewer scopes per batch than asked; asking one repository per token from now on");
                cache.no_batch = true;
                cache.batch_shortfall.clear();
            }
        }
        cache.tokens.push(token);
    }

    async fn exchange(
        &self,
        key: &RealmKey,
        scopes: &BTreeSet<Scope>,
        credentials: Option<&Credentials>,
    ) -> Result<CachedToken, AuthError> {
        let (host, realm, service) = (&key.host, key.realm.as_str(), key.service.as_deref());
        let mut url = Url::parse(realm).map_err(|e| AuthError::BadTokenResponse {
            realm: realm.to_owned(),
            reason: format!("the challenge's realm is not an absolute URL ({e})"),
        })?;
        if !matches!(url.scheme(), "https" | "http") {
            return Err(AuthError::Unsafe {
                url: realm.to_owned(),
                reason: format!("the realm's scheme {:?} is not http(s)", url.scheme()),
            });
        }
        let scope_list: Vec<String> = scopes.iter().map(Scope::to_string).collect();
        let started = SystemTime::now();
        let response = match credentials {
            Some(Credentials::IdentityToken(refresh)) => {
                let mut form = vec![
                    ("grant_type".to_owned(), "refresh_token".to_owned()),
                    ("refresh_token".to_owned(), refresh.expose().to_owned()),
                    ("client_id".to_owned(), CLIENT_ID.to_owned()),
                ];
                if let Some(service) = service {
                    form.push(("service".to_owned(), service.to_owned()));
                }
                if !scope_list.is_empty() {
                    form.push(("scope".to_owned(), scope_list.join(" ")));
                }
                self.transport.post_token_form(&url, form).await
            }
            basic => {
                {
                    let mut query = url.query_pairs_mut();
                    if let Some(service) = service {
                        query.append_pair("service", service);
                    }
                    for scope in &scope_list {
                        query.append_pair("scope", scope);
                    }
                }
                if url.query() == Some("") {
                    url.set_query(None);
                }
                let basic = basic.filter(|c| matches!(c, Credentials::Basic { .. }));
                self.transport.get_token(&url, basic).await
            }
        }
        .map_err(|error| transport_error(realm, error))?;
        match response.status {
            200 => {}
            401 | 403 => {
                return Err(AuthError::Denied {
                    realm: realm.to_owned(),
                    status: response.status,
                    hint: match credentials {
                        // The kind only: this text reaches `/status`, which must not name the user.
                        Some(credentials) => format!("the configured {} for {host} were refused", credentials.kind()),
                        None => format!("anonymous access was refused; configure credentials for {host}"),
                    },
                });
            }
            429 => {
                let retry = response
                    .header("retry-after")
                    .map(|v| format!(" (Retry-After: {v})"))
                    .unwrap_or_default();
                return Err(AuthError::Unreachable {
                    url: realm.to_owned(),
                    reason: format!("the token endpoint is rate limiting (HTTP 429){retry}"),
                });
            }
            status => {
                return Err(AuthError::Unreachable {
                    url: realm.to_owned(),
                    reason: format!("the token endpoint answered HTTP {status}"),
                });
            }
        }
        let answer = parse_answer(realm, &response.body)?;
        let usable = usable_for(&answer, started);
        let (granted, grants_known) = match jwt_grants(&answer.token) {
            Some(granted) => (granted, true),
            None => (scopes.iter().cloned().collect(), false),
        };
        tracing::debug!(
            host = %host,
            realm,
            scopes = scopes.len(),
            expires_in = answer.expires_in,
            usable_secs = usable.as_secs(),
            "token exchanged"
        );
        Ok(CachedToken {
            authorization: Authorization::bearer(&answer.token),
            asked: scopes.clone(),
            granted,
            grants_known,
            usable_until: Instant::now() + usable,
        })
    }
}

fn transport_error(realm: &str, error: TransportError) -> AuthError {
    match error {
        TransportError::Insecure { reason, .. } => AuthError::Unsafe {
            url: realm.to_owned(),
            reason,
        },
        TransportError::TooLarge { .. } => AuthError::BadTokenResponse {
            realm: realm.to_owned(),
            reason: error.to_string(),
        },
        other => AuthError::Unreachable {
            url: realm.to_owned(),
            reason: other.to_string(),
        },
    }
}

#[async_trait]
impl TokenProvider for BearerTokenProvider {
    async fn authorization(
        &self,
        host: &RegistryHost,
        challenge: &Challenge,
        scopes: &[Scope],
    ) -> Result<Option<Authorization>, AuthError> {
        match challenge.scheme() {
            AuthScheme::Basic => match self.keychain_credentials(host).await? {
                None => Ok(None),
                Some(credentials @ (Credentials::Basic { .. } | Credentials::Bearer(_))) => {
                    Ok(Authorization::from_credentials(&credentials))
                }
                Some(Credentials::IdentityToken(_)) => Err(AuthError::Provider {
                    provider: "keychain",
                    host: host.to_string(),
                    message: "the registry asks for Basic authentication but only an identity token is configured; configure a user name and password".into(),
                }),
            },
            AuthScheme::Bearer => {
                let Some(realm) = challenge.realm() else {
                    return Err(AuthError::BadTokenResponse {
                        realm: "-".into(),
                        reason: format!("{host} sent a Bearer challenge without a realm"),
                    });
                };
                let key = RealmKey {
                    host: host.clone(),
                    realm: realm.to_owned(),
                    service: challenge.service().map(str::to_owned),
                };
                let wanted: BTreeSet<Scope> = scopes.iter().cloned().collect();
                // A warm check asks no keychain: a credential helper is a process per lookup.
                if let Some(authorization) = self.cached(&key, &wanted) {
                    return Ok(Some(authorization));
                }
                let credentials = self.keychain_credentials(host).await?;
                if let Some(Credentials::Bearer(token)) = &credentials {
                    return Ok(Some(Authorization::bearer(token.expose())));
                }
                self.token(&key, &wanted, credentials.as_ref()).await.map(Some)
            }
            AuthScheme::Other(scheme) => Err(AuthError::UnsupportedScheme {
                host: host.to_string(),
                scheme: scheme.clone(),
            }),
        }
    }

    fn reject(&self, host: &RegistryHost, scopes: &[Scope]) {
        let mut state = lock(&self.state);
        for (key, cache) in state.realms.iter_mut().filter(|(key, _)| &key.host == host) {
            let mut kept = Vec::with_capacity(cache.tokens.len());
            for token in cache.tokens.drain(..) {
                let refused: Vec<&Scope> = scopes.iter().filter(|scope| token.grants(scope)).collect();
                if refused.is_empty() {
                    kept.push(token);
                    continue;
                }
                if token.asked.len() > 1 && !token.grants_known {
                    // An opaque batch token refused for one of its scopes: the registry granted
                    // less than asked. Keep it for the rest; ask scope by scope from now on.
                    if !cache.no_batch {
                        tracing::info!(host = %host, realm = %key.realm, "a batch token was refused for one of its repositories; asking one repository per token from now on");
                    }
                    cache.no_batch = true;
                    let granted = token
                        .granted
                        .iter()
                        .filter(|g| !refused.iter().any(|r| g.covers(r)))
                        .cloned()
                        .collect();
                    kept.push(Arc::new(CachedToken {
                        authorization: token.authorization.clone(),
                        asked: token.asked.clone(),
                        granted,
                        grants_known: false,
                        usable_until: token.usable_until,
                    }));
                }
                // Otherwise the token itself is bad (expired early, revoked): drop it.
            }
            cache.tokens = kept;
        }
    }

    async fn engine_credentials(&self, host: &RegistryHost) -> Result<Option<Credentials>, AuthError> {
        self.keychain_credentials(host).await
    }
}
