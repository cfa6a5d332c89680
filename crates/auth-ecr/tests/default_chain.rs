//! `EcrProvider::from_default_chain()`: the AWS SDK's default chain and endpoint variables, read from a
//! real process environment. The environment cannot be changed inside a test (it is process
//! wide, and `set_var` is unsafe), so each case re-runs this test binary as a child with a
//! cleared environment plus the variables under test; the `child_*` tests do the work there
//! and print one `RESULT ...` line, and do nothing when run normally.

mod common;

use std::path::Path;
use std::process::Command;

use auth_ecr::EcrProvider;
use common::*;
use test_support::{FaultServer, Moto, Reply, WorkDir};

/// Set in the child's environment: the `child_*` tests run only there.
const CHILD: &str = "AUTH_ECR_TEST_CHILD";

/// Runs the `child_*` test `name` with exactly `env` (plus [`CHILD`]) and returns its
/// `RESULT` line.
fn run_child(name: &str, env: &[(&str, String)]) -> String {
    let exe = std::env::current_exe().expect("test binary path");
    let output = Command::new(exe)
        .args(["--exact", name, "--nocapture", "--test-threads=1"])
        .env_clear()
        .env(CHILD, "1")
        .envs(env.iter().map(|(key, value)| (*key, value.as_str())))
        .output()
        .expect("child test runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "child {name} failed:\n{stdout}\n{stderr}");
    let results: Vec<&str> = stdout
        .lines()
        .filter_map(|line| line.split_once("RESULT ").map(|(_, result)| result))
        .collect();
    assert_eq!(results.len(), 1, "child {name} printed:\n{stdout}\n{stderr}");
    results[0].to_owned()
}

/// No instance metadata and no profile from the machine: only what a case sets counts.
fn isolated(work_dir: &WorkDir) -> Vec<(&'static str, String)> {
    let missing = |name: &str| work_dir.join(name).to_string_lossy().into_owned();
    vec![
        ("AWS_EC2_METADATA_DISABLED", "true".into()),
        ("AWS_CONFIG_FILE", missing("no-such-config")),
        ("AWS_SHARED_CREDENTIALS_FILE", missing("no-such-credentials")),
    ]
}

fn in_child() -> bool {
    std::env::var_os(CHILD).is_some()
}

/// In the child: credentials for moto's ECR host through `EcrProvider::from_default_chain()`.
#[tokio::test]
async fn child_credentials_from_env() {
    if !in_child() {
        return;
    }
    let provider = EcrProvider::from_default_chain().await;
    match provider.credentials(&ecr_host()).await {
        Ok(credentials) => println!("RESULT ok {}", password(&credentials)),
        Err(error) => println!("RESULT error {error}"),
    }
}

#[rstest::rstest]
#[case::service_specific_endpoint("AWS_ENDPOINT_URL_ECR")]
#[case::global_endpoint("AWS_ENDPOINT_URL")]
fn default_chain_takes_keys_and_endpoint_from_the_environment(#[case] endpoint_variable: &str) {
    let work_dir = WorkDir::new("ecr-env");
    let moto = Moto::start(&work_dir);
    let mut env = isolated(&work_dir);
    // No AWS_REGION: the region comes from the registry host.
    env.extend([
        ("AWS_ACCESS_KEY_ID", "testing".to_owned()),
        ("AWS_SECRET_ACCESS_KEY", "testing".to_owned()),
        (endpoint_variable, moto.endpoint_url()),
    ]);
    let result = run_child("child_credentials_from_env", &env);
    assert_eq!(result, format!("ok {}", Moto::expected_password()));
    assert_eq!(moto.get_authorization_token_calls(), 1, "{:?}", moto.calls());
}

#[test]
fn default_chain_takes_a_shared_profile() {
    let work_dir = WorkDir::new("ecr-profile");
    let moto = Moto::start(&work_dir);
    let credentials = work_dir.write(
        Path::new("credentials"),
        "[imagewatch]\naws_access_key_id = testing\naws_secret_access_key = testing\n",
    );
    let config = work_dir.write(
        Path::new("config"),
        format!(
            "[profile imagewatch]\nservices = local\n\n[services local]\necr =\n  endpoint_url = {}\n",
            moto.endpoint_url()
        ),
    );
    let env = vec![
        ("AWS_EC2_METADATA_DISABLED", "true".to_owned()),
        ("AWS_PROFILE", "imagewatch".to_owned()),
        (
            "AWS_SHARED_CREDENTIALS_FILE",
            credentials.to_string_lossy().into_owned(),
        ),
        ("AWS_CONFIG_FILE", config.to_string_lossy().into_owned()),
    ];
    let result = run_child("child_credentials_from_env", &env);
    assert_eq!(result, format!("ok {}", Moto::expected_password()));
    assert_eq!(moto.get_authorization_token_calls(), 1, "{:?}", moto.calls());
}

#[test]
fn without_aws_credentials_the_error_says_so_in_one_line() {
    let work_dir = WorkDir::new("ecr-no-credentials");
    let moto = Moto::start(&work_dir);
    let mut env = isolated(&work_dir);
    env.push(("AWS_ENDPOINT_URL_ECR", moto.endpoint_url()));
    let result = run_child("child_credentials_from_env", &env);
    let expected = format!(
        "error ecr credentials for {}: no AWS credentials found; tried the environment",
        ecr_host()
    );
    assert!(result.starts_with(&expected), "{result}");
    for source in ["AWS_PROFILE", "AWS_WEB_IDENTITY_TOKEN_FILE", "instance metadata"] {
        assert!(result.contains(source), "{result} lacks {source}");
    }
    assert_eq!(moto.get_authorization_token_calls(), 0, "{:?}", moto.calls());
}

#[rstest::rstest]
#[case::refusing_instance_metadata(true)]
#[case::unreachable_instance_metadata(false)]
fn without_credentials_off_ec2_instance_metadata_does_not_blur_the_error(#[case] imds_answers: bool) {
    let work_dir = WorkDir::new("ecr-imds");
    let moto = Moto::start(&work_dir);
    // Where something answers 169.254.169.254 with a refusal, or nothing answers at all.
    let imds = FaultServer::start();
    imds.on("*", "/*", [Reply::status(403)]);
    let imds_endpoint = if imds_answers {
        imds.base_url()
    } else {
        format!("http://127.0.0.1:{}", test_support::free_port())
    };
    let missing = |name: &str| work_dir.join(name).to_string_lossy().into_owned();
    let env = vec![
        ("AWS_CONFIG_FILE", missing("no-such-config")),
        ("AWS_SHARED_CREDENTIALS_FILE", missing("no-such-credentials")),
        ("AWS_EC2_METADATA_SERVICE_ENDPOINT", imds_endpoint),
        ("AWS_REGION", REGION.to_owned()),
        ("AWS_ENDPOINT_URL_ECR", moto.endpoint_url()),
    ];
    let result = run_child("child_credentials_from_env", &env);
    assert!(
        result.starts_with(&format!(
            "error ecr credentials for {}: no AWS credentials found",
            ecr_host()
        )),
        "{result}"
    );
    assert!(result.contains("instance metadata"), "{result}");
    assert_eq!(moto.get_authorization_token_calls(), 0, "{:?}", moto.calls());
}
