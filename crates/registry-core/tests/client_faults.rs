//! The registry client against scripted faults a real registry cannot produce on demand:
//! missing digest headers, refused HEADs, rate limits, errors, hangs, redirects to another
//! origin, rejected tokens and Harbor's switch to Basic.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use registry_core::client::{RegistryClient, RegistryError, Transport, TransportConfig};
use registry_core::{
    AuthError, AuthScheme, Authorization, Challenge, Credentials, Digest, ImageReference, RegistryHost, Scope,
    TokenProvider,
};
use rstest::rstest;
use test_support::{FaultServer, Reply};

const BEARER_CHALLENGE: &str = r#"Bearer realm="https://auth.example.com/token",service="fault""#;
const MANIFEST: &[u8] = br#"{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json"}"#;

/// Answers Bearer challenges with a fixed token and Basic ones with fixed credentials;
/// counts what it was asked.
#[derive(Debug, Default)]
struct FixedProvider {
    calls: AtomicUsize,
    rejects: AtomicUsize,
}

#[async_trait]
impl TokenProvider for FixedProvider {
    async fn authorization(
        &self,
        _host: &RegistryHost,
        challenge: &Challenge,
        _scopes: &[Scope],
    ) -> Result<Option<Authorization>, AuthError> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        Ok(match challenge.scheme() {
            AuthScheme::Bearer => Some(Authorization::bearer("fixed-token")),
            _ => Authorization::from_credentials(&Credentials::basic("user", "pw")),
        })
    }

    fn reject(&self, _host: &RegistryHost, _scopes: &[Scope]) {
        self.rejects.fetch_add(1, Ordering::SeqCst);
    }

    async fn engine_credentials(&self, _host: &RegistryHost) -> Result<Option<Credentials>, AuthError> {
        Ok(None)
    }
}

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

fn client_for(server: &FaultServer) -> (RegistryClient, Arc<FixedProvider>) {
    let provider = Arc::new(FixedProvider::default());
    let host: RegistryHost = server.host().parse().expect("host");
    let client = RegistryClient::new(quick_transport()).with_provider(host, provider.clone(), "configure credentials");
    (client, provider)
}

fn reference(server: &FaultServer, rest: &str) -> ImageReference {
    format!("{}/{rest}", server.host()).parse().expect("reference")
}

fn digest_of(bytes: &[u8]) -> Digest {
    Digest::sha256_of(bytes)
}

/// A fault server whose `/v2/` answers 200 without a challenge.
fn anonymous_registry() -> FaultServer {
    let server = FaultServer::start();
    server.on("GET", "/v2/", [Reply::status(200)]);
    server
}

/// A fault server whose `/v2/` challenges with [`BEARER_CHALLENGE`].
fn bearer_registry() -> FaultServer {
    let server = FaultServer::start();
    server.on("GET", "/v2/", [Reply::unauthorized(&[BEARER_CHALLENGE])]);
    server
}

/// A 200 whose `Docker-Content-Digest` is [`MANIFEST`]'s digest.
fn ok_digest() -> Reply {
    Reply::status(200).header("Docker-Content-Digest", digest_of(MANIFEST).as_str())
}

/// One manifest check of `server`/`rest` with a fresh [`client_for`] client.
async fn check(server: &FaultServer, rest: &str) -> Result<Digest, RegistryError> {
    let (client, _) = client_for(server);
    client.manifest_digest(&reference(server, rest)).await
}

fn manifest_path(name: &str, tag: &str) -> String {
    format!("/v2/{name}/manifests/{tag}")
}

fn count(server: &FaultServer, method: &str, path: &str) -> usize {
    server.requests_to(path).iter().filter(|r| r.method == method).count()
}

#[tokio::test]
async fn head_without_digest_header_falls_back_to_get_and_hashes_the_exact_body() {
    let server = anonymous_registry();
    let path = manifest_path("org/app", "latest");
    server.on("HEAD", &path, [Reply::status(200)]);
    server.on("GET", &path, [Reply::status(200).body(MANIFEST)]);
    let digest = check(&server, "org/app:latest").await.expect("digest");
    assert_eq!(digest, digest_of(MANIFEST));
    assert_eq!((count(&server, "HEAD", &path), count(&server, "GET", &path)), (1, 1));
}

#[rstest]
#[case::head_not_allowed(405)]
#[case::not_found_on_head_only(404)]
#[tokio::test]
async fn refused_head_falls_back_to_get(#[case] head_status: u16) {
    let server = anonymous_registry();
    let path = manifest_path("org/app", "v1");
    server.on("HEAD", &path, [Reply::status(head_status)]);
    server.on(
        "GET",
        &path,
        [Reply::status(200)
            .header("Docker-Content-Digest", digest_of(MANIFEST).as_str())
            .body(MANIFEST)],
    );
    let digest = check(&server, "org/app:v1").await.expect("digest");
    assert_eq!(digest, digest_of(MANIFEST));
    // Every manifest request carried all four media types.
    for request in server.requests_to(&path) {
        let accept = request.header("accept").expect("Accept");
        for media_type in test_support::ALL_MANIFEST_TYPES {
            assert!(accept.contains(media_type), "{accept}");
        }
    }
}

#[tokio::test]
async fn rate_limit_error_carries_retry_after() {
    let server = anonymous_registry();
    server.on(
        "HEAD",
        &manifest_path("org/app", "latest"),
        [Reply::too_many_requests(42)],
    );
    let error = check(&server, "org/app:latest").await.expect_err("rate limited");
    assert_eq!(error.kind(), "rate_limited");
    assert_eq!(error.retry_after(), Some(Duration::from_secs(42)));
}

#[rstest]
#[case::internal_error(500, "server")]
#[case::bad_gateway(502, "server")]
#[case::forbidden(403, "auth")]
#[case::not_found_everywhere(404, "not_found")]
#[tokio::test]
async fn error_statuses_map_to_kinds(#[case] status: u16, #[case] kind: &str) {
    let server = anonymous_registry();
    server.on("*", &manifest_path("org/app", "latest"), [Reply::status(status)]);
    let error = check(&server, "org/app:latest").await.expect_err("fails");
    assert_eq!(error.kind(), kind, "{error}");
    assert!(error.to_string().contains(&server.host()), "{error}");
}

#[tokio::test]
async fn a_registry_that_never_answers_fails_within_the_timeout() {
    let server = anonymous_registry();
    server.on("HEAD", &manifest_path("org/app", "latest"), [Reply::hang()]);
    let (client, _) = client_for(&server);
    let started = Instant::now();
    let error = client
        .manifest_digest(&reference(&server, "org/app:latest"))
        .await
        .expect_err("times out");
    assert!(matches!(error, RegistryError::Timeout { .. }), "{error}");
    assert!(started.elapsed() < Duration::from_secs(3), "{:?}", started.elapsed());
}

#[tokio::test]
async fn a_closed_port_is_unreachable() {
    let port = test_support::free_port();
    let host: RegistryHost = format!("127.0.0.1:{port}").parse().expect("host");
    let client = RegistryClient::new(quick_transport());
    let error = client
        .manifest_digest(&format!("{host}/org/app:latest").parse().expect("reference"))
        .await
        .expect_err("unreachable");
    assert_eq!(error.kind(), "unreachable", "{error}");
}

#[rstest]
#[case::not_a_digest("sha256:nothex")]
#[case::unknown_algorithm("md5:d41d8cd98f00b204e9800998ecf8427e")]
#[tokio::test]
async fn a_malformed_digest_header_is_malformed(#[case] header: &str) {
    let server = anonymous_registry();
    server.on(
        "HEAD",
        &manifest_path("org/app", "latest"),
        [Reply::status(200).header("Docker-Content-Digest", header)],
    );
    let error = check(&server, "org/app:latest").await.expect_err("malformed");
    assert_eq!(error.kind(), "malformed", "{error}");
}

#[tokio::test]
async fn get_body_that_does_not_match_its_digest_header_is_malformed() {
    let server = anonymous_registry();
    let path = manifest_path("org/app", "latest");
    server.on("HEAD", &path, [Reply::status(405)]);
    server.on(
        "GET",
        &path,
        [Reply::status(200)
            .header("Docker-Content-Digest", digest_of(b"other").as_str())
            .body(MANIFEST)],
    );
    let error = check(&server, "org/app:latest").await.expect_err("mismatch");
    assert_eq!(error.kind(), "malformed", "{error}");
}

#[tokio::test]
async fn oversized_manifest_body_is_refused_naming_the_cap() {
    let server = anonymous_registry();
    let path = manifest_path("org/app", "latest");
    server.on("HEAD", &path, [Reply::status(200)]);
    server.on("GET", &path, [Reply::status(200).body(vec![b'x'; 4096])]);
    let transport = Transport::new(TransportConfig {
        max_manifest_bytes: 1024,
        ..TransportConfig::default()
    })
    .expect("transport");
    let client = RegistryClient::new(Arc::new(transport));
    let error = client
        .manifest_digest(&reference(&server, "org/app:latest"))
        .await
        .expect_err("too large");
    assert_eq!(error.kind(), "malformed", "{error}");
    assert!(error.to_string().contains("1024-byte cap"), "{error}");
}

#[tokio::test]
async fn pinned_reference_is_verified_against_the_answer() {
    let server = anonymous_registry();
    let pinned = digest_of(b"pinned");
    let path = manifest_path("org/app", pinned.as_str());
    server.on(
        "HEAD",
        &path,
        [Reply::status(200).header("Docker-Content-Digest", digest_of(b"other").as_str())],
    );
    let error = check(&server, &format!("org/app@{pinned}"))
        .await
        .expect_err("mismatch");
    assert!(matches!(error, RegistryError::DigestMismatch { .. }), "{error}");
}

#[tokio::test]
async fn warm_check_is_exactly_one_head_after_a_single_probe() {
    let server = bearer_registry();
    let path = manifest_path("org/app", "latest");
    server.on("HEAD", &path, [ok_digest()]);
    let (client, _) = client_for(&server);
    let image = reference(&server, "org/app:latest");
    for _ in 0..3 {
        client.manifest_digest(&image).await.expect("digest");
    }
    assert_eq!(server.requests_to("/v2/").len(), 1, "one probe");
    let heads = server.requests_to(&path);
    assert_eq!(heads.len(), 3, "one HEAD per check");
    assert!(heads.iter().all(|r| r.authorization() == Some("Bearer fixed-token")));
    let stats = client.stats().snapshot();
    assert_eq!((stats.probes, stats.manifest_heads, stats.manifest_gets), (1, 3, 0));
}

#[tokio::test]
async fn concurrent_first_checks_share_one_probe() {
    let server = FaultServer::start();
    server.on(
        "GET",
        "/v2/",
        [Reply::unauthorized(&[BEARER_CHALLENGE]).delay(Duration::from_millis(100))],
    );
    server.on("HEAD", "/v2/*", [ok_digest()]);
    let images: Vec<ImageReference> = (0..10)
        .map(|i| reference(&server, &format!("org/app{i}:latest")))
        .collect();
    // Separate manifest_digest calls: the batch API probes before its checks start, so only
    // these race on the unknown host.
    let (client, _) = client_for(&server);
    let results = futures_util::future::join_all(images.iter().map(|image| client.manifest_digest(image))).await;
    assert!(results.iter().all(Result::is_ok), "{results:?}");
    assert_eq!(server.requests_to("/v2/").len(), 1);
    // The batch API on a fresh client probes once too.
    let (client, _) = client_for(&server);
    let results = client.manifest_digests(&images, 10).await;
    assert!(results.iter().all(|(_, r)| r.is_ok()), "{results:?}");
    assert_eq!(server.requests_to("/v2/").len(), 2);
}

#[rstest]
#[case::invalid_token("invalid_token", "twice (invalid_token)")]
#[case::insufficient_scope("insufficient_scope", "pull access to org/app is not granted")]
#[tokio::test]
async fn rejected_token_is_refreshed_once_then_a_clear_error(#[case] problem: &str, #[case] expected: &str) {
    let server = bearer_registry();
    let challenge = format!(
        r#"Bearer realm="https://auth.example.com/token",service="fault",scope="repository:org/app:pull",error="{problem}""#
    );
    let path = manifest_path("org/app", "latest");
    server.on("HEAD", &path, [Reply::unauthorized(&[&challenge])]);
    let (client, provider) = client_for(&server);
    let error = client
        .manifest_digest(&reference(&server, "org/app:latest"))
        .await
        .expect_err("refused");
    assert_eq!(error.kind(), "auth");
    let message = error.to_string();
    assert!(message.contains(expected), "{message}");
    assert!(
        message.contains(&server.host()) && message.contains("auth.example.com"),
        "{message}"
    );
    assert!(!message.contains("fixed-token"), "{message}");
    assert_eq!(server.requests_to(&path).len(), 2, "one retry only");
    assert_eq!(provider.rejects.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn harbor_switch_to_basic_is_followed_from_the_new_challenge() {
    let server = bearer_registry();
    let path = manifest_path("org/app", "latest");
    server.on(
        "HEAD",
        &path,
        [Reply::unauthorized(&[r#"Basic realm="harbor""#]), ok_digest()],
    );
    let (client, _) = client_for(&server);
    let image = reference(&server, "org/app:latest");
    client.manifest_digest(&image).await.expect("digest after the switch");
    client.manifest_digest(&image).await.expect("warm digest");
    let heads = server.requests_to(&path);
    let sent: Vec<_> = heads
        .iter()
        .map(|r| r.authorization().unwrap_or("-").to_owned())
        .collect();
    assert_eq!(heads.len(), 3, "{sent:?}");
    assert!(sent[0].starts_with("Bearer "), "{sent:?}");
    assert!(
        sent[1].starts_with("Basic ") && sent[2].starts_with("Basic "),
        "{sent:?}"
    );
}

#[tokio::test]
async fn anonymous_registry_that_challenges_on_a_manifest_is_answered_then_remembered() {
    let server = anonymous_registry();
    let path = manifest_path("org/app", "latest");
    server.on("HEAD", &path, [Reply::unauthorized(&[BEARER_CHALLENGE]), ok_digest()]);
    let (client, _) = client_for(&server);
    let image = reference(&server, "org/app:latest");
    client.manifest_digest(&image).await.expect("digest");
    client.manifest_digest(&image).await.expect("digest");
    let sent: Vec<_> = server
        .requests_to(&path)
        .iter()
        .map(|r| r.authorization().map(str::to_owned))
        .collect();
    assert_eq!(
        sent,
        vec![
            None,
            Some("Bearer fixed-token".into()),
            Some("Bearer fixed-token".into())
        ]
    );
}

#[tokio::test]
async fn a_401_without_credentials_configured_names_what_to_configure() {
    let server = FaultServer::start();
    server.on(
        "GET",
        "/v2/",
        [Reply::unauthorized(&[r#"Basic realm="Registry Realm""#])],
    );
    server.on(
        "HEAD",
        &manifest_path("org/app", "latest"),
        [Reply::unauthorized(&[r#"Basic realm="Registry Realm""#])],
    );
    // No provider at all for this host.
    let client = RegistryClient::new(quick_transport());
    let error = client
        .manifest_digest(&reference(&server, "org/app:latest"))
        .await
        .expect_err("needs credentials");
    let message = error.to_string();
    assert_eq!(error.kind(), "auth");
    assert!(message.contains(&server.host()), "{message}");
    assert!(message.contains("Registry Realm"), "{message}");
    // With no provider wired, the client can only say what is missing; the wiring's hints
    // (which variables, which file) are registry-auth's and tested there.
    assert!(message.contains("configure credentials for"), "{message}");
}

#[rstest]
#[case::temporary(307)]
#[case::permanent(308)]
#[case::found(302)]
#[tokio::test]
async fn credentials_are_not_carried_to_another_origin_on_redirect(#[case] status: u16) {
    let registry = bearer_registry();
    let elsewhere = FaultServer::start();
    let path = manifest_path("org/app", "latest");
    registry.on(
        "HEAD",
        &path,
        [Reply::redirect(status, &elsewhere.url("/moved/manifest"))],
    );
    elsewhere.on("HEAD", "/moved/manifest", [ok_digest()]);
    let (client, _) = client_for(&registry);
    let digest = client
        .manifest_digest(&reference(&registry, "org/app:latest"))
        .await
        .expect("digest via the redirect");
    assert_eq!(digest, digest_of(MANIFEST));
    assert_eq!(
        registry.requests_to(&path)[0].authorization(),
        Some("Bearer fixed-token"),
        "the registry itself gets the token"
    );
    let moved = elsewhere.requests();
    assert_eq!(moved.len(), 1);
    assert_eq!(moved[0].authorization(), None, "the other origin must not get it");
    assert_eq!(client.stats().snapshot().redirects, 1);
}

#[tokio::test]
async fn credentials_follow_a_redirect_within_the_same_origin() {
    let registry = bearer_registry();
    let path = manifest_path("org/app", "latest");
    registry.on("HEAD", &path, [Reply::redirect(307, "/v2/org/app/manifests/moved")]);
    registry.on("HEAD", "/v2/org/app/manifests/moved", [ok_digest()]);
    check(&registry, "org/app:latest").await.expect("digest");
    assert_eq!(
        registry.requests_to("/v2/org/app/manifests/moved")[0].authorization(),
        Some("Bearer fixed-token")
    );
}

#[tokio::test]
async fn endless_redirects_end_in_a_clear_error() {
    let registry = anonymous_registry();
    let path = manifest_path("org/app", "latest");
    registry.on("HEAD", &path, [Reply::redirect(302, &path)]);
    let error = check(&registry, "org/app:latest").await.expect_err("loop");
    assert!(error.to_string().contains("redirects"), "{error}");
}
