//! What a signature vouches for: the simple-signing payload of cosign's legacy `.sig` layout
//! (`critical.image.docker-manifest-digest`, `critical.identity.docker-reference`) and the
//! in-toto statement inside a sigstore bundle's DSSE envelope (`subject[].digest.sha256`).
//! Owns the binding of a verified signature to one digest of one repository; it checks no
//! cryptography.

use base64::Engine as _;
use registry_core::{Digest, ImageReference};
use serde::Deserialize;

use crate::verdict::Failure;

/// The `critical.type` cosign writes.
pub const SIMPLE_SIGNING_TYPE: &str = "cosign container image signature";

#[derive(Deserialize)]
struct SimpleSigning {
    critical: Critical,
}

#[derive(Deserialize)]
struct Critical {
    identity: Identity,
    image: Image,
    #[serde(rename = "type")]
    kind: String,
}

#[derive(Deserialize)]
struct Identity {
    #[serde(rename = "docker-reference")]
    docker_reference: String,
}

#[derive(Deserialize)]
struct Image {
    #[serde(rename = "docker-manifest-digest")]
    docker_manifest_digest: String,
}

/// Checks a (verified) simple-signing payload names `digest` of `image`'s repository.
pub fn check_simple_signing(payload: &[u8], image: &ImageReference, digest: &Digest) -> Result<(), Failure> {
    let payload: SimpleSigning = serde_json::from_slice(payload)
        .map_err(|e| Failure::Malformed(format!("the simple-signing payload does not parse: {e}")))?;
    let critical = payload.critical;
    if !critical.kind.eq_ignore_ascii_case(SIMPLE_SIGNING_TYPE) {
        return Err(Failure::Malformed(format!(
            "the payload's critical.type is {:?}, expected {SIMPLE_SIGNING_TYPE:?}",
            escape(&critical.kind)
        )));
    }
    let signed = critical.image.docker_manifest_digest;
    if signed != digest.as_str() {
        return Err(Failure::OtherDigest(format!(
            "the signature is over {}, not {}",
            escape(&signed),
            digest.short()
        )));
    }
    if !names_repository(&critical.identity.docker_reference, image) {
        return Err(Failure::WrongRepository(format!(
            "the signature names {}, not {}/{}",
            escape(&critical.identity.docker_reference),
            image.host(),
            image.repository()
        )));
    }
    Ok(())
}

#[derive(Deserialize)]
struct Statement {
    #[serde(default)]
    subject: Vec<Subject>,
}

#[derive(Deserialize)]
struct Subject {
    #[serde(default)]
    name: String,
    #[serde(default)]
    digest: std::collections::BTreeMap<String, String>,
}

/// Checks a (verified) in-toto statement has a subject with `digest`; a subject name that is a
/// registry reference must name `image`'s repository (cosign may leave it empty: the referrer's
/// place in the repository and its `subject` field bind it there).
pub fn check_statement(payload: &[u8], image: &ImageReference, digest: &Digest) -> Result<(), Failure> {
    let statement: Statement = serde_json::from_slice(payload)
        .map_err(|e| Failure::Malformed(format!("the in-toto statement does not parse: {e}")))?;
    let matching = statement.subject.iter().find(|subject| {
        subject
            .digest
            .get(digest.algorithm())
            .is_some_and(|hex| hex.eq_ignore_ascii_case(digest.encoded()))
    });
    let Some(subject) = matching else {
        let named: Vec<String> = statement
            .subject
            .iter()
            .filter_map(|subject| subject.digest.get("sha256"))
            .take(3)
            .map(|hex| format!("sha256:{}", escape(&hex.chars().take(12).collect::<String>())))
            .collect();
        return Err(Failure::OtherDigest(format!(
            "the statement's subjects are [{}], not {}",
            named.join(", "),
            digest.short()
        )));
    };
    if subject.name.contains('/') && !names_repository(&subject.name, image) {
        return Err(Failure::WrongRepository(format!(
            "the statement names {}, not {}/{}",
            escape(&subject.name),
            image.host(),
            image.repository()
        )));
    }
    Ok(())
}

/// Whether `named` (a reference as cosign writes it: `host/path`, maybe with a tag or digest)
/// is `image`'s repository. Docker Hub's aliases count as one host.
fn names_repository(named: &str, image: &ImageReference) -> bool {
    let Ok(named) = named.trim().parse::<ImageReference>() else {
        return false;
    };
    let same_host = named.host() == image.host() || (named.host().is_docker_hub() && image.host().is_docker_hub());
    same_host && named.repository() == image.repository()
}

/// Outside text, made safe for one log line.
pub(crate) fn escape(text: &str) -> String {
    let mut escaped: String = text.chars().take(200).flat_map(char::escape_debug).collect();
    if text.chars().count() > 200 {
        escaped.push('…');
    }
    escaped
}

/// Standard base64 with or without padding (cosign writes padded).
pub(crate) fn decode_base64(text: &str, what: &str) -> Result<Vec<u8>, Failure> {
    let text = text.trim();
    base64::engine::general_purpose::STANDARD
        .decode(text)
        .or_else(|_| base64::engine::general_purpose::STANDARD_NO_PAD.decode(text))
        .map_err(|e| Failure::Malformed(format!("{what} is not base64: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use rstest::rstest;

    fn digest(c: char) -> Digest {
        format!("sha256:{}", c.to_string().repeat(64)).parse().expect("valid")
    }

    fn payload(reference: &str, digest: &str) -> Vec<u8> {
        serde_json::to_vec(&serde_json::json!({
            "critical": {
                "identity": {"docker-reference": reference},
                "image": {"docker-manifest-digest": digest},
                "type": SIMPLE_SIGNING_TYPE,
            },
            "optional": null,
        }))
        .expect("json")
    }

    #[rstest]
    #[case::same_repository("127.0.0.1:5000/team/app", 'a', "ok")]
    #[case::with_a_tag("127.0.0.1:5000/team/app:latest", 'a', "ok")]
    #[case::other_digest("127.0.0.1:5000/team/app", 'b', "other_digest")]
    #[case::other_repository("127.0.0.1:5000/team/other", 'a', "wrong_repository")]
    #[case::other_host("registry.example.com/team/app", 'a', "wrong_repository")]
    fn a_payload_binds_one_digest_of_one_repository(#[case] named: &str, #[case] signed: char, #[case] expected: &str) {
        let image: ImageReference = "127.0.0.1:5000/team/app:latest".parse().expect("valid");
        let outcome = check_simple_signing(&payload(named, digest(signed).as_str()), &image, &digest('a'));
        assert_eq!(outcome.map_or_else(|failure| failure.kind(), |()| "ok"), expected);
    }

    #[test]
    fn docker_hub_aliases_name_one_repository() {
        let image: ImageReference = "docker.io/library/busybox:latest".parse().expect("valid");
        let signed = payload("index.docker.io/library/busybox", digest('a').as_str());
        assert_eq!(check_simple_signing(&signed, &image, &digest('a')), Ok(()));
    }

    #[rstest]
    #[case::not_json(b"{".as_slice())]
    #[case::no_critical(br#"{"optional":{}}"#.as_slice())]
    #[case::wrong_type(br#"{"critical":{"identity":{"docker-reference":"a/b"},"image":{"docker-manifest-digest":"x"},"type":"other"}}"#.as_slice())]
    fn a_malformed_payload_is_malformed(#[case] bytes: &[u8]) {
        let image: ImageReference = "127.0.0.1:5000/team/app:latest".parse().expect("valid");
        let failure = check_simple_signing(bytes, &image, &digest('a')).expect_err("malformed");
        assert_eq!(failure.kind(), "malformed");
    }
}
