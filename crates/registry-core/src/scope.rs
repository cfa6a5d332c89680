//! Token scopes (`repository:NAME:pull`): what a bearer token is asked to grant. Several scopes
//! go into one token request as repeated `scope` parameters, so one exchange can cover a batch
//! of repositories.

use std::fmt;
use std::str::FromStr;

/// One resource scope: `<type>:<name>:<action>[,<action>...]`.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Debug)]
pub struct Scope {
    resource_type: String,
    name: String,
    actions: Vec<String>,
}

/// Why a string is not a scope.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "invalid scope {value:?}: expected `repository:<name>:<action>[,<action>]`, e.g. `repository:molecule-ai/img:pull`"
)]
pub struct ScopeError {
    value: String,
}

impl Scope {
    /// Pull access to one repository: all a digest check or an image pull needs.
    pub fn pull(repository: &str) -> Scope {
        Scope {
            resource_type: "repository".into(),
            name: repository.to_owned(),
            actions: vec!["pull".into()],
        }
    }

    pub fn resource_type(&self) -> &str {
        &self.resource_type
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn actions(&self) -> &[String] {
        &self.actions
    }

    /// Whether a grant of `self` also grants `other` (same resource, a superset of actions).
    pub fn covers(&self, other: &Scope) -> bool {
        self.resource_type == other.resource_type
            && self.name == other.name
            && other
                .actions
                .iter()
                .all(|action| self.actions.contains(action) || self.actions.iter().any(|a| a == "*"))
    }

    /// Parses the space-separated list a challenge's `scope` parameter may carry.
    pub fn parse_list(value: &str) -> Result<Vec<Scope>, ScopeError> {
        value.split_whitespace().map(str::parse).collect()
    }
}

impl FromStr for Scope {
    type Err = ScopeError;

    fn from_str(value: &str) -> Result<Self, Self::Err> {
        let error = || ScopeError {
            value: value.to_owned(),
        };
        // The name may hold a `host:port` component, so split the type off the front and the
        // actions off the back.
        let (resource_type, rest) = value.split_once(':').ok_or_else(error)?;
        let (name, actions) = rest.rsplit_once(':').ok_or_else(error)?;
        if resource_type.is_empty() || name.is_empty() || actions.is_empty() || value.contains(char::is_whitespace) {
            return Err(error());
        }
        Ok(Scope {
            resource_type: resource_type.to_owned(),
            name: name.to_owned(),
            actions: actions.split(',').map(str::to_owned).collect(),
        })
    }
}

impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}:{}", self.resource_type, self.name, self.actions.join(","))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rstest::rstest;

    #[test]
    fn pull_scope_formats_like_distribution() {
        assert_eq!(
            Scope::pull("molecule-ai/img").to_string(),
            "repository:molecule-ai/img:pull"
        );
    }

    #[rstest]
    #[case("repository:a/b:pull", "a/b", &["pull"])]
    #[case("repository:a/b:pull,push", "a/b", &["pull", "push"])]
    #[case("repository:localhost:5000/a:pull", "localhost:5000/a", &["pull"])]
    fn scope_parses(#[case] input: &str, #[case] name: &str, #[case] actions: &[&str]) {
        let scope: Scope = input.parse().expect("valid");
        assert_eq!(scope.name(), name);
        assert_eq!(scope.actions(), actions);
        assert_eq!(scope.to_string(), input);
    }

    #[rstest]
    #[case("")]
    #[case("repository")]
    #[case("repository:a")]
    #[case(":a:pull")]
    #[case("repository::pull")]
    #[case("repository:a:")]
    fn malformed_scope_is_rejected(#[case] input: &str) {
        assert!(input.parse::<Scope>().is_err());
    }

    #[test]
    fn wider_grant_covers_narrower_request() {
        let granted: Scope = "repository:a:pull,push".parse().expect("valid");
        assert!(granted.covers(&Scope::pull("a")));
        assert!(!Scope::pull("a").covers(&granted));
        assert!(!granted.covers(&Scope::pull("b")));
    }

    #[test]
    fn space_separated_list_parses() {
        let scopes = Scope::parse_list("repository:a:pull repository:b:pull").expect("valid");
        assert_eq!(scopes, vec![Scope::pull("a"), Scope::pull("b")]);
    }
}
