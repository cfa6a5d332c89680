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

/// Keeps the first of equal names, in order; linear in the number of names (a signed body may
/// carry a hundred thousand tags).
pub(crate) fn dedup(names: Vec<NamedImage>) -> Vec<NamedImage> {
    let mut seen = std::collections::HashSet::with_capacity(names.len());
    names.into_iter().filter(|name| seen.insert(name.clone())).collect()
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

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    type Parser = fn(&[u8]) -> Result<Vec<NamedImage>, PayloadError>;

    const PARSERS: [(&str, Parser); 4] = [
        ("distribution", distribution::names),
        ("dockerhub", dockerhub::names),
        ("github", github::names),
        ("gitea", gitea::names),
    ];

    /// JSON shaped like the senders' payloads, with arbitrary strings where they put names.
    fn payload() -> impl Strategy<Value = Vec<u8>> {
        let text = "[a-zA-Z0-9./:@%_-]{0,40}";
        (text, text, text, text, proptest::collection::vec(text, 0..8)).prop_map(|(name, owner, tag, url, tags)| {
            serde_json::json!({
                "action": "published",
                "events": [{"action": "push", "target": {"repository": name, "tag": tag, "digest": url}, "request": {"host": url}}],
                "repository": {"repo_name": format!("{owner}/{name}"), "namespace": owner, "name": name},
                "push_data": {"tag": tag},
                "package": {
                    "name": name, "namespace": owner, "package_type": "container", "type": "container",
                    "owner": {"login": owner},
                    "version": tag,
                    "html_url": url,
                    "package_version": {"container_metadata": {"tag": {"name": tag}}, "metadata": {"container": {"tags": tags}}},
                    "registry": {"url": url},
                },
            })
            .to_string()
            .into_bytes()
        })
    }

    proptest! {
        /// Every parser of a webhook body answers names or an error for any bytes: no panic.
        #[test]
        fn any_body_parses_or_is_refused(body in proptest::collection::vec(any::<u8>(), 0..512)) {
            for (_, parse) in PARSERS {
                let _ = parse(&body);
            }
        }

        /// Payload-shaped bodies with arbitrary names: no panic, and no name twice.
        #[test]
        fn payload_shaped_bodies_name_each_image_once(body in payload()) {
            for (sender, parse) in PARSERS {
                if let Ok(names) = parse(&body) {
                    let unique: std::collections::HashSet<_> = names.iter().collect();
                    prop_assert_eq!(unique.len(), names.len(), "{} named one image twice", sender);
                }
            }
        }
    }

    /// The reproducer: a 1 MiB signed GitHub body with 127,000 tags took 56 s to de-duplicate
    /// pairwise. Not a speed measurement (that is `cargo xtask bench`'s job): a bound two orders
    /// of magnitude above a linear parse, which only a quadratic one misses.
    #[test]
    fn a_body_with_a_hundred_thousand_tags_parses_in_linear_time() {
        let tags: Vec<String> = (0..127_000).map(|n| format!("t{n}")).collect();
        let body = serde_json::json!({
            "action": "published",
            "package": {
                "name": "app", "package_type": "CONTAINER", "owner": {"login": "org"},
                "package_version": {"metadata": {"container": {"tags": tags}}},
                "registry": {"url": "https://ghcr.io/org"},
            },
        })
        .to_string();
        assert!(body.len() <= 2 * 1024 * 1024);
        let started = std::time::Instant::now();
        let names = github::names(body.as_bytes()).expect("valid");
        assert_eq!(names.len(), 127_000);
        assert!(
            started.elapsed() < std::time::Duration::from_secs(10),
            "{:?}",
            started.elapsed()
        );
    }
}
