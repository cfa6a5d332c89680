//! The config file against the real `imagewatch` command: keys, overrides, errors with file, line and key.

use std::ffi::OsString;
use std::path::Path;

use clap::CommandFactory as _;
use rstest::rstest;

use super::*;

fn file_with(text: &str) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("imagewatch.toml");
    std::fs::write(&path, text).expect("written");
    (dir, path)
}

fn argv(path: &Path, extra: &[&str]) -> Vec<OsString> {
    let mut argv: Vec<OsString> = vec!["imagewatch".into(), "watch".into(), "--config".into(), path.into()];
    argv.extend(extra.iter().map(OsString::from));
    argv
}

fn appended(path: &Path, extra: &[&str]) -> Vec<String> {
    let given = argv(path, extra);
    let full = with_file_defaults(&crate::Cli::command(), given.clone()).expect("valid");
    full[given.len()..]
        .iter()
        .map(|a| a.to_string_lossy().into_owned())
        .collect()
}

const FILE: &str = r#"
interval = "30s"
concurrency = 16
once = true
image = [
  "ghcr.io/org/a:latest",
  { ref = "ghcr.io/org/b:latest", refresh = "docker" },
]
"#;

#[test]
fn keys_are_long_flag_names_applied_beneath_the_command_line() {
    let (_dir, path) = file_with(FILE);
    assert_eq!(
        appended(&path, &[]),
        [
            "--interval=30s",
            "--concurrency=16",
            "--once",
            "--image=ghcr.io/org/a:latest",
            "--image=ghcr.io/org/b:latest"
        ]
    );
    assert_eq!(
        appended(&path, &["--interval", "5m", "--image", "ghcr.io/org/c:latest"]),
        ["--concurrency=16", "--once"],
        "a flag on the command line wins over the file, and a list is replaced, not merged"
    );
}

#[test]
fn per_image_settings_are_read_with_their_image() {
    let (_dir, path) = file_with(FILE);
    let file = ConfigFile::load(&path).expect("valid");
    assert_eq!(file.images.len(), 2);
    assert!(file.images[0].settings.is_empty());
    assert_eq!(
        file.images[1].settings.refresh,
        Some(crate::refresh_kind::RefreshKind::Docker)
    );
    assert_eq!(file.images[1].line, 7);
}

#[rstest]
#[case::unknown_key("interval = \"30s\"\nintervall = \"1m\"\n", 2, Some("intervall"), "unknown key")]
#[case::value_the_flag_refuses("concurrency = 4\ninterval = \"soon\"\n", 2, Some("interval"), "invalid value")]
#[case::bad_enum("refresh = \"sometimes\"\n", 1, Some("refresh"), "invalid value")]
#[case::switch_not_a_bool("once = \"yes\"\n", 1, Some("once"), "expected `true` or `false`")]
#[case::bad_image(
    "image = [\n  \"ghcr.io/org/a:latest\",\n  \"UPPER/Case::x\",\n]\n",
    3,
    Some("image"),
    "not an image reference"
)]
#[case::unknown_image_key(
    "[[image]]\nref = \"ghcr.io/a/b\"\ncooldown = \"1h\"\n",
    3,
    Some("image.cooldown"),
    "unknown key"
)]
#[case::image_without_ref("[[image]]\nrefresh = \"none\"\n", 1, Some("image"), "needs `ref`")]
#[case::unknown_section("[server]\nport = 1\n", 1, Some("server"), "unknown section")]
#[case::not_toml("interval = \n", 1, None, "not valid TOML")]
#[case::nested_config("config = \"other.toml\"\n", 1, Some("config"), "cannot name another")]
fn errors_name_the_file_the_line_and_the_key(
    #[case] text: &str,
    #[case] line: usize,
    #[case] key: Option<&str>,
    #[case] what: &str,
) {
    let (_dir, path) = file_with(text);
    let error = check(&crate::Cli::command(), &path).expect_err("invalid");
    assert_eq!(error.line, Some(line), "{error}");
    assert_eq!(error.key.as_deref(), key, "{error}");
    let shown = error.to_string();
    assert!(shown.starts_with(&format!("{}:{line}", path.display())), "{shown}");
    assert!(shown.contains(what), "{shown}");
    let via_watch = with_file_defaults(&crate::Cli::command(), argv(&path, &[])).expect_err("invalid");
    assert_eq!(via_watch, error, "watch refuses it the same way");
}

#[test]
fn check_summarises_a_valid_file() {
    let (_dir, path) = file_with(FILE);
    let summary = check(&crate::Cli::command(), &path).expect("valid");
    assert!(
        summary.contains("3 setting(s), 2 image(s), 1 with settings of their own"),
        "{summary}"
    );
}

#[test]
fn ten_thousand_images_fit_in_a_file() {
    let mut text = String::from("image = [\n");
    for i in 0..10_000 {
        text.push_str(&format!("  \"registry.example.com/org/app-{i:05}:latest\",\n"));
    }
    text.push_str("]\n");
    let (_dir, path) = file_with(&text);
    assert_eq!(appended(&path, &[]).len(), 10_000);
}
