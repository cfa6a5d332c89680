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

/// Every crate's `src/` and xtask's.
fn source_dirs() -> Vec<PathBuf> {
    let mut dirs: Vec<PathBuf> = crates()
        .iter()
        .map(|krate| root().join("crates").join(krate).join("src"))
        .collect();
    dirs.push(root().join("xtask/src"));
    dirs
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
    let dirs = source_dirs();
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
        ("registry-auth", &["registry-core", "auth-ghcr", "auth-ecr"]),
        ("watcher", &["registry-core"]),
        ("refresh", &["registry-core", "watcher"]),
        ("http-api", &["registry-core", "watcher"]),
        ("trust", &["registry-core"]),
        ("state-postgres", &["registry-core", "watcher"]),
        ("test-support", &[]),
    ];
    for krate in crates().iter().filter(|krate| krate.as_str() != "cli") {
        // cli is the edge: it may use every crate, but no auth crate directly (see below).
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
fn the_trust_crate_reaches_registries_only_through_registry_core() {
    // Signature requests must share the digest checks' auth, caches and bounds: no HTTP client
    // of its own, and no hand-written cryptography (only RustCrypto's crates).
    let manifest = read(&root().join("crates/trust/Cargo.toml"));
    for forbidden in ["reqwest", "hyper", "ureq", "openssl", "ring"] {
        assert!(
            !manifest.lines().any(|line| line.trim_start().starts_with(forbidden)),
            "crates/trust depends on {forbidden}; registry requests go through registry-core's client"
        );
    }
    for file in rust_files(&root().join("crates/trust/src")) {
        let code = shipped_code(&file);
        assert!(
            !code.contains("reqwest::") && !code.contains("Transport::new"),
            "{} builds its own HTTP client",
            file.display()
        );
    }
}

#[test]
fn every_module_says_what_it_owns() {
    let dirs = source_dirs();
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

/// The shipped source files of every crate, as (crate, file).
fn shipped_files() -> Vec<(String, PathBuf)> {
    crates()
        .into_iter()
        .flat_map(|krate| {
            rust_files(&root().join("crates").join(&krate).join("src"))
                .into_iter()
                .map(move |file| (krate.clone(), file))
        })
        .collect()
}

#[test]
fn only_the_edge_reads_the_environment() {
    // cli is the edge; test-support starts components for tests and reads their PATH.
    const READS: &[&str] = &["env::var(", "env::var_os(", "env::vars(", "env::vars_os("];
    let offenders: Vec<String> = shipped_files()
        .into_iter()
        .filter(|(krate, _)| krate != "cli" && krate != "test-support")
        .filter(|(_, file)| {
            let code = shipped_code(file);
            READS.iter().any(|read| code.contains(read))
        })
        .map(|(_, file)| file.display().to_string())
        .collect();
    assert!(
        offenders.is_empty(),
        "the process environment is read outside crates/cli (take settings as values): {offenders:?}"
    );
}

#[test]
fn only_the_auth_room_names_providers() {
    // Who authenticates to which host is registry-auth's decision; the provider implementations
    // live in auth-ghcr and auth-ecr. The edge may show a kind, never build a provider.
    const ROOM: &[&str] = &["registry-auth", "auth-ghcr", "auth-ecr"];
    const IMPLEMENTATIONS: &[&str] = &["BearerTokenProvider", "EcrProvider", "auth_ghcr", "auth_ecr"];
    let mut offenders = Vec::new();
    for (krate, file) in shipped_files() {
        if ROOM.contains(&krate.as_str()) {
            continue;
        }
        let code = shipped_code(&file);
        for name in IMPLEMENTATIONS.iter().filter(|name| code.contains(**name)) {
            offenders.push(format!("{} names {name}", file.display()));
        }
        if krate != "cli" && code.contains("ProviderKind") {
            offenders.push(format!("{} names ProviderKind", file.display()));
        }
    }
    for krate in crates().iter().filter(|krate| !ROOM.contains(&krate.as_str())) {
        for dependency in our_dependencies(krate) {
            if dependency == "auth-ghcr" || dependency == "auth-ecr" {
                offenders.push(format!(
                    "crates/{krate} depends on {dependency}; go through registry-auth"
                ));
            }
        }
    }
    assert!(
        offenders.is_empty(),
        "providers named outside the auth room:\n{}",
        offenders.join("\n")
    );
}

#[test]
fn the_engine_payload_is_built_in_one_place() {
    // `serveraddress` is the X-Registry-Auth payload's key: only its one builder writes it, so
    // what `imagewatch auth-header` prints is what every refresher sends.
    let builder = Path::new("registry-auth/src/engine_auth.rs");
    let offenders: Vec<String> = shipped_files()
        .into_iter()
        .filter(|(_, file)| !file.ends_with(builder))
        .filter(|(_, file)| {
            let code = shipped_code(file);
            code.contains("\"serveraddress\"") || code.contains("DockerCredentials")
        })
        .map(|(_, file)| file.display().to_string())
        .collect();
    assert!(
        offenders.is_empty(),
        "an X-Registry-Auth payload is built outside engine_auth.rs: {offenders:?}"
    );
}

/// The module path of a source file under `src` (`a/b.rs` and `a/b/mod.rs` are `a::b`).
fn module_path(src: &Path, file: &Path) -> Vec<String> {
    let relative = file.strip_prefix(src).expect("under src").with_extension("");
    let mut parts: Vec<String> = relative.iter().map(|p| p.to_string_lossy().into_owned()).collect();
    if matches!(parts.last().map(String::as_str), Some("mod" | "lib" | "main")) {
        parts.pop();
    }
    parts
}

/// The `crate::a::b::...` paths a file uses, as module components.
fn crate_paths(code: &str) -> Vec<Vec<String>> {
    paths_after(code, "crate::")
}

/// The module paths a file of `module` names: its `crate::` paths, and its `super::` paths
/// resolved against the module's parent (a `mod.rs` is its directory's module).
fn module_paths_named(code: &str, module: &[String]) -> Vec<Vec<String>> {
    let parent = &module[..module.len().saturating_sub(1)];
    let mut paths = crate_paths(code);
    paths.extend(paths_after(code, "super::").into_iter().map(|path| {
        let mut resolved = parent.to_vec();
        resolved.extend(path);
        resolved
    }));
    paths
}

/// The `::`-separated names after each `keyword` (`crate::`, `super::`) in `code`.
fn paths_after(code: &str, keyword: &str) -> Vec<Vec<String>> {
    let mut paths = Vec::new();
    for (at, _) in code.match_indices(keyword) {
        if at > 0 && code[..at].ends_with(|c: char| c.is_alphanumeric() || c == '_' || c == '$') {
            continue;
        }
        // A doc link (`[`super::order`]`) names a module without importing it.
        let line_start = code[..at].rfind('\n').map_or(0, |newline| newline + 1);
        if code[line_start..at].trim_start().starts_with("//") {
            continue;
        }
        let rest = &code[at + keyword.len()..];
        let path: Vec<String> = rest
            .split("::")
            .map_while(|part| {
                let name: String = part.chars().take_while(|c| c.is_alphanumeric() || *c == '_').collect();
                (!name.is_empty() && name.len() == part.len()).then_some(name)
            })
            .collect();
        let first: String = rest.chars().take_while(|c| c.is_alphanumeric() || *c == '_').collect();
        let mut path = path;
        if path.is_empty() && !first.is_empty() {
            path.push(first);
        }
        paths.push(path);
    }
    paths
}

#[test]
fn no_import_circles_between_modules_of_a_crate() {
    let dirs = source_dirs();
    let mut circles = Vec::new();
    for src in dirs {
        let files = rust_files(&src);
        let modules: Vec<Vec<String>> = files.iter().map(|file| module_path(&src, file)).collect();
        // An edge from a file to the deepest module file its `crate::` paths name, leaving out a
        // module's own ancestors and descendants (a parent re-exports its children).
        let mut edges: Vec<Vec<usize>> = vec![Vec::new(); files.len()];
        for (from, file) in files.iter().enumerate() {
            for path in module_paths_named(&shipped_code(file), &modules[from]) {
                let target = (1..=path.len())
                    .rev()
                    .find_map(|len| modules.iter().position(|module| module.as_slice() == &path[..len]));
                if let Some(to) = target {
                    let (a, b) = (&modules[from], &modules[to]);
                    let related = a.starts_with(b) || b.starts_with(a);
                    if !related && !edges[from].contains(&to) {
                        edges[from].push(to);
                    }
                }
            }
        }
        for start in 0..files.len() {
            // Depth-first search for a way back to `start`.
            let mut stack = vec![(start, vec![start])];
            let mut seen = vec![false; files.len()];
            while let Some((at, trail)) = stack.pop() {
                for &next in &edges[at] {
                    if next == start {
                        let names: Vec<String> = trail.iter().map(|&i| files[i].display().to_string()).collect();
                        circles.push(names.join(" -> "));
                    } else if !seen[next] {
                        seen[next] = true;
                        let mut longer = trail.clone();
                        longer.push(next);
                        stack.push((next, longer));
                    }
                }
            }
        }
    }
    circles.sort();
    circles.dedup();
    assert!(
        circles.is_empty(),
        "modules that import each other:\n{}",
        circles.join("\n")
    );
}

#[test]
fn state_postgres_sends_only_constant_sql_with_parameters() {
    const CALLS: &[&str] = &[".query(", ".query_one(", ".execute(", ".batch_execute(", ".prepare("];
    let mut offenders = Vec::new();
    for file in rust_files(&root().join("crates/state-postgres/src")) {
        let code = shipped_code(&file);
        for call in CALLS {
            for (at, _) in code.match_indices(call) {
                let argument = code[at + call.len()..].trim_start();
                // The one wrapper every query goes through takes `sql: &'static str`.
                let wrapper = argument.starts_with("sql,") && code.contains("sql: &'static str");
                if !argument.starts_with('"') && !wrapper {
                    let line = code[..at].lines().count();
                    offenders.push(format!("{}:{line}: {call} without a string literal", file.display()));
                }
            }
        }
    }
    assert!(
        offenders.is_empty(),
        "SQL must be a constant with $n parameters:\n{}",
        offenders.join("\n")
    );
}

#[test]
fn discovery_only_reads_the_engine() {
    const WRITES: &[&str] = &[
        "create_container",
        "start_container",
        "stop_container",
        "restart_container",
        "rename_container",
        "remove_container",
        "kill_container",
        "remove_image",
        "create_exec",
        "connect_network",
    ];
    let file = root().join("crates/refresh/src/docker/discover.rs");
    let code = shipped_code(&file);
    let found: Vec<&&str> = WRITES.iter().filter(|call| code.contains(**call)).collect();
    assert!(
        found.is_empty(),
        "{} changes containers ({found:?}); discovery must only list, inspect and follow events",
        file.display()
    );
}

#[test]
fn checks_complete_out_of_order() {
    // An ordered `.buffered(n)` holds every finished check behind the slowest one at its head:
    // one hung host would stall all the others. The registry client and the poll loop use
    // unordered pipelines and match answers back by index.
    for file in [
        "crates/registry-core/src/client/registry.rs",
        "crates/watcher/src/poll.rs",
        "crates/watcher/src/registry_source.rs",
    ] {
        let code = shipped_code(&root().join(file));
        assert!(!code.contains(".buffered("), "{file} uses an ordered pipeline");
    }
}
