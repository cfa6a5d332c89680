//! `imagewatch watch` run as the operator runs it — the real binary, configured by flags and the
//! environment — against Debian's real registry with images pushed by skopeo.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use rstest::rstest;
use test_support::{ImageSpec, ManifestFormat, Registry, RegistryTls, WorkDir, build_image, skopeo};

struct Setup {
    wd: WorkDir,
    registry: Registry,
    reference: String,
    state: PathBuf,
    fired: PathBuf,
    home: PathBuf,
}

impl Setup {
    fn new(label: &str) -> Setup {
        let wd = WorkDir::new(label);
        let registry = Registry::anonymous(&wd);
        let reference = registry.image_ref("org/app", "latest");
        let home = wd.fresh_dir("home");
        Setup {
            state: wd.join("state.json"),
            fired: wd.join("fired.log"),
            wd,
            registry,
            reference,
            home,
        }
    }

    fn push(&self, content: &str) -> String {
        let layout = build_image(&self.wd, &ImageSpec::with_content(content));
        skopeo::push(&layout, &self.reference, ManifestFormat::Oci, None, &RegistryTls::Plain)
    }

    fn command(&self, args: &[&str], vars: &[(&str, &str)]) -> Command {
        let mut command = Command::new(env!("CARGO_BIN_EXE_imagewatch"));
        command
            .arg("watch")
            .args(["--image", &self.reference, "--state"])
            .arg(&self.state)
            .args(args)
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("DOCKER_CONFIG", &self.home)
            .env("HOME", &self.home)
            .env("IMAGEWATCH_EXEC_COMMAND", "/bin/sh");
        for (name, value) in vars {
            command.env(name, value);
        }
        command
    }

    /// `watch --once` with the exec refresher's command configured (`--refresh` decides
    /// whether it is used).
    fn once(&self, args: &[&str], vars: &[(&str, &str)]) -> Output {
        let script = format!(
            "echo \"$IMAGEWATCH_IMAGE $IMAGEWATCH_NEW_DIGEST\" >> '{}'",
            self.fired.display()
        );
        let mut all = vec!["--once", "--exec-arg", "-c", "--exec-arg", &script];
        all.extend_from_slice(args);
        self.command(&all, vars).output().expect("binary runs")
    }

    fn fired(&self) -> Vec<String> {
        std::fs::read_to_string(&self.fired)
            .map(|text| text.lines().map(str::to_owned).collect())
            .unwrap_or_default()
    }
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

fn succeeded(output: &Output) -> String {
    assert!(
        output.status.success(),
        "exit {:?}\nstdout: {}\nstderr: {}",
        output.status.code(),
        stdout(output),
        stderr(output)
    );
    stdout(output)
}

#[test]
fn once_with_a_state_file_fires_exec_exactly_once_per_push_across_runs() {
    let setup = Setup::new("cli-watch-once");
    setup.push("v1");
    let exec = ["--refresh", "exec"];
    assert!(succeeded(&setup.once(&exec, &[])).contains("seeded"));
    assert!(succeeded(&setup.once(&exec, &[])).contains("unchanged"));
    assert!(setup.fired().is_empty());

    let v2 = setup.push("v2");
    let printed = succeeded(&setup.once(&exec, &[]));
    assert!(printed.contains("refreshed"), "{printed}");
    assert!(succeeded(&setup.once(&exec, &[])).contains("unchanged"));
    assert_eq!(setup.fired(), vec![format!("{} {v2}", setup.reference)]);
}

#[rstest]
#[case::unset(None)]
#[case::false_value(Some("false"))]
fn refresh_is_monitor_only_unless_opted_into(#[case] auto_refresh: Option<&str>) {
    let setup = Setup::new("cli-watch-monitor-only");
    setup.push("v1");
    let vars: Vec<(&str, &str)> = auto_refresh.map(|v| ("IMAGE_AUTO_REFRESH", v)).into_iter().collect();
    succeeded(&setup.once(&[], &vars));
    setup.push("v2");
    let printed = succeeded(&setup.once(&[], &vars));
    assert!(printed.contains("monitor only"), "{printed}");
    assert!(
        setup.fired().is_empty(),
        "the exec command was configured but not opted into"
    );
}

#[test]
fn auto_refresh_true_means_the_docker_refresher() {
    let setup = Setup::new("cli-watch-auto-refresh");
    let output = setup.once(
        &[],
        &[
            ("IMAGE_AUTO_REFRESH", "true"),
            ("DOCKER_HOST", "unix:///nonexistent/docker.sock"),
        ],
    );
    assert_eq!(output.status.code(), Some(2), "{}", stderr(&output));
    assert!(
        stderr(&output).contains("Docker Engine not reachable at unix:///nonexistent/docker.sock"),
        "{}",
        stderr(&output)
    );
}

#[test]
fn once_exits_1_when_the_registry_is_down() {
    let mut setup = Setup::new("cli-watch-down");
    setup.push("v1");
    succeeded(&setup.once(&[], &[]));
    setup.registry.stop();
    let output = setup.once(&["--connect-timeout", "1"], &[]);
    assert_eq!(output.status.code(), Some(1), "{}", stderr(&output));
    assert!(stdout(&output).contains("check failed"), "{}", stdout(&output));
    assert!(
        stderr(&output).contains("1 of 1 image(s) failed"),
        "{}",
        stderr(&output)
    );
}

#[rstest]
#[case::interval("--interval", "soon", "duration")]
#[case::label("--container-label", "novalue", "key=value")]
#[case::image("--image", "https://x/y", "invalid image reference")]
fn invalid_flags_are_rejected_naming_what_is_expected(#[case] flag: &str, #[case] value: &str, #[case] expected: &str) {
    let setup = Setup::new("cli-watch-flags");
    let output = setup.once(&[flag, value], &[]);
    assert_eq!(output.status.code(), Some(2), "{}", stderr(&output));
    assert!(stderr(&output).contains(expected), "{}", stderr(&output));
}

fn wait_for(path: &Path, limit: Duration) -> bool {
    let started = Instant::now();
    while started.elapsed() < limit {
        if path.exists() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(25));
    }
    false
}

#[test]
fn sigterm_stops_the_loop_cleanly() {
    let setup = Setup::new("cli-watch-sigterm");
    setup.push("v1");
    let mut child = setup
        .command(&["--interval", "1h", "--log-format", "json"], &[])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("starts");
    assert!(
        wait_for(&setup.state, Duration::from_secs(10)),
        "the first tick never saved state"
    );
    let killed = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .expect("kill runs");
    assert!(killed.success());
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait") {
            break status;
        }
        assert!(started.elapsed() < Duration::from_secs(10), "did not stop on SIGTERM");
        std::thread::sleep(Duration::from_millis(25));
    };
    let output = child.wait_with_output().expect("output");
    assert!(status.success(), "{status:?}: {}", stderr(&output));
    let logs = stderr(&output);
    assert!(
        logs.contains("\"signal\":\"SIGTERM\"") && logs.contains("stopped"),
        "{logs}"
    );
}

/// `imagewatch watch` with only `args` and `vars`: no image of the harness.
fn bare_watch(wd: &WorkDir, args: &[&str], vars: &[(&str, &str)]) -> Output {
    let home = wd.fresh_dir("bare-home");
    let mut command = Command::new(env!("CARGO_BIN_EXE_imagewatch"));
    command
        .arg("watch")
        .args(["--once", "--state"])
        .arg(wd.join("bare-state.json"))
        .args(args)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("DOCKER_CONFIG", &home)
        .env("HOME", &home)
        .env("IMAGE_AUTO_REFRESH", "true")
        .env("DOCKER_HOST", "unix:///nonexistent/docker.sock");
    for (name, value) in vars {
        command.env(name, value);
    }
    command.output().expect("binary runs")
}

#[rstest]
#[case::blank_image_flag(&["--image", ","], &[], "--image (IMAGEWATCH_IMAGES) is empty")]
#[case::blank_runtime_flag(&["--runtime", " "], &[], "--runtime (IMAGEWATCH_RUNTIMES) is empty")]
#[case::empty_images_variable(&[], &[("IMAGEWATCH_IMAGES", "")], "IMAGEWATCH_IMAGES")]
#[case::blank_images_variable(&[], &[("IMAGEWATCH_IMAGES", " , ")], "IMAGEWATCH_IMAGES")]
fn an_empty_image_list_is_a_configuration_error_not_every_runtime(
    #[case] args: &[&str],
    #[case] vars: &[(&str, &str)],
    #[case] expected: &str,
) {
    let wd = WorkDir::new("cli-watch-empty-list");
    let output = bare_watch(&wd, args, vars);
    assert_eq!(output.status.code(), Some(2), "{}", stderr(&output));
    assert!(stderr(&output).contains(expected), "{}", stderr(&output));
    assert!(
        stderr(&output).contains("expected at least one name"),
        "{}",
        stderr(&output)
    );
    assert!(!wd.join("bare-state.json").exists());
}

#[rstest]
#[case::tag_and_digest(
    "127.0.0.1:5000/org/app:v1@sha256:4f9c3ae6f6b5cbbd7bcd5a3a0d1e0e5f3b2e9a3c1b7d8e6f5a4b3c2d1e0f9a8b"
)]
#[case::digest_only("127.0.0.1:5000/org/app@sha256:4f9c3ae6f6b5cbbd7bcd5a3a0d1e0e5f3b2e9a3c1b7d8e6f5a4b3c2d1e0f9a8b")]
fn an_image_pinned_by_digest_is_refused_for_watch(#[case] reference: &str) {
    let wd = WorkDir::new("cli-watch-pinned");
    let output = bare_watch(&wd, &["--image", reference], &[]);
    assert_eq!(output.status.code(), Some(2), "{}", stderr(&output));
    assert!(
        stderr(&output).contains("a pinned digest never moves"),
        "{}",
        stderr(&output)
    );
    assert_eq!(stderr(&output).trim().lines().count(), 1, "{}", stderr(&output));
}

/// The issue's reproduction: a device node, a FIFO (which blocked start-up forever) and a
/// directory as `--state`: each exits 2 at once and leaves the path as it was.
#[rstest]
#[case::character_device("null", "a character device")]
#[case::fifo("fifo", "a FIFO")]
#[case::directory("dir", "a directory")]
fn a_state_path_that_is_not_a_regular_file_exits_2_and_changes_nothing(#[case] name: &str, #[case] kind: &str) {
    let wd = WorkDir::new("cli-watch-state-kind");
    let dir = wd.fresh_dir("state");
    let path = dir.join(name);
    let made = match name {
        "null" => Command::new("mknod").arg(&path).args(["c", "1", "3"]).status(),
        "fifo" => Command::new("mkfifo").arg(&path).status(),
        _ => std::fs::create_dir(&path).map(|()| std::process::ExitStatus::default()),
    };
    if name == "null" && !made.as_ref().is_ok_and(std::process::ExitStatus::success) {
        // mknod needs root; the symlink to /dev/null takes the same path through the code.
        std::os::unix::fs::symlink("/dev/null", &path).expect("symlink");
    } else {
        assert!(made.expect("runs").success());
    }
    let before: Vec<_> = std::fs::read_dir(&dir)
        .expect("lists")
        .map(|e| e.expect("entry").path())
        .collect();
    let started = Instant::now();
    let output = Command::new(env!("CARGO_BIN_EXE_imagewatch"))
        .args(["watch", "--once", "--image", "127.0.0.1:1/org/app:latest", "--state"])
        .arg(&path)
        .env_clear()
        .env("HOME", wd.join("state"))
        .output()
        .expect("binary runs");
    assert!(started.elapsed() < Duration::from_secs(10));
    assert_eq!(output.status.code(), Some(2), "{}", stderr(&output));
    assert!(stderr(&output).contains(kind), "{}", stderr(&output));
    let after: Vec<_> = std::fs::read_dir(&dir)
        .expect("lists")
        .map(|e| e.expect("entry").path())
        .collect();
    assert_eq!(before, after, "nothing renamed or created");
}

/// A command that prints a fake log line with colour codes: neither the text log nor the
/// `--once` report carries the line break or the escape.
#[test]
fn command_output_cannot_forge_log_lines_or_colour_the_terminal() {
    let setup = Setup::new("cli-watch-forge");
    setup.push("v1");
    succeeded(&setup.once(&[], &[]));
    setup.push("v2");
    let forged = r"printf 'done\n2030-01-01T00:00:00.000000Z  INFO imagewatch: all clear \033[31mred'";
    let output = setup
        .command(
            &["--once", "--refresh", "exec", "--exec-arg", "-c", "--exec-arg", forged],
            &[],
        )
        .output()
        .expect("binary runs");
    let report = succeeded(&output);
    let logs = stderr(&output);
    for text in [&report, &logs] {
        assert!(!text.contains('\u{1b}'), "{text}");
        assert!(!text.lines().any(|line| line.starts_with("2030-01-01")), "{text}");
    }
    assert!(report.contains("done\\n2030-01-01"), "{report}");
}
