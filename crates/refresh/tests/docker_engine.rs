//! The Docker refresher against the REAL Docker daemon of this machine and a REAL registry with
//! htpasswd auth on 127.0.0.1 (plain http, which the daemon allows for loopback): busybox images
//! built by test-support, pushed by skopeo, pulled by the daemon with our `X-Registry-Auth`.
//!
//! Every container, network and image a test creates carries a per-run name and is removed when
//! the test ends, passing or failing.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use bollard::Docker;
use bollard::models::{
    ContainerCreateBody, ContainerInspectResponse, EndpointSettings, HealthStatusEnum, HostConfig,
    NetworkCreateRequest, NetworkingConfig, RestartPolicy, RestartPolicyNameEnum,
};
use bollard::query_parameters::{
    CreateContainerOptionsBuilder, ListContainersOptionsBuilder, RemoveContainerOptionsBuilder,
    RemoveImageOptionsBuilder,
};
use refresh::{ContainerFilter, DockerConfig, DockerError, DockerMode, DockerRefresher};
use registry_auth::AuthSettings;
use registry_core::{Credentials, Digest, ImageReference, Transport, TransportConfig};
use rstest::rstest;
use test_support::{ImageSpec, ManifestFormat, Registry, RegistryConfig, RegistryTls, WorkDir, build_image, skopeo};
use watcher::{RefreshEvent, Refresher};

const USER: &str = "alice";
/// Chosen so that the base64url `X-Registry-Auth` payload holds `-` or `_` (asserted below),
/// where standard base64 would hold `+` or `/`: the engine decodes base64url and would silently
/// pull anonymously with a standard encoding.
const PASSWORD: &str = "p?>?>?>~~~w0rd";

struct Fixture {
    wd: WorkDir,
    /// Kept alive for the test: dropping it stops the registry.
    _registry: Registry,
    docker: Docker,
    run: String,
    network: String,
    image: ImageReference,
    image_ids: Mutex<Vec<String>>,
}

impl Fixture {
    async fn new(label: &str) -> Fixture {
        let wd = WorkDir::new(label);
        let registry = Registry::start(&wd, RegistryConfig::htpasswd(&[(USER, PASSWORD)]));
        let docker = Docker::connect_with_socket_defaults()
            .expect("Docker socket at /var/run/docker.sock")
            .negotiate_version()
            .await
            .expect("Docker Engine answers");
        let nanos = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        let run = format!("{}-{}-{nanos}", label, std::process::id());
        let network = format!("imagewatch-test-{run}");
        docker
            .create_network(NetworkCreateRequest {
                name: network.clone(),
                // No route off the machine: the containers only sleep.
                internal: Some(true),
                ..NetworkCreateRequest::default()
            })
            .await
            .expect("network created");
        let image = registry
            .image_ref("imagewatch-test/workspace", "latest")
            .parse()
            .expect("reference");
        Fixture {
            wd,
            _registry: registry,
            docker,
            run,
            network,
            image,
            image_ids: Mutex::new(Vec::new()),
        }
    }

    /// Builds the busybox image of `spec` and pushes it with the right credentials.
    fn push(&self, spec: &ImageSpec) -> String {
        let layout = build_image(&self.wd, spec);
        skopeo::push(
            &layout,
            &self.image.to_string(),
            ManifestFormat::Oci,
            Some((USER, PASSWORD)),
            &RegistryTls::Plain,
        )
    }

    fn name(&self, prefix: &str) -> String {
        format!("{prefix}{}", self.run)
    }

    async fn refresher(&self, password: &str, mode: DockerMode, name_prefix: &str) -> DockerRefresher {
        self.refresher_with(
            password,
            DockerConfig {
                mode,
                filter: ContainerFilter {
                    name_prefix: Some(name_prefix.to_owned()),
                    label: None,
                },
                ..test_config()
            },
        )
        .await
    }

    /// The refresher with the production pull credentials: the wiring's engine-auth answer for
    /// the registry, configured as an operator would (`IMAGEWATCH_REGISTRY_USER`/`_PASSWORD`).
    /// The daemon has no login for the registry, so a wrong payload fails the pull.
    async fn refresher_with(&self, password: &str, config: DockerConfig) -> DockerRefresher {
        let host = self.image.host().clone();
        let mut settings = AuthSettings::new(host.clone());
        settings.registry_credentials = Some((host.clone(), Credentials::basic(USER, password)));
        let transport = Arc::new(Transport::new(TransportConfig::default()).expect("transport"));
        let wired = registry_auth::wire(&settings, transport, &[host]).await.expect("wired");
        DockerRefresher::connect(config, Arc::new(wired.engine_auth()))
            .await
            .expect("engine")
    }

    /// Registers what the reference names locally now (a pulled v2) for clean-up; answers its ID.
    async fn track_current_image(&self) -> Option<String> {
        let id = self.docker.inspect_image(&self.image.to_string()).await.ok()?.id?;
        self.track(&id);
        Some(id)
    }

    /// Registers the image `id` for clean-up.
    fn track(&self, id: &str) {
        self.image_ids.lock().expect("lock").push(id.to_owned());
    }

    async fn pull(&self, refresher: &DockerRefresher) -> String {
        let id = refresher.pull(&self.image).await.expect("pulled");
        self.track(&id);
        id
    }

    /// Creates and starts a container of the image with its own env, label, command, network
    /// alias and restart policy: the configuration a recreate must keep.
    async fn run_container(&self, name: &str) -> String {
        let body = ContainerCreateBody {
            image: Some(self.image.to_string()),
            env: Some(vec!["MINE=yes".into()]),
            labels: Some(HashMap::from([("team".to_owned(), "blue".to_owned())])),
            cmd: Some(vec!["/bin/busybox".into(), "sleep".into(), "1234".into()]),
            host_config: Some(HostConfig {
                network_mode: Some(self.network.clone()),
                ..HostConfig::default()
            }),
            networking_config: Some(NetworkingConfig {
                endpoints_config: Some(HashMap::from([(
                    self.network.clone(),
                    EndpointSettings {
                        aliases: Some(vec!["app-alias".into()]),
                        ..EndpointSettings::default()
                    },
                )])),
            }),
            ..ContainerCreateBody::default()
        };
        self.create_and_start(name, body).await
    }

    /// Creates and starts a container that keeps the image's own command and health check, so
    /// those of a new image apply after a recreate.
    async fn run_image_default(&self, name: &str, restart: Option<RestartPolicyNameEnum>) -> String {
        let body = ContainerCreateBody {
            image: Some(self.image.to_string()),
            host_config: Some(HostConfig {
                restart_policy: restart.map(|name| RestartPolicy {
                    name: Some(name),
                    maximum_retry_count: None,
                }),
                ..HostConfig::default()
            }),
            ..ContainerCreateBody::default()
        };
        self.create_and_start(name, body).await
    }

    async fn create_and_start(&self, name: &str, body: ContainerCreateBody) -> String {
        let created = self
            .docker
            .create_container(Some(CreateContainerOptionsBuilder::new().name(name).build()), body)
            .await
            .expect("container created");
        self.docker
            .start_container(&created.id, None)
            .await
            .expect("container started");
        created.id
    }

    async fn inspect(&self, name: &str) -> ContainerInspectResponse {
        self.docker.inspect_container(name, None).await.expect("inspect")
    }

    async fn names(&self) -> Vec<String> {
        let options = ListContainersOptionsBuilder::new().all(true).build();
        let mut names: Vec<String> = self
            .docker
            .list_containers(Some(options))
            .await
            .expect("list")
            .into_iter()
            .flat_map(|c| c.names.unwrap_or_default())
            .map(|n| n.trim_start_matches('/').to_owned())
            .filter(|n| n.contains(&self.run))
            .collect();
        names.sort();
        names
    }
}

impl Drop for Fixture {
    fn drop(&mut self) {
        let docker = self.docker.clone();
        let run = self.run.clone();
        let network = self.network.clone();
        let image = self.image.to_string();
        let ids = self.image_ids.lock().map(|ids| ids.clone()).unwrap_or_default();
        // Drop cannot await: clean up on a thread with its own runtime.
        let cleanup = std::thread::spawn(move || {
            let Ok(runtime) = tokio::runtime::Builder::new_current_thread().enable_all().build() else {
                return;
            };
            runtime.block_on(async move {
                let options = ListContainersOptionsBuilder::new().all(true).build();
                for container in docker.list_containers(Some(options)).await.unwrap_or_default() {
                    let ours = container.names.iter().flatten().any(|name| name.contains(&run));
                    if let (true, Some(id)) = (ours, container.id) {
                        let remove = RemoveContainerOptionsBuilder::new().force(true).build();
                        let _ = docker.remove_container(&id, Some(remove)).await;
                    }
                }
                let _ = docker.remove_network(&network).await;
                for name in std::iter::once(image).chain(ids) {
                    let remove = RemoveImageOptionsBuilder::new().force(true).build();
                    let _ = docker.remove_image(&name, Some(remove), None).await;
                }
            });
        });
        let _ = cleanup.join();
    }
}

/// The refresher configuration of these tests, with short waits.
fn test_config() -> DockerConfig {
    DockerConfig {
        // busybox `sleep` as PID 1 ignores SIGTERM: do not wait the default 10 s for it.
        stop_timeout: Duration::from_secs(1),
        settle: Duration::from_secs(1),
        health_timeout: Duration::from_secs(15),
        ..DockerConfig::default()
    }
}

fn env_of(container: &ContainerInspectResponse) -> Vec<String> {
    container
        .config
        .as_ref()
        .and_then(|c| c.env.clone())
        .unwrap_or_default()
}

fn running(container: &ContainerInspectResponse) -> bool {
    container.state.as_ref().and_then(|s| s.running).unwrap_or(false)
}

#[test]
fn the_test_password_exercises_the_base64url_encoding() {
    // The password leads the payload's JSON, so where it lands in the encoding does not depend
    // on the registry's port.
    let payload = registry_auth::EngineAuth::new(
        &"127.0.0.1:5000".parse().expect("host"),
        Credentials::basic(USER, PASSWORD),
    );
    let header = payload.header_value();
    assert!(header.expose().contains(['-', '_']), "{}", header.expose());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recreate_moves_the_container_to_the_new_image_keeping_name_and_config() {
    let fx = Fixture::new("docker-recreate").await;
    fx.push(&ImageSpec::busybox("1"));
    let refresher = fx.refresher(PASSWORD, DockerMode::Recreate, "ws-test-").await;
    let v1 = fx.pull(&refresher).await;
    let name = fx.name("ws-test-");
    let bystander = fx.name("other-");
    let old_id = fx.run_container(&name).await;
    fx.run_container(&bystander).await;

    let v2_digest = fx.push(&ImageSpec::busybox("2"));
    let event = RefreshEvent::new(
        fx.image.clone(),
        Some("workspace".into()),
        format!("sha256:{}", "0".repeat(64)).parse().expect("digest"),
        v2_digest.parse::<Digest>().expect("digest"),
        SystemTime::now(),
    );
    let outcome = refresher.refresh(&event).await.expect("refreshed");
    assert!(
        outcome.summary().contains(&format!("recreated 1 ({name})")),
        "{outcome}"
    );

    let new = fx.inspect(&name).await;
    let v2 = new.image.clone().expect("image id");
    fx.track(&v2);
    assert_ne!(v2, v1, "the container runs the new image");
    assert_ne!(new.id.as_deref(), Some(old_id.as_str()), "a new container");
    assert!(running(&new));
    let config = new.config.clone().expect("config");
    assert_eq!(config.image.as_deref(), Some(fx.image.to_string().as_str()));
    assert_eq!(
        config.cmd,
        Some(vec!["/bin/busybox".into(), "sleep".into(), "1234".into()])
    );
    let env = env_of(&new);
    assert!(env.contains(&"MINE=yes".to_owned()), "{env:?}");
    assert!(
        env.contains(&"IMAGEWATCH_TEST_VERSION=2".to_owned()),
        "the new image's env wins over the old image's: {env:?}"
    );
    let labels = config.labels.unwrap_or_default();
    assert_eq!(labels.get("team").map(String::as_str), Some("blue"));
    assert_eq!(
        labels.get("org.opencontainers.image.version").map(String::as_str),
        Some("2")
    );
    let aliases = new
        .network_settings
        .and_then(|s| s.networks)
        .and_then(|n| n.get(&fx.network).cloned())
        .and_then(|e| e.aliases)
        .unwrap_or_default();
    assert!(aliases.contains(&"app-alias".to_owned()), "{aliases:?}");

    assert_eq!(fx.names().await, {
        let mut expected = vec![bystander.clone(), name.clone()];
        expected.sort();
        expected
    });
    let untouched = fx.inspect(&bystander).await;
    assert_eq!(untouched.image.as_deref(), Some(v1.as_str()), "outside the name filter");

    // A second refresh of the same move is a no-op: already current.
    let again = refresher.refresh_image(&fx.image).await.expect("refreshed");
    assert_eq!((again.recreated.len(), again.up_to_date.len()), (0, 1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failing_pull_leaves_the_old_container_running() {
    let fx = Fixture::new("docker-bad-pull").await;
    fx.push(&ImageSpec::busybox("1"));
    let good = fx.refresher(PASSWORD, DockerMode::Recreate, "ws-test-").await;
    let v1 = fx.pull(&good).await;
    let name = fx.name("ws-test-");
    let old_id = fx.run_container(&name).await;
    fx.push(&ImageSpec::busybox("2"));

    let wrong = fx.refresher("not-the-password", DockerMode::Recreate, "ws-test-").await;
    let error = wrong.refresh_image(&fx.image).await.expect_err("pull refused");
    assert!(matches!(error, DockerError::Pull { .. }), "{error:?}");
    let message = error.to_string();
    assert!(!message.contains("not-the-password"), "{message}");

    let container = fx.inspect(&name).await;
    assert_eq!(container.id.as_deref(), Some(old_id.as_str()));
    assert!(running(&container));
    assert_eq!(container.image.as_deref(), Some(v1.as_str()));
    let local = fx.docker.inspect_image(&fx.image.to_string()).await.expect("image");
    assert_eq!(local.id.as_deref(), Some(v1.as_str()), "nothing new was pulled");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn new_container_that_cannot_start_is_rolled_back_to_the_old_one() {
    let fx = Fixture::new("docker-rollback").await;
    fx.push(&ImageSpec::busybox("1"));
    let refresher = fx.refresher(PASSWORD, DockerMode::Recreate, "ws-test-").await;
    let v1 = fx.pull(&refresher).await;
    let name = fx.name("ws-test-");
    // This container keeps the image's own command, so the new image's broken one applies.
    let body = ContainerCreateBody {
        image: Some(fx.image.to_string()),
        ..ContainerCreateBody::default()
    };
    let old_id = fx.create_and_start(&name, body).await;
    fx.push(&ImageSpec::busybox("2").cmd(&["/bin/does-not-exist"]));

    let error = refresher.refresh_image(&fx.image).await.expect_err("start fails");
    let DockerError::Containers { failures, .. } = &error else {
        panic!("{error:?}")
    };
    assert_eq!(failures.len(), 1);
    assert_eq!(failures[0].step, "start new", "{error}");
    assert!(failures[0].rollback.starts_with("rolled back"), "{error}");
    // The broken v2 was pulled: register it for clean-up.
    fx.track_current_image().await;

    let container = fx.inspect(&name).await;
    assert_eq!(
        container.id.as_deref(),
        Some(old_id.as_str()),
        "the old container is back"
    );
    assert!(running(&container), "and running");
    assert_eq!(container.image.as_deref(), Some(v1.as_str()));
    assert_eq!(fx.names().await, vec![name.clone()], "nothing half-made left behind");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn remove_mode_removes_matching_containers_for_the_platform_to_reprovision() {
    let fx = Fixture::new("docker-remove").await;
    fx.push(&ImageSpec::busybox("1"));
    let refresher = fx.refresher(PASSWORD, DockerMode::Remove, "ws-test-").await;
    fx.pull(&refresher).await;
    let name = fx.name("ws-test-");
    let bystander = fx.name("other-");
    fx.run_container(&name).await;
    fx.run_container(&bystander).await;
    fx.push(&ImageSpec::busybox("2"));

    let outcome = refresher.refresh_image(&fx.image).await.expect("refreshed");
    fx.track(&outcome.image_id);
    assert_eq!(outcome.removed, vec![name.clone()]);
    assert_eq!(fx.names().await, vec![bystander]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auto_remove_container_is_refused_not_stopped() {
    let fx = Fixture::new("docker-auto-remove").await;
    fx.push(&ImageSpec::busybox("1"));
    let refresher = fx.refresher(PASSWORD, DockerMode::Recreate, "ws-test-").await;
    let v1 = fx.pull(&refresher).await;
    let name = fx.name("ws-test-");
    let body = ContainerCreateBody {
        image: Some(fx.image.to_string()),
        host_config: Some(HostConfig {
            auto_remove: Some(true),
            ..HostConfig::default()
        }),
        ..ContainerCreateBody::default()
    };
    let old_id = fx.create_and_start(&name, body).await;
    fx.push(&ImageSpec::busybox("2"));

    let error = refresher.refresh_image(&fx.image).await.expect_err("refused");
    let DockerError::Containers { failures, done, .. } = &error else {
        panic!("{error:?}")
    };
    fx.track(&done.image_id);
    assert_eq!(failures[0].step, "check", "{error}");
    assert!(failures[0].message.contains("--rm"), "{error}");
    let container = fx.inspect(&name).await;
    assert_eq!(container.id.as_deref(), Some(old_id.as_str()), "the same container");
    assert!(running(&container));
    assert_eq!(container.image.as_deref(), Some(v1.as_str()));
}

/// busybox v2 whose command writes a line to stderr and exits 3 right after it starts.
fn exits_at_once() -> ImageSpec {
    ImageSpec::busybox("2").cmd(&["/bin/sh", "-c", "echo 'v2: config file missing' >&2; exit 3"])
}

/// busybox v2 with a `HEALTHCHECK` running `probe` every `interval`, unhealthy after one failure.
fn health_checked(probe: &str, interval: Duration) -> ImageSpec {
    ImageSpec::busybox("2").healthcheck(&["CMD", "/bin/busybox", probe], interval, Duration::from_secs(1), 1)
}

#[rstest]
#[case::exits_at_once("docker-verify-exit", exits_at_once(), None, &["exited with code 3", "v2: config file missing"])]
#[case::crash_loop_under_restart_policy(
    "docker-verify-loop",
    exits_at_once(),
    Some(RestartPolicyNameEnum::ALWAYS),
    &["crash-looping", "v2: config file missing"]
)]
#[case::failing_health_check(
    "docker-verify-unhealthy",
    health_checked("false", Duration::from_secs(1)),
    None,
    &["is unhealthy after 1 failing health probe(s) (last probe exit code 1"]
)]
#[case::never_healthy(
    "docker-verify-slow",
    health_checked("true", Duration::from_secs(300)),
    None,
    &["was not healthy within 2.0s (health status starting; no probe has finished)"]
)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn new_container_that_does_not_prove_itself_is_rolled_back_to_the_old_one(
    #[case] label: &str,
    #[case] v2: ImageSpec,
    #[case] restart: Option<RestartPolicyNameEnum>,
    #[case] expected: &[&str],
) {
    let fx = Fixture::new(label).await;
    fx.push(&ImageSpec::busybox("1"));
    let refresher = fx
        .refresher_with(
            PASSWORD,
            DockerConfig {
                mode: DockerMode::Recreate,
                filter: ContainerFilter {
                    name_prefix: Some("ws-test-".into()),
                    label: None,
                },
                health_timeout: Duration::from_secs(2),
                ..test_config()
            },
        )
        .await;
    let v1 = fx.pull(&refresher).await;
    let name = fx.name("ws-test-");
    let old_id = fx.run_image_default(&name, restart).await;
    fx.push(&v2);

    let error = refresher.refresh_image(&fx.image).await.expect_err("not proven");
    let v2_id = fx.track_current_image().await;
    assert_ne!(v2_id.as_deref(), Some(v1.as_str()), "v2 was pulled");
    let DockerError::Containers { failures, .. } = &error else {
        panic!("{error:?}")
    };
    assert_eq!(failures.len(), 1, "{error}");
    let failure = &failures[0];
    assert_eq!(
        (failure.container.as_str(), failure.step),
        (name.as_str(), "verify"),
        "{error}"
    );
    for part in expected {
        assert!(failure.message.contains(part), "{:?} lacks {part:?}", failure.message);
    }
    assert_eq!(
        failure.rollback, "rolled back: the old container runs again under its name",
        "{error}"
    );

    let container = fx.inspect(&name).await;
    assert_eq!(
        container.id.as_deref(),
        Some(old_id.as_str()),
        "the old container is back"
    );
    assert!(running(&container), "and running");
    assert_eq!(container.image.as_deref(), Some(v1.as_str()), "on the old image");
    assert_eq!(fx.names().await, vec![name.clone()], "the new container is gone");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn healthy_new_container_replaces_the_old_one_after_settling() {
    let fx = Fixture::new("docker-verify-healthy").await;
    fx.push(&ImageSpec::busybox("1"));
    let refresher = fx.refresher(PASSWORD, DockerMode::Recreate, "ws-test-").await;
    let v1 = fx.pull(&refresher).await;
    let name = fx.name("ws-test-");
    let old_id = fx.run_image_default(&name, None).await;
    fx.push(&health_checked("true", Duration::from_secs(1)));

    let started = Instant::now();
    let outcome = refresher.refresh_image(&fx.image).await.expect("recreated");
    let took = started.elapsed();
    fx.track(&outcome.image_id);
    assert_eq!(outcome.recreated, vec![name.clone()], "{}", outcome.summary());
    assert!(
        took >= test_config().settle,
        "the new container settled first: {took:?}"
    );

    let new = fx.inspect(&name).await;
    assert_ne!(new.id.as_deref(), Some(old_id.as_str()), "a new container");
    assert_ne!(new.image.as_deref(), Some(v1.as_str()), "on the new image");
    assert!(running(&new));
    let health = new.state.and_then(|s| s.health).and_then(|h| h.status);
    assert_eq!(
        health,
        Some(HealthStatusEnum::HEALTHY),
        "the image's HEALTHCHECK applies"
    );
    assert_eq!(fx.names().await, vec![name], "the old container was removed");
}
