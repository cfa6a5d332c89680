//! Discovery: the images this host's containers run, as a watch set, kept current from the
//! engine's events. Each container counts by the reference it was created with (`Config.Image`):
//! one started from an image ID or a digest, or whose image was built here and never pulled
//! (no registry digest), cannot be watched and is reported with the reason. Containers are
//! chosen by the same [`ContainerFilter`] the Docker refresher uses (name prefix, label, and
//! opt-in: only `imagewatch.enable=true`, or every container not labelled `...enable=false`),
//! so what is watched is what may be refreshed.
//!
//! It only reads (list, inspect, events); it never changes a container and needs no
//! credentials.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use bollard::Docker;
use bollard::errors::Error as BollardError;
use bollard::query_parameters::{EventsOptionsBuilder, ListContainersOptionsBuilder};
use futures_util::StreamExt as _;
use registry_core::ImageReference;
use tokio::sync::watch;
use tracing::{debug, info, warn};
use watcher::{WatchSet, WatchedImage};

use super::{ASIDE_MARK, ContainerFilter, DockerError, NEW_MARK, describe};

/// How discovery follows the host.
#[derive(Clone, Debug)]
pub struct DiscoveryConfig {
    pub filter: ContainerFilter,
    /// A full re-scan this often even without events (a safety net for a lost event stream).
    pub resync: Duration,
    /// After an event, further events within this are taken into the same re-scan.
    pub debounce: Duration,
}

impl Default for DiscoveryConfig {
    fn default() -> DiscoveryConfig {
        DiscoveryConfig {
            filter: ContainerFilter {
                opt_in: true,
                ..ContainerFilter::default()
            },
            resync: Duration::from_secs(60),
            debounce: Duration::from_millis(150),
        }
    }
}

/// One watchable image and the containers that run it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DiscoveredImage {
    pub reference: ImageReference,
    pub containers: Vec<String>,
}

/// A chosen container whose image cannot be watched.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Skipped {
    pub container: String,
    /// What it was created with.
    pub image: String,
    pub reason: String,
}

/// What one scan found.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Discovered {
    /// In order of the containers' names.
    pub images: Vec<DiscoveredImage>,
    pub skipped: Vec<Skipped>,
}

impl Discovered {
    /// `base` (the images given on the command line) followed by the discovered ones.
    pub fn watch_set(&self, base: &WatchSet) -> WatchSet {
        let mut set = base.clone();
        for image in &self.images {
            set.insert(WatchedImage::new(image.reference.clone(), None));
        }
        set
    }
}

/// Finds the host's watchable containers.
#[derive(Clone, Debug)]
pub struct Discovery {
    docker: Docker,
    config: DiscoveryConfig,
}

impl Discovery {
    pub fn new(docker: Docker, config: DiscoveryConfig) -> Discovery {
        Discovery { docker, config }
    }

    /// Lists every container (running or not), keeps the chosen ones and resolves each to the
    /// reference it was created with.
    pub async fn scan(&self) -> Result<Discovered, DockerError> {
        let options = ListContainersOptionsBuilder::new().all(true).build();
        let mut summaries = self
            .docker
            .list_containers(Some(options))
            .await
            .map_err(|e| DockerError::Api {
                what: "list containers".into(),
                message: describe(&e),
            })?;
        let name_of = |names: &Option<Vec<String>>| {
            names
                .as_ref()
                .and_then(|names| names.first())
                .map(|name| name.trim_start_matches('/').to_owned())
                .unwrap_or_default()
        };
        summaries.sort_by_key(|summary| name_of(&summary.names));
        let mut found = Discovered::default();
        // Whether an image ID came from a registry (has a repo digest), asked once per image.
        let mut pulled: HashMap<String, bool> = HashMap::new();
        for summary in summaries {
            let name = name_of(&summary.names);
            if name.contains(ASIDE_MARK) || name.contains(NEW_MARK) {
                continue;
            }
            if !self.config.filter.matches(&name, summary.labels.as_ref()) {
                continue;
            }
            let Some(id) = summary.id.as_deref() else { continue };
            let inspected = match self.docker.inspect_container(id, None).await {
                Ok(inspected) => inspected,
                Err(BollardError::DockerResponseServerError { status_code: 404, .. }) => continue,
                Err(e) => {
                    return Err(DockerError::Api {
                        what: format!("inspect container {name}"),
                        message: describe(&e),
                    });
                }
            };
            let configured = inspected
                .config
                .as_ref()
                .and_then(|config| config.image.clone())
                .unwrap_or_default();
            let image_id = inspected.image.clone().unwrap_or_default();
            let skip = |reason: String| Skipped {
                container: name.clone(),
                image: configured.clone(),
                reason,
            };
            let reference = match resolve(&configured, &image_id) {
                Ok(reference) => reference,
                Err(reason) => {
                    found.skipped.push(skip(reason));
                    continue;
                }
            };
            let from_registry = match pulled.get(&image_id) {
                Some(known) => *known,
                None => {
                    let known = match self.docker.inspect_image(&image_id).await {
                        Ok(image) => image.repo_digests.is_some_and(|digests| !digests.is_empty()),
                        // Not inspectable (being removed): let the registry decide.
                        Err(_) => true,
                    };
                    pulled.insert(image_id.clone(), known);
                    known
                }
            };
            if !from_registry {
                found.skipped.push(skip(
                    "its image was built on this host and never pulled (no registry digest), so there is nothing to compare with"
                        .into(),
                ));
                continue;
            }
            match found.images.iter_mut().find(|known| known.reference == reference) {
                Some(known) => known.containers.push(name),
                None => found.images.push(DiscoveredImage {
                    reference,
                    containers: vec![name],
                }),
            }
        }
        Ok(found)
    }

    /// Keeps `updates` holding `base` plus the discovered images: a scan now, another shortly
    /// after each container event (create, destroy, rename), and one every resync period. A
    /// broken event stream is re-opened; a failed scan keeps the last set. Returns when every
    /// receiver is gone.
    pub async fn follow(self, base: WatchSet, updates: watch::Sender<WatchSet>) {
        let mut reported: HashSet<(String, String)> = HashSet::new();
        loop {
            // Subscribe before scanning, so a change between the two is not missed.
            let filters = HashMap::from([
                ("type", vec!["container".to_owned()]),
                (
                    "event",
                    vec!["create".to_owned(), "destroy".to_owned(), "rename".to_owned()],
                ),
            ]);
            let mut events = self
                .docker
                .events(Some(EventsOptionsBuilder::new().filters(&filters).build()));
            self.publish(&base, &updates, &mut reported).await;
            loop {
                tokio::select! {
                    event = events.next() => match event {
                        Some(Ok(event)) => {
                            debug!(action = event.action.as_deref().unwrap_or(""), "container event");
                            let quiet = tokio::time::sleep(self.config.debounce);
                            tokio::pin!(quiet);
                            loop {
                                tokio::select! {
                                    () = &mut quiet => break,
                                    more = events.next() => if more.is_none() { break },
                                }
                            }
                            self.publish(&base, &updates, &mut reported).await;
                        }
                        Some(Err(e)) => {
                            warn!(error = %describe(&e), "Docker event stream failed; re-opening it");
                            break;
                        }
                        None => {
                            warn!("Docker event stream ended; re-opening it");
                            break;
                        }
                    },
                    () = tokio::time::sleep(self.config.resync) => {
                        self.publish(&base, &updates, &mut reported).await;
                    }
                    () = updates.closed() => return,
                }
            }
            tokio::select! {
                () = tokio::time::sleep(Duration::from_secs(1)) => {}
                () = updates.closed() => return,
            }
        }
    }

    /// One scan, sent when the set differs; each skipped container is reported once.
    async fn publish(
        &self,
        base: &WatchSet,
        updates: &watch::Sender<WatchSet>,
        reported: &mut HashSet<(String, String)>,
    ) {
        let found = match self.scan().await {
            Ok(found) => found,
            Err(error) => {
                warn!(error = %error, "discovery scan failed; keeping the last watch set");
                return;
            }
        };
        for skipped in &found.skipped {
            if reported.insert((skipped.container.clone(), skipped.image.clone())) {
                warn!(container = %skipped.container, image = %skipped.image, reason = %skipped.reason, "container not watched");
            }
        }
        let set = found.watch_set(base);
        updates.send_if_modified(|current| {
            if *current == set {
                return false;
            }
            info!(
                images = set.len(),
                containers = found.images.iter().map(|i| i.containers.len()).sum::<usize>(),
                "discovered watch set changed"
            );
            *current = set;
            true
        });
    }
}

/// The reference a container created with `configured` (its `Config.Image`) is watched by, or
/// why it cannot be watched. `image_id` is the image it runs.
fn resolve(configured: &str, image_id: &str) -> Result<ImageReference, String> {
    let configured = configured.trim();
    let bare_id = image_id.strip_prefix("sha256:").unwrap_or(image_id);
    let given = configured.strip_prefix("sha256:").unwrap_or(configured);
    if given.is_empty() || (given.len() >= 4 && bare_id.starts_with(given)) {
        return Err("started from an image ID, not a tag; nothing says which tag to follow".into());
    }
    let reference: ImageReference = configured
        .parse()
        .map_err(|e| format!("its image reference does not parse ({e})"))?;
    if reference.digest().is_some() {
        return Err("started from a digest, which never moves; start it from a tag to have it followed".into());
    }
    Ok(reference)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rstest::rstest;

    const ID: &str = "sha256:3f2a8b9c1d2e4f5061728394a5b6c7d8e9f00112233445566778899aabbccdde";

    #[rstest]
    #[case::tag("127.0.0.1:5000/team/app:1.2", Ok("127.0.0.1:5000/team/app:1.2"))]
    #[case::implicit_latest("127.0.0.1:5000/team/app", Ok("127.0.0.1:5000/team/app:latest"))]
    #[case::hub_short_name("alpine", Ok("docker.io/library/alpine:latest"))]
    #[case::full_id(ID, Err("started from an image ID"))]
    #[case::short_id("3f2a8b9c1d2e", Err("started from an image ID"))]
    #[case::digest(
        "127.0.0.1:5000/team/app@sha256:4f9c3ae6f6b5cbbd7bcd5a3a0d1e0e5f3b2e9a3c1b7d8e6f5a4b3c2d1e0f9a8b",
        Err("started from a digest")
    )]
    #[case::tag_and_digest(
        "127.0.0.1:5000/team/app:1@sha256:4f9c3ae6f6b5cbbd7bcd5a3a0d1e0e5f3b2e9a3c1b7d8e6f5a4b3c2d1e0f9a8b",
        Err("started from a digest")
    )]
    fn container_is_watched_by_the_tag_it_was_created_with(
        #[case] configured: &str,
        #[case] expected: Result<&str, &str>,
    ) {
        match (resolve(configured, ID), expected) {
            (Ok(reference), Ok(expected)) => assert_eq!(reference.to_string(), expected),
            (Err(reason), Err(expected)) => assert!(reason.contains(expected), "{reason}"),
            (got, expected) => panic!("{configured}: got {got:?}, expected {expected:?}"),
        }
    }
}
