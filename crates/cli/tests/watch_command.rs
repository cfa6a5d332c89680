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
