//! Deterministic OCI image layouts built on disk without any network.
//!
//! Owns the layer tarball (`tar --sort=name --mtime=@0 --owner=0 --group=0 --numeric-owner`,
//! `gzip -n`), the config, manifest, index, `index.json` and `oci-layout`. Same content gives
//! the same digests, different content different ones. It must not push (that is
//! [`skopeo`](crate::skopeo)).

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use serde_json::json;
use sha2::{Digest as _, Sha256};

use crate::WorkDir;
use crate::process::{GZIP, TAR, find_program, run_checked};

/// OCI image manifest media type.
pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
/// OCI image index media type.
pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
/// Docker v2 schema 2 manifest media type.
pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
/// Docker manifest list media type.
pub const DOCKER_MANIFEST_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
/// The four manifest types, for an `Accept` header that never triggers schema-1 conversion.
pub const ALL_MANIFEST_TYPES: [&str; 4] = [OCI_INDEX, OCI_MANIFEST, DOCKER_MANIFEST_LIST, DOCKER_MANIFEST];

/// `sha256:<hex>` of `bytes`.
pub fn sha256_digest(bytes: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(bytes)))
}

/// An image platform (`os`/`architecture`[/`variant`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Platform {
    /// e.g. `linux`.
    pub os: String,
    /// e.g. `amd64`, `arm64`.
    pub architecture: String,
    /// e.g. `v8` for arm64.
    pub variant: Option<String>,
}

impl Platform {
    /// linux/amd64.
    pub fn linux_amd64() -> Platform {
        Platform {
            os: "linux".into(),
            architecture: "amd64".into(),
            variant: None,
        }
    }

    /// linux/arm64 (variant v8).
    pub fn linux_arm64() -> Platform {
        Platform {
            os: "linux".into(),
            architecture: "arm64".into(),
            variant: Some("v8".into()),
        }
    }

    fn to_json(&self) -> serde_json::Value {
        let mut v = json!({"os": self.os, "architecture": self.architecture});
        if let Some(variant) = &self.variant {
            v["variant"] = json!(variant);
        }
        v
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Entry {
    File { contents: Vec<u8>, mode: u32 },
    Symlink { target: String },
}

/// What one single-platform image contains: files for its only layer and the config.
///
/// Why: tests need images whose digests they control (same spec, same digest; change a byte,
/// the digest moves), built offline.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageSpec {
    entries: BTreeMap<String, Entry>,
    labels: BTreeMap<String, String>,
    env: Vec<String>,
    cmd: Option<Vec<String>>,
    entrypoint: Option<Vec<String>>,
    healthcheck: Option<Healthcheck>,
    platform: Platform,
}

/// The config `Healthcheck` as the Docker daemon reads it from an image.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Healthcheck {
    test: Vec<String>,
    interval: Duration,
    timeout: Duration,
    retries: u32,
}

impl Healthcheck {
    /// Docker's image JSON: durations in nanoseconds.
    fn to_json(&self) -> serde_json::Value {
        let nanos = |d: Duration| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX);
        json!({
            "Test": self.test,
            "Interval": nanos(self.interval),
            "Timeout": nanos(self.timeout),
            "Retries": self.retries,
        })
    }
}

impl Default for ImageSpec {
    fn default() -> Self {
        ImageSpec::new()
    }
}

impl ImageSpec {
    /// An empty linux/amd64 image.
    pub fn new() -> ImageSpec {
        ImageSpec {
            entries: BTreeMap::new(),
            labels: BTreeMap::new(),
            env: Vec::new(),
            cmd: None,
            entrypoint: None,
            healthcheck: None,
            platform: Platform::linux_amd64(),
        }
    }

    /// A single file `/content.txt` holding `content`: the quickest way to get distinct images.
    pub fn with_content(content: &str) -> ImageSpec {
        ImageSpec::new().file("content.txt", content.as_bytes())
    }

    /// The image runnable by a local Docker daemon: `/bin/busybox` from Debian's
    /// busybox-static, `/bin/sh` a symlink to it, `Cmd ["/bin/busybox","sleep","3600"]` (a
    /// `Cmd`, not an `Entrypoint`, so `docker run IMAGE /bin/sh -c ...` works too), `PATH=/bin`,
    /// and `version` in the label `org.opencontainers.image.version`, in env
    /// `IMAGEWATCH_TEST_VERSION` and in `/version.txt`, so versions differ in digest and can be
    /// told apart from inside and outside the container.
    ///
    /// # Panics
    /// When `/bin/busybox` is missing (install the Debian package `busybox-static`).
    pub fn busybox(version: &str) -> ImageSpec {
        let busybox = fs::read("/bin/busybox").unwrap_or_else(|e| {
            panic!(
                "test-support: cannot read /bin/busybox ({e}); install the Debian package \
                 `busybox-static` (apt-get install -y busybox-static)"
            )
        });
        ImageSpec::new()
            .executable("bin/busybox", busybox)
            .symlink("bin/sh", "busybox")
            .file("version.txt", format!("{version}\n").into_bytes())
            .label("org.opencontainers.image.version", version)
            .env("IMAGEWATCH_TEST_VERSION", version)
            .env("PATH", "/bin")
            .cmd(&["/bin/busybox", "sleep", "3600"])
    }

    /// Adds a regular file (mode 0644). `path` is relative to the image root.
    pub fn file(self, path: &str, contents: impl Into<Vec<u8>>) -> ImageSpec {
        self.file_with_mode(path, contents, 0o644)
    }

    /// Adds an executable file (mode 0755).
    pub fn executable(self, path: &str, contents: impl Into<Vec<u8>>) -> ImageSpec {
        self.file_with_mode(path, contents, 0o755)
    }

    /// Adds a file with an explicit mode.
    pub fn file_with_mode(mut self, path: &str, contents: impl Into<Vec<u8>>, mode: u32) -> ImageSpec {
        self.entries.insert(
            clean_path(path),
            Entry::File {
                contents: contents.into(),
                mode,
            },
        );
        self
    }

    /// Adds a symlink `path -> target`.
    pub fn symlink(mut self, path: &str, target: &str) -> ImageSpec {
        self.entries.insert(
            clean_path(path),
            Entry::Symlink {
                target: target.to_string(),
            },
        );
        self
    }

    /// Adds a config label.
    pub fn label(mut self, key: &str, value: &str) -> ImageSpec {
        self.labels.insert(key.to_string(), value.to_string());
        self
    }

    /// Adds a config env entry `key=value`.
    pub fn env(mut self, key: &str, value: &str) -> ImageSpec {
        self.env.push(format!("{key}={value}"));
        self
    }

    /// Sets the config `Cmd`.
    pub fn cmd(mut self, cmd: &[&str]) -> ImageSpec {
        self.cmd = Some(cmd.iter().map(|s| s.to_string()).collect());
        self
    }

    /// Sets the config `Entrypoint`.
    pub fn entrypoint(mut self, entrypoint: &[&str]) -> ImageSpec {
        self.entrypoint = Some(entrypoint.iter().map(|s| s.to_string()).collect());
        self
    }

    /// Sets the config `Healthcheck` (Dockerfile `HEALTHCHECK`): `test` in Docker's form
    /// (`["CMD", "/bin/busybox", "true"]`, `["CMD-SHELL", "..."]` or `["NONE"]`), probed every
    /// `interval`, each probe given `timeout`, unhealthy after `retries` failures in a row.
    pub fn healthcheck(mut self, test: &[&str], interval: Duration, timeout: Duration, retries: u32) -> ImageSpec {
        self.healthcheck = Some(Healthcheck {
            test: test.iter().map(|s| s.to_string()).collect(),
            interval,
            timeout,
            retries,
        });
        self
    }

    /// Sets the platform.
    pub fn platform(mut self, platform: Platform) -> ImageSpec {
        self.platform = platform;
        self
    }
}

fn clean_path(path: &str) -> String {
    let cleaned = path.trim_start_matches('/').trim_start_matches("./");
    assert!(
        !cleaned.is_empty() && !cleaned.split('/').any(|c| c == ".." || c.is_empty()),
        "image paths must be relative without '..' or empty components: {path:?}"
    );
    cleaned.to_string()
}

/// One platform manifest of a built layout.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlatformManifest {
    /// Its platform.
    pub platform: Platform,
    /// Digest of the OCI manifest.
    pub digest: String,
    /// Digest of the config blob.
    pub config_digest: String,
}

/// An OCI image layout directory (`oci-layout`, `index.json`, `blobs/sha256/`) holding one
/// image or one index under the tag [`OciLayout::TAG`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OciLayout {
    /// The layout directory.
    pub dir: PathBuf,
    /// Digest of the top-level manifest (single image) or index (multi-arch): what a registry
    /// reports for the tag after an OCI push that keeps digests.
    pub digest: String,
    /// Media type of the top level ([`OCI_MANIFEST`] or [`OCI_INDEX`]).
    pub media_type: String,
    /// The platform manifests (one for a single image).
    pub manifests: Vec<PlatformManifest>,
}

impl OciLayout {
    /// The tag inside `index.json`.
    pub const TAG: &'static str = "image";

    /// `oci:<dir>:image`, the skopeo source reference.
    pub fn skopeo_ref(&self) -> String {
        format!("oci:{}:{}", self.dir.display(), Self::TAG)
    }

    /// True for a multi-platform index.
    pub fn is_index(&self) -> bool {
        self.media_type == OCI_INDEX
    }

    /// Bytes of a blob by digest.
    ///
    /// # Panics
    /// When the blob does not exist.
    pub fn blob(&self, digest: &str) -> Vec<u8> {
        let hex = digest.strip_prefix("sha256:").unwrap_or(digest);
        let path = self.dir.join("blobs/sha256").join(hex);
        fs::read(&path).unwrap_or_else(|e| panic!("test-support: no blob {}: {e}", path.display()))
    }
}

/// Builds a single-platform OCI image layout in a fresh `work_dir/image*/`.
///
/// # Panics
/// When `tar`/`gzip` fail (with their stderr) or on I/O errors.
pub fn build_image(work_dir: &WorkDir, spec: &ImageSpec) -> OciLayout {
    let dir = new_layout(work_dir);
    let (desc, platform_manifest) = write_image(work_dir, &dir, spec);
    write_index_json(&dir, &desc);
    OciLayout {
        dir,
        digest: platform_manifest.digest.clone(),
        media_type: OCI_MANIFEST.to_string(),
        manifests: vec![platform_manifest],
    }
}

/// Builds a multi-platform OCI index: one image per spec (each spec's platform).
///
/// # Panics
/// As [`build_image`]; also when `specs` is empty.
pub fn build_index(work_dir: &WorkDir, specs: &[ImageSpec]) -> OciLayout {
    assert!(!specs.is_empty(), "an index needs at least one image");
    let dir = new_layout(work_dir);
    let mut descriptors = Vec::new();
    let mut manifests = Vec::new();
    for spec in specs {
        let (mut desc, pm) = write_image(work_dir, &dir, spec);
        desc["platform"] = spec.platform.to_json();
        descriptors.push(desc);
        manifests.push(pm);
    }
    let index = json!({
        "schemaVersion": 2,
        "mediaType": OCI_INDEX,
        "manifests": descriptors,
    });
    let bytes = to_json_bytes(&index);
    let digest = write_blob(&dir, &bytes);
    write_index_json(
        &dir,
        &json!({"mediaType": OCI_INDEX, "digest": digest, "size": bytes.len()}),
    );
    OciLayout {
        dir,
        digest,
        media_type: OCI_INDEX.to_string(),
        manifests,
    }
}

/// The usual multi-arch case: `spec` for linux/amd64 and linux/arm64 (a `/arch.txt` file
/// differs per platform, so the layers differ as they would in real life).
pub fn build_multi_arch(work_dir: &WorkDir, spec: &ImageSpec) -> OciLayout {
    let specs: Vec<ImageSpec> = [Platform::linux_amd64(), Platform::linux_arm64()]
        .into_iter()
        .map(|p| {
            spec.clone()
                .file("arch.txt", format!("{}\n", p.architecture).into_bytes())
                .platform(p)
        })
        .collect();
    build_index(work_dir, &specs)
}

fn new_layout(work_dir: &WorkDir) -> PathBuf {
    let dir = work_dir.fresh_dir("image");
    let layout = dir.join("layout");
    fs::create_dir_all(layout.join("blobs/sha256"))
        .unwrap_or_else(|e| panic!("test-support: cannot create {}: {e}", layout.display()));
    write_file(&layout.join("oci-layout"), br#"{"imageLayoutVersion":"1.0.0"}"#);
    layout
}

fn write_index_json(dir: &Path, descriptor: &serde_json::Value) {
    let mut desc = descriptor.clone();
    desc["annotations"] = json!({"org.opencontainers.image.ref.name": OciLayout::TAG});
    let index = json!({"schemaVersion": 2, "manifests": [desc]});
    write_file(&dir.join("index.json"), &to_json_bytes(&index));
}

/// Writes layer, config and manifest blobs; returns the manifest descriptor and summary.
fn write_image(work_dir: &WorkDir, dir: &Path, spec: &ImageSpec) -> (serde_json::Value, PlatformManifest) {
    let (tar, gz) = build_layer(work_dir, spec);
    let diff_id = sha256_digest(&tar);
    let layer_digest = write_blob(dir, &gz);

    let mut config_section = serde_json::Map::new();
    if !spec.env.is_empty() {
        config_section.insert("Env".into(), json!(spec.env));
    }
    if let Some(cmd) = &spec.cmd {
        config_section.insert("Cmd".into(), json!(cmd));
    }
    if let Some(ep) = &spec.entrypoint {
        config_section.insert("Entrypoint".into(), json!(ep));
    }
    if !spec.labels.is_empty() {
        config_section.insert("Labels".into(), json!(spec.labels));
    }
    if let Some(healthcheck) = &spec.healthcheck {
        config_section.insert("Healthcheck".into(), healthcheck.to_json());
    }
    let mut config = json!({
        "created": "1970-01-01T00:00:00Z",
        "architecture": spec.platform.architecture,
        "os": spec.platform.os,
        "config": config_section,
        "rootfs": {"type": "layers", "diff_ids": [diff_id]},
        "history": [{"created": "1970-01-01T00:00:00Z", "created_by": "imagewatch test-support"}],
    });
    if let Some(variant) = &spec.platform.variant {
        config["variant"] = json!(variant);
    }
    let config_bytes = to_json_bytes(&config);
    let config_digest = write_blob(dir, &config_bytes);

    let manifest = json!({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": {
            "mediaType": "application/vnd.oci.image.config.v1+json",
            "digest": config_digest,
            "size": config_bytes.len(),
        },
        "layers": [{
            "mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
            "digest": layer_digest,
            "size": gz.len(),
        }],
    });
    let manifest_bytes = to_json_bytes(&manifest);
    let manifest_digest = write_blob(dir, &manifest_bytes);
    (
        json!({"mediaType": OCI_MANIFEST, "digest": manifest_digest, "size": manifest_bytes.len()}),
        PlatformManifest {
            platform: spec.platform.clone(),
            digest: manifest_digest,
            config_digest,
        },
    )
}

/// Returns (uncompressed tar, gzip of it).
fn build_layer(work_dir: &WorkDir, spec: &ImageSpec) -> (Vec<u8>, Vec<u8>) {
    let stage_root = work_dir.fresh_dir("layer");
    let stage = stage_root.join("rootfs");
    mkdir_0755(&stage);
    for (path, entry) in &spec.entries {
        let full = stage.join(path);
        if let Some(parent) = full.parent() {
            // Create each missing ancestor with a fixed mode (the umask must not leak in).
            let mut to_make = Vec::new();
            let mut p = parent.to_path_buf();
            while !p.exists() {
                to_make.push(p.clone());
                if !p.pop() {
                    break;
                }
            }
            for d in to_make.into_iter().rev() {
                mkdir_0755(&d);
            }
        }
        match entry {
            Entry::File { contents, mode } => {
                write_file(&full, contents);
                fs::set_permissions(&full, fs::Permissions::from_mode(*mode))
                    .unwrap_or_else(|e| panic!("test-support: chmod {}: {e}", full.display()));
            }
            Entry::Symlink { target } => std::os::unix::fs::symlink(target, &full)
                .unwrap_or_else(|e| panic!("test-support: symlink {}: {e}", full.display())),
        }
    }
    let tar_path = stage_root.join("layer.tar");
    let mut tar = Command::new(find_program(TAR));
    tar.args([
        "--sort=name",
        "--mtime=@0",
        "--owner=0",
        "--group=0",
        "--numeric-owner",
        "--format=gnu",
        "-C",
    ])
    .arg(&stage)
    .arg("-cf")
    .arg(&tar_path);
    let mut top: Vec<String> = fs::read_dir(&stage)
        .unwrap_or_else(|e| panic!("test-support: read {}: {e}", stage.display()))
        .filter_map(|e| e.ok().map(|e| e.file_name().to_string_lossy().into_owned()))
        .collect();
    top.sort();
    if top.is_empty() {
        tar.args(["-T", "/dev/null"]);
    } else {
        tar.arg("--").args(&top);
    }
    run_checked(TAR, &mut tar);
    let gz = run_checked(
        GZIP,
        Command::new(find_program(GZIP)).args(["-n", "-6", "-c"]).arg(&tar_path),
    );
    let tar_bytes = fs::read(&tar_path).unwrap_or_else(|e| panic!("test-support: read {}: {e}", tar_path.display()));
    // The staging copy is no longer needed; big files (busybox) would pile up otherwise.
    let _ = fs::remove_dir_all(&stage_root);
    (tar_bytes, gz)
}

fn mkdir_0755(path: &Path) {
    fs::create_dir_all(path).unwrap_or_else(|e| panic!("test-support: mkdir {}: {e}", path.display()));
    fs::set_permissions(path, fs::Permissions::from_mode(0o755))
        .unwrap_or_else(|e| panic!("test-support: chmod {}: {e}", path.display()));
}

fn write_blob(dir: &Path, bytes: &[u8]) -> String {
    let digest = sha256_digest(bytes);
    let hex = digest.trim_start_matches("sha256:");
    write_file(&dir.join("blobs/sha256").join(hex), bytes);
    digest
}

fn write_file(path: &Path, bytes: &[u8]) {
    fs::write(path, bytes).unwrap_or_else(|e| panic!("test-support: write {}: {e}", path.display()));
}

fn to_json_bytes(value: &serde_json::Value) -> Vec<u8> {
    // serde_json's Map is a BTreeMap here: keys come out sorted, so bytes are deterministic.
    serde_json::to_vec(value).unwrap_or_else(|e| panic!("test-support: JSON: {e}"))
}
