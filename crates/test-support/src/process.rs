//! Child processes of real components: finding the binary, spawning with logs to a file,
//! killing on drop, waiting for readiness, and the loud failure when a component cannot start.
//!
//! It must not know any component's protocol: callers pass a readiness probe.

use std::fs::{File, OpenOptions};
use std::net::TcpListener;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

/// How long a component may take to become ready before the test fails.
pub const READY_TIMEOUT: Duration = Duration::from_secs(15);

/// An external program a component needs, with the package that installs it.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Program {
    /// Executable name looked up on `PATH`.
    pub name: &'static str,
    /// How to install it, e.g. "Debian package `docker-registry`".
    pub install: &'static str,
}

pub(crate) const DOCKER_REGISTRY: Program = Program {
    name: "docker-registry",
    install: "Debian package `docker-registry` (apt-get install -y docker-registry)",
};
pub(crate) const HTPASSWD: Program = Program {
    name: "htpasswd",
    install: "Debian package `apache2-utils` (apt-get install -y apache2-utils)",
};
pub(crate) const SKOPEO: Program = Program {
    name: "skopeo",
    install: "Debian package `skopeo` (apt-get install -y skopeo)",
};
pub(crate) const MOTO_SERVER: Program = Program {
    name: "moto_server",
    install: "PyPI package `moto[server]` (pip install 'moto[server]')",
};
pub(crate) const NGINX: Program = Program {
    name: "nginx",
    install: "Debian package `nginx` (apt-get install -y nginx)",
};
pub(crate) const TAR: Program = Program {
    name: "tar",
    install: "Debian package `tar`",
};
pub(crate) const GZIP: Program = Program {
    name: "gzip",
    install: "Debian package `gzip`",
};

/// Finds `program` on `PATH` (plus the sbin directories, where nginx lives).
///
/// # Panics
/// When it is missing, naming the package to install: a missing component is a failed test,
/// never a silent skip.
pub(crate) fn find_program(program: Program) -> PathBuf {
    let path = std::env::var_os("PATH").unwrap_or_default();
    let extra = ["/usr/sbin", "/sbin", "/usr/local/sbin"].map(PathBuf::from);
    std::env::split_paths(&path)
        .chain(extra)
        .map(|dir| dir.join(program.name))
        .find(|candidate| candidate.is_file())
        .unwrap_or_else(|| {
            panic!(
                "test-support: `{}` was not found on PATH; install the {}",
                program.name, program.install
            )
        })
}

/// Asks the OS for a free port on 127.0.0.1 and releases it.
///
/// Why it exists: external servers (docker-registry, moto, nginx) need the port in their
/// config before they start. There is a small race with other processes; components that use
/// it retry on "address already in use".
pub fn free_port() -> u16 {
    let listener =
        TcpListener::bind("127.0.0.1:0").unwrap_or_else(|e| panic!("test-support: cannot bind 127.0.0.1:0: {e}"));
    listener
        .local_addr()
        .unwrap_or_else(|e| panic!("test-support: no local address: {e}"))
        .port()
}

/// A running child process whose stdout and stderr go to a log file; killed on drop.
///
/// The child runs in its own process group and the whole group is killed, so helper processes
/// it may fork die with it.
#[derive(Debug)]
pub(crate) struct ChildProcess {
    child: Option<Child>,
}

impl ChildProcess {
    /// Spawns `cmd`, appending its output to `log`.
    ///
    /// # Panics
    /// When the spawn itself fails.
    pub fn spawn(mut cmd: Command, program: Program, log: &Path) -> ChildProcess {
        let out = open_append(log);
        let err = out
            .try_clone()
            .unwrap_or_else(|e| panic!("test-support: cannot dup log {}: {e}", log.display()));
        cmd.stdin(Stdio::null()).stdout(out).stderr(err).process_group(0);
        let child = cmd.spawn().unwrap_or_else(|e| {
            panic!(
                "test-support: cannot start `{}` ({e}); install the {}",
                program.name, program.install
            )
        });
        ChildProcess { child: Some(child) }
    }

    /// The process id, while running.
    pub fn id(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// `Some(status)` once the process has exited on its own.
    pub fn exited(&mut self) -> Option<ExitStatus> {
        self.child.as_mut().and_then(|c| c.try_wait().ok().flatten())
    }

    /// Kills the process group (SIGKILL: a crash, not a clean shutdown) and reaps the child.
    pub fn kill(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        let pgid = child.id();
        // Kill the group first (forked helpers), then the child itself as a fallback.
        let _ = Command::new("kill")
            .args(["-KILL", "--", &format!("-{pgid}")])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        let _ = child.kill();
        let _ = child.wait();
    }

    /// Waits until `probe` answers true; `Err(reason)` when the process exited or
    /// [`READY_TIMEOUT`] passed. The caller panics with [`startup_failure`] (or retries on a
    /// port race); the process is left as is.
    pub fn try_wait_ready(&mut self, probe: &mut dyn FnMut() -> bool) -> Result<(), String> {
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            if let Some(status) = self.exited() {
                return Err(format!("it exited early with {status}"));
            }
            if probe() {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(format!("it did not become ready within {}s", READY_TIMEOUT.as_secs()));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for ChildProcess {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Panics with everything needed to fix a component that did not start.
pub(crate) fn startup_failure(what: &str, program: Program, reason: &str, log: &Path) -> ! {
    panic!(
        "test-support: {what} (`{}`) could not start: {reason}.\n\
         If it is missing, install the {}.\n\
         Last lines of {}:\n{}",
        program.name,
        program.install,
        log.display(),
        log_tail(log, 30)
    )
}

/// The last `lines` lines of a log file (or a note that it cannot be read).
pub fn log_tail(path: &Path, lines: usize) -> String {
    match std::fs::read(path) {
        Ok(bytes) => {
            let text = String::from_utf8_lossy(&bytes);
            let all: Vec<&str> = text.lines().collect();
            let start = all.len().saturating_sub(lines);
            all[start..].join("\n")
        }
        Err(e) => format!("(cannot read {}: {e})", path.display()),
    }
}

fn open_append(path: &Path) -> File {
    OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .unwrap_or_else(|e| panic!("test-support: cannot open log {}: {e}", path.display()))
}

/// Runs a short-lived helper command to completion.
///
/// # Panics
/// When it cannot start or exits non-zero, with its stderr.
pub(crate) fn run_checked(program: Program, cmd: &mut Command) -> Vec<u8> {
    let out = cmd.stdin(Stdio::null()).output().unwrap_or_else(|e| {
        panic!(
            "test-support: cannot run `{}` ({e}); install the {}",
            program.name, program.install
        )
    });
    if !out.status.success() {
        panic!(
            "test-support: `{cmd:?}` failed with {}:\nstderr:\n{}\nstdout:\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr),
            String::from_utf8_lossy(&out.stdout)
        );
    }
    out.stdout
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    #[should_panic(expected = "install the Debian package `nope`")]
    fn a_missing_program_panics_with_its_package() {
        find_program(Program {
            name: "imagewatch-no-such-binary",
            install: "Debian package `nope`",
        });
    }

    #[test]
    fn log_tail_keeps_the_last_lines() {
        let dir = tempfile::tempdir().expect("tempdir");
        let log = dir.path().join("x.log");
        std::fs::write(&log, "a\nb\nc\n").expect("write");
        assert_eq!(log_tail(&log, 2), "b\nc");
        assert!(log_tail(&dir.path().join("missing"), 2).contains("cannot read"));
    }
}
