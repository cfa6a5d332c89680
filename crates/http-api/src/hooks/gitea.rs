//! Gitea (and Forgejo) package events: `X-Gitea-Event: package`, body
//! `{"action": "created"|"deleted", "package": {"type": "container", "name", "version",
//! "owner": {"login"}, "html_url"}}`. Only a `created` container version that is a tag names an
//! image; a version that is a digest (a platform manifest) moves no tag.

use crate::hooks::{PayloadError, Sender, json_object, text, url_host};
use crate::named::{HostHint, NamedImage};

pub fn names(body: &[u8]) -> Result<Vec<NamedImage>, PayloadError> {
    let payload = json_object(Sender::Gitea, body)?;
    let Some(package) = payload.get("package") else {
        return Ok(Vec::new());
    };
    if text(&payload, &["action"]) != Some("created") || text(package, &["type"]) != Some("container") {
        return Ok(Vec::new());
    }
    let (Some(name), Some(owner), Some(version)) = (
        text(package, &["name"]),
        text(package, &["owner", "login"]),
        text(package, &["version"]),
    ) else {
        return Ok(Vec::new());
    };
    if version.starts_with("sha256:") {
        return Ok(Vec::new());
    }
    let host = text(package, &["html_url"])
        .and_then(url_host)
        .map_or(HostHint::Any, HostHint::Prefer);
    Ok(vec![NamedImage::new(host, &format!("{owner}/{name}"), Some(version))])
}

#[cfg(test)]
mod tests {
    use super::*;
    use rstest::rstest;

    fn payload(action: &str, package_type: &str, version: &str) -> String {
        serde_json::json!({
            "action": action,
            "repository": null,
            "package": {
                "id": 7,
                "owner": {"id": 1, "login": "Org"},
                "repository": null,
                "creator": {"id": 1, "login": "someone"},
                "type": package_type,
                "name": "app",
                "version": version,
                "html_url": "https://git.example.com:3000/Org/-/packages/container/app/latest",
                "created_at": "2026-01-01T00:00:00Z",
            },
            "sender": {"id": 1, "login": "someone"},
        })
        .to_string()
    }

    #[rstest]
    #[case::created_tag("created", "container", "latest", &["git.example.com:3000/org/app:latest"])]
    #[case::digest_version("created", "container", &format!("sha256:{}", "c".repeat(64)), &[])]
    #[case::deleted("deleted", "container", "latest", &[])]
    #[case::npm("created", "npm", "1.0.0", &[])]
    fn created_container_tags_name_the_image(
        #[case] action: &str,
        #[case] package_type: &str,
        #[case] version: &str,
        #[case] expected: &[&str],
    ) {
        let body = payload(action, package_type, version);
        assert_eq!(crate::hooks::shown(names(body.as_bytes())), expected);
    }

    #[test]
    fn a_body_without_a_package_names_nothing() {
        assert_eq!(names(br#"{"action":"opened","issue":{}}"#).expect("valid"), vec![]);
        assert!(names(b"not json").is_err());
    }
}
