//! A private PostgreSQL cluster from Debian's `postgresql` binaries: `initdb` into a temp dir,
//! the server on a free port of 127.0.0.1 with its unix socket in that dir, password auth over
//! TCP, killed on drop. Never the system service. As root it runs as the `postgres` user (the
//! server refuses root), through `setpriv`, which execs in place so the process stays in our
//! process group and dies with it.
//!
//! It must not know imagewatch's tables.

use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::process::{ChildProcess, Program, find_program, free_port, log_tail, run_checked, startup_failure};
use crate::workdir::WorkDir;

const POSTGRES: Program = Program {
    name: "postgres",
    install: "Debian package `postgresql` (apt-get install -y postgresql)",
};
const SETPRIV: Program = Program {
    name: "setpriv",
    install: "Debian package `util-linux`",
};
/// The superuser the cluster is created with.
pub const PG_USER: &str = "imagewatch";
const PG_PASSWORD: &str = "pg-test-s3cret";

/// A running private cluster.
#[derive(Debug)]
pub struct Postgres {
    work_dir: WorkDir,
    bin: PathBuf,
    /// Owned by the server's user; removed on drop.
    data: tempfile::TempDir,
    port: u16,
    as_postgres: bool,
    child: Option<ChildProcess>,
}

impl Postgres {
    /// `initdb` and start.
    ///
    /// # Panics
    /// When the binaries are missing or the server does not become ready.
    pub fn start(work_dir: &WorkDir) -> Postgres {
        let bin = binaries();
        let as_postgres = is_root();
        let data = tempfile::Builder::new()
            .prefix("imagewatch-pg-")
            .tempdir()
            .unwrap_or_else(|e| panic!("test-support: cannot create a temp dir for PostgreSQL: {e}"));
        if as_postgres {
            chown_to_postgres(data.path());
        }
        let pwfile = data.path().join("pwfile");
        std::fs::write(&pwfile, PG_PASSWORD).unwrap_or_else(|e| panic!("test-support: cannot write pwfile: {e}"));
        if as_postgres {
            chown_to_postgres(&pwfile);
        }
        let cluster = data.path().join("cluster");
        let mut initdb = Self::command(&bin, "initdb", as_postgres);
        initdb
            .arg("-D")
            .arg(&cluster)
            .args([
                "-U",
                PG_USER,
                "--auth-local=trust",
                "--auth-host=scram-sha-256",
                "--no-sync",
                "-E",
                "UTF8",
            ])
            .arg(format!("--pwfile={}", pwfile.display()));
        run_checked(POSTGRES, &mut initdb);
        let mut postgres = Postgres {
            work_dir: work_dir.clone(),
            bin,
            data,
            port: free_port(),
            as_postgres,
            child: None,
        };
        postgres.spawn();
        postgres
    }

    fn command(bin: &Path, program: &str, as_postgres: bool) -> Command {
        let binary = bin.join(program);
        if as_postgres {
            let mut command = Command::new(find_program(SETPRIV));
            command
                .args(["--reuid", "postgres", "--regid", "postgres", "--init-groups", "--"])
                .arg(binary);
            command
        } else {
            Command::new(binary)
        }
    }

    fn log_path(&self) -> PathBuf {
        self.work_dir.join(&format!("postgres-{}.log", self.port))
    }

    fn spawn(&mut self) {
        let mut command = Self::command(&self.bin, "postgres", self.as_postgres);
        command
            .arg("-D")
            .arg(self.data.path().join("cluster"))
            .args([
                "-p",
                &self.port.to_string(),
                "-c",
                "listen_addresses=127.0.0.1",
                "-c",
                "fsync=off",
            ])
            .arg("-c")
            .arg(format!("unix_socket_directories={}", self.data.path().display()));
        let log = self.log_path();
        let mut child = ChildProcess::spawn(command, POSTGRES, &log);
        let ready = self.bin.join("pg_isready");
        let (port, socket) = (self.port.to_string(), self.data.path().to_path_buf());
        let result = child.try_wait_ready(&mut || {
            Command::new(&ready)
                .arg("-h")
                .arg(&socket)
                .args(["-p", &port, "-U", PG_USER, "-q"])
                .status()
                .is_ok_and(|status| status.success())
        });
        if let Err(reason) = result {
            startup_failure("PostgreSQL", POSTGRES, &reason, &log);
        }
        self.child = Some(child);
    }

    /// `postgres://imagewatch:<password>@127.0.0.1:<port>/postgres`.
    pub fn url(&self) -> String {
        format!("postgres://{PG_USER}:{PG_PASSWORD}@127.0.0.1:{}/postgres", self.port)
    }

    /// The password in [`Postgres::url`], so a test can assert it never shows.
    pub fn password(&self) -> &'static str {
        PG_PASSWORD
    }

    /// The TCP port on 127.0.0.1.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Runs SQL through `psql` over the unix socket and answers its unaligned output.
    pub fn psql(&self, sql: &str) -> String {
        let mut command = Command::new(self.bin.join("psql"));
        command.arg("-h").arg(self.data.path()).args([
            "-p",
            &self.port.to_string(),
            "-U",
            PG_USER,
            "-d",
            "postgres",
            "-At",
            "-v",
            "ON_ERROR_STOP=1",
            "-c",
            sql,
        ]);
        String::from_utf8_lossy(&run_checked(POSTGRES, &mut command))
            .trim()
            .to_owned()
    }

    /// A fast shutdown: every session is cut, the data stays.
    pub fn stop(&mut self) {
        let mut stop = Self::command(&self.bin, "pg_ctl", self.as_postgres);
        stop.arg("-D")
            .arg(self.data.path().join("cluster"))
            .args(["stop", "-m", "fast", "-w"]);
        run_checked(POSTGRES, &mut stop);
        if let Some(mut child) = self.child.take() {
            child.kill();
        }
    }

    /// Starts it again on the same port and data after [`Postgres::stop`].
    pub fn start_again(&mut self) {
        if self.child.is_none() {
            self.spawn();
        }
    }

    /// [`Postgres::stop`], then [`Postgres::start_again`].
    pub fn restart(&mut self) {
        self.stop();
        self.start_again();
    }

    /// The last lines of the server's log.
    pub fn log_tail(&self, lines: usize) -> String {
        log_tail(&self.log_path(), lines)
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            child.kill();
        }
    }
}

/// The newest `/usr/lib/postgresql/<version>/bin`, else the directory of `initdb` on `PATH`.
fn binaries() -> PathBuf {
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| {
            let version = entry.file_name().to_str()?.parse::<u32>().ok()?;
            let bin = entry.path().join("bin");
            bin.join("initdb").is_file().then_some((version, bin))
        })
        .collect();
    versions.sort();
    if let Some((_, bin)) = versions.pop() {
        return bin;
    }
    let initdb = find_program(Program {
        name: "initdb",
        install: POSTGRES.install,
    });
    initdb.parent().map(Path::to_path_buf).unwrap_or_default()
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|out| String::from_utf8_lossy(&out.stdout).trim() == "0")
}

fn chown_to_postgres(path: &Path) {
    let id = |flag: &str| -> u32 {
        Command::new("id")
            .args([flag, "postgres"])
            .output()
            .ok()
            .and_then(|out| String::from_utf8_lossy(&out.stdout).trim().parse().ok())
            .unwrap_or_else(|| panic!("test-support: no `postgres` user; install the {}", POSTGRES.install))
    };
    std::os::unix::fs::chown(path, Some(id("-u")), Some(id("-g")))
        .unwrap_or_else(|e| panic!("test-support: cannot chown {} to postgres: {e}", path.display()));
    let _ = std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o700));
}
