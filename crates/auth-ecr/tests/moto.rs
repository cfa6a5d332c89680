//! The ECR provider against a real moto server, counted at test-support's proxy: what one
//! GetAuthorizationToken call serves, how concurrent callers share it, what happens when the
//! API fails, and what the errors say. The SDK configuration is passed explicitly; the
//! environment-driven default chain has its own test binary (`default_chain.rs`).

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use auth_ecr::EcrRegistry;
use auth_ecr::{EcrProvider, RefreshPolicy};
use base64::Engine as _;
use common::*;
use registry_core::{Credentials, Scope, TokenProvider};
use test_support::{Moto, WorkDir};

fn expected_basic_header() -> String {
    let pair = format!("AWS:{}", Moto::expected_password());
    format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(pair))
}

#[tokio::test]
async fn moto_password_becomes_basic_for_the_registry_and_the_engine() {
    let moto = Moto::start(&WorkDir::new("ecr-basic"));
    let provider = provider(&moto);
    let host = ecr_host();

    let authorization = provider
        .authorization(&host, &basic_challenge(&host), &[Scope::pull("app")])
        .await
        .expect("authorized")
        .expect("an Authorization header");
    assert_eq!(authorization.header_value(), expected_basic_header());

    let engine = provider
        .engine_credentials(&host)
        .await
        .expect("engine credentials")
        .expect("some");
    assert_eq!(engine, Credentials::basic("AWS", "123456789012-auth-token"));

    assert_eq!(moto.get_authorization_token_calls(), 1, "{:?}", moto.calls());
}

#[tokio::test]
async fn many_checks_across_ticks_cost_one_call_despite_motos_past_expiry() {
    let moto = Moto::start(&WorkDir::new("ecr-ticks"));
    // The premise: moto's expiresAt is in the past (2015), so a provider trusting it naively
    // would call on every check.
    let direct = aws_sdk_ecr::Client::from_conf(
        aws_sdk_ecr::config::Builder::from(&sdk_config(&moto.direct_url()))
            .region(aws_config::Region::new(REGION))
            .build(),
    );
    let answer = direct.get_authorization_token().send().await.expect("moto answers");
    let expires_at = answer.authorization_data()[0].expires_at().expect("expiresAt");
    assert!(SystemTime::try_from(*expires_at).expect("time") < SystemTime::now());

    let provider = provider(&moto);
    let host = ecr_host();
    let challenge = basic_challenge(&host);
    let (ticks, images) = (5, 8);
    for _tick in 0..ticks {
        for image in 0..images {
            let scopes = [Scope::pull(&format!("img{image}"))];
            let authorization = provider
                .authorization(&host, &challenge, &scopes)
                .await
                .expect("authorized")
                .expect("header");
            assert_eq!(authorization.header_value(), expected_basic_header());
        }
        provider.engine_credentials(&host).await.expect("engine credentials");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        moto.get_authorization_token_calls(),
        1,
        "{} checks over {ticks} ticks: {:?}",
        ticks * (images + 1),
        moto.calls()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twenty_concurrent_callers_share_one_call() {
    let moto = Moto::start(&WorkDir::new("ecr-herd"));
    let provider = Arc::new(provider(&moto));
    let host = ecr_host();
    let barrier = Arc::new(tokio::sync::Barrier::new(20));
    let tasks: Vec<_> = (0..20)
        .map(|i| {
            let (provider, host, barrier) = (provider.clone(), host.clone(), barrier.clone());
            tokio::spawn(async move {
                barrier.wait().await;
                provider
                    .authorization(&host, &basic_challenge(&host), &[Scope::pull(&format!("img{i}"))])
                    .await
                    .expect("authorized")
                    .expect("header")
                    .header_value()
                    .to_owned()
            })
        })
        .collect();
    for task in tasks {
        assert_eq!(task.await.expect("joined"), expected_basic_header());
    }
    assert_eq!(moto.get_authorization_token_calls(), 1, "{:?}", moto.calls());
}

#[tokio::test]
async fn cross_account_registry_asks_for_its_own_account() {
    let moto = Moto::start(&WorkDir::new("ecr-cross-account"));
    let provider = provider(&moto);
    // moto answers `<registryId>-auth-token` for each id it is asked about and its own
    // account (123456789012) when none is given.
    let other = host("210987654321.dkr.ecr.eu-west-1.amazonaws.com");
    let credentials = provider.credentials(&other).await.expect("credentials");
    assert_eq!(password(&credentials), "210987654321-auth-token");
    let own = provider.credentials(&ecr_host()).await.expect("credentials");
    assert_eq!(password(&own), "123456789012-auth-token");
    // One call per registry.
    assert_eq!(moto.get_authorization_token_calls(), 2, "{:?}", moto.calls());
}

#[tokio::test]
async fn a_declared_host_and_a_fips_host_reach_the_configured_endpoint() {
    let moto = Moto::start(&WorkDir::new("ecr-declared"));
    let mirror = host("127.0.0.1:5999");
    let registry = EcrRegistry {
        account: ACCOUNT.into(),
        region: REGION.into(),
        fips: false,
    };
    let provider = provider(&moto).with_registry(mirror.clone(), registry);
    assert_eq!(
        password(&provider.credentials(&mirror).await.expect("declared host")),
        Moto::expected_password()
    );
    // Same account and region: the declared host shares the cached token.
    provider.credentials(&ecr_host()).await.expect("ECR host");
    assert_eq!(moto.get_authorization_token_calls(), 1, "{:?}", moto.calls());

    // FIPS asks the FIPS endpoint, except that a configured endpoint wins (the SDK refuses both).
    let fips = host(&format!("{ACCOUNT}.dkr.ecr-fips.{REGION}.amazonaws.com"));
    assert_eq!(
        provider.api_endpoint(&fips).await.expect("endpoint"),
        moto.endpoint_url()
    );
    provider.credentials(&fips).await.expect("FIPS host");
    assert_eq!(moto.get_authorization_token_calls(), 2, "{:?}", moto.calls());
}

#[tokio::test]
async fn the_token_is_refreshed_after_the_reuse_interval() {
    let moto = Moto::start(&WorkDir::new("ecr-refresh"));
    let provider = provider(&moto).with_policy(RefreshPolicy {
        min_reuse: Duration::from_millis(300),
        retry_after_error: Duration::from_secs(30),
    });
    let host = ecr_host();
    for _ in 0..5 {
        provider.credentials(&host).await.expect("credentials");
    }
    assert_eq!(moto.get_authorization_token_calls(), 1);
    tokio::time::sleep(Duration::from_millis(350)).await;
    for _ in 0..5 {
        provider.credentials(&host).await.expect("credentials");
    }
    assert_eq!(moto.get_authorization_token_calls(), 2, "{:?}", moto.calls());
}

#[tokio::test]
async fn a_failed_refresh_keeps_the_cached_token_and_warns() {
    let moto = Moto::start(&WorkDir::new("ecr-fallback"));
    let (logs, _guard) = LogCapture::start();
    let provider = provider(&moto).with_policy(RefreshPolicy {
        // Reused for 1 s, usable for 2 s as a stand-in when a refresh fails.
        min_reuse: Duration::from_secs(1),
        retry_after_error: Duration::from_secs(30),
    });
    let host = ecr_host();
    provider.credentials(&host).await.expect("first token");
    tokio::time::sleep(Duration::from_millis(1100)).await;

    moto.fail_get_authorization_token(1, 403);
    let credentials = provider.credentials(&host).await.expect("the cached token stands in");
    assert_eq!(password(&credentials), Moto::expected_password());
    assert_eq!(moto.get_authorization_token_calls(), 2, "{:?}", moto.calls());

    let warnings = logs.warnings();
    assert_eq!(warnings.len(), 1, "{}", logs.text());
    let warning = &warnings[0];
    assert!(
        warning.contains(host.as_str()) && warning.contains("still using the cached token"),
        "{warning}"
    );
    assert!(
        warning.contains("access denied to ecr:GetAuthorizationToken"),
        "{warning}"
    );
    assert!(!logs.text().contains(&Moto::expected_password()), "{}", logs.text());

    // Within retry_after_error: no call, the cached token still serves.
    for _ in 0..5 {
        provider.credentials(&host).await.expect("cached token");
    }
    assert_eq!(moto.get_authorization_token_calls(), 2, "{:?}", moto.calls());
}

#[tokio::test]
async fn access_denied_names_account_and_region_and_is_not_retried_per_check() {
    let moto = Moto::start(&WorkDir::new("ecr-denied"));
    let provider = provider(&moto);
    let host = ecr_host();
    moto.fail_get_authorization_token(1, 403);
    let error = provider
        .authorization(&host, &basic_challenge(&host), &[])
        .await
        .expect_err("denied")
        .to_string();
    assert!(
        error.starts_with(&format!("ecr credentials for {host}: access denied to ecr:GetAuthorizationToken for account {ACCOUNT} in region {REGION}")),
        "{error}"
    );
    assert!(!error.contains('\n'), "{error}");
    for _ in 0..5 {
        let again = provider.credentials(&host).await.expect_err("still denied").to_string();
        assert_eq!(again, error);
    }
    assert_eq!(moto.get_authorization_token_calls(), 1, "{:?}", moto.calls());
}

#[tokio::test]
async fn reject_drops_the_cached_token() {
    let moto = Moto::start(&WorkDir::new("ecr-reject"));
    let retry_after_error = Duration::from_millis(300);
    let provider = provider(&moto).with_policy(RefreshPolicy {
        retry_after_error,
        ..RefreshPolicy::default()
    });
    let host = ecr_host();
    provider.credentials(&host).await.expect("token");
    provider.credentials(&host).await.expect("cached");
    assert_eq!(moto.get_authorization_token_calls(), 1);
    tokio::time::sleep(retry_after_error).await;
    provider.reject(&host, &[Scope::pull("app")]);
    provider.credentials(&host).await.expect("fetched again");
    assert_eq!(moto.get_authorization_token_calls(), 2, "{:?}", moto.calls());
}

#[tokio::test]
async fn a_registry_refusing_a_fresh_token_costs_no_api_call_per_check() {
    let moto = Moto::start(&WorkDir::new("ecr-reject-fresh"));
    let provider = provider(&moto);
    let host = ecr_host();
    for _ in 0..5 {
        provider.credentials(&host).await.expect("token");
        provider.reject(&host, &[Scope::pull("app")]);
    }
    assert_eq!(moto.get_authorization_token_calls(), 1, "{:?}", moto.calls());
}

#[tokio::test]
async fn an_unreachable_endpoint_is_named_in_one_line() {
    let endpoint = format!("http://127.0.0.1:{}", test_support::free_port());
    let provider = EcrProvider::with_sdk_config(sdk_config(&endpoint));
    let started = Instant::now();
    let error = provider
        .credentials(&ecr_host())
        .await
        .expect_err("nothing listens there")
        .to_string();
    assert!(
        error.contains(&format!("cannot reach the ECR API at {endpoint}")) && error.contains(ACCOUNT),
        "{error}"
    );
    assert!(!error.contains('\n'), "{error}");
    assert!(started.elapsed() < Duration::from_secs(20), "{:?}", started.elapsed());
}

#[tokio::test]
async fn an_endpoint_that_is_not_ecr_says_so() {
    // A registry is not an ECR API: the SDK cannot parse its answer.
    let registry = test_support::Registry::anonymous(&WorkDir::new("ecr-wrong-endpoint"));
    let provider = EcrProvider::with_sdk_config(sdk_config(&registry.base_url()));
    let error = provider
        .credentials(&ecr_host())
        .await
        .expect_err("not an ECR API")
        .to_string();
    assert!(error.contains(&registry.base_url()) && !error.contains('\n'), "{error}");
    let registry_of = |host: &str| EcrRegistry::from_host(&common::host(host));
    assert!(registry_of("ghcr.io").is_none());
}

#[tokio::test]
async fn a_config_without_any_credentials_provider_says_no_credentials() {
    let moto = Moto::start(&test_support::WorkDir::new("ecr-no-provider"));
    let sdk = aws_config::SdkConfig::builder()
        .behavior_version(aws_config::BehaviorVersion::latest())
        .endpoint_url(moto.endpoint_url())
        .build();
    let error = EcrProvider::with_sdk_config(sdk)
        .credentials(&ecr_host())
        .await
        .expect_err("no credentials provider")
        .to_string();
    assert!(error.contains("no AWS credentials configured"), "{error}");
    assert_eq!(moto.get_authorization_token_calls(), 0);
}
