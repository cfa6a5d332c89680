//! Shared by the integration tests: an SDK configuration aimed at moto with fixed test keys
//! (no process environment involved), ECR hosts, the Basic challenge ECR sends, and a log
//! capture for the warnings the provider must emit.

#![allow(dead_code)]

use std::io::Write;
use std::sync::{Arc, Mutex};

use auth_ecr::EcrProvider;
use aws_config::{BehaviorVersion, SdkConfig};
use aws_sdk_ecr::config::{Credentials as AwsCredentials, SharedCredentialsProvider};
use registry_core::{AuthScheme, Challenge, Credentials, RegistryHost};
use test_support::Moto;

pub const ACCOUNT: &str = Moto::ACCOUNT_ID;
pub const REGION: &str = Moto::REGION;

/// An SDK configuration calling `endpoint` with static test keys.
pub fn sdk_config(endpoint: &str) -> SdkConfig {
    SdkConfig::builder()
        .behavior_version(BehaviorVersion::latest())
        .endpoint_url(endpoint)
        .credentials_provider(SharedCredentialsProvider::new(AwsCredentials::new(
            "testing",
            "testing",
            None,
            None,
            "auth-ecr-tests",
        )))
        .build()
}

pub fn provider(moto: &Moto) -> EcrProvider {
    EcrProvider::with_sdk_config(moto.sdk_config())
}

pub fn host(value: &str) -> RegistryHost {
    value.parse().expect("valid host")
}

/// `ACCOUNT.dkr.ecr.REGION.amazonaws.com` of moto's account.
pub fn ecr_host() -> RegistryHost {
    host(&Moto::ecr_host(REGION))
}

/// What an ECR registry answers a request without credentials with.
pub fn basic_challenge(host: &RegistryHost) -> Challenge {
    Challenge::new(
        AuthScheme::Basic,
        vec![
            ("realm".into(), format!("https://{host}/")),
            ("service".into(), "ecr.amazonaws.com".into()),
        ],
    )
}

pub fn password(credentials: &Credentials) -> &str {
    match credentials {
        Credentials::Basic { password, .. } => password.expose(),
        other => panic!("expected Basic credentials, got {other:?}"),
    }
}

/// Everything logged while the guard lives, for asserting on warnings.
#[derive(Clone, Default)]
pub struct LogCapture(Arc<Mutex<Vec<u8>>>);

impl LogCapture {
    /// Captures this thread's tracing events (a current-thread test runtime stays on it).
    pub fn start() -> (LogCapture, tracing::subscriber::DefaultGuard) {
        let capture = LogCapture::default();
        let writer = capture.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_max_level(tracing::Level::DEBUG)
            .with_ansi(false)
            .with_writer(move || writer.clone())
            .finish();
        let guard = tracing::subscriber::set_default(subscriber);
        (capture, guard)
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap_or_else(|p| p.into_inner())).into_owned()
    }

    pub fn warnings(&self) -> Vec<String> {
        self.text()
            .lines()
            .filter(|line| line.contains("WARN"))
            .map(str::to_owned)
            .collect()
    }
}

impl Write for LogCapture {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}
