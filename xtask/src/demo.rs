//! `cargo xtask demo`: the README's "run the main job", on a fresh machine with no internet and
//! no credentials. Installs what is missing, builds `imagewatch`, starts a local htpasswd
//! registry, pushes an image with skopeo, runs `imagewatch watch` against it with the exec
//! refresher, pushes a new version, and shows the move detected and the refresh run. Stops
//! everything at the end; exits non-zero when the move is not refreshed within 30 s.

use std::io::{BufRead as _, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use test_support::{ImageSpec, ManifestFormat, Registry, RegistryConfig, RegistryTls, WorkDir, build_image, skopeo};

const USER: &str = "demo";
const PASSWORD: &str = "demo-password";
const REPOSITORY: &str = "molecule-ai/workspace-template-demo";
const DETECT_TIMEOUT: Duration = Duration::from_secs(30);

/// The watcher process, stopped (SIGTERM, then SIGKILL) on drop.
struct Watch {
    child: Child,
}

impl Watch {
    /// SIGTERM, then wait up to 10 s for a clean exit; SIGKILL after that.
    fn stop(&mut self) -> String {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                return format!("stopped ({status})");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        "killed (did not stop within 10 s of SIGTERM)".to_owned()
    }
}

impl Drop for Watch {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            self.stop();
        }
    }
}

fn say(line: &str) {
    println!("demo | {line}");
}

pub fn run() -> Result<(), String> {
    crate::install::components()?;
    say("building imagewatch (cargo build -p cli)");
    crate::run::cargo(&["build", "--quiet", "-p", "cli"])?;
    let binary = imagewatch_binary()?;

    let wd = WorkDir::new("demo");
    let registry = Registry::start(&wd, RegistryConfig::htpasswd(&[(USER, PASSWORD)]));
    say(&format!(
        "registry: docker-registry on {} (htpasswd, user {USER}; plain http on loopback)",
        registry.host()
    ));
    let reference = registry.image_ref(REPOSITORY, "latest");
    let creds = Some((USER, PASSWORD));
    let v1 = build_image(&wd, &ImageSpec::busybox("1.0.0"));
    let pushed = skopeo::push(&v1, &reference, ManifestFormat::Oci, creds, &RegistryTls::Plain);
    say(&format!("pushed v1 with skopeo: {reference} -> {pushed}"));

    let events = wd.join("refreshes.log");
    let script = format!(
        "printf '%s moved %s -> %s (host %s, %s)\\n' \"$IMAGEWATCH_IMAGE\" \"$IMAGEWATCH_OLD_DIGEST\" \
         \"$IMAGEWATCH_NEW_DIGEST\" \"$IMAGEWATCH_HOST\" \"$IMAGEWATCH_TIME\" >> '{}'",
        events.display()
    );
    // No credentials of the machine leak in: an empty Docker config, only the demo's user.
    let docker_config = wd.join("docker-config");
    std::fs::create_dir_all(&docker_config).map_err(|e| format!("mkdir {}: {e}", docker_config.display()))?;
    let mut command = Command::new(&binary);
    command
        .args(["watch", "--interval", "2s", "--jitter", "0", "--image", &reference])
        .args(["--refresh", "exec", "--exec-command", "/bin/sh", "--exec-arg", "-c"])
        .arg("--exec-arg")
        .arg(&script)
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("NO_COLOR", "1")
        .env("RUST_LOG", "info")
        .env("IMAGEWATCH_REGISTRY_HOST", registry.host())
        .env("IMAGEWATCH_REGISTRY_USER", USER)
        .env("IMAGEWATCH_REGISTRY_PASSWORD", PASSWORD)
        .env("DOCKER_CONFIG", &docker_config)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    say(&format!(
        "$ IMAGEWATCH_REGISTRY_HOST={host} IMAGEWATCH_REGISTRY_USER={USER} IMAGEWATCH_REGISTRY_PASSWORD=*** \\\n\
         demo |     {bin} watch --interval 2s --jitter 0 --image {reference} \\\n\
         demo |     --refresh exec --exec-command /bin/sh --exec-arg -c --exec-arg '<append the event to {events}>'",
        host = registry.host(),
        bin = binary.display(),
        events = events.display(),
    ));
    let mut child = command
        .spawn()
        .map_err(|e| format!("cannot start {}: {e}", binary.display()))?;
    let (lines_tx, lines) = mpsc::channel::<String>();
    for stream in [
        child
            .stderr
            .take()
            .map(|s| Box::new(s) as Box<dyn std::io::Read + Send>),
        child
            .stdout
            .take()
            .map(|s| Box::new(s) as Box<dyn std::io::Read + Send>),
    ]
    .into_iter()
    .flatten()
    {
        let tx = lines_tx.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stream).lines().map_while(Result::ok) {
                println!("  imagewatch | {line}");
                let _ = tx.send(line);
            }
        });
    }
    drop(lines_tx);
    let mut watch = Watch { child };

    wait_for(&lines, &mut watch, DETECT_TIMEOUT, |line| line.contains("seeded"))
        .map_err(|e| format!("the watcher did not seed {reference}: {e}"))?;
    let v2 = build_image(&wd, &ImageSpec::busybox("2.0.0"));
    let pushed_v2 = skopeo::push(&v2, &reference, ManifestFormat::Oci, creds, &RegistryTls::Plain);
    say(&format!("pushed v2 with skopeo: {reference} -> {pushed_v2}"));
    let pushed_at = Instant::now();

    let detected = wait_for(&lines, &mut watch, DETECT_TIMEOUT, |line| {
        line.contains("refreshed") && line.contains(&short(&pushed_v2))
    });
    let refreshes = std::fs::read_to_string(&events).unwrap_or_default();
    for line in refreshes.lines() {
        say(&format!("refresh command ran: {line}"));
    }
    let outcome = match detected {
        Ok(()) if refreshes.contains(&pushed_v2) => Ok(()),
        Ok(()) => Err(format!(
            "the watcher logged a refresh but the command left no event in {}",
            events.display()
        )),
        Err(e) => Err(format!(
            "the move to {pushed_v2} was not detected and refreshed within {}s: {e}",
            DETECT_TIMEOUT.as_secs()
        )),
    };
    let stopped = watch.stop();
    // Drain what the watcher logged while stopping.
    while let Ok(_line) = lines.recv_timeout(Duration::from_millis(200)) {}
    say(&format!("imagewatch {stopped}"));
    outcome?;
    say(&format!(
        "the move was detected and refreshed {:.1}s after the push; stopping the registry",
        pushed_at.elapsed().as_secs_f64()
    ));
    drop(registry);
    say("done");
    Ok(())
}

/// `sha256:` plus the first 12 hex digits, as imagewatch's logs abbreviate digests.
fn short(digest: &str) -> String {
    digest.chars().take("sha256:".len() + 12).collect()
}

fn wait_for(
    lines: &mpsc::Receiver<String>,
    watch: &mut Watch,
    timeout: Duration,
    wanted: impl Fn(&str) -> bool,
) -> Result<(), String> {
    let deadline = Instant::now() + timeout;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(format!("nothing after {}s", timeout.as_secs()));
        }
        match lines.recv_timeout(left.min(Duration::from_millis(500))) {
            Ok(line) if wanted(&line) => return Ok(()),
            Ok(_) | Err(mpsc::RecvTimeoutError::Timeout) => {}
            Err(mpsc::RecvTimeoutError::Disconnected) => {
                let status = watch.child.wait().map_err(|e| e.to_string())?;
                return Err(format!("imagewatch exited ({status})"));
            }
        }
        if let Ok(Some(status)) = watch.child.try_wait() {
            return Err(format!("imagewatch exited ({status})"));
        }
    }
}

/// `imagewatch` in the target dir xtask itself was built into (same profile).
fn imagewatch_binary() -> Result<PathBuf, String> {
    let me = std::env::current_exe().map_err(|e| format!("current exe: {e}"))?;
    let dir = me
        .parent()
        .ok_or_else(|| format!("{} has no directory", me.display()))?;
    let binary = dir.join("imagewatch");
    if Path::new(&binary).is_file() {
        Ok(binary)
    } else {
        Err(format!("`cargo build -p cli` left no binary at {}", binary.display()))
    }
}
