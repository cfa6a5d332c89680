//! `imagewatch watch --config` and `imagewatch config check`, the real binary against Debian's
//! real registry: the watch set comes from the file, a change of the file is taken while the
//! watcher runs (the state of images still watched is kept), and a bad file is refused with
//! its file, line and key.

use std::io::{BufRead as _, BufReader};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use test_support::{ImageSpec, ManifestFormat, Registry, RegistryTls, WorkDir, build_image, skopeo};

fn binary(home: &std::path::Path) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_imagewatch"));
    command
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("DOCKER_CONFIG", home)
        .env("HOME", home);
    command
}

/// Waits for a JSON log line with `message` (and `image`, when given).
fn wait_for(lines: &mpsc::Receiver<serde_json::Value>, message: &str, image: Option<&str>) -> serde_json::Value {
    let deadline = Instant::now() + Duration::from_secs(20);
    while let Some(left) = deadline.checked_duration_since(Instant::now()) {
        let Ok(event) = lines.recv_timeout(left) else { break };
        if event["message"] == message && image.is_none_or(|image| event["image"] == image) {
            return event;
        }
    }
    panic!("no `{message}` log line for {image:?} within 20 s");
}

#[test]
fn the_watch_set_comes_from_the_file_and_a_changed_file_is_reloaded_keeping_state() {
    let wd = WorkDir::new("config-file");
    let registry = Registry::anonymous(&wd);
    let home = wd.fresh_dir("home");
    let image = build_image(&wd, &ImageSpec::with_content("config v1"));
    let (a, b) = (
        registry.image_ref("org/a", "latest"),
        registry.image_ref("org/b", "latest"),
    );
    for reference in [&a, &b] {
        skopeo::push(&image, reference, ManifestFormat::Oci, None, &RegistryTls::Plain);
    }
    let path = wd.join("imagewatch.toml");
    std::fs::write(&path, format!("interval = \"1h\"\njitter = 0.0\nimage = [\"{a}\"]\n")).expect("written");

    let mut child = binary(&home)
        .args(["--log-format", "json", "watch", "--config"])
        .arg(&path)
        .env("RUST_LOG", "info")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("starts");
    let stderr = child.stderr.take().expect("piped");
    let (tx, lines) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if let Ok(event) = serde_json::from_str::<serde_json::Value>(&line)
                && tx.send(event).is_err()
            {
                break;
            }
        }
    });
    let seeded = wait_for(&lines, "seeded", Some(&a));
    assert_eq!(seeded["host"], registry.host());
    std::thread::sleep(Duration::from_millis(1100));
    std::fs::write(
        &path,
        format!(
            "interval = \"1h\"\njitter = 0.0\nimage = [\n  \"{b}\",\n  {{ ref = \"{a}\", refresh = \"none\" }},\n]\n"
        ),
    )
    .expect("rewritten");
    let reloaded = wait_for(&lines, "config reloaded", None);
    assert_eq!(reloaded["images"], 2);
    wait_for(&lines, "seeded", Some(&b));
    let _ = Command::new("kill").args(["-TERM", &child.id().to_string()]).status();
    let status = child.wait().expect("exits");
    assert!(status.success(), "{status}");

    // A broken file while running is reported; here, checked on its own.
    std::fs::write(&path, "interval = \"1h\"\nconcurrency = \"many\"\n").expect("rewritten");
    let output = binary(&home)
        .args(["config", "check"])
        .arg(&path)
        .output()
        .expect("runs");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains(&format!("{}:2: key `concurrency`", path.display())),
        "{stderr}"
    );
    let output = binary(&home)
        .args(["watch", "--once", "--config"])
        .arg(&path)
        .output()
        .expect("runs");
    assert_eq!(output.status.code(), Some(2), "watch refuses the same file");
}
