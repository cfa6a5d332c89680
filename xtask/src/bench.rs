//! `cargo xtask bench`: the watcher over 1,000 repositories of a token-auth registry, a cold
//! tick and warm ticks, with every request counted where it is spent (the registry's log, the
//! token server's record), the watcher's CPU time and peak RSS, and `skopeo inspect` over a
//! sample of the same images as the yardstick. Prints a table and writes
//! `target/bench/report.json`.
//!
//! The watcher runs as a child process so its memory is its own:
//! - `--watcher binary` (default): the real `imagewatch watch` binary, release build, ticking
//!   every few seconds; each tick is measured when its `tick done` log line arrives, and the
//!   next tick starts only after the interval, so each tick's requests are counted alone.
//! - `--watcher library`: a release build of xtask (`xtask bench-watcher`, hidden) driving the
//!   `watcher` library with the same client and provider; parent and child step tick by tick
//!   over the child's stdin/stdout.

use std::io::{BufRead as _, BufReader, Write as _};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use registry_auth::AuthSettings;
use registry_core::client::{Transport, TransportConfig};
use registry_core::{Credentials, ImageReference, RegistryHost};
use serde_json::{Value, json};
use test_support::{
    ImageSpec, ManifestFormat, Registry, RegistryConfig, RegistryTls, RequestLog, TokenServer, TokenServerConfig,
    WorkDir, build_image, sha256_digest, skopeo,
};
use watcher::{ImageStatus, MonitorOnly, RegistrySource, WatchSet, Watcher, WatcherConfig};

mod scale;

const USER: &str = "bench";
const PASSWORD: &str = "bench-password";
const USER_ENV: &str = "XTASK_BENCH_USER";
const PASSWORD_ENV: &str = "XTASK_BENCH_PASSWORD";

/// The bar.
const TARGET_REQUESTS_PER_CHECK: f64 = 1.02;
const TARGET_WARM_TICK: Duration = Duration::from_secs(1);
const TARGET_RSS_KIB: u64 = 30 * 1024;

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum WatcherKind {
    /// The real `imagewatch watch` binary (release build).
    Binary,
    /// The watcher library in a release build of xtask.
    Library,
}

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Which watcher process to measure.
    #[arg(long, value_enum, default_value = "binary")]
    watcher: WatcherKind,
    /// Warm ticks after the cold one (the median is held to the targets).
    #[arg(long, default_value_t = 3)]
    warm_ticks: usize,
    /// Repositories in the registry, each watched at `:latest`.
    #[arg(long, default_value_t = 1000)]
    repositories: usize,
    /// Digest checks at once, for the watcher and for skopeo.
    #[arg(long, default_value_t = 16)]
    concurrency: usize,
    /// Images `skopeo inspect` checks (evenly spread); its figures are extrapolated.
    #[arg(long, default_value_t = 100)]
    skopeo_sample: usize,
    #[command(flatten)]
    scale: scale::ScaleArgs,
}

#[derive(Debug, clap::Args)]
pub struct ChildArgs {
    /// A file with one image reference per line.
    #[arg(long)]
    images: PathBuf,
    /// The digest every image must answer.
    #[arg(long)]
    expect: String,
    #[arg(long)]
    ticks: usize,
    #[arg(long)]
    concurrency: usize,
}

/// What was counted over one phase (a tick, the skopeo sample).
#[derive(Debug, Clone)]
struct Measured {
    label: String,
    checks: usize,
    wall: Duration,
    /// Wall time is extrapolated from a sample to `checks`.
    extrapolated_from: Option<usize>,
    registry: RequestLog,
    token_exchanges: usize,
    token_requests: usize,
    rss_kib: Option<u64>,
    failed: usize,
    note: String,
    /// What the watcher reported for the phase: registry-core's `ClientStats` (library), or
    /// its `tick done` log event (binary).
    client_counters: Value,
    /// CPU time (user + system) the watcher process spent in the phase.
    cpu: Option<Duration>,
    /// CPU time the registry process spent in the phase.
    registry_cpu: Option<Duration>,
}

impl Measured {
    fn per_check(&self, n: usize) -> f64 {
        let checks = self.extrapolated_from.unwrap_or(self.checks);
        n as f64 / checks.max(1) as f64
    }

    fn wall_for_all(&self) -> Duration {
        match self.extrapolated_from {
            Some(sample) => self.wall.mul_f64(self.checks as f64 / sample.max(1) as f64),
            None => self.wall,
        }
    }

    fn to_json(&self) -> Value {
        let checks = self.extrapolated_from.unwrap_or(self.checks);
        json!({
            "label": self.label,
            "images": self.checks,
            "checked": checks,
            "extrapolated_from_sample": self.extrapolated_from,
            "wall_ms": ms(self.wall),
            "wall_ms_for_all_images": ms(self.wall_for_all()),
            "registry_requests": self.registry.len(),
            "registry_requests_per_check": self.per_check(self.registry.len()),
            "manifest_requests": self.registry.manifest_reads(),
            "manifest_requests_per_check": self.per_check(self.registry.manifest_reads()),
            "manifest_heads": self.registry.manifest_heads(),
            "manifest_gets": self.registry.manifest_gets(),
            "auth_refusals_401": self.registry.auth_refusals(),
            "v2_probes": self.registry.pings(),
            "token_exchanges": self.token_exchanges,
            "token_exchanges_per_check": self.per_check(self.token_exchanges),
            "token_requests": self.token_requests,
            "peak_rss_kib": self.rss_kib,
            "failed_checks": self.failed,
            "note": self.note,
            "watcher_report": self.client_counters,
            "watcher_cpu_ms": self.cpu.map(ms),
            "registry_cpu_ms": self.registry_cpu.map(ms),
        })
    }
}

fn ms(d: Duration) -> f64 {
    (d.as_secs_f64() * 1e5).round() / 100.0
}

pub fn run(args: &Args) -> Result<(), String> {
    if !args.scale.images.is_empty() {
        return scale::run(args);
    }
    crate::install::components()?;
    let child_binary = match args.watcher {
        WatcherKind::Binary => release_binary("cli", "imagewatch")?,
        WatcherKind::Library => release_binary("xtask", "xtask")?,
    };
    let wd = WorkDir::new("bench");
    let token = TokenServer::start(
        &wd,
        TokenServerConfig::new()
            .service("bench-registry")
            .user(USER, PASSWORD, &["*"])
            .private("bench/*"),
    );
    let registry = Registry::start(&wd, RegistryConfig::token(&token));
    let creds = Some((USER, PASSWORD));

    let started = Instant::now();
    let image = build_image(&wd, &ImageSpec::with_content("imagewatch bench"));
    let names: Vec<String> = (0..args.repositories).map(|i| format!("bench/app-{i:04}")).collect();
    let first = names.first().ok_or("--repositories must be at least 1")?;
    skopeo::push(
        &image,
        &registry.image_ref(first, "latest"),
        ManifestFormat::Oci,
        creds,
        &RegistryTls::Plain,
    );
    let storage = registry
        .config_path()
        .parent()
        .map(|dir| dir.join("storage/docker/registry/v2/repositories"))
        .ok_or("the registry has no storage directory")?;
    for name in &names[1..] {
        copy_tree(&storage.join(first), &storage.join(name))?;
    }
    // The registry serves the linked copies: spot-check the last one with skopeo.
    let last = registry.image_ref(names.last().unwrap_or(first), "latest");
    let served = skopeo::inspect_digest(&last, creds, &RegistryTls::Plain);
    if served != image.digest {
        return Err(format!("{last} answers {served}, expected the pushed {}", image.digest));
    }
    println!(
        "bench: {} repositories of one {} image in a token-mode registry ({}; realm {}) in {:.1}s \
         (1 skopeo push, then the repository's link files copied)",
        names.len(),
        image.digest,
        registry.host(),
        token.realm_url(),
        started.elapsed().as_secs_f64()
    );

    let images: Vec<String> = names.iter().map(|name| registry.image_ref(name, "latest")).collect();
    let images_file = wd.write(Path::new("images.txt"), images.join("\n"));
    let mut labels = vec!["cold tick".to_owned()];
    labels.extend((1..=args.warm_ticks.max(1)).map(|i| format!("warm tick {i}")));
    let load_at_start = loadavg();
    let ticks = match args.watcher {
        WatcherKind::Library => run_watcher(
            &child_binary,
            &images_file,
            &image.digest,
            args.concurrency,
            &registry,
            &token,
            &labels,
        )?,
        WatcherKind::Binary => run_imagewatch(
            &child_binary,
            &wd,
            &images,
            &image.digest,
            args.concurrency,
            &registry,
            &token,
            &labels,
        )?,
    };
    let yardstick = run_skopeo(&registry, &token, &names, &image.digest, args)?;
    report(&ticks, &yardstick, args, &registry.host(), &load_at_start)
}

/// `bin` of package `package` in release, in the target dir of the running xtask (built now,
/// if stale).
fn release_binary(package: &str, bin: &str) -> Result<PathBuf, String> {
    crate::run::cargo(&["build", "--release", "--quiet", "-p", package])?;
    let me = std::env::current_exe().map_err(|e| format!("current exe: {e}"))?;
    let target = me
        .parent()
        .and_then(Path::parent)
        .ok_or_else(|| format!("{} is not in a target dir", me.display()))?;
    let release = target.join("release").join(bin);
    if release.is_file() {
        Ok(release)
    } else {
        Err(format!("no release build of {bin} at {}", release.display()))
    }
}

fn copy_tree(from: &Path, to: &Path) -> Result<(), String> {
    std::fs::create_dir_all(to).map_err(|e| format!("mkdir {}: {e}", to.display()))?;
    for entry in std::fs::read_dir(from).map_err(|e| format!("read {}: {e}", from.display()))? {
        let entry = entry.map_err(|e| format!("read {}: {e}", from.display()))?;
        let target = to.join(entry.file_name());
        if entry.file_type().map_err(|e| e.to_string())?.is_dir() {
            copy_tree(&entry.path(), &target)?;
        } else {
            std::fs::copy(entry.path(), &target).map_err(|e| format!("copy to {}: {e}", target.display()))?;
        }
    }
    Ok(())
}

struct ChildIo {
    child: Child,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
}

impl ChildIo {
    fn line(&mut self) -> Result<Value, String> {
        let mut line = String::new();
        let n = self
            .stdout
            .read_line(&mut line)
            .map_err(|e| format!("reading the watcher: {e}"))?;
        if n == 0 {
            let status = self.child.wait().map_err(|e| e.to_string())?;
            return Err(format!("the watcher exited ({status}) before reporting"));
        }
        serde_json::from_str(&line).map_err(|e| format!("the watcher said {line:?}: {e}"))
    }

    fn go_on(&mut self) -> Result<(), String> {
        writeln!(self.stdin, "next").map_err(|e| format!("writing to the watcher: {e}"))
    }
}

impl Drop for ChildIo {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn peak_rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmHWM:"))
        .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
}

/// User + system CPU time of process `pid` so far (`/proc/<pid>/stat`, clock ticks of 10 ms:
/// Linux's USER_HZ is 100 on every architecture it reports to user space with).
fn cpu_time(pid: u32) -> Option<Duration> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name, which is in parentheses and may hold spaces.
    let rest = stat.rsplit_once(')')?.1;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some(Duration::from_millis((utime + stime) * 10))
}

/// The pid of the process whose command line names `config` (the registry started with it).
fn pid_of(config: &Path) -> Option<u32> {
    let needle = config.to_string_lossy().into_owned();
    std::fs::read_dir("/proc").ok()?.flatten().find_map(|entry| {
        let pid: u32 = entry.file_name().to_str()?.parse().ok()?;
        let cmdline = std::fs::read(entry.path().join("cmdline")).ok()?;
        String::from_utf8_lossy(&cmdline).contains(&needle).then_some(pid)
    })
}

fn run_watcher(
    binary: &Path,
    images: &Path,
    expect: &str,
    concurrency: usize,
    registry: &Registry,
    token: &TokenServer,
    labels: &[String],
) -> Result<Vec<Measured>, String> {
    let count = std::fs::read_to_string(images)
        .map_err(|e| format!("{}: {e}", images.display()))?
        .lines()
        .count();
    let mut command = Command::new(binary);
    command
        .arg("bench-watcher")
        .arg("--images")
        .arg(images)
        .args(["--expect", expect])
        .args(["--ticks", &labels.len().to_string()])
        .args(["--concurrency", &concurrency.to_string()])
        .env(USER_ENV, USER)
        .env(PASSWORD_ENV, PASSWORD)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
    // Marked BEFORE the child starts: its first tick begins at once.
    let mut mark = registry.mark();
    token.clear();
    let mut child = command
        .spawn()
        .map_err(|e| format!("cannot start {}: {e}", binary.display()))?;
    let (Some(stdin), Some(stdout)) = (child.stdin.take(), child.stdout.take()) else {
        return Err("the watcher's stdio is not piped".into());
    };
    let pid = child.id();
    let mut io = ChildIo {
        child,
        stdin,
        stdout: BufReader::new(stdout),
    };
    let mut out = Vec::new();
    let registry_pid = pid_of(registry.config_path());
    let mut cpu_before = cpu_time(pid);
    let mut registry_cpu_before = registry_pid.and_then(cpu_time);
    for label in labels {
        let report = io.line()?;
        let cpu = cpu_time(pid);
        let log = registry.requests_since(&mark);
        let registry_cpu = registry_pid.and_then(cpu_time);
        let failed = report["failed"].as_u64().unwrap_or(u64::MAX) as usize;
        let wall = report["wall_ms"]
            .as_f64()
            .and_then(|ms| Duration::try_from_secs_f64(ms / 1000.0).ok())
            .ok_or_else(|| format!("the watcher reported no wall time: {report}"))?;
        out.push(Measured {
            label: label.clone(),
            checks: count,
            wall,
            extrapolated_from: None,
            registry: log,
            token_exchanges: token.exchange_count(),
            token_requests: token.request_count(),
            rss_kib: peak_rss_kib(pid),
            failed,
            note: report["first_error"].as_str().unwrap_or_default().to_owned(),
            client_counters: report["client_counters"].clone(),
            cpu: match (cpu, cpu_before) {
                (Some(after), Some(before)) => Some(after.saturating_sub(before)),
                _ => None,
            },
            registry_cpu: None,
        });
        cpu_before = cpu;
        let registry_cpu_spent = match (registry_cpu, registry_cpu_before) {
            (Some(after), Some(before)) => Some(after.saturating_sub(before)),
            _ => None,
        };
        if let Some(last) = out.last_mut() {
            last.registry_cpu = registry_cpu_spent;
        }
        registry_cpu_before = registry_pid.and_then(cpu_time);
        mark = registry.mark();
        token.clear();
        io.go_on()?;
    }
    let done = io.line()?;
    if done["done"] != true {
        return Err(format!("the watcher ended with {done}"));
    }
    Ok(out)
}

/// The interval between the real binary's ticks: long enough to count one tick's requests
/// (the registry log must settle) before the next starts.
const BINARY_INTERVAL: Duration = Duration::from_secs(5);

/// Runs `imagewatch watch` over `images` (credentials through the generic environment source,
/// an empty Docker config, JSON logs) and measures each tick when it logs `tick done`.
#[allow(clippy::too_many_arguments)]
fn run_imagewatch(
    binary: &Path,
    wd: &WorkDir,
    images: &[String],
    expect: &str,
    concurrency: usize,
    registry: &Registry,
    token: &TokenServer,
    labels: &[String],
) -> Result<Vec<Measured>, String> {
    let docker_config = wd.join("docker-config");
    std::fs::create_dir_all(&docker_config).map_err(|e| format!("mkdir {}: {e}", docker_config.display()))?;
    let mut command = Command::new(binary);
    command
        .args(["--log-format", "json", "watch", "--jitter", "0"])
        .arg("--interval")
        .arg(format!("{}s", BINARY_INTERVAL.as_secs()))
        .args(["--concurrency", &concurrency.to_string()])
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("RUST_LOG", "info")
        .env("IMAGEWATCH_IMAGES", images.join(","))
        .env("IMAGEWATCH_REGISTRY_HOST", registry.host())
        .env("IMAGEWATCH_REGISTRY_USER", USER)
        .env("IMAGEWATCH_REGISTRY_PASSWORD", PASSWORD)
        .env("DOCKER_CONFIG", &docker_config)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    // Marked BEFORE the child starts: its first tick begins at once.
    let mut mark = registry.mark();
    token.clear();
    let registry_pid = pid_of(registry.config_path());
    let mut child = command
        .spawn()
        .map_err(|e| format!("cannot start {}: {e}", binary.display()))?;
    let pid = child.id();
    let stderr = child.stderr.take().ok_or("the watcher's stderr is not piped")?;
    let guard = KillOnDrop(child);
    let (tx, lines) = std::sync::mpsc::channel::<String>();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });

    let mut out = Vec::new();
    let mut cpu_before = cpu_time(pid);
    let mut registry_cpu_before = registry_pid.and_then(cpu_time);
    let expect_short: String = expect.chars().take("sha256:".len() + 12).collect();
    let mut wrong_digests = 0;
    let mut first_error = String::new();
    for label in labels {
        let done = loop {
            let line = lines
                .recv_timeout(Duration::from_secs(120))
                .map_err(|_| format!("imagewatch said nothing for 120 s during the {label}"))?;
            let Ok(event) = serde_json::from_str::<Value>(&line) else {
                continue;
            };
            match event["message"].as_str() {
                Some("tick done") => break event,
                Some("seeded" | "unchanged") if event["digest"].as_str() != Some(&expect_short) => {
                    wrong_digests += 1;
                }
                _ => {}
            }
            if (event["level"] == "WARN" || event["level"] == "ERROR") && first_error.is_empty() {
                first_error = line.clone();
            }
        };
        let tick_done_at = Instant::now();
        let cpu = cpu_time(pid);
        let log = registry.requests_since(&mark);
        let registry_cpu = registry_pid.and_then(cpu_time);
        let wall = done["duration_ms"]
            .as_u64()
            .map(Duration::from_millis)
            .ok_or_else(|| format!("`tick done` without duration_ms: {done}"))?;
        let counted = |key: &str| done[key].as_u64().unwrap_or(0) as usize;
        let good = counted("seeded") + counted("unchanged");
        out.push(Measured {
            label: label.clone(),
            checks: images.len(),
            wall,
            extrapolated_from: None,
            registry: log,
            token_exchanges: token.exchange_count(),
            token_requests: token.request_count(),
            rss_kib: peak_rss_kib(pid),
            failed: images.len().saturating_sub(good) + std::mem::take(&mut wrong_digests),
            note: std::mem::take(&mut first_error),
            client_counters: done.clone(),
            cpu: delta(cpu, cpu_before),
            registry_cpu: delta(registry_cpu, registry_cpu_before),
        });
        cpu_before = cpu;
        mark = registry.mark();
        token.clear();
        registry_cpu_before = registry_pid.and_then(cpu_time);
        if tick_done_at.elapsed() >= BINARY_INTERVAL {
            return Err(format!(
                "counting the {label} took {:.1}s, longer than the watcher's interval: the next tick's \
                 requests would be mixed in",
                tick_done_at.elapsed().as_secs_f64()
            ));
        }
    }
    drop(guard);
    Ok(out)
}

fn delta(after: Option<Duration>, before: Option<Duration>) -> Option<Duration> {
    Some(after?.saturating_sub(before?))
}

/// Stops a child (SIGTERM, a moment to exit cleanly, then SIGKILL) when dropped.
struct KillOnDrop(Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = Command::new("kill").args(["-TERM", &self.0.id().to_string()]).status();
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.0.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn run_skopeo(
    registry: &Registry,
    token: &TokenServer,
    names: &[String],
    expect: &str,
    args: &Args,
) -> Result<Measured, String> {
    let step = (names.len() / args.skopeo_sample.max(1)).max(1);
    let sample: Vec<String> = names
        .iter()
        .step_by(step)
        .take(args.skopeo_sample)
        .map(|name| registry.image_ref(name, "latest"))
        .collect();
    let binary = skopeo::binary();
    let next = AtomicUsize::new(0);
    let wrong = AtomicUsize::new(0);
    let mark = registry.mark();
    token.clear();
    let registry_pid = pid_of(registry.config_path());
    let registry_cpu_before = registry_pid.and_then(cpu_time);
    let started = Instant::now();
    std::thread::scope(|scope| {
        for _ in 0..args.concurrency.max(1) {
            scope.spawn(|| {
                loop {
                    let i = next.fetch_add(1, Ordering::SeqCst);
                    let Some(reference) = sample.get(i) else { break };
                    let output = Command::new(&binary)
                        .args(["--insecure-policy", "inspect", "--raw", "--tls-verify=false"])
                        .arg(format!("--creds={USER}:{PASSWORD}"))
                        .arg(format!("docker://{reference}"))
                        .stdin(Stdio::null())
                        .output();
                    let good = output.is_ok_and(|o| o.status.success() && sha256_digest(&o.stdout) == expect);
                    if !good {
                        wrong.fetch_add(1, Ordering::SeqCst);
                    }
                }
            });
        }
    });
    let wall = started.elapsed();
    let registry_cpu_spent = match (registry_pid.and_then(cpu_time), registry_cpu_before) {
        (Some(after), Some(before)) => Some(after.saturating_sub(before)),
        _ => None,
    };
    Ok(Measured {
        label: format!("skopeo inspect --raw ({} in parallel)", args.concurrency),
        checks: names.len(),
        wall,
        extrapolated_from: Some(sample.len()),
        registry: registry.requests_since(&mark),
        token_exchanges: token.exchange_count(),
        token_requests: token.request_count(),
        rss_kib: None,
        failed: wrong.load(Ordering::SeqCst),
        note: format!(
            "{} of {} images, wall extrapolated x{:.0}",
            sample.len(),
            names.len(),
            names.len() as f64 / sample.len().max(1) as f64
        ),
        client_counters: Value::Null,
        cpu: None,
        registry_cpu: registry_cpu_spent,
    })
}

fn loadavg() -> String {
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    load.split_whitespace().take(3).collect::<Vec<_>>().join(" ")
}

fn machine(load_at_start: &str) -> Value {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo
        .lines()
        .find_map(|l| l.strip_prefix("model name"))
        .map(|rest| rest.trim_start_matches([' ', '\t', ':']).to_owned())
        .unwrap_or_default();
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    json!({
        "cpu": model,
        "cores": cores,
        "kernel": kernel.trim(),
        "loadavg_before_ticks": load_at_start,
        "loadavg_at_end": loadavg(),
    })
}

fn report(
    ticks: &[Measured],
    yardstick: &Measured,
    args: &Args,
    host: &str,
    load_at_start: &str,
) -> Result<(), String> {
    let rows: Vec<&Measured> = ticks.iter().chain(std::iter::once(yardstick)).collect();
    println!(
        "\n{:<38} {:>9} {:>8} {:>8} {:>11} {:>9} {:>9} {:>5} {:>5} {:>8} {:>6}",
        "phase", "wall", "cpu", "reg cpu", "reg req/chk", "manif/chk", "token/chk", "/v2/", "401s", "RSS MiB", "failed"
    );
    println!("{}", "-".repeat(127));
    for m in &rows {
        let wall = match m.extrapolated_from {
            Some(_) => format!("~{:.2}s", m.wall_for_all().as_secs_f64()),
            None => format!("{:.3}s", m.wall.as_secs_f64()),
        };
        println!(
            "{:<38} {:>9} {:>8} {:>8} {:>11.3} {:>9.3} {:>9.3} {:>5} {:>5} {:>8} {:>6}",
            m.label,
            wall,
            m.cpu.map_or("-".into(), |c| format!("{:.2}s", c.as_secs_f64())),
            m.registry_cpu
                .map_or("-".into(), |c| format!("{:.2}s", c.as_secs_f64())),
            m.per_check(m.registry.len()),
            m.per_check(m.registry.manifest_reads()),
            m.per_check(m.token_exchanges),
            m.registry.pings(),
            m.registry.auth_refusals(),
            m.rss_kib.map_or("-".into(), |k| format!("{:.1}", k as f64 / 1024.0)),
            m.failed,
        );
    }
    println!("\n{:<34} {}", "skopeo sample", yardstick.note);

    let (cold, warm) = match ticks {
        [cold, warm_ticks @ ..] if !warm_ticks.is_empty() => {
            // The median warm tick: the machine is shared, one tick can be unlucky.
            let mut sorted: Vec<&Measured> = warm_ticks.iter().collect();
            sorted.sort_by_key(|m| m.wall);
            (cold, sorted[sorted.len() / 2])
        }
        _ => return Err("the watcher reported fewer than two ticks".into()),
    };
    let ratio = |a: f64, b: f64| if b > 0.0 { a / b } else { f64::INFINITY };
    let sk_wall = yardstick.wall_for_all().as_secs_f64();
    let sk_req = yardstick.per_check(yardstick.registry.len());
    let sk_tok = yardstick.per_check(yardstick.token_exchanges);
    println!("\nskopeo / imagewatch (higher = imagewatch cheaper):");
    for tick in [cold, warm] {
        println!(
            "  vs {:<12} wall x{:.1}   registry requests x{:.2}   token exchanges x{}",
            tick.label,
            ratio(sk_wall, tick.wall.as_secs_f64()),
            ratio(sk_req, tick.per_check(tick.registry.len())),
            match tick.token_exchanges {
                0 => "inf (imagewatch: none)".to_owned(),
                n => format!("{:.1}", ratio(sk_tok, tick.per_check(n))),
            }
        );
    }

    let peak = ticks.iter().filter_map(|t| t.rss_kib).max().unwrap_or(u64::MAX);
    let warm_requests = warm.per_check(warm.registry.len());
    let targets = [
        (
            "steady-state (median warm tick) registry requests per image-check <= 1.02",
            warm_requests <= TARGET_REQUESTS_PER_CHECK,
            format!("{warm_requests:.3}"),
        ),
        (
            "median warm tick over the images within 1 s",
            warm.wall <= TARGET_WARM_TICK,
            format!("{:.3}s", warm.wall.as_secs_f64()),
        ),
        (
            "watcher peak RSS under 30 MiB",
            peak < TARGET_RSS_KIB,
            format!("{:.1} MiB", peak as f64 / 1024.0),
        ),
        (
            "every check answered the pushed digest",
            rows.iter().all(|m| m.failed == 0),
            format!("{} failed", rows.iter().map(|m| m.failed).sum::<usize>()),
        ),
    ];
    println!("\ntargets:");
    for (what, met, value) in &targets {
        println!("  {} {what}: {value}", if *met { "MET   " } else { "MISSED" });
    }

    let machine = machine(load_at_start);
    let how = match args.watcher {
        WatcherKind::Binary => format!(
            "`imagewatch watch --interval {}s --jitter 0 --concurrency {}` (the real binary, release build; \
             credentials from IMAGEWATCH_REGISTRY_USER/PASSWORD; tick wall = its `tick done` duration_ms)",
            BINARY_INTERVAL.as_secs(),
            args.concurrency
        ),
        WatcherKind::Library => format!(
            "xtask bench-watcher: watcher::Watcher + RegistrySource + RegistryClient + BearerTokenProvider \
             (release build), concurrency {}",
            args.concurrency
        ),
    };
    println!(
        "\nmachine: {} ({} cores), kernel {}, load average {} before the ticks, {} at the end",
        machine["cpu"].as_str().unwrap_or("?"),
        machine["cores"],
        machine["kernel"].as_str().unwrap_or("?"),
        machine["loadavg_before_ticks"].as_str().unwrap_or("?"),
        machine["loadavg_at_end"].as_str().unwrap_or("?"),
    );
    println!("watcher: {how}, a child process (CPU from /proc/<pid>/stat, peak RSS = VmHWM)");
    println!(
        "counted: at the registry (its JSON request log: every request, /v2/ probes, 401 refusals) and at the \
         token server (its record of exchanges); registry CPU from /proc/<pid>/stat"
    );
    let document = json!({
        "registry": {"host": host, "kind": "docker-registry (CNCF distribution) token mode, plain http on loopback", "repositories": args.repositories},
        "watcher": {"how": how, "concurrency": args.concurrency},
        "machine": machine,
        "phases": rows.iter().map(|m| m.to_json()).collect::<Vec<_>>(),
        "targets": targets.iter().map(|(what, met, value)| json!({"target": what, "met": met, "value": value})).collect::<Vec<_>>(),
    });
    let dir = crate::run::workspace_root().join("target/bench");
    std::fs::create_dir_all(&dir).map_err(|e| format!("mkdir {}: {e}", dir.display()))?;
    let path = dir.join("report.json");
    let text = serde_json::to_string_pretty(&document).map_err(|e| e.to_string())?;
    std::fs::write(&path, text).map_err(|e| format!("write {}: {e}", path.display()))?;
    println!("bench: wrote {}", path.display());
    let missed: Vec<&str> = targets
        .iter()
        .filter(|(_, met, _)| !met)
        .map(|(what, _, _)| *what)
        .collect();
    if missed.is_empty() {
        Ok(())
    } else {
        Err(format!("bench: targets missed: {}", missed.join("; ")))
    }
}

/// The child: ticks the watcher over the images, one JSON line per tick on stdout, waiting for
/// a line on stdin before each next tick (and before exiting, so its peak RSS can be read).
pub fn child(args: &ChildArgs) -> Result<(), String> {
    let text = std::fs::read_to_string(&args.images).map_err(|e| format!("{}: {e}", args.images.display()))?;
    let images: Vec<ImageReference> = text
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| l.trim().parse().map_err(|e| format!("{l}: {e}")))
        .collect::<Result<_, String>>()?;
    let host: RegistryHost = images.first().ok_or("no images")?.host().clone();
    let user = std::env::var(USER_ENV).map_err(|_| format!("{USER_ENV} is not set"))?;
    let password = std::env::var(PASSWORD_ENV).map_err(|_| format!("{PASSWORD_ENV} is not set"))?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    let transport = Arc::new(Transport::new(TransportConfig::default()).map_err(|e| e.to_string())?);
    let mut settings = AuthSettings::new(host.clone());
    settings.registry_credentials = Some((host.clone(), Credentials::basic(user, password)));
    let client = Arc::new(
        runtime
            .block_on(registry_auth::wire(&settings, transport, &[host]))
            .map_err(|e| e.to_string())?
            .client,
    );
    let mut set = WatchSet::new();
    for image in &images {
        set.add_image(image.clone()).map_err(|e| e.to_string())?;
    }
    let config = WatcherConfig {
        concurrency: args.concurrency,
        state_file: None,
        ..WatcherConfig::default()
    };
    let mut watcher = Watcher::new(
        set,
        Arc::new(RegistrySource::new(client.clone())),
        Arc::new(MonitorOnly),
        config,
    )
    .map_err(|e| e.to_string())?;
    let stdin = std::io::stdin();
    let mut stdout = std::io::stdout();
    for tick in 1..=args.ticks {
        let before = client.stats().snapshot();
        let started = Instant::now();
        let report = runtime.block_on(watcher.tick());
        let wall = started.elapsed();
        let stats = client.stats().snapshot().since(&before);
        let mut failed = 0;
        let mut first_error = None;
        for image in &report.images {
            let good = match &image.status {
                ImageStatus::Seeded { digest } | ImageStatus::Unchanged { digest } => digest.as_str() == args.expect,
                _ => false,
            };
            if !good {
                failed += 1;
                first_error.get_or_insert_with(|| format!("{}: {}", image.image, image.status));
            }
        }
        let line = json!({
            "tick": tick,
            "wall_ms": wall.as_secs_f64() * 1000.0,
            "checked": report.images.len(),
            "failed": failed,
            "first_error": first_error,
            "client_counters": serde_json::to_value(stats).unwrap_or_default(),
        });
        writeln!(stdout, "{line}").map_err(|e| e.to_string())?;
        stdout.flush().map_err(|e| e.to_string())?;
        let mut go = String::new();
        stdin.lock().read_line(&mut go).map_err(|e| e.to_string())?;
    }
    writeln!(stdout, "{}", json!({"done": true})).map_err(|e| e.to_string())?;
    stdout.flush().map_err(|e| e.to_string())?;
    let mut exit = String::new();
    let _ = stdin.lock().read_line(&mut exit);
    Ok(())
}
