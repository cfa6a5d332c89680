//! Installs the real components tests run against, when missing: Debian's `docker-registry`,
//! `skopeo`, `htpasswd`, busybox, nginx and postgresql, and PyPI's `moto` server. Idempotent: a machine
//! that has them all is left alone, so a developer can run it every time.

use std::process::Command;

use crate::run;

/// (binary that proves the package is installed, Debian package)
const DEBIAN: &[(&str, &str)] = &[
    ("docker-registry", "docker-registry"),
    ("skopeo", "skopeo"),
    ("htpasswd", "apache2-utils"),
    ("busybox", "busybox-static"),
    ("nginx", "nginx"),
    ("openssl", "openssl"),
    // initdb, pg_ctl and postgres live in /usr/lib/postgresql/<version>/bin, off PATH.
    ("pg_ctlcluster", "postgresql"),
];

pub fn components() -> Result<(), String> {
    let missing: Vec<&str> = DEBIAN
        .iter()
        .filter(|(binary, _)| !on_path(binary))
        .map(|(_, package)| *package)
        .collect();
    if !missing.is_empty() {
        if !is_root() {
            return Err(format!(
                "missing Debian packages {missing:?}: run `sudo apt-get install {}`",
                missing.join(" ")
            ));
        }
        run::command("apt-get", &["update", "-qq"])?;
        let mut args = vec!["install", "-y", "-qq", "--no-install-recommends"];
        args.extend(&missing);
        run::command("apt-get", &args)?;
    }
    if !on_path("moto_server") {
        let python = if on_path("python3") { "python3" } else { "python" };
        run::command(python, &["-m", "pip", "install", "--quiet", "moto[server]"])?;
    }
    Ok(())
}

fn on_path(binary: &str) -> bool {
    let found = |dir: &std::path::Path| dir.join(binary).is_file();
    std::env::var_os("PATH").is_some_and(|path| std::env::split_paths(&path).any(|dir| found(&dir)))
        || ["/usr/sbin", "/sbin"]
            .iter()
            .any(|dir| found(std::path::Path::new(dir)))
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|out| String::from_utf8_lossy(&out.stdout).trim() == "0")
}
