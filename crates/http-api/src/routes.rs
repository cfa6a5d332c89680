//! The handlers: authenticate, parse at the edge, hand names to the trigger queue, answer JSON.
//! A webhook never waits for the check it asked for (senders time out in seconds); an operator
//! may, with `POST /check?wait=true`.

use std::sync::Arc;
use std::time::SystemTime;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{DefaultBodyLimit, RawQuery, Request, State};
use axum::http::header::{CONTENT_LENGTH, CONTENT_TYPE, RETRY_AFTER, WWW_AUTHENTICATE};
use axum::http::{HeaderMap, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use http_body_util::BodyExt as _;
use registry_core::Secret;
use registry_core::client::ClientStats;
use registry_core::{Digest, ImageReference};
use serde_json::{Value, json};
use tokio::sync::Semaphore;
use tracing::{debug, info, warn};
use watcher::{ImageState, StatusBoard, Ticket, TriggerHandle};

use crate::ApiConfig;
use crate::auth::{Refusal, presented_token, signature_mac, verify_signature, verify_token};
use crate::counters::{HookCounters, HookOutcome};
use crate::hooks::github::GithubEvent;
use crate::hooks::{self, PayloadError, Sender};
use crate::metrics::{self, Readings};
use crate::named::{NamedImage, WatchIndex};

#[derive(Debug)]
pub(crate) struct Shared {
    pub(crate) config: ApiConfig,
    pub(crate) triggers: TriggerHandle,
    pub(crate) status: StatusBoard,
    pub(crate) registry: Option<Arc<ClientStats>>,
    pub(crate) leadership: Option<tokio::sync::watch::Receiver<watcher::Leadership>>,
    pub(crate) hooks: HookCounters,
    /// One permit per body being read (see [`Shared::hook_body`]).
    pub(crate) bodies: Arc<Semaphore>,
}

type Api = State<Arc<Shared>>;

pub(crate) fn router(shared: Arc<Shared>) -> Router {
    let limit = shared.config.max_body;
    let guard = middleware::from_fn_with_state(shared.clone(), same_origin_only);
    Router::new()
        .route("/healthz", get(healthz))
        .route("/status", get(status))
        .route("/metrics", get(metrics_text))
        .route("/check", post(check))
        .route("/hooks/distribution", post(distribution))
        .route("/hooks/dockerhub", post(dockerhub))
        .route("/hooks/github", post(github))
        .route("/hooks/gitea", post(gitea))
        .layer(DefaultBodyLimit::max(limit))
        .layer(guard)
        .with_state(shared)
}

/// Refuses what a browser sends on a web page's behalf, before any handler (see `origin`).
async fn same_origin_only(State(api): Api, request: Request, next: Next) -> Response {
    let config = &api.config;
    let check_host = config.host_check || !config.allowed_hosts.is_empty();
    match crate::origin::refusal(request.headers(), check_host, &config.allowed_hosts) {
        Some(refused) => {
            warn!(path = request.uri().path(), "request from a browser page refused");
            error(refused.status(), refused.message())
        }
        None => next.run(request).await,
    }
}

fn error(status: StatusCode, message: impl Into<String>) -> Response {
    (status, axum::Json(json!({ "error": message.into() }))).into_response()
}

fn header<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).and_then(|value| value.to_str().ok())
}

fn time(at: SystemTime) -> String {
    humantime::format_rfc3339_millis(at).to_string()
}

impl Shared {
    fn hook_refused(&self, sender: Sender, refusal: Refusal) -> Response {
        self.hooks.count(sender, HookOutcome::Unauthorized);
        warn!(sender = sender.as_str(), reason = %refusal, "webhook refused");
        error(StatusCode::UNAUTHORIZED, refusal.to_string())
    }

    fn hook_disabled(&self, sender: Sender, what: &str) -> Response {
        self.hooks.count(sender, HookOutcome::Disabled);
        warn!(sender = sender.as_str(), "webhook for a disabled endpoint");
        error(
            StatusCode::NOT_FOUND,
            format!("the {} webhook endpoint is disabled: {what}", sender.as_str()),
        )
    }

    /// The body, read only after the caller authenticated what it could from the head: at most
    /// `max_body` bytes, within `body_timeout`, while fewer than `max_bodies` bodies are being
    /// read over all connections. Otherwise the answer to send instead (413, 408, 503).
    async fn hook_body(&self, sender: Sender, headers: &HeaderMap, body: Body) -> Result<Bytes, Box<Response>> {
        let refuse = |outcome: HookOutcome, status: StatusCode, message: String| {
            self.hooks.count(sender, outcome);
            warn!(
                sender = sender.as_str(),
                status = status.as_u16(),
                "webhook body refused"
            );
            Box::new(error(status, message))
        };
        let too_large = || {
            format!(
                "the body is too large: bodies are capped at {} bytes",
                self.config.max_body
            )
        };
        let declared = header(headers, CONTENT_LENGTH.as_str()).and_then(|v| v.trim().parse::<u64>().ok());
        if declared.is_some_and(|length| length > self.config.max_body as u64) {
            return Err(refuse(
                HookOutcome::TooLarge,
                StatusCode::PAYLOAD_TOO_LARGE,
                too_large(),
            ));
        }
        let Ok(_permit) = self.bodies.clone().try_acquire_owned() else {
            let mut response = refuse(
                HookOutcome::Busy,
                StatusCode::SERVICE_UNAVAILABLE,
                "too many webhook bodies are being received at once; retry shortly".to_owned(),
            );
            response
                .headers_mut()
                .insert(RETRY_AFTER, axum::http::HeaderValue::from_static("5"));
            return Err(response);
        };
        let limited = http_body_util::Limited::new(body, self.config.max_body);
        match tokio::time::timeout(self.config.body_timeout, limited.collect()).await {
            Ok(Ok(collected)) => Ok(collected.to_bytes()),
            Ok(Err(error)) if error.is::<http_body_util::LengthLimitError>() => Err(refuse(
                HookOutcome::TooLarge,
                StatusCode::PAYLOAD_TOO_LARGE,
                too_large(),
            )),
            Ok(Err(_)) => Err(refuse(
                HookOutcome::Invalid,
                StatusCode::BAD_REQUEST,
                "the body could not be read".to_owned(),
            )),
            Err(_) => Err(refuse(
                HookOutcome::Slow,
                StatusCode::REQUEST_TIMEOUT,
                format!(
                    "the body did not arrive within {}",
                    humantime::format_duration(self.config.body_timeout)
                ),
            )),
        }
    }

    /// Turns names into checks: each watched image named is asked for once.
    fn dispatch(&self, sender: Sender, parsed: Result<Vec<NamedImage>, PayloadError>) -> Response {
        let names = match parsed {
            Ok(names) => names,
            Err(invalid) => {
                self.hooks.count(sender, HookOutcome::Invalid);
                warn!(sender = sender.as_str(), error = %invalid, "webhook payload refused");
                return error(StatusCode::BAD_REQUEST, invalid.to_string());
            }
        };
        let watch_set = self.triggers.watch_set();
        let index = WatchIndex::new(&watch_set);
        let mut references: Vec<(ImageReference, Option<Digest>)> = Vec::new();
        let mut selected = std::collections::HashSet::new();
        for name in &names {
            for reference in name.matches_in(&index) {
                if selected.insert(reference.clone()) {
                    references.push((reference, name.claim.clone()));
                }
            }
        }
        let checks: Vec<Value> = references
            .iter()
            .map(|(reference, claim)| {
                let outcome = match self.triggers.check_expecting(reference, claim.clone()) {
                    Ok((outcome, _)) => outcome.as_str(),
                    Err(_) => "not_watched",
                };
                json!({ "image": reference.to_string(), "outcome": outcome })
            })
            .collect();
        let outcome = if names.is_empty() {
            HookOutcome::Ignored
        } else if references.is_empty() {
            HookOutcome::Unmatched
        } else {
            HookOutcome::Accepted
        };
        self.hooks.count(sender, outcome);
        let named: Vec<String> = names.iter().map(ToString::to_string).collect();
        if outcome == HookOutcome::Accepted {
            info!(
                sender = sender.as_str(),
                named = named.join(" "),
                checks = checks.len(),
                "webhook: checking now"
            );
        } else {
            debug!(
                sender = sender.as_str(),
                named = named.join(" "),
                outcome = outcome.as_str(),
                "webhook: nothing to check"
            );
        }
        (
            StatusCode::ACCEPTED,
            axum::Json(json!({ "named": named, "checks": checks })),
        )
            .into_response()
    }

    /// distribution and Docker Hub: a token, unless token-less hooks are allowed (loopback),
    /// checked before the body is read.
    async fn token_hook(
        &self,
        sender: Sender,
        headers: &HeaderMap,
        query: Option<&str>,
        body: Body,
        parse: fn(&[u8]) -> Result<Vec<NamedImage>, PayloadError>,
    ) -> Response {
        match &self.config.hook_token {
            Some(token) => {
                if let Err(refusal) = verify_token(token, presented_token(headers, query).as_deref()) {
                    return self.hook_refused(sender, refusal);
                }
            }
            None if self.config.unauthenticated_hooks => {}
            None => {
                return self.hook_disabled(sender, "beyond loopback it needs a hook token");
            }
        }
        let body = match self.hook_body(sender, headers, body).await {
            Ok(body) => body,
            Err(response) => return *response,
        };
        self.dispatch(sender, parse(&body))
    }

    /// GitHub and Gitea sign the body, so it must be read to be authenticated: what the head
    /// can show (an enabled endpoint, a well-formed signature) is checked first, and the read
    /// is bounded like every other ([`Shared::hook_body`]).
    async fn signed_body(
        &self,
        sender: Sender,
        secret: Option<&Secret>,
        what: &str,
        signature: Option<&str>,
        headers: &HeaderMap,
        body: Body,
    ) -> Result<Bytes, Box<Response>> {
        let Some(secret) = secret else {
            return Err(Box::new(self.hook_disabled(sender, what)));
        };
        if let Err(refusal) = signature_mac(signature) {
            return Err(Box::new(self.hook_refused(sender, refusal)));
        }
        let body = self.hook_body(sender, headers, body).await?;
        if let Err(refusal) = verify_signature(secret, &body, signature) {
            return Err(Box::new(self.hook_refused(sender, refusal)));
        }
        Ok(body)
    }

    /// The answer to a request without the API token, when one is required.
    fn api_token_refusal(&self, what: &str, headers: &HeaderMap) -> Option<Response> {
        let token = self.config.api_token.as_ref()?;
        let refusal = match verify_token(token, presented_token(headers, None).as_deref()) {
            Ok(()) => return None,
            Err(Refusal::MissingToken) => Refusal::MissingBearer,
            Err(refusal) => refusal,
        };
        warn!(reason = %refusal, "{what} refused");
        let mut response = error(StatusCode::UNAUTHORIZED, refusal.to_string());
        response.headers_mut().insert(
            WWW_AUTHENTICATE,
            axum::http::HeaderValue::from_static("Bearer realm=\"imagewatch\""),
        );
        Some(response)
    }
}

async fn distribution(State(api): Api, headers: HeaderMap, RawQuery(query): RawQuery, body: Body) -> Response {
    api.token_hook(
        Sender::Distribution,
        &headers,
        query.as_deref(),
        body,
        hooks::distribution::names,
    )
    .await
}

async fn dockerhub(State(api): Api, headers: HeaderMap, RawQuery(query): RawQuery, body: Body) -> Response {
    api.token_hook(
        Sender::Dockerhub,
        &headers,
        query.as_deref(),
        body,
        hooks::dockerhub::names,
    )
    .await
}

async fn github(State(api): Api, headers: HeaderMap, body: Body) -> Response {
    let sender = Sender::Github;
    let signature = header(&headers, "x-hub-signature-256");
    let secret = api.config.github_secret.as_ref();
    let what = "no GitHub webhook secret is configured";
    let body = match api.signed_body(sender, secret, what, signature, &headers, body).await {
        Ok(body) => body,
        Err(response) => return *response,
    };
    match GithubEvent::from_header(header(&headers, "x-github-event")) {
        GithubEvent::Ping => {
            api.hooks.count(sender, HookOutcome::Ignored);
            (StatusCode::OK, axum::Json(json!({ "ping": "pong" }))).into_response()
        }
        GithubEvent::Other => api.dispatch(sender, Ok(Vec::new())),
        GithubEvent::Package => api.dispatch(sender, hooks::github::names(&body)),
    }
}

async fn gitea(State(api): Api, headers: HeaderMap, body: Body) -> Response {
    let sender = Sender::Gitea;
    let signature = header(&headers, "x-gitea-signature").or_else(|| header(&headers, "x-forgejo-signature"));
    let secret = api.config.gitea_secret.as_ref();
    let what = "no Gitea webhook secret is configured";
    let body = match api.signed_body(sender, secret, what, signature, &headers, body).await {
        Ok(body) => body,
        Err(response) => return *response,
    };
    let event = header(&headers, "x-gitea-event").or_else(|| header(&headers, "x-forgejo-event"));
    if event.is_some_and(|event| event.trim() != "package") {
        return api.dispatch(sender, Ok(Vec::new()));
    }
    api.dispatch(sender, hooks::gitea::names(&body))
}

/// `POST /check[?image=REF][&wait=true]`.
async fn check(State(api): Api, headers: HeaderMap, RawQuery(query): RawQuery) -> Response {
    if let Some(refused) = api.api_token_refusal("POST /check", &headers) {
        return refused;
    }
    let params: Vec<(String, String)> = url::form_urlencoded::parse(query.as_deref().unwrap_or("").as_bytes())
        .into_owned()
        .collect();
    let param = |name: &str| {
        params
            .iter()
            .find(|(key, _)| key == name)
            .map(|(_, value)| value.trim())
    };
    let wait = param("wait").is_some_and(|v| matches!(v.to_ascii_lowercase().as_str(), "" | "1" | "true" | "yes"));
    let (scope, outcome, ticket, images): (String, &str, Ticket, Option<Vec<ImageReference>>) =
        match param("image").filter(|v| !v.is_empty()) {
            Some(value) => {
                let reference: ImageReference = match value.parse() {
                    Ok(reference) => reference,
                    Err(invalid) => return error(StatusCode::BAD_REQUEST, format!("{invalid}")),
                };
                match api.triggers.check(&reference) {
                    Ok((outcome, ticket)) => {
                        let watched = reference.without_digest();
                        (watched.to_string(), outcome.as_str(), ticket, Some(vec![watched]))
                    }
                    Err(not_watched) => return error(StatusCode::NOT_FOUND, not_watched.to_string()),
                }
            }
            None => {
                let (outcome, ticket) = api.triggers.check_all();
                ("all".to_owned(), outcome.as_str(), ticket, None)
            }
        };
    info!(scope = %scope, outcome, wait, "check requested");
    let mut answer = json!({ "scope": scope, "outcome": outcome });
    if !wait {
        return (StatusCode::ACCEPTED, axum::Json(answer)).into_response();
    }
    let served = tokio::time::timeout(api.config.check_wait, api.triggers.wait(ticket))
        .await
        .unwrap_or(false);
    answer["served"] = served.into();
    if !served {
        return (StatusCode::ACCEPTED, axum::Json(answer)).into_response();
    }
    // Named images are looked up one by one: copying the whole board for one image would cost
    // every waited check of a 10,000-image set a copy of 10,000 states.
    let states: Vec<Value> = match &images {
        Some(images) => images
            .iter()
            .filter_map(|image| api.status.image(image))
            .map(|state| image_json(&state))
            .collect(),
        None => api.status.images().iter().map(image_json).collect(),
    };
    answer["images"] = states.into();
    (StatusCode::OK, axum::Json(answer)).into_response()
}

fn image_json(state: &ImageState) -> Value {
    json!({
        "image": state.image.to_string(),
        "runtime": state.runtime,
        "seen_digest": state.seen_digest.as_ref().map(|d| d.as_str()),
        "last_digest": state.last_digest.as_ref().map(|d| d.as_str()),
        "last_check": state.last_check.map(time),
        "last_result": state.last_result,
        "checks": state.checks,
        "last_error": state.last_error.as_ref().map(|e| json!({
            "at": time(e.at),
            "kind": e.kind,
            "message": e.message,
        })),
        "last_refresh": state.last_refresh.as_ref().map(|r| json!({
            "at": time(r.at),
            "old_digest": r.old.as_str(),
            "new_digest": r.new.as_str(),
            "result": if r.succeeded { "success" } else { "failure" },
            "detail": r.detail,
        })),
        "pending": state.pending.as_ref().map(|p| json!({
            "digest": p.digest.as_str(),
            "status": p.status,
            "reason": p.reason,
            "at": time(p.at),
        })),
        "retry": state.retry.as_ref().map(|r| json!({
            "digest": r.digest.as_str(),
            "failures": r.failures,
            "next_attempt": time(r.next_attempt),
            "policy": RETRY_POLICY,
        })),
    })
}

/// How a digest whose refresh failed is retried, stated beside each failing image in `/status`
/// (the refresh's own error says what the attempt cost: nothing for a start-first container,
/// the seconds it was down for a stop-first one).
const RETRY_POLICY: &str =
    "the failing digest is retried 1, 2, 4, ... ticks apart (at most every hour); a newer digest at once";

/// `GET /status`: beyond loopback only with the API token (it lists every image and error).
async fn status(State(api): Api, headers: HeaderMap) -> Response {
    if api.config.status_needs_token
        && let Some(refused) = api.api_token_refusal("GET /status", &headers)
    {
        return refused;
    }
    let images: Vec<Value> = api.status.images().iter().map(image_json).collect();
    let metrics = api.status.metrics();
    let mut body = json!({
        "watching": !api.triggers.is_stopped(),
        "last_tick": metrics.last_tick.map(time),
        "images": images,
    });
    if let Some(leadership) = &api.leadership {
        let leadership = leadership.borrow().clone();
        body["replica"] = json!({
            "name": leadership.replica(),
            "role": leadership.role(),
            "leader": leadership.leader(),
        });
    }
    axum::Json(body).into_response()
}

/// `GET /healthz`: 200 while the watch loop runs (or has not started yet), 503 once stopped.
async fn healthz(State(api): Api) -> Response {
    if api.triggers.is_stopped() {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            axum::Json(json!({ "status": "stopped" })),
        )
            .into_response()
    } else {
        axum::Json(json!({ "status": "ok" })).into_response()
    }
}

/// `GET /metrics`.
async fn metrics_text(State(api): Api) -> Response {
    let readings = Readings {
        watcher: api.status.metrics(),
        triggers: api.triggers.counts(),
        hooks: api.hooks.snapshot(),
        registry: api.registry.as_ref().map(|stats| stats.snapshot()),
        running: !api.triggers.is_stopped(),
    };
    let mut text = metrics::render(&readings);
    if let Some(leadership) = &api.leadership {
        text.push_str(&metrics::render_leadership(&leadership.borrow()));
    }
    ([(CONTENT_TYPE, metrics::CONTENT_TYPE)], text).into_response()
}
