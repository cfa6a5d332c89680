//! The bearer flow end to end against Debian's real `docker-registry` in token and htpasswd
//! mode, with test-support's token server: digests agree with `skopeo inspect`, and the
//! request budget is counted where it is spent — at the registry and at the token server.

use std::sync::Arc;

use auth_ghcr::BearerTokenProvider;
use registry_core::client::{RegistryClient, Transport, TransportConfig};
use registry_core::{Credentials, Digest, ImageReference, KeychainChain, RegistryHost, StaticKeychain};
use test_support::{
    ImageSpec, ManifestFormat, OciLayout, Registry, RegistryConfig, RegistryTls, TokenServer, TokenServerConfig,
    WorkDir, build_image, build_multi_arch, skopeo,
};

const USER: (&str, &str) = ("alice", "pw-alice");

fn parse(reference: &str) -> ImageReference {
    reference.parse().expect("reference")
}

fn host_of(registry: &Registry) -> RegistryHost {
    registry.host().parse().expect("host")
}

/// A client whose default provider is the bearer flow, with `credentials` for `host`.
fn bearer_client(
    host: &RegistryHost,
    credentials: Option<(&str, &str)>,
    batch: usize,
) -> (RegistryClient, Arc<BearerTokenProvider>) {
    let transport = Arc::new(Transport::new(TransportConfig::default()).expect("transport"));
    let mut keychain = KeychainChain::default();
    if let Some((user, password)) = credentials {
        keychain.push(StaticKeychain::new(host.clone(), Credentials::basic(user, password)));
    }
    let provider = Arc::new(BearerTokenProvider::new(transport.clone(), Arc::new(keychain)));
    let client = RegistryClient::new(transport)
        .with_default_provider(provider.clone())
        .with_scope_batch(batch);
    (client, provider)
}

fn token_registry(wd: &WorkDir, config: TokenServerConfig) -> (TokenServer, Registry) {
    let token = TokenServer::start(wd, config);
    let registry = Registry::start(wd, RegistryConfig::token(&token));
    (token, registry)
}

fn private_org() -> TokenServerConfig {
    TokenServerConfig::new()
        .user(USER.0, USER.1, &["org/*"])
        .private("org/*")
}

/// Pushes `image` as `<repository>:latest` for each repository (as [`USER`]); the references.
fn push_latest(registry: &Registry, image: &OciLayout, repositories: &[String]) -> Vec<ImageReference> {
    repositories
        .iter()
        .map(|repository| {
            let reference = registry.image_ref(repository, "latest");
            skopeo::push(image, &reference, ManifestFormat::Oci, Some(USER), &RegistryTls::Plain);
            parse(&reference)
        })
        .collect()
}

fn skopeo_digest(reference: &str) -> Digest {
    skopeo::inspect_digest(reference, Some(USER), &RegistryTls::Plain)
        .parse()
        .expect("skopeo digest")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_mode_digests_match_skopeo_for_oci_docker_and_index_and_move_on_push() {
    let wd = WorkDir::new("ghcr-token-digests");
    let (_token, registry) = token_registry(&wd, private_org());
    let oci = registry.image_ref("org/oci", "latest");
    let docker = registry.image_ref("org/docker", "latest");
    let index = registry.image_ref("org/multi", "latest");
    let creds = Some(USER);
    skopeo::push(
        &build_image(&wd, &ImageSpec::with_content("oci-v1")),
        &oci,
        ManifestFormat::Oci,
        creds,
        &RegistryTls::Plain,
    );
    skopeo::push(
        &build_image(&wd, &ImageSpec::with_content("docker-v1")),
        &docker,
        ManifestFormat::DockerV2,
        creds,
        &RegistryTls::Plain,
    );
    let multi = build_multi_arch(&wd, &ImageSpec::with_content("multi-v1"));
    skopeo::push(&multi, &index, ManifestFormat::Oci, creds, &RegistryTls::Plain);

    let (client, _) = bearer_client(&host_of(&registry), Some(USER), 25);
    for reference in [&oci, &docker, &index] {
        let ours = client.manifest_digest(&parse(reference)).await.expect("digest");
        assert_eq!(ours, skopeo_digest(reference), "{reference}");
    }
    assert_eq!(
        client.manifest_digest(&parse(&index)).await.expect("digest").as_str(),
        multi.digest
    );

    let v2 = build_image(&wd, &ImageSpec::with_content("oci-v2"));
    skopeo::push(&v2, &oci, ManifestFormat::Oci, creds, &RegistryTls::Plain);
    let moved = client.manifest_digest(&parse(&oci)).await.expect("digest");
    assert_eq!(moved.as_str(), v2.digest);
    assert_eq!(moved, skopeo_digest(&oci));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn checking_n_repositories_twice_costs_2n_heads_one_probe_and_ceil_n_over_batch_exchanges() {
    const N: usize = 30;
    const BATCH: usize = 25;
    let wd = WorkDir::new("ghcr-token-budget");
    let (token, registry) = token_registry(&wd, private_org());
    let image = build_image(&wd, &ImageSpec::with_content("budget"));
    let repositories: Vec<String> = (0..N).map(|i| format!("org/app{i:02}")).collect();
    let references = push_latest(&registry, &image, &repositories);
    let (client, _) = bearer_client(&host_of(&registry), Some(USER), BATCH);
    let mark = registry.mark();
    token.clear();

    for _ in 0..2 {
        for (reference, result) in client.manifest_digests(&references, 8).await {
            assert_eq!(result.expect("digest").as_str(), image.digest, "{reference}");
        }
    }

    let log = registry.requests_since(&mark);
    let exchanges = token.requests();
    eprintln!(
        "measured: {} registry requests ({} probe, {} HEAD, {} GET, {} refused), {} token exchanges for {N} repositories x2",
        log.len(),
        log.pings(),
        log.manifest_heads(),
        log.manifest_gets(),
        log.auth_refusals(),
        exchanges.len()
    );
    assert_eq!(log.manifest_heads(), 2 * N, "{}", log.summary());
    assert_eq!(log.manifest_gets(), 0, "{}", log.summary());
    assert_eq!(log.pings(), 1, "one unauthenticated probe: {}", log.summary());
    assert_eq!(log.auth_refusals(), 1, "only the probe is refused: {}", log.summary());
    assert_eq!(log.len(), 2 * N + 1, "{}", log.summary());
    assert_eq!(exchanges.len(), N.div_ceil(BATCH), "{exchanges:?}");
    for exchange in &exchanges {
        assert!(exchange.scopes.len() <= BATCH, "{exchange:?}");
        assert_eq!(exchange.basic_user(), Some(USER.0));
        assert_eq!(exchange.service.as_deref(), Some(token.service().as_str()));
    }
    let stats = client.stats().snapshot();
    assert_eq!(
        (stats.probes, stats.manifest_heads, stats.token_requests),
        (1, 2 * N as u64, N.div_ceil(BATCH) as u64)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_realm_granting_only_the_first_scope_falls_back_to_per_repository_tokens() {
    const N: usize = 6;
    let wd = WorkDir::new("ghcr-token-first-scope");
    let (token, registry) = token_registry(&wd, private_org().max_scopes(1));
    let image = build_image(&wd, &ImageSpec::with_content("first-scope"));
    let repositories: Vec<String> = (0..N).map(|i| format!("org/svc{i}")).collect();
    let references = push_latest(&registry, &image, &repositories);
    let (client, provider) = bearer_client(&host_of(&registry), Some(USER), 3);
    token.clear();
    let mark = registry.mark();
    for (reference, result) in client.manifest_digests(&references, 4).await {
        assert_eq!(result.expect("digest").as_str(), image.digest, "{reference}");
    }
    assert!(provider.batching_disabled(&host_of(&registry)));
    // Two batches (each granted its first scope) and one token per remaining repository.
    assert_eq!(token.exchange_count(), N, "{:?}", token.requests());
    // Every token now cached: a second pass costs no exchange and one HEAD per repository.
    for (reference, result) in client.manifest_digests(&references, 4).await {
        assert_eq!(result.expect("digest").as_str(), image.digest, "{reference}");
    }
    assert_eq!(token.exchange_count(), N);
    let log = registry.requests_since(&mark);
    assert_eq!(log.manifest_heads(), 2 * N, "{}", log.summary());
    assert!(
        token.requests().iter().skip(2).all(|r| r.scopes.len() == 1),
        "{:?}",
        token.requests()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_checks_of_one_repository_share_one_token_exchange() {
    let wd = WorkDir::new("ghcr-token-herd");
    let (token, registry) = token_registry(&wd, private_org());
    let image = build_image(&wd, &ImageSpec::with_content("herd"));
    let reference = registry.image_ref("org/herd", "latest");
    skopeo::push(&image, &reference, ManifestFormat::Oci, Some(USER), &RegistryTls::Plain);
    let (client, _) = bearer_client(&host_of(&registry), Some(USER), 25);
    let client = Arc::new(client);
    token.clear();
    let reference = parse(&reference);
    let checks: Vec<_> = (0..16)
        .map(|_| {
            let client = client.clone();
            let reference = reference.clone();
            tokio::spawn(async move { client.manifest_digest(&reference).await })
        })
        .collect();
    for check in checks {
        assert_eq!(check.await.expect("task").expect("digest").as_str(), image.digest);
    }
    assert_eq!(token.exchange_count(), 1, "{:?}", token.requests());
    assert_eq!(client.stats().snapshot().probes, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn private_repository_without_credentials_is_an_auth_error_naming_host_and_realm() {
    let wd = WorkDir::new("ghcr-token-denied");
    let (token, registry) = token_registry(&wd, private_org());
    let reference = registry.image_ref("org/secret", "latest");
    skopeo::push(
        &build_image(&wd, &ImageSpec::with_content("secret")),
        &reference,
        ManifestFormat::Oci,
        Some(USER),
        &RegistryTls::Plain,
    );
    let (client, _) = bearer_client(&host_of(&registry), None, 25);
    let error = client.manifest_digest(&parse(&reference)).await.expect_err("denied");
    let message = error.to_string();
    assert_eq!(error.kind(), "auth", "{message}");
    assert!(message.contains(&registry.host()), "{message}");
    assert!(message.contains(&token.realm_url()), "{message}");
    assert!(message.contains("configure credentials for"), "{message}");

    let (wrong, _) = client_with_password(&registry, "not-the-password");
    let error = wrong.manifest_digest(&parse(&reference)).await.expect_err("refused");
    let message = error.to_string();
    assert_eq!(error.kind(), "auth", "{message}");
    // The error reaches `/status`: it says which kind of credentials, never the user or password.
    assert!(
        message.contains("basic credentials") && !message.contains("alice") && !message.contains("not-the-password"),
        "{message}"
    );
}

fn client_with_password(registry: &Registry, password: &str) -> (RegistryClient, Arc<BearerTokenProvider>) {
    bearer_client(&host_of(registry), Some((USER.0, password)), 25)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn htpasswd_mode_answers_the_basic_challenge_with_keychain_credentials() {
    let wd = WorkDir::new("ghcr-htpasswd");
    let registry = Registry::start(&wd, RegistryConfig::htpasswd(&[USER]));
    let reference = registry.image_ref("team/app", "v1");
    let image = build_image(&wd, &ImageSpec::with_content("htpasswd"));
    skopeo::push(
        &image,
        &reference,
        ManifestFormat::DockerV2,
        Some(USER),
        &RegistryTls::Plain,
    );

    let expected = skopeo_digest(&reference);
    let (client, _) = bearer_client(&host_of(&registry), Some(USER), 25);
    let mark = registry.mark();
    for _ in 0..2 {
        assert_eq!(
            client.manifest_digest(&parse(&reference)).await.expect("digest"),
            expected
        );
    }
    let log = registry.requests_since(&mark);
    assert_eq!(
        (log.pings(), log.manifest_heads(), log.len()),
        (1, 2, 3),
        "{}",
        log.summary()
    );

    let (anonymous, _) = bearer_client(&host_of(&registry), None, 25);
    let error = anonymous
        .manifest_digest(&parse(&reference))
        .await
        .expect_err("needs credentials");
    let message = error.to_string();
    assert_eq!(error.kind(), "auth", "{message}");
    assert!(
        message.contains("needs credentials") && message.contains(&registry.host()),
        "{message}"
    );
}
