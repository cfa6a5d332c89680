//! `imagewatch registry` and `imagewatch auth-header`, run as the operator runs them: the real
//! binary, configured through the environment only.

use std::process::{Command, Output};

use base64::Engine as _;
use rstest::rstest;
use serde_json::Value;

/// Runs the binary with a clean environment plus `vars`.
fn imagewatch(args: &[&str], vars: &[(&str, &str)]) -> Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_imagewatch"));
    command
        .args(args)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default());
    // An empty Docker config dir keeps the machine's own ~/.docker out of the tests.
    let empty = std::env::temp_dir().join("imagewatch-test-empty-docker-config");
    command.env("DOCKER_CONFIG", &empty).env("HOME", &empty);
    for (name, value) in vars {
        command.env(name, value);
    }
    command.output().expect("binary runs")
}

fn stdout_json(output: &Output) -> Value {
    assert!(
        output.status.success(),
        "stderr: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).expect("stdout is JSON")
}

#[rstest]
#[case::ghcr("ghcr.io/molecule-ai", "ghcr.io", "https://ghcr.io/v2/", "ghcr", "ghcr.io")]
#[case::ecr(
    "004947743811.dkr.ecr.us-east-2.amazonaws.com/molecule-ai",
    "004947743811.dkr.ecr.us-east-2.amazonaws.com",
    "https://004947743811.dkr.ecr.us-east-2.amazonaws.com/v2/",
    "ecr",
    "004947743811.dkr.ecr.us-east-2.amazonaws.com"
)]
#[case::gitea(
    "gitea.example.com/molecule",
    "gitea.example.com",
    "https://gitea.example.com/v2/",
    "generic",
    "gitea.example.com"
)]
#[case::docker_hub(
    "molecule-ai",
    "docker.io",
    "https://registry-1.docker.io/v2/",
    "generic",
    "https://index.docker.io/v1/"
)]
#[case::self_hosted_port(
    "registry.example.com:5443/a/b",
    "registry.example.com:5443",
    "https://registry.example.com:5443/v2/",
    "generic",
    "registry.example.com:5443"
)]
#[case::ipv6("[::1]:5000/x", "[::1]:5000", "https://[::1]:5000/v2/", "generic", "[::1]:5000")]
#[case::bare_host(
    "registry.example.com",
    "registry.example.com",
    "https://registry.example.com/v2/",
    "generic",
    "registry.example.com"
)]
fn registry_json_resolves_the_host(
    #[case] prefix: &str,
    #[case] host: &str,
    #[case] api_base: &str,
    #[case] provider: &str,
    #[case] serveraddress: &str,
) {
    let json = stdout_json(&imagewatch(
        &["registry", "--json"],
        &[("MOLECULE_IMAGE_REGISTRY", prefix)],
    ));
    assert_eq!(json["host"], host);
    assert_eq!(json["api_base"], api_base);
    assert_eq!(json["provider"], provider);
    assert_eq!(json["serveraddress"], serveraddress);
    assert!(json["prefix"].as_str().is_some_and(|p| p.starts_with(host)), "{json}");
}

#[test]
fn unset_prefix_resolves_to_ghcr_default() {
    let json = stdout_json(&imagewatch(&["registry", "--json"], &[]));
    assert_eq!(json["prefix"], "ghcr.io/molecule-ai");
    assert_eq!(json["serveraddress"], "ghcr.io");
}

#[test]
fn provider_override_makes_a_mirror_ecr() {
    let json = stdout_json(&imagewatch(
        &["registry", "--json"],
        &[
            ("MOLECULE_IMAGE_REGISTRY", "mirror.example.com/molecule-ai"),
            ("IMAGEWATCH_PROVIDERS", "mirror.example.com=ecr:123456789012:us-east-1"),
        ],
    ));
    assert_eq!(json["provider"], "ecr");
}

#[rstest]
#[case::scheme("https://ghcr.io/molecule-ai")]
#[case::uppercase("ghcr.io/Molecule")]
#[case::tag("ghcr.io/molecule-ai:latest")]
#[case::empty_host("/molecule-ai")]
fn invalid_prefix_exits_2_with_one_line(#[case] prefix: &str) {
    for command in ["registry", "auth-header"] {
        let output = imagewatch(&[command], &[("MOLECULE_IMAGE_REGISTRY", prefix)]);
        assert_eq!(output.status.code(), Some(2), "{command}");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(stderr.trim_end().lines().count(), 1, "{stderr}");
        assert!(
            stderr.contains("MOLECULE_IMAGE_REGISTRY") && stderr.contains(prefix),
            "{stderr}"
        );
        assert!(output.stdout.is_empty());
    }
}

#[test]
fn invalid_provider_override_exits_2() {
    let output = imagewatch(&["registry"], &[("IMAGEWATCH_PROVIDERS", "ghcr.io=quay")]);
    assert_eq!(output.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&output.stderr).contains("IMAGEWATCH_PROVIDERS"));
}

#[test]
fn auth_header_carries_ghcr_credentials_for_the_configured_host() {
    let vars = [("GHCR_USER", "octocat"), ("GHCR_TOKEN", "ghp_secret")];
    let raw = imagewatch(&["auth-header"], &vars);
    assert!(raw.status.success());
    let header = String::from_utf8(raw.stdout).expect("utf-8");
    let decoded = base64::engine::general_purpose::URL_SAFE
        .decode(header.trim())
        .expect("base64url");
    let payload: Value = serde_json::from_slice(&decoded).expect("json");
    assert_eq!(payload["serveraddress"], "ghcr.io");
    assert_eq!(payload["username"], "octocat");
    assert_eq!(payload["password"], "ghp_secret");

    let json_output = imagewatch(&["auth-header", "--json"], &vars);
    let redacted = String::from_utf8_lossy(&json_output.stdout).to_string();
    assert!(!redacted.contains("ghp_secret"), "{redacted}");
    let redacted: Value = serde_json::from_str(&redacted).expect("json");
    assert_eq!(redacted["password"], "***");
    assert_eq!(redacted["serveraddress"], "ghcr.io");
}

#[test]
fn auth_header_without_credentials_prints_nothing_and_succeeds() {
    let output = imagewatch(&["auth-header"], &[]);
    assert!(output.status.success());
    assert!(output.stdout.is_empty());
    assert!(String::from_utf8_lossy(&output.stderr).contains("no credentials for ghcr.io"));
}

/// Seed compatibility: the platform this replaces sends `GHCR_USER`/`GHCR_TOKEN` to whatever
/// registry `MOLECULE_IMAGE_REGISTRY` names (its self-hosted mirror), and expects the mirror as
/// `serveraddress`. They never go to a host the operator did not choose (unit-tested in
/// registry-auth's wiring).
#[test]
fn ghcr_credentials_are_the_configured_registrys_credentials() {
    let output = imagewatch(
        &["auth-header", "--json"],
        &[
            ("MOLECULE_IMAGE_REGISTRY", "registry.example.com:5443/acme/team"),
            ("GHCR_USER", "u"),
            ("GHCR_TOKEN", "t"),
        ],
    );
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let payload: Value = serde_json::from_slice(&output.stdout).expect("json");
    assert_eq!(payload["serveraddress"], "registry.example.com:5443");
    assert_eq!(payload["username"], "u");
    assert_eq!(payload["password"], "***");
}
