//! The real registry starts in every mode and answers `/v2/` as each mode should; request
//! counting and stop/restart work.

use test_support::*;

fn ping(registry: &Registry) -> HttpResponse {
    let mut req = HttpRequest::get(&format!("{}/v2/", registry.base_url()));
    req.ca_pem = registry.ca_pem().map(str::to_string);
    req.send().expect("registry answers /v2/")
}

#[test]
fn anonymous_registry_answers_200_and_counts_requests() {
    let wd = WorkDir::new("anonymous");
    let registry = Registry::anonymous(&wd);
    let mark = registry.mark();
    assert_eq!(ping(&registry).status, 200);
    let head = HttpRequest::new("HEAD", &format!("{}/v2/org/app/manifests/latest", registry.base_url()))
        .header("Accept", &ALL_MANIFEST_TYPES.join(", "))
        .send()
        .expect("HEAD answers");
    assert_eq!(head.status, 404);
    let log = registry.requests_since(&mark);
    assert_eq!(log.pings(), 1, "{}", log.summary());
    assert_eq!(log.manifest_heads(), 1, "{}", log.summary());
    assert_eq!(log.manifest_gets(), 0, "{}", log.summary());
    assert_eq!(log.for_repository("org/app").len(), 1);
}

#[test]
fn htpasswd_registry_challenges_with_basic_and_accepts_the_user() {
    let wd = WorkDir::new("htpasswd");
    let registry = Registry::start(&wd, RegistryConfig::htpasswd(&[("alice", "s3cret")]));
    let mark = registry.mark();
    let resp = ping(&registry);
    assert_eq!(resp.status, 401);
    let challenge = resp.header("www-authenticate").expect("a challenge");
    assert!(challenge.starts_with("Basic realm="), "{challenge}");

    use base64::Engine as _;
    let basic = base64::engine::general_purpose::STANDARD.encode("alice:s3cret");
    let ok = HttpRequest::get(&format!("{}/v2/", registry.base_url()))
        .header("Authorization", &format!("Basic {basic}"))
        .send()
        .expect("answers");
    assert_eq!(ok.status, 200);
    let head = HttpRequest::new("HEAD", &format!("{}/v2/app/manifests/v1", registry.base_url()))
        .header("Authorization", &format!("Basic {basic}"))
        .send()
        .expect("answers");
    assert_eq!(head.status, 404);
    let log = registry.requests_since(&mark);
    assert_eq!(log.pings(), 2, "{}", log.summary());
    assert_eq!(log.auth_refusals(), 1, "{}", log.summary());
    assert_eq!(log.manifest_heads(), 1, "{}", log.summary());
    // distribution logs the user on repository requests only, not on `/v2/`.
    assert_eq!(log.records[2].user.as_deref(), Some("alice"));
}

#[test]
fn token_registry_challenges_with_bearer_realm_and_service() {
    let wd = WorkDir::new("token-challenge");
    let token = TokenServer::start(&wd, TokenServerConfig::new().realm_path("/v2/token"));
    let registry = Registry::start(&wd, RegistryConfig::token(&token));
    let resp = ping(&registry);
    assert_eq!(resp.status, 401);
    let challenge = resp.header("www-authenticate").expect("a challenge");
    assert!(
        challenge.starts_with(&format!("Bearer realm=\"{}\"", token.realm_url())),
        "{challenge}"
    );
    assert!(
        challenge.contains(&format!("service=\"{}\"", token.service())),
        "{challenge}"
    );
    assert!(token.realm_url().ends_with("/v2/token"));
}

#[test]
fn tls_registry_serves_https_with_the_test_ca_and_restarts_on_the_same_port() {
    let wd = WorkDir::new("tls-restart");
    let ca = TestCa::new(&wd);
    let mut registry = Registry::start(&wd, RegistryConfig::anonymous().tls(&ca));
    assert!(registry.base_url().starts_with("https://127.0.0.1:"));
    assert_eq!(ping(&registry).status, 200);
    // Without the CA the certificate is refused.
    assert!(http_get(&format!("{}/v2/", registry.base_url())).is_err());

    let port = registry.port();
    registry.stop();
    assert!(!registry.is_running());
    let mut req = HttpRequest::get(&format!("{}/v2/", registry.base_url()));
    req.ca_pem = Some(ca.ca_cert_pem.clone());
    assert!(req.send().is_err(), "a stopped registry refuses connections");

    registry.restart();
    assert!(registry.is_running());
    assert_eq!(registry.port(), port);
    assert_eq!(ping(&registry).status, 200);
    // Readiness probes (start and restart) are not counted; the log spans the restart.
    assert_eq!(registry.requests().pings(), 2, "{}", registry.requests().summary());
}

#[test]
fn notifications_are_posted_to_the_configured_endpoint() {
    let wd = WorkDir::new("notifications");
    let receiver = FaultServer::start();
    receiver.on("POST", "/events", [Reply::status(200)]);
    let registry = Registry::start(&wd, RegistryConfig::anonymous().notifications(&receiver.url("/events")));
    let image = build_image(&wd, &ImageSpec::with_content("notify"));
    skopeo::push(
        &image,
        &registry.image_ref("org/app", "latest"),
        ManifestFormat::Oci,
        None,
        &RegistryTls::Plain,
    );
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let pushed_manifest = loop {
        let found = receiver.requests_to("/events").into_iter().find(|r| {
            String::from_utf8_lossy(&r.body).contains(&image.digest)
                && String::from_utf8_lossy(&r.body).contains("\"push\"")
        });
        if let Some(found) = found {
            break found;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no push event for {}; got {:?}",
            image.digest,
            receiver.requests()
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    };
    assert_eq!(
        pushed_manifest.header("content-type"),
        Some("application/vnd.docker.distribution.events.v1+json")
    );
}

#[test]
fn a_registry_that_cannot_start_fails_loudly_with_its_log() {
    let wd = WorkDir::new("broken");
    let auth = TokenAuth {
        realm: "http://127.0.0.1:1/token".into(),
        service: "s".into(),
        issuer: "i".into(),
        rootcertbundle: wd.join("missing.pem"),
    };
    let config = RegistryConfig::with_auth(RegistryAuth::Token(auth));
    let panic = std::panic::catch_unwind(|| Registry::start(&wd, config))
        .expect_err("a registry with a missing rootcertbundle must not start");
    let message = panic.downcast_ref::<String>().cloned().unwrap_or_default();
    assert!(
        message.contains("`docker-registry`) could not start: it exited early"),
        "{message}"
    );
    assert!(
        message.contains("install the Debian package `docker-registry`"),
        "{message}"
    );
    assert!(
        message.contains("missing.pem"),
        "the log tail names the cause: {message}"
    );
    // `wd` outlives the panic here, so this work dir is still deleted normally.
}
