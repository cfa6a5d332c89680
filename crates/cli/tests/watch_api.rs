//! `imagewatch watch --listen` as an operator runs it: the real binary, Debian's real registry
//! sending its notifications to the binary's `/hooks/distribution`, pushes by skopeo, the exec
//! refresher writing to a file. A push is refreshed at once while the poll interval is 10
//! minutes; an API beyond loopback is refused without a token.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use test_support::{
    HttpRequest, ImageSpec, ManifestFormat, Registry, RegistryConfig, RegistryTls, WorkDir, build_image, free_port,
    http_get, skopeo,
};

const HOOK_TOKEN: &str = "cli-hook-token";

/// The binary, killed on drop if a test fails before it stops it.
struct Running {
    child: Child,
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn binary(wd: &WorkDir) -> Command {
    let home = wd.fresh_dir("home");
    let mut command = Command::new(env!("CARGO_BIN_EXE_imagewatch"));
    command
        .arg("watch")
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("DOCKER_CONFIG", &home)
        .env("HOME", &home);
    command
}

fn fired(path: &PathBuf) -> Vec<String> {
    std::fs::read_to_string(path)
        .map(|text| text.lines().map(str::to_owned).collect())
        .unwrap_or_default()
}

fn wait_until(limit: Duration, mut condition: impl FnMut() -> bool) -> bool {
    let started = Instant::now();
    while started.elapsed() < limit {
        if condition() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    false
}

fn status_of(port: u16) -> serde_json::Value {
    http_get(&format!("http://127.0.0.1:{port}/status"))
        .ok()
        .and_then(|r| serde_json::from_slice(&r.body).ok())
        .unwrap_or(serde_json::Value::Null)
}

#[test]
fn listen_takes_the_registry_notification_and_refreshes_at_once_with_a_ten_minute_poll() {
    let wd = WorkDir::new("cli-watch-listen");
    let port = free_port();
    let registry = Registry::start(
        &wd,
        RegistryConfig::anonymous().notifications(&format!(
            "http://127.0.0.1:{port}/hooks/distribution?token={HOOK_TOKEN}"
        )),
    );
    let reference = registry.image_ref("org/app", "latest");
    let fired_log = wd.join("fired.log");
    let log = wd.join("imagewatch.log");
    let script = format!(
        "echo \"$IMAGEWATCH_OLD_DIGEST $IMAGEWATCH_NEW_DIGEST\" >> '{}'",
        fired_log.display()
    );
    let child = binary(&wd)
        .args(["--image", &reference, "--interval", "10m", "--refresh", "exec"])
        .args(["--exec-command", "/bin/sh", "--exec-arg", "-c", "--exec-arg", &script])
        .args(["--listen", &port.to_string(), "--log-format", "json"])
        .env("IMAGEWATCH_HOOK_TOKEN", HOOK_TOKEN)
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).expect("log file"))
        .spawn()
        .expect("starts");
    let mut running = Running { child };
    let logs = || std::fs::read_to_string(&log).unwrap_or_default();
    assert!(
        wait_until(Duration::from_secs(10), || {
            http_get(&format!("http://127.0.0.1:{port}/healthz")).is_ok_and(|r| r.status == 200)
        }),
        "the API did not come up: {}",
        logs()
    );

    // The tag does not exist yet: the first push is seeded through its notification.
    let push = |content: &str| {
        let layout = build_image(&wd, &ImageSpec::with_content(content));
        skopeo::push(&layout, &reference, ManifestFormat::Oci, None, &RegistryTls::Plain)
    };
    let v1 = push("v1");
    assert!(
        wait_until(Duration::from_secs(10), || status_of(port)["images"][0]["seen_digest"]
            == v1.as_str()),
        "v1 was not seeded through the hook: {}\n{}",
        status_of(port),
        logs()
    );
    // Past the trigger spacing of that check, so the next one is not held back.
    std::thread::sleep(Duration::from_millis(1100));

    let v2 = push("v2");
    let pushed = Instant::now();
    assert!(
        wait_until(Duration::from_secs(10), || !fired(&fired_log).is_empty()),
        "v2 was not refreshed within 10 s: {}\n{}",
        status_of(port),
        logs()
    );
    let latency = pushed.elapsed();
    println!(
        "imagewatch watch --listen: refresh fired within {} ms of skopeo returning",
        latency.as_millis()
    );
    assert!(latency < Duration::from_secs(2), "{latency:?}");
    assert_eq!(fired(&fired_log), vec![format!("{v1} {v2}")]);

    let metrics = http_get(&format!("http://127.0.0.1:{port}/metrics")).expect("metrics");
    let text = metrics.text();
    assert!(
        text.contains("imagewatch_refreshes_total{result=\"success\"} 1\n"),
        "{text}"
    );
    assert!(
        text.contains("imagewatch_registry_requests_total{kind=\"manifest_head\"}"),
        "{text}"
    );
    let check = HttpRequest::new("POST", &format!("http://127.0.0.1:{port}/check?wait=true"))
        .send()
        .expect("check");
    assert_eq!(check.status, 200, "{}", check.text());
    assert_eq!(
        fired(&fired_log).len(),
        1,
        "a manual check of an unchanged tag refreshes nothing"
    );

    let killed = Command::new("kill")
        .args(["-TERM", &running.child.id().to_string()])
        .status()
        .expect("kill runs");
    assert!(killed.success());
    assert!(
        wait_until(Duration::from_secs(10), || running
            .child
            .try_wait()
            .ok()
            .flatten()
            .is_some()),
        "did not stop on SIGTERM"
    );
    let status = running.child.wait().expect("status");
    assert!(status.success(), "{status:?}: {}", logs());
    assert!(logs().contains("http api stopped"), "{}", logs());
    assert!(
        http_get(&format!("http://127.0.0.1:{port}/healthz")).is_err(),
        "still listening"
    );
}

#[test]
fn listen_beyond_loopback_needs_an_api_token_and_a_bad_address_is_named() {
    let wd = WorkDir::new("cli-watch-listen-refused");
    for (vars, args, expected) in [
        (vec![], vec!["--listen", "0.0.0.0:18080"], "API token"),
        (vec![("IMAGEWATCH_LISTEN", "0.0.0.0:18080")], vec![], "--api-token"),
        (vec![("IMAGEWATCH_LISTEN", "nope")], vec![], "expected a port"),
        (vec![], vec!["--listen", ":8080"], "0.0.0.0:PORT"),
    ] {
        let output = binary(&wd)
            .args(["--image", "127.0.0.1:1/org/app:latest"])
            .args(&args)
            .envs(vars.iter().copied())
            .output()
            .expect("runs");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(2), "{args:?} {vars:?}: {stderr}");
        assert!(stderr.contains(expected), "{args:?} {vars:?}: {stderr}");
    }
}
