//! A token-mode registry whose realm lives on its own https origin (`/v2/token`), behind the
//! nginx TLS front: skopeo pushes and inspects through it with the test CA.

use test_support::*;

#[test]
fn realm_on_the_registry_host_through_the_tls_front() {
    let wd = WorkDir::new("nginx-front");
    let ca = TestCa::new(&wd);
    let token = TokenServer::start(
        &wd,
        TokenServerConfig::new()
            .realm_path("/v2/token")
            .user("alice", "pw", &["*"]),
    );
    let front_port = free_port();
    let mut auth = token.token_auth();
    auth.realm = format!("https://127.0.0.1:{front_port}/v2/token");
    let registry = Registry::start(&wd, RegistryConfig::with_auth(RegistryAuth::Token(auth)));
    let front = NginxFront::start_on(
        &wd,
        &ca,
        front_port,
        &[("/v2/token", &token.base_url()), ("/v2/", &registry.base_url())],
    );

    let ping = HttpRequest::get(&front.url("/v2/"))
        .ca(&ca.ca_cert_pem)
        .send()
        .expect("answers");
    assert_eq!(ping.status, 401);
    assert!(
        ping.header("www-authenticate")
            .is_some_and(|c| c.contains(&front.url("/v2/token")))
    );

    let image = build_image(&wd, &ImageSpec::with_content("behind nginx"));
    let reference = format!("{}/org/app:latest", front.host());
    let tls = RegistryTls::ca(&ca);
    let digest = skopeo::push(&image, &reference, ManifestFormat::Oci, Some(("alice", "pw")), &tls);
    assert_eq!(digest, image.digest);
    assert_eq!(
        skopeo::inspect_digest(&reference, Some(("alice", "pw")), &tls),
        image.digest
    );
    assert!(token.exchange_count() >= 1);
}
