//! Reloading the config file while `watch` runs: on SIGHUP, or when the file's modification
//! time or size changes (looked at every second), the command line and the file are read
//! again. The watcher gets the new interval, jitter, concurrency and per-image refresh modes
//! through its reloader, and the new watch set through the same channel every run-time change
//! of the set takes (`Watcher::follow_watch_set`; beside the discovered images when `--discover`
//! is on), keeping what it has seen. A file that does not parse is reported (file, line, key)
//! and the running configuration stays. Settings that cannot change live (listen address,
//! transport, state store, trust policy, discovery, refresher options) are taken when they are
//! needed again; new registry hosts are wired with their providers.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use registry_auth::EngineAuths;
use registry_core::RegistryHost;
use tokio::sync::watch;
use tracing::{error, info};
use watcher::{RegistrySource, Reload, Reloader, WatchSet};

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

/// Runs until the process ends. The new settings go to `reloader` first, then the new watch
/// set to `sets`, so images on a newly wired host are checked with its provider.
pub async fn watch_file(
    path: PathBuf,
    reparse: fn() -> Result<Args, Failure>,
    mut context: Context,
    reloader: Reloader,
    sets: watch::Sender<WatchSet>,
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
            () = sets.closed() => return,
        };
        match build(reparse, &mut context).await {
            Ok((reload, set)) => {
                info!(path = %path.display(), why, images = set.len(), "config reloaded");
                reloader.reload(reload);
                sets.send_replace(set);
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

async fn build(reparse: fn() -> Result<Args, Failure>, context: &mut Context) -> Result<(Reload, WatchSet), Failure> {
    let args = reparse()?;
    let set = args.watch_set(&context.settings)?;
    if args.concurrency == 0 || args.global_concurrency == 0 {
        return Err(Failure::Config(
            "--concurrency and --global-concurrency must be at least 1".into(),
        ));
    }
    let new_hosts: Vec<RegistryHost> = set
        .hosts()
        .into_iter()
        .filter(|host| !context.hosts.contains(host))
        .collect();
    let source = if new_hosts.is_empty() {
        None
    } else {
        // Hosts wired before stay wired: discovered images may still be on them.
        let mut hosts = context.hosts.clone();
        hosts.extend(new_hosts);
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
    let reload = Reload {
        source,
        refresher: Some(refresher),
        interval: args.interval,
        jitter: args.jitter,
        concurrency: args.concurrency,
    };
    Ok((reload, set))
}

/// Keeps `updates` holding the config file's images (`bases`) and, after them, the discovered
/// ones (`found`), whichever changes. Returns when the watcher is gone.
pub async fn beside_discovered(
    mut bases: watch::Receiver<WatchSet>,
    mut found: watch::Receiver<WatchSet>,
    updates: watch::Sender<WatchSet>,
) {
    loop {
        tokio::select! {
            changed = bases.changed() => if changed.is_err() { return },
            changed = found.changed() => if changed.is_err() { return },
            () = updates.closed() => return,
        }
        let mut set = bases.borrow_and_update().clone();
        for image in found.borrow_and_update().images() {
            set.insert(image.clone());
        }
        updates.send_if_modified(|current| {
            if *current == set {
                return false;
            }
            *current = set;
            true
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(images: &[&str]) -> WatchSet {
        let mut set = WatchSet::new();
        for image in images {
            set.add_image(image.parse().expect("valid")).expect("a tag");
        }
        set
    }

    fn names(set: &WatchSet) -> Vec<String> {
        set.images().iter().map(|image| image.reference().to_string()).collect()
    }

    #[tokio::test]
    async fn the_file_images_come_first_and_the_discovered_ones_stay_beside_them() {
        let (a, b, c) = ("ghcr.io/org/a:latest", "ghcr.io/org/b:latest", "ghcr.io/org/c:latest");
        let (bases, base_sets) = watch::channel(set(&[a]));
        let (found, found_sets) = watch::channel(WatchSet::new());
        let (updates, mut followed) = watch::channel(set(&[a]));
        let combining = tokio::spawn(beside_discovered(base_sets, found_sets, updates));

        found.send_replace(set(&[b, a]));
        followed.changed().await.expect("sent");
        assert_eq!(names(&followed.borrow_and_update()), [a, b], "each image once");

        bases.send_replace(set(&[c]));
        followed.changed().await.expect("sent");
        assert_eq!(
            names(&followed.borrow_and_update()),
            [c, b, a],
            "a reloaded file replaces its own images only"
        );

        drop(followed);
        combining.await.expect("ends once the watcher is gone");
    }
}
