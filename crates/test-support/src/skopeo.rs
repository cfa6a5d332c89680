//! skopeo as the reference client: pushes layouts into registries and reads digests back.
//!
//! Owns the exact flags that work against loopback registries (plain http needs
//! `--*tls-verify=false`: skopeo does NOT treat 127.0.0.1 as insecure; https needs a cert dir),
//! and isolation from the machine's credentials. It must not build images.

use std::path::PathBuf;
use std::process::Command;

use crate::process::{SKOPEO, find_program, run_checked};
use crate::{OciLayout, TestCa};

/// Manifest format written to the destination.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ManifestFormat {
    /// OCI manifest / index, digests preserved from the layout.
    Oci,
    /// Docker v2 schema 2 (`--format v2s2`); a different digest than the OCI layout's.
    DockerV2,
}

/// How skopeo reaches the registry.
#[derive(Debug, Clone)]
pub enum RegistryTls {
    /// Plain http (or https without verification): `--tls-verify=false`.
    Plain,
    /// https verified against this cert dir (holding `ca.crt`).
    CertDir(PathBuf),
}

impl RegistryTls {
    /// https trusting `ca`.
    pub fn ca(ca: &TestCa) -> RegistryTls {
        RegistryTls::CertDir(ca.cert_dir.clone())
    }

    fn args(&self, prefix: &str) -> Vec<String> {
        match self {
            RegistryTls::Plain => vec![format!("--{prefix}tls-verify=false")],
            RegistryTls::CertDir(dir) => vec![
                format!("--{prefix}tls-verify=true"),
                format!("--{prefix}cert-dir={}", dir.display()),
            ],
        }
    }
}

/// Credentials for skopeo (`None` = anonymous, with the machine's auth files ignored).
pub type Creds<'a> = Option<(&'a str, &'a str)>;

fn creds_args(prefix: &str, creds: Creds<'_>) -> Vec<String> {
    match creds {
        Some((user, password)) => vec![format!("--{prefix}creds={user}:{password}")],
        None => vec![format!("--{prefix}no-creds")],
    }
}

fn docker_ref(reference: &str) -> String {
    if reference.contains("://") {
        reference.to_string()
    } else {
        format!("docker://{reference}")
    }
}

fn skopeo() -> Command {
    let mut cmd = Command::new(find_program(SKOPEO));
    // No policy file needed on a fresh machine. Every call passes `--*creds` or
    // `--*no-creds`, so the machine's auth files are never consulted.
    cmd.arg("--insecure-policy");
    cmd
}

/// Pushes `layout` to `dest` (`host:port/name:tag`, or with `docker://`) and returns the digest
/// the registry now holds for it (from `--digestfile`). An index is pushed with `--all`.
///
/// With [`ManifestFormat::Oci`] the digest equals `layout.digest`; with `DockerV2` skopeo
/// converts the manifest and the digest differs.
///
/// # Panics
/// When skopeo fails, with its stderr.
pub fn push(layout: &OciLayout, dest: &str, format: ManifestFormat, creds: Creds<'_>, tls: &RegistryTls) -> String {
    let digest_file = layout
        .dir
        .parent()
        .unwrap_or(&layout.dir)
        .join(format!("pushed-{}.digest", sanitize(dest)));
    let mut cmd = skopeo();
    cmd.arg("copy");
    if layout.is_index() {
        cmd.arg("--all");
    }
    match format {
        ManifestFormat::Oci => {
            cmd.args(["--format", "oci", "--preserve-digests"]);
        }
        ManifestFormat::DockerV2 => {
            cmd.args(["--format", "v2s2"]);
        }
    }
    cmd.args(tls.args("dest-"))
        .args(creds_args("dest-", creds))
        .arg("--digestfile")
        .arg(&digest_file)
        .arg(layout.skopeo_ref())
        .arg(docker_ref(dest));
    run_checked(SKOPEO, &mut cmd);
    let digest = std::fs::read_to_string(&digest_file)
        .unwrap_or_else(|e| panic!("test-support: skopeo wrote no digest file: {e}"));
    digest.trim().to_string()
}

/// `skopeo copy` between any two references (`docker://`, `oci:`, ...), `--all` when `all`.
/// Both sides use `tls` and `creds`.
///
/// # Panics
/// When skopeo fails, with its stderr.
pub fn copy(src: &str, dest: &str, all: bool, creds: Creds<'_>, tls: &RegistryTls) {
    let mut cmd = skopeo();
    cmd.arg("copy");
    if all {
        cmd.arg("--all");
    }
    cmd.args(tls.args("src-"))
        .args(tls.args("dest-"))
        .args(creds_args("src-", creds))
        .args(creds_args("dest-", creds))
        .arg(src)
        .arg(dest);
    run_checked(SKOPEO, &mut cmd);
}

/// The digest skopeo reports for `reference` (`skopeo inspect --format '{{.Digest}}'`).
///
/// skopeo computes it from the TOP-LEVEL manifest it fetched, so for a multi-arch tag this is
/// the index digest (same as [`inspect_raw`] + sha256), not a platform manifest's.
///
/// # Panics
/// When skopeo fails, with its stderr.
pub fn inspect_digest(reference: &str, creds: Creds<'_>, tls: &RegistryTls) -> String {
    let mut cmd = skopeo();
    cmd.args(["inspect", "--format", "{{.Digest}}"])
        .args(tls.args(""))
        .args(creds_args("", creds))
        .arg(docker_ref(reference));
    String::from_utf8_lossy(&run_checked(SKOPEO, &mut cmd))
        .trim()
        .to_string()
}

/// The raw top-level manifest bytes (`skopeo inspect --raw`); sha256 of them is the digest.
///
/// # Panics
/// When skopeo fails, with its stderr.
pub fn inspect_raw(reference: &str, creds: Creds<'_>, tls: &RegistryTls) -> Vec<u8> {
    let mut cmd = skopeo();
    cmd.args(["inspect", "--raw"])
        .args(tls.args(""))
        .args(creds_args("", creds))
        .arg(docker_ref(reference));
    run_checked(SKOPEO, &mut cmd)
}

/// Runs skopeo with arbitrary arguments (after `--insecure-policy`), returning stdout, or
/// `Err(stderr)` when it fails: for tests that expect a failure.
pub fn run(args: &[&str]) -> Result<Vec<u8>, String> {
    let out = skopeo()
        .args(args)
        .output()
        .map_err(|e| format!("cannot run skopeo: {e}"))?;
    if out.status.success() {
        Ok(out.stdout)
    } else {
        Err(String::from_utf8_lossy(&out.stderr).into_owned())
    }
}

fn sanitize(s: &str) -> String {
    s.chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect()
}

/// The skopeo binary, for callers building their own command lines.
///
/// # Panics
/// When skopeo is not installed, naming the package.
pub fn binary() -> PathBuf {
    find_program(SKOPEO)
}
