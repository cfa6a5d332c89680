//! `imagewatch watch --discover docker` as the operator runs it: the real binary against this
//! machine's real Docker daemon, whose containers (made with the real `docker` CLI) run a
//! busybox image pushed by skopeo to Debian's real registry. Every container and image the test
//! makes carries a per-run name and is removed at the end, passing or failing.

use std::path::Path;
use std::process::{Command, Output};
use std::time::SystemTime;

use test_support::{ImageSpec, ManifestFormat, Registry, RegistryTls, WorkDir, build_image, skopeo};

fn docker(config: &Path, args: &[&str]) -> Output {
    Command::new("docker")
        .env("DOCKER_CONFIG", config)
        .args(args)
        .output()
        .expect("docker CLI runs")
}

fn docker_ok(config: &Path, args: &[&str]) -> String {
    let output = docker(config, args);
    assert!(
        output.status.success(),
        "docker {args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).trim().to_owned()
}

/// Removes the run's containers and image however the test ends.
struct Cleanup<'a> {
    config: &'a Path,
    names: Vec<String>,
    image: String,
}

impl Drop for Cleanup<'_> {
    fn drop(&mut self) {
        for name in &self.names {
            let _ = docker(self.config, &["rm", "--force", name]);
        }
        let _ = docker(self.config, &["rmi", "--force", &self.image]);
    }
}

#[test]
fn discovery_watches_the_opted_in_container_and_reports_the_digest_started_one() {
    let wd = WorkDir::new("cli-discover");
    let registry = Registry::anonymous(&wd);
    let nanos = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    let run = format!("{}-{nanos}", std::process::id());
    let reference = registry.image_ref(&format!("org/discover-{run}"), "latest");
    let layout = build_image(&wd, &ImageSpec::busybox("1"));
    let digest = skopeo::push(&layout, &reference, ManifestFormat::Oci, None, &RegistryTls::Plain);
    // The unlabelled container runs a tag of its own, so watching it would show.
    let plain_tag = registry.image_ref(&format!("org/discover-{run}"), "plain");
    skopeo::push(&layout, &plain_tag, ManifestFormat::Oci, None, &RegistryTls::Plain);
    let config = wd.fresh_dir("docker-config");
    let prefix = format!("dsc-cli-{run}-");
    let [opted_in, unlabelled, pinned] = ["in", "plain", "pinned"].map(|n| format!("{prefix}{n}"));
    let image_id = {
        docker_ok(&config, &["pull", "--quiet", &reference]);
        docker_ok(&config, &["pull", "--quiet", &plain_tag]);
        docker_ok(&config, &["image", "inspect", "--format", "{{.Id}}", &reference])
    };
    let _cleanup = Cleanup {
        config: &config,
        names: vec![opted_in.clone(), unlabelled.clone(), pinned.clone()],
        image: image_id,
    };
    let by_digest = format!("{}@{digest}", reference.trim_end_matches(":latest"));
    for (name, image, label) in [
        (&opted_in, reference.as_str(), Some("imagewatch.enable=true")),
        (&unlabelled, plain_tag.as_str(), None),
        (&pinned, by_digest.as_str(), Some("imagewatch.enable=true")),
    ] {
        let mut args = vec!["run", "--detach", "--name", name.as_str()];
        if let Some(label) = label {
            args.extend(["--label", label]);
        }
        args.extend([image, "/bin/busybox", "sleep", "600"]);
        docker_ok(&config, &args);
    }

    let home = wd.fresh_dir("home");
    let output = Command::new(env!("CARGO_BIN_EXE_imagewatch"))
        .args(["watch", "--once", "--discover", "docker", "--container-prefix", &prefix])
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("DOCKER_CONFIG", &home)
        .env("HOME", &home)
        .output()
        .expect("binary runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stdout}{stderr}");
    assert_eq!(
        stdout.lines().collect::<Vec<_>>(),
        vec![format!("{reference}: seeded at {}", &digest[..19])],
        "only the opted-in container's image, from a discovered set alone: {stderr}"
    );
    let skipped = stderr
        .lines()
        .find(|line| line.contains("container not watched"))
        .unwrap_or_else(|| panic!("the pinned container is reported: {stderr}"));
    assert!(
        skipped.contains(&pinned) && skipped.contains("started from a digest"),
        "{skipped}"
    );
}
