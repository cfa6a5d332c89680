//! Who may call: HMAC-SHA256 body signatures (GitHub's `X-Hub-Signature-256: sha256=<hex>`,
//! Gitea's and Forgejo's bare hex) and bearer/query tokens (for senders that cannot sign:
//! distribution, Docker Hub, operators calling `POST /check`).
//!
//! Every comparison is constant-time: signatures through `Mac::verify_slice`, tokens by comparing
//! keyed digests of both sides (equal length, compared with `verify_slice`), so neither content
//! nor length leaks through timing. It never logs a secret or a presented credential.

use axum::http::HeaderMap;
use axum::http::header::AUTHORIZATION;
use hmac::{Hmac, Mac};
use registry_core::Secret;
use sha2::Sha256;

type HmacSha256 = Hmac<Sha256>;

/// HMAC-SHA256 keyed with `key`.
fn keyed(key: &[u8]) -> HmacSha256 {
    // HMAC accepts keys of any length: this cannot fail.
    HmacSha256::new_from_slice(key).unwrap_or_else(|_| unreachable!("HMAC takes any key"))
}

/// Why a request was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error("no signature header")]
    MissingSignature,
    #[error("the signature is not hex (expected `sha256=<64 hex>` or `<64 hex>`)")]
    MalformedSignature,
    #[error("the signature does not match the body")]
    WrongSignature,
    #[error("no token: expected `Authorization: Bearer <token>` or `?token=<token>`")]
    MissingToken,
    #[error("no token: expected `Authorization: Bearer <token>`")]
    MissingBearer,
    #[error("wrong token")]
    WrongToken,
}

/// The MAC a signature header carries (hex, optionally `sha256=`-prefixed): what can be checked
/// before the body is read.
pub fn signature_mac(signature: Option<&str>) -> Result<Vec<u8>, Refusal> {
    let signature = signature
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .ok_or(Refusal::MissingSignature)?;
    let hex_part = signature.strip_prefix("sha256=").unwrap_or(signature);
    hex::decode(hex_part).map_err(|_| Refusal::MalformedSignature)
}

/// Checks `signature` (hex, optionally `sha256=`-prefixed) against HMAC-SHA256(`secret`, `body`).
pub fn verify_signature(secret: &Secret, body: &[u8], signature: Option<&str>) -> Result<(), Refusal> {
    let expected = signature_mac(signature)?;
    let mut mac = keyed(secret.expose().as_bytes());
    mac.update(body);
    mac.verify_slice(&expected).map_err(|_| Refusal::WrongSignature)
}

/// The hex HMAC-SHA256 of `body` under `secret`, as senders compute it (for tests and tools).
pub fn sign(secret: &str, body: &[u8]) -> String {
    let mut mac = keyed(secret.as_bytes());
    mac.update(body);
    hex::encode(mac.finalize().into_bytes())
}

/// The token a request presents: `Authorization: Bearer <token>`, else `?token=<token>`.
pub fn presented_token(headers: &HeaderMap, query: Option<&str>) -> Option<String> {
    let bearer = headers
        .get(AUTHORIZATION)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| {
            let (scheme, token) = value.trim().split_once(' ')?;
            scheme.eq_ignore_ascii_case("bearer").then(|| token.trim().to_owned())
        })
        .filter(|token| !token.is_empty());
    bearer.or_else(|| {
        url::form_urlencoded::parse(query.unwrap_or("").as_bytes())
            .find(|(key, _)| key == "token")
            .map(|(_, value)| value.into_owned())
            .filter(|token| !token.is_empty())
    })
}

/// Checks a presented token against the configured one in constant time.
pub fn verify_token(expected: &Secret, presented: Option<&str>) -> Result<(), Refusal> {
    let presented = presented.ok_or(Refusal::MissingToken)?;
    // Digest both under a fixed key, then compare the equal-length digests in constant time.
    let key = b"imagewatch token comparison";
    let digest = |value: &str| {
        let mut mac = keyed(key);
        mac.update(value.as_bytes());
        mac
    };
    let expected = digest(expected.expose()).finalize().into_bytes();
    digest(presented)
        .verify_slice(&expected)
        .map_err(|_| Refusal::WrongToken)
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;
    use rstest::rstest;

    const BODY: &[u8] = br#"{"action":"published"}"#;

    #[rstest]
    #[case::github_form(Some(format!("sha256={}", sign("s3cret", BODY))), Ok(()))]
    #[case::gitea_bare_hex(Some(sign("s3cret", BODY)), Ok(()))]
    #[case::uppercase_hex(Some(sign("s3cret", BODY).to_uppercase()), Ok(()))]
    #[case::other_secret(Some(format!("sha256={}", sign("other", BODY))), Err(Refusal::WrongSignature))]
    #[case::truncated(Some(sign("s3cret", BODY)[..40].to_owned()), Err(Refusal::WrongSignature))]
    #[case::not_hex(Some("sha256=zz".to_owned()), Err(Refusal::MalformedSignature))]
    #[case::sha1_form(Some(format!("sha1={}", "a".repeat(40))), Err(Refusal::MalformedSignature))]
    #[case::missing(None, Err(Refusal::MissingSignature))]
    #[case::empty(Some(String::new()), Err(Refusal::MissingSignature))]
    fn signature_is_checked_over_the_exact_body(#[case] header: Option<String>, #[case] expected: Result<(), Refusal>) {
        let secret = Secret::new("s3cret");
        assert_eq!(verify_signature(&secret, BODY, header.as_deref()), expected);
    }

    /// Every other case signs with [`sign`], which shares the MAC with the check: this one pins
    /// both to HMAC-SHA256 itself (RFC 4231 test case 2), in the form the webhook refresher sends.
    #[test]
    fn signature_check_matches_a_known_hmac_vector() {
        let vector = "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843";
        let secret = Secret::new("Jefe");
        let body = b"what do ya want for nothing?";
        assert_eq!(sign("Jefe", body), vector);
        assert_eq!(
            verify_signature(&secret, body, Some(&format!("sha256={vector}"))),
            Ok(())
        );
    }

    #[test]
    fn a_changed_body_fails_the_signature_of_the_original() {
        let secret = Secret::new("s3cret");
        let signature = format!("sha256={}", sign("s3cret", BODY));
        let tampered = br#"{"action":"published" }"#;
        assert_eq!(
            verify_signature(&secret, tampered, Some(&signature)),
            Err(Refusal::WrongSignature)
        );
    }

    #[rstest]
    #[case::bearer(Some("Bearer tok"), None, Some("tok"))]
    #[case::bearer_any_case(Some("bearer  tok "), None, Some("tok"))]
    #[case::query(None, Some("token=t%2Bk&x=1"), Some("t+k"))]
    #[case::bearer_wins(Some("Bearer a"), Some("token=b"), Some("a"))]
    #[case::basic_is_not_a_token(Some("Basic dXNlcjpwdw=="), None, None)]
    #[case::empty_query_token(None, Some("token="), None)]
    #[case::nothing(None, None, None)]
    fn token_comes_from_bearer_or_query(
        #[case] authorization: Option<&str>,
        #[case] query: Option<&str>,
        #[case] expected: Option<&str>,
    ) {
        let mut headers = HeaderMap::new();
        if let Some(value) = authorization {
            headers.insert(AUTHORIZATION, HeaderValue::from_str(value).expect("header"));
        }
        assert_eq!(presented_token(&headers, query).as_deref(), expected);
    }

    #[rstest]
    #[case::same(Some("tok-123"), Ok(()))]
    #[case::prefix(Some("tok-12"), Err(Refusal::WrongToken))]
    #[case::longer(Some("tok-1234"), Err(Refusal::WrongToken))]
    #[case::missing(None, Err(Refusal::MissingToken))]
    fn token_must_match_exactly(#[case] presented: Option<&str>, #[case] expected: Result<(), Refusal>) {
        assert_eq!(verify_token(&Secret::new("tok-123"), presented), expected);
    }
}
