//! `cargo xtask demo`: the README's "run the main job", on a fresh machine with no internet and
//! no credentials. Installs what is missing, builds `imagewatch`, starts a local htpasswd
//! registry and pushes a busybox v1 image with skopeo. When the Docker Engine answers, it runs a
//! container of that image labelled `imagewatch.enable=true`, runs `imagewatch watch --discover
//! docker --refresh docker --cleanup`, which finds it, pushes v2 and shows the container (same
//! name) moved to v2 with `docker inspect` before and after, and the old image gone; without an
//! engine it says why and shows the exec refresher running a command on the move instead.
//! Prints every command it runs (secrets as `***`), removes the demo's containers and images and
//! stops everything at the end, passing or failing; exits non-zero when the move is not
//! refreshed in time (45 s for the container, 30 s for the command).

use std::io::{BufRead as _, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant, SystemTime};

use test_support::{ImageSpec, ManifestFormat, Registry, RegistryConfig, RegistryTls, WorkDir, build_image, skopeo};

use crate::docker_cli::{self, Container, DockerCli, Leftovers};
use crate::narrate::say;

const USER: &str = "demo";
const PASSWORD: &str = "demo-password";
const REPOSITORY: &str = "molecule-ai/workspace-template-demo";
const V1: &str = "1.0.0";
const V2: &str = "2.0.0";
/// Time for the watcher to seed, and for the exec refresher to run after the push.
const DETECT_TIMEOUT: Duration = Duration::from_secs(30);
/// Time for the container to be on v2 after the push: a tick, a pull, a stop, a start.
const CONTAINER_TIMEOUT: Duration = Duration::from_secs(45);

/// The watcher process, stopped (SIGTERM, then SIGKILL) on drop.
struct Watch {
    child: Child,
    lines: mpsc::Receiver<String>,
}

impl Watch {
    /// Starts `binary` with `args` and `env` only (plus `PATH`), its log lines printed as
    /// `  imagewatch | ...` and kept for [`Watch::next_line`].
    fn start(binary: &Path, args: &[String], env: &[(&str, String)]) -> Result<Watch, String> {
        let mut command = Command::new(binary);
        command
            .args(args)
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("NO_COLOR", "1")
            .env("RUST_LOG", "info")
            .envs(env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
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
        Ok(Watch { child, lines })
    }

    /// The next log line within `wait` (`None` when there was none), or why there never will be.
    fn next_line(&mut self, wait: Duration) -> Result<Option<String>, String> {
        crate::interrupt::check()?;
        match self.lines.recv_timeout(wait) {
            Ok(line) => return Ok(Some(line)),
            Err(mpsc::RecvTimeoutError::Timeout) => {}
            Err(mpsc::RecvTimeoutError::Disconnected) => {
                let status = self.child.wait().map_err(|e| e.to_string())?;
                return Err(format!("imagewatch exited ({status})"));
            }
        }
        match self.child.try_wait() {
            Ok(Some(status)) => Err(format!("imagewatch exited ({status})")),
            _ => Ok(None),
        }
    }

    /// Waits up to `timeout` for a log line that is `wanted`.
    fn wait_for(&mut self, timeout: Duration, wanted: impl Fn(&str) -> bool) -> Result<(), String> {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(format!("nothing after {}s", timeout.as_secs()));
            }
            if let Some(line) = self.next_line(left.min(Duration::from_millis(500)))?
                && wanted(&line)
            {
                return Ok(());
            }
        }
    }

    /// SIGTERM, then wait up to 10 s for a clean exit; SIGKILL after that. Prints what the
    /// watcher logged while stopping.
    fn stop(&mut self) -> String {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut outcome = None;
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                outcome = Some(format!("stopped ({status})"));
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let outcome = outcome.unwrap_or_else(|| {
            let _ = self.child.kill();
            let _ = self.child.wait();
            "killed (did not stop within 10 s of SIGTERM)".to_owned()
        });
        // Drain what the watcher logged while stopping.
        while let Ok(_line) = self.lines.recv_timeout(Duration::from_millis(200)) {}
        outcome
    }
}

impl Drop for Watch {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            self.stop();
        }
    }
}

/// What both refreshers' demos share: the work dir, the registry, the image and the binary.
struct Setup {
    wd: WorkDir,
    registry: Registry,
    reference: String,
    binary: PathBuf,
}

impl Setup {
    /// Builds the busybox image of `version` and pushes it to the demo's tag; its digest.
    fn push(&self, version: &str) -> String {
        let layout = build_image(&self.wd, &ImageSpec::busybox(version));
        say(&format!(
            "$ skopeo copy --format oci --preserve-digests --dest-tls-verify=false --dest-creds {USER}:*** \
             {} docker://{}   # busybox image, version {version}",
            layout.skopeo_ref(),
            self.reference
        ));
        let digest = skopeo::push(
            &layout,
            &self.reference,
            ManifestFormat::Oci,
            Some((USER, PASSWORD)),
            &RegistryTls::Plain,
        );
        say(&format!("pushed v{version}: {} -> {digest}", self.reference));
        digest
    }

    /// The watcher's credentials, for the printed command line (`***`) and for the process.
    fn credentials(&self) -> Vec<(&'static str, String)> {
        vec![
            ("IMAGEWATCH_REGISTRY_HOST", self.registry.host()),
            ("IMAGEWATCH_REGISTRY_USER", USER.to_owned()),
            ("IMAGEWATCH_REGISTRY_PASSWORD", PASSWORD.to_owned()),
        ]
    }

    /// Prints the watch command as a newcomer would type it, then starts it.
    fn watch(&self, args: &[String], env: &[(&'static str, String)]) -> Result<Watch, String> {
        let shown_env: Vec<String> = env
            .iter()
            .map(|(k, v)| {
                if k.contains("PASSWORD") {
                    format!("{k}=***")
                } else {
                    format!("{k}={v}")
                }
            })
            .collect();
        // One flag and its value per line after the image.
        let mut shown_args = String::new();
        for arg in args {
            if arg.starts_with("--") && !shown_args.is_empty() {
                shown_args.push_str(" \\\ndemo |     ");
            } else if !shown_args.is_empty() {
                shown_args.push(' ');
            }
            shown_args.push_str(&docker_cli::quote(arg));
        }
        say(&format!(
            "$ {} \\\ndemo |   {} {shown_args}",
            shown_env.join(" "),
            self.binary.display()
        ));
        Watch::start(&self.binary, args, env)
    }
}

pub fn run() -> Result<(), String> {
    let started = Instant::now();
    crate::interrupt::install();
    crate::install::components()?;
    say("building imagewatch (cargo build -p cli)");
    crate::run::cargo(&["build", "--quiet", "-p", "cli"])?;
    let binary = imagewatch_binary()?;
    let engine = docker_cli::engine_version();

    let wd = WorkDir::new("demo");
    let registry = Registry::start(&wd, RegistryConfig::htpasswd(&[(USER, PASSWORD)]));
    say(&format!(
        "registry: docker-registry on {} (htpasswd, user {USER}; plain http on loopback)",
        registry.host()
    ));
    let reference = registry.image_ref(REPOSITORY, "latest");
    let setup = Setup {
        wd,
        registry,
        reference,
        binary,
    };
    let outcome = match engine {
        Ok(version) => docker_demo(&setup, &version),
        Err(reason) => {
            say(&format!(
                "{reason}: showing the exec refresher instead of a container moving"
            ));
            exec_demo(&setup)
        }
    };
    say("stopping the registry");
    drop(setup);
    say(&format!("took {:.1}s in all", started.elapsed().as_secs_f64()));
    outcome?;
    say("done");
    Ok(())
}

/// The main job: a container of v1, `imagewatch watch --refresh docker`, a push of v2, the
/// container (same name) on v2.
fn docker_demo(setup: &Setup, engine: &str) -> Result<(), String> {
    let nanos = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    let name = format!("ws-demo-{}-{}", std::process::id(), nanos % 1_000_000);
    let reference = &setup.reference;
    say(&format!(
        "Docker Engine {engine} answers: container {name} of {reference} will move from v{V1} to v{V2}"
    ));
    setup.push(V1);

    // The CLI logs in with a throwaway config: the machine's ~/.docker is neither read nor written.
    let docker = DockerCli::new(&setup.wd.join("docker-cli-config"))?;
    // Declared before the watcher, so dropped after it: nothing recreates while we remove.
    let mut leftovers = Leftovers::new(&docker, &name, reference);
    docker.login(&setup.registry.host(), USER, PASSWORD)?;
    docker.run(&["pull", "--quiet", reference])?;
    // Opted in by its label: imagewatch finds it by discovery, not by a reference it is given.
    docker.run(&[
        "run",
        "--detach",
        "--name",
        &name,
        "--label",
        "imagewatch.enable=true",
        reference,
    ])?;
    let before = wait_running(&docker, &name)?;
    leftovers.image(&before.image_id);
    say(&format!("container {name} before the push:"));
    show(&before);
    show_version_file(&docker, &name);

    // imagewatch gets the registry's credentials from the environment only: an empty Docker config.
    let imagewatch_config = setup.wd.join("imagewatch-docker-config");
    std::fs::create_dir_all(&imagewatch_config).map_err(|e| format!("mkdir {}: {e}", imagewatch_config.display()))?;
    let mut env = setup.credentials();
    env.push(("DOCKER_CONFIG", imagewatch_config.display().to_string()));
    if let Some(host) = std::env::var("DOCKER_HOST").ok().filter(|h| !h.is_empty()) {
        env.push(("DOCKER_HOST", host));
    }
    let args: Vec<String> = [
        "watch",
        "--interval",
        "2s",
        "--jitter",
        "0",
        "--discover",
        "docker",
        "--refresh",
        "docker",
        "--docker-mode",
        "recreate",
        "--container-prefix",
        &name,
        "--stop-timeout",
        "1s",
        "--settle",
        "1s",
        "--cleanup",
    ]
    .map(str::to_owned)
    .to_vec();
    let mut watch = setup.watch(&args, &env)?;
    watch
        .wait_for(DETECT_TIMEOUT, |line| line.contains("discovered"))
        .map_err(|e| format!("the watcher did not discover {name}: {e}"))?;
    watch
        .wait_for(DETECT_TIMEOUT, |line| line.contains("seeded"))
        .map_err(|e| format!("the watcher did not seed {reference}: {e}"))?;

    let v2 = setup.push(V2);
    let pushed_at = Instant::now();
    let moved = wait_moved(&mut watch, &docker, &name, &v2);
    let moved_after = pushed_at.elapsed();
    // Whatever the outcome, the new image is the demo's to remove.
    if let Ok(Some(now)) = docker.container(&name, false) {
        leftovers.image(&now.image_id);
    }
    let stopped = watch.stop();
    say(&format!("imagewatch {stopped}"));
    let after = moved?;

    say(&format!("container {name} after the push:"));
    let after = docker.container(&name, true)?.unwrap_or(after);
    show(&after);
    show_version_file(&docker, &name);
    say(&format!(
        "same name {name}; container {} -> {}; image {} -> {}; version {} -> {}",
        docker_cli::short_id(&before.id),
        docker_cli::short_id(&after.id),
        docker_cli::short_id(&before.image_id),
        docker_cli::short_id(&after.image_id),
        before.version_label,
        after.version_label,
    ));
    let old_image = docker_cli::short_id(&before.image_id);
    if docker.quiet(&["image", "inspect", &before.image_id]).is_ok() {
        say(&format!("--cleanup: the old image {old_image} is still on the host"));
    } else {
        say(&format!(
            "--cleanup: the old image {old_image} was removed (no container uses it any more)"
        ));
    }
    say(&format!(
        "the container was on v{V2} {:.1}s after the push; removing the demo's container and images",
        moved_after.as_secs_f64()
    ));
    drop(leftovers);
    Ok(())
}

/// The container called `name` once it runs (a few seconds at most after `docker run`).
fn wait_running(docker: &DockerCli, name: &str) -> Result<Container, String> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        crate::interrupt::check()?;
        let last = docker.container(name, false)?;
        if let Some(container) = last.as_ref().filter(|c| c.status == "running") {
            docker.container(name, true)?;
            return Ok(container.clone());
        }
        if Instant::now() >= deadline {
            return Err(format!(
                "container {name} is not running 10s after `docker run`: {}",
                last.map_or_else(|| "it does not exist".to_owned(), |c| c.status)
            ));
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Waits until the watcher logged the refresh to `digest` AND the container called `name` runs
/// v2, at most [`CONTAINER_TIMEOUT`]; the container then.
fn wait_moved(watch: &mut Watch, docker: &DockerCli, name: &str, digest: &str) -> Result<Container, String> {
    let deadline = Instant::now() + CONTAINER_TIMEOUT;
    let mut logged = false;
    // What the watcher last said about refreshing to `digest`: `outcome=...` or `error=...`.
    let mut last_word = None;
    loop {
        if let Some(line) = watch.next_line(Duration::from_millis(500))?
            && line.contains(&short(digest))
            && (line.contains("refreshed") || line.contains("refresh failed"))
        {
            logged |= line.contains("refreshed");
            let said = ["outcome=", "error="].iter().find_map(|key| line.find(key));
            last_word = Some(said.map_or(line.as_str(), |at| &line[at..]).to_owned());
        }
        let last = docker.container(name, false)?;
        if logged && let Some(container) = last.as_ref().filter(|c| c.is_on(V2)) {
            return Ok(container.clone());
        }
        if Instant::now() >= deadline {
            let state = match &last {
                None => format!("there is no container {name}"),
                Some(c) => format!(
                    "{name} is {} on version {} (image {})",
                    c.status,
                    c.version_label,
                    docker_cli::short_id(&c.image_id)
                ),
            };
            let said = last_word.map_or_else(
                || "the watcher logged no refresh".to_owned(),
                |word| format!("the watcher last logged {word}"),
            );
            return Err(format!(
                "the container is not on v{V2} {}s after the push: {state}; {said}",
                CONTAINER_TIMEOUT.as_secs()
            ));
        }
    }
}

fn show(container: &Container) {
    for line in container.describe() {
        say(&line);
    }
}

/// `docker exec NAME busybox cat /version.txt`: the version as seen from inside.
fn show_version_file(docker: &DockerCli, name: &str) {
    match docker.run(&["exec", name, "busybox", "cat", "/version.txt"]) {
        Ok(version) => say(&format!("  /version.txt inside says {version}")),
        Err(error) => say(&format!("  {error}")),
    }
}

/// Without a Docker Engine: the exec refresher appends each move to a file.
fn exec_demo(setup: &Setup) -> Result<(), String> {
    setup.push(V1);
    let events = setup.wd.join("refreshes.log");
    let script = format!(
        "echo \"$IMAGEWATCH_IMAGE moved $IMAGEWATCH_OLD_DIGEST -> $IMAGEWATCH_NEW_DIGEST \
         (host $IMAGEWATCH_HOST, $IMAGEWATCH_TIME)\" >> \"{}\"",
        events.display()
    );
    // No credentials of the machine leak in: an empty Docker config, only the demo's user.
    let docker_config = setup.wd.join("docker-config");
    std::fs::create_dir_all(&docker_config).map_err(|e| format!("mkdir {}: {e}", docker_config.display()))?;
    let mut env = setup.credentials();
    env.push(("DOCKER_CONFIG", docker_config.display().to_string()));
    let args: Vec<String> = [
        "watch",
        "--interval",
        "2s",
        "--jitter",
        "0",
        "--image",
        &setup.reference,
        "--refresh",
        "exec",
        "--exec-command",
        "/bin/sh",
        "--exec-arg",
        "-c",
        "--exec-arg",
    ]
    .map(str::to_owned)
    .into_iter()
    .chain([script])
    .collect();
    let mut watch = setup.watch(&args, &env)?;
    watch
        .wait_for(DETECT_TIMEOUT, |line| line.contains("seeded"))
        .map_err(|e| format!("the watcher did not seed {}: {e}", setup.reference))?;
    let pushed_v2 = setup.push(V2);
    let pushed_at = Instant::now();

    let detected = watch.wait_for(DETECT_TIMEOUT, |line| {
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
    say(&format!("imagewatch {stopped}"));
    outcome?;
    say(&format!(
        "the move was detected and refreshed {:.1}s after the push",
        pushed_at.elapsed().as_secs_f64()
    ));
    Ok(())
}

/// `sha256:` plus the first 12 hex digits, as imagewatch's logs abbreviate digests.
fn short(digest: &str) -> String {
    digest.chars().take("sha256:".len() + 12).collect()
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
