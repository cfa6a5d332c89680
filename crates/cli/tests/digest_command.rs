//! `imagewatch digest` run as the operator runs it — the real binary, configured through the
//! environment — against Debian's real registry in anonymous and token mode.

use std::path::Path;
use std::process::{Command, Output};

use rstest::rstest;
use serde_json::Value;
use test_support::{
    ImageSpec, ManifestFormat, Registry, RegistryConfig, RegistryTls, TokenServer, TokenServerConfig, WorkDir,
    build_image, skopeo,
};

const USER: (&str, &str) = ("alice", "pw-alice");

/// Runs the binary with a clean environment plus `vars`; `docker_config` is the
/// `DOCKER_CONFIG` directory (an empty one keeps the machine's own `~/.docker` out).
fn imagewatch(args: &[&str], vars: &[(&str, &str)], docker_config: &Path) -> Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_imagewatch"));
    command
        .args(args)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("DOCKER_CONFIG", docker_config)
        .env("HOME", docker_config);
    for (name, value) in vars {
        command.env(name, value);
    }
    command.output().expect("binary runs")
}

fn stdout(output: &Output) -> String {
    assert!(
        output.status.success(),
        "exit {:?}, stderr: {}",
        output.status.code(),
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout.clone()).expect("utf-8")
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

#[test]
fn digest_of_an_anonymous_registry_matches_skopeo_in_text_and_json() {
    let wd = WorkDir::new("cli-digest-anonymous");
    let registry = Registry::anonymous(&wd);
    let reference = registry.image_ref("org/app", "latest");
    let image = build_image(&wd, &ImageSpec::with_content("cli"));
    skopeo::push(&image, &reference, ManifestFormat::Oci, None, &RegistryTls::Plain);
    let empty = wd.fresh_dir("docker-config");

    let printed = stdout(&imagewatch(&["digest", &reference], &[], &empty));
    assert_eq!(printed.trim(), image.digest);
    assert_eq!(
        printed.trim(),
        skopeo::inspect_digest(&reference, None, &RegistryTls::Plain)
    );

    let json: Value =
        serde_json::from_str(&stdout(&imagewatch(&["digest", &reference, "--json"], &[], &empty))).expect("JSON");
    assert_eq!(json["digest"], image.digest.as_str());
    assert_eq!(json["host"], registry.host().as_str());
    assert_eq!(json["reference"], reference.as_str());
}

fn token_registry(wd: &WorkDir) -> (TokenServer, Registry, String, String) {
    let token = TokenServer::start(
        wd,
        TokenServerConfig::new()
            .user(USER.0, USER.1, &["org/*"])
            .private("org/*"),
    );
    let registry = Registry::start(wd, RegistryConfig::token(&token));
    let reference = registry.image_ref("org/private", "v1");
    let image = build_image(wd, &ImageSpec::with_content("private"));
    skopeo::push(
        &image,
        &reference,
        ManifestFormat::DockerV2,
        Some(USER),
        &RegistryTls::Plain,
    );
    let digest = skopeo::inspect_digest(&reference, Some(USER), &RegistryTls::Plain);
    (token, registry, reference, digest)
}

#[test]
fn private_images_are_read_with_each_credential_source() {
    let wd = WorkDir::new("cli-digest-token");
    let (_token, registry, reference, expected) = token_registry(&wd);
    let empty = wd.fresh_dir("docker-config-empty");
    let host = registry.host();

    // The generic per-host environment source.
    let generic = [
        ("IMAGEWATCH_REGISTRY_HOST", host.as_str()),
        ("IMAGEWATCH_REGISTRY_USER", USER.0),
        ("IMAGEWATCH_REGISTRY_PASSWORD", USER.1),
    ];
    assert_eq!(
        stdout(&imagewatch(&["digest", &reference], &generic, &empty)).trim(),
        expected
    );

    // GHCR_USER/GHCR_TOKEN, for a host the operator declares a GHCR (mirror).
    let ghcr_kind = format!("{host}=ghcr");
    let ghcr = [
        ("IMAGEWATCH_PROVIDERS", ghcr_kind.as_str()),
        ("GHCR_USER", USER.0),
        ("GHCR_TOKEN", USER.1),
    ];
    assert_eq!(
        stdout(&imagewatch(&["digest", &reference], &ghcr, &empty)).trim(),
        expected
    );

    // Docker's config.json.
    let docker_config = wd.fresh_dir("docker-config");
    std::fs::write(
        docker_config.join("config.json"),
        format!(
            r#"{{"auths":{{"http://{host}":{{"auth":"{}"}}}}}}"#,
            base64_of(&format!("{}:{}", USER.0, USER.1))
        ),
    )
    .expect("write config.json");
    assert_eq!(
        stdout(&imagewatch(&["digest", &reference], &[], &docker_config)).trim(),
        expected
    );
}

fn base64_of(value: &str) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(value)
}

#[rstest]
#[case::generic(&[], "IMAGEWATCH_REGISTRY_USER")]
#[case::ghcr_kind(&[("IMAGEWATCH_PROVIDERS", "ghcr")], "GHCR_USER")]
#[case::wrong_password(&[("IMAGEWATCH_REGISTRY_USER", "alice"), ("IMAGEWATCH_REGISTRY_PASSWORD", "nope")], "refused")]
fn auth_failure_exits_1_naming_host_realm_and_what_to_configure(#[case] vars: &[(&str, &str)], #[case] expected: &str) {
    let wd = WorkDir::new("cli-digest-denied");
    let (token, registry, reference, _) = token_registry(&wd);
    let empty = wd.fresh_dir("docker-config-empty");
    let host = registry.host();
    let ghcr_kind = format!("{host}=ghcr");
    let mut all: Vec<(&str, &str)> = vec![("IMAGEWATCH_REGISTRY_HOST", host.as_str())];
    for (name, value) in vars {
        all.push((name, if *value == "ghcr" { ghcr_kind.as_str() } else { value }));
    }
    let output = imagewatch(&["digest", &reference], &all, &empty);
    assert_eq!(output.status.code(), Some(1), "{}", stderr(&output));
    let message = stderr(&output);
    assert_eq!(message.trim_end().lines().count(), 1, "{message}");
    assert!(message.contains(&host), "{message}");
    assert!(message.contains(&token.realm_url()), "{message}");
    assert!(message.contains(expected), "{message}");
    assert!(!message.contains("nope") && !message.contains(USER.1), "{message}");
    assert!(output.stdout.is_empty());
}

#[rstest]
#[case::invalid_reference(&["digest", "Not A Reference"], "", "invalid image reference")]
#[case::bad_timeout(&["digest", "127.0.0.1:1/a:b", "--request-timeout", "0"], "", "request-timeout")]
#[case::bad_insecure_host(&["digest", "127.0.0.1:1/a:b", "--insecure-registry", "bad host"], "", "invalid registry host")]
#[case::malformed_docker_config(&["digest", "127.0.0.1:1/a:b"], "{not json", "config.json")]
#[case::half_set_generic_credentials(&["digest", "127.0.0.1:1/a:b"], "user-only", "IMAGEWATCH_REGISTRY_PASSWORD")]
fn invalid_input_or_configuration_exits_2(#[case] args: &[&str], #[case] config: &str, #[case] expected: &str) {
    let wd = WorkDir::new("cli-digest-invalid");
    let docker_config = wd.fresh_dir("docker-config");
    let mut vars = Vec::new();
    match config {
        "" => {}
        "user-only" => vars.push(("IMAGEWATCH_REGISTRY_USER", "alice")),
        content => std::fs::write(docker_config.join("config.json"), content).expect("write"),
    }
    let output = imagewatch(args, &vars, &docker_config);
    assert_eq!(output.status.code(), Some(2), "{}", stderr(&output));
    assert!(stderr(&output).contains(expected), "{}", stderr(&output));
}

#[test]
fn unreachable_registry_exits_1() {
    let wd = WorkDir::new("cli-digest-unreachable");
    let empty = wd.fresh_dir("docker-config");
    let port = test_support::free_port();
    let output = imagewatch(
        &["digest", &format!("127.0.0.1:{port}/a:b"), "--connect-timeout", "1"],
        &[],
        &empty,
    );
    assert_eq!(output.status.code(), Some(1), "{}", stderr(&output));
    assert!(
        stderr(&output).contains(&format!("127.0.0.1:{port}")),
        "{}",
        stderr(&output)
    );
}
