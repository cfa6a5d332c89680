//! The embedding example (`examples/embed.rs`) run against a real htpasswd registry: its
//! startup wires the generic provider from the settings it is given, checks the digest skopeo
//! pushed, and its own `Refresher` hears the move on the second tick.

#[allow(dead_code)]
#[path = "../examples/embed.rs"]
mod embed;

use test_support::{ImageSpec, ManifestFormat, Registry, RegistryConfig, RegistryTls, WorkDir, build_image, skopeo};
use watcher::ImageStatus;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_example_checks_and_refreshes_through_the_wiring() {
    let wd = WorkDir::new("embed-example");
    let registry = Registry::start(&wd, RegistryConfig::htpasswd(&[("bot", "s3cret")]));
    let creds = Some(("bot", "s3cret"));
    let reference = registry.image_ref("team/workspace-template-demo", "latest");
    let v1 = skopeo::push(
        &build_image(&wd, &ImageSpec::with_content("embed v1")),
        &reference,
        ManifestFormat::Oci,
        creds,
        &RegistryTls::Plain,
    );
    let vars = |name: &str| match name {
        "IMAGEWATCH_REGISTRY_USER" => Some("bot".to_owned()),
        "IMAGEWATCH_REGISTRY_PASSWORD" => Some("s3cret".to_owned()),
        _ => None,
    };
    let prefix = format!("{}/team", registry.host());
    let (digest, mut watcher) = embed::start(&prefix, "demo", vars).await.expect("startup");
    assert_eq!(digest.as_str(), v1);
    watcher.tick().await;
    skopeo::push(
        &build_image(&wd, &ImageSpec::with_content("embed v2")),
        &reference,
        ManifestFormat::Oci,
        creds,
        &RegistryTls::Plain,
    );
    let report = watcher.tick().await;
    assert!(
        matches!(&report.images[0].status, ImageStatus::Refreshed { outcome, .. } if outcome.summary() == "announced"),
        "{report}"
    );

    let error = embed::start(&prefix, "demo", |_| None)
        .await
        .expect_err("no credentials");
    assert!(error.to_string().contains("IMAGEWATCH_REGISTRY_USER"), "{error}");
}
