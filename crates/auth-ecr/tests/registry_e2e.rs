//! End to end with real software: a CNCF distribution registry in htpasswd mode holding user
//! `AWS` with moto's password stands in for an ECR registry (declared through
//! `IMAGEWATCH_PROVIDERS`' syntax), an image pushed with skopeo, and registry-core's
//! `RegistryClient` asking for its digest through the `EcrProvider`.

mod common;

use std::sync::Arc;

use common::*;
use registry_core::client::{RegistryClient, Transport, TransportConfig};
use registry_core::{EngineAuth, ImageReference, ProviderKind, ProviderOverrides, TokenProvider};
use test_support::{
    ImageSpec, ManifestFormat, Moto, Registry, RegistryConfig, RegistryTls, WorkDir, build_image, skopeo,
};

#[tokio::test]
async fn registry_client_sees_skopeos_digest_through_the_ecr_provider() {
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
    let host = host(&registry.host());
    let overrides: ProviderOverrides = format!("{host}=ecr:{ACCOUNT}:{REGION}").parse().expect("override");
    let kind = overrides.kind_for(&host);
    let ProviderKind::Ecr(ecr) = kind.clone() else {
        panic!("declared ECR, got {kind}");
    };
    let provider = Arc::new(provider(&moto).with_registry(host.clone(), ecr));
    let transport = Transport::new(TransportConfig::default()).expect("transport");
    let client = RegistryClient::new(Arc::new(transport)).with_provider(host.clone(), kind, provider.clone());

    let reference: ImageReference = image_ref.parse().expect("reference");
    let mark = registry.mark();
    let ticks = 4;
    for _tick in 0..ticks {
        let digest = client
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

    // The Docker Engine payload: the same Basic credentials, addressed to the registry host.
    let engine = provider
        .engine_credentials(&host)
        .await
        .expect("engine credentials")
        .expect("some");
    let payload = EngineAuth::new(&host, engine).redacted_json();
    assert_eq!(payload["serveraddress"], host.as_str());
    assert_eq!(payload["username"], "AWS");
    assert_eq!(moto.get_authorization_token_calls(), 1, "{:?}", moto.calls());
}
