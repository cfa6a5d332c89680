//! A token endpoint's answer: which field holds the token, how long it lives, and — when the
//! token is a JWT with an `access` claim — what it really grants. Parsing only; no I/O.

use std::time::{Duration, SystemTime};

use base64::Engine as _;
use registry_core::{AuthError, Scope};

/// `expires_in` when the answer has none, and the floor for any answer (distribution's spec).
pub const DEFAULT_EXPIRES_IN: u64 = 60;

/// The ceiling for any answer: a day. A token endpoint is outside input; a lifetime of `1e19`
/// seconds must not overflow a clock, and a day-old token is asked for again anyway.
pub const MAX_EXPIRES_IN: u64 = 24 * 3600;

/// A parsed token answer. No `Debug` that shows the token.
#[derive(Clone, PartialEq, Eq)]
pub struct TokenAnswer {
    pub token: String,
    pub expires_in: u64,
    pub issued_at: Option<SystemTime>,
}

impl std::fmt::Debug for TokenAnswer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenAnswer")
            .field("token", &"***")
            .field("expires_in", &self.expires_in)
            .field("issued_at", &self.issued_at)
            .finish()
    }
}

#[derive(serde::Deserialize)]
struct Body {
    #[serde(default)]
    token: Option<String>,
    #[serde(default)]
    access_token: Option<String>,
    #[serde(default)]
    expires_in: Option<serde_json::Value>,
    #[serde(default)]
    issued_at: Option<String>,
}

/// Parses a 200 answer of `realm`. Errors name the realm and what was wrong, never the body
/// (it may hold a token).
pub fn parse_answer(realm: &str, body: &[u8]) -> Result<TokenAnswer, AuthError> {
    let bad = |reason: String| AuthError::BadTokenResponse {
        realm: realm.to_owned(),
        reason,
    };
    let parsed: Body = serde_json::from_slice(body).map_err(|e| {
        bad(format!(
            "not a JSON object with `token` or `access_token` ({:?} error at line {} column {})",
            e.classify(),
            e.line(),
            e.column()
        ))
    })?;
    let token = parsed
        .token
        .filter(|t| !t.is_empty())
        .or(parsed.access_token.filter(|t| !t.is_empty()))
        .ok_or_else(|| bad("no `token` or `access_token` in the answer".into()))?;
    if !token.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(bad("the token holds characters a header cannot carry".into()));
    }
    let expires_in = match parsed.expires_in {
        None | Some(serde_json::Value::Null) => DEFAULT_EXPIRES_IN,
        Some(serde_json::Value::Number(n)) => n
            .as_u64()
            .or_else(|| n.as_f64().filter(|f| *f >= 0.0).map(|f| f as u64))
            .unwrap_or(DEFAULT_EXPIRES_IN),
        Some(_) => return Err(bad("`expires_in` is not a number".into())),
    }
    .clamp(DEFAULT_EXPIRES_IN, MAX_EXPIRES_IN);
    let issued_at = parsed.issued_at.as_deref().and_then(|value| {
        humantime::parse_rfc3339_weak(value.trim())
            .map_err(|e| tracing::debug!(realm, error = %e, "unparsable issued_at; counting from now"))
            .ok()
    });
    Ok(TokenAnswer {
        token,
        expires_in,
        issued_at,
    })
}

/// How long before a token's end it is no longer handed out: a tenth of its life, 5-30 s.
pub fn safety_margin(lifetime: Duration) -> Duration {
    (lifetime / 10).clamp(Duration::from_secs(5), Duration::from_secs(30))
}

/// How long from `now` the token may be used: its lifetime counted from `issued_at` (from now
/// when absent, or when the clocks disagree so much that it would be over or not begun),
/// minus the safety margin.
pub fn usable_for(answer: &TokenAnswer, now: SystemTime) -> Duration {
    let lifetime = Duration::from_secs(answer.expires_in.min(MAX_EXPIRES_IN));
    let remaining = match answer.issued_at.and_then(|issued| issued.checked_add(lifetime)) {
        Some(ends) => match ends.duration_since(now) {
            Ok(remaining) if remaining <= lifetime && !remaining.is_zero() => remaining,
            _ => lifetime,
        },
        None => lifetime,
    };
    remaining.saturating_sub(safety_margin(lifetime))
}

/// What a JWT's `access` claim grants, when the token is a JWT that has one. The signature is
/// not checked: this only decides whether to ask again, the registry still decides access.
pub fn jwt_grants(token: &str) -> Option<Vec<Scope>> {
    let mut parts = token.split('.');
    let (_, payload, _) = (parts.next()?, parts.next()?, parts.next()?);
    if parts.next().is_some() {
        return None;
    }
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload.trim_end_matches('='))
        .ok()?;
    let claims: serde_json::Value = serde_json::from_slice(&bytes).ok()?;
    let access = claims.get("access")?.as_array()?;
    Some(
        access
            .iter()
            .filter_map(|entry| {
                let kind = entry.get("type")?.as_str()?;
                let name = entry.get("name")?.as_str()?;
                let actions: Vec<&str> = entry
                    .get("actions")?
                    .as_array()?
                    .iter()
                    .filter_map(|a| a.as_str())
                    .collect();
                if actions.is_empty() {
                    return None;
                }
                format!("{kind}:{name}:{}", actions.join(",")).parse().ok()
            })
            .collect(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use rstest::rstest;

    const REALM: &str = "https://auth.example.com/token";

    #[rstest]
    #[case::token_only(r#"{"token":"abc"}"#, "abc", 60)]
    #[case::access_token_only(r#"{"access_token":"abc","expires_in":300}"#, "abc", 300)]
    #[case::both_prefers_token(r#"{"token":"abc","access_token":"abc","expires_in":300}"#, "abc", 300)]
    #[case::empty_token_falls_to_access_token(r#"{"token":"","access_token":"xyz"}"#, "xyz", 60)]
    #[case::short_expiry_is_raised_to_60(r#"{"token":"abc","expires_in":10}"#, "abc", 60)]
    #[case::null_expiry(r#"{"token":"abc","expires_in":null}"#, "abc", 60)]
    #[case::float_expiry(r#"{"token":"abc","expires_in":120.5}"#, "abc", 120)]
    #[case::huge_expiry_is_capped_at_a_day(
        r#"{"token":"a","expires_in":1e19,"issued_at":"2024-05-01T10:00:00Z"}"#,
        "a",
        MAX_EXPIRES_IN
    )]
    #[case::max_integer_expiry(r#"{"token":"a","expires_in":18446744073709551615}"#, "a", MAX_EXPIRES_IN)]
    #[case::unknown_fields_ignored(r#"{"token":"abc","scope":"x","extra":{}}"#, "abc", 60)]
    fn token_answers_parse(#[case] body: &str, #[case] token: &str, #[case] expires_in: u64) {
        let answer = parse_answer(REALM, body.as_bytes()).expect("parses");
        assert_eq!(answer.token, token);
        assert_eq!(answer.expires_in, expires_in);
    }

    #[rstest]
    #[case::not_json("<html>oops</html>", "not a JSON object")]
    #[case::no_token(r#"{"expires_in":60}"#, "no `token`")]
    #[case::empty_tokens(r#"{"token":"","access_token":""}"#, "no `token`")]
    #[case::token_not_string(r#"{"token":42}"#, "not a JSON object")]
    #[case::bad_expiry(r#"{"token":"abc","expires_in":"soon"}"#, "expires_in")]
    #[case::token_with_newline(r#"{"token":"a\nb"}"#, "header")]
    fn malformed_token_answers_name_the_realm(#[case] body: &str, #[case] expected: &str) {
        let error = parse_answer(REALM, body.as_bytes()).expect_err("malformed");
        assert!(matches!(error, AuthError::BadTokenResponse { .. }), "{error:?}");
        let message = error.to_string();
        assert!(message.contains(REALM) && message.contains(expected), "{message}");
    }

    #[test]
    fn malformed_answer_error_never_quotes_the_body() {
        let error = parse_answer(REALM, br#"{"token": ["s3cr3t-token-value"]}"#).expect_err("malformed");
        assert!(!error.to_string().contains("s3cr3t"), "{error}");
    }

    #[test]
    fn issued_at_is_read_as_rfc3339() {
        let answer = parse_answer(
            REALM,
            br#"{"token":"abc","expires_in":300,"issued_at":"2024-05-01T10:00:00.123456Z"}"#,
        )
        .expect("parses");
        let expected = humantime::parse_rfc3339("2024-05-01T10:00:00.123456Z").expect("valid");
        assert_eq!(answer.issued_at, Some(expected));
    }

    fn answer(expires_in: u64, issued_ago: Option<i64>, now: SystemTime) -> TokenAnswer {
        TokenAnswer {
            token: "t".into(),
            expires_in,
            issued_at: issued_ago.map(|ago| {
                if ago >= 0 {
                    now - Duration::from_secs(ago as u64)
                } else {
                    now + Duration::from_secs((-ago) as u64)
                }
            }),
        }
    }

    #[rstest]
    #[case::default_60_without_issued_at(60, None, 54)]
    #[case::docker_hub_300(300, None, 270)]
    #[case::long_lived_margin_capped(86_400, None, 86_370)]
    #[case::issued_100s_ago(300, Some(100), 170)]
    #[case::issued_in_the_future_counts_from_now(300, Some(-50), 270)]
    #[case::issued_long_ago_counts_from_now(300, Some(10_000), 270)]
    fn lifetime_counts_from_issued_at_minus_a_margin(
        #[case] expires_in: u64,
        #[case] issued_ago: Option<i64>,
        #[case] usable_secs: u64,
    ) {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        assert_eq!(
            usable_for(&answer(expires_in, issued_ago, now), now),
            Duration::from_secs(usable_secs)
        );
    }

    /// The reproducer: a lifetime no clock can add, with and without `issued_at`.
    #[rstest]
    #[case::issued_at(Some(SystemTime::UNIX_EPOCH + Duration::from_secs(1_714_557_600)))]
    #[case::no_issued_at(None)]
    #[case::issued_at_the_end_of_time(SystemTime::UNIX_EPOCH.checked_add(Duration::from_secs(i64::MAX as u64 / 2)))]
    fn a_lifetime_no_clock_can_hold_is_capped_not_a_panic(#[case] issued_at: Option<SystemTime>) {
        let answer = TokenAnswer {
            token: "a".into(),
            expires_in: u64::MAX,
            issued_at,
        };
        let usable = usable_for(&answer, SystemTime::now());
        assert!(usable <= Duration::from_secs(MAX_EXPIRES_IN), "{usable:?}");
        assert!(std::time::Instant::now().checked_add(usable).is_some());
    }

    proptest::proptest! {
        /// Any body a token endpoint sends parses or is refused, and any lifetime it claims is
        /// usable for at most a day: never a panic.
        #[test]
        fn any_token_answer_is_bounded(
            body in proptest::prelude::any::<Vec<u8>>(),
            expires_in in proptest::prelude::any::<u64>(),
            issued in proptest::prelude::any::<u64>(),
        ) {
            let _ = parse_answer("https://auth.example/token", &body);
            let json = format!(r#"{{"token":"a","expires_in":{expires_in},"issued_at":"2024-05-01T10:00:00Z"}}"#);
            let parsed = parse_answer("https://auth.example/token", json.as_bytes()).expect("valid");
            proptest::prop_assert!(parsed.expires_in <= MAX_EXPIRES_IN);
            let answer = TokenAnswer {
                token: "a".into(),
                expires_in,
                issued_at: SystemTime::UNIX_EPOCH.checked_add(Duration::from_secs(issued)),
            };
            proptest::prop_assert!(usable_for(&answer, SystemTime::now()) <= Duration::from_secs(MAX_EXPIRES_IN));
        }
    }

    fn jwt(claims: &serde_json::Value) -> String {
        let encode = |v: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v);
        format!(
            "{}.{}.{}",
            encode(br#"{"alg":"ES256"}"#),
            encode(claims.to_string().as_bytes()),
            encode(b"sig")
        )
    }

    #[test]
    fn jwt_access_claim_gives_the_granted_scopes() {
        let token = jwt(&serde_json::json!({"access": [
            {"type": "repository", "name": "a/b", "actions": ["pull"]},
            {"type": "repository", "name": "c", "actions": []},
        ]}));
        assert_eq!(jwt_grants(&token), Some(vec![Scope::pull("a/b")]));
    }

    #[rstest]
    #[case::opaque("ghs_opaque_token_value")]
    #[case::two_parts("a.b")]
    #[case::payload_not_base64("a.!!!.c")]
    fn non_jwt_tokens_grant_unknown(#[case] token: &str) {
        assert_eq!(jwt_grants(token), None);
    }

    #[test]
    fn jwt_without_access_claim_grants_unknown() {
        assert_eq!(jwt_grants(&jwt(&serde_json::json!({"sub": "x"}))), None);
    }
}
