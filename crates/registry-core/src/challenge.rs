//! `WWW-Authenticate` challenges (RFC 7235): how a registry says which authentication it wants.
//! Parsing is lenient where real registries deviate (unquoted values with `:` and `/`, missing
//! `service`) and strict where it matters: parameter values, the realm above all, are kept byte
//! for byte. Garbage yields an error, never a panic.

use std::fmt;

/// The authentication scheme a challenge asks for.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum AuthScheme {
    Basic,
    Bearer,
    /// A scheme this project does not speak, kept for error messages.
    Other(String),
}

/// One challenge: a scheme and its parameters (names lowercased, values verbatim).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Challenge {
    scheme: AuthScheme,
    params: Vec<(String, String)>,
    token68: Option<String>,
}

/// Why a header value could not be parsed, with the byte offset where parsing stopped.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "malformed WWW-Authenticate header {header:?}: {reason} at byte {at}; expected `Scheme param=\"value\", ...` (RFC 7235)"
)]
pub struct ChallengeError {
    header: String,
    reason: &'static str,
    at: usize,
}

impl Challenge {
    /// A challenge built by hand, e.g. for a registry known to want Basic.
    pub fn new(scheme: AuthScheme, params: Vec<(String, String)>) -> Challenge {
        let params = params
            .into_iter()
            .map(|(name, value)| (name.to_ascii_lowercase(), value))
            .collect();
        Challenge {
            scheme,
            params,
            token68: None,
        }
    }

    pub fn scheme(&self) -> &AuthScheme {
        &self.scheme
    }

    /// A parameter by case-insensitive name.
    pub fn param(&self, name: &str) -> Option<&str> {
        self.params
            .iter()
            .find(|(key, _)| key.eq_ignore_ascii_case(name))
            .map(|(_, value)| value.as_str())
    }

    pub fn params(&self) -> &[(String, String)] {
        &self.params
    }

    pub fn realm(&self) -> Option<&str> {
        self.param("realm")
    }

    /// Optional: GCP Artifact Registry and old Gitea omit it.
    pub fn service(&self) -> Option<&str> {
        self.param("service")
    }

    pub fn scope(&self) -> Option<&str> {
        self.param("scope")
    }

    /// `invalid_token`, `insufficient_scope`, ... on a rejected token.
    pub fn error(&self) -> Option<&str> {
        self.param("error")
    }

    pub fn token68(&self) -> Option<&str> {
        self.token68.as_deref()
    }

    /// Parses one header value, which may hold several challenges.
    pub fn parse_header(header: &str) -> Result<Vec<Challenge>, ChallengeError> {
        Parser { input: header, pos: 0 }.challenges()
    }

    /// Parses every `WWW-Authenticate` value of a response. Malformed values are returned as
    /// errors beside the challenges that did parse, so one bad header does not hide a good one.
    pub fn parse_all<'a>(headers: impl IntoIterator<Item = &'a str>) -> (Vec<Challenge>, Vec<ChallengeError>) {
        let mut challenges = Vec::new();
        let mut errors = Vec::new();
        for header in headers {
            match Self::parse_header(header) {
                Ok(parsed) => challenges.extend(parsed),
                Err(error) => errors.push(error),
            }
        }
        (challenges, errors)
    }

    /// The challenge to answer: Bearer (with a realm) before Basic, as Docker does.
    pub fn preferred(challenges: &[Challenge]) -> Option<&Challenge> {
        challenges
            .iter()
            .find(|c| c.scheme == AuthScheme::Bearer && c.realm().is_some())
            .or_else(|| challenges.iter().find(|c| c.scheme == AuthScheme::Basic))
    }
}

impl fmt::Display for AuthScheme {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AuthScheme::Basic => f.write_str("Basic"),
            AuthScheme::Bearer => f.write_str("Bearer"),
            AuthScheme::Other(name) => f.write_str(name),
        }
    }
}

impl fmt::Display for Challenge {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.scheme)?;
        // A challenge carries a token68 or parameters, never both (see the parser).
        if let Some(token68) = &self.token68 {
            return write!(f, " {token68}");
        }
        let mut separator = " ";
        for (name, value) in &self.params {
            write!(
                f,
                "{separator}{name}=\"{}\"",
                value.replace('\\', "\\\\").replace('"', "\\\"")
            )?;
            separator = ",";
        }
        Ok(())
    }
}

fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

fn is_token68_char(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"-._~+/".contains(&b)
}

struct Parser<'a> {
    input: &'a str,
    pos: usize,
}

impl<'a> Parser<'a> {
    fn error(&self, reason: &'static str) -> ChallengeError {
        ChallengeError {
            header: self.input.to_owned(),
            reason,
            at: self.pos,
        }
    }

    fn peek(&self) -> Option<u8> {
        self.input.as_bytes().get(self.pos).copied()
    }

    fn skip_whitespace(&mut self) {
        while matches!(self.peek(), Some(b' ' | b'\t')) {
            self.pos += 1;
        }
    }

    fn skip_whitespace_and_commas(&mut self) {
        while matches!(self.peek(), Some(b' ' | b'\t' | b',')) {
            self.pos += 1;
        }
    }

    fn take_while(&mut self, keep: impl Fn(u8) -> bool) -> &'a str {
        let start = self.pos;
        while self.peek().is_some_and(&keep) {
            self.pos += 1;
        }
        &self.input[start..self.pos]
    }

    fn challenges(mut self) -> Result<Vec<Challenge>, ChallengeError> {
        let mut challenges = Vec::new();
        loop {
            self.skip_whitespace_and_commas();
            if self.peek().is_none() {
                break;
            }
            challenges.push(self.challenge()?);
        }
        if challenges.is_empty() {
            return Err(self.error("no challenge"));
        }
        Ok(challenges)
    }

    fn challenge(&mut self) -> Result<Challenge, ChallengeError> {
        let scheme = self.take_while(is_tchar);
        if scheme.is_empty() {
            return Err(self.error("expected an authentication scheme"));
        }
        let scheme = match scheme.to_ascii_lowercase().as_str() {
            "basic" => AuthScheme::Basic,
            "bearer" => AuthScheme::Bearer,
            _ => AuthScheme::Other(scheme.to_owned()),
        };
        let mut challenge = Challenge {
            scheme,
            params: Vec::new(),
            token68: None,
        };
        match self.peek() {
            None | Some(b',') => return Ok(challenge),
            Some(b' ' | b'\t') => self.skip_whitespace(),
            Some(_) => return Err(self.error("expected a space after the scheme")),
        }
        if let Some(token68) = self.try_token68() {
            challenge.token68 = Some(token68);
            return Ok(challenge);
        }
        loop {
            let checkpoint = self.pos;
            let name = self.take_while(is_tchar);
            if name.is_empty() {
                if self.peek().is_none() {
                    break;
                }
                return Err(self.error("expected a parameter name"));
            }
            self.skip_whitespace();
            if self.peek() != Some(b'=') {
                // A token not followed by `=` starts the next challenge.
                self.pos = checkpoint;
                break;
            }
            self.pos += 1;
            self.skip_whitespace();
            let value = if self.peek() == Some(b'"') {
                self.quoted_string()?
            } else {
                self.unquoted_value()
            };
            challenge.params.push((name.to_ascii_lowercase(), value));
            self.skip_whitespace();
            match self.peek() {
                None => break,
                Some(b',') => {
                    self.skip_whitespace_and_commas();
                    if self.peek().is_none() {
                        break;
                    }
                }
                Some(_) => return Err(self.error("expected `,` between parameters")),
            }
        }
        Ok(challenge)
    }

    /// A token68 (`Basic dXNlcjpw`) is a lone value ending the challenge: no `=` follows it
    /// other than its own padding.
    fn try_token68(&mut self) -> Option<String> {
        let start = self.pos;
        let body = self.take_while(is_token68_char);
        self.take_while(|b| b == b'=');
        let end = self.pos;
        self.skip_whitespace();
        let ends_challenge = matches!(self.peek(), None | Some(b','));
        if !body.is_empty() && ends_challenge {
            return Some(self.input[start..end].to_owned());
        }
        self.pos = start;
        None
    }

    fn quoted_string(&mut self) -> Result<String, ChallengeError> {
        self.pos += 1;
        let mut value = String::new();
        let mut run_start = self.pos;
        loop {
            match self.peek() {
                None => return Err(self.error("unterminated quoted string")),
                Some(b'"') => {
                    value.push_str(&self.input[run_start..self.pos]);
                    self.pos += 1;
                    return Ok(value);
                }
                Some(b'\\') => {
                    value.push_str(&self.input[run_start..self.pos]);
                    self.pos += 1;
                    let Some(escaped) = self.input[self.pos..].chars().next() else {
                        return Err(self.error("backslash at the end of a quoted string"));
                    };
                    value.push(escaped);
                    self.pos += escaped.len_utf8();
                    run_start = self.pos;
                }
                Some(_) => self.pos += 1,
            }
        }
    }

    /// Up to the next `,` or whitespace: lenient, because Quay once sent `scope=repository:a/b:pull`
    /// unquoted, which is not an RFC token.
    fn unquoted_value(&mut self) -> String {
        self.take_while(|b| !matches!(b, b',' | b' ' | b'\t')).to_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rstest::rstest;

    fn one(header: &str) -> Challenge {
        let mut challenges = Challenge::parse_header(header).expect("parses");
        assert_eq!(challenges.len(), 1, "{challenges:?}");
        challenges.remove(0)
    }

    #[rstest]
    #[case::ghcr(
        r#"Bearer realm="https://ghcr.io/token",service="ghcr.io",scope="repository:molecule-ai/img:pull""#,
        AuthScheme::Bearer,
        Some("https://ghcr.io/token"),
        Some("ghcr.io"),
        Some("repository:molecule-ai/img:pull")
    )]
    #[case::docker_hub(
        r#"Bearer realm="https://auth.docker.io/token",service="registry.docker.io""#,
        AuthScheme::Bearer,
        Some("https://auth.docker.io/token"),
        Some("registry.docker.io"),
        None
    )]
    #[case::gitea_new(
        r#"Bearer realm="https://gitea.example.com/v2/token",service="container_registry",scope="*""#,
        AuthScheme::Bearer,
        Some("https://gitea.example.com/v2/token"),
        Some("container_registry"),
        Some("*")
    )]
    #[case::gitea_old_without_service(
        r#"Bearer realm="https://gitea.example.com/v2/token""#,
        AuthScheme::Bearer,
        Some("https://gitea.example.com/v2/token"),
        None,
        None
    )]
    #[case::harbor(
        r#"Bearer realm="https://harbor.example.com/service/token",service="harbor-registry""#,
        AuthScheme::Bearer,
        Some("https://harbor.example.com/service/token"),
        Some("harbor-registry"),
        None
    )]
    #[case::harbor_basic(r#"Basic realm="harbor""#, AuthScheme::Basic, Some("harbor"), None, None)]
    #[case::quay_unquoted_scope(
        r#"Bearer realm="https://quay.io/v2/auth",service="quay.io",scope=repository:org/img:pull"#,
        AuthScheme::Bearer,
        Some("https://quay.io/v2/auth"),
        Some("quay.io"),
        Some("repository:org/img:pull")
    )]
    #[case::gitlab(
        r#"Bearer realm="https://gitlab.com/jwt/auth",service="container_registry",scope="repository:g/p:pull""#,
        AuthScheme::Bearer,
        Some("https://gitlab.com/jwt/auth"),
        Some("container_registry"),
        Some("repository:g/p:pull")
    )]
    #[case::gcp_without_service(
        r#"Bearer realm="https://us-docker.pkg.dev/v2/token""#,
        AuthScheme::Bearer,
        Some("https://us-docker.pkg.dev/v2/token"),
        None,
        None
    )]
    #[case::ecr(
        r#"Basic realm="https://004947743811.dkr.ecr.us-east-2.amazonaws.com/",service="ecr.amazonaws.com""#,
        AuthScheme::Basic,
        Some("https://004947743811.dkr.ecr.us-east-2.amazonaws.com/"),
        Some("ecr.amazonaws.com"),
        None
    )]
    #[case::distribution_htpasswd(
        r#"Basic realm="Registry Realm""#,
        AuthScheme::Basic,
        Some("Registry Realm"),
        None,
        None
    )]
    #[case::case_insensitive_names(
        r#"bEaReR REALM="https://Example.com/Token?X=Y",Service="svc""#,
        AuthScheme::Bearer,
        Some("https://Example.com/Token?X=Y"),
        Some("svc"),
        None
    )]
    #[case::spaces_around_equals_and_commas(
        r#"Bearer realm = "https://r.example/t" ,  service= "s""#,
        AuthScheme::Bearer,
        Some("https://r.example/t"),
        Some("s"),
        None
    )]
    #[case::escaped_quote_and_comma_in_value(
        r#"Bearer realm="https://r.example/t?a=\"b,c\"",service="s""#,
        AuthScheme::Bearer,
        Some(r#"https://r.example/t?a="b,c""#),
        Some("s"),
        None
    )]
    fn real_registry_challenges_parse(
        #[case] header: &str,
        #[case] scheme: AuthScheme,
        #[case] realm: Option<&str>,
        #[case] service: Option<&str>,
        #[case] scope: Option<&str>,
    ) {
        let challenge = one(header);
        assert_eq!(challenge.scheme(), &scheme);
        assert_eq!(challenge.realm(), realm);
        assert_eq!(challenge.service(), service);
        assert_eq!(challenge.scope(), scope);
    }

    #[test]
    fn distribution_insufficient_scope_carries_error_and_scope() {
        let challenge = one(
            r#"Bearer realm="http://127.0.0.1:5001/token",service="registry",scope="repository:a/b:pull",error="insufficient_scope""#,
        );
        assert_eq!(challenge.error(), Some("insufficient_scope"));
        assert_eq!(challenge.scope(), Some("repository:a/b:pull"));
    }

    #[test]
    fn old_gitea_sends_bearer_and_basic_in_one_header() {
        let challenges = Challenge::parse_header(r#"Bearer realm="https://g.example/v2/token", Basic realm="Gitea""#)
            .expect("parses");
        assert_eq!(challenges.len(), 2);
        assert_eq!(challenges[1].scheme(), &AuthScheme::Basic);
        assert_eq!(challenges[1].realm(), Some("Gitea"));
        assert_eq!(
            Challenge::preferred(&challenges).map(Challenge::scheme),
            Some(&AuthScheme::Bearer)
        );
    }

    #[test]
    fn several_headers_are_combined_and_bad_ones_reported() {
        let (challenges, errors) = Challenge::parse_all([
            r#"Basic realm="r""#,
            r#"Bearer realm="unterminated"#,
            r#"Bearer realm="https://t""#,
        ]);
        assert_eq!(challenges.len(), 2);
        assert_eq!(errors.len(), 1);
        assert!(errors[0].to_string().contains("unterminated"), "{}", errors[0]);
        assert_eq!(
            Challenge::preferred(&challenges).and_then(Challenge::realm),
            Some("https://t")
        );
    }

    #[test]
    fn scheme_without_params_and_token68() {
        let challenges = Challenge::parse_header("Negotiate, Basic dXNlcjpwYXNz==").expect("parses");
        assert_eq!(challenges[0].scheme(), &AuthScheme::Other("Negotiate".into()));
        assert_eq!(challenges[1].token68(), Some("dXNlcjpwYXNz=="));
    }

    #[rstest]
    #[case::empty("")]
    #[case::only_commas(" , ,")]
    #[case::unterminated(r#"Bearer realm="https://x"#)]
    #[case::no_space_after_scheme(r#"Bearer"realm""#)]
    #[case::junk_after_value(r#"Bearer realm="a" junk"x""#)]
    #[case::equals_first("=x")]
    #[case::dangling_backslash(r#"Bearer realm="a\"#)]
    fn garbage_is_an_error_naming_the_header(#[case] header: &str) {
        let error = Challenge::parse_header(header).expect_err("must be rejected");
        assert!(error.to_string().contains("expected"), "{error}");
    }

    #[rstest]
    #[case::params(r#"Bearer realm="https://r/t?a=\"b\"",service="s""#)]
    #[case::token68("Negotiate dXNlcjpwYXNz==")]
    fn display_round_trips(#[case] header: &str) {
        let challenge = one(header);
        assert_eq!(one(&challenge.to_string()), challenge);
    }

    proptest::proptest! {
        #[test]
        fn never_panics_on_arbitrary_input(header in "\\PC*") {
            let _ = Challenge::parse_header(&header);
        }

        #[test]
        fn never_panics_on_challenge_shaped_input(header in r#"(Bearer|Basic|x)?[ ,=\"\\a-z:/]{0,40}"#) {
            let _ = Challenge::parse_header(&header);
        }

        #[test]
        fn quoted_values_survive_byte_for_byte(realm in r#"[^"\\]{0,40}"#, service in "[a-z.]{0,10}") {
            let header = format!(r#"Bearer realm="{realm}",service="{service}""#);
            let challenge = one(&header);
            proptest::prop_assert_eq!(challenge.realm(), Some(realm.as_str()));
            proptest::prop_assert_eq!(challenge.service(), Some(service.as_str()));
        }
    }
}
