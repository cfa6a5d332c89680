//! Swarm mode on this machine's Docker daemon, for the Swarm refresher's tests: a single-node
//! swarm advertised and listening on 127.0.0.1, started when the daemon is not a manager yet and
//! left again when the last test using it is done (with the gateway bridge the init created), so
//! the daemon ends as it was found. A daemon
//! that already is a manager is used as it is and never left.
//!
//! It must not create or remove any service: each test owns (and removes) its own.

use std::process::Command;
use std::sync::Mutex;

use crate::process::free_port;

/// Tests of one process share the swarm: the first one in starts it, the last one out leaves it.
static USERS: Mutex<Users> = Mutex::new(Users {
    count: 0,
    ours: false,
    bridge_ours: false,
});

/// The bridge `docker swarm init` creates and `docker swarm leave` keeps.
const GATEWAY_BRIDGE: &str = "docker_gwbridge";

struct Users {
    count: usize,
    /// Whether this process ran `docker swarm init` (and so must leave).
    ours: bool,
    /// Whether that init created the gateway bridge (and so leaving must remove it).
    bridge_ours: bool,
}

/// A handle on swarm mode; while one is alive the daemon is a swarm manager.
#[derive(Debug)]
pub struct Swarm {
    _private: (),
}

impl Swarm {
    /// Makes the daemon a single-node swarm manager unless it already is one.
    ///
    /// # Panics
    /// When the Docker CLI or daemon is missing, the daemon is a worker of another swarm, or
    /// `docker swarm init` fails.
    pub fn join() -> Swarm {
        let mut users = USERS.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        if users.count == 0 {
            let state = docker(&[
                "info",
                "--format",
                "{{.Swarm.LocalNodeState}} {{.Swarm.ControlAvailable}}",
            ]);
            match state.trim() {
                "active true" => users.ours = false,
                "inactive" | "inactive false" => {
                    users.bridge_ours = !docker(&["network", "ls", "--format", "{{.Name}}"])
                        .lines()
                        .any(|name| name.trim() == GATEWAY_BRIDGE);
                    let listen = format!("127.0.0.1:{}", free_port());
                    docker(&[
                        "swarm",
                        "init",
                        "--advertise-addr",
                        "127.0.0.1",
                        "--listen-addr",
                        &listen,
                    ]);
                    users.ours = true;
                }
                other => panic!(
                    "test-support: the Docker daemon's swarm state is {other:?}; expected `inactive` (or a manager)"
                ),
            }
        }
        users.count += 1;
        Swarm { _private: () }
    }

    /// Whether this process started swarm mode (and will leave it).
    pub fn started_here(&self) -> bool {
        USERS.lock().map(|users| users.ours).unwrap_or(false)
    }
}

impl Drop for Swarm {
    fn drop(&mut self) {
        let mut users = USERS.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        users.count = users.count.saturating_sub(1);
        if users.count == 0 && users.ours {
            let left = Command::new("docker").args(["swarm", "leave", "--force"]).output();
            if !left.as_ref().is_ok_and(|out| out.status.success()) {
                eprintln!("test-support: `docker swarm leave --force` failed: {left:?}");
            }
            if users.bridge_ours {
                let _ = Command::new("docker").args(["network", "rm", GATEWAY_BRIDGE]).output();
            }
            users.ours = false;
            users.bridge_ours = false;
        }
    }
}

fn docker(args: &[&str]) -> String {
    let output = Command::new("docker")
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("test-support: cannot run `docker` ({e}); install the Debian package `docker.io`"));
    assert!(
        output.status.success(),
        "test-support: `docker {}` failed: {}",
        args.join(" "),
        String::from_utf8_lossy(&output.stderr).trim()
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}
