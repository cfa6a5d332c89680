//! Three `imagewatch watch` replicas (the real binary) sharing a REAL PostgreSQL (Debian's
//! binaries, a private cluster started by test-support) as their `--state`, watching a REAL
//! registry, with the exec refresher appending to one file. One replica leads and refreshes; a
//! leader killed with SIGKILL in the middle of a (slow) refresh is replaced within the lock retry
//! and its move refreshed by the next leader (at least once: at most one more start); a database
//! down while a push lands loses nothing once it is back.

use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use test_support::{
    ImageSpec, ManifestFormat, Postgres, Registry, RegistryTls, WorkDir, build_image, free_port, http_get, skopeo,
};

/// A replica in its own process group, so a SIGKILL takes its running command down with it, as
/// a host or container dying would.
struct Replica {
    name: String,
    port: u16,
    log: PathBuf,
    child: Child,
}

impl Replica {
    fn kill(&mut self) {
        let _ = Command::new("kill")
            .args(["-KILL", "--", &format!("-{}", self.child.id())])
            .status();
        let _ = self.child.wait();
    }

    fn status(&self) -> serde_json::Value {
        http_get(&format!("http://127.0.0.1:{}/status", self.port))
            .ok()
            .and_then(|r| serde_json::from_slice(&r.body).ok())
            .unwrap_or(serde_json::Value::Null)
    }

    fn role(&self) -> String {
        self.status()["replica"]["role"].as_str().unwrap_or("").to_owned()
    }

    fn logs(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Replica {
    fn drop(&mut self) {
        self.kill();
    }
}

fn start(wd: &WorkDir, name: &str, reference: &str, url: &str, events: &Path, slow: &Path) -> Replica {
    let port = free_port();
    let log = wd.join(&format!("{name}.log"));
    let home = wd.fresh_dir("home");
    let script = format!(
        "echo \"start $IMAGEWATCH_NEW_DIGEST {name}\" >> '{events}'; \
         if [ -e '{slow}' ]; then sleep 30; fi; \
         echo \"done $IMAGEWATCH_NEW_DIGEST {name}\" >> '{events}'",
        events = events.display(),
        slow = slow.display()
    );
    let child = Command::new(env!("CARGO_BIN_EXE_imagewatch"))
        .arg("watch")
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("DOCKER_CONFIG", &home)
        .env("HOME", &home)
        .args([
            "--image",
            reference,
            "--interval",
            "1s",
            "--jitter",
            "0",
            "--refresh",
            "exec",
        ])
        .args(["--exec-command", "/bin/sh", "--exec-arg", "-c", "--exec-arg", &script])
        .args(["--state", url, "--replica", name, "--leader-retry", "500ms"])
        .args(["--listen", &port.to_string(), "--log-format", "json"])
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).expect("log file"))
        .process_group(0)
        .spawn()
        .expect("starts");
    Replica {
        name: name.to_owned(),
        port,
        log,
        child,
    }
}

fn events(path: &Path, kind: &str, digest: &str) -> Vec<String> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter_map(|line| line.strip_prefix(&format!("{kind} {digest} ")).map(str::to_owned))
        .collect()
}

fn wait_until(limit: Duration, mut condition: impl FnMut() -> bool) -> bool {
    let started = Instant::now();
    while started.elapsed() < limit {
        if condition() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    false
}

/// The replicas that say they lead; waits until exactly one does and the others name it.
fn one_leader(replicas: &[&Replica]) -> Option<String> {
    let mut found = None;
    let settled = wait_until(Duration::from_secs(15), || {
        let leaders: Vec<&&Replica> = replicas.iter().filter(|r| r.role() == "leader").collect();
        let [leader] = leaders.as_slice() else { return false };
        let named = replicas
            .iter()
            .all(|r| r.status()["replica"]["leader"].as_str() == Some(leader.name.as_str()));
        found = Some(leader.name.clone());
        named
    });
    settled.then_some(found).flatten()
}

#[test]
fn replicas_refresh_each_push_once_survive_a_killed_leader_and_a_database_restart() {
    let wd = WorkDir::new("cli-replicas-pg");
    let mut pg = Postgres::start(&wd);
    let registry = Registry::anonymous(&wd);
    let reference = registry.image_ref("fleet/app", "latest");
    let push = |content: &str| {
        let layout = build_image(&wd, &ImageSpec::with_content(content));
        skopeo::push(&layout, &reference, ManifestFormat::Oci, None, &RegistryTls::Plain)
    };
    let events_log = wd.join("events.log");
    let slow = wd.join("slow");
    let v1 = push("v1");
    let mut replicas: Vec<Replica> = ["r1", "r2", "r3"]
        .iter()
        .map(|name| start(&wd, name, &reference, &pg.url(), &events_log, &slow))
        .collect();
    let all_logs = |replicas: &[Replica]| {
        replicas
            .iter()
            .map(|r| format!("--- {}\n{}", r.name, r.logs()))
            .collect::<Vec<_>>()
            .join("\n")
    };
    let leader = one_leader(&replicas.iter().collect::<Vec<_>>())
        .unwrap_or_else(|| panic!("no single leader: {}", all_logs(&replicas)));
    assert!(
        wait_until(Duration::from_secs(10), || pg
            .psql("SELECT digest FROM imagewatch_seen")
            == v1),
        "v1 not seeded: {}",
        all_logs(&replicas)
    );

    // A push: exactly one exec event, by the leader, even after several more ticks.
    let v2 = push("v2");
    assert!(
        wait_until(Duration::from_secs(10), || !events(&events_log, "done", &v2).is_empty()),
        "v2 not refreshed: {}",
        all_logs(&replicas)
    );
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(events(&events_log, "start", &v2), vec![leader.clone()]);
    assert_eq!(events(&events_log, "done", &v2), vec![leader.clone()]);
    let leading = replicas.iter().find(|r| r.name == leader).expect("leader");
    let metrics = http_get(&format!("http://127.0.0.1:{}/metrics", leading.port))
        .expect("metrics")
        .text();
    assert!(
        metrics.contains(&format!("imagewatch_leader{{replica=\"{leader}\"}} 1\n")),
        "{metrics}"
    );

    // The leader dies (SIGKILL, its command with it) after starting a slow refresh of v3.
    std::fs::write(&slow, "").expect("slow flag");
    let v3 = push("v3");
    assert!(
        wait_until(Duration::from_secs(10), || !events(&events_log, "start", &v3)
            .is_empty()),
        "v3 not started: {}",
        all_logs(&replicas)
    );
    let killed_at = Instant::now();
    let index = replicas.iter().position(|r| r.name == leader).expect("leader");
    let mut dead = replicas.remove(index);
    dead.kill();
    std::fs::remove_file(&slow).expect("no longer slow");
    assert!(
        wait_until(Duration::from_secs(10), || !events(&events_log, "done", &v3).is_empty()),
        "v3 not refreshed by the next leader: {}",
        all_logs(&replicas)
    );
    let takeover = killed_at.elapsed();
    println!(
        "replicas: the next leader refreshed the dead leader's move {} ms after the kill",
        takeover.as_millis()
    );
    assert!(takeover < Duration::from_secs(5), "{takeover:?}");
    std::thread::sleep(Duration::from_secs(2));
    let starts = events(&events_log, "start", &v3);
    let done = events(&events_log, "done", &v3);
    assert_eq!(
        starts.len(),
        2,
        "the dead leader's start and one more, no other: {starts:?}"
    );
    assert_eq!(done.len(), 1, "{done:?}");
    assert_ne!(done[0], leader, "refreshed by the next leader");
    let leader = one_leader(&replicas.iter().collect::<Vec<_>>())
        .unwrap_or_else(|| panic!("no leader after the kill: {}", all_logs(&replicas)));
    assert_eq!(leader, done[0]);

    // The database goes down while a push lands, and comes back: nothing lost, nothing twice.
    pg.stop();
    let v4 = push("v4");
    std::thread::sleep(Duration::from_secs(2));
    assert!(
        events(&events_log, "start", &v4).is_empty(),
        "no replica may refresh without the lock"
    );
    pg.start_again();
    assert!(
        wait_until(Duration::from_secs(15), || !events(&events_log, "done", &v4).is_empty()),
        "v4 not refreshed after the database came back: {}",
        all_logs(&replicas)
    );
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(events(&events_log, "start", &v4).len(), 1, "{}", all_logs(&replicas));
    assert_eq!(events(&events_log, "done", &v4).len(), 1);
    one_leader(&replicas.iter().collect::<Vec<_>>())
        .unwrap_or_else(|| panic!("no leader after the restart: {}", all_logs(&replicas)));
    assert_eq!(pg.psql("SELECT digest FROM imagewatch_seen"), v4);
    assert_eq!(pg.psql("SELECT count(*) FROM imagewatch_pending"), "0");
    for replica in replicas.iter().chain(std::iter::once(&dead)) {
        assert!(
            !replica.logs().contains(pg.password()),
            "{} logged the database password",
            replica.name
        );
    }
}

/// `imagewatch watch` with a fleet flag it cannot use stops at once with status 2 and one line
/// naming what is wrong, never the database password.
#[rstest::rstest]
#[case::database_down(&["--state", "postgres://imagewatch:db-s3cret@127.0.0.1:1/watch"], "PostgreSQL at postgres://imagewatch@127.0.0.1:1/watch")]
#[case::tls_required(&["--state", "postgres://imagewatch:db-s3cret@127.0.0.1:1/watch?sslmode=require"], "without TLS")]
#[case::empty_replica(&["--state", "postgres://imagewatch:db-s3cret@127.0.0.1:1/watch", "--replica", " "], "--replica is empty")]
#[case::no_swarm_manager(&["--refresh", "swarm", "--docker-host", "unix:///nonexistent/docker.sock"], "no socket at /nonexistent/docker.sock")]
fn unusable_fleet_settings_fail_the_start_plainly(#[case] flags: &[&str], #[case] expected: &str) {
    let wd = WorkDir::new("cli-fleet-flags");
    let home = wd.fresh_dir("home");
    let output = Command::new(env!("CARGO_BIN_EXE_imagewatch"))
        .arg("watch")
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("HOME", &home)
        .env("DOCKER_CONFIG", &home)
        .args(["--image", "127.0.0.1:1/fleet/app:latest", "--once"])
        .args(flags)
        .output()
        .expect("runs");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains(expected), "{stderr}");
    assert!(!stderr.contains("db-s3cret"), "{stderr}");
}
