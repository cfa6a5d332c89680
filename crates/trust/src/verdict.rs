//! What a verification concludes: [`Verification`] (which key, where the signature was) or
//! [`Unverified`] with the reason in one of a few kinds an operator acts on. Owns no checks.

use std::fmt;

/// Where a signature was found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Location {
    /// cosign's legacy layout: the tag `sha256-<hex>.sig` of the repository.
    Tag(String),
    /// An OCI 1.1 referrer of the digest (a sigstore bundle), by its manifest digest; `via`
    /// says how it was listed (`referrers API` or `referrers tag`).
    Referrer { manifest: String, via: &'static str },
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Location::Tag(tag) => write!(f, "tag {tag}"),
            Location::Referrer { manifest, via } => write!(f, "referrer {manifest} (listed by the {via})"),
        }
    }
}

/// A signature over the digest verified.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Verification {
    pub key_fingerprint: String,
    /// The key's file.
    pub key_origin: String,
    pub location: Location,
}

impl Verification {
    /// The record of `key` verifying the signature found at `location`.
    pub(crate) fn by(key: &crate::key::PublicKey, location: Location) -> Verification {
        Verification {
            key_fingerprint: key.fingerprint().to_owned(),
            key_origin: key.origin().to_owned(),
            location,
        }
    }
}

/// Why one signature (or the search for one) did not verify.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Failure {
    /// No signature artifact for the digest.
    NoSignature(String),
    /// Signatures exist, none by an accepted key.
    WrongKey(String),
    /// A valid signature, over another digest.
    OtherDigest(String),
    /// A valid signature over the digest, naming another repository.
    WrongRepository(String),
    /// An artifact that does not parse or breaks a bound.
    Malformed(String),
    /// The registry could not be asked (or the check ran out of time).
    Registry(String),
}

impl Failure {
    /// A stable snake_case name for JSON, logs and metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            Failure::NoSignature(_) => "no_signature",
            Failure::WrongKey(_) => "wrong_key",
            Failure::OtherDigest(_) => "other_digest",
            Failure::WrongRepository(_) => "wrong_repository",
            Failure::Malformed(_) => "malformed",
            Failure::Registry(_) => "registry",
        }
    }

    pub fn detail(&self) -> &str {
        match self {
            Failure::NoSignature(detail)
            | Failure::WrongKey(detail)
            | Failure::OtherDigest(detail)
            | Failure::WrongRepository(detail)
            | Failure::Malformed(detail)
            | Failure::Registry(detail) => detail,
        }
    }

    /// Which failure to report when several signatures failed: the one closest to verifying.
    pub(crate) fn rank(&self) -> u8 {
        match self {
            Failure::NoSignature(_) => 0,
            Failure::Registry(_) => 1,
            Failure::Malformed(_) => 2,
            Failure::WrongKey(_) => 3,
            Failure::OtherDigest(_) => 4,
            Failure::WrongRepository(_) => 5,
        }
    }
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.kind().replace('_', " "), self.detail())
    }
}

/// No signature over the digest verified.
pub type Unverified = Failure;
