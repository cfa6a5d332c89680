//! Content digests (`algorithm:encoded`), validated at the edge so that a `Digest` inside the
//! program is always well-formed. Owns the comparison and the short form used in logs; it does
//! not fetch anything.

use std::fmt;
use std::str::FromStr;

use sha2::{Digest as _, Sha256};

/// A validated content digest such as `sha256:4f9c…`.
///
/// Only `sha256` and `sha512` are accepted: they are the algorithms registries emit, and an
/// unknown algorithm could never be verified against a manifest body.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Digest(String);

/// Why a string is not a digest.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid digest {value:?}: {reason}; expected `sha256:` followed by 64 lowercase hex digits")]
pub struct DigestError {
    value: String,
    reason: &'static str,
}

impl Digest {
    /// The sha256 digest of `bytes`, as a registry computes it over a manifest body.
    pub fn sha256_of(bytes: &[u8]) -> Digest {
        Digest(format!("sha256:{}", hex::encode(Sha256::digest(bytes))))
    }

    /// `sha256`, `sha512`.
    pub fn algorithm(&self) -> &str {
        self.0.split_once(':').map_or("", |(algorithm, _)| algorithm)
    }

    /// The hex part after the colon.
    pub fn encoded(&self) -> &str {
        self.0.split_once(':').map_or("", |(_, encoded)| encoded)
    }

    /// `sha256:` and the first 12 hex digits: enough to tell digests apart in logs.
    pub fn short(&self) -> String {
        let encoded = self.encoded();
        format!("{}:{}", self.algorithm(), &encoded[..encoded.len().min(12)])
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl FromStr for Digest {
    type Err = DigestError;

    fn from_str(value: &str) -> Result<Self, Self::Err> {
        let error = |reason| DigestError {
            value: value.to_owned(),
            reason,
        };
        let (algorithm, encoded) = value
            .split_once(':')
            .ok_or_else(|| error("no `:` between algorithm and hex"))?;
        let expected_len = match algorithm {
            "sha256" => 64,
            "sha512" => 128,
            "" => return Err(error("the algorithm is empty")),
            _ => return Err(error("unsupported algorithm (sha256 and sha512 are supported)")),
        };
        if encoded.len() != expected_len {
            return Err(error("wrong number of hex digits"));
        }
        if !encoded
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        {
            return Err(error("not lowercase hex"));
        }
        Ok(Digest(value.to_owned()))
    }
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Digest({})", self.0)
    }
}

impl serde::Serialize for Digest {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.0)
    }
}

impl<'de> serde::Deserialize<'de> for Digest {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let value = String::deserialize(deserializer)?;
        value.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rstest::rstest;

    const HEX: &str = "4f9c3ae6f6b5cbbd7bcd5a3a0d1e0e5f3b2e9a3c1b7d8e6f5a4b3c2d1e0f9a8b";

    #[test]
    fn valid_sha256_round_trips_and_shortens() {
        let digest: Digest = format!("sha256:{HEX}").parse().expect("valid");
        assert_eq!(digest.to_string(), format!("sha256:{HEX}"));
        assert_eq!(digest.short(), "sha256:4f9c3ae6f6b5");
        assert_eq!(digest.algorithm(), "sha256");
        assert_eq!(digest.encoded(), HEX);
    }

    #[test]
    fn sha256_of_matches_known_vector() {
        assert_eq!(
            Digest::sha256_of(b"").as_str(),
            "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
    }

    #[rstest]
    #[case::no_colon("sha256")]
    #[case::empty_algorithm(":abc")]
    #[case::unknown_algorithm("md5:d41d8cd98f00b204e9800998ecf8427e")]
    #[case::uppercase_hex("sha256:4F9C3AE6F6B5CBBD7BCD5A3A0D1E0E5F3B2E9A3C1B7D8E6F5A4B3C2D1E0F9A8B")]
    #[case::short_hex("sha256:4f9c")]
    #[case::non_hex("sha256:zz9c3ae6f6b5cbbd7bcd5a3a0d1e0e5f3b2e9a3c1b7d8e6f5a4b3c2d1e0f9a8b")]
    #[case::empty("")]
    fn malformed_digest_is_rejected_with_value_in_message(#[case] input: &str) {
        let error = input.parse::<Digest>().expect_err("must be rejected");
        assert!(error.to_string().contains(&format!("{input:?}")), "{error}");
    }

    #[test]
    fn deserializing_rejects_invalid_digest() {
        assert!(serde_json::from_str::<Digest>("\"sha256:nothex\"").is_err());
    }
}
