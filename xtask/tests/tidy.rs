//! The project's conventions and architecture invariants, as tests: each one fails with the
//! file and the rule it breaks, so a change that quietly erodes the design is caught in CI.

use std::path::{Path, PathBuf};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace root")
        .to_owned()
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()))
}

/// The crates under `crates/`, by directory name (which is also the crate name).
fn crates() -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(root().join("crates"))
        .expect("crates/")
        .filter_map(Result::ok)
        .filter(|entry| entry.path().join("Cargo.toml").is_file())
        .map(|entry| entry.file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

/// Every `.rs` file below `dir`.
fn rust_files(dir: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    let mut pending = vec![dir.to_owned()];
    while let Some(dir) = pending.pop() {
        for entry in std::fs::read_dir(&dir).into_iter().flatten().filter_map(Result::ok) {
            let path = entry.path();
            if path.is_dir() {
                pending.push(path);
            } else if path.extension().is_some_and(|ext| ext == "rs") {
                files.push(path);
            }
        }
    }
    files.sort();
    files
}

/// The source of a file without its `#[cfg(test)]` part (by convention the last item).
fn shipped_code(path: &Path) -> String {
    let text = read(path);
    match text.find("\n#[cfg(test)]") {
        Some(end) => text[..end].to_owned(),
        None => text,
    }
}

/// The names of our own crates a crate's `[dependencies]` table lists.
fn our_dependencies(krate: &str) -> Vec<String> {
    let manifest = read(&root().join("crates").join(krate).join("Cargo.toml"));
    let ours = crates();
    let mut in_dependencies = false;
    let mut found = Vec::new();
    for line in manifest.lines() {
        let line = line.trim();
        if line.starts_with('[') {
            in_dependencies = line == "[dependencies]";
            continue;
        }
        let name = line.split(['.', '=', ' ']).next().unwrap_or_default();
        if in_dependencies && ours.iter().any(|krate| krate == name) {
            found.push(name.to_owned());
        }
    }
    found
}

#[test]
fn architecture_doc_names_every_crate() {
    let doc = read(&root().join("docs/architecture.md"));
    let missing: Vec<String> = crates()
        .into_iter()
        .filter(|krate| !doc.contains(&format!("crates/{krate}")))
        .collect();
    assert!(
        missing.is_empty(),
        "docs/architecture.md has no section for {missing:?}"
    );
}

#[test]
fn only_registry_core_knows_the_manifest_wire_format() {
    const WIRE: &[&str] = &[
        "application/vnd.oci.image",
        "application/vnd.docker.distribution.manifest",
        "Docker-Content-Digest",
        "/manifests/",
    ];
    // The test infrastructure plays registries; it may speak their format.
    let exempt = ["registry-core", "test-support"];
    let mut offenders = Vec::new();
    for krate in crates().iter().filter(|krate| !exempt.contains(&krate.as_str())) {
        for file in rust_files(&root().join("crates").join(krate).join("src")) {
            let code = shipped_code(&file);
            for needle in WIRE.iter().filter(|needle| code.contains(**needle)) {
                offenders.push(format!("{} mentions {needle:?}", file.display()));
            }
        }
    }
    assert!(
        offenders.is_empty(),
        "registry wire format outside registry-core:\n{}",
        offenders.join("\n")
    );
}

#[test]
fn tls_verification_is_never_switched_off() {
    let mut dirs: Vec<PathBuf> = crates()
        .iter()
        .map(|krate| root().join("crates").join(krate).join("src"))
        .collect();
    dirs.push(root().join("xtask/src"));
    let offenders: Vec<String> = dirs
        .iter()
        .flat_map(|dir| rust_files(dir))
        .filter(|file| {
            let code = read(file);
            code.contains("danger_accept_invalid_certs(true)") || code.contains("danger_accept_invalid_hostnames(true)")
        })
        .map(|file| file.display().to_string())
        .collect();
    assert!(offenders.is_empty(), "TLS verification switched off in {offenders:?}");
}

#[test]
fn downstream_crates_depend_only_on_registry_core_and_the_watcher_seam() {
    let allowed: &[(&str, &[&str])] = &[
        ("registry-core", &[]),
        ("auth-ghcr", &["registry-core"]),
        ("auth-ecr", &["registry-core"]),
        ("watcher", &["registry-core"]),
        ("refresh", &["registry-core", "watcher"]),
        ("http-api", &["registry-core", "watcher"]),
        ("test-support", &[]),
    ];
    for krate in crates().iter().filter(|krate| krate.as_str() != "cli") {
        let Some((_, allowed)) = allowed.iter().find(|(name, _)| name == krate) else {
            panic!("crates/{krate} is new: add its allowed dependencies to this test and to docs/architecture.md");
        };
        for dependency in our_dependencies(krate) {
            assert!(
                allowed.contains(&dependency.as_str()),
                "crates/{krate} depends on {dependency}; it may depend only on {allowed:?}"
            );
        }
    }
}

#[test]
fn every_module_says_what_it_owns() {
    let mut dirs: Vec<PathBuf> = crates()
        .iter()
        .map(|krate| root().join("crates").join(krate).join("src"))
        .collect();
    dirs.push(root().join("xtask/src"));
    let undocumented: Vec<String> = dirs
        .iter()
        .flat_map(|dir| rust_files(dir))
        .filter(|file| !read(file).trim_start().starts_with("//!"))
        .map(|file| file.display().to_string())
        .collect();
    assert!(
        undocumented.is_empty(),
        "modules without a `//!` doc comment: {undocumented:?}"
    );
}

#[test]
fn ci_runs_the_readme_test_command() {
    let readme = read(&root().join("README.md"));
    let ci = read(&root().join(".ci/run"));
    assert!(
        readme.contains("cargo xtask ci"),
        "README.md no longer names `cargo xtask ci` as the test command"
    );
    assert!(
        ci.contains("cargo xtask ci"),
        ".ci/run does not run the README's test command `cargo xtask ci`"
    );
}
