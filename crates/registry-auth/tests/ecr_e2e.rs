//! End to end with real software, through the wiring a platform calls: a CNCF distribution
//! registry in htpasswd mode holding user `AWS` with moto's password stands in for an ECR
//! registry (declared with `IMAGEWATCH_PROVIDERS`' syntax), an image pushed with skopeo, and
//! `wire()`'s client asking for its digest through the `EcrProvider` it picked; the Engine
//! payload comes from the same provider.

use std::sync::Arc;

use registry_auth::{AuthSettings, AwsSource, wire};
use registry_core::{ImageReference, RegistryHost, Transport, TransportConfig};
use test_support::{
    ImageSpec, ManifestFormat, Moto, Registry, RegistryConfig, RegistryTls, WorkDir, build_image, skopeo,
};

#[tokio::test]
async fn wired_client_sees_skopeos_digest_through_the_ecr_provider() {
    let work_dir = WorkDir::new("ecr-e2e");
    let moto = Moto::start(&work_dir);
    let aws_password = Moto::expected_password();
    let registry = Registry::start(&work_dir, RegistryConfig::htpasswd(&[("AWS", &aws_password)]));
    let creds = Some(("AWS", aws_password.as_str()));
    let image = build_image(&work_dir, &ImageSpec::with_content("ecr e2e v1"));
    let image_ref = registry.image_ref("team/app", "latest");
    skopeo::push(&image, &image_ref, ManifestFormat::Oci, creds, &RegistryTls::Plain);
    let skopeo_digest = skopeo::inspect_digest(&image_ref, creds, &RegistryTls::Plain);

    // The operator's declaration: this host is ECR account 123456789012 in us-east-1.
    let host: RegistryHost = registry.host().parse().expect("host");
    let mut settings = AuthSettings::new(host.clone());
    settings.overrides = format!("{host}=ecr:{}:{}", Moto::ACCOUNT_ID, Moto::REGION)
        .parse()
        .expect("override");
    settings.aws = AwsSource::Config(Box::new(moto.sdk_config()));
    let transport = Arc::new(Transport::new(TransportConfig::default()).expect("transport"));
    let wired = wire(&settings, transport, std::slice::from_ref(&host))
        .await
        .expect("wired");
    assert_eq!(wired.hosts[&host].kind.name(), "ecr");

    let reference: ImageReference = image_ref.parse().expect("reference");
    let mark = registry.mark();
    let ticks = 4;
    for _tick in 0..ticks {
        let digest = wired
            .client
            .manifest_digest(&reference)
            .await
            .expect("digest through ECR auth");
        assert_eq!(digest.to_string(), skopeo_digest);
    }
    assert_eq!(moto.get_authorization_token_calls(), 1, "{:?}", moto.calls());
    let requests = registry.requests_since(&mark);
    assert_eq!(
        requests.manifest_reads(),
        ticks,
        "one manifest read per check: {}",
        requests.summary()
    );
    // At most the first probe is refused: the Basic header is accepted on every check.
    assert!(requests.auth_refusals() <= 1, "{}", requests.summary());

    // The Docker Engine payload: the same Basic credentials, addressed to the registry host,
    // from the cached token.
    let payload = wired
        .engine_auth()
        .payload(&host)
        .await
        .expect("engine credentials")
        .expect("some");
    let shown = payload.redacted_json();
    assert_eq!(shown["serveraddress"], host.as_str());
    assert_eq!(shown["username"], "AWS");
    assert_eq!(
        payload.credentials(),
        &registry_core::Credentials::basic("AWS", aws_password.as_str())
    );
    assert_eq!(moto.get_authorization_token_calls(), 1, "{:?}", moto.calls());
}
