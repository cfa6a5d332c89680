//! The trust gate in front of the Docker refresher, end to end: the real binary, this machine's
//! REAL Docker daemon, Debian's registry on loopback, busybox images pushed by skopeo and a
//! signature made by `openssl`. An unsigned push leaves the container on its image; a signed
//! one recreates it on the new image.
//!
//! Every container and image the test creates carries a per-run name and is removed at the
//! end, passing or failing.

use std::process::{Command, Output};
use std::time::SystemTime;

use test_support::signing::{KeyAlgorithm, SignatureLayer, SigningKey, push_legacy_signature};
use test_support::{ImageSpec, ManifestFormat, Registry, RegistryTls, WorkDir, build_image, skopeo};

const NAME: &str = "imagewatch-trust/app";

fn docker(args: &[&str]) -> Output {
    Command::new("docker")
        .args(args)
        .output()
        .expect("the docker command runs")
}

fn docker_ok(args: &[&str]) -> String {
    let out = docker(args);
    assert!(
        out.status.success(),
        "docker {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// Removes the run's container and the images it pulled, whatever the test's outcome.
struct Cleanup {
    container: String,
    reference: String,
    images: Vec<String>,
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        let _ = docker(&["rm", "-f", &self.container]);
        // The old container a recreate sets aside carries the name as a prefix.
        let listed = docker(&["ps", "-aq", "--filter", &format!("name={}", self.container)]);
        for id in String::from_utf8_lossy(&listed.stdout).split_whitespace() {
            let _ = docker(&["rm", "-f", id]);
        }
        let _ = docker(&["rmi", "-f", &self.reference]);
        for image in &self.images {
            let _ = docker(&["rmi", "-f", image]);
        }
    }
}

#[test]
fn an_unsigned_push_leaves_the_container_and_a_signed_one_recreates_it() {
    let wd = WorkDir::new("trust-docker");
    let registry = Registry::anonymous(&wd);
    let reference = registry.image_ref(NAME, "latest");
    let key = SigningKey::generate(&wd, "ours", KeyAlgorithm::EcdsaP256);
    let nanos = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    let container = format!("imagewatch-trust-{}-{nanos}", std::process::id());
    let mut cleanup = Cleanup {
        container: container.clone(),
        reference: reference.clone(),
        images: Vec::new(),
    };
    let push = |version: &str| {
        let layout = build_image(&wd, &ImageSpec::busybox(version));
        skopeo::push(&layout, &reference, ManifestFormat::Oci, None, &RegistryTls::Plain)
    };
    let state = wd.join("state.json").display().to_string();
    let key_path = key.public_key_path().display().to_string();
    let home = wd.fresh_dir("home");
    let once = || {
        Command::new(env!("CARGO_BIN_EXE_imagewatch"))
            .args(["watch", "--once", "--image", &reference, "--state", &state])
            .args(["--refresh", "docker", "--container-prefix", &container])
            .args(["--settle", "1s", "--stop-timeout", "1s", "--verify-key", &key_path])
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("HOME", &home)
            .env("DOCKER_CONFIG", &home)
            .output()
            .expect("binary runs")
    };
    let report = |out: &Output| {
        format!(
            "exit {:?}\nstdout: {}\nstderr: {}",
            out.status.code(),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    };

    push("1");
    docker_ok(&["pull", "-q", &reference]);
    let v1_image = docker_ok(&["image", "inspect", "--format", "{{.Id}}", &reference]);
    cleanup.images.push(v1_image.clone());
    docker_ok(&["run", "-d", "--name", &container, &reference]);
    let running_image = || docker_ok(&["inspect", "--format", "{{.Image}}", &container]);
    let out = once();
    assert!(out.status.success(), "seeding: {}", report(&out));

    // Unsigned: not pulled, not recreated, not applied.
    push("2");
    let out = once();
    assert_eq!(out.status.code(), Some(1), "{}", report(&out));
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("unverified (no signature"),
        "{}",
        report(&out)
    );
    assert_eq!(running_image(), v1_image, "the container stays on v1");

    // Signed: recreated on it.
    let v3 = push("3");
    let layer = SignatureLayer::new(&key, &format!("{}/{NAME}", registry.host()), &v3);
    push_legacy_signature(&registry.base_url(), NAME, &v3, &[layer]);
    let out = once();
    assert!(out.status.success(), "{}", report(&out));
    let v3_image = docker_ok(&[
        "image",
        "inspect",
        "--format",
        "{{.Id}}",
        &format!("{}@{v3}", reference.trim_end_matches(":latest")),
    ]);
    cleanup.images.push(v3_image.clone());
    assert_eq!(running_image(), v3_image, "the container runs the signed v3");
    let version = docker_ok(&["exec", &container, "/bin/busybox", "cat", "/version.txt"]);
    assert_eq!(version, "3");
}
