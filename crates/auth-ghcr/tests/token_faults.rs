//! The bearer flow against scripted registries and token endpoints: challenges without
//! `service`, realms on another host, `access_token`, identity tokens, opaque batch tokens a
//! registry refuses, malformed and failing token endpoints, and realms credentials must not
//! reach.

use std::sync::Arc;
use std::time::{Duration, Instant};

use auth_ghcr::BearerTokenProvider;
use registry_core::client::{RegistryClient, Transport, TransportConfig};
use registry_core::{
    Challenge, Credentials, Digest, ImageReference, KeychainChain, RegistryHost, Scope, StaticKeychain, TokenProvider,
};
use rstest::rstest;
use serde_json::json;
use test_support::{FaultServer, Reply};

const MANIFEST: &[u8] = br#"{"schemaVersion":2}"#;

fn quick_transport() -> Arc<Transport> {
    Arc::new(
        Transport::new(TransportConfig {
            connect_timeout: Duration::from_millis(500),
            request_timeout: Duration::from_millis(800),
            ..TransportConfig::default()
        })
        .expect("transport"),
    )
}

fn host(server: &FaultServer) -> RegistryHost {
    server.host().parse().expect("host")
}

fn setup(registry: &FaultServer, credentials: Option<Credentials>) -> (RegistryClient, Arc<BearerTokenProvider>) {
    let transport = quick_transport();
    let mut keychain = KeychainChain::default();
    if let Some(credentials) = credentials {
        keychain.push(StaticKeychain::new(host(registry), credentials));
    }
    let provider = Arc::new(BearerTokenProvider::new(transport.clone(), Arc::new(keychain)));
    (
        RegistryClient::new(transport).with_default_provider(provider.clone()),
        provider,
    )
}

fn image(registry: &FaultServer, repository: &str) -> ImageReference {
    format!("{}/{repository}:latest", registry.host())
        .parse()
        .expect("reference")
}

fn ok_head(registry: &FaultServer, repository: &str) {
    registry.on(
        "HEAD",
        &format!("/v2/{repository}/manifests/latest"),
        [Reply::status(200).header("Docker-Content-Digest", Digest::sha256_of(MANIFEST).as_str())],
    );
}

fn challenge_to(registry: &FaultServer, challenge: &str) {
    registry.on("GET", "/v2/", [Reply::unauthorized(&[challenge])]);
}

/// The challenge of a registry that is its own token realm at `path`, with service `svc`.
fn svc_challenge(registry: &FaultServer, path: &str) -> String {
    format!(r#"Bearer realm="{}",service="svc""#, registry.url(path))
}

/// A registry whose `/v2/` challenges with [`svc_challenge`] for its own `path`.
fn self_realm_registry(path: &str) -> FaultServer {
    let registry = FaultServer::start();
    challenge_to(&registry, &svc_challenge(&registry, path));
    registry
}

/// The `Authorization` each request to `path` carried, `-` for none.
fn authorizations(registry: &FaultServer, path: &str) -> Vec<String> {
    registry
        .requests_to(path)
        .iter()
        .map(|r| r.authorization().unwrap_or("-").to_owned())
        .collect()
}

fn query_pairs(query: Option<&str>) -> Vec<(String, String)> {
    url::form_urlencoded::parse(query.unwrap_or("").as_bytes())
        .into_owned()
        .collect()
}

#[tokio::test]
async fn realm_on_another_host_gets_basic_credentials_and_the_registry_the_token() {
    let registry = FaultServer::start();
    let auth = FaultServer::start();
    challenge_to(
        &registry,
        &format!(r#"Bearer realm="{}",service="reg.example""#, auth.url("/oauth/token")),
    );
    auth.on(
        "GET",
        "/oauth/token",
        [Reply::json(200, &json!({"token": "tok-1", "expires_in": 300}))],
    );
    ok_head(&registry, "org/app");
    let (client, _) = setup(&registry, Some(Credentials::basic("alice", "pw")));
    client
        .manifest_digest(&image(&registry, "org/app"))
        .await
        .expect("digest");

    let exchanges = auth.requests_to("/oauth/token");
    assert_eq!(exchanges.len(), 1);
    assert!(exchanges[0].authorization().is_some_and(|a| a.starts_with("Basic ")));
    assert_eq!(
        query_pairs(exchanges[0].query.as_deref()),
        vec![
            ("service".into(), "reg.example".into()),
            ("scope".into(), "repository:org/app:pull".into())
        ]
    );
    let heads = registry.requests_to("/v2/org/app/manifests/latest");
    assert_eq!(heads[0].authorization(), Some("Bearer tok-1"));
}

#[tokio::test]
async fn challenge_without_service_sends_no_service_and_repeats_scopes() {
    let registry = FaultServer::start();
    challenge_to(&registry, &format!(r#"Bearer realm="{}""#, registry.url("/v2/token")));
    registry.on(
        "GET",
        "/v2/token",
        [Reply::json(200, &json!({"access_token": "tok-2"}))],
    );
    ok_head(&registry, "a");
    ok_head(&registry, "b/c");
    let (client, _) = setup(&registry, None);
    let results = client
        .manifest_digests(&[image(&registry, "a"), image(&registry, "b/c")], 2)
        .await;
    assert!(results.iter().all(|(_, r)| r.is_ok()), "{results:?}");
    let exchanges = registry.requests_to("/v2/token");
    assert_eq!(exchanges.len(), 1, "both repositories in one exchange");
    assert_eq!(exchanges[0].authorization(), None, "anonymous without credentials");
    assert_eq!(
        query_pairs(exchanges[0].query.as_deref()),
        vec![
            ("scope".into(), "repository:a:pull".into()),
            ("scope".into(), "repository:b/c:pull".into())
        ]
    );
    for repository in ["a", "b/c"] {
        let heads = registry.requests_to(&format!("/v2/{repository}/manifests/latest"));
        assert_eq!(heads[0].authorization(), Some("Bearer tok-2"));
    }
}

#[tokio::test]
async fn identity_token_is_exchanged_with_an_oauth2_refresh_grant() {
    let registry = self_realm_registry("/oauth2/token");
    registry.on(
        "POST",
        "/oauth2/token",
        [Reply::json(200, &json!({"access_token": "tok-3"}))],
    );
    ok_head(&registry, "org/app");
    let (client, _) = setup(&registry, Some(Credentials::IdentityToken("refresh-me".into())));
    client
        .manifest_digest(&image(&registry, "org/app"))
        .await
        .expect("digest");
    let posts = registry.requests_to("/oauth2/token");
    assert_eq!(posts.len(), 1);
    let form: Vec<(String, String)> = url::form_urlencoded::parse(&posts[0].body).into_owned().collect();
    for expected in [
        ("grant_type", "refresh_token"),
        ("refresh_token", "refresh-me"),
        ("service", "svc"),
        ("scope", "repository:org/app:pull"),
        ("client_id", "imagewatch"),
    ] {
        assert!(
            form.iter().any(|(k, v)| k == expected.0 && v == expected.1),
            "{expected:?} in {form:?}"
        );
    }
}

#[tokio::test]
async fn an_opaque_batch_token_refused_for_one_repository_falls_back_to_per_repository_tokens() {
    let registry = self_realm_registry("/token");
    registry.on(
        "GET",
        "/token",
        [
            Reply::json(200, &json!({"token": "batch-token"})),
            Reply::json(200, &json!({"token": "single-token"})),
        ],
    );
    ok_head(&registry, "a");
    registry.on(
        "HEAD",
        "/v2/b/manifests/latest",
        [
            Reply::unauthorized(&[&format!(
                r#"Bearer realm="{}",service="svc",scope="repository:b:pull",error="insufficient_scope""#,
                registry.url("/token")
            )]),
            Reply::status(200).header("Docker-Content-Digest", Digest::sha256_of(MANIFEST).as_str()),
        ],
    );
    let (client, provider) = setup(&registry, None);
    let images = [image(&registry, "a"), image(&registry, "b")];
    for (reference, result) in client.manifest_digests(&images, 1).await {
        result.unwrap_or_else(|e| panic!("{reference}: {e}"));
    }
    assert!(provider.batching_disabled(&host(&registry)));
    let sent = authorizations(&registry, "/v2/b/manifests/latest");
    assert_eq!(sent, vec!["Bearer batch-token", "Bearer single-token"]);
    // Warm: both repositories have a token, so the next pass exchanges nothing.
    for (_, result) in client.manifest_digests(&images, 1).await {
        result.expect("digest");
    }
    assert_eq!(registry.requests_to("/token").len(), 2);
    assert_eq!(
        registry
            .requests_to("/v2/a/manifests/latest")
            .last()
            .and_then(|r| r.authorization().map(str::to_owned)),
        Some("Bearer batch-token".into())
    );
}

#[rstest]
#[case::not_json(Reply::status(200).body("<html>gateway</html>"), "auth", "not a JSON object")]
#[case::no_token_field(Reply::json(200, &json!({"expires_in": 60})), "auth", "no `token`")]
#[case::refused(Reply::json(401, &json!({"errors": []})), "auth", "refused")]
#[case::server_error(Reply::status(503), "unreachable", "HTTP 503")]
#[case::rate_limited(Reply::too_many_requests(30), "unreachable", "429")]
#[case::hangs(Reply::hang(), "unreachable", "did not answer")]
#[case::oversized(Reply::status(200).body(vec![b' '; 2 * 1024 * 1024]), "auth", "1048576-byte cap")]
#[tokio::test]
async fn a_failing_token_endpoint_is_a_clear_error_naming_the_realm(
    #[case] reply: Reply,
    #[case] kind: &str,
    #[case] expected: &str,
) {
    let registry = self_realm_registry("/token");
    let realm = registry.url("/token");
    registry.on("GET", "/token", [reply]);
    let (client, _) = setup(&registry, Some(Credentials::basic("alice", "s3cret-pw")));
    let started = Instant::now();
    let error = client
        .manifest_digest(&image(&registry, "org/app"))
        .await
        .expect_err("no token");
    let message = error.to_string();
    assert_eq!(error.kind(), kind, "{message}");
    assert!(message.contains(&realm) && message.contains(expected), "{message}");
    assert!(!message.contains("s3cret-pw"), "{message}");
    assert!(started.elapsed() < Duration::from_secs(3));
    assert!(
        registry.requests_to("/v2/org/app/manifests/latest").is_empty(),
        "no manifest request without a token"
    );
}

#[tokio::test]
async fn a_plain_http_realm_on_a_remote_host_gets_no_credentials_and_no_request() {
    let registry = FaultServer::start();
    challenge_to(&registry, r#"Bearer realm="http://example.com/token",service="svc""#);
    let (client, _) = setup(&registry, Some(Credentials::basic("alice", "s3cret-pw")));
    let error = client
        .manifest_digest(&image(&registry, "org/app"))
        .await
        .expect_err("refused");
    let message = error.to_string();
    assert_eq!(error.kind(), "insecure", "{message}");
    assert!(
        message.contains("http://example.com/token") && message.contains("plain http"),
        "{message}"
    );
    let stats = client.stats().snapshot();
    // The one transport error is the probe's https attempt at the plain-http test registry,
    // before it fell back to http; nothing at all went towards example.com.
    assert_eq!(
        (stats.token_requests, stats.transport_errors),
        (0, 1),
        "nothing was sent: {stats:?}"
    );
}

#[tokio::test]
async fn basic_challenge_without_credentials_goes_anonymous() {
    let registry = FaultServer::start();
    let provider = BearerTokenProvider::new(quick_transport(), Arc::new(KeychainChain::default()));
    let challenge = Challenge::parse_header(r#"Basic realm="Registry Realm""#).expect("parses");
    let answer = provider
        .authorization(&host(&registry), &challenge[0], &[Scope::pull("a")])
        .await
        .expect("ok");
    assert_eq!(answer, None);
}

#[tokio::test]
async fn engine_credentials_come_from_the_keychain_for_the_host() {
    let registry = FaultServer::start();
    let (_, provider) = setup(&registry, Some(Credentials::basic("alice", "pw")));
    let credentials = provider.engine_credentials(&host(&registry)).await.expect("ok");
    assert_eq!(
        credentials.and_then(|c| c.username().map(str::to_owned)),
        Some("alice".into())
    );
    let other: RegistryHost = "other.example.com".parse().expect("host");
    assert_eq!(provider.engine_credentials(&other).await.expect("ok"), None);
}

#[tokio::test]
async fn a_token_past_its_lifetime_is_exchanged_again() {
    let registry = self_realm_registry("/token");
    // Issued 58 s ago with 60 s to live: within the safety margin, so never reused.
    let issued_at = humantime::format_rfc3339(std::time::SystemTime::now() - Duration::from_secs(58)).to_string();
    registry.on(
        "GET",
        "/token",
        [
            Reply::json(200, &json!({"token": "old", "expires_in": 60, "issued_at": issued_at})),
            Reply::json(200, &json!({"token": "new", "expires_in": 300})),
        ],
    );
    ok_head(&registry, "org/app");
    let (client, provider) = setup(&registry, None);
    for _ in 0..3 {
        client
            .manifest_digest(&image(&registry, "org/app"))
            .await
            .expect("digest");
    }
    let sent = authorizations(&registry, "/v2/org/app/manifests/latest");
    assert_eq!(sent, vec!["Bearer old", "Bearer new", "Bearer new"]);
    assert_eq!(registry.requests_to("/token").len(), 2);
    assert_eq!(provider.cached_tokens(), 1);
}

#[tokio::test]
async fn a_cancelled_exchange_does_not_strand_the_next_caller() {
    let registry = self_realm_registry("/token");
    registry.on(
        "GET",
        "/token",
        [
            Reply::json(200, &json!({"token": "slow"})).delay(Duration::from_millis(400)),
            Reply::json(200, &json!({"token": "fast"})),
        ],
    );
    let provider = Arc::new(BearerTokenProvider::new(
        quick_transport(),
        Arc::new(KeychainChain::default()),
    ));
    let challenge = Challenge::parse_header(&svc_challenge(&registry, "/token"))
        .expect("parses")
        .remove(0);
    let first = {
        let (provider, challenge, host) = (provider.clone(), challenge.clone(), host(&registry));
        tokio::spawn(async move { provider.authorization(&host, &challenge, &[Scope::pull("a")]).await })
    };
    tokio::time::sleep(Duration::from_millis(100)).await;
    first.abort();
    let _ = first.await;
    let answer = tokio::time::timeout(
        Duration::from_secs(2),
        provider.authorization(&host(&registry), &challenge, &[Scope::pull("a")]),
    )
    .await
    .expect("the second caller is not left waiting on the cancelled exchange")
    .expect("token")
    .expect("authorization");
    assert_eq!(answer.header_value(), "Bearer fast");
}

/// Counts lookups: a credential helper is a process per lookup, so the warm path must ask none.
#[derive(Debug, Default)]
struct CountingKeychain(std::sync::atomic::AtomicUsize);

impl registry_core::Keychain for CountingKeychain {
    fn credentials(&self, _: &RegistryHost) -> Result<Option<Credentials>, registry_core::KeychainError> {
        self.0.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        Ok(Some(Credentials::basic("alice", "pw")))
    }
}

#[tokio::test]
async fn a_cached_token_is_served_without_asking_the_keychain_again() {
    let registry = FaultServer::start();
    registry.on(
        "GET",
        "/token",
        [Reply::json(200, &json!({"token": "tok", "expires_in": 300}))],
    );
    let keychain = Arc::new(CountingKeychain::default());
    let provider = BearerTokenProvider::new(quick_transport(), keychain.clone());
    let challenge = Challenge::parse_header(&svc_challenge(&registry, "/token"))
        .expect("parses")
        .remove(0);
    for _ in 0..3 {
        let answer = provider
            .authorization(&host(&registry), &challenge, &[Scope::pull("a")])
            .await
            .expect("token")
            .expect("authorization");
        assert_eq!(answer.header_value(), "Bearer tok");
    }
    assert_eq!(registry.requests_to("/token").len(), 1);
    assert_eq!(
        keychain.0.load(std::sync::atomic::Ordering::SeqCst),
        1,
        "one lookup for the exchange, none for the cached token"
    );
}

#[tokio::test]
async fn a_refused_batch_exchange_fails_its_images_without_manifest_requests() {
    let registry = self_realm_registry("/token");
    registry.on("GET", "/token", [Reply::json(401, &json!({"errors": []}))]);
    let (client, _) = setup(&registry, None);
    let images = [image(&registry, "a"), image(&registry, "b"), image(&registry, "a")];
    let results = client.manifest_digests(&images, 2).await;
    assert_eq!(results.len(), 3);
    for (reference, result) in &results {
        let error = result.as_ref().expect_err("refused");
        assert_eq!(error.kind(), "auth", "{reference}: {error}");
    }
    assert_eq!(
        registry.requests_to("/token").len(),
        1,
        "one batch exchange for a and b"
    );
    assert!(registry.requests_to("/v2/a/manifests/latest").is_empty());
    assert!(registry.requests_to("/v2/b/manifests/latest").is_empty());
}
