//! GitHub `package` (and legacy `registry_package`) events for container packages: the
//! `X-GitHub-Event` header says which, the body carries `package.name`, `package.owner.login`
//! (or `namespace`), `package.package_version.container_metadata.tag.name` and the registry URL.
//! Only `published` and `updated` name an image; other actions and other ecosystems name nothing.
//! A version without a tag (a platform manifest of a multi-arch push) names every watched tag of
//! the repository: a spare check is cheaper than a missed move.

use serde_json::Value;

use crate::hooks::{PayloadError, Sender, dedup, json_object, text, url_host};
use crate::named::{HostHint, NamedImage};

/// What GitHub's `X-GitHub-Event` header announces.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GithubEvent {
    /// The hook was just created: answer, check nothing.
    Ping,
    /// A package event: look at the body.
    Package,
    /// Anything else: accept and ignore.
    Other,
}

impl GithubEvent {
    pub fn from_header(value: Option<&str>) -> GithubEvent {
        match value.map(str::trim) {
            Some("ping") => GithubEvent::Ping,
            Some("package" | "registry_package") => GithubEvent::Package,
            // Without the header, the body decides.
            None => GithubEvent::Package,
            Some(_) => GithubEvent::Other,
        }
    }
}

pub fn names(body: &[u8]) -> Result<Vec<NamedImage>, PayloadError> {
    let payload = json_object(Sender::Github, body)?;
    let Some(package) = payload.get("package").or_else(|| payload.get("registry_package")) else {
        return Ok(Vec::new());
    };
    if !matches!(text(&payload, &["action"]), Some("published" | "updated")) {
        return Ok(Vec::new());
    }
    let ecosystem = text(package, &["package_type"]).or_else(|| text(package, &["ecosystem"]));
    if !ecosystem.is_some_and(|e| e.eq_ignore_ascii_case("container") || e.eq_ignore_ascii_case("docker")) {
        return Ok(Vec::new());
    }
    let (Some(name), Some(owner)) = (
        text(package, &["name"]),
        text(package, &["owner", "login"]).or_else(|| text(package, &["namespace"])),
    ) else {
        return Ok(Vec::new());
    };
    let name = name.replace("%2F", "/").replace("%2f", "/");
    let host = text(package, &["registry", "url"])
        .and_then(url_host)
        .or_else(|| "ghcr.io".parse().ok())
        .map_or(HostHint::Any, HostHint::Only);
    let version = package.get("package_version");
    let tags = tags(version);
    // The version's manifest digest: the tag's, else the version name (a digest for containers).
    let claim = version.and_then(|v| {
        text(v, &["container_metadata", "tag", "digest"])
            .or_else(|| text(v, &["version"]).filter(|n| n.starts_with("sha256:")))
            .or_else(|| text(v, &["name"]).filter(|n| n.starts_with("sha256:")))
    });
    let repository = format!("{owner}/{name}");
    let names = if tags.is_empty() {
        vec![NamedImage::new(host, &repository, None)]
    } else {
        tags.iter()
            .map(|tag| NamedImage::new(host.clone(), &repository, Some(tag)).claiming(claim))
            .collect()
    };
    Ok(dedup(names))
}

/// The version's tags: `container_metadata.tag.name`, or the REST shape
/// `metadata.container.tags`.
fn tags(version: Option<&Value>) -> Vec<String> {
    let Some(version) = version else {
        return Vec::new();
    };
    let mut tags: Vec<String> = Vec::new();
    if let Some(tag) = text(version, &["container_metadata", "tag", "name"]) {
        tags.push(tag.to_owned());
    }
    if let Some(list) = version
        .get("metadata")
        .and_then(|m| m.get("container"))
        .and_then(|c| c.get("tags"))
        .and_then(Value::as_array)
    {
        tags.extend(list.iter().filter_map(Value::as_str).map(str::to_owned));
    }
    tags.retain(|tag| !tag.trim().is_empty());
    tags
}

#[cfg(test)]
mod tests {
    use super::*;
    use rstest::rstest;

    fn payload(root: &str, action: &str, package_type: &str, tag: &str) -> String {
        serde_json::json!({
            "action": action,
            root: {
                "id": 1,
                "name": "app",
                "namespace": "Org",
                "package_type": package_type,
                "owner": {"login": "Org", "type": "Organization"},
                "package_version": {
                    "id": 2,
                    "version": format!("sha256:{}", "b".repeat(64)),
                    "container_metadata": {"tag": {"name": tag, "digest": format!("sha256:{}", "b".repeat(64))}},
                },
                "registry": {"name": "GitHub CONTAINER registry", "type": "docker", "url": "https://ghcr.io/org", "vendor": "GitHub Inc"},
            },
            "sender": {"login": "someone"},
        })
        .to_string()
    }

    #[rstest]
    #[case::published("package", "published", "CONTAINER", "latest", &["ghcr.io/org/app:latest"])]
    #[case::updated("package", "updated", "container", "v2", &["ghcr.io/org/app:v2"])]
    #[case::legacy_registry_package("registry_package", "published", "docker", "latest", &["ghcr.io/org/app:latest"])]
    #[case::untagged_version_names_every_tag("package", "published", "CONTAINER", "", &["ghcr.io/org/app:*"])]
    #[case::npm_package("package", "published", "npm", "latest", &[])]
    #[case::deleted("package", "deleted", "CONTAINER", "latest", &[])]
    fn container_package_events_name_the_image(
        #[case] root: &str,
        #[case] action: &str,
        #[case] package_type: &str,
        #[case] tag: &str,
        #[case] expected: &[&str],
    ) {
        let body = payload(root, action, package_type, tag);
        assert_eq!(crate::hooks::shown(names(body.as_bytes())), expected);
    }

    #[test]
    fn the_tagged_digest_is_claimed() {
        let named = names(payload("package", "published", "CONTAINER", "latest").as_bytes()).expect("valid");
        assert_eq!(
            named[0].claim.as_ref().map(ToString::to_string),
            Some(format!("sha256:{}", "b".repeat(64)))
        );
    }

    #[rstest]
    #[case(Some("ping"), GithubEvent::Ping)]
    #[case(Some("package"), GithubEvent::Package)]
    #[case(Some("registry_package"), GithubEvent::Package)]
    #[case(Some("push"), GithubEvent::Other)]
    #[case(None, GithubEvent::Package)]
    fn event_header_decides_what_the_body_is(#[case] header: Option<&str>, #[case] expected: GithubEvent) {
        assert_eq!(GithubEvent::from_header(header), expected);
    }
}
