//! The Swarm refresher against the REAL Docker daemon of this machine in swarm mode (a single
//! node, started by test-support when the daemon is not a manager and left again afterwards) and
//! a REAL registry with htpasswd auth on 127.0.0.1: busybox images built by test-support, pushed
//! by skopeo, pulled by the swarm's node with the `X-Registry-Auth` the refresher sends.
//!
//! Every service and image a test creates carries a per-run name and is removed when the test
//! ends, passing or failing. Update delays and monitor periods are a second or two, the least
//! Swarm honours usefully.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use bollard::Docker;
use bollard::models::{
    EndpointSpec, EndpointSpecModeEnum, NetworkAttachmentConfig, NetworkCreateRequest, ServiceSpec, ServiceSpecMode,
    ServiceSpecModeReplicated, ServiceSpecRollbackConfig, ServiceSpecRollbackConfigFailureActionEnum,
    ServiceSpecUpdateConfig, ServiceSpecUpdateConfigFailureActionEnum, ServiceSpecUpdateConfigOrderEnum, Task,
    TaskSpec, TaskSpecContainerSpec, TaskState,
};
use bollard::query_parameters::{ListTasksOptionsBuilder, RemoveImageOptionsBuilder};
use refresh::{ServiceFilter, SwarmConfig, SwarmError, SwarmRefresher};
use registry_auth::AuthSettings;
use registry_core::{Credentials, Digest, EngineAuthSource, ImageReference, Transport, TransportConfig};
use test_support::{
    ImageSpec, ManifestFormat, Registry, RegistryConfig, RegistryTls, Swarm, WorkDir, build_image, skopeo,
};
use watcher::{RefreshEvent, Refresher};

const USER: &str = "swarm-user";
const PASSWORD: &str = "p?>?>?>~~~sw4rm";
const SECOND: i64 = 1_000_000_000;

struct Fixture {
    wd: WorkDir,
    _registry: Registry,
    _swarm: Swarm,
    docker: Docker,
    run: String,
    image: ImageReference,
    services: Vec<String>,
    networks: Vec<String>,
    containers: Vec<String>,
}

impl Fixture {
    async fn new(label: &str) -> Fixture {
        let wd = WorkDir::new(label);
        let registry = Registry::start(&wd, RegistryConfig::htpasswd(&[(USER, PASSWORD)]));
        let swarm = Swarm::join();
        let docker = Docker::connect_with_socket_defaults()
            .expect("Docker socket at /var/run/docker.sock")
            .negotiate_version()
            .await
            .expect("Docker Engine answers");
        let nanos = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        let run = format!("{label}-{}-{nanos}", std::process::id());
        let image = registry
            .image_ref(&format!("imagewatch-fleet/{label}"), "latest")
            .parse()
            .expect("reference");
        Fixture {
            wd,
            _registry: registry,
            _swarm: swarm,
            docker,
            run,
            image,
            services: Vec::new(),
            networks: Vec::new(),
            containers: Vec::new(),
        }
    }

    fn push(&self, spec: &ImageSpec) -> Digest {
        let layout = build_image(&self.wd, spec);
        skopeo::push(
            &layout,
            &self.image.to_string(),
            ManifestFormat::Oci,
            Some((USER, PASSWORD)),
            &RegistryTls::Plain,
        )
        .parse()
        .expect("digest")
    }

    fn pinned(&self, digest: &Digest) -> String {
        format!("{}@{digest}", self.image.name_and_tag())
    }

    /// The production pull credentials: the wiring's engine-auth answer for the registry,
    /// configured as an operator would. The daemon has no login for it, so a wrong payload fails
    /// the nodes' pulls.
    async fn engine_auth(&self) -> Arc<dyn EngineAuthSource> {
        let host = self.image.host().clone();
        let mut settings = AuthSettings::new(host.clone());
        settings.registry_credentials = Some((host.clone(), Credentials::basic(USER, PASSWORD)));
        let transport = Arc::new(Transport::new(TransportConfig::default()).expect("transport"));
        let wired = registry_auth::wire(&settings, transport, &[host]).await.expect("wired");
        Arc::new(wired.engine_auth())
    }

    async fn refresher(&self) -> SwarmRefresher {
        let config = SwarmConfig {
            filter: ServiceFilter {
                name_prefix: Some(format!("iwf-{}", self.run)),
                label: None,
            },
            converge_timeout: Duration::from_secs(120),
            poll: Duration::from_millis(200),
            ..SwarmConfig::default()
        };
        SwarmRefresher::connect(config, self.engine_auth().await)
            .await
            .expect("engine")
    }

    /// Creates a replicated service on `image` with the image's own command (unless `cmd`), an
    /// update config of one task at a time with a short delay and monitor that rolls back on
    /// failure, and waits until its tasks run.
    async fn service(
        &mut self,
        suffix: &str,
        image: &str,
        replicas: i64,
        cmd: Option<&[&str]>,
        network: Option<&str>,
    ) -> String {
        let name = format!("iwf-{}-{suffix}", self.run);
        let spec = ServiceSpec {
            name: Some(name.clone()),
            mode: Some(ServiceSpecMode {
                replicated: Some(ServiceSpecModeReplicated {
                    replicas: Some(replicas),
                }),
                ..ServiceSpecMode::default()
            }),
            task_template: Some(TaskSpec {
                container_spec: Some(TaskSpecContainerSpec {
                    image: Some(image.to_owned()),
                    command: cmd.map(|cmd| cmd.iter().map(|s| (*s).to_owned()).collect()),
                    // busybox as PID 1 ignores SIGTERM: do not wait Swarm's default 10 s.
                    stop_grace_period: Some(SECOND),
                    ..TaskSpecContainerSpec::default()
                }),
                ..TaskSpec::default()
            }),
            update_config: Some(ServiceSpecUpdateConfig {
                parallelism: Some(1),
                delay: Some(SECOND),
                failure_action: Some(ServiceSpecUpdateConfigFailureActionEnum::ROLLBACK),
                monitor: Some(2 * SECOND),
                max_failure_ratio: Some(0.0),
                order: Some(ServiceSpecUpdateConfigOrderEnum::START_FIRST),
            }),
            rollback_config: Some(ServiceSpecRollbackConfig {
                parallelism: Some(0),
                delay: Some(0),
                failure_action: Some(ServiceSpecRollbackConfigFailureActionEnum::PAUSE),
                monitor: Some(SECOND),
                ..ServiceSpecRollbackConfig::default()
            }),
            networks: network.map(|network| {
                vec![NetworkAttachmentConfig {
                    target: Some(network.to_owned()),
                    aliases: None,
                    driver_opts: None,
                }]
            }),
            // Without the routing mesh, clients find the tasks by DNS round robin.
            endpoint_spec: network.map(|_| EndpointSpec {
                mode: Some(EndpointSpecModeEnum::DNSRR),
                ..EndpointSpec::default()
            }),
            ..ServiceSpec::default()
        };
        let header = self
            .engine_auth()
            .await
            .registry_auth(self.image.host())
            .await
            .expect("payload")
            .expect("credentials for the registry");
        self.docker
            .clone()
            .with_request_modifier(move |mut request| {
                if let Ok(value) = header.expose().parse() {
                    request.headers_mut().insert("X-Registry-Auth", value);
                }
                request
            })
            .create_service(spec, None)
            .await
            .expect("service created");
        self.services.push(name.clone());
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let running = self.running(&name).await;
            if running.len() == usize::try_from(replicas).expect("count")
                && running.iter().all(|t| image_of(t) == Some(image))
            {
                return name;
            }
            assert!(
                Instant::now() < deadline,
                "service {name} did not start: {:?}",
                states(&self.tasks(&name).await)
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    async fn tasks(&self, service: &str) -> Vec<Task> {
        let filters = HashMap::from([("service", vec![service.to_owned()])]);
        self.docker
            .list_tasks(Some(ListTasksOptionsBuilder::new().filters(&filters).build()))
            .await
            .expect("tasks")
    }

    /// The tasks meant to run that do run.
    async fn running(&self, service: &str) -> Vec<Task> {
        self.tasks(service)
            .await
            .into_iter()
            .filter(|t| t.desired_state == Some(TaskState::RUNNING))
            .filter(|t| t.status.as_ref().and_then(|s| s.state) == Some(TaskState::RUNNING))
            .collect()
    }

    /// The running tasks once `count` of them run `image` (or after 20 s, whatever runs).
    async fn running_on(&self, service: &str, image: &str, count: usize) -> Vec<Task> {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let running = self.running(service).await;
            let on_image = running.iter().filter(|t| image_of(t) == Some(image)).count();
            if (on_image == count && running.len() == count) || Instant::now() > deadline {
                return running;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    fn event(&self, old: &Digest, new: &Digest) -> RefreshEvent {
        RefreshEvent::new(self.image.clone(), None, old.clone(), new.clone(), SystemTime::now())
    }
}

impl Drop for Fixture {
    fn drop(&mut self) {
        let docker = self.docker.clone();
        let services = std::mem::take(&mut self.services);
        let networks = std::mem::take(&mut self.networks);
        for container in std::mem::take(&mut self.containers) {
            let _ = std::process::Command::new("docker")
                .args(["rm", "-f", &container])
                .output();
        }
        let image = self.image.name_and_tag();
        let cleanup = std::thread::spawn(move || {
            let Ok(runtime) = tokio::runtime::Builder::new_current_thread().enable_all().build() else {
                return;
            };
            runtime.block_on(async move {
                for service in &services {
                    let _ = docker.delete_service(service).await;
                }
                // Tasks' containers go shortly after their service; networks and images only then.
                for network in &networks {
                    for _ in 0..40 {
                        if docker.remove_network(network).await.is_ok() {
                            break;
                        }
                        tokio::time::sleep(Duration::from_millis(250)).await;
                    }
                }
                let deadline = Instant::now() + Duration::from_secs(20);
                while Instant::now() < deadline {
                    let images = docker
                        .list_images(None::<bollard::query_parameters::ListImagesOptions>)
                        .await
                        .unwrap_or_default();
                    let ours: Vec<String> = images
                        .into_iter()
                        .filter(|i| {
                            i.repo_digests
                                .iter()
                                .chain(i.repo_tags.iter())
                                .any(|r| r.starts_with(&image.replace(":latest", "")))
                        })
                        .map(|i| i.id)
                        .collect();
                    if ours.is_empty() {
                        break;
                    }
                    for id in ours {
                        let remove = RemoveImageOptionsBuilder::new().force(true).build();
                        let _ = docker.remove_image(&id, Some(remove), None).await;
                    }
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
            });
        });
        let _ = cleanup.join();
    }
}

fn image_of(task: &Task) -> Option<&str> {
    task.spec.as_ref()?.container_spec.as_ref()?.image.as_deref()
}

fn states(tasks: &[Task]) -> Vec<String> {
    tasks
        .iter()
        .map(|t| {
            let status = t.status.clone().unwrap_or_default();
            format!(
                "{:?}/{:?} {} {}",
                t.desired_state,
                status.state,
                status.err.unwrap_or_default(),
                image_of(t).unwrap_or_default()
            )
        })
        .collect()
}

fn created(task: &Task) -> SystemTime {
    let text = task.created_at.clone().expect("created_at");
    humantime::parse_rfc3339_weak(text.trim_end_matches('Z').split('.').next().expect("seconds"))
        .map(|t| {
            let fraction = text.split('.').nth(1).map(|f| f.trim_end_matches('Z')).unwrap_or("0");
            let nanos: u64 = format!("{fraction:0<9}")[..9].parse().unwrap_or(0);
            t + Duration::from_nanos(nanos)
        })
        .expect("RFC 3339 time")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_push_rolls_every_task_to_the_new_digest_one_at_a_time_and_a_broken_one_is_rolled_back() {
    let mut fx = Fixture::new("swarm-roll").await;
    let v1 = fx.push(&ImageSpec::busybox("1"));
    let service = fx.service("app", &fx.pinned(&v1), 3, None, None).await;
    let refresher = fx.refresher().await;

    let v2 = fx.push(&ImageSpec::busybox("2"));
    let outcome = refresher.refresh(&fx.event(&v1, &v2)).await.expect("refreshed");
    assert!(
        outcome.summary().contains(&format!("refreshed 1 ({service})")),
        "{outcome}"
    );
    let running = fx.running(&service).await;
    assert_eq!(running.len(), 3, "{:?}", states(&running));
    assert!(
        running.iter().all(|t| image_of(t) == Some(fx.pinned(&v2).as_str())),
        "{:?}",
        states(&running)
    );
    // One at a time: each new task was created at least the update delay after the previous.
    let mut starts: Vec<SystemTime> = running.iter().map(created).collect();
    starts.sort();
    for pair in starts.windows(2) {
        let gap = pair[1].duration_since(pair[0]).unwrap_or_default();
        assert!(
            gap >= Duration::from_millis(900),
            "tasks replaced {gap:?} apart: {starts:?}"
        );
    }

    // A v3 whose command exits at once: Swarm rolls the service back to v2.
    let v3 = fx.push(&ImageSpec::busybox("3").cmd(&["/bin/busybox", "false"]));
    let error = refresher
        .refresh_services(&fx.image, &v3)
        .await
        .expect_err("a broken image is not refreshed");
    assert!(error.rolled_back(), "{error}");
    let SwarmError::Services { failures, .. } = &error else {
        panic!("{error}")
    };
    assert_eq!(failures[0].result, "rolled_back", "{error}");
    assert!(
        !failures[0].task_errors.is_empty(),
        "the failed task's error is reported: {error}"
    );
    // Swarm marks the rollback complete as it restarts the old tasks: give them a moment.
    let running = fx.running_on(&service, &fx.pinned(&v2), 3).await;
    assert_eq!(running.len(), 3, "{:?}", states(&running));
    assert!(
        running.iter().all(|t| image_of(t) == Some(fx.pinned(&v2).as_str())),
        "runs v2 again: {:?}",
        states(&running)
    );
    // Through the Refresher seam the watcher sees a failed refresh that says why.
    let seam = refresher
        .refresh(&fx.event(&v2, &v3))
        .await
        .expect_err("rolled back again");
    assert!(seam.message().contains("rolled_back"), "{seam}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pinned_services_are_reported_and_left_alone() {
    let mut fx = Fixture::new("swarm-pin").await;
    let v1 = fx.push(&ImageSpec::busybox("1"));
    let pin = format!("{}/{}@{v1}", fx.image.host(), fx.image.repository());
    let service = fx.service("pinned", &pin, 1, None, None).await;
    let v2 = fx.push(&ImageSpec::busybox("2"));
    let outcome = fx
        .refresher()
        .await
        .refresh(&fx.event(&v1, &v2))
        .await
        .expect("nothing failed");
    assert!(
        outcome.summary().contains(&format!("(left alone) 1 ({service})")),
        "{outcome}"
    );
    let running = fx.running(&service).await;
    assert!(
        running.iter().all(|t| image_of(t) == Some(pin.as_str())),
        "{:?}",
        states(&running)
    );
}

/// This machine's kernel has no IPVS, so Swarm's routing mesh (published ports, VIPs) cannot
/// forward here: the service's clients sit on its attachable overlay network and find its tasks
/// by DNS round robin, as a front proxy would. A client container asks every 50 ms, on a new
/// connection each time.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_served_port_keeps_answering_through_the_rollout() {
    let mut fx = Fixture::new("swarm-port").await;
    let v1 = fx.push(&ImageSpec::busybox("1"));
    let network = format!("iwf-{}-net", fx.run);
    fx.docker
        .create_network(NetworkCreateRequest {
            name: network.clone(),
            driver: Some("overlay".into()),
            attachable: Some(true),
            ..NetworkCreateRequest::default()
        })
        .await
        .expect("overlay network");
    fx.networks.push(network.clone());
    let httpd = ["/bin/busybox", "httpd", "-f", "-p", "8080", "-h", "/"];
    let service = fx
        .service("web", &fx.pinned(&v1), 2, Some(&httpd), Some(&network))
        .await;
    let client = format!("iwf-{}-client", fx.run);
    // busybox's own resolver and nc: its static wget cannot be used here.
    let script = format!(
        "while true; do \
         ip=$(/bin/busybox nslookup {service} 127.0.0.11 | /bin/busybox awk '/^Address: /{{print $2; exit}}'); \
         out=$(printf 'GET /version.txt HTTP/1.0\\r\\n\\r\\n' | /bin/busybox nc -w 2 \"$ip\" 8080); \
         if echo \"$out\" | /bin/busybox grep -q ' 200 '; \
         then echo \"ok $(echo \"$out\" | /bin/busybox tail -n 1)\"; else echo failed; fi; \
         /bin/busybox sleep 0.05; done"
    );
    let started = std::process::Command::new("docker")
        .args([
            "run",
            "-d",
            "--name",
            &client,
            "--network",
            &network,
            &fx.pinned(&v1),
            "/bin/sh",
            "-c",
            &script,
        ])
        .output()
        .expect("docker run");
    assert!(started.status.success(), "{}", String::from_utf8_lossy(&started.stderr));
    fx.containers.push(client.clone());
    let answers = || -> Vec<String> {
        let logs = std::process::Command::new("docker")
            .args(["logs", &client])
            .output()
            .expect("docker logs");
        String::from_utf8_lossy(&logs.stdout)
            .lines()
            .map(str::to_owned)
            .collect()
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    while !answers().iter().any(|line| line == "ok 1") {
        assert!(Instant::now() < deadline, "{service} never answered: {:?}", answers());
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let before = answers().len();

    let v2 = fx.push(&ImageSpec::busybox("2"));
    fx.refresher()
        .await
        .refresh(&fx.event(&v1, &v2))
        .await
        .expect("refreshed");
    tokio::time::sleep(Duration::from_millis(500)).await;
    let during: Vec<String> = answers().split_off(before);
    let count = |wanted: &str| during.iter().filter(|line| line.as_str() == wanted).count();
    eprintln!(
        "rollout: {} requests, {} answered by v1, {} by v2, {} failed",
        during.len(),
        count("ok 1"),
        count("ok 2"),
        count("failed")
    );
    assert!(count("ok 2") > 0, "{during:?}");
    assert_eq!(count("failed"), 0, "requests failed during the rollout: {during:?}");
}
