//! The sigstore bundle (`application/vnd.dev.sigstore.bundle.v0.3+json`, also v0.1/v0.2) as
//! cosign 3 attaches it to an image as an OCI referrer: its DSSE envelope is verified against a
//! key (signature over the DSSE pre-authentication encoding) and its in-toto statement must
//! name the digest. Transparency-log entries and certificates in the bundle are not checked
//! (key-based verification; see the README's Trust section).

use registry_core::{Digest, ImageReference};
use serde::Deserialize;

use crate::key::PublicKey;
use crate::payload::{check_statement, decode_base64, escape};
use crate::verdict::Failure;

/// The artifact type (and layer media type) of a sigstore bundle referrer, any version.
pub const BUNDLE_MEDIA_TYPE_PREFIX: &str = "application/vnd.dev.sigstore.bundle";

/// The DSSE payload type of an in-toto statement.
pub const IN_TOTO_PAYLOAD_TYPE: &str = "application/vnd.in-toto+json";

/// Signatures read from one envelope.
const MAX_SIGNATURES: usize = 8;

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Bundle {
    media_type: String,
    dsse_envelope: Option<Envelope>,
    message_signature: Option<serde_json::Value>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Envelope {
    payload: String,
    payload_type: String,
    signatures: Vec<EnvelopeSignature>,
}

#[derive(Deserialize)]
struct EnvelopeSignature {
    sig: String,
}

/// DSSE's pre-authentication encoding: what an envelope's signature is over.
pub fn pae(payload_type: &str, payload: &[u8]) -> Vec<u8> {
    let mut encoded = format!("DSSEv1 {} {payload_type} {} ", payload_type.len(), payload.len()).into_bytes();
    encoded.extend_from_slice(payload);
    encoded
}

/// Verifies a bundle's envelope with one of `keys` and checks it names `digest` of `image`;
/// answers the key that verified.
pub fn verify_bundle<'k>(
    bytes: &[u8],
    keys: &'k [PublicKey],
    image: &ImageReference,
    digest: &Digest,
) -> Result<&'k PublicKey, Failure> {
    let bundle: Bundle = serde_json::from_slice(bytes)
        .map_err(|e| Failure::Malformed(format!("the sigstore bundle does not parse: {e}")))?;
    if !bundle.media_type.starts_with(BUNDLE_MEDIA_TYPE_PREFIX) {
        return Err(Failure::Malformed(format!(
            "the bundle's mediaType is {:?}, expected {BUNDLE_MEDIA_TYPE_PREFIX}.v0.3+json",
            escape(&bundle.media_type)
        )));
    }
    let Some(envelope) = bundle.dsse_envelope else {
        return Err(Failure::Malformed(if bundle.message_signature.is_some() {
            "the bundle carries a messageSignature, which cannot bind an image digest; expected a DSSE envelope (cosign sign --new-bundle-format)".to_owned()
        } else {
            "the bundle carries no DSSE envelope".to_owned()
        }));
    };
    if envelope.payload_type != IN_TOTO_PAYLOAD_TYPE {
        return Err(Failure::Malformed(format!(
            "the envelope's payloadType is {:?}, expected {IN_TOTO_PAYLOAD_TYPE:?}",
            escape(&envelope.payload_type)
        )));
    }
    let payload = decode_base64(&envelope.payload, "the envelope's payload")?;
    let signed = pae(&envelope.payload_type, &payload);
    let mut verified = None;
    for signature in envelope.signatures.iter().take(MAX_SIGNATURES) {
        let signature = decode_base64(&signature.sig, "an envelope signature")?;
        if let Some(key) = keys.iter().find(|key| key.verifies(&signed, &signature)) {
            verified = Some(key);
            break;
        }
    }
    let Some(key) = verified else {
        return Err(Failure::WrongKey(format!(
            "the bundle's {} signature(s) verify with none of the {} accepted key(s)",
            envelope.signatures.len(),
            keys.len()
        )));
    };
    check_statement(&payload, image, digest)?;
    Ok(key)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pae_is_dsse_v1() {
        assert_eq!(pae("t", b"ab"), b"DSSEv1 1 t 2 ab".to_vec());
    }

    #[test]
    fn a_bundle_that_does_not_parse_is_malformed() {
        let image: ImageReference = "127.0.0.1:5000/a/b:latest".parse().expect("valid");
        let digest = Digest::sha256_of(b"x");
        for bytes in [
            b"{".as_slice(),
            br#"{"mediaType":"text/plain"}"#,
            br#"{"mediaType":"application/vnd.dev.sigstore.bundle.v0.3+json","messageSignature":{}}"#,
        ] {
            let failure = verify_bundle(bytes, &[], &image, &digest).expect_err("malformed");
            assert_eq!(failure.kind(), "malformed", "{failure}");
        }
    }
}
