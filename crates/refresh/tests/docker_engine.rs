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
use refresh::{
    ContainerFilter, DockerConfig, DockerError, DockerMode, DockerRefresher, ROLLED_BACK_START_FIRST, UpdateOrder,
};
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

    /// Builds the busybox image of `spec` and pushes it with the right credentials. The image
    /// is labelled with the run, so its ID is this test's alone: tests run in parallel on one
    /// daemon, and removing an image another test's container runs would break that test.
    fn push(&self, spec: &ImageSpec) -> String {
        let layout = build_image(&self.wd, &self.own(spec));
        skopeo::push(
            &layout,
            &self.image.to_string(),
            ManifestFormat::Oci,
            Some((USER, PASSWORD)),
            &RegistryTls::Plain,
        )
    }

    /// `spec`, labelled with this run.
    fn own(&self, spec: &ImageSpec) -> ImageSpec {
        spec.clone().label("imagewatch.test.run", &self.run)
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
                    ..ContainerFilter::default()
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
                    ..ContainerFilter::default()
                },
                health_timeout: Duration::from_secs(2),
                // The stop-first path: its rollback restarts the old container.
                order: UpdateOrder::StopFirst,
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
    assert!(
        failure
            .rollback
            .starts_with("rolled back: the old container runs again under its name; stop-first (update order stop-first): this attempt kept it down for"),
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

/// What a poller saw of one container while a refresh ran: its state every 100 ms.
#[derive(Debug, Default)]
struct Availability {
    polls: u32,
    /// Polls at which the container named was missing or not running.
    down_polls: u32,
    /// Measured downtime: from the first poll that saw it down to the next that saw it up.
    downtime: Duration,
}

/// Polls `name` every 100 ms until `stop` is set: is a container of that name running?
fn poll_availability(
    docker: Docker,
    name: String,
    stop: Arc<std::sync::atomic::AtomicBool>,
) -> tokio::task::JoinHandle<Availability> {
    tokio::spawn(async move {
        let mut seen = Availability::default();
        let mut down_since: Option<Instant> = None;
        while !stop.load(std::sync::atomic::Ordering::SeqCst) {
            let up = docker
                .inspect_container(&name, None)
                .await
                .map(|c| running(&c))
                .unwrap_or(false);
            seen.polls += 1;
            match (up, down_since) {
                (false, None) => {
                    seen.down_polls += 1;
                    down_since = Some(Instant::now());
                }
                (false, Some(_)) => seen.down_polls += 1,
                (true, Some(since)) => {
                    seen.downtime += since.elapsed();
                    down_since = None;
                }
                (true, None) => {}
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        if let Some(since) = down_since {
            seen.downtime += since.elapsed();
        }
        seen
    })
}

/// Runs `attempts` refreshes of the fixture's image (a retry of the same failing digest is
/// another attempt) while a poller watches `name`; answers the errors and what the poller saw.
async fn refresh_while_polling(
    fx: &Fixture,
    refresher: &DockerRefresher,
    name: &str,
    attempts: usize,
) -> (Vec<DockerError>, Availability) {
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let poller = poll_availability(fx.docker.clone(), name.to_owned(), stop.clone());
    let mut errors = Vec::new();
    for _ in 0..attempts {
        if let Err(error) = refresher.refresh_image(&fx.image).await {
            errors.push(error);
        }
    }
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    (errors, poller.await.expect("poller"))
}

/// A busybox v3 whose command exits at once: what a broken release looks like.
fn broken_v3() -> ImageSpec {
    ImageSpec::busybox("3").cmd(&["/bin/sh", "-c", "echo 'v3: cannot start' >&2; exit 1"])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn start_first_keeps_the_running_container_up_while_a_broken_image_is_tried_and_retried() {
    let fx = Fixture::new("docker-start-first").await;
    fx.push(&ImageSpec::busybox("2"));
    let refresher = fx.refresher(PASSWORD, DockerMode::Recreate, "ws-test-").await;
    let v2 = fx.pull(&refresher).await;
    let name = fx.name("ws-test-");
    let old_id = fx.run_image_default(&name, None).await;
    let started_at = fx.inspect(&name).await.state.and_then(|s| s.started_at);
    fx.push(&broken_v3());

    // Two attempts: the first try of the broken digest and its retry.
    let (errors, seen) = refresh_while_polling(&fx, &refresher, &name, 2).await;
    fx.track_current_image().await;
    println!(
        "start-first, broken v3 tried twice: {} polls at 100 ms, {} down, measured downtime {} ms",
        seen.polls,
        seen.down_polls,
        seen.downtime.as_millis()
    );
    assert_eq!(errors.len(), 2, "both attempts fail");
    for error in &errors {
        let DockerError::Containers { failures, .. } = error else {
            panic!("{error:?}")
        };
        assert_eq!(failures[0].step, "verify", "{error}");
        assert_eq!(failures[0].rollback, ROLLED_BACK_START_FIRST, "{error}");
    }
    assert!(seen.polls >= 10, "the poller ran through both attempts: {seen:?}");
    assert_eq!(seen.down_polls, 0, "never not running: {seen:?}");
    assert_eq!(seen.downtime, Duration::ZERO);
    let container = fx.inspect(&name).await;
    assert_eq!(container.id.as_deref(), Some(old_id.as_str()), "the same v2 container");
    assert_eq!(container.image.as_deref(), Some(v2.as_str()));
    assert_eq!(container.restart_count, Some(0));
    assert_eq!(
        container.state.as_ref().and_then(|s| s.started_at.clone()),
        started_at,
        "never restarted"
    );
    assert_eq!(fx.names().await, vec![name], "the unproven copy is gone");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn start_first_replaces_the_container_without_a_gap() {
    let fx = Fixture::new("docker-start-first-ok").await;
    fx.push(&ImageSpec::busybox("1"));
    let refresher = fx.refresher(PASSWORD, DockerMode::Recreate, "ws-test-").await;
    fx.pull(&refresher).await;
    let name = fx.name("ws-test-");
    let old_id = fx.run_container(&name).await;
    fx.push(&ImageSpec::busybox("2"));

    let (errors, seen) = refresh_while_polling(&fx, &refresher, &name, 1).await;
    fx.track_current_image().await;
    assert!(errors.is_empty(), "{errors:?}");
    let new = fx.inspect(&name).await;
    assert_ne!(new.id.as_deref(), Some(old_id.as_str()), "a new container");
    assert!(running(&new));
    let aliases = new
        .network_settings
        .and_then(|s| s.networks)
        .and_then(|n| n.get(&fx.network).cloned())
        .and_then(|e| e.aliases)
        .unwrap_or_default();
    assert!(aliases.contains(&"app-alias".to_owned()), "{aliases:?}");
    assert_eq!(fx.names().await, vec![name], "the old container was removed");
    // The name is free for a moment between the two renames, while both containers run; a
    // poll may fall in it, but never a stopped service.
    assert!(seen.down_polls <= 1, "{seen:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn published_host_port_means_stop_first_and_the_error_states_the_outage() {
    let fx = Fixture::new("docker-stop-first").await;
    fx.push(&ImageSpec::busybox("2"));
    let refresher = fx.refresher(PASSWORD, DockerMode::Recreate, "ws-test-").await;
    let v2 = fx.pull(&refresher).await;
    let name = fx.name("ws-test-");
    let port = test_support::free_port();
    let body = ContainerCreateBody {
        image: Some(fx.image.to_string()),
        exposed_ports: Some(vec!["80/tcp".into()]),
        host_config: Some(HostConfig {
            port_bindings: Some(HashMap::from([(
                "80/tcp".to_owned(),
                Some(vec![bollard::models::PortBinding {
                    host_ip: Some("127.0.0.1".into()),
                    host_port: Some(port.to_string()),
                }]),
            )])),
            ..HostConfig::default()
        }),
        ..ContainerCreateBody::default()
    };
    let old_id = fx.create_and_start(&name, body).await;
    fx.push(&broken_v3());

    let (errors, seen) = refresh_while_polling(&fx, &refresher, &name, 1).await;
    fx.track_current_image().await;
    println!(
        "stop-first (host port {port}), broken v3: {} polls, {} down, measured downtime {} ms",
        seen.polls,
        seen.down_polls,
        seen.downtime.as_millis()
    );
    let [DockerError::Containers { failures, .. }] = errors.as_slice() else {
        panic!("{errors:?}")
    };
    let rollback = &failures[0].rollback;
    assert!(rollback.starts_with("rolled back"), "{rollback}");
    assert!(
        rollback.contains(&format!("stop-first (publishes host port(s) 127.0.0.1:{port}->80/tcp)")),
        "{rollback}"
    );
    assert!(rollback.contains("this attempt kept it down for"), "{rollback}");
    assert!(seen.down_polls > 0, "stop-first stops the old container: {seen:?}");
    let container = fx.inspect(&name).await;
    assert_eq!(
        container.id.as_deref(),
        Some(old_id.as_str()),
        "the old container is back"
    );
    assert!(running(&container));
    assert_eq!(container.image.as_deref(), Some(v2.as_str()));
}

#[rstest]
#[case::unused_old_image_is_removed("docker-cleanup", false)]
#[case::old_image_another_container_runs_is_kept("docker-cleanup-kept", true)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cleanup_removes_exactly_the_old_image_when_nothing_else_uses_it(
    #[case] label: &str,
    #[case] bystander_on_v1: bool,
) {
    let fx = Fixture::new(label).await;
    // An image of this case alone: the daemon is shared, and a container of another test on the
    // same image ID would rightly keep it.
    fx.push(&ImageSpec::busybox("1").label("imagewatch.test.case", label));
    let refresher = fx
        .refresher_with(
            PASSWORD,
            DockerConfig {
                filter: ContainerFilter {
                    name_prefix: Some("ws-test-".into()),
                    ..ContainerFilter::default()
                },
                cleanup: true,
                ..test_config()
            },
        )
        .await;
    let v1 = fx.pull(&refresher).await;
    let name = fx.name("ws-test-");
    fx.run_container(&name).await;
    if bystander_on_v1 {
        fx.run_container(&fx.name("other-")).await;
    }
    fx.push(&ImageSpec::busybox("2").label("imagewatch.test.case", label));

    let outcome = refresher.refresh_image(&fx.image).await.expect("refreshed");
    fx.track(&outcome.image_id);
    assert_eq!(outcome.replaced_images, vec![v1.clone()]);
    let exists = |id: String| {
        let docker = fx.docker.clone();
        async move { docker.inspect_image(&id).await.is_ok() }
    };
    if bystander_on_v1 {
        assert!(outcome.images_removed.is_empty(), "{}", outcome.summary());
        assert!(exists(v1.clone()).await, "a container still needs it");
    } else {
        assert_eq!(outcome.images_removed, vec![v1.clone()], "{}", outcome.summary());
        assert!(!exists(v1.clone()).await, "the old image is gone");
        assert!(
            outcome.summary().contains("old image(s) removed 1"),
            "{}",
            outcome.summary()
        );
    }
    assert!(exists(outcome.image_id.clone()).await, "the new image stays");
    assert!(outcome.warnings.is_empty(), "{:?}", outcome.warnings);
}

/// The discovery fixture: 20 containers of one busybox image, each (but one) from a tag of its
/// own repository; which opt in, which opt out and which cannot be watched is in `layout`.
struct Host {
    prefix: String,
    /// `repo(i)`: the reference container `i` runs.
    repos: Vec<ImageReference>,
}

/// Container `i`'s labels and what it was created with.
enum Started {
    Tag(usize),
    Digest,
    Id,
}

fn layout(i: usize) -> (&'static [(&'static str, &'static str)], Started) {
    match i {
        0..=2 => (&[("imagewatch.enable", "true")], Started::Tag(i)),
        3 | 4 => (&[("com.centurylinklabs.watchtower.enable", "true")], Started::Tag(i)),
        5 => (&[("imagewatch.enable", "false")], Started::Tag(i)),
        6 => (&[("imagewatch.enable", "true")], Started::Digest),
        7 => (&[("imagewatch.enable", "true")], Started::Id),
        // Unlabelled, on the same image reference as an opted-in container.
        8 => (&[], Started::Tag(0)),
        _ => (&[], Started::Tag(i)),
    }
}

impl Host {
    async fn start(fx: &Fixture, v1: &str, count: usize) -> Host {
        let prefix = format!("dsc-{}-", fx.run);
        let repos: Vec<ImageReference> = (0..=count)
            .map(|i| {
                format!("{}/imagewatch-test/app{i}-{}:latest", fx.image.host(), fx.run)
                    .parse()
                    .expect("reference")
            })
            .collect();
        for repo in &repos {
            let options = bollard::query_parameters::TagImageOptionsBuilder::new()
                .repo(&format!("{}/{}", repo.host(), repo.repository()))
                .tag("latest")
                .build();
            fx.docker.tag_image(v1, Some(options)).await.expect("tagged");
        }
        let inspected = fx.docker.inspect_image(v1).await.expect("v1");
        let by_digest = inspected
            .repo_digests
            .and_then(|d| d.first().cloned())
            .expect("a repo digest");
        let host = Host { prefix, repos };
        for i in 0..count {
            let (labels, started) = layout(i);
            let image = match started {
                Started::Tag(repo) => host.repos[repo].to_string(),
                Started::Digest => by_digest.clone(),
                Started::Id => v1.to_owned(),
            };
            host.run(fx, i, image, labels).await;
        }
        host
    }

    async fn run(&self, fx: &Fixture, i: usize, image: String, labels: &[(&str, &str)]) -> String {
        let body = ContainerCreateBody {
            image: Some(image),
            labels: Some(labels.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect()),
            ..ContainerCreateBody::default()
        };
        fx.create_and_start(&self.name(i), body).await
    }

    fn name(&self, i: usize) -> String {
        format!("{}{i:02}", self.prefix)
    }

    fn discovery(&self, fx: &Fixture, all: bool) -> refresh::Discovery {
        refresh::Discovery::new(
            fx.docker.clone(),
            refresh::DiscoveryConfig {
                filter: self.filter(all),
                ..refresh::DiscoveryConfig::default()
            },
        )
    }

    fn filter(&self, all: bool) -> ContainerFilter {
        ContainerFilter {
            name_prefix: Some(self.prefix.clone()),
            label: None,
            opt_in: !all,
        }
    }
}

fn watched(set: &watcher::WatchSet) -> Vec<String> {
    let mut images: Vec<String> = set.images().iter().map(|i| i.reference().to_string()).collect();
    images.sort();
    images
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn discovery_watches_only_opted_in_containers_follows_them_and_refreshes_only_them() {
    let fx = Fixture::new("docker-discover").await;
    fx.push(&ImageSpec::busybox("1"));
    let puller = fx.refresher(PASSWORD, DockerMode::Recreate, "dsc-").await;
    let v1 = fx.pull(&puller).await;
    let host = Host::start(&fx, &v1, 20).await;

    // 20 containers, 5 opted in on a tag: exactly their 5 images.
    let found = host.discovery(&fx, false).scan().await.expect("scanned");
    let images: Vec<String> = found.images.iter().map(|i| i.reference.to_string()).collect();
    let expected: Vec<String> = (0..5).map(|i| host.repos[i].to_string()).collect();
    assert_eq!(images, expected);
    assert_eq!(
        found.images[0].containers,
        vec![host.name(0)],
        "the unlabelled #08 is not counted"
    );
    let skipped: Vec<(&str, &str)> = found
        .skipped
        .iter()
        .map(|s| (s.container.as_str(), s.reason.as_str()))
        .collect();
    assert_eq!(skipped.len(), 2, "{skipped:?}");
    assert_eq!(skipped[0].0, host.name(6));
    assert!(skipped[0].1.starts_with("started from a digest"), "{skipped:?}");
    assert_eq!(skipped[1].0, host.name(7));
    assert!(skipped[1].1.starts_with("started from an image ID"), "{skipped:?}");

    // --discover-all: every container but the one labelled enable=false.
    let all = host.discovery(&fx, true).scan().await.expect("scanned");
    let mut expected_all: Vec<String> = (0..20)
        .filter(|i| ![5, 6, 7, 8].contains(i))
        .map(|i| host.repos[i].to_string())
        .collect();
    expected_all.sort();
    let mut got_all: Vec<String> = all.images.iter().map(|i| i.reference.to_string()).collect();
    got_all.sort();
    assert_eq!(got_all, expected_all);

    // Followed through events: a container started and removed shows within 2 s.
    let mut base = watcher::WatchSet::new();
    base.add_image(fx.image.clone()).expect("valid");
    let (updates, mut receiver) = tokio::sync::watch::channel(watcher::WatchSet::new());
    let follower = tokio::spawn(host.discovery(&fx, false).follow(base, updates));
    receiver.wait_for(|set| set.len() == 6).await.expect("first scan");
    let newcomer = host.repos[20].to_string();
    let started = Instant::now();
    let id = host
        .run(&fx, 20, newcomer.clone(), &[("imagewatch.enable", "true")])
        .await;
    let running_at = Instant::now();
    tokio::time::timeout(
        Duration::from_secs(2),
        receiver.wait_for(|set| watched(set).contains(&newcomer)),
    )
    .await
    .expect("a started container is followed within 2 s")
    .expect("follower alive");
    let added_after = started.elapsed();
    let added_after_start = running_at.elapsed();
    let removed = Instant::now();
    let options = RemoveContainerOptionsBuilder::new().force(true).build();
    fx.docker.remove_container(&id, Some(options)).await.expect("removed");
    tokio::time::timeout(
        Duration::from_secs(2),
        receiver.wait_for(|set| !watched(set).contains(&newcomer)),
    )
    .await
    .expect("a removed container is followed within 2 s")
    .expect("follower alive");
    let removed_after = removed.elapsed();
    println!(
        "discovery followed a new container {} ms after it ran ({} ms incl. its create and start), a removed one in {} ms",
        added_after_start.as_millis(),
        added_after.as_millis(),
        removed_after.as_millis()
    );
    assert!(
        watched(&receiver.borrow()).contains(&fx.image.to_string()),
        "--image stays beside"
    );
    drop(receiver);
    tokio::time::timeout(Duration::from_secs(5), follower)
        .await
        .expect("follow returns once nobody listens")
        .expect("no panic");

    // A move of the image #00 (opted in) and #08 (unlabelled) share: only #00 is recreated.
    let repo0 = &host.repos[0];
    let layout = build_image(&fx.wd, &fx.own(&ImageSpec::busybox("2")));
    skopeo::push(
        &layout,
        &repo0.to_string(),
        ManifestFormat::Oci,
        Some((USER, PASSWORD)),
        &RegistryTls::Plain,
    );
    let refresher = fx
        .refresher_with(
            PASSWORD,
            DockerConfig {
                filter: host.filter(false),
                ..test_config()
            },
        )
        .await;
    let outcome = refresher.refresh_image(repo0).await.expect("refreshed");
    fx.track(&outcome.image_id);
    assert_eq!(outcome.recreated, vec![host.name(0)], "{}", outcome.summary());
    let unlabelled = fx.inspect(&host.name(8)).await;
    assert_eq!(
        unlabelled.image.as_deref(),
        Some(v1.as_str()),
        "the unlabelled container is never touched"
    );
    assert_eq!(fx.names().await.len(), 20, "nothing else created or removed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn monitor_only_and_mode_labels_set_the_policy_per_container() {
    let fx = Fixture::new("docker-labels").await;
    fx.push(&ImageSpec::busybox("1"));
    let refresher = fx.refresher(PASSWORD, DockerMode::Recreate, "ws-test-").await;
    let v1 = fx.pull(&refresher).await;
    let fixture = &fx;
    let labelled = |name: String, labels: &[(&str, &str)]| {
        let body = ContainerCreateBody {
            image: Some(fx.image.to_string()),
            labels: Some(labels.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect()),
            ..ContainerCreateBody::default()
        };
        async move { fixture.create_and_start(&name, body).await }
    };
    let watched_only = fx.name("ws-test-monitor-");
    let removed = fx.name("ws-test-remove-");
    let watchtower = fx.name("ws-test-wt-");
    labelled(watched_only.clone(), &[("imagewatch.monitor-only", "true")]).await;
    labelled(removed.clone(), &[("imagewatch.mode", "remove")]).await;
    labelled(
        watchtower.clone(),
        &[("com.centurylinklabs.watchtower.monitor-only", "true")],
    )
    .await;
    fx.push(&ImageSpec::busybox("2"));

    let outcome = refresher.refresh_image(&fx.image).await.expect("refreshed");
    fx.track(&outcome.image_id);
    let mut monitored = outcome.monitored.clone();
    monitored.sort();
    let mut expected = vec![watched_only.clone(), watchtower.clone()];
    expected.sort();
    assert_eq!(monitored, expected, "{}", outcome.summary());
    assert_eq!(outcome.removed, vec![removed], "{}", outcome.summary());
    assert_eq!(fx.inspect(&watched_only).await.image.as_deref(), Some(v1.as_str()));
    assert_eq!(fx.names().await, expected, "the remove-mode container is gone");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lifecycle_hooks_run_inside_old_then_new_container_and_a_failing_pre_update_skips() {
    let fx = Fixture::new("docker-hooks").await;
    fx.push(&ImageSpec::busybox("1"));
    let refresher = fx.refresher(PASSWORD, DockerMode::Recreate, "ws-test-").await;
    let v1 = fx.pull(&refresher).await;
    let shared = fx.wd.fresh_dir("hooks");
    let hooked = fx.name("ws-test-hooked-");
    let refusing = fx.name("ws-test-refusing-");
    let fixture = &fx;
    let with_hooks = |name: String, labels: Vec<(&'static str, &'static str)>| {
        let body = ContainerCreateBody {
            image: Some(fx.image.to_string()),
            cmd: Some(vec!["/bin/busybox".into(), "sleep".into(), "1234".into()]),
            labels: Some(labels.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect()),
            host_config: Some(HostConfig {
                binds: Some(vec![format!("{}:/shared", shared.display())]),
                ..HostConfig::default()
            }),
            ..ContainerCreateBody::default()
        };
        async move { fixture.create_and_start(&name, body).await }
    };
    let old_id = with_hooks(
        hooked.clone(),
        vec![
            ("imagewatch.pre-update", "echo \"pre $(hostname)\" >> /shared/log"),
            (
                "com.centurylinklabs.watchtower.lifecycle.post-update",
                "echo \"post $(hostname) $IMAGEWATCH_TEST_VERSION\" >> /shared/log",
            ),
        ],
    )
    .await;
    let refusing_id = with_hooks(
        refusing.clone(),
        vec![("imagewatch.pre-update", "echo 'queue not drained' >&2; exit 3")],
    )
    .await;
    fx.push(&ImageSpec::busybox("2"));

    let error = refresher
        .refresh_image(&fx.image)
        .await
        .expect_err("one container skipped");
    let DockerError::Containers { failures, done, .. } = &error else {
        panic!("{error:?}")
    };
    fx.track(&done.image_id);
    assert_eq!(done.recreated, vec![hooked.clone()], "{error}");
    assert_eq!(failures.len(), 1, "{error}");
    assert_eq!(
        (failures[0].container.as_str(), failures[0].step),
        (refusing.as_str(), "pre-update hook")
    );
    assert!(
        failures[0].message.contains("exited with code 3: queue not drained"),
        "{error}"
    );
    assert_eq!(failures[0].rollback, "update skipped; the container was not touched");
    let untouched = fx.inspect(&refusing).await;
    assert_eq!(untouched.id.as_deref(), Some(refusing_id.as_str()));
    assert!(running(&untouched));
    assert_eq!(untouched.image.as_deref(), Some(v1.as_str()));

    let new = fx.inspect(&hooked).await;
    let new_id = new.id.clone().expect("id");
    let log = std::fs::read_to_string(shared.join("log")).expect("hooks wrote");
    let lines: Vec<&str> = log.lines().collect();
    assert_eq!(
        lines,
        vec![format!("pre {}", &old_id[..12]), format!("post {} 2", &new_id[..12])],
        "pre-update in the old container, then post-update in the new one on v2"
    );
}

/// `docker-compose` (the one on this machine) run in `dir` for `project`; panics with its
/// output when it fails.
fn compose(dir: &std::path::Path, project: &str, args: &[&str]) -> String {
    let output = std::process::Command::new("docker-compose")
        .current_dir(dir)
        .args(["-p", project, "-f", "compose.yml"])
        .args(args)
        .output()
        .expect("docker-compose runs");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(output.status.success(), "docker-compose {args:?} failed: {text}");
    text
}

/// Takes a Compose project down (containers, network, volumes) however the test ends.
struct ComposeProject {
    dir: std::path::PathBuf,
    name: String,
}

impl Drop for ComposeProject {
    fn drop(&mut self) {
        let _ = std::process::Command::new("docker-compose")
            .current_dir(&self.dir)
            .args(["-p", &self.name, "-f", "compose.yml", "down", "-v", "--timeout", "1"])
            .output();
    }
}

/// A Compose project of two services, `web` depending on `db`, brought up by the real
/// `docker-compose`. The docker-compose 1.29 on this machine does not write the
/// `com.docker.compose.depends_on` label that Compose v2 writes, so the file sets it as v2 would.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compose_service_is_recreated_so_compose_still_knows_it_and_its_dependent_restarts_after() {
    let fx = Fixture::new("docker-compose").await;
    fx.push(&ImageSpec::busybox("1"));
    let puller = fx.refresher(PASSWORD, DockerMode::Recreate, "unused-").await;
    let v1 = fx.pull(&puller).await;
    let web_image = format!("{}/imagewatch-test/web-{}", fx.image.host(), fx.run);
    let options = bollard::query_parameters::TagImageOptionsBuilder::new()
        .repo(&web_image)
        .tag("latest")
        .build();
    fx.docker.tag_image(&v1, Some(options)).await.expect("tagged");
    let project = fx.run.replace(['.'], "");
    let dir = fx.wd.fresh_dir("compose");
    std::fs::write(
        dir.join("compose.yml"),
        format!(
            r#"version: "2.4"
services:
  db:
    image: {db}
    command: ["/bin/busybox", "sleep", "3600"]
    stop_grace_period: 1s
    volumes: ["data:/data"]
    networks:
      default:
        aliases: ["database"]
  web:
    image: {web}:latest
    command: ["/bin/busybox", "sleep", "3600"]
    stop_grace_period: 1s
    depends_on: ["db"]
    labels:
      com.docker.compose.depends_on: "db:service_started:false"
volumes:
  data: {{}}
"#,
            db = fx.image,
            web = web_image
        ),
    )
    .expect("compose file");
    let _down = ComposeProject {
        dir: dir.clone(),
        name: project.clone(),
    };
    compose(&dir, &project, &["up", "-d"]);
    let db = format!("{project}_db_1");
    let web = format!("{project}_web_1");
    let web_started = fx
        .inspect(&web)
        .await
        .state
        .and_then(|s| s.started_at)
        .expect("started");
    fx.push(&ImageSpec::busybox("2"));

    let refresher = fx.refresher(PASSWORD, DockerMode::Recreate, &project).await;
    let outcome = refresher.refresh_image(&fx.image).await.expect("refreshed");
    fx.track(&outcome.image_id);
    assert_eq!(outcome.recreated, vec![db.clone()], "{}", outcome.summary());
    assert!(outcome.started_first.is_empty(), "a read-write volume: stop-first");
    assert_eq!(outcome.restarted, vec![web.clone()], "{}", outcome.summary());

    let new_db = fx.inspect(&db).await;
    assert_eq!(new_db.image.as_deref(), Some(outcome.image_id.as_str()));
    let labels = new_db
        .config
        .as_ref()
        .and_then(|c| c.labels.clone())
        .unwrap_or_default();
    assert_eq!(labels.get("com.docker.compose.project"), Some(&project));
    assert_eq!(labels.get("com.docker.compose.service").map(String::as_str), Some("db"));
    let network = format!("{project}_default");
    let aliases = new_db
        .network_settings
        .as_ref()
        .and_then(|s| s.networks.as_ref())
        .and_then(|n| n.get(&network))
        .and_then(|e| e.aliases.clone())
        .unwrap_or_default();
    assert!(
        aliases.contains(&"database".to_owned()) && aliases.contains(&"db".to_owned()),
        "{aliases:?}"
    );
    let volumes: Vec<String> = new_db.mounts.iter().flatten().filter_map(|m| m.name.clone()).collect();
    assert!(volumes.contains(&format!("{project}_data")), "{volumes:?}");
    let db_started = new_db.state.and_then(|s| s.started_at).expect("started");
    let web_restarted = fx
        .inspect(&web)
        .await
        .state
        .and_then(|s| s.started_at)
        .expect("started");
    assert_ne!(web_restarted, web_started, "web was restarted");
    assert!(web_restarted > db_started, "after db: {web_restarted} vs {db_started}");

    let listed = compose(&dir, &project, &["ps"]);
    for name in [&db, &web] {
        let line = listed.lines().find(|line| line.starts_with(name.as_str()));
        assert!(
            line.is_some_and(|l| l.contains("Up")),
            "{name} not listed as up:\n{listed}"
        );
    }
    // `up` adopts them: no duplicate, no name conflict.
    compose(&dir, &project, &["up", "-d"]);
    let options = ListContainersOptionsBuilder::new()
        .all(true)
        .filters(&HashMap::from([(
            "label",
            vec![format!("com.docker.compose.project={project}")],
        )]))
        .build();
    let mut names: Vec<String> = fx
        .docker
        .list_containers(Some(options))
        .await
        .expect("list")
        .into_iter()
        .flat_map(|c| c.names.unwrap_or_default())
        .map(|n| n.trim_start_matches('/').to_owned())
        .collect();
    names.sort();
    assert_eq!(names, vec![db, web]);
}
