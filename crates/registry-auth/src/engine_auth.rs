//! The Docker Engine's `X-Registry-Auth` payload: base64url of a JSON auth config whose
//! `serveraddress` is the registry HOST the image is pulled from. This is the one place it is
//! built: `imagewatch auth-header` prints it and the refreshers send it as is. Building it
//! from a `RegistryHost` is what keeps it from ever pinning one registry's name.

use base64::Engine as _;
use serde_json::{Map, Value, json};

use registry_core::{Credentials, RegistryHost, Secret};

/// Credentials addressed to one registry, in the shape the Docker Engine expects.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EngineAuth {
    server_address: String,
    credentials: Credentials,
}

impl EngineAuth {
    pub fn new(host: &RegistryHost, credentials: Credentials) -> EngineAuth {
        EngineAuth {
            server_address: host.engine_server_address().to_owned(),
            credentials,
        }
    }

    /// The registry host (Docker Hub: `https://index.docker.io/v1/`).
    pub fn server_address(&self) -> &str {
        &self.server_address
    }

    pub fn credentials(&self) -> &Credentials {
        &self.credentials
    }

    /// The `X-Registry-Auth` header value: padded base64url of the JSON payload.
    pub fn header_value(&self) -> Secret {
        let json = self.payload(false).to_string();
        Secret::new(base64::engine::general_purpose::URL_SAFE.encode(json))
    }

    /// The decoded payload with every secret replaced by `***`, for display.
    pub fn redacted_json(&self) -> Value {
        self.payload(true)
    }

    fn payload(&self, redact: bool) -> Value {
        let show = |secret: &Secret| {
            if redact {
                "***".to_owned()
            } else {
                secret.expose().to_owned()
            }
        };
        let mut payload = Map::new();
        match &self.credentials {
            Credentials::Basic { username, password } => {
                payload.insert("username".into(), json!(username));
                payload.insert("password".into(), json!(show(password)));
            }
            Credentials::IdentityToken(token) => {
                payload.insert("identitytoken".into(), json!(show(token)));
            }
            Credentials::Bearer(token) => {
                payload.insert("registrytoken".into(), json!(show(token)));
            }
        }
        payload.insert("serveraddress".into(), json!(self.server_address));
        Value::Object(payload)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rstest::rstest;

    fn decode(header: &Secret) -> Value {
        let bytes = base64::engine::general_purpose::URL_SAFE
            .decode(header.expose())
            .expect("base64url");
        serde_json::from_slice(&bytes).expect("json")
    }

    #[rstest]
    #[case::ghcr("ghcr.io", "ghcr.io")]
    #[case::ecr(
        "004947743811.dkr.ecr.us-east-2.amazonaws.com",
        "004947743811.dkr.ecr.us-east-2.amazonaws.com"
    )]
    #[case::self_hosted_port("registry.example.com:5443", "registry.example.com:5443")]
    #[case::ipv6("[::1]:5000", "[::1]:5000")]
    #[case::docker_hub("docker.io", "https://index.docker.io/v1/")]
    fn server_address_is_the_registry_host(#[case] host: &str, #[case] expected: &str) {
        let auth = EngineAuth::new(&host.parse().expect("valid"), Credentials::basic("u", "p"));
        let payload = decode(&auth.header_value());
        assert_eq!(payload["serveraddress"], expected);
        assert_eq!(payload["username"], "u");
        assert_eq!(payload["password"], "p");
    }

    #[test]
    fn header_is_url_safe_base64() {
        // Bytes that standard base64 would encode with `+` and `/`.
        let auth = EngineAuth::new(&"ghcr.io".parse().expect("valid"), Credentials::basic("u", "?>?>?>~~~"));
        let header = auth.header_value();
        assert!(
            !header.expose().contains('+') && !header.expose().contains('/'),
            "{}",
            header.expose()
        );
        assert_eq!(decode(&header)["password"], "?>?>?>~~~");
    }

    #[test]
    fn redacted_payload_hides_every_secret() {
        let host: RegistryHost = "ghcr.io".parse().expect("valid");
        for credentials in [
            Credentials::basic("u", "hunter2"),
            Credentials::IdentityToken("hunter2".into()),
            Credentials::Bearer("hunter2".into()),
        ] {
            let redacted = EngineAuth::new(&host, credentials).redacted_json().to_string();
            assert!(!redacted.contains("hunter2") && redacted.contains("***"), "{redacted}");
        }
    }
}
