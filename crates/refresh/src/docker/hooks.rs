//! Lifecycle hooks: commands an operator put in a container's labels, run inside it (`sh -c`,
//! through the engine's exec API) around a recreate. `pre-update` runs in the old container
//! before anything happens to it; a non-zero exit skips that container's update (exit code 75,
//! EX_TEMPFAIL, as Watchtower reads it: skipped without counting as a failure). `post-update`
//! runs in the new container once it has its name; a failure there is a warning, since the new
//! container already serves. Each hook is killed after a timeout.
//!
//! It never reads the environment and sends nothing anywhere but the engine.

use std::collections::HashMap;
use std::time::Duration;

use bollard::Docker;
use bollard::exec::{CreateExecOptions, StartExecResults};
use futures_util::StreamExt as _;

use super::describe;
use super::labels::value;
use super::verify::clip_front;

pub const PRE_UPDATE: &str = "imagewatch.pre-update";
pub const POST_UPDATE: &str = "imagewatch.post-update";
pub const WATCHTOWER_PRE_UPDATE: &str = "com.centurylinklabs.watchtower.lifecycle.pre-update";
pub const WATCHTOWER_POST_UPDATE: &str = "com.centurylinklabs.watchtower.lifecycle.post-update";

/// Watchtower's "skip this update, nothing is wrong" exit code of a pre-update hook.
pub const SKIP_EXIT_CODE: i64 = 75;

/// When a hook runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Hook {
    PreUpdate,
    PostUpdate,
}

impl Hook {
    pub fn label(self) -> &'static str {
        match self {
            Hook::PreUpdate => "pre-update",
            Hook::PostUpdate => "post-update",
        }
    }

    /// The command the labels give for this hook, if any (imagewatch's label over Watchtower's).
    pub fn command(self, labels: Option<&HashMap<String, String>>) -> Option<String> {
        let keys = match self {
            Hook::PreUpdate => [PRE_UPDATE, WATCHTOWER_PRE_UPDATE],
            Hook::PostUpdate => [POST_UPDATE, WATCHTOWER_POST_UPDATE],
        };
        value(labels, &keys)
            .filter(|command| !command.is_empty())
            .map(str::to_owned)
    }
}

/// How a hook ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum HookResult {
    Succeeded,
    /// Exit code 75 of a pre-update hook.
    AskedToSkip(String),
    Failed(String),
}

/// Runs `command` with `sh -c` in `container`, waiting at most `timeout`. Answers what it did,
/// with the end of what it printed when it failed.
pub async fn run(docker: &Docker, container: &str, hook: Hook, command: &str, timeout: Duration) -> HookResult {
    let options = CreateExecOptions {
        attach_stdout: Some(true),
        attach_stderr: Some(true),
        cmd: Some(vec!["sh".to_owned(), "-c".to_owned(), command.to_owned()]),
        ..CreateExecOptions::default()
    };
    let exec = match docker.create_exec(container, options).await {
        Ok(exec) => exec.id,
        Err(e) => return HookResult::Failed(format!("{} hook could not be started: {}", hook.label(), describe(&e))),
    };
    let mut printed = String::new();
    let ran = async {
        match docker.start_exec(&exec, None).await {
            Ok(StartExecResults::Attached { mut output, .. }) => {
                while let Some(chunk) = output.next().await {
                    match chunk {
                        Ok(chunk) => printed.push_str(&chunk.to_string()),
                        Err(e) => return Err(describe(&e)),
                    }
                }
                Ok(())
            }
            Ok(StartExecResults::Detached) => Ok(()),
            Err(e) => Err(describe(&e)),
        }
    };
    match tokio::time::timeout(timeout, ran).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => return HookResult::Failed(format!("{} hook failed to run: {e}", hook.label())),
        Err(_) => {
            // The engine has no exec kill; the process is left to the container (it is stopped
            // with it on an update, or keeps running beside an unchanged container).
            return HookResult::Failed(format!(
                "{} hook did not finish within {}s",
                hook.label(),
                timeout.as_secs_f64()
            ));
        }
    }
    let exit_code = match docker.inspect_exec(&exec).await {
        Ok(inspected) => inspected.exit_code.unwrap_or(-1),
        Err(e) => return HookResult::Failed(format!("{} hook's exit code unknown: {}", hook.label(), describe(&e))),
    };
    let output = printed.split_whitespace().collect::<Vec<_>>().join(" ");
    let said = if output.is_empty() {
        "no output".to_owned()
    } else {
        clip_front(&output)
    };
    match exit_code {
        0 => HookResult::Succeeded,
        SKIP_EXIT_CODE if hook == Hook::PreUpdate => {
            HookResult::AskedToSkip(format!("pre-update hook exited 75 (skip this update): {said}"))
        }
        code => HookResult::Failed(format!("{} hook exited with code {code}: {said}", hook.label())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn own_hook_label_wins_over_watchtowers() {
        let labels = HashMap::from([
            (PRE_UPDATE.to_owned(), "echo own".to_owned()),
            (WATCHTOWER_PRE_UPDATE.to_owned(), "echo watchtower".to_owned()),
            (WATCHTOWER_POST_UPDATE.to_owned(), "echo after".to_owned()),
        ]);
        assert_eq!(Hook::PreUpdate.command(Some(&labels)).as_deref(), Some("echo own"));
        assert_eq!(Hook::PostUpdate.command(Some(&labels)).as_deref(), Some("echo after"));
        assert_eq!(Hook::PostUpdate.command(None), None);
    }
}
