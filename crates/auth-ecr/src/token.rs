//! The ECR authorization token: decoding `authorizationToken` into Basic credentials, and the
//! lifetime policy that decides how long one token serves before the API is asked again.
//!
//! Pure: no I/O, no clock. The provider passes "how long until `expiresAt`" and gets back
//! durations measured from the moment the token arrived.

use std::time::Duration;

use base64::Engine as _;
use registry_core::Credentials;

/// Why an `authorizationToken` could not be turned into credentials. Never carries the token.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    #[error("the authorizationToken is empty")]
    Empty,
    #[error("the authorizationToken is not base64 ({0}); expected base64 of `AWS:<password>`")]
    NotBase64(String),
    #[error("the decoded authorizationToken is not UTF-8; expected `AWS:<password>`")]
    NotUtf8,
    #[error("the decoded authorizationToken has no `:` between user and password; expected `AWS:<password>`")]
    MissingColon,
    #[error("the decoded authorizationToken has an empty user name; expected `AWS:<password>`")]
    EmptyUser,
    #[error("the decoded authorizationToken has an empty password; expected `AWS:<password>`")]
    EmptyPassword,
}

/// Decodes `authorizationToken` (base64 of `AWS:<password>`) into Basic credentials.
///
/// ECR always names the user `AWS`; another non-empty user name is accepted as is (it is what
/// the registry expects with that password), as amazon-ecr-credential-helper does.
pub fn decode(authorization_token: &str) -> Result<Credentials, TokenError> {
    let encoded = authorization_token.trim();
    if encoded.is_empty() {
        return Err(TokenError::Empty);
    }
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(encoded)
        // The decode error names an offset and a byte, never more than one character of it.
        .map_err(|error| TokenError::NotBase64(describe_base64_error(&error)))?;
    let text = String::from_utf8(bytes).map_err(|_| TokenError::NotUtf8)?;
    let (user, password) = text.split_once(':').ok_or(TokenError::MissingColon)?;
    if user.is_empty() {
        return Err(TokenError::EmptyUser);
    }
    if password.is_empty() {
        return Err(TokenError::EmptyPassword);
    }
    Ok(Credentials::basic(user, password))
}

/// The shape of a base64 error without the offending byte (it is part of a secret).
fn describe_base64_error(error: &base64::DecodeError) -> String {
    match error {
        base64::DecodeError::InvalidByte(offset, _) => format!("invalid character at offset {offset}"),
        base64::DecodeError::InvalidLength(length) => format!("invalid length {length}"),
        base64::DecodeError::InvalidLastSymbol(offset, _) => format!("invalid last symbol at offset {offset}"),
        base64::DecodeError::InvalidPadding => "invalid padding".to_owned(),
    }
}

/// How long tokens are reused and how soon a failed call is retried.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RefreshPolicy {
    /// The shortest time one token is reused, whatever its `expiresAt` says. A token whose
    /// `expiresAt` is already past on arrival (a skewed clock; moto answers a date in 2015) or
    /// too near is used for the request at hand and then treated as valid for this long, so the
    /// provider never calls the API once per check. Default: 5 minutes.
    pub min_reuse: Duration,
    /// After a failed GetAuthorizationToken, how long the provider waits before asking again:
    /// meanwhile it keeps answering with the cached token if that is still usable, else with
    /// the same error. Default: 30 seconds.
    pub retry_after_error: Duration,
}

/// Five minutes: see [`RefreshPolicy::min_reuse`].
pub const DEFAULT_MIN_REUSE: Duration = Duration::from_secs(5 * 60);
/// Thirty seconds: see [`RefreshPolicy::retry_after_error`].
pub const DEFAULT_RETRY_AFTER_ERROR: Duration = Duration::from_secs(30);

impl Default for RefreshPolicy {
    fn default() -> RefreshPolicy {
        RefreshPolicy {
            min_reuse: DEFAULT_MIN_REUSE,
            retry_after_error: DEFAULT_RETRY_AFTER_ERROR,
        }
    }
}

/// When a freshly issued token is due for refresh and until when it may still be used,
/// both measured from its arrival.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Schedule {
    /// Reuse the token until then; the next check after it calls the API.
    pub refresh_after: Duration,
    /// Until then the token may stand in when a refresh fails.
    pub usable_for: Duration,
}

impl RefreshPolicy {
    /// The schedule of a token that arrived `remaining` before its `expiresAt` (`None`: the
    /// expiry is missing or already past).
    ///
    /// - Normally the token is refreshed at half-life (`remaining / 2`, six hours for ECR's
    ///   twelve), as amazon-ecr-credential-helper does, and is usable until `expiresAt`.
    /// - When half-life is shorter than [`RefreshPolicy::min_reuse`] (expiry past, missing or
    ///   near), the token is reused for `min_reuse`, and may stand in for a failed refresh
    ///   until the later of its expiry and twice `min_reuse`: the registry is the judge of a
    ///   token the clock calls stale, and a registry that refuses it triggers `reject`, which
    ///   drops it.
    pub fn schedule(&self, remaining: Option<Duration>) -> Schedule {
        let remaining = remaining.unwrap_or(Duration::ZERO);
        let half_life = remaining / 2;
        if half_life >= self.min_reuse {
            Schedule {
                refresh_after: half_life,
                usable_for: remaining,
            }
        } else {
            Schedule {
                refresh_after: self.min_reuse,
                usable_for: remaining.max(self.min_reuse * 2),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rstest::rstest;

    fn encode(text: &str) -> String {
        base64::engine::general_purpose::STANDARD.encode(text)
    }

    #[rstest]
    #[case::moto("AWS:123456789012-auth-token", "AWS", "123456789012-auth-token")]
    #[case::password_with_colons("AWS:a:b:c", "AWS", "a:b:c")]
    #[case::user_not_aws_is_kept("someone:pw", "someone", "pw")]
    fn valid_token_decodes_to_basic(#[case] decoded: &str, #[case] user: &str, #[case] password: &str) {
        let credentials = decode(&encode(decoded)).expect("decodes");
        assert_eq!(credentials, Credentials::basic(user, password));
    }

    #[test]
    fn surrounding_whitespace_is_ignored() {
        let credentials = decode(&format!(" {}\n", encode("AWS:pw"))).expect("decodes");
        assert_eq!(credentials, Credentials::basic("AWS", "pw"));
    }

    #[rstest]
    #[case::empty(String::new(), "is empty")]
    #[case::malformed_base64("QVdTOn!!!".to_owned(), "not base64 (invalid character at offset")]
    #[case::bad_length("QVdTO".to_owned(), "not base64 (invalid length")]
    #[case::not_utf8(base64::engine::general_purpose::STANDARD.encode([0xff, 0xfe, b':', b'x']), "not UTF-8")]
    #[case::missing_colon(encode("AWSpassword"), "no `:`")]
    #[case::empty_user(encode(":password"), "empty user name")]
    #[case::empty_password(encode("AWS:"), "empty password")]
    fn malformed_token_is_rejected(#[case] token: String, #[case] expected: &str) {
        let message = decode(&token).expect_err("rejected").to_string();
        assert!(message.contains(expected), "{message:?} lacks {expected:?}");
        assert!(message.contains("expected") || message.contains("empty"), "{message:?}");
    }

    #[test]
    fn errors_never_echo_the_token() {
        let secret_password = "s3cr3t-password";
        for token in [
            format!("{secret_password}!"),
            encode(secret_password),
            encode(&format!(":{secret_password}")),
        ] {
            let message = decode(&token).expect_err("rejected").to_string();
            assert!(!message.contains(secret_password), "{message}");
            assert!(!message.contains(&token), "{message}");
        }
    }

    const MIN: Duration = Duration::from_secs(60);
    const HOUR: Duration = Duration::from_secs(3600);

    #[rstest]
    #[case::ecr_twelve_hours(Some(12 * HOUR), 6 * HOUR, 12 * HOUR)]
    #[case::one_hour_left(Some(HOUR), 30 * MIN, HOUR)]
    #[case::exactly_twice_the_floor(Some(10 * MIN), 5 * MIN, 10 * MIN)]
    #[case::near_expiry_gets_the_floor(Some(6 * MIN), 5 * MIN, 10 * MIN)]
    #[case::just_under_twice_the_floor(Some(10 * MIN - Duration::from_secs(1)), 5 * MIN, 10 * MIN)]
    #[case::very_near_expiry(Some(MIN), 5 * MIN, 10 * MIN)]
    #[case::past_expiry_moto(None, 5 * MIN, 10 * MIN)]
    #[case::zero_remaining(Some(Duration::ZERO), 5 * MIN, 10 * MIN)]
    fn schedule_follows_half_life_with_a_floor(
        #[case] remaining: Option<Duration>,
        #[case] refresh_after: Duration,
        #[case] usable_for: Duration,
    ) {
        let schedule = RefreshPolicy::default().schedule(remaining);
        assert_eq!(
            schedule,
            Schedule {
                refresh_after,
                usable_for
            }
        );
    }

    #[test]
    fn refresh_never_comes_after_the_token_stops_being_usable() {
        let policy = RefreshPolicy::default();
        for secs in (0..=2 * 24 * 3600).step_by(97) {
            let schedule = policy.schedule(Some(Duration::from_secs(secs)));
            assert!(schedule.refresh_after <= schedule.usable_for, "{secs}: {schedule:?}");
            assert!(schedule.refresh_after >= policy.min_reuse, "{secs}: {schedule:?}");
        }
    }
}
