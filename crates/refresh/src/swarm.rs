//! The Swarm refresher: tells each Swarm service that runs the moved tag its new digest
//! (`<repo>:<tag>@<digest>`) through the Engine API, with the host's `X-Registry-Auth` so the
//! nodes can pull, and reports what the orchestrator did with it. Swarm does the rolling update
//! itself (parallelism, delay, monitor, `failure_action`, health checks); this module never
//! starts, stops or replaces a task of its own.
//!
//! A service keeps its own `UpdateConfig`; one without any gets a safe one (one task at a time,
//! roll back on failure, start-first unless a host-mode published port forbids two tasks side by
//! side). A service whose image names a digest and no tag was pinned by its operator: it is
//! reported and left alone.

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use bollard::Docker;
use bollard::errors::Error as BollardError;
use bollard::models::{
    EndpointPortConfigPublishModeEnum, Service, ServiceSpec, ServiceSpecUpdateConfig,
    ServiceSpecUpdateConfigFailureActionEnum, ServiceSpecUpdateConfigOrderEnum, ServiceUpdateStatusStateEnum, Task,
    TaskState,
};
use bollard::query_parameters::{ListServicesOptionsBuilder, ListTasksOptionsBuilder, UpdateServiceOptionsBuilder};
use registry_core::{Digest, EngineAuthSource, ImageReference};
use tracing::{debug, info, warn};
use watcher::{RefreshError, RefreshEvent, RefreshOutcome, Refresher};

use crate::docker::{connect_engine, with_registry_auth};

/// The update configuration given to a service that has none: one task at a time, each watched
/// for [`DEFAULT_MONITOR`], rolled back by Swarm when one fails.
pub const DEFAULT_MONITOR: Duration = Duration::from_secs(5);

/// Which services of the image are touched, beyond their image naming the watched tag.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ServiceFilter {
    /// Only services whose name starts with this.
    pub name_prefix: Option<String>,
    /// Only services carrying this label with this value.
    pub label: Option<(String, String)>,
}

impl ServiceFilter {
    fn matches(&self, name: &str, labels: Option<&HashMap<String, String>>) -> bool {
        let name_ok = self
            .name_prefix
            .as_deref()
            .is_none_or(|prefix| name.starts_with(prefix));
        let label_ok = self.label.as_ref().is_none_or(|(key, value)| {
            labels
                .and_then(|labels| labels.get(key))
                .is_some_and(|found| found == value)
        });
        name_ok && label_ok
    }
}

/// How the Swarm refresher works.
#[derive(Clone, Debug)]
pub struct SwarmConfig {
    /// A manager's Engine API: `unix:///path`, a socket path, `tcp://host:port` or
    /// `http://host:port`; `None` is [`crate::DEFAULT_DOCKER_SOCKET`].
    pub endpoint: Option<String>,
    pub filter: ServiceFilter,
    /// Per-request timeout of the Engine API.
    pub api_timeout: Duration,
    /// How long one service's rolling update (or Swarm's rollback of it) may take to settle.
    pub converge_timeout: Duration,
    /// How often a service is inspected while it updates.
    pub poll: Duration,
    /// The monitor period of the update configuration given to services that have none.
    pub default_monitor: Duration,
}

impl Default for SwarmConfig {
    fn default() -> SwarmConfig {
        SwarmConfig {
            endpoint: None,
            filter: ServiceFilter::default(),
            api_timeout: Duration::from_secs(120),
            converge_timeout: Duration::from_secs(600),
            poll: Duration::from_millis(500),
            default_monitor: DEFAULT_MONITOR,
        }
    }
}

/// What a Swarm refresh did to the services that match.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SwarmOutcome {
    /// Services whose rolling update to the new digest completed.
    pub refreshed: Vec<String>,
    /// Services already on the new digest: left alone.
    pub up_to_date: Vec<String>,
    /// Services pinned to a digest by their operator (no tag): reported, left alone.
    pub pinned: Vec<String>,
}

impl SwarmOutcome {
    pub fn summary(&self) -> String {
        format!(
            "swarm: refreshed {}, already current {}, pinned by their operator (left alone) {}",
            list(&self.refreshed),
            list(&self.up_to_date),
            list(&self.pinned)
        )
    }
}

/// How one service's update ended, when it did not complete.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServiceFailure {
    pub service: String,
    /// `rolled_back` (Swarm put the previous spec back), `failed` (paused, rejected or an
    /// Engine API error) or `timed_out`.
    pub result: &'static str,
    pub message: String,
    /// The distinct errors of the tasks that failed during the update.
    pub task_errors: Vec<String>,
}

impl fmt::Display for ServiceFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "service {}: {}: {}", self.service, self.result, self.message)?;
        if !self.task_errors.is_empty() {
            write!(f, "; task errors: {}", self.task_errors.join(" | "))?;
        }
        Ok(())
    }
}

/// Why a Swarm refresh failed.
#[derive(Clone, Debug, thiserror::Error)]
pub enum SwarmError {
    #[error("Docker Engine not reachable at {endpoint}: {reason}; expected a Swarm manager's Engine API")]
    Unreachable { endpoint: String, reason: String },
    #[error("Docker Engine API call {what} failed: {message}")]
    Api { what: String, message: String },
    #[error("{image}: {} service(s) not refreshed: {}", failures.len(), failures.iter().map(ToString::to_string).collect::<Vec<_>>().join("; "))]
    Services {
        image: String,
        failures: Vec<ServiceFailure>,
        /// What did succeed.
        done: Box<SwarmOutcome>,
    },
}

impl SwarmError {
    /// Whether Swarm rolled back every service that did not complete.
    pub fn rolled_back(&self) -> bool {
        matches!(self, SwarmError::Services { failures, .. } if failures.iter().all(|f| f.result == "rolled_back"))
    }
}

/// The Swarm refresher.
#[derive(Clone)]
pub struct SwarmRefresher {
    docker: Docker,
    endpoint: String,
    auth: Arc<dyn EngineAuthSource>,
    config: SwarmConfig,
}

impl fmt::Debug for SwarmRefresher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SwarmRefresher")
            .field("endpoint", &self.endpoint)
            .field("filter", &self.config.filter)
            .finish_non_exhaustive()
    }
}

/// A service's image as its spec names it.
enum ServiceImage {
    /// The watched tag, at this digest if the spec names one.
    Tagged(Option<Digest>),
    /// The watched repository at a digest with no tag: the operator's pin.
    Pinned,
    /// Another image.
    Other,
}

fn classify(spec_image: &str, watched: &ImageReference) -> ServiceImage {
    let Ok(reference) = spec_image.parse::<ImageReference>() else {
        return ServiceImage::Other;
    };
    if reference.host() != watched.host() || reference.repository() != watched.repository() {
        return ServiceImage::Other;
    }
    match (reference.tag(), reference.digest()) {
        (None, Some(_)) => ServiceImage::Pinned,
        (Some(tag), digest) if Some(tag) == watched.tag() => ServiceImage::Tagged(digest.cloned()),
        _ => ServiceImage::Other,
    }
}

/// The spec to send: the new image, and a safe update configuration if there is none.
fn updated_spec(mut spec: ServiceSpec, image: &str, default_monitor: Duration) -> ServiceSpec {
    let host_ports = spec
        .endpoint_spec
        .as_ref()
        .and_then(|endpoint| endpoint.ports.as_ref())
        .is_some_and(|ports| {
            ports
                .iter()
                .any(|port| port.publish_mode == Some(EndpointPortConfigPublishModeEnum::HOST))
        });
    if let Some(container) = spec
        .task_template
        .as_mut()
        .and_then(|template| template.container_spec.as_mut())
    {
        container.image = Some(image.to_owned());
    }
    if spec.update_config.is_none() {
        spec.update_config = Some(ServiceSpecUpdateConfig {
            parallelism: Some(1),
            delay: Some(0),
            failure_action: Some(ServiceSpecUpdateConfigFailureActionEnum::ROLLBACK),
            monitor: Some(i64::try_from(default_monitor.as_nanos()).unwrap_or(i64::MAX)),
            max_failure_ratio: Some(0.0),
            // Two tasks of one slot cannot bind the same host port at once.
            order: Some(if host_ports {
                ServiceSpecUpdateConfigOrderEnum::STOP_FIRST
            } else {
                ServiceSpecUpdateConfigOrderEnum::START_FIRST
            }),
        });
    }
    spec
}

impl SwarmRefresher {
    /// Connects to the engine (a Swarm manager) and agrees on an API version.
    pub async fn connect(config: SwarmConfig, auth: Arc<dyn EngineAuthSource>) -> Result<SwarmRefresher, SwarmError> {
        let (docker, endpoint) = connect_engine(config.endpoint.as_deref(), config.api_timeout)
            .await
            .map_err(|(endpoint, reason)| SwarmError::Unreachable { endpoint, reason })?;
        info!(endpoint = %endpoint, api_version = %docker.client_version(), "Docker Engine connected for Swarm services");
        Ok(SwarmRefresher {
            docker,
            endpoint,
            auth,
            config,
        })
    }

    /// Moves every matching service of `image` to `digest` and waits for each to settle.
    pub async fn refresh_services(&self, image: &ImageReference, digest: &Digest) -> Result<SwarmOutcome, SwarmError> {
        let services = self.services().await?;
        let mut outcome = SwarmOutcome::default();
        let mut failures = Vec::new();
        let target = format!("{}@{digest}", image.name_and_tag());
        for service in services {
            let name = service_name(&service);
            let Some(spec_image) = spec_image(&service) else {
                continue;
            };
            if !self
                .config
                .filter
                .matches(&name, service.spec.as_ref().and_then(|s| s.labels.as_ref()))
            {
                continue;
            }
            match classify(&spec_image, image) {
                ServiceImage::Other => continue,
                ServiceImage::Pinned => {
                    warn!(service = %name, image = %spec_image, "service pinned to a digest by its operator; left alone");
                    outcome.pinned.push(name);
                }
                ServiceImage::Tagged(Some(current)) if &current == digest => {
                    debug!(service = %name, "already on the new digest");
                    outcome.up_to_date.push(name);
                }
                ServiceImage::Tagged(_) => match self.update(&service, &name, &target).await {
                    Ok(()) => outcome.refreshed.push(name),
                    Err(failure) => {
                        warn!(service = %failure.service, result = failure.result, error = %failure.message, "service not refreshed");
                        failures.push(failure);
                    }
                },
            }
        }
        if failures.is_empty() {
            Ok(outcome)
        } else {
            Err(SwarmError::Services {
                image: image.to_string(),
                failures,
                done: Box::new(outcome),
            })
        }
    }

    async fn services(&self) -> Result<Vec<Service>, SwarmError> {
        let mut filters: HashMap<&str, Vec<String>> = HashMap::new();
        if let Some((key, value)) = &self.config.filter.label {
            filters.insert("label", vec![format!("{key}={value}")]);
        }
        let options = ListServicesOptionsBuilder::new().filters(&filters).build();
        self.docker
            .list_services(Some(options))
            .await
            .map_err(|e| SwarmError::Api {
                what: "list services".into(),
                message: describe(&e),
            })
    }

    /// Sends the new spec, then waits until Swarm reports the update completed (every task
    /// running the target) or rolled back, or the timeout passes.
    async fn update(&self, service: &Service, name: &str, target: &str) -> Result<(), ServiceFailure> {
        let failure = |result: &'static str, message: String, task_errors: Vec<String>| ServiceFailure {
            service: name.to_owned(),
            result,
            message,
            task_errors,
        };
        let id = service.id.clone().unwrap_or_else(|| name.to_owned());
        let version = service.version.as_ref().and_then(|v| v.index).unwrap_or_default();
        let spec = updated_spec(
            service.spec.clone().unwrap_or_default(),
            target,
            self.config.default_monitor,
        );
        let host = target
            .parse::<ImageReference>()
            .map(|reference| reference.host().clone())
            .map_err(|e| failure("failed", e.to_string(), Vec::new()))?;
        let auth = self
            .auth
            .registry_auth(&host)
            .await
            .map_err(|e| failure("failed", format!("no pull credentials for {host}: {e}"), Vec::new()))?;
        let authenticated = auth.is_some();
        // The wiring's X-Registry-Auth value as is, for the nodes to pull with.
        let docker = match auth {
            Some(header) => with_registry_auth(&self.docker, header),
            None => self.docker.clone(),
        };
        let options = UpdateServiceOptionsBuilder::new()
            .version(i32::try_from(version).unwrap_or(i32::MAX))
            .build();
        let started = Instant::now();
        let answer = docker
            .update_service(&id, spec, options, None)
            .await
            .map_err(|e| failure("failed", format!("update refused: {}", describe(&e)), Vec::new()))?;
        for warning in answer.warnings.unwrap_or_default() {
            warn!(service = %name, warning = %warning, "engine warning on service update");
        }
        info!(service = %name, image = %target, authenticated, "service update sent; waiting for Swarm");
        loop {
            tokio::time::sleep(self.config.poll).await;
            let inspected = match self.docker.inspect_service(&id, None).await {
                Ok(inspected) => inspected,
                Err(e) => return Err(failure("failed", format!("inspect: {}", describe(&e)), Vec::new())),
            };
            let status = inspected.update_status.clone().unwrap_or_default();
            let message = status.message.clone().unwrap_or_default();
            match status.state {
                Some(ServiceUpdateStatusStateEnum::ROLLBACK_COMPLETED) => {
                    return Err(failure("rolled_back", message, self.task_errors(&id, target).await));
                }
                Some(ServiceUpdateStatusStateEnum::PAUSED | ServiceUpdateStatusStateEnum::ROLLBACK_PAUSED) => {
                    return Err(failure("failed", message, self.task_errors(&id, target).await));
                }
                Some(ServiceUpdateStatusStateEnum::COMPLETED) | None | Some(ServiceUpdateStatusStateEnum::EMPTY) => {
                    if self.converged(&inspected, &id, target).await {
                        info!(service = %name, image = %target, secs = started.elapsed().as_secs(), "service updated");
                        return Ok(());
                    }
                }
                Some(ServiceUpdateStatusStateEnum::UPDATING | ServiceUpdateStatusStateEnum::ROLLBACK_STARTED) => {}
            }
            if started.elapsed() > self.config.converge_timeout {
                return Err(failure(
                    "timed_out",
                    format!(
                        "the update did not settle within {}s (last state {:?}: {message})",
                        self.config.converge_timeout.as_secs(),
                        status.state.map(|s| s.to_string()).unwrap_or_default()
                    ),
                    self.task_errors(&id, target).await,
                ));
            }
        }
    }

    /// Every task meant to run runs the target, and as many as the service asks for.
    async fn converged(&self, service: &Service, id: &str, target: &str) -> bool {
        let Ok(tasks) = self.tasks(id).await else { return false };
        let wanted: Vec<&Task> = tasks
            .iter()
            .filter(|task| task.desired_state == Some(TaskState::RUNNING))
            .collect();
        let replicas = service
            .spec
            .as_ref()
            .and_then(|spec| spec.mode.as_ref())
            .and_then(|mode| mode.replicated.as_ref())
            .and_then(|replicated| replicated.replicas);
        let enough = replicas.is_none_or(|replicas| usize::try_from(replicas).is_ok_and(|n| wanted.len() == n));
        enough
            && wanted.iter().all(|task| {
                task_image(task) == Some(target)
                    && task.status.as_ref().and_then(|s| s.state) == Some(TaskState::RUNNING)
            })
    }

    async fn tasks(&self, id: &str) -> Result<Vec<Task>, BollardError> {
        let filters = HashMap::from([("service", vec![id.to_owned()])]);
        self.docker
            .list_tasks(Some(ListTasksOptionsBuilder::new().filters(&filters).build()))
            .await
    }

    /// The distinct errors of the target's tasks that did not keep running.
    async fn task_errors(&self, id: &str, target: &str) -> Vec<String> {
        let mut errors: Vec<String> = Vec::new();
        for task in self.tasks(id).await.unwrap_or_default() {
            let Some(status) = &task.status else { continue };
            if task_image(&task) != Some(target) {
                continue;
            }
            let failed = matches!(
                status.state,
                Some(TaskState::FAILED | TaskState::REJECTED | TaskState::COMPLETE)
            );
            let text = match (&status.err, &status.message) {
                (Some(err), _) if !err.is_empty() => err.clone(),
                (_, Some(message)) if failed => message.clone(),
                _ => continue,
            };
            if !errors.contains(&text) {
                errors.push(text);
            }
        }
        errors
    }
}

#[async_trait]
impl Refresher for SwarmRefresher {
    fn name(&self) -> &'static str {
        "swarm"
    }

    async fn refresh(&self, event: &RefreshEvent) -> Result<RefreshOutcome, RefreshError> {
        match self.refresh_services(&event.image, &event.new_digest).await {
            Ok(outcome) => Ok(RefreshOutcome::new(outcome.summary())),
            Err(error) => Err(RefreshError::new(error.to_string())),
        }
    }
}

fn service_name(service: &Service) -> String {
    service
        .spec
        .as_ref()
        .and_then(|spec| spec.name.clone())
        .or_else(|| service.id.clone())
        .unwrap_or_default()
}

fn spec_image(service: &Service) -> Option<String> {
    service
        .spec
        .as_ref()?
        .task_template
        .as_ref()?
        .container_spec
        .as_ref()?
        .image
        .clone()
}

fn task_image(task: &Task) -> Option<&str> {
    task.spec.as_ref()?.container_spec.as_ref()?.image.as_deref()
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
    use bollard::models::{EndpointPortConfig, EndpointSpec, TaskSpec, TaskSpecContainerSpec};
    use rstest::rstest;

    const D1: &str = "sha256:1111111111111111111111111111111111111111111111111111111111111111";

    #[rstest]
    #[case::tag("127.0.0.1:5000/app:latest", "tagged")]
    #[case::tag_and_digest(&format!("127.0.0.1:5000/app:latest@{D1}"), "tagged")]
    #[case::pinned(&format!("127.0.0.1:5000/app@{D1}"), "pinned")]
    #[case::other_tag("127.0.0.1:5000/app:v1", "other")]
    #[case::other_repo("127.0.0.1:5000/db:latest", "other")]
    #[case::other_host("ghcr.io/app:latest", "other")]
    #[case::garbage("Not An Image", "other")]
    fn a_service_image_is_the_watched_tag_a_pin_or_another(#[case] spec: &str, #[case] expected: &str) {
        let watched: ImageReference = "127.0.0.1:5000/app:latest".parse().expect("valid");
        let got = match classify(spec, &watched) {
            ServiceImage::Tagged(_) => "tagged",
            ServiceImage::Pinned => "pinned",
            ServiceImage::Other => "other",
        };
        assert_eq!(got, expected);
    }

    fn spec(mode: Option<EndpointPortConfigPublishModeEnum>, update: Option<ServiceSpecUpdateConfig>) -> ServiceSpec {
        ServiceSpec {
            task_template: Some(TaskSpec {
                container_spec: Some(TaskSpecContainerSpec {
                    image: Some("old".into()),
                    ..TaskSpecContainerSpec::default()
                }),
                ..TaskSpec::default()
            }),
            endpoint_spec: mode.map(|mode| EndpointSpec {
                ports: Some(vec![EndpointPortConfig {
                    target_port: Some(80),
                    published_port: Some(8080),
                    publish_mode: Some(mode),
                    ..EndpointPortConfig::default()
                }]),
                ..EndpointSpec::default()
            }),
            update_config: update,
            ..ServiceSpec::default()
        }
    }

    #[rstest]
    #[case::no_ports(None, ServiceSpecUpdateConfigOrderEnum::START_FIRST)]
    #[case::ingress_port(
        Some(EndpointPortConfigPublishModeEnum::INGRESS),
        ServiceSpecUpdateConfigOrderEnum::START_FIRST
    )]
    #[case::host_port(
        Some(EndpointPortConfigPublishModeEnum::HOST),
        ServiceSpecUpdateConfigOrderEnum::STOP_FIRST
    )]
    fn a_service_without_update_config_gets_rollback_and_start_first_where_allowed(
        #[case] mode: Option<EndpointPortConfigPublishModeEnum>,
        #[case] order: ServiceSpecUpdateConfigOrderEnum,
    ) {
        let updated = updated_spec(spec(mode, None), "new", Duration::from_secs(5));
        let config = updated.update_config.expect("set");
        assert_eq!(
            config.failure_action,
            Some(ServiceSpecUpdateConfigFailureActionEnum::ROLLBACK)
        );
        assert_eq!(config.parallelism, Some(1));
        assert_eq!(config.order, Some(order));
        let image = updated
            .task_template
            .and_then(|t| t.container_spec)
            .and_then(|c| c.image);
        assert_eq!(image.as_deref(), Some("new"));
    }

    #[test]
    fn the_operators_update_config_is_kept() {
        let own = ServiceSpecUpdateConfig {
            parallelism: Some(3),
            failure_action: Some(ServiceSpecUpdateConfigFailureActionEnum::PAUSE),
            ..ServiceSpecUpdateConfig::default()
        };
        let updated = updated_spec(spec(None, Some(own.clone())), "new", Duration::from_secs(5));
        assert_eq!(updated.update_config, Some(own));
    }
}
