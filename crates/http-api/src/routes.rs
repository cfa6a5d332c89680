//! The handlers: authenticate, parse at the edge, hand names to the trigger queue, answer JSON.
//! A webhook never waits for the check it asked for (senders time out in seconds); an operator
//! may, with `POST /check?wait=true`.

use std::sync::Arc;
use std::time::SystemTime;

use axum::Router;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, RawQuery, State};
use axum::http::header::{CONTENT_TYPE, WWW_AUTHENTICATE};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use registry_core::client::ClientStats;
use registry_core::{Digest, ImageReference};
use serde_json::{Value, json};
use tracing::{debug, info, warn};
use watcher::{ImageState, StatusBoard, Ticket, TriggerHandle};

use crate::ApiConfig;
use crate::auth::{Refusal, presented_token, verify_signature, verify_token};
use crate::counters::{HookCounters, HookOutcome};
use crate::hooks::github::GithubEvent;
use crate::hooks::{self, PayloadError, Sender};
use crate::metrics::{self, Readings};
use crate::named::NamedImage;

#[derive(Debug)]
pub(crate) struct Shared {
    pub(crate) config: ApiConfig,
    pub(crate) triggers: TriggerHandle,
    pub(crate) status: StatusBoard,
    pub(crate) registry: Option<Arc<ClientStats>>,
    pub(crate) hooks: HookCounters,
}

type Api = State<Arc<Shared>>;
type Body = Result<Bytes, BytesRejection>;

pub(crate) fn router(shared: Arc<Shared>) -> Router {
    let limit = shared.config.max_body;
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
        .with_state(shared)
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

    /// The body, or the answer to a body that could not be read (413 over the cap).
    fn hook_body(&self, sender: Sender, body: Body) -> Result<Bytes, Box<Response>> {
        body.map_err(|rejection| {
            let status = rejection.status();
            let outcome = if status == StatusCode::PAYLOAD_TOO_LARGE {
                HookOutcome::TooLarge
            } else {
                HookOutcome::Invalid
            };
            self.hooks.count(sender, outcome);
            warn!(
                sender = sender.as_str(),
                status = status.as_u16(),
                "webhook body refused"
            );
            Box::new(error(
                status,
                format!(
                    "{}; bodies are capped at {} bytes",
                    rejection.body_text(),
                    self.config.max_body
                ),
            ))
        })
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
        let mut references: Vec<(ImageReference, Option<Digest>)> = Vec::new();
        for name in &names {
            for reference in name.matches(&self.triggers.watch_set()) {
                if !references.iter().any(|(known, _)| *known == reference) {
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

    /// distribution and Docker Hub: a token, unless token-less hooks are allowed (loopback).
    fn token_hook(
        &self,
        sender: Sender,
        headers: &HeaderMap,
        query: Option<&str>,
        body: Body,
        parse: fn(&[u8]) -> Result<Vec<NamedImage>, PayloadError>,
    ) -> Response {
        let body = match self.hook_body(sender, body) {
            Ok(body) => body,
            Err(response) => return *response,
        };
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
        self.dispatch(sender, parse(&body))
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
}

async fn dockerhub(State(api): Api, headers: HeaderMap, RawQuery(query): RawQuery, body: Body) -> Response {
    api.token_hook(
        Sender::Dockerhub,
        &headers,
        query.as_deref(),
        body,
        hooks::dockerhub::names,
    )
}

async fn github(State(api): Api, headers: HeaderMap, body: Body) -> Response {
    let sender = Sender::Github;
    let body = match api.hook_body(sender, body) {
        Ok(body) => body,
        Err(response) => return *response,
    };
    let Some(secret) = &api.config.github_secret else {
        return api.hook_disabled(sender, "no GitHub webhook secret is configured");
    };
    if let Err(refusal) = verify_signature(secret, &body, header(&headers, "x-hub-signature-256")) {
        return api.hook_refused(sender, refusal);
    }
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
    let body = match api.hook_body(sender, body) {
        Ok(body) => body,
        Err(response) => return *response,
    };
    let Some(secret) = &api.config.gitea_secret else {
        return api.hook_disabled(sender, "no Gitea webhook secret is configured");
    };
    let signature = header(&headers, "x-gitea-signature").or_else(|| header(&headers, "x-forgejo-signature"));
    if let Err(refusal) = verify_signature(secret, &body, signature) {
        return api.hook_refused(sender, refusal);
    }
    let event = header(&headers, "x-gitea-event").or_else(|| header(&headers, "x-forgejo-event"));
    if event.is_some_and(|event| event.trim() != "package") {
        return api.dispatch(sender, Ok(Vec::new()));
    }
    api.dispatch(sender, hooks::gitea::names(&body))
}

/// `POST /check[?image=REF][&wait=true]`.
async fn check(State(api): Api, headers: HeaderMap, RawQuery(query): RawQuery) -> Response {
    if let Some(token) = &api.config.api_token
        && let Err(refusal) = verify_token(token, presented_token(&headers, None).as_deref())
    {
        warn!(reason = %refusal, "POST /check refused");
        let mut response = error(StatusCode::UNAUTHORIZED, refusal.to_string());
        response.headers_mut().insert(
            WWW_AUTHENTICATE,
            axum::http::HeaderValue::from_static("Bearer realm=\"imagewatch\""),
        );
        return response;
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
    })
}

/// `GET /status`.
async fn status(State(api): Api) -> Response {
    let images: Vec<Value> = api.status.images().iter().map(image_json).collect();
    let metrics = api.status.metrics();
    axum::Json(json!({
        "watching": !api.triggers.is_stopped(),
        "last_tick": metrics.last_tick.map(time),
        "images": images,
    }))
    .into_response()
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
    ([(CONTENT_TYPE, metrics::CONTENT_TYPE)], metrics::render(&readings)).into_response()
}
