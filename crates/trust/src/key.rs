//! Public keys as cosign writes them (`cosign.pub`: an SPKI `PUBLIC KEY` PEM): ECDSA P-256
//! (cosign's default, SHA-256), ECDSA P-384 (SHA-384), Ed25519 and RSA (PKCS #1 v1.5, SHA-256).
//! Owns parsing, the fingerprint shown to operators, and one signature check; the cryptography
//! is RustCrypto's. It never reads a private key.

use std::fmt;
use std::path::Path;

use p256::pkcs8::DecodePublicKey as _;
use sha2::{Digest as _, Sha256};

/// A key file that cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "key file {path}: {reason}; expected a PEM public key as `cosign generate-key-pair` writes it (-----BEGIN PUBLIC KEY-----)"
)]
pub struct KeyError {
    pub path: String,
    pub reason: String,
}

#[derive(Clone)]
enum Verifying {
    P256(p256::ecdsa::VerifyingKey),
    P384(p384::ecdsa::VerifyingKey),
    Ed25519(ed25519_dalek::VerifyingKey),
    Rsa(Box<rsa::pkcs1v15::VerifyingKey<Sha256>>),
}

/// A public key that signatures are checked against.
#[derive(Clone)]
pub struct PublicKey {
    verifying: Verifying,
    fingerprint: String,
    origin: String,
}

impl fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PublicKey")
            .field("algorithm", &self.algorithm())
            .field("fingerprint", &self.fingerprint)
            .field("origin", &self.origin)
            .finish()
    }
}

/// The largest key file read: a 16384-bit RSA key's PEM is under 3 KiB.
const MAX_KEY_FILE_BYTES: u64 = 64 * 1024;

impl PublicKey {
    /// Reads a PEM public key file.
    pub fn load(path: &Path) -> Result<PublicKey, KeyError> {
        let error = |reason: String| KeyError {
            path: path.display().to_string(),
            reason,
        };
        let metadata = std::fs::metadata(path).map_err(|e| error(format!("cannot read it: {e}")))?;
        if metadata.len() > MAX_KEY_FILE_BYTES {
            return Err(error(format!("{} bytes is too large for a public key", metadata.len())));
        }
        let text = std::fs::read_to_string(path).map_err(|e| error(format!("cannot read it: {e}")))?;
        PublicKey::from_pem(&text, &path.display().to_string())
    }

    /// Parses a PEM public key; `origin` names it in errors and logs (a path).
    pub fn from_pem(pem: &str, origin: &str) -> Result<PublicKey, KeyError> {
        let error = |reason: String| KeyError {
            path: origin.to_owned(),
            reason,
        };
        let (label, der) =
            pem_rfc7468::decode_vec(pem.trim().as_bytes()).map_err(|e| error(format!("not PEM ({e})")))?;
        if label != "PUBLIC KEY" {
            return Err(error(format!("a PEM `{label}` block, not a public key")));
        }
        let verifying = if let Ok(key) = p256::ecdsa::VerifyingKey::from_public_key_der(&der) {
            Verifying::P256(key)
        } else if let Ok(key) = p384::ecdsa::VerifyingKey::from_public_key_der(&der) {
            Verifying::P384(key)
        } else if let Ok(key) = ed25519_dalek::VerifyingKey::from_public_key_der(&der) {
            Verifying::Ed25519(key)
        } else if let Ok(key) = rsa::RsaPublicKey::from_public_key_der(&der) {
            Verifying::Rsa(Box::new(rsa::pkcs1v15::VerifyingKey::new(key)))
        } else {
            return Err(error(
                "an unsupported key type (supported: ECDSA P-256 and P-384, Ed25519, RSA)".to_owned(),
            ));
        };
        Ok(PublicKey {
            verifying,
            fingerprint: format!("SHA256:{}", hex::encode(Sha256::digest(&der))),
            origin: origin.to_owned(),
        })
    }

    /// `SHA256:<hex>` of the key's SPKI DER: what operators compare with
    /// `openssl pkey -pubin -in cosign.pub -outform DER | sha256sum`.
    pub fn fingerprint(&self) -> &str {
        &self.fingerprint
    }

    /// Where the key came from (its file).
    pub fn origin(&self) -> &str {
        &self.origin
    }

    pub fn algorithm(&self) -> &'static str {
        match self.verifying {
            Verifying::P256(_) => "ecdsa-p256-sha256",
            Verifying::P384(_) => "ecdsa-p384-sha384",
            Verifying::Ed25519(_) => "ed25519",
            Verifying::Rsa(_) => "rsa-pkcs1v15-sha256",
        }
    }

    /// Whether `signature` (ASN.1 DER or fixed-size for ECDSA, as cosign and openssl write
    /// them) is this key's signature over `message`.
    pub fn verifies(&self, message: &[u8], signature: &[u8]) -> bool {
        use p256::ecdsa::signature::Verifier as _;
        match &self.verifying {
            Verifying::P256(key) => p256::ecdsa::Signature::from_der(signature)
                .or_else(|_| p256::ecdsa::Signature::from_slice(signature))
                .is_ok_and(|signature| key.verify(message, &signature).is_ok()),
            Verifying::P384(key) => p384::ecdsa::Signature::from_der(signature)
                .or_else(|_| p384::ecdsa::Signature::from_slice(signature))
                .is_ok_and(|signature| key.verify(message, &signature).is_ok()),
            Verifying::Ed25519(key) => ed25519_dalek::Signature::from_slice(signature)
                .is_ok_and(|signature| key.verify_strict(message, &signature).is_ok()),
            Verifying::Rsa(key) => rsa::pkcs1v15::Signature::try_from(signature)
                .is_ok_and(|signature| key.verify(message, &signature).is_ok()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rstest::rstest;

    // A P-256 public key (SPKI PEM), for parsing only.
    const P256_PEM: &str = "-----BEGIN PUBLIC KEY-----
MFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAEModEgmSKIGFr7DWj+9MOasUBFG1C
DKAx48Y3DaWoQpLBe8nsjyNrP1jvwPi/pnU35DXFsJtYYpCJfpMWAToepw==
-----END PUBLIC KEY-----";

    #[test]
    fn a_p256_key_parses_with_a_stable_fingerprint() {
        let key = PublicKey::from_pem(P256_PEM, "cosign.pub").expect("parses");
        assert_eq!(key.algorithm(), "ecdsa-p256-sha256");
        assert!(key.fingerprint().starts_with("SHA256:"));
        assert_eq!(key.fingerprint().len(), "SHA256:".len() + 64);
        assert!(!key.verifies(b"message", b"not a signature"));
    }

    #[rstest]
    #[case::empty("", "not PEM")]
    #[case::garbage("hello", "not PEM")]
    #[case::private_key("-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----", "not a public key")]
    #[case::junk_der("-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----", "unsupported key type")]
    fn a_bad_key_names_its_file_and_what_is_expected(#[case] pem: &str, #[case] reason: &str) {
        let error = PublicKey::from_pem(pem, "/etc/imagewatch/cosign.pub").expect_err("rejected");
        let message = error.to_string();
        assert!(message.contains("/etc/imagewatch/cosign.pub"), "{message}");
        assert!(message.contains(reason), "{message}");
        assert!(message.contains("BEGIN PUBLIC KEY"), "{message}");
    }
}
