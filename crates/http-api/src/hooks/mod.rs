//! Webhook payloads, one module per sender, each turned into the images it names. Parsing only:
//! no authentication (see `auth`), no matching against the watch set (see `named`), no HTTP.
//! Parsers are lenient about fields they do not use and strict about the shape they do: a body
//! that is not JSON, or not the sender's envelope, is an error; an event that moves no tag
//! (a pull, a delete, a blob, a push by digest) names nothing.

pub mod distribution;
pub mod dockerhub;
pub mod gitea;
pub mod github;

use serde_json::Value;

use crate::named::NamedImage;

/// Who sent a webhook: the endpoint it came in on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Sender {
    Distribution,
    Github,
    Gitea,
    Dockerhub,
}

impl Sender {
    pub const ALL: [Sender; 4] = [Sender::Distribution, Sender::Github, Sender::Gitea, Sender::Dockerhub];

    /// The endpoint's last path segment and the metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            Sender::Distribution => "distribution",
            Sender::Github => "github",
            Sender::Gitea => "gitea",
            Sender::Dockerhub => "dockerhub",
        }
    }
}

/// A body that is not the sender's payload.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("the body is not a {sender} webhook payload: {reason}")]
pub struct PayloadError {
    pub sender: &'static str,
    pub reason: String,
}

pub(crate) fn json_object(sender: Sender, body: &[u8]) -> Result<Value, PayloadError> {
    let value: Value = serde_json::from_slice(body).map_err(|e| PayloadError {
        sender: sender.as_str(),
        reason: format!("invalid JSON ({e})"),
    })?;
    if !value.is_object() {
        return Err(PayloadError {
            sender: sender.as_str(),
            reason: "expected a JSON object".into(),
        });
    }
    Ok(value)
}

pub(crate) fn text<'a>(value: &'a Value, path: &[&str]) -> Option<&'a str> {
    path.iter()
        .try_fold(value, |value, key| value.get(key))
        .and_then(Value::as_str)
        .map(str::trim)
        .filter(|text| !text.is_empty())
}

/// Keeps the first of equal names.
pub(crate) fn dedup(names: Vec<NamedImage>) -> Vec<NamedImage> {
    let mut unique: Vec<NamedImage> = Vec::with_capacity(names.len());
    for name in names {
        if !unique.contains(&name) {
            unique.push(name);
        }
    }
    unique
}

/// The host of an `https://host[:port]/...` URL, if it is a registry host.
pub(crate) fn url_host(value: &str) -> Option<registry_core::RegistryHost> {
    let url = url::Url::parse(value).ok()?;
    let host = url.host_str()?;
    let host = match url.port() {
        Some(port) => format!("{host}:{port}"),
        None => host.to_owned(),
    };
    host.parse().ok()
}

/// What a parser named, as strings, for tests to compare with a table.
#[cfg(test)]
pub(crate) fn shown(named: Result<Vec<NamedImage>, PayloadError>) -> Vec<String> {
    named
        .expect("a valid payload")
        .iter()
        .map(ToString::to_string)
        .collect()
}
