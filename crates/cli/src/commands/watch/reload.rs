//! Reloading the config file while `watch` runs: on SIGHUP, or when the file's modification
//! time or size changes (looked at every second), the command line and the file are read
//! again and the watcher gets the new watch set, per-image settings, interval, jitter and
//! concurrency, keeping what it has seen. A file that does not parse is reported (file, line,
//! key) and the running configuration stays. Settings that cannot change live (listen
//! address, transport, refresher options) are taken when they are needed again; new registry
//! hosts are wired with their providers.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use registry_auth::EngineAuths;
use registry_core::RegistryHost;
use tracing::{error, info};
use watcher::{RegistrySource, Reload, Reloader};

use super::Args;
use crate::exit::Failure;
use crate::settings::Settings;

/// How often the file is looked at.
const POLL: Duration = Duration::from_secs(1);

/// What a reload builds on: the hosts wired so far and their pull credentials.
pub struct Context {
    pub settings: Settings,
    pub hosts: Vec<RegistryHost>,
    pub engine_auth: EngineAuths,
}

fn stamp(path: &PathBuf) -> Option<(SystemTime, u64)> {
    let meta = std::fs::metadata(path).ok()?;
    Some((meta.modified().ok()?, meta.len()))
}

/// Runs until the process ends.
pub async fn watch_file(
    path: PathBuf,
    reparse: fn() -> Result<Args, Failure>,
    mut context: Context,
    reloader: Reloader,
) {
    let mut hangup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()).ok();
    let mut last = stamp(&path);
    loop {
        let why = tokio::select! {
            () = async {
                match hangup.as_mut() {
                    Some(signal) => { signal.recv().await; }
                    None => std::future::pending::<()>().await,
                }
            } => "SIGHUP",
            () = tokio::time::sleep(POLL) => {
                let now = stamp(&path);
                if now == last {
                    continue;
                }
                last = now;
                "the file changed"
            }
        };
        match build(reparse, &mut context).await {
            Ok(reload) => {
                info!(path = %path.display(), why, images = reload.set.len(), "config reloaded");
                reloader.reload(reload);
            }
            Err(Failure::Config(message) | Failure::Check(message) | Failure::Internal(message)) => error!(
                path = %path.display(),
                why,
                error = %message,
                "config not reloaded; the running configuration stays"
            ),
        }
    }
}

async fn build(reparse: fn() -> Result<Args, Failure>, context: &mut Context) -> Result<Reload, Failure> {
    let args = reparse()?;
    let set = args.watch_set(&context.settings)?;
    if args.concurrency == 0 {
        return Err(Failure::Config("--concurrency 0: expected at least 1".into()));
    }
    let hosts = set.hosts();
    let source = if hosts.iter().all(|host| context.hosts.contains(host)) {
        None
    } else {
        let transport = args.transport.transport()?;
        let wired = registry_auth::wire(&context.settings.auth, transport, &hosts)
            .await
            .map_err(Failure::config)?;
        context.hosts = hosts;
        context.engine_auth = wired.engine_auth();
        Some(Arc::new(RegistrySource::new(Arc::new(
            wired.client.with_global_concurrency(args.global_concurrency),
        ))) as Arc<dyn watcher::DigestSource>)
    };
    let refresher = super::build_refresher(&args, &context.engine_auth).await?;
    Ok(Reload {
        set,
        source,
        refresher: Some(refresher),
        interval: args.interval,
        jitter: args.jitter,
        concurrency: args.concurrency,
    })
}
