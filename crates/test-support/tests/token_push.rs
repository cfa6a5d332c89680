//! End to end through the real registry in token mode: skopeo authenticates at the
//! TokenServer with Basic credentials, so a successful push proves the registry accepts our
//! JWTs. Also the image builder's determinism, Docker v2 and multi-arch pushes.

use test_support::*;

const USER: (&str, &str) = ("alice", "pw-alice");

fn token_registry(wd: &WorkDir) -> (TokenServer, Registry) {
    let token = TokenServer::start(
        wd,
        TokenServerConfig::new()
            .user(USER.0, USER.1, &["org/*"])
            .private("org/private"),
    );
    let registry = Registry::start(wd, RegistryConfig::token(&token));
    (token, registry)
}

#[test]
fn images_are_deterministic() {
    let wd = WorkDir::new("determinism");
    let a = build_image(&wd, &ImageSpec::with_content("one"));
    let b = build_image(&wd, &ImageSpec::with_content("one"));
    let c = build_image(&wd, &ImageSpec::with_content("two"));
    assert_eq!(a.digest, b.digest);
    assert_ne!(a.digest, c.digest);
    let multi = build_multi_arch(&wd, &ImageSpec::with_content("one"));
    assert!(multi.is_index());
    assert_eq!(multi.manifests.len(), 2);
    assert_ne!(multi.manifests[0].digest, multi.manifests[1].digest);
    assert_eq!(
        multi.digest,
        build_multi_arch(&wd, &ImageSpec::with_content("one")).digest
    );
    let bb1 = build_image(&wd, &ImageSpec::busybox("1.0"));
    let bb2 = build_image(&wd, &ImageSpec::busybox("2.0"));
    assert_ne!(bb1.digest, bb2.digest);
    let config: serde_json::Value =
        serde_json::from_slice(&bb1.blob(&bb1.manifests[0].config_digest)).expect("config JSON");
    assert_eq!(config["config"]["Labels"]["org.opencontainers.image.version"], "1.0");
    assert_eq!(config["config"]["Cmd"][0], "/bin/busybox");
}

#[test]
fn push_through_token_server_then_inspect_and_move_the_digest() {
    let wd = WorkDir::new("token-push");
    let (token, registry) = token_registry(&wd);
    let reference = registry.image_ref("org/app", "latest");
    let creds = Some(USER);

    let v1 = build_image(&wd, &ImageSpec::with_content("v1"));
    let pushed = skopeo::push(&v1, &reference, ManifestFormat::Oci, creds, &RegistryTls::Plain);
    assert_eq!(pushed, v1.digest);
    assert!(token.exchange_count() > 0);
    let first = &token.requests()[0];
    assert_eq!(first.basic_user(), Some("alice"));
    assert!(
        first.scopes.iter().any(|s| s.starts_with("repository:org/app:")),
        "{first:?}"
    );
    assert!(first.granted_scopes().iter().any(|s| s.contains("push")), "{first:?}");
    let claims = decode_jwt_claims(first.token.as_deref().expect("a token"));
    assert_eq!(claims["aud"], token.service());
    assert_eq!(claims["sub"], "alice");

    let mark = registry.mark();
    token.clear();
    let seen = skopeo::inspect_digest(&reference, creds, &RegistryTls::Plain);
    assert_eq!(seen, v1.digest);
    let log = registry.requests_since(&mark);
    assert!(log.manifest_gets() >= 1, "{}", log.summary());
    assert!(
        log.auth_refusals() >= 1,
        "skopeo is challenged first: {}",
        log.summary()
    );
    assert!(token.exchange_count() >= 1);

    let v2 = build_image(&wd, &ImageSpec::with_content("v2"));
    skopeo::push(&v2, &reference, ManifestFormat::Oci, creds, &RegistryTls::Plain);
    let moved = skopeo::inspect_digest(&reference, creds, &RegistryTls::Plain);
    assert_eq!(moved, v2.digest);
    assert_ne!(moved, v1.digest);
}

#[test]
fn anonymous_pull_of_public_works_and_private_is_refused() {
    let wd = WorkDir::new("token-anon");
    let (token, registry) = token_registry(&wd);
    let image = build_image(&wd, &ImageSpec::with_content("public"));
    for name in ["org/public", "org/private"] {
        skopeo::push(
            &image,
            &registry.image_ref(name, "v1"),
            ManifestFormat::Oci,
            Some(USER),
            &RegistryTls::Plain,
        );
    }
    token.clear();
    let public = skopeo::inspect_digest(&registry.image_ref("org/public", "v1"), None, &RegistryTls::Plain);
    assert_eq!(public, image.digest);
    let reqs = token.requests();
    assert!(reqs.iter().all(|r| r.auth == SeenAuth::None), "{reqs:?}");

    token.clear();
    let denied = skopeo::run(&[
        "inspect",
        "--tls-verify=false",
        "--no-creds",
        &format!("docker://{}", registry.image_ref("org/private", "v1")),
    ]);
    assert!(denied.is_err(), "anonymous access to a private repo must fail");
    let reqs = token.requests();
    assert!(!reqs.is_empty());
    assert!(
        reqs.iter().all(|r| r.granted.is_empty() && r.status == 200),
        "granted nothing, no error: {reqs:?}"
    );

    // Wrong password: 401 from the token server.
    let resp = http_send(
        &HttpRequest::get(&format!(
            "{}?service={}&scope=repository:org/app:pull",
            token.realm_url(),
            token.service()
        ))
        .header("Authorization", "Basic YWxpY2U6d3Jvbmc="),
    )
    .expect("token server answers");
    assert_eq!(resp.status, 401);
}

#[test]
fn docker_v2_and_multi_arch_pushes_report_their_own_digests() {
    let wd = WorkDir::new("formats");
    let (_token, registry) = token_registry(&wd);
    let creds = Some(USER);

    let single = build_image(&wd, &ImageSpec::with_content("docker"));
    let docker_ref = registry.image_ref("org/docker", "latest");
    let docker_digest = skopeo::push(
        &single,
        &docker_ref,
        ManifestFormat::DockerV2,
        creds,
        &RegistryTls::Plain,
    );
    assert_ne!(docker_digest, single.digest, "v2s2 conversion changes the digest");
    assert_eq!(
        skopeo::inspect_digest(&docker_ref, creds, &RegistryTls::Plain),
        docker_digest
    );
    let raw = skopeo::inspect_raw(&docker_ref, creds, &RegistryTls::Plain);
    assert_eq!(sha256_digest(&raw), docker_digest);
    let manifest: serde_json::Value = serde_json::from_slice(&raw).expect("JSON");
    assert_eq!(manifest["mediaType"], DOCKER_MANIFEST);

    let multi = build_multi_arch(&wd, &ImageSpec::with_content("multi"));
    let multi_ref = registry.image_ref("org/multi", "latest");
    let pushed = skopeo::push(&multi, &multi_ref, ManifestFormat::Oci, creds, &RegistryTls::Plain);
    assert_eq!(pushed, multi.digest);
    // skopeo reports the digest of the top-level manifest: the index.
    assert_eq!(
        skopeo::inspect_digest(&multi_ref, creds, &RegistryTls::Plain),
        multi.digest
    );
    let raw = skopeo::inspect_raw(&multi_ref, creds, &RegistryTls::Plain);
    assert_eq!(sha256_digest(&raw), multi.digest);
}

#[test]
fn max_scopes_and_faults_are_honoured() {
    let wd = WorkDir::new("token-knobs");
    let token = TokenServer::start(
        &wd,
        TokenServerConfig::new()
            .user("bob", "pw", &["*"])
            .max_scopes(1)
            .token_field(TokenField::Both)
            .expires_in(None)
            .fault(TokenFault::Times(1, Box::new(TokenFault::Status(500)))),
    );
    let url = format!(
        "{}?service=x&scope=repository:a:pull&scope=repository:b:pull%20repository:c:pull",
        token.realm_url()
    );
    let basic = "Basic Ym9iOnB3"; // bob:pw
    let failed = http_send(&HttpRequest::get(&url).header("Authorization", basic)).expect("answers");
    assert_eq!(failed.status, 500);
    let ok = http_send(&HttpRequest::get(&url).header("Authorization", basic)).expect("answers");
    assert_eq!(ok.status, 200);
    let body: serde_json::Value = serde_json::from_slice(&ok.body).expect("JSON");
    assert_eq!(body["token"], body["access_token"]);
    assert!(body.get("expires_in").is_none());
    let last = token.requests().pop().expect("recorded");
    assert_eq!(
        last.scopes,
        ["repository:a:pull", "repository:b:pull", "repository:c:pull"]
    );
    assert_eq!(last.granted_scopes(), ["repository:a:pull"]);
    assert_eq!(token.request_count(), 2);
    assert_eq!(token.exchange_count(), 1);

    token.set_fault(Some(TokenFault::MalformedJson));
    let bad = http_send(&HttpRequest::get(&url)).expect("answers");
    assert!(serde_json::from_slice::<serde_json::Value>(&bad.body).is_err());
}

#[test]
fn raw_bearer_flow_heads_a_manifest_and_wrong_scope_is_insufficient() {
    let wd = WorkDir::new("raw-bearer");
    let (token, registry) = token_registry(&wd);
    let image = build_image(&wd, &ImageSpec::with_content("raw"));
    skopeo::push(
        &image,
        &registry.image_ref("org/app", "v1"),
        ManifestFormat::Oci,
        Some(USER),
        &RegistryTls::Plain,
    );
    let manifest_url = format!("{}/v2/org/app/manifests/v1", registry.base_url());
    let accept = ALL_MANIFEST_TYPES.join(", ");

    let mark = registry.mark();
    let challenge = HttpRequest::new("HEAD", &manifest_url)
        .header("Accept", &accept)
        .send()
        .expect("answers");
    assert_eq!(challenge.status, 401);
    let www = challenge.header("www-authenticate").expect("challenge");
    assert!(www.contains("scope=\"repository:org/app:pull\""), "{www}");

    let get_token = |scope: &str| -> String {
        let resp = HttpRequest::get(&format!(
            "{}?service={}&scope={scope}",
            token.realm_url(),
            token.service()
        ))
        .send()
        .expect("token");
        let body: serde_json::Value = serde_json::from_slice(&resp.body).expect("JSON");
        body["token"].as_str().expect("token field").to_string()
    };
    let good = get_token("repository:org/app:pull");
    let head = HttpRequest::new("HEAD", &manifest_url)
        .header("Accept", &accept)
        .header("Authorization", &format!("Bearer {good}"))
        .send()
        .expect("answers");
    assert_eq!(head.status, 200);
    assert_eq!(head.header("docker-content-digest"), Some(image.digest.as_str()));

    let other = get_token("repository:org/other:pull");
    let refused = HttpRequest::new("HEAD", &manifest_url)
        .header("Accept", &accept)
        .header("Authorization", &format!("Bearer {other}"))
        .send()
        .expect("answers");
    assert_eq!(refused.status, 401);
    let www = refused.header("www-authenticate").expect("challenge");
    assert!(www.contains("error=\"insufficient_scope\""), "{www}");

    let expired = token.mint(
        "",
        &[Access {
            kind: "repository".into(),
            name: "org/app".into(),
            actions: vec!["pull".into()],
        }],
        -120,
    );
    let stale = HttpRequest::new("HEAD", &manifest_url)
        .header("Accept", &accept)
        .header("Authorization", &format!("Bearer {expired}"))
        .send()
        .expect("answers");
    assert_eq!(stale.status, 401);
    assert!(
        stale
            .header("www-authenticate")
            .is_some_and(|w| w.contains("invalid_token")),
        "{:?}",
        stale.headers
    );

    let log = registry.requests_since(&mark);
    assert_eq!(log.manifest_heads(), 4, "{}", log.summary());
    assert_eq!(log.auth_refusals(), 3, "{}", log.summary());
    assert_eq!(log.pings(), 0);
}
