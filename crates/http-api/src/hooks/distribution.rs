//! CNCF distribution's notification envelope (`application/vnd.docker.distribution.events.v1+json`):
//! `{"events": [{"action": "push", "target": {"repository", "tag", "digest", "mediaType", ...},
//! "request": {"host", ...}}, ...]}`. Only a manifest pushed BY TAG names an image: blob pushes,
//! pushes by digest (an index's children), pulls (including our own HEADs) and deletes do not.

use crate::hooks::{PayloadError, Sender, dedup, json_object, text};
use crate::named::{HostHint, NamedImage};

/// The media type distribution sends envelopes with.
pub const ENVELOPE_MEDIA_TYPE: &str = "application/vnd.docker.distribution.events.v1+json";

pub fn names(body: &[u8]) -> Result<Vec<NamedImage>, PayloadError> {
    let envelope = json_object(Sender::Distribution, body)?;
    let events = envelope
        .get("events")
        .and_then(serde_json::Value::as_array)
        .ok_or_else(|| PayloadError {
            sender: Sender::Distribution.as_str(),
            reason: "no `events` array".into(),
        })?;
    let names = events
        .iter()
        .filter(|event| text(event, &["action"]) == Some("push"))
        .filter_map(|event| {
            let repository = text(event, &["target", "repository"])?;
            let tag = text(event, &["target", "tag"])?;
            let host = text(event, &["request", "host"])
                .and_then(|host| host.parse().ok())
                .map_or(HostHint::Any, HostHint::Prefer);
            Some(NamedImage::new(host, repository, Some(tag)).claiming(text(event, &["target", "digest"])))
        })
        .collect();
    Ok(dedup(names))
}

#[cfg(test)]
mod tests {
    use super::*;
    use rstest::rstest;

    fn event(action: &str, media_type: &str, tag: Option<&str>) -> serde_json::Value {
        let mut target = serde_json::json!({
            "mediaType": media_type,
            "digest": format!("sha256:{}", "a".repeat(64)),
            "repository": "org/app",
            "url": "http://127.0.0.1:5000/v2/org/app/manifests/sha256:aaaa",
        });
        if let Some(tag) = tag {
            target["tag"] = tag.into();
        }
        serde_json::json!({
            "id": "e1",
            "timestamp": "2026-01-01T00:00:00Z",
            "action": action,
            "target": target,
            "request": {"id": "r1", "addr": "127.0.0.1:40000", "host": "127.0.0.1:5000", "method": "PUT", "useragent": "skopeo"},
            "actor": {},
            "source": {"addr": "host:5000", "instanceID": "i"},
        })
    }

    const MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";

    #[rstest]
    #[case::manifest_push_by_tag(vec![event("push", MANIFEST, Some("latest"))], &["127.0.0.1:5000/org/app:latest"])]
    #[case::push_by_digest(vec![event("push", MANIFEST, None)], &[])]
    #[case::blob_push(vec![event("push", "application/octet-stream", None)], &[])]
    #[case::pull(vec![event("pull", MANIFEST, Some("latest"))], &[])]
    #[case::delete(vec![event("delete", MANIFEST, Some("latest"))], &[])]
    #[case::repeated_event_named_once(
        vec![event("push", MANIFEST, Some("latest")), event("pull", MANIFEST, Some("latest")), event("push", MANIFEST, Some("latest"))],
        &["127.0.0.1:5000/org/app:latest"]
    )]
    #[case::no_events(vec![], &[])]
    fn only_a_manifest_pushed_by_tag_names_an_image(#[case] events: Vec<serde_json::Value>, #[case] expected: &[&str]) {
        let body = serde_json::json!({ "events": events }).to_string();
        assert_eq!(crate::hooks::shown(names(body.as_bytes())), expected);
    }

    #[test]
    fn the_pushed_digest_is_claimed() {
        let body = serde_json::json!({ "events": [event("push", MANIFEST, Some("latest"))] }).to_string();
        let named = names(body.as_bytes()).expect("valid");
        assert_eq!(
            named[0].claim.as_ref().map(ToString::to_string),
            Some(format!("sha256:{}", "a".repeat(64)))
        );
    }

    #[rstest]
    #[case::not_json(b"events".as_slice())]
    #[case::array(b"[]".as_slice())]
    #[case::no_events(br#"{"event": []}"#.as_slice())]
    fn a_body_that_is_not_an_envelope_is_an_error(#[case] body: &[u8]) {
        let error = names(body).expect_err("invalid").to_string();
        assert!(error.contains("distribution"), "{error}");
    }
}
