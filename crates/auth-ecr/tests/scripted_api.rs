//! What moto cannot show: a real twelve-hour `expiresAt`, a token that nears expiry, a slow
//! refresh, and the request itself. test-support's fault server plays the ECR API with
//! scripted GetAuthorizationToken answers (AWS JSON 1.1) and records every request.

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use auth_ecr::{EcrProvider, RefreshPolicy};
use base64::Engine as _;
use common::*;
use test_support::{FaultServer, Reply};

const HOUR: Duration = Duration::from_secs(3600);

/// A GetAuthorizationToken answer for `AWS:<password>` expiring `expires_in` from now.
fn token_reply(password: &str, expires_in: Duration) -> Reply {
    let expires_at = (SystemTime::now() + expires_in)
        .duration_since(UNIX_EPOCH)
        .expect("after 1970")
        .as_secs_f64();
    let token = base64::engine::general_purpose::STANDARD.encode(format!("AWS:{password}"));
    let body = serde_json::json!({
        "authorizationData": [{
            "authorizationToken": token,
            "expiresAt": expires_at,
            "proxyEndpoint": "https://210987654321.dkr.ecr.eu-west-1.amazonaws.com",
        }]
    });
    Reply::status(200)
        .header("Content-Type", "application/x-amz-json-1.1")
        .body(body.to_string())
}

fn scripted_provider(api: &FaultServer, policy: RefreshPolicy) -> EcrProvider {
    EcrProvider::with_sdk_config(sdk_config(&api.base_url())).with_policy(policy)
}

fn policy(min_reuse: Duration) -> RefreshPolicy {
    RefreshPolicy {
        min_reuse,
        retry_after_error: Duration::from_secs(30),
    }
}

#[tokio::test]
async fn a_twelve_hour_token_serves_every_check_and_the_request_names_account_and_region() {
    let api = FaultServer::start();
    api.on("POST", "/", [token_reply("pw-12h", 12 * HOUR)]);
    let provider = scripted_provider(&api, RefreshPolicy::default());
    let host = host("210987654321.dkr.ecr.eu-west-1.amazonaws.com");
    for _ in 0..50 {
        assert_eq!(password(&provider.credentials(&host).await.expect("token")), "pw-12h");
    }
    let requests = api.requests();
    assert_eq!(requests.len(), 1, "{requests:?}");
    let request = &requests[0];
    assert_eq!(
        request.header("x-amz-target"),
        Some("AmazonEC2ContainerRegistry_V20150921.GetAuthorizationToken")
    );
    let body: serde_json::Value = serde_json::from_slice(&request.body).expect("JSON body");
    assert_eq!(body, serde_json::json!({"registryIds": ["210987654321"]}));
    // SigV4 scope: signed for the host's region and the ECR service.
    let authorization = request.authorization().expect("signed");
    assert!(authorization.contains("/eu-west-1/ecr/aws4_request"), "{authorization}");
}

#[tokio::test]
async fn the_token_is_refreshed_at_half_life_before_it_expires() {
    let api = FaultServer::start();
    api.on(
        "POST",
        "/",
        [
            token_reply("first", Duration::from_secs(2)),
            token_reply("second", 12 * HOUR),
        ],
    );
    let provider = scripted_provider(&api, policy(Duration::from_millis(100)));
    let host = ecr_host();
    let start = Instant::now();
    assert_eq!(password(&provider.credentials(&host).await.expect("token")), "first");
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(password(&provider.credentials(&host).await.expect("cached")), "first");
    assert_eq!(api.requests().len(), 1);
    // Half-life of a two-second token: one second. Refreshed then, before it expires.
    tokio::time::sleep(Duration::from_millis(1100).saturating_sub(start.elapsed())).await;
    assert_eq!(
        password(&provider.credentials(&host).await.expect("refreshed")),
        "second"
    );
    assert!(start.elapsed() < Duration::from_secs(2), "{:?}", start.elapsed());
    assert_eq!(api.requests().len(), 2);
}

#[tokio::test]
async fn a_slow_refresh_does_not_hold_up_checks_while_the_token_is_usable() {
    let api = FaultServer::start();
    api.on(
        "POST",
        "/",
        [
            token_reply("first", Duration::from_secs(4)),
            token_reply("second", 12 * HOUR).delay(Duration::from_millis(1500)),
        ],
    );
    let provider = Arc::new(scripted_provider(&api, policy(Duration::from_millis(100))));
    let host = ecr_host();
    assert_eq!(password(&provider.credentials(&host).await.expect("token")), "first");
    tokio::time::sleep(Duration::from_millis(2100)).await;

    // Past half-life: this caller refreshes, and waits for the slow answer.
    let refreshing = {
        let (provider, host) = (provider.clone(), host.clone());
        tokio::spawn(async move { provider.credentials(&host).await.map(|c| password(&c).to_owned()) })
    };
    tokio::time::sleep(Duration::from_millis(200)).await;
    // Meanwhile another check is answered at once with the still-valid token.
    let asked = Instant::now();
    assert_eq!(
        password(&provider.credentials(&host).await.expect("usable token")),
        "first"
    );
    assert!(asked.elapsed() < Duration::from_millis(300), "{:?}", asked.elapsed());

    assert_eq!(refreshing.await.expect("joined").expect("refreshed"), "second");
    assert_eq!(
        password(&provider.credentials(&host).await.expect("new token")),
        "second"
    );
    assert_eq!(api.requests().len(), 2);
}

#[tokio::test]
async fn a_hanging_api_fails_within_the_configured_time() {
    let api = FaultServer::start();
    api.on("POST", "/", [Reply::hang()]);
    let sdk = aws_config::SdkConfig::builder()
        .behavior_version(aws_config::BehaviorVersion::latest())
        .endpoint_url(api.base_url())
        .credentials_provider(aws_sdk_ecr::config::SharedCredentialsProvider::new(
            aws_sdk_ecr::config::Credentials::new("testing", "testing", None, None, "auth-ecr-tests"),
        ))
        .timeout_config(
            aws_smithy_types::timeout::TimeoutConfig::builder()
                .operation_timeout(Duration::from_millis(500))
                .build(),
        )
        .build();
    let provider = EcrProvider::with_sdk_config(sdk);
    let started = Instant::now();
    let error = provider
        .credentials(&ecr_host())
        .await
        .expect_err("no answer")
        .to_string();
    assert!(started.elapsed() < Duration::from_secs(5), "{:?}", started.elapsed());
    assert!(
        error.contains(&format!("the ECR API at {} did not answer in time", api.base_url())),
        "{error}"
    );
}
