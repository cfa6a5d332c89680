//! The `docker` CLI as `cargo xtask demo` drives it: every command printed before it runs
//! (secrets as `***`), a throwaway `DOCKER_CONFIG` so the machine's Docker config is neither
//! read nor written, a container's state from `docker inspect`, and [`Leftovers`], which removes
//! the demo's containers and images when dropped, passing or failing.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

/// `docker` with its own config directory.
#[derive(Debug, Clone)]
pub struct DockerCli {
    config: PathBuf,
}

/// The Docker Engine's version, or why the demo cannot use it, in one line.
pub fn engine_version() -> Result<String, String> {
    let output = Command::new("docker")
        .args(["version", "--format", "{{.Server.Version}}"])
        // An empty config: no context, credential helper or proxy of the machine applies.
        .env(
            "DOCKER_CONFIG",
            std::env::temp_dir().join("imagewatch-demo-no-docker-config"),
        )
        .stdin(Stdio::null())
        .output();
    match output {
        Err(error) => Err(format!("no `docker` CLI to run ({error})")),
        Ok(out) if out.status.success() => Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned()),
        Ok(out) => {
            let stderr = String::from_utf8_lossy(&out.stderr);
            let first = stderr.lines().find(|l| !l.trim().is_empty()).unwrap_or("no output");
            Err(format!(
                "the Docker Engine is not reachable (`docker version`: {})",
                first.trim()
            ))
        }
    }
}

impl DockerCli {
    /// `docker` with `DOCKER_CONFIG=config` (created empty if missing).
    pub fn new(config: &Path) -> Result<DockerCli, String> {
        std::fs::create_dir_all(config).map_err(|e| format!("mkdir {}: {e}", config.display()))?;
        Ok(DockerCli {
            config: config.to_owned(),
        })
    }

    fn command(&self, args: &[&str]) -> Command {
        let mut command = Command::new("docker");
        command
            .args(args)
            .env("DOCKER_CONFIG", &self.config)
            .stdin(Stdio::null());
        command
    }

    fn show(&self, args: &[&str]) {
        crate::narrate::say(&format!(
            "$ DOCKER_CONFIG={} docker {}",
            self.config.display(),
            args.iter().map(|a| quote(a)).collect::<Vec<_>>().join(" ")
        ));
    }

    /// Runs `docker args`, printed first; its stdout on success, its stderr in the error.
    pub fn run(&self, args: &[&str]) -> Result<String, String> {
        self.show(args);
        self.quiet(args)
    }

    /// Runs `docker args` without printing the command.
    pub fn quiet(&self, args: &[&str]) -> Result<String, String> {
        let output = self
            .command(args)
            .output()
            .map_err(|e| format!("cannot run docker: {e}"))?;
        checked(args, &output)
    }

    /// `docker login host --username user --password-stdin`, the password on stdin (shown as
    /// `***`). It lands in this CLI's throwaway config only.
    pub fn login(&self, host: &str, user: &str, password: &str) -> Result<(), String> {
        let args = ["login", host, "--username", user, "--password-stdin"];
        crate::narrate::say(&format!(
            "$ echo *** | DOCKER_CONFIG={} docker {}",
            self.config.display(),
            args.join(" ")
        ));
        let mut child = self
            .command(&args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| format!("cannot run docker: {e}"))?;
        if let Some(mut stdin) = child.stdin.take() {
            stdin
                .write_all(password.as_bytes())
                .map_err(|e| format!("docker login: writing the password: {e}"))?;
        }
        let output = child.wait_with_output().map_err(|e| format!("docker login: {e}"))?;
        checked(&args, &output).map(drop)
    }

    /// The container called `name` as `docker inspect` sees it; `None` when there is none (for
    /// example in the instant a recreate swaps it).
    pub fn container(&self, name: &str, print: bool) -> Result<Option<Container>, String> {
        let args = ["container", "inspect", name];
        if print {
            self.show(&args);
        }
        let output = self
            .command(&args)
            .output()
            .map_err(|e| format!("cannot run docker: {e}"))?;
        if !output.status.success() {
            let stderr = String::from_utf8_lossy(&output.stderr);
            if stderr.to_lowercase().contains("no such") {
                return Ok(None);
            }
            return Err(format!("`docker {}` failed: {}", args.join(" "), stderr.trim()));
        }
        let json: serde_json::Value = serde_json::from_slice(&output.stdout)
            .map_err(|e| format!("`docker {}` printed no JSON: {e}", args.join(" ")))?;
        Ok(json.get(0).map(Container::from_json))
    }
}

fn checked(args: &[&str], output: &Output) -> Result<String, String> {
    if output.status.success() {
        Ok(String::from_utf8_lossy(&output.stdout).trim().to_owned())
    } else {
        Err(format!(
            "`docker {}` failed ({}): {}",
            args.join(" "),
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        ))
    }
}

/// Single-quoted for the shell when it holds anything but plain characters.
pub fn quote(arg: &str) -> String {
    let plain = |c: char| c.is_ascii_alphanumeric() || "-_./:=@,".contains(c);
    if !arg.is_empty() && arg.chars().all(plain) {
        arg.to_owned()
    } else {
        format!("'{}'", arg.replace('\'', r"'\''"))
    }
}

/// What the demo shows of a container.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Container {
    pub name: String,
    pub id: String,
    /// The local image id (`sha256:...`) it runs.
    pub image_id: String,
    /// The reference it was created from (`Config.Image`).
    pub reference: String,
    /// The `org.opencontainers.image.version` label.
    pub version_label: String,
    /// `IMAGEWATCH_TEST_VERSION` from its environment.
    pub version_env: String,
    pub status: String,
    pub started_at: String,
}

impl Container {
    fn from_json(json: &serde_json::Value) -> Container {
        let text = |pointer: &str| {
            json.pointer(pointer)
                .and_then(serde_json::Value::as_str)
                .unwrap_or("-")
                .to_owned()
        };
        let version_env = json
            .pointer("/Config/Env")
            .and_then(serde_json::Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(serde_json::Value::as_str)
            .find_map(|var| var.strip_prefix("IMAGEWATCH_TEST_VERSION="))
            .unwrap_or("-")
            .to_owned();
        let version_label = json
            .pointer("/Config/Labels")
            .and_then(|labels| labels.get("org.opencontainers.image.version"))
            .and_then(serde_json::Value::as_str)
            .unwrap_or("-")
            .to_owned();
        Container {
            name: text("/Name").trim_start_matches('/').to_owned(),
            id: text("/Id"),
            image_id: text("/Image"),
            reference: text("/Config/Image"),
            version_label,
            version_env,
            status: text("/State/Status"),
            started_at: text("/State/StartedAt"),
        }
    }

    /// Runs `version` (label and env agree) and is up.
    pub fn is_on(&self, version: &str) -> bool {
        self.version_label == version && self.version_env == version && self.status == "running"
    }

    /// The lines the demo prints for it.
    pub fn describe(&self) -> Vec<String> {
        vec![
            format!("  name        {}", self.name),
            format!("  id          {}", short_id(&self.id)),
            format!("  image id    {}", self.image_id),
            format!("  created from {}", self.reference),
            format!(
                "  version     label org.opencontainers.image.version={}, env IMAGEWATCH_TEST_VERSION={}",
                self.version_label, self.version_env
            ),
            format!("  state       {} since {}", self.status, self.started_at),
        ]
    }
}

/// The first 12 hex digits of a container or image id, as `docker ps` shows them.
pub fn short_id(id: &str) -> String {
    id.trim_start_matches("sha256:").chars().take(12).collect()
}

/// What the demo made in the Docker Engine: removed on drop (`docker rm -f`, `docker rmi`),
/// whatever happened before.
pub struct Leftovers {
    docker: DockerCli,
    /// Every container whose name starts with this is the demo's (the recreate's renamed old
    /// container too).
    container_prefix: String,
    reference: String,
    image_ids: Vec<String>,
}

impl Leftovers {
    pub fn new(docker: &DockerCli, container_prefix: &str, reference: &str) -> Leftovers {
        Leftovers {
            docker: docker.clone(),
            container_prefix: container_prefix.to_owned(),
            reference: reference.to_owned(),
            image_ids: Vec::new(),
        }
    }

    /// An image the demo pulled: removed at the end (by id, not forced, so an image some other
    /// tag still names is left alone).
    pub fn image(&mut self, id: &str) {
        if !id.is_empty() && !self.image_ids.iter().any(|known| known == id) {
            self.image_ids.push(id.to_owned());
        }
    }

    fn containers(&self) -> Vec<String> {
        let filter = format!("name={}", self.container_prefix);
        self.docker
            .quiet(&["ps", "--all", "--filter", &filter, "--format", "{{.Names}}"])
            .unwrap_or_default()
            .lines()
            .filter(|name| name.starts_with(&self.container_prefix))
            .map(str::to_owned)
            .collect()
    }

    /// Removes everything; says what is left, if anything.
    pub fn clean(&mut self) {
        let containers = self.containers();
        if !containers.is_empty() {
            let mut args = vec!["rm", "--force"];
            args.extend(containers.iter().map(String::as_str));
            report(self.docker.run(&args));
        }
        if self.docker.quiet(&["image", "inspect", &self.reference]).is_ok() {
            report(self.docker.run(&["rmi", &self.reference]));
        }
        let ids = std::mem::take(&mut self.image_ids);
        for id in &ids {
            if self.docker.quiet(&["image", "inspect", id]).is_ok() {
                report(self.docker.run(&["rmi", id]));
            }
        }
        let mut left = self.containers();
        left.extend(
            std::iter::once(&self.reference)
                .chain(&ids)
                .filter(|image| self.docker.quiet(&["image", "inspect", image]).is_ok())
                .cloned(),
        );
        if left.is_empty() {
            crate::narrate::say("Docker Engine: the demo's containers and images are gone");
        } else {
            crate::narrate::say(&format!("Docker Engine: left behind, remove by hand: {left:?}"));
        }
    }
}

fn report(result: Result<String, String>) {
    if let Err(error) = result {
        crate::narrate::say(&format!("clean-up: {error}"));
    }
}

impl Drop for Leftovers {
    fn drop(&mut self) {
        self.clean();
    }
}
