//! The Docker refresher: pulls the moved image through the Docker Engine API (bollard) with the
//! image host's `X-Registry-Auth`, then recreates (or removes) every container configured with
//! that reference. It never leaves a service down: a recreate that fails after the old container
//! was stopped puts the old one back under its name and starts it again. That includes a new
//! container that starts and then does not prove itself: one that exits (or is restarted by its
//! restart policy) within the settle period, or whose health check does not report `healthy` in
//! time. The old container is removed only once the new one has proven itself.
//!
//! It compares images by the engine's image ID only, never a local digest with a registry
//! digest (a multi-arch index digest never equals a platform digest).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt;
use std::str::FromStr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use bollard::Docker;
use bollard::errors::Error as BollardError;
use bollard::models::{ContainerInspectResponse, NetworkConnectRequest};
use bollard::query_parameters::{
    CreateContainerOptionsBuilder, CreateImageOptionsBuilder, ListContainersOptionsBuilder, LogsOptionsBuilder,
    RemoveContainerOptionsBuilder, RemoveImageOptionsBuilder, RenameContainerOptionsBuilder,
    RestartContainerOptionsBuilder, StopContainerOptionsBuilder,
};
use futures_util::StreamExt as _;
use registry_core::{AuthError, EngineAuthSource, ImageReference, RegistryHost, Secret};
use tracing::{debug, info, warn};
use watcher::{RefreshError, RefreshEvent, RefreshOutcome, Refresher};

pub mod compose;
mod copy;
pub mod discover;
pub mod hooks;
pub mod labels;
mod order;
mod verify;

pub use copy::create_body;
pub use discover::{Discovered, DiscoveredImage, Discovery, DiscoveryConfig, Skipped};
use hooks::{Hook, HookResult};
pub use order::{Order, UpdateOrder, order_for};
use verify::{Verdict, clip_front, judge};

/// The engine address used when none is configured and `DOCKER_HOST` is unset.
pub const DEFAULT_DOCKER_SOCKET: &str = "/var/run/docker.sock";
/// Marks the containers a recreate parks aside; they are never matched themselves.
const ASIDE_MARK: &str = "-imagewatch-old-";
/// Marks the container a recreate builds before it takes the old one's name.
const NEW_MARK: &str = "-imagewatch-new-";
/// How often a new container is inspected while it proves itself.
const VERIFY_POLL: Duration = Duration::from_millis(250);
/// How many of its last log lines a new container that went down reports.
const LOG_TAIL_LINES: usize = 10;

/// What a start-first attempt that failed did, when it cleaned up after itself.
pub const ROLLED_BACK_START_FIRST: &str =
    "rolled back: the new container was removed; start-first: the old container kept running throughout";

/// A step of a swap that failed: the step, what went wrong, what the rollback did.
type StepFailure = (&'static str, String, String);

/// The containers of one swap: the old one, its copy on the new image and the name the old one
/// is parked under meanwhile.
#[derive(Clone, Copy)]
struct Swap<'a> {
    name: &'a str,
    old_id: &'a str,
    new_id: &'a str,
    aside: &'a str,
    signal: Option<&'a str>,
}

/// What to do with the containers of a moved image.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DockerMode {
    /// A new container with the same configuration on the new image, then the old one removed.
    Recreate,
    /// Remove the container (force) for a platform that re-provisions it.
    Remove,
}

impl FromStr for DockerMode {
    type Err = String;

    fn from_str(value: &str) -> Result<Self, Self::Err> {
        match value {
            "recreate" => Ok(DockerMode::Recreate),
            "remove" => Ok(DockerMode::Remove),
            other => Err(format!(
                "invalid Docker mode {other:?}; expected `recreate` or `remove`"
            )),
        }
    }
}

impl fmt::Display for DockerMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            DockerMode::Recreate => "recreate",
            DockerMode::Remove => "remove",
        })
    }
}

/// Which containers of the image are touched, beyond `Config.Image` naming it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ContainerFilter {
    /// Only containers whose name starts with this (say `ws-`).
    pub name_prefix: Option<String>,
    /// Only containers carrying this label with this value.
    pub label: Option<(String, String)>,
    /// Only containers labelled `imagewatch.enable=true` (or Watchtower's enable label). Either
    /// way a container labelled `...enable=false` is never touched.
    pub opt_in: bool,
}

impl ContainerFilter {
    /// Parses a `key=value` label filter.
    pub fn parse_label(value: &str) -> Result<(String, String), String> {
        match value.split_once('=') {
            Some((key, value)) if !key.trim().is_empty() => Ok((key.trim().to_owned(), value.to_owned())),
            _ => Err(format!("invalid label filter {value:?}; expected `key=value`")),
        }
    }

    /// Whether a container of this name and these labels is in.
    pub fn matches(&self, name: &str, labels: Option<&HashMap<String, String>>) -> bool {
        let name_ok = self
            .name_prefix
            .as_deref()
            .is_none_or(|prefix| name.starts_with(prefix));
        let label_ok = self.label.as_ref().is_none_or(|(key, value)| {
            labels
                .and_then(|labels| labels.get(key))
                .is_some_and(|found| found == value)
        });
        let enabled = match labels::enabled(labels) {
            labels::Enabled::Yes => true,
            labels::Enabled::No => false,
            labels::Enabled::Unlabelled => !self.opt_in,
        };
        name_ok && label_ok && enabled
    }
}

/// How the Docker refresher works.
#[derive(Clone, Debug)]
pub struct DockerConfig {
    /// `unix:///path`, a socket path, `tcp://host:port` or `http://host:port`; `None` means
    /// [`DEFAULT_DOCKER_SOCKET`]. The edge passes `DOCKER_HOST` here.
    pub endpoint: Option<String>,
    pub mode: DockerMode,
    pub filter: ContainerFilter,
    /// How long a container gets to stop before it is killed.
    pub stop_timeout: Duration,
    /// Per-request timeout of the Engine API (until the answer's headers).
    pub api_timeout: Duration,
    /// The whole pull, to the end of its progress stream.
    pub pull_timeout: Duration,
    /// How long a recreated container must keep running (no exit, no restart) before the old one
    /// is removed; otherwise the old one is put back. `ZERO` means one look right after start.
    pub settle: Duration,
    /// How long a recreated container whose image or configuration has a health check gets to
    /// report `healthy` (counted from its start, and never less than `settle`); `unhealthy`
    /// before that, or still `starting` after it, puts the old one back.
    pub health_timeout: Duration,
    /// Start-first where nothing exclusive clashes, or always stop-first.
    pub order: UpdateOrder,
    /// Remove the image a recreate moved containers off, when no container uses it any more.
    pub cleanup: bool,
    /// How long a lifecycle hook (`imagewatch.pre-update`, ...) may run.
    pub hook_timeout: Duration,
}

impl Default for DockerConfig {
    fn default() -> DockerConfig {
        DockerConfig {
            endpoint: None,
            mode: DockerMode::Recreate,
            filter: ContainerFilter::default(),
            stop_timeout: Duration::from_secs(10),
            api_timeout: Duration::from_secs(120),
            pull_timeout: Duration::from_secs(600),
            settle: Duration::from_secs(5),
            health_timeout: Duration::from_secs(60),
            order: UpdateOrder::Auto,
            cleanup: false,
            hook_timeout: Duration::from_secs(60),
        }
    }
}

/// What a Docker refresh did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DockerOutcome {
    /// The engine's ID of the image now pulled.
    pub image_id: String,
    /// Containers now running (or created, if they were stopped) on the new image.
    pub recreated: Vec<String>,
    /// Containers removed (mode `remove`).
    pub removed: Vec<String>,
    /// Containers of the reference already on the pulled image: left alone.
    pub up_to_date: Vec<String>,
    /// Of `recreated`, those whose new container started beside the old one (no outage).
    pub started_first: Vec<String>,
    /// Containers labelled monitor-only: the move is reported, the container left alone.
    pub monitored: Vec<String>,
    /// Containers whose pre-update hook asked to skip this update (exit code 75): `name: why`.
    pub skipped: Vec<String>,
    /// Containers of a Compose project restarted because they depend on a recreated one, in
    /// the order they were restarted.
    pub restarted: Vec<String>,
    /// The image IDs recreated containers ran before.
    pub replaced_images: Vec<String>,
    /// Of `replaced_images`, those removed by cleanup.
    pub images_removed: Vec<String>,
    /// Things that did not stop the refresh (an old container that could not be removed).
    pub warnings: Vec<String>,
}

impl DockerOutcome {
    pub fn summary(&self) -> String {
        let mut summary = format!(
            "pulled {}; recreated {}, removed {}, already current {}",
            short_id(&self.image_id),
            list(&self.recreated),
            list(&self.removed),
            list(&self.up_to_date)
        );
        if !self.started_first.is_empty() {
            summary.push_str(&format!("; start-first {}", list(&self.started_first)));
        }
        if !self.monitored.is_empty() {
            summary.push_str(&format!("; monitor-only {}", list(&self.monitored)));
        }
        if !self.skipped.is_empty() {
            summary.push_str(&format!("; skipped by their pre-update hook {}", list(&self.skipped)));
        }
        if !self.restarted.is_empty() {
            summary.push_str(&format!("; dependents restarted {}", list(&self.restarted)));
        }
        if !self.images_removed.is_empty() {
            let short: Vec<String> = self.images_removed.iter().map(|id| short_id(id).to_owned()).collect();
            summary.push_str(&format!("; old image(s) removed {}", list(&short)));
        }
        for warning in &self.warnings {
            summary.push_str("; warning: ");
            summary.push_str(warning);
        }
        summary
    }
}

/// One container a refresh could not bring onto the new image.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ContainerFailure {
    pub container: String,
    /// The step that failed (`create`, `stop old`, `rename new`, `start new`, `verify`,
    /// `remove`, ...).
    pub step: &'static str,
    pub message: String,
    /// What the rollback did: the old container running again under its name, or why not.
    pub rollback: String,
}

impl fmt::Display for ContainerFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "container {}: {} failed: {}; {}",
            self.container, self.step, self.message, self.rollback
        )
    }
}

/// Why a Docker refresh failed.
#[derive(Clone, Debug, thiserror::Error)]
pub enum DockerError {
    #[error(
        "Docker Engine not reachable at {endpoint}: {reason}; expected a running daemon (set DOCKER_HOST or the Docker endpoint option)"
    )]
    Unreachable { endpoint: String, reason: String },
    #[error("no pull credentials for {host}: {source}")]
    Auth {
        host: RegistryHost,
        #[source]
        source: AuthError,
    },
    #[error("pulling {image} failed: {message}")]
    Pull { image: String, message: String },
    #[error("Docker Engine API call {what} failed: {message}")]
    Api { what: String, message: String },
    #[error("{image} pulled, but {} container(s) were not refreshed: {}", failures.len(), failures.iter().map(ToString::to_string).collect::<Vec<_>>().join("; "))]
    Containers {
        image: String,
        failures: Vec<ContainerFailure>,
        /// What did succeed.
        done: Box<DockerOutcome>,
    },
}

/// The Docker refresher.
#[derive(Clone)]
pub struct DockerRefresher {
    docker: Docker,
    endpoint: String,
    auth: Arc<dyn EngineAuthSource>,
    config: DockerConfig,
}

impl fmt::Debug for DockerRefresher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DockerRefresher")
            .field("endpoint", &self.endpoint)
            .field("mode", &self.config.mode)
            .field("filter", &self.config.filter)
            .finish_non_exhaustive()
    }
}

impl DockerRefresher {
    /// Connects to the engine and agrees on an API version (bollard asks for a newer one than
    /// many engines speak). Fails with [`DockerError::Unreachable`] when there is no engine.
    pub async fn connect(
        config: DockerConfig,
        auth: Arc<dyn EngineAuthSource>,
    ) -> Result<DockerRefresher, DockerError> {
        let (docker, endpoint) = connect_engine(config.endpoint.as_deref(), config.api_timeout)
            .await
            .map_err(|(endpoint, reason)| DockerError::Unreachable { endpoint, reason })?;
        info!(endpoint = %endpoint, api_version = %docker.client_version(), mode = %config.mode, "Docker Engine connected");
        Ok(DockerRefresher {
            docker,
            endpoint,
            auth,
            config,
        })
    }

    /// The engine client, for callers that inspect what a refresh did.
    pub fn docker(&self) -> &Docker {
        &self.docker
    }

    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    /// Pulls `image` with its host's credentials, reading the progress stream to the end (the
    /// engine answers 200 and reports a failed pull inside the stream). Answers the image ID.
    pub async fn pull(&self, image: &ImageReference) -> Result<String, DockerError> {
        let host = image.host();
        let auth = self
            .auth
            .registry_auth(host)
            .await
            .map_err(|source| DockerError::Auth {
                host: host.clone(),
                source,
            })?;
        let name = format!("{}/{}", host, image.repository());
        let tag = image.tag().map_or("latest", |tag| tag.as_str());
        let options = CreateImageOptionsBuilder::new().from_image(&name).tag(tag).build();
        debug!(image = %image, host = %host, authenticated = auth.is_some(), "pulling");
        let docker = match auth.clone() {
            Some(header) => with_registry_auth(&self.docker, header),
            None => self.docker.clone(),
        };
        let mut stream = docker.create_image(Some(options), None, None);
        let mut failure: Option<String> = None;
        let mut last_status = String::new();
        let read_to_end = async {
            while let Some(item) = stream.next().await {
                match item {
                    Ok(info) => {
                        if let Some(detail) = info.error_detail.and_then(|detail| detail.message) {
                            failure.get_or_insert(detail);
                        }
                        if let Some(status) = info.status {
                            last_status = status;
                        }
                    }
                    Err(BollardError::DockerStreamError { error }) => {
                        failure.get_or_insert(error);
                    }
                    Err(error) => {
                        failure.get_or_insert(describe(&error));
                    }
                }
            }
        };
        if tokio::time::timeout(self.config.pull_timeout, read_to_end)
            .await
            .is_err()
        {
            failure.get_or_insert(format!(
                "the pull did not finish within {}s",
                self.config.pull_timeout.as_secs()
            ));
        }
        if let Some(message) = failure {
            return Err(DockerError::Pull {
                image: image.to_string(),
                message,
            });
        }
        let pulled = image.name_and_tag();
        let inspected = self.docker.inspect_image(&pulled).await.map_err(|e| DockerError::Api {
            what: format!("inspect image {pulled}"),
            message: describe(&e),
        })?;
        let id = inspected.id.unwrap_or_default();
        info!(image = %image, image_id = %short_id(&id), status = %last_status, "pulled");
        Ok(id)
    }

    /// Pulls `image` and brings every matching container onto it.
    pub async fn refresh_image(&self, image: &ImageReference) -> Result<DockerOutcome, DockerError> {
        let image_id = self.pull(image).await?;
        let mut outcome = DockerOutcome {
            image_id: image_id.clone(),
            ..DockerOutcome::default()
        };
        let mut failures = Vec::new();
        // Compose services recreated, per project: their dependents restart afterwards.
        let mut recreated_services: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        for container in self.containers_of(image).await? {
            let name = container_name(&container);
            if container.image.as_deref() == Some(image_id.as_str()) {
                debug!(container = %name, "already on the pulled image");
                outcome.up_to_date.push(name);
                continue;
            }
            let labels = container.config.as_ref().and_then(|config| config.labels.as_ref());
            if labels::monitor_only(labels) {
                info!(container = %name, image = %image, "monitor-only: the move is reported, the container left alone");
                outcome.monitored.push(name);
                continue;
            }
            let mode = match labels::value(labels, &[labels::MODE]).map(str::parse::<DockerMode>) {
                None => self.config.mode,
                Some(Ok(mode)) => mode,
                Some(Err(why)) => {
                    let failure = ContainerFailure {
                        container: name.clone(),
                        step: "check",
                        message: format!("label {}: {why}", labels::MODE),
                        rollback: "the container was not touched".into(),
                    };
                    warn!(container = %name, error = %failure.message, "container not refreshed");
                    failures.push(failure);
                    continue;
                }
            };
            let was_running = container
                .state
                .as_ref()
                .and_then(|state| state.running)
                .unwrap_or(false);
            if was_running && let Some(command) = Hook::PreUpdate.command(labels) {
                match hooks::run(&self.docker, &name, Hook::PreUpdate, &command, self.config.hook_timeout).await {
                    HookResult::Succeeded => debug!(container = %name, "pre-update hook succeeded"),
                    HookResult::AskedToSkip(why) => {
                        info!(container = %name, reason = %why, "update skipped by the pre-update hook");
                        outcome.skipped.push(format!("{name}: {why}"));
                        continue;
                    }
                    HookResult::Failed(why) => {
                        let failure = ContainerFailure {
                            container: name.clone(),
                            step: "pre-update hook",
                            message: why,
                            rollback: "update skipped; the container was not touched".into(),
                        };
                        warn!(container = %name, error = %failure.message, "container not refreshed");
                        failures.push(failure);
                        continue;
                    }
                }
            }
            let result = match mode {
                DockerMode::Recreate => self.recreate(&container, &mut outcome).await,
                DockerMode::Remove => self.remove(&name).await,
            };
            if result.is_ok() && mode == DockerMode::Recreate && was_running {
                self.post_update(&name, &mut outcome).await;
                if let Some((project, service)) = compose::project_service(labels) {
                    recreated_services.entry(project).or_default().insert(service);
                }
            }
            match (result, mode) {
                (Ok(()), DockerMode::Recreate) => outcome.recreated.push(name),
                (Ok(()), DockerMode::Remove) => outcome.removed.push(name),
                (Err(failure), _) => {
                    warn!(container = %failure.container, step = failure.step, error = %failure.message, rollback = %failure.rollback, "container not refreshed");
                    failures.push(failure);
                }
            }
        }
        for (project, services) in &recreated_services {
            self.restart_dependents(project, services, &mut outcome).await;
        }
        if self.config.cleanup {
            self.clean_up(&mut outcome).await;
        }
        if failures.is_empty() {
            Ok(outcome)
        } else {
            Err(DockerError::Containers {
                image: image.to_string(),
                failures,
                done: Box::new(outcome),
            })
        }
    }

    /// Restarts the running containers of `project` that depend on `services` (directly or
    /// not), each after what it depends on. Only containers the filter lets through are
    /// touched; a failed restart is a warning.
    async fn restart_dependents(&self, project: &str, services: &BTreeSet<String>, outcome: &mut DockerOutcome) {
        let filters = HashMap::from([("label", vec![format!("{}={project}", compose::PROJECT)])]);
        let options = ListContainersOptionsBuilder::new().filters(&filters).build();
        let members: Vec<compose::Member> = match self.docker.list_containers(Some(options)).await {
            Ok(containers) => containers
                .into_iter()
                .filter_map(|summary| {
                    let name = summary
                        .names
                        .as_ref()
                        .and_then(|names| names.first())
                        .map(|name| name.trim_start_matches('/').to_owned())?;
                    if name.contains(ASIDE_MARK) || name.contains(NEW_MARK) {
                        return None;
                    }
                    let labels = summary.labels.as_ref();
                    if !self.config.filter.matches(&name, labels) || labels::monitor_only(labels) {
                        return None;
                    }
                    let (_, service) = compose::project_service(labels)?;
                    Some(compose::Member {
                        name,
                        service,
                        depends_on: compose::depends_on(labels),
                    })
                })
                .collect(),
            Err(e) => {
                outcome.warnings.push(format!(
                    "dependents of {project} not restarted: containers could not be listed: {}",
                    describe(&e)
                ));
                return;
            }
        };
        let seconds = i32::try_from(self.config.stop_timeout.as_secs()).unwrap_or(i32::MAX);
        for name in compose::dependents_in_order(services, &members) {
            let options = RestartContainerOptionsBuilder::new().t(seconds).build();
            match self.docker.restart_container(&name, Some(options)).await {
                Ok(()) => {
                    info!(container = %name, project = %project, "restarted: it depends on a recreated service");
                    outcome.restarted.push(name);
                }
                Err(e) => {
                    warn!(container = %name, error = %describe(&e), "dependent not restarted");
                    outcome.warnings.push(format!(
                        "{name} depends on a recreated service but was not restarted: {}",
                        describe(&e)
                    ));
                }
            }
        }
    }

    /// Runs the new container's post-update hook, if its labels have one; a failure is a
    /// warning, since the new container serves already.
    async fn post_update(&self, name: &str, outcome: &mut DockerOutcome) {
        let labels = match self.docker.inspect_container(name, None).await {
            Ok(inspected) => inspected.config.and_then(|config| config.labels),
            Err(e) => {
                outcome
                    .warnings
                    .push(format!("{name}: post-update hook not run: {}", describe(&e)));
                return;
            }
        };
        let Some(command) = Hook::PostUpdate.command(labels.as_ref()) else {
            return;
        };
        match hooks::run(&self.docker, name, Hook::PostUpdate, &command, self.config.hook_timeout).await {
            HookResult::Succeeded => debug!(container = %name, "post-update hook succeeded"),
            HookResult::AskedToSkip(why) | HookResult::Failed(why) => {
                warn!(container = %name, error = %why, "post-update hook failed");
                outcome.warnings.push(format!("{name}: {why}"));
            }
        }
    }

    /// Removes each image recreated containers moved off, unless a container (of any image
    /// reference, running or not) still uses it or it still has a tag. A failure is a warning:
    /// the refresh itself succeeded.
    async fn clean_up(&self, outcome: &mut DockerOutcome) {
        let replaced: Vec<String> = outcome
            .replaced_images
            .iter()
            .filter(|id| **id != outcome.image_id)
            .cloned()
            .collect();
        if replaced.is_empty() {
            return;
        }
        let options = ListContainersOptionsBuilder::new().all(true).build();
        let in_use: Vec<String> = match self.docker.list_containers(Some(options)).await {
            Ok(containers) => containers.into_iter().filter_map(|c| c.image_id).collect(),
            Err(e) => {
                let warning = format!("cleanup skipped: containers could not be listed: {}", describe(&e));
                warn!(error = %describe(&e), "cleanup skipped");
                outcome.warnings.push(warning);
                return;
            }
        };
        for id in replaced {
            if in_use.contains(&id) {
                info!(image_id = %short_id(&id), "old image kept: a container still uses it");
                continue;
            }
            let tags = match self.docker.inspect_image(&id).await {
                Ok(image) => image.repo_tags.unwrap_or_default(),
                Err(BollardError::DockerResponseServerError { status_code: 404, .. }) => continue,
                Err(e) => {
                    outcome
                        .warnings
                        .push(format!("old image {} not inspected: {}", short_id(&id), describe(&e)));
                    continue;
                }
            };
            if !tags.is_empty() {
                info!(image_id = %short_id(&id), tags = %tags.join(","), "old image kept: still tagged");
                continue;
            }
            // Never forced: the engine itself refuses to remove an image a container needs.
            let options = RemoveImageOptionsBuilder::new().force(false).noprune(false).build();
            match self.docker.remove_image(&id, Some(options), None).await {
                Ok(_) => {
                    info!(image_id = %short_id(&id), "old image removed");
                    outcome.images_removed.push(id);
                }
                Err(e) => {
                    warn!(image_id = %short_id(&id), error = %describe(&e), "old image not removed");
                    outcome
                        .warnings
                        .push(format!("old image {} not removed: {}", short_id(&id), describe(&e)));
                }
            }
        }
    }

    /// Every container (running or not) whose configured image is `image`, after the filter,
    /// inspected. Containers parked aside by an interrupted recreate are never included.
    pub async fn containers_of(&self, image: &ImageReference) -> Result<Vec<ContainerInspectResponse>, DockerError> {
        let mut filters: HashMap<&str, Vec<String>> = HashMap::new();
        if let Some((key, value)) = &self.config.filter.label {
            filters.insert("label", vec![format!("{key}={value}")]);
        }
        let options = ListContainersOptionsBuilder::new().all(true).filters(&filters).build();
        let summaries = self
            .docker
            .list_containers(Some(options))
            .await
            .map_err(|e| DockerError::Api {
                what: "list containers".into(),
                message: describe(&e),
            })?;
        let mut matching = Vec::new();
        for summary in summaries {
            let Some(id) = summary.id else { continue };
            let name = summary
                .names
                .as_ref()
                .and_then(|names| names.first())
                .map(|name| name.trim_start_matches('/').to_owned())
                .unwrap_or_default();
            if name.contains(ASIDE_MARK) || name.contains(NEW_MARK) {
                continue;
            }
            if !self.config.filter.matches(&name, summary.labels.as_ref()) {
                continue;
            }
            let inspected = match self.docker.inspect_container(&id, None).await {
                Ok(inspected) => inspected,
                // Removed between the list and the inspect: nothing to refresh.
                Err(BollardError::DockerResponseServerError { status_code: 404, .. }) => continue,
                Err(e) => {
                    return Err(DockerError::Api {
                        what: format!("inspect container {name}"),
                        message: describe(&e),
                    });
                }
            };
            // `Config.Image` is the reference as the container was created with (the list's
            // `Image` turns into an ID once the tag moves), normalised before comparing.
            let configured = inspected
                .config
                .as_ref()
                .and_then(|config| config.image.as_deref())
                .and_then(|configured| configured.parse::<ImageReference>().ok());
            if configured.as_ref() == Some(image) {
                matching.push(inspected);
            }
        }
        Ok(matching)
    }

    async fn remove(&self, name: &str) -> Result<(), ContainerFailure> {
        self.force_remove(name).await.map_err(|e| ContainerFailure {
            container: name.to_owned(),
            step: "remove",
            message: describe(&e),
            rollback: "nothing to roll back".into(),
        })?;
        info!(container = %name, "removed for re-provisioning");
        Ok(())
    }

    /// create new (parked name), connect its networks, then in the order [`order_for`] picks:
    ///
    /// - start-first (a running container with nothing exclusive): start new beside the old ->
    ///   verify new -> rename old aside -> rename new -> stop and remove old. A failure before
    ///   the renames removes the new container; the old one never stopped.
    /// - stop-first: stop old -> rename old aside -> rename new -> start new -> verify new ->
    ///   remove old. Any failure from the stop on removes the new container, gives the old one its
    ///   name back and starts it again; the error says how long it was down.
    ///
    /// A container that was not running is only created, so there is nothing to verify.
    async fn recreate(
        &self,
        old: &ContainerInspectResponse,
        outcome: &mut DockerOutcome,
    ) -> Result<(), ContainerFailure> {
        let name = container_name(old);
        let old_id = old.id.clone().unwrap_or_default();
        let was_running = old.state.as_ref().and_then(|state| state.running).unwrap_or(false);
        let failure = |step: &'static str, message: String, rollback: String| ContainerFailure {
            container: name.clone(),
            step,
            message,
            rollback,
        };
        if old.host_config.as_ref().and_then(|host| host.auto_remove) == Some(true) {
            return Err(failure(
                "check",
                "created with --rm (AutoRemove): stopping it deletes it, so a failed recreate could not be rolled back; use mode `remove` or create it without --rm".into(),
                "the old container was not touched".into(),
            ));
        }
        let image_config = match old.image.as_deref() {
            Some(id) => self.docker.inspect_image(id).await.ok().and_then(|image| image.config),
            None => None,
        };
        if image_config.is_none() {
            warn!(container = %name, "old image not inspectable; copying its configuration whole");
        }
        let (body, extra_networks) = create_body(old, image_config.as_ref());
        let new_name = format!("{name}{NEW_MARK}{}", short_id(&old_id));
        // A leftover of an interrupted attempt on this very container is ours to replace.
        let _ = self.force_remove(&new_name).await;
        let created = self
            .docker
            .create_container(Some(CreateContainerOptionsBuilder::new().name(&new_name).build()), body)
            .await
            .map_err(|e| failure("create", describe(&e), "the old container was not touched".into()))?;
        let new_id = created.id;
        for warning in created.warnings {
            warn!(container = %name, warning = %warning, "engine warning on create");
        }
        for (network, endpoint) in extra_networks {
            let request = NetworkConnectRequest {
                container: new_id.clone(),
                endpoint_config: Some(endpoint),
            };
            if let Err(e) = self.docker.connect_network(&network, request).await {
                let rollback = self.discard(&new_id).await;
                return Err(failure(
                    "connect network",
                    format!("{network}: {}", describe(&e)),
                    rollback,
                ));
            }
        }

        let signal = labels::stop_signal(old.config.as_ref().and_then(|config| config.labels.as_ref()));
        let aside = format!("{name}{ASIDE_MARK}{}", short_id(&old_id));
        let swap = Swap {
            name: &name,
            old_id: &old_id,
            new_id: &new_id,
            aside: &aside,
            signal: signal.as_deref(),
        };
        let order = order_for(old, self.config.order);
        match (&order, was_running) {
            (Order::StartFirst, true) => {
                self.swap_start_first(&swap)
                    .await
                    .map_err(|(step, message, rollback)| failure(step, message, rollback))?;
                outcome.started_first.push(name.clone());
            }
            (Order::StopFirst(why), _) => {
                if was_running {
                    info!(container = %name, order = %why, "stopping the old container first");
                }
                self.swap_stop_first(&swap, was_running, why)
                    .await
                    .map_err(|(step, message, rollback)| failure(step, message, rollback))?;
            }
            (Order::StartFirst, false) => {
                self.swap_stop_first(&swap, false, "not running")
                    .await
                    .map_err(|(step, message, rollback)| failure(step, message, rollback))?;
            }
        }
        if let Err(e) = self.force_remove(&old_id).await {
            let warning = format!(
                "{name} runs the new image, but the old container {aside} could not be removed: {}",
                describe(&e)
            );
            warn!(container = %name, old = %aside, error = %describe(&e), "old container left behind");
            outcome.warnings.push(warning);
        }
        if let Some(image) = old.image.as_deref()
            && !outcome.replaced_images.iter().any(|known| known == image)
        {
            outcome.replaced_images.push(image.to_owned());
        }
        let order = if was_running {
            order.to_string()
        } else {
            "created, not started".into()
        };
        info!(container = %name, old_id = %short_id(&old_id), new_id = %short_id(&new_id), started = was_running, order = %order, "recreated on the new image");
        Ok(())
    }

    /// The new container is started beside the running old one and proven before anything
    /// happens to the old one, so a new image that fails costs no outage.
    async fn swap_start_first(&self, swap: &Swap<'_>) -> Result<(), StepFailure> {
        let Swap {
            name,
            old_id,
            new_id,
            aside,
            signal,
        } = *swap;
        let untouched = |discarded: String| {
            if discarded.starts_with("the new container was removed") {
                ROLLED_BACK_START_FIRST.to_owned()
            } else {
                format!("{discarded}; start-first: the old container kept running throughout")
            }
        };
        if let Err(e) = self.docker.start_container(new_id, None).await {
            return Err(("start new", describe(&e), untouched(self.discard(new_id).await)));
        }
        if let Err(why) = self.verify(name, new_id).await {
            if let Err(e) = self.stop(new_id, None).await {
                debug!(container = %name, error = %describe(&e), "stopping the unproven new container");
            }
            return Err(("verify", why, untouched(self.discard(new_id).await)));
        }
        if let Err(e) = self.rename(old_id, aside).await {
            if let Err(stop) = self.stop(new_id, None).await {
                debug!(container = %name, error = %describe(&stop), "stopping the unused new container");
            }
            return Err(("rename old aside", e, untouched(self.discard(new_id).await)));
        }
        if let Err(e) = self.rename(new_id, name).await {
            let mut rollback = untouched(self.discard(new_id).await);
            if let Err(back) = self.rename(old_id, name).await {
                rollback = format!("ROLLBACK INCOMPLETE (renaming {aside} back to {name}: {back}); {rollback}");
            }
            return Err(("rename new", e, rollback));
        }
        // The new container serves now; the old one gets its graceful stop before removal.
        if let Err(e) = self.stop(old_id, signal).await {
            debug!(container = %name, error = %describe(&e), "stopping the old container; it is removed by force");
        }
        Ok(())
    }

    /// The old container is stopped before the new one starts (see [`order_for`] for when). On
    /// a failure the old one is put back, and the error says how long it was down: what each
    /// retry of a broken image costs this container.
    async fn swap_stop_first(&self, swap: &Swap<'_>, was_running: bool, why: &str) -> Result<(), StepFailure> {
        let Swap {
            name,
            old_id,
            new_id,
            aside,
            signal,
        } = *swap;
        let stopped_at = Instant::now();
        let cost = |rollback: String| {
            if was_running {
                format!(
                    "{rollback}; stop-first ({why}): this attempt kept it down for {:.1}s",
                    stopped_at.elapsed().as_secs_f64()
                )
            } else {
                rollback
            }
        };
        if was_running && let Err(e) = self.stop(old_id, signal).await {
            let rollback = self.roll_back(new_id, old_id, None, name, was_running).await;
            return Err(("stop old", describe(&e), cost(rollback)));
        }
        if let Err(e) = self.rename(old_id, aside).await {
            let rollback = self.roll_back(new_id, old_id, None, name, was_running).await;
            return Err(("rename old aside", e, cost(rollback)));
        }
        if let Err(e) = self.rename(new_id, name).await {
            let rollback = self.roll_back(new_id, old_id, Some(aside), name, was_running).await;
            return Err(("rename new", e, cost(rollback)));
        }
        if was_running && let Err(e) = self.docker.start_container(new_id, None).await {
            let rollback = self.roll_back(new_id, old_id, Some(aside), name, was_running).await;
            return Err(("start new", describe(&e), cost(rollback)));
        }
        if was_running && let Err(why) = self.verify(name, new_id).await {
            // A graceful stop first, so the new container's process can shut down cleanly; the
            // forced remove of the rollback covers a stop that fails.
            if let Err(e) = self.stop(new_id, None).await {
                debug!(container = %name, error = %describe(&e), "stopping the unproven new container");
            }
            let rollback = self.roll_back(new_id, old_id, Some(aside), name, was_running).await;
            return Err(("verify", why, cost(rollback)));
        }
        Ok(())
    }

    /// Watches the just started container `new_id` until it has proven itself (see
    /// [`judge`]). Answers why not: how it went down with its last log lines, or what its
    /// health check said.
    async fn verify(&self, name: &str, new_id: &str) -> Result<(), String> {
        let started = Instant::now();
        debug!(container = %name, settle_ms = self.config.settle.as_millis(), "verifying the new container");
        loop {
            let elapsed = started.elapsed();
            let inspected = self
                .docker
                .inspect_container(new_id, None)
                .await
                .map_err(|e| format!("the new container could not be inspected: {}", describe(&e)))?;
            match judge(&inspected, elapsed, self.config.settle, self.config.health_timeout) {
                Verdict::Wait => tokio::time::sleep(VERIFY_POLL).await,
                Verdict::Proven { health } => {
                    info!(container = %name, elapsed_ms = elapsed.as_millis(), health = health.map_or("none".into(), |h| h.to_string()), "new container proven");
                    return Ok(());
                }
                Verdict::Down(why) => return Err(format!("the new container {why}; {}", self.log_tail(new_id).await)),
                Verdict::Unhealthy(why) => return Err(format!("the new container {why}")),
            }
        }
    }

    /// The last [`LOG_TAIL_LINES`] lines the container wrote, for an error message.
    async fn log_tail(&self, id: &str) -> String {
        let options = LogsOptionsBuilder::new()
            .stdout(true)
            .stderr(true)
            .tail(&LOG_TAIL_LINES.to_string())
            .build();
        let mut stream = self.docker.logs(id, Some(options));
        let mut text = String::new();
        let read = async {
            while let Some(item) = stream.next().await {
                match item {
                    Ok(output) => text.push_str(&output.to_string()),
                    Err(e) => return Err(describe(&e)),
                }
            }
            Ok(())
        };
        match tokio::time::timeout(self.config.api_timeout, read).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => return format!("its logs could not be read: {e}"),
            Err(_) => return "its logs could not be read in time".into(),
        }
        let lines: Vec<&str> = text.lines().map(str::trim_end).filter(|l| !l.is_empty()).collect();
        if lines.is_empty() {
            "it wrote no log output".into()
        } else {
            let start = lines.len().saturating_sub(LOG_TAIL_LINES);
            format!("its last log lines: {}", clip_front(&lines[start..].join(" | ")))
        }
    }

    /// Removes `container`, stopping it first if it runs.
    async fn force_remove(&self, container: &str) -> Result<(), BollardError> {
        let options = RemoveContainerOptionsBuilder::new().force(true).build();
        self.docker.remove_container(container, Some(options)).await
    }

    /// Stops `container` with `signal` (else its own stop signal), killing it after the
    /// configured stop timeout.
    async fn stop(&self, container: &str, signal: Option<&str>) -> Result<(), BollardError> {
        let seconds = i32::try_from(self.config.stop_timeout.as_secs()).unwrap_or(i32::MAX);
        let mut options = StopContainerOptionsBuilder::new().t(seconds);
        if let Some(signal) = signal {
            options = options.signal(signal);
        }
        self.docker.stop_container(container, Some(options.build())).await
    }

    async fn rename(&self, container: &str, to: &str) -> Result<(), String> {
        self.docker
            .rename_container(container, RenameContainerOptionsBuilder::new().name(to).build())
            .await
            .map_err(|e| describe(&e))
    }

    async fn discard(&self, new_id: &str) -> String {
        match self.force_remove(new_id).await {
            Ok(()) => "the new container was removed; the old one was not touched".into(),
            Err(e) => format!(
                "the half-made container {} could not be removed: {}",
                short_id(new_id),
                describe(&e)
            ),
        }
    }

    /// Puts the old container back: the new one removed, the old one renamed back (when it was
    /// renamed) and started (when it was running). Answers what happened, for the error.
    async fn roll_back(
        &self,
        new_id: &str,
        old_id: &str,
        renamed_to: Option<&str>,
        name: &str,
        was_running: bool,
    ) -> String {
        let mut problems = Vec::new();
        if let Err(e) = self.force_remove(new_id).await {
            problems.push(format!("removing the new container: {}", describe(&e)));
        }
        if let Some(aside) = renamed_to
            && let Err(e) = self.rename(old_id, name).await
        {
            problems.push(format!("renaming {aside} back to {name}: {e}"));
        }
        if was_running {
            // Starting a running container is a no-op (304), so this also covers a stop that
            // failed half-way.
            match self.docker.start_container(old_id, None).await {
                Ok(()) | Err(BollardError::DockerResponseServerError { status_code: 304, .. }) => {}
                Err(e) => problems.push(format!("restarting the old container: {}", describe(&e))),
            }
        }
        if problems.is_empty() {
            if was_running {
                "rolled back: the old container runs again under its name".into()
            } else {
                "rolled back: the old container keeps its name".into()
            }
        } else {
            format!("ROLLBACK INCOMPLETE ({})", problems.join("; "))
        }
    }
}

#[async_trait]
impl Refresher for DockerRefresher {
    fn name(&self) -> &'static str {
        "docker"
    }

    async fn refresh(&self, event: &RefreshEvent) -> Result<RefreshOutcome, RefreshError> {
        match self.refresh_image(&event.image).await {
            Ok(outcome) => Ok(RefreshOutcome::new(outcome.summary())),
            Err(error) => Err(RefreshError::new(error.to_string())),
        }
    }
}

/// Connects to the engine at `endpoint` (`unix://`, a socket path, `tcp://` or `http://`;
/// `None` is [`DEFAULT_DOCKER_SOCKET`]) and agrees on an API version (bollard asks for a newer
/// one than many engines speak). Shared by every refresher that talks to the engine; on failure,
/// the endpoint and why.
pub(crate) async fn connect_engine(
    endpoint: Option<&str>,
    api_timeout: Duration,
) -> Result<(Docker, String), (String, String)> {
    let endpoint = endpoint.unwrap_or(DEFAULT_DOCKER_SOCKET).to_owned();
    let timeout = api_timeout.as_secs().max(1);
    let connected = if endpoint.starts_with("tcp://") || endpoint.starts_with("http://") {
        Docker::connect_with_http(&endpoint, timeout, bollard::API_DEFAULT_VERSION)
    } else {
        let path = endpoint.strip_prefix("unix://").unwrap_or(&endpoint);
        if !std::path::Path::new(path).exists() {
            return Err((endpoint.clone(), format!("no socket at {path}")));
        }
        Docker::connect_with_socket(path, timeout, bollard::API_DEFAULT_VERSION)
    };
    let docker = match connected {
        Ok(docker) => docker,
        Err(e) => return Err((endpoint, e.to_string())),
    };
    match docker.negotiate_version().await {
        Ok(docker) => Ok((docker, endpoint)),
        Err(e) => Err((endpoint, e.to_string())),
    }
}

/// A client for one request that carries `header` as its `X-Registry-Auth`, byte for byte: the
/// payload the wiring built (and `imagewatch auth-header` prints), not a re-encoding of it.
pub(crate) fn with_registry_auth(docker: &Docker, header: Secret) -> Docker {
    docker.clone().with_request_modifier(move |mut request| {
        if let Ok(value) = header.expose().parse() {
            request.headers_mut().insert("X-Registry-Auth", value);
        }
        request
    })
}

fn container_name(container: &ContainerInspectResponse) -> String {
    container
        .name
        .as_deref()
        .map(|name| name.trim_start_matches('/').to_owned())
        .or_else(|| container.id.as_deref().map(|id| short_id(id).to_owned()))
        .unwrap_or_default()
}

fn short_id(id: &str) -> &str {
    let id = id.strip_prefix("sha256:").unwrap_or(id);
    &id[..id.len().min(12)]
}

fn list(names: &[String]) -> String {
    if names.is_empty() {
        "0".into()
    } else {
        format!("{} ({})", names.len(), names.join(", "))
    }
}

/// A bollard error in one line, without bollard's `Debug`.
fn describe(error: &BollardError) -> String {
    match error {
        BollardError::DockerResponseServerError { status_code, message } => format!("HTTP {status_code}: {message}"),
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rstest::rstest;

    #[rstest]
    #[case::no_filter(None, None, "anything", &[], true)]
    #[case::prefix_match(Some("ws-"), None, "ws-1", &[], true)]
    #[case::prefix_miss(Some("ws-"), None, "db", &[], false)]
    #[case::label_match(None, Some(("role", "ws")), "x", &[("role", "ws")], true)]
    #[case::label_other_value(None, Some(("role", "ws")), "x", &[("role", "db")], false)]
    #[case::label_missing(None, Some(("role", "ws")), "x", &[], false)]
    fn filter_narrows_by_name_prefix_and_label(
        #[case] prefix: Option<&str>,
        #[case] label: Option<(&str, &str)>,
        #[case] name: &str,
        #[case] labels: &[(&str, &str)],
        #[case] expected: bool,
    ) {
        let filter = ContainerFilter {
            name_prefix: prefix.map(str::to_owned),
            label: label.map(|(k, v)| (k.to_owned(), v.to_owned())),
            opt_in: false,
        };
        let labels: HashMap<String, String> = labels.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect();
        assert_eq!(filter.matches(name, Some(&labels)), expected);
    }

    #[rstest]
    #[case("role=ws", Some(("role", "ws")))]
    #[case("a=b=c", Some(("a", "b=c")))]
    #[case("novalue", None)]
    #[case("=x", None)]
    fn label_filter_parses(#[case] input: &str, #[case] expected: Option<(&str, &str)>) {
        assert_eq!(
            ContainerFilter::parse_label(input).ok(),
            expected.map(|(k, v)| (k.to_owned(), v.to_owned()))
        );
    }

    #[tokio::test]
    async fn missing_socket_is_a_clear_error() {
        let config = DockerConfig {
            endpoint: Some("unix:///nonexistent/docker.sock".into()),
            ..DockerConfig::default()
        };
        let error = DockerRefresher::connect(config, Arc::new(registry_core::AnonymousPulls))
            .await
            .expect_err("no engine there");
        let message = error.to_string();
        assert!(
            message.contains("Docker Engine not reachable at unix:///nonexistent/docker.sock"),
            "{message}"
        );
    }
}
