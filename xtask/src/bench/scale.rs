//! `cargo xtask bench --images 1000,10000`: imagewatch the way users meet it — the release
//! binary, its watch set in a config file — beside the oci-client peer (a small program that
//! resolves digests with oci-client 0.18; built with its own target dir) in the same run, over
//! one token-mode registry with public repositories (both pull anonymously):
//! - per N: the peer's first and second pass, imagewatch's cold tick and warm ticks, requests
//!   and token exchanges per check (counted at the registry and the token server), CPU per
//!   tick, peak RSS;
//! - a hung host (a fault server that never answers, in-process: a real registry cannot hang
//!   on demand) beside the healthy registry: the healthy host's tick and `POST /check?wait`
//!   with and without it;
//! - push -> refresh over 10 pushes through distribution's notifications;
//! - the registry behind nginx TLS with HTTP/2, for both.
//!
//! Prints ratios (imagewatch / peer, N=10,000 / N=1,000) and writes
//! `target/bench/scale.json`. Too long for CI: run by hand.

use std::io::{BufRead as _, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant, SystemTime};

use serde_json::{Value, json};
use test_support::{
    FaultServer, HttpRequest, ImageSpec, ManifestFormat, NginxFront, Registry, RegistryConfig, RegistryTls, Reply,
    TestCa, TokenServer, TokenServerConfig, WorkDir, build_image, free_port, skopeo,
};

use super::{KillOnDrop, copy_tree, cpu_time, loadavg, machine, peak_rss_kib};

#[derive(Debug, clap::Args)]
pub struct ScaleArgs {
    /// Watch-set sizes for the scale bench, e.g. `--images 1000,10000` (runs it instead of the
    /// classic bench).
    #[arg(long, value_delimiter = ',')]
    pub images: Vec<usize>,
    /// The oci-client peer's source directory (default: `shared/bench/oci-client-peer` in an
    /// ancestor of the workspace).
    #[arg(long)]
    pub peer: Option<PathBuf>,
    /// Warm ticks measured per N.
    #[arg(long, default_value_t = 3)]
    pub scale_warm_ticks: usize,
}

const INTERVAL_SECS: u64 = 4;
const PUSHER: (&str, &str) = ("bench-pusher", "bench-pusher-password");

struct Tick {
    wall: Duration,
    cpu: Option<Duration>,
    requests: usize,
    tokens: usize,
    failed: u64,
}

struct Phase {
    n: usize,
    peer: Vec<Tick>,
    ours: Vec<Tick>,
    rss_kib: Option<u64>,
}

/// A running `imagewatch watch`: its JSON log lines as they arrive.
struct Running {
    _guard: KillOnDrop,
    pid: u32,
    lines: mpsc::Receiver<(Value, SystemTime)>,
}

impl Running {
    fn start(binary: &Path, wd: &WorkDir, label: &str, config: &str, extra: &[String]) -> Result<Running, String> {
        let path = wd.write(Path::new(&format!("{label}.toml")), config);
        let home = wd.fresh_dir(&format!("{label}-home"));
        let mut child = Command::new(binary)
            .args(["--log-format", "json", "watch", "--config"])
            .arg(&path)
            .args(extra)
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("RUST_LOG", "info")
            .env("DOCKER_CONFIG", &home)
            .env("HOME", &home)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| format!("cannot start {}: {e}", binary.display()))?;
        let pid = child.id();
        let stderr = child.stderr.take().ok_or("stderr not piped")?;
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if let Ok(event) = serde_json::from_str::<Value>(&line)
                    && tx.send((event, SystemTime::now())).is_err()
                {
                    break;
                }
            }
        });
        Ok(Running {
            _guard: KillOnDrop(child),
            pid,
            lines,
        })
    }

    fn wait(&self, what: &str, matches: impl Fn(&Value) -> bool) -> Result<(Value, SystemTime), String> {
        loop {
            let (event, at) = self
                .lines
                .recv_timeout(Duration::from_secs(180))
                .map_err(|_| format!("imagewatch logged no {what} within 180 s"))?;
            if matches(&event) {
                return Ok((event, at));
            }
        }
    }

    fn tick(&self) -> Result<Value, String> {
        Ok(self
            .wait("tick done", |e| e["message"] == "tick done" && e["kind"] == "poll")?
            .0)
    }
}

fn peer_dir(args: &ScaleArgs) -> Result<PathBuf, String> {
    if let Some(dir) = &args.peer {
        return Ok(dir.clone());
    }
    crate::run::workspace_root()
        .ancestors()
        .map(|dir| dir.join("shared/bench/oci-client-peer"))
        .find(|dir| dir.join("Cargo.toml").is_file())
        .ok_or_else(|| "no shared/bench/oci-client-peer above the workspace; give --peer DIR".into())
}

fn build_peer(args: &ScaleArgs) -> Result<PathBuf, String> {
    let dir = peer_dir(args)?;
    let target = crate::run::workspace_root().join("target/peer");
    let status = Command::new("cargo")
        .args(["build", "--release", "--quiet", "--manifest-path"])
        .arg(dir.join("Cargo.toml"))
        .env("CARGO_TARGET_DIR", &target)
        .status()
        .map_err(|e| format!("cargo: {e}"))?;
    if !status.success() {
        return Err(format!("building the peer in {} failed", dir.display()));
    }
    Ok(target.join("release/oci-client-peer"))
}

/// The peer's passes over `refs`, each counted at the registry and the token server.
fn run_peer(
    peer: &Path,
    refs: &Path,
    concurrency: usize,
    registry: &Registry,
    token: &TokenServer,
    tls: Option<&str>,
) -> Result<Vec<Tick>, String> {
    let mut command = Command::new(peer);
    command.arg(refs).args([
        "--concurrency",
        &concurrency.to_string(),
        "--passes",
        "2",
        "--pause-ms",
        "1500",
    ]);
    if let Some(ca) = tls {
        command.args(["--https", "--ca", ca]);
    }
    let mut mark = registry.mark();
    token.clear();
    let mut child = command
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .map_err(|e| format!("cannot start the peer: {e}"))?;
    let pid = child.id();
    let stdout = child.stdout.take().ok_or("stdout not piped")?;
    let mut out = Vec::new();
    let mut cpu_before = cpu_time(pid);
    for line in BufReader::new(stdout).lines().map_while(Result::ok) {
        let field = |name: &str| {
            line.split_whitespace()
                .find_map(|f| f.strip_prefix(&format!("{name}=")))
                .and_then(|v| v.parse::<f64>().ok())
        };
        let Some(wall_ms) = field("wall_ms") else { continue };
        std::thread::sleep(Duration::from_millis(300));
        let cpu = cpu_time(pid);
        out.push(Tick {
            wall: Duration::from_secs_f64(wall_ms / 1000.0),
            cpu: super::delta(cpu, cpu_before),
            requests: registry.requests_since(&mark).len(),
            tokens: token.exchange_count(),
            failed: field("failures").unwrap_or(0.0) as u64,
        });
        cpu_before = cpu;
        mark = registry.mark();
        token.clear();
    }
    let _ = child.wait();
    Ok(out)
}

fn config_for(images: &[String], concurrency: usize, extra: &str) -> String {
    let mut text =
        format!("interval = \"{INTERVAL_SECS}s\"\njitter = 0.0\nconcurrency = {concurrency}\n{extra}image = [\n");
    for image in images {
        text.push_str(&format!("  \"{image}\",\n"));
    }
    text.push_str("]\n");
    text
}

/// imagewatch's cold tick and `warm` warm ticks over `images`.
#[allow(clippy::too_many_arguments)]
fn run_ours(
    binary: &Path,
    wd: &WorkDir,
    label: &str,
    images: &[String],
    concurrency: usize,
    warm: usize,
    registry: &Registry,
    token: &TokenServer,
    extra: &[String],
) -> Result<(Vec<Tick>, Option<u64>), String> {
    let mut mark = registry.mark();
    token.clear();
    let running = Running::start(binary, wd, label, &config_for(images, concurrency, ""), extra)?;
    let mut cpu_before = cpu_time(running.pid);
    let mut out = Vec::new();
    for _ in 0..=warm {
        let done = running.tick()?;
        std::thread::sleep(Duration::from_millis(300));
        let cpu = cpu_time(running.pid);
        let good = done["seeded"].as_u64().unwrap_or(0) + done["unchanged"].as_u64().unwrap_or(0);
        out.push(Tick {
            wall: Duration::from_millis(done["duration_ms"].as_u64().unwrap_or(0)),
            cpu: super::delta(cpu, cpu_before),
            requests: registry.requests_since(&mark).len(),
            tokens: token.exchange_count(),
            failed: images.len() as u64 - good.min(images.len() as u64),
        });
        cpu_before = cpu;
        mark = registry.mark();
        token.clear();
    }
    Ok((out, peak_rss_kib(running.pid)))
}

fn median(ticks: &[Tick]) -> Duration {
    let mut walls: Vec<Duration> = ticks.iter().map(|t| t.wall).collect();
    walls.sort();
    walls.get(walls.len() / 2).copied().unwrap_or_default()
}

fn secs(d: Duration) -> f64 {
    d.as_secs_f64()
}

pub fn run(args: &super::Args) -> Result<(), String> {
    let scale = &args.scale;
    crate::install::components()?;
    let binary = super::release_binary("cli", "imagewatch")?;
    let peer = build_peer(scale)?;
    let concurrency = args.concurrency;
    let load_at_start = loadavg();
    let wd = WorkDir::new("bench-scale");
    // Pulls are anonymous (every repository is public); only the one push has credentials.
    let token = TokenServer::start(
        &wd,
        TokenServerConfig::new()
            .service("bench-registry")
            .user(PUSHER.0, PUSHER.1, &["*"]),
    );
    let registry = Registry::start(&wd, RegistryConfig::token(&token));
    let largest = scale.images.iter().copied().max().unwrap_or(1000).max(1000);
    let image = build_image(&wd, &ImageSpec::with_content("imagewatch scale bench"));
    let names: Vec<String> = (0..largest).map(|i| format!("pub/app-{i:05}")).collect();
    let started = Instant::now();
    skopeo::push(
        &image,
        &registry.image_ref(&names[0], "latest"),
        ManifestFormat::Oci,
        Some(PUSHER),
        &RegistryTls::Plain,
    );
    let storage = registry
        .config_path()
        .parent()
        .map(|dir| dir.join("storage/docker/registry/v2/repositories"))
        .ok_or("the registry has no storage directory")?;
    for name in &names[1..] {
        copy_tree(&storage.join(&names[0]), &storage.join(name))?;
    }
    println!(
        "bench: {largest} public repositories in a token-mode registry in {:.1}s",
        started.elapsed().as_secs_f64()
    );
    let refs_of = |n: usize, host: &str| -> Vec<String> {
        names[..n].iter().map(|name| format!("{host}/{name}:latest")).collect()
    };

    let mut phases = Vec::new();
    for &n in &scale.images {
        let images = refs_of(n, &registry.host());
        let refs = wd.write(Path::new(&format!("refs-{n}.txt")), images.join("\n"));
        let peer_ticks = run_peer(&peer, &refs, concurrency, &registry, &token, None)?;
        let (ours, rss) = run_ours(
            &binary,
            &wd,
            &format!("n{n}"),
            &images,
            concurrency,
            scale.scale_warm_ticks,
            &registry,
            &token,
            &[],
        )?;
        phases.push(Phase {
            n,
            peer: peer_ticks,
            ours,
            rss_kib: rss,
        });
    }

    let hung = hung_host(&binary, &wd, &refs_of(1000, &registry.host()), concurrency)?;
    let tls = tls_run(&binary, &peer, &wd, &registry, &token, &names[..1000], concurrency)?;
    let push = push_to_refresh(&binary, &wd)?;
    report(&phases, &hung, &tls, &push, concurrency, &load_at_start)
}

/// What the hung-host phase measured, without and with the hung host.
struct Hung {
    healthy_tick: [Duration; 2],
    check_wait: [Duration; 2],
}

fn hung_host(binary: &Path, wd: &WorkDir, healthy: &[String], concurrency: usize) -> Result<Hung, String> {
    let fault = FaultServer::start();
    fault.on("*", "/v2/*", [Reply::hang()]);
    let stuck: Vec<String> = (0..100)
        .map(|i| format!("{}/pub/stuck-{i:03}:latest", fault.host()))
        .collect();
    let mut healthy_tick = [Duration::ZERO; 2];
    let mut check_wait = [Duration::ZERO; 2];
    for (slot, with_hung) in [false, true].into_iter().enumerate() {
        let port = free_port();
        let mut images: Vec<String> = Vec::new();
        if with_hung {
            images.extend(stuck.iter().cloned());
        }
        images.extend(healthy.iter().cloned());
        let config = config_for(&images, concurrency, "request-timeout = 5\n");
        let running = Running::start(
            binary,
            wd,
            &format!("hung-{with_hung}"),
            &config,
            &["--listen".into(), format!("127.0.0.1:{port}")],
        )?;
        let healthy_done = |running: &Running| -> Result<Duration, String> {
            let (event, _) = running.wait("the healthy host's tick", |e| {
                (with_hung && e["message"] == "host checked" && e["kind"] == "poll" && e["images"] == healthy.len())
                    || (!with_hung && e["message"] == "tick done" && e["kind"] == "poll")
            })?;
            Ok(Duration::from_millis(event["duration_ms"].as_u64().unwrap_or(0)))
        };
        healthy_done(&running)?;
        // The poll is still waiting for the hung host here (when there is one).
        let asked = Instant::now();
        let url = format!("http://127.0.0.1:{port}/check?image={}&wait=true", healthy[0]);
        let answer = HttpRequest::new("POST", &url)
            .timeout(Duration::from_secs(30))
            .send()
            .map_err(|e| format!("POST /check: {e}"))?;
        check_wait[slot] = asked.elapsed();
        if answer.status != 200 {
            return Err(format!(
                "POST /check?wait answered {}: {}",
                answer.status,
                answer.text()
            ));
        }
        healthy_tick[slot] = healthy_done(&running)?;
    }
    Ok(Hung {
        healthy_tick,
        check_wait,
    })
}

/// The warm pass of both behind nginx TLS with HTTP/2: (peer, imagewatch median warm tick).
fn tls_run(
    binary: &Path,
    peer: &Path,
    wd: &WorkDir,
    registry: &Registry,
    token: &TokenServer,
    names: &[String],
    concurrency: usize,
) -> Result<(Duration, Duration), String> {
    let ca = TestCa::new(wd);
    let front = NginxFront::start_http2(wd, &ca, &[("/", &registry.base_url())]);
    let images: Vec<String> = names
        .iter()
        .map(|name| format!("localhost:{}/{name}:latest", front.port()))
        .collect();
    let refs = wd.write(Path::new("refs-tls.txt"), images.join("\n"));
    let ca_path = wd.write(Path::new("ca.pem"), front.ca_pem());
    let ca_arg = ca_path.to_string_lossy().into_owned();
    let peer_ticks = run_peer(peer, &refs, concurrency, registry, token, Some(&ca_arg))?;
    let (ours, _) = run_ours(
        binary,
        wd,
        "tls",
        &images,
        concurrency,
        2,
        registry,
        token,
        &["--ca-bundle".into(), ca_arg],
    )?;
    let peer_warm = peer_ticks.get(1).map(|t| t.wall).unwrap_or_default();
    Ok((peer_warm, median(&ours[1..])))
}

/// Push -> refresh latency over 10 pushes: from the registry's log of the manifest PUT to
/// imagewatch's log of the refresh.
fn push_to_refresh(binary: &Path, wd: &WorkDir) -> Result<Vec<Duration>, String> {
    let port = free_port();
    let hook = format!("http://127.0.0.1:{port}/hooks/distribution?token=bench-hook-token");
    let registry = Registry::start(wd, RegistryConfig::anonymous().notifications(&hook));
    let reference = registry.image_ref("pub/pushed", "latest");
    let versions: Vec<_> = (0..=10)
        .map(|i| build_image(wd, &ImageSpec::with_content(&format!("push v{i}"))))
        .collect();
    skopeo::push(&versions[0], &reference, ManifestFormat::Oci, None, &RegistryTls::Plain);
    let config = "interval = \"1h\"\nhook-token = \"bench-hook-token\"\n".to_owned()
        + &format!("listen = \"127.0.0.1:{port}\"\nimage = [\"{reference}\"]\n");
    let running = Running::start(binary, wd, "push", &config, &[])?;
    running.wait("the first tick", |e| e["message"] == "tick done")?;
    let mut latencies = Vec::new();
    for version in &versions[1..] {
        std::thread::sleep(Duration::from_millis(1200));
        skopeo::push(version, &reference, ManifestFormat::Oci, None, &RegistryTls::Plain);
        let short: String = version.digest.chars().take("sha256:".len() + 12).collect();
        let (_, at) = running.wait("the refresh", |e| {
            e["message"] == "refreshed" && e["new"] == short.as_str()
        })?;
        let put = manifest_put_at(&registry, "pub/pushed").ok_or("no manifest PUT in the registry log")?;
        latencies.push(at.duration_since(put).unwrap_or_default());
    }
    Ok(latencies)
}

fn manifest_put_at(registry: &Registry, name: &str) -> Option<SystemTime> {
    let uri = format!("/v2/{name}/manifests/latest");
    let log = std::fs::read_to_string(registry.log_path()).ok()?;
    log.lines()
        .rev()
        .filter_map(|line| serde_json::from_str::<Value>(line).ok())
        .filter(|e| e["http.request.method"] == "PUT" && e["http.request.uri"] == uri.as_str())
        .find_map(|e| e["time"].as_str().and_then(|t| humantime::parse_rfc3339_weak(t).ok()))
}

fn report(
    phases: &[Phase],
    hung: &Hung,
    tls: &(Duration, Duration),
    push: &[Duration],
    concurrency: usize,
    load_at_start: &str,
) -> Result<(), String> {
    println!(
        "\n{:<8} {:<26} {:>9} {:>8} {:>10} {:>10} {:>8}",
        "N", "phase", "wall", "cpu", "req/check", "tok/check", "failed"
    );
    let mut rows = Vec::new();
    for phase in phases {
        let mut line = |label: String, tick: &Tick| {
            let n = phase.n as f64;
            println!(
                "{:<8} {:<26} {:>8.3}s {:>8} {:>10.4} {:>10.4} {:>8}",
                phase.n,
                label,
                secs(tick.wall),
                tick.cpu.map_or("-".into(), |c| format!("{:.2}s", secs(c))),
                (tick.requests + tick.tokens) as f64 / n,
                tick.tokens as f64 / n,
                tick.failed
            );
            rows.push(json!({"n": phase.n, "phase": label, "wall_s": secs(tick.wall),
                "cpu_s": tick.cpu.map(secs), "requests_per_check_incl_tokens": (tick.requests + tick.tokens) as f64 / n,
                "token_exchanges_per_check": tick.tokens as f64 / n, "failed": tick.failed}));
        };
        for (i, tick) in phase.peer.iter().enumerate() {
            line(format!("oci-client pass {}", i + 1), tick);
        }
        for (i, tick) in phase.ours.iter().enumerate() {
            line(
                if i == 0 {
                    "imagewatch cold tick".into()
                } else {
                    format!("imagewatch warm tick {i}")
                },
                tick,
            );
        }
        println!(
            "{:<8} imagewatch peak RSS {:.1} MiB",
            phase.n,
            phase.rss_kib.unwrap_or(0) as f64 / 1024.0
        );
    }
    let mut targets: Vec<(String, bool, String)> = Vec::new();
    let ratio = |a: Duration, b: Duration| secs(a) / secs(b).max(1e-9);
    if let Some(p) = phases.iter().find(|p| p.n == 1000)
        && p.peer.len() == 2
        && p.ours.len() >= 2
    {
        let warm = ratio(median(&p.ours[1..]), p.peer[1].wall);
        let cold = ratio(p.ours[0].wall, p.peer[0].wall);
        let cold_req = (p.ours[0].requests + p.ours[0].tokens) as f64 / 1000.0;
        targets.push((
            "warm tick N=1000 <= 0.8x oci-client's second pass".into(),
            warm <= 0.8,
            format!("x{warm:.2}"),
        ));
        targets.push((
            "cold tick N=1000 <= 0.5x oci-client's first pass".into(),
            cold <= 0.5,
            format!("x{cold:.2}"),
        ));
        targets.push((
            "requests per check cold <= 1.02 incl. tokens".into(),
            cold_req <= 1.02,
            format!("{cold_req:.4}"),
        ));
        if let Some(big) = phases.iter().find(|q| q.n == 10_000)
            && big.ours.len() >= 2
        {
            let scale = ratio(median(&big.ours[1..]), median(&p.ours[1..]));
            targets.push((
                "N=10000 warm tick <= 11x N=1000".into(),
                scale <= 11.0,
                format!("x{scale:.2}"),
            ));
        }
    }
    let peak = phases.iter().filter_map(|p| p.rss_kib).max().unwrap_or(0);
    targets.push((
        "peak RSS <= 40 MiB".into(),
        peak <= 40 * 1024,
        format!("{:.1} MiB", peak as f64 / 1024.0),
    ));
    let tick_ratio = ratio(hung.healthy_tick[1], hung.healthy_tick[0]);
    let wait_ratio = ratio(hung.check_wait[1], hung.check_wait[0]);
    targets.push((
        "hung host: healthy host's tick within 10 %".into(),
        tick_ratio <= 1.1,
        format!(
            "x{tick_ratio:.2} ({:.3}s vs {:.3}s)",
            secs(hung.healthy_tick[1]),
            secs(hung.healthy_tick[0])
        ),
    ));
    targets.push((
        "hung host: /check?wait within 10 % (or 20 ms)".into(),
        wait_ratio <= 1.1 || hung.check_wait[1] <= hung.check_wait[0] + Duration::from_millis(20),
        format!(
            "x{wait_ratio:.2} ({:.3}s vs {:.3}s)",
            secs(hung.check_wait[1]),
            secs(hung.check_wait[0])
        ),
    ));
    let mut sorted = push.to_vec();
    sorted.sort();
    let push_median = sorted.get(sorted.len() / 2).copied().unwrap_or_default();
    let push_max = sorted.last().copied().unwrap_or_default();
    targets.push((
        "push -> refresh median <= 0.2 s".into(),
        push_median <= Duration::from_millis(200),
        format!("{:.3}s", secs(push_median)),
    ));
    targets.push((
        "push -> refresh max <= 1 s".into(),
        push_max <= Duration::from_secs(1),
        format!("{:.3}s", secs(push_max)),
    ));
    let tls_ratio = ratio(tls.1, tls.0);
    println!(
        "\nnginx TLS + HTTP/2, N=1000 warm: oci-client {:.3}s, imagewatch {:.3}s (x{tls_ratio:.2})",
        secs(tls.0),
        secs(tls.1)
    );
    println!(
        "push -> refresh over {} pushes: {:?}",
        push.len(),
        push.iter().map(|d| d.as_millis()).collect::<Vec<_>>()
    );
    println!("\ntargets:");
    for (what, met, value) in &targets {
        println!("  {} {what}: {value}", if *met { "MET   " } else { "MISSED" });
    }
    let machine = machine(load_at_start);
    println!(
        "\nmachine: {} ({} cores), load average {} at start, {} at the end; concurrency {concurrency} per host",
        machine["cpu"].as_str().unwrap_or("?"),
        machine["cores"],
        load_at_start,
        machine["loadavg_at_end"].as_str().unwrap_or("?"),
    );
    let document = json!({
        "machine": machine,
        "rows": rows,
        "tls_http2": {"peer_warm_s": secs(tls.0), "imagewatch_warm_s": secs(tls.1)},
        "hung_host": {"healthy_tick_s": [secs(hung.healthy_tick[0]), secs(hung.healthy_tick[1])],
                      "check_wait_s": [secs(hung.check_wait[0]), secs(hung.check_wait[1])]},
        "push_to_refresh_ms": push.iter().map(|d| d.as_millis() as u64).collect::<Vec<_>>(),
        "targets": targets.iter().map(|(what, met, value)| json!({"target": what, "met": met, "value": value})).collect::<Vec<_>>(),
    });
    let dir = crate::run::workspace_root().join("target/bench");
    std::fs::create_dir_all(&dir).map_err(|e| format!("mkdir {}: {e}", dir.display()))?;
    let path = dir.join("scale.json");
    std::fs::write(
        &path,
        serde_json::to_string_pretty(&document).map_err(|e| e.to_string())?,
    )
    .map_err(|e| format!("write {}: {e}", path.display()))?;
    println!("bench: wrote {}", path.display());
    Ok(())
}
