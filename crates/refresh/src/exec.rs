//! The command refresher: runs a program (no shell) with the event in environment variables.
//! Exit status 0 is success; anything else, a failed start or a timeout is a failure that names
//! the exit code and the tail of stderr.
//!
//! The program inherits nothing: its environment is the event's `IMAGEWATCH_*` variables plus
//! what [`ExecConfig::inherited`] lists (the edge fills it with `PATH`, `HOME` and the variables
//! the operator names), so our registry passwords, tokens and hook secrets never reach it.

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use async_trait::async_trait;
use registry_core::Secret;
use tracing::{debug, info};
use watcher::{RefreshError, RefreshEvent, RefreshOutcome, Refresher};

/// The environment variables the command receives.
pub const ENV_IMAGE: &str = "IMAGEWATCH_IMAGE";
pub const ENV_RUNTIME: &str = "IMAGEWATCH_RUNTIME";
pub const ENV_HOST: &str = "IMAGEWATCH_HOST";
pub const ENV_OLD_DIGEST: &str = "IMAGEWATCH_OLD_DIGEST";
pub const ENV_NEW_DIGEST: &str = "IMAGEWATCH_NEW_DIGEST";
pub const ENV_TIME: &str = "IMAGEWATCH_TIME";
/// The fingerprint of the key whose signature admitted the new digest (empty when no trust
/// policy applies to the image).
pub const ENV_VERIFIED_KEY: &str = "IMAGEWATCH_VERIFIED_KEY";
/// Where that signature was found (`tag sha256-<hex>.sig`, `referrer sha256:...`).
pub const ENV_VERIFIED_AT: &str = "IMAGEWATCH_VERIFIED_AT";

/// How much of stderr a failure quotes.
const STDERR_TAIL_BYTES: usize = 1000;

/// What to run.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ExecConfig {
    pub program: PathBuf,
    pub args: Vec<String>,
    /// The command is killed after this long.
    pub timeout: Duration,
    /// The only variables of ours the program gets (besides the event's), values redacted in
    /// `Debug`.
    pub inherited: Vec<(String, Secret)>,
}

impl ExecConfig {
    pub fn new(program: impl Into<PathBuf>, args: Vec<String>) -> ExecConfig {
        ExecConfig {
            program: program.into(),
            args,
            timeout: Duration::from_secs(60),
            inherited: Vec::new(),
        }
    }
}

/// Why the command failed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ExecError {
    #[error("cannot run {program}: {reason}")]
    Spawn { program: String, reason: String },
    #[error("{program} exited with {status}; stderr: {stderr}")]
    Failed {
        program: String,
        /// `code N` or `signal N`.
        status: String,
        code: Option<i32>,
        stderr: String,
    },
    #[error("{program} did not finish within {}s and was killed", timeout.as_secs_f64())]
    Timeout { program: String, timeout: Duration },
}

/// The command refresher.
#[derive(Clone, Debug)]
pub struct ExecRefresher {
    config: ExecConfig,
}

/// What a successful run printed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ExecRun {
    pub stdout: String,
}

impl ExecRefresher {
    pub fn new(config: ExecConfig) -> ExecRefresher {
        ExecRefresher { config }
    }

    pub fn config(&self) -> &ExecConfig {
        &self.config
    }

    /// The variables the command gets for `event`.
    pub fn environment(event: &RefreshEvent) -> Vec<(&'static str, String)> {
        vec![
            (ENV_IMAGE, event.image.to_string()),
            (ENV_RUNTIME, event.runtime.clone().unwrap_or_default()),
            (ENV_HOST, event.host.to_string()),
            (ENV_OLD_DIGEST, event.old_digest.to_string()),
            (ENV_NEW_DIGEST, event.new_digest.to_string()),
            (ENV_TIME, event.time_rfc3339()),
            (
                ENV_VERIFIED_KEY,
                event
                    .verification
                    .as_ref()
                    .map(|v| v.key_fingerprint.clone())
                    .unwrap_or_default(),
            ),
            (
                ENV_VERIFIED_AT,
                event.verification.as_ref().map(|v| v.found.clone()).unwrap_or_default(),
            ),
        ]
    }

    pub async fn run(&self, event: &RefreshEvent) -> Result<ExecRun, ExecError> {
        let program = self.config.program.display().to_string();
        let child = tokio::process::Command::new(&self.config.program)
            .args(&self.config.args)
            .env_clear()
            .envs(self.config.inherited.iter().map(|(name, value)| (name, value.expose())))
            .envs(ExecRefresher::environment(event))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| ExecError::Spawn {
                program: program.clone(),
                reason: e.to_string(),
            })?;
        debug!(program = %program, image = %event.image, "command started");
        // On timeout the future is dropped, and with it the child, which kill_on_drop kills.
        let output = match tokio::time::timeout(self.config.timeout, child.wait_with_output()).await {
            Ok(Ok(output)) => output,
            Ok(Err(e)) => {
                return Err(ExecError::Spawn {
                    program,
                    reason: e.to_string(),
                });
            }
            Err(_) => {
                return Err(ExecError::Timeout {
                    program,
                    timeout: self.config.timeout,
                });
            }
        };
        if output.status.success() {
            info!(program = %program, image = %event.image, "command succeeded");
            return Ok(ExecRun {
                stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
            });
        }
        let code = output.status.code();
        let status = match code {
            Some(code) => format!("code {code}"),
            None => {
                use std::os::unix::process::ExitStatusExt as _;
                output
                    .status
                    .signal()
                    .map_or_else(|| "an unknown status".to_owned(), |signal| format!("signal {signal}"))
            }
        };
        Err(ExecError::Failed {
            program,
            status,
            code,
            stderr: tail(&output.stderr),
        })
    }
}

#[async_trait]
impl Refresher for ExecRefresher {
    fn name(&self) -> &'static str {
        "exec"
    }

    async fn refresh(&self, event: &RefreshEvent) -> Result<RefreshOutcome, RefreshError> {
        let run = self
            .run(event)
            .await
            .map_err(|error| RefreshError::new(error.to_string()))?;
        let mut summary = format!("{} exited with code 0", self.config.program.display());
        // What the command printed is what an operator wants to see in the log line.
        if !run.stdout.trim().is_empty() {
            summary.push_str(": ");
            summary.push_str(&tail(run.stdout.as_bytes()));
        }
        Ok(RefreshOutcome::new(summary))
    }
}

/// The last bytes of `bytes` as trimmed text, `(empty)` when there are none.
fn tail(bytes: &[u8]) -> String {
    let start = bytes.len().saturating_sub(STDERR_TAIL_BYTES);
    let text = String::from_utf8_lossy(&bytes[start..]);
    let text = text.trim();
    match (start > 0, text.is_empty()) {
        (_, true) => "(empty)".to_owned(),
        (true, false) => format!("...{text}"),
        (false, false) => text.to_owned(),
    }
}
