//! Which keys an image's signatures must come from. Keys given for every image apply unless a
//! rule names the image: the keys of every matching rule then replace them, so a platform can
//! require its own key for its own images on top of (or instead of) a fleet-wide one. An image
//! no key applies to is not gated.

use registry_core::ImageReference;

use crate::key::PublicKey;

/// A rule's pattern that cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "invalid image pattern {pattern:?}: {reason}; expected `host/path` with `*` for any characters, optionally `:tag` (e.g. `ghcr.io/team/*` or `registry.example.com/app:latest`)"
)]
pub struct PatternError {
    pattern: String,
    reason: &'static str,
}

#[derive(Clone, Debug)]
struct Rule {
    pattern: String,
    keys: Vec<PublicKey>,
}

/// Keys per image.
#[derive(Clone, Debug, Default)]
pub struct Policy {
    every_image: Vec<PublicKey>,
    rules: Vec<Rule>,
}

impl Policy {
    /// A policy requiring one of `keys` of every image (none: no image is gated until a rule
    /// is added).
    pub fn new(keys: Vec<PublicKey>) -> Policy {
        Policy {
            every_image: keys,
            rules: Vec::new(),
        }
    }

    /// Images matching `pattern` require one of the keys of their matching rules. The same
    /// pattern given twice accepts either key.
    pub fn add_rule(&mut self, pattern: &str, key: PublicKey) -> Result<(), PatternError> {
        let error = |reason| PatternError {
            pattern: pattern.to_owned(),
            reason,
        };
        if pattern.is_empty() {
            return Err(error("it is empty"));
        }
        if pattern.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(error("it contains whitespace"));
        }
        if pattern.len() > 512 {
            return Err(error("it is over 512 characters"));
        }
        match self.rules.iter_mut().find(|rule| rule.pattern == pattern) {
            Some(rule) => rule.keys.push(key),
            None => self.rules.push(Rule {
                pattern: pattern.to_owned(),
                keys: vec![key],
            }),
        }
        Ok(())
    }

    /// Whether no image is gated.
    pub fn is_empty(&self) -> bool {
        self.every_image.is_empty() && self.rules.is_empty()
    }

    /// The keys `image` must be signed by; empty when it is not gated.
    pub fn keys_for(&self, image: &ImageReference) -> Vec<PublicKey> {
        let name = format!("{}/{}", image.host(), image.repository());
        let tagged = image.tag().map(|tag| format!("{name}:{}", tag.as_str()));
        let matching: Vec<PublicKey> = self
            .rules
            .iter()
            .filter(|rule| {
                glob(&rule.pattern, &name) || tagged.as_deref().is_some_and(|tagged| glob(&rule.pattern, tagged))
            })
            .flat_map(|rule| rule.keys.iter().cloned())
            .collect();
        if matching.is_empty() {
            self.every_image.clone()
        } else {
            matching
        }
    }
}

/// `*` matches any run of characters (slashes too); everything else matches itself.
fn glob(pattern: &str, text: &str) -> bool {
    let (pattern, text) = (pattern.as_bytes(), text.as_bytes());
    let (mut p, mut t) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while t < text.len() {
        if p < pattern.len() && pattern[p] == b'*' {
            star = Some((p, t));
            p += 1;
        } else if p < pattern.len() && pattern[p] == text[t] {
            p += 1;
            t += 1;
        } else if let Some((star_p, star_t)) = star {
            p = star_p + 1;
            t = star_t + 1;
            star = Some((star_p, star_t + 1));
        } else {
            return false;
        }
    }
    pattern[p..].iter().all(|c| *c == b'*')
}

#[cfg(test)]
mod tests {
    use super::*;
    use rstest::rstest;

    #[rstest]
    #[case("ghcr.io/team/*", "ghcr.io/team/app", true)]
    #[case("ghcr.io/team/*", "ghcr.io/team/deep/app", true)]
    #[case("ghcr.io/team/*", "ghcr.io/other/app", false)]
    #[case("*/app", "127.0.0.1:5000/x/app", true)]
    #[case("ghcr.io/team/app", "ghcr.io/team/app2", false)]
    #[case("ghcr.io/team/app:latest", "ghcr.io/team/app:latest", true)]
    #[case("*", "anything", true)]
    fn a_pattern_matches_names_with_star_for_any_characters(
        #[case] pattern: &str,
        #[case] text: &str,
        #[case] matches: bool,
    ) {
        assert_eq!(glob(pattern, text), matches);
    }

    #[rstest]
    #[case::empty("")]
    #[case::space("ghcr.io/a b")]
    fn a_bad_pattern_says_what_is_expected(#[case] pattern: &str) {
        let key = PublicKey::from_pem(
            "-----BEGIN PUBLIC KEY-----\nMFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAEModEgmSKIGFr7DWj+9MOasUBFG1C\nDKAx48Y3DaWoQpLBe8nsjyNrP1jvwPi/pnU35DXFsJtYYpCJfpMWAToepw==\n-----END PUBLIC KEY-----",
            "k.pub",
        )
        .expect("key");
        let error = Policy::default().add_rule(pattern, key).expect_err("rejected");
        assert!(error.to_string().contains("expected `host/path`"), "{error}");
    }
}
