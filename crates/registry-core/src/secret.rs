//! Secrets and credentials. Their `Debug` and `Display` never print the secret: a credential
//! that ends up in a log line, an error or a panic message shows `***` instead.

use std::fmt;

/// A string that must never be printed: a password, a token, an `Authorization` value.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Secret {
        Secret(value.into())
    }

    /// The secret itself, for the one place that must send it.
    pub fn expose(&self) -> &str {
        &self.0
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

impl From<String> for Secret {
    fn from(value: String) -> Secret {
        Secret(value)
    }
}

impl From<&str> for Secret {
    fn from(value: &str) -> Secret {
        Secret(value.to_owned())
    }
}

/// Credentials for a registry or its token realm.
#[derive(Clone, PartialEq, Eq)]
pub enum Credentials {
    /// A user name and a password or personal access token.
    Basic { username: String, password: Secret },
    /// A refresh token for the token realm (`config.json`'s `identitytoken`).
    IdentityToken(Secret),
    /// A ready bearer token sent to the registry as is.
    Bearer(Secret),
}

impl Credentials {
    pub fn basic(username: impl Into<String>, password: impl Into<Secret>) -> Credentials {
        Credentials::Basic {
            username: username.into(),
            password: password.into(),
        }
    }

    /// The user name, when there is one: safe to log.
    pub fn username(&self) -> Option<&str> {
        match self {
            Credentials::Basic { username, .. } => Some(username),
            _ => None,
        }
    }

    /// `Basic base64(user:password)`, for registries and realms that take Basic.
    pub fn basic_header(&self) -> Option<Secret> {
        use base64::Engine as _;
        match self {
            Credentials::Basic { username, password } => Some(Secret::new(format!(
                "Basic {}",
                base64::engine::general_purpose::STANDARD.encode(format!("{username}:{}", password.expose()))
            ))),
            _ => None,
        }
    }
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Credentials::Basic { username, .. } => f
                .debug_struct("Basic")
                .field("username", username)
                .field("password", &"***")
                .finish(),
            Credentials::IdentityToken(_) => f.write_str("IdentityToken(***)"),
            Credentials::Bearer(_) => f.write_str("Bearer(***)"),
        }
    }
}

impl Credentials {
    /// What kind of credentials these are, without the user name: for errors that reach
    /// endpoints (`/status`) as well as logs.
    pub fn kind(&self) -> &'static str {
        match self {
            Credentials::Basic { .. } => "basic credentials",
            Credentials::IdentityToken(_) => "an identity token",
            Credentials::Bearer(_) => "a bearer token",
        }
    }
}

impl fmt::Display for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Credentials::Basic { username, .. } => write!(f, "basic credentials for user {username:?}"),
            Credentials::IdentityToken(_) => f.write_str("an identity token"),
            Credentials::Bearer(_) => f.write_str("a bearer token"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &str = "ghp_s3cr3tvalue";

    #[test]
    fn no_form_of_printing_shows_the_secret() {
        let all = [
            Credentials::basic("octocat", SECRET),
            Credentials::IdentityToken(SECRET.into()),
            Credentials::Bearer(SECRET.into()),
        ];
        for credentials in all {
            for printed in [
                format!("{credentials:?}"),
                format!("{credentials:#?}"),
                credentials.to_string(),
            ] {
                assert!(!printed.contains(SECRET), "{printed}");
            }
        }
        let secret = Secret::new(SECRET);
        assert!(!format!("{secret:?}{secret}").contains(SECRET));
    }

    #[test]
    fn basic_header_encodes_user_and_password() {
        let header = Credentials::basic("AWS", "pw").basic_header().expect("basic");
        assert_eq!(header.expose(), "Basic QVdTOnB3");
        assert!(Credentials::Bearer("t".into()).basic_header().is_none());
    }
}
