//! The harness: a REAL registry (Debian's docker-registry, optionally sending its notifications
//! to the API), images pushed by skopeo, the real registry client behind the watcher, a
//! recording refresher, and the API served on a loopback port. Blocking work (registry start,
//! skopeo, the synchronous HTTP client) runs off the async workers, so the API keeps answering
//! the registry's notifications while a push is in progress.

#![allow(dead_code)]

pub mod prom;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use async_trait::async_trait;
use http_api::{Api, ApiConfig, ListenAddr, Server};
use registry_core::client::{ClientStats, RegistryClient, StatsSnapshot, Transport, TransportConfig};
use registry_core::{ImageReference, Secret};
use test_support::{
    HttpRequest, HttpResponse, ImageSpec, ManifestFormat, Registry, RegistryConfig, RegistryTls, WorkDir,
};
use tokio::sync::oneshot;
use watcher::{
    RefreshError, RefreshEvent, RefreshOutcome, Refresher, RegistrySource, StatusBoard, TriggerHandle, WatchSet,
    Watcher, WatcherConfig,
};

pub const HOOK_TOKEN: &str = "hook-token-5f1c";
pub const GITHUB_SECRET: &str = "github-secret-9a2e";
pub const GITEA_SECRET: &str = "gitea-secret-77b0";
pub const API_TOKEN: &str = "api-token-c3d4";
/// The poll interval of every test: polling never explains what a test sees.
pub const POLL: Duration = Duration::from_secs(600);

/// A refresh as the recording refresher saw it.
#[derive(Clone, Debug)]
pub struct Fired {
    pub event: RefreshEvent,
    pub at: Instant,
    pub wall: SystemTime,
}

#[derive(Debug, Default)]
pub struct RecordingRefresher {
    fired: Mutex<Vec<Fired>>,
}

impl RecordingRefresher {
    pub fn fired(&self) -> Vec<Fired> {
        self.fired.lock().expect("lock").clone()
    }

    /// Waits until `count` refreshes happened (at most `limit`). Each refresh carries its own
    /// time, so the polling granularity does not enter any measurement.
    pub async fn wait_for(&self, count: usize, limit: Duration) -> Vec<Fired> {
        wait_until(limit, || self.fired().len() >= count).await;
        self.fired()
    }
}

#[async_trait]
impl Refresher for RecordingRefresher {
    fn name(&self) -> &'static str {
        "recording"
    }

    async fn refresh(&self, event: &RefreshEvent) -> Result<RefreshOutcome, RefreshError> {
        self.fired.lock().expect("lock").push(Fired {
            event: event.clone(),
            at: Instant::now(),
            wall: SystemTime::now(),
        });
        Ok(RefreshOutcome::new("recorded"))
    }
}

/// What a test changes about the setup.
pub struct Options {
    /// Point the registry's notifications at `/hooks/distribution?token=HOOK_TOKEN`.
    pub notifications: bool,
    /// Repositories watched at `:latest`.
    pub watched: Vec<&'static str>,
    pub config: Box<dyn FnOnce(ApiConfig) -> ApiConfig + Send>,
}

impl Default for Options {
    fn default() -> Options {
        Options {
            notifications: false,
            watched: vec!["org/app"],
            config: Box::new(|config| config),
        }
    }
}

pub struct Harness {
    pub wd: WorkDir,
    pub registry: Arc<Registry>,
    pub stats: Arc<ClientStats>,
    pub refresher: Arc<RecordingRefresher>,
    pub triggers: TriggerHandle,
    pub status: StatusBoard,
    pub base: String,
    server: Option<Server>,
    stop: Option<oneshot::Sender<()>>,
    run: Option<tokio::task::JoinHandle<()>>,
    watcher: Option<Watcher>,
}

impl Harness {
    /// Everything but the watch loop, which [`Harness::run`] starts. Every secret is set.
    pub async fn start(label: &str, options: Options) -> Harness {
        let wd = WorkDir::new(label);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let base = format!("http://{addr}");
        let mut config = RegistryConfig::anonymous();
        if options.notifications {
            config = config.notifications(&format!("{base}/hooks/distribution?token={HOOK_TOKEN}"));
        }
        let registry = {
            let wd = wd.clone();
            tokio::task::spawn_blocking(move || Registry::start(&wd, config))
                .await
                .expect("registry")
        };
        let registry = Arc::new(registry);
        let mut set = WatchSet::new();
        for name in &options.watched {
            let reference: ImageReference = registry.image_ref(name, "latest").parse().expect("reference");
            set.add_image(reference).expect("watchable");
        }
        let transport = Transport::new(TransportConfig {
            connect_timeout: Duration::from_millis(500),
            request_timeout: Duration::from_secs(5),
            ..TransportConfig::default()
        })
        .expect("transport");
        let client = Arc::new(RegistryClient::new(Arc::new(transport)));
        let stats = client.stats().clone();
        let refresher = Arc::new(RecordingRefresher::default());
        let watcher = Watcher::new(
            set,
            Arc::new(RegistrySource::new(client)),
            refresher.clone(),
            WatcherConfig {
                interval: POLL,
                jitter: 0.0,
                ..WatcherConfig::default()
            },
        )
        .expect("watcher");
        let listen = ListenAddr::from(addr);
        let mut api_config = ApiConfig::for_listen(&listen);
        api_config.hook_token = Some(Secret::new(HOOK_TOKEN));
        api_config.github_secret = Some(Secret::new(GITHUB_SECRET));
        api_config.gitea_secret = Some(Secret::new(GITEA_SECRET));
        let api_config = (options.config)(api_config);
        let api = Api::new(api_config, watcher.trigger(), watcher.status()).with_registry_stats(stats.clone());
        let server = Server::serve(listener, api).expect("serve");
        Harness {
            wd,
            registry,
            stats,
            refresher,
            triggers: watcher.trigger(),
            status: watcher.status(),
            base,
            server: Some(server),
            stop: None,
            run: None,
            watcher: Some(watcher),
        }
    }

    /// Starts the watch loop (its first tick seeds) and waits for the first tick to finish.
    pub async fn run(&mut self) {
        let mut watcher = self.watcher.take().expect("run once");
        let (stop, stopped) = oneshot::channel::<()>();
        self.stop = Some(stop);
        self.run = Some(tokio::spawn(async move {
            watcher
                .run(async move {
                    let _ = stopped.await;
                })
                .await
                .expect("watcher stops cleanly");
        }));
        let status = self.status.clone();
        wait_until(Duration::from_secs(10), || status.metrics().last_tick.is_some()).await;
    }

    /// Stops the watch loop (the API keeps serving).
    pub async fn stop_watcher(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(run) = self.run.take() {
            run.await.expect("watcher task");
        }
    }

    pub fn reference(&self, name: &str) -> ImageReference {
        self.registry.image_ref(name, "latest").parse().expect("reference")
    }

    /// Pushes a distinct image to `name:latest`; answers the registry's digest for it.
    pub async fn push(&self, name: &str, content: &str) -> String {
        let wd = self.wd.clone();
        let dest = self.registry.image_ref(name, "latest");
        let content = content.to_owned();
        tokio::task::spawn_blocking(move || {
            let layout = test_support::build_image(&wd, &ImageSpec::with_content(&content));
            test_support::skopeo::push(&layout, &dest, ManifestFormat::Oci, None, &RegistryTls::Plain)
        })
        .await
        .expect("push")
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    pub fn registry_stats(&self) -> StatsSnapshot {
        self.stats.snapshot()
    }

    /// How many times the watcher asked the registry about `name:latest`.
    pub fn checks_of(&self, name: &str) -> u64 {
        self.status.image(&self.reference(name)).map_or(0, |state| state.checks)
    }

    /// Waits until `name` has been checked more than `before` times.
    pub async fn wait_for_check(&self, name: &str, before: u64) {
        let status = self.status.clone();
        let reference = self.reference(name);
        let checked = wait_until(Duration::from_secs(10), move || {
            status.image(&reference).is_some_and(|state| state.checks > before)
        })
        .await;
        assert!(checked, "{name} was not checked again within 10 s");
    }
}

impl Drop for Harness {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        drop(self.server.take());
    }
}

/// Polls `condition` every 10 ms for up to `limit`; answers whether it held.
pub async fn wait_until(limit: Duration, mut condition: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + limit;
    loop {
        if condition() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Sends a request from a blocking thread.
pub async fn send(request: HttpRequest) -> HttpResponse {
    let description = format!("{} {}", request.method, request.url);
    tokio::task::spawn_blocking(move || request.send())
        .await
        .expect("client thread")
        .unwrap_or_else(|e| panic!("{description}: {e}"))
}

pub fn post(url: &str, body: impl Into<Vec<u8>>) -> HttpRequest {
    HttpRequest::new("POST", url)
        .header("Content-Type", "application/json")
        .body(body)
}

pub fn json(response: &HttpResponse) -> serde_json::Value {
    serde_json::from_slice(&response.body).unwrap_or_else(|e| panic!("not JSON ({e}): {}", response.text()))
}

/// A distribution envelope with one manifest push of `repository:tag` (`digest`) on `host`.
pub fn distribution_push(host: &str, repository: &str, tag: &str, digest: &str) -> String {
    serde_json::json!({
        "events": [{
            "id": "evt-1",
            "timestamp": "2026-01-01T00:00:00Z",
            "action": "push",
            "target": {
                "mediaType": "application/vnd.oci.image.manifest.v1+json",
                "digest": digest,
                "repository": repository,
                "tag": tag,
            },
            "request": {"host": host, "method": "PUT"},
        }]
    })
    .to_string()
}

/// A GitHub `package` event publishing `owner/name:tag` (`digest`) on `host`.
pub fn github_published(host: &str, owner: &str, name: &str, tag: &str, digest: &str) -> String {
    serde_json::json!({
        "action": "published",
        "package": {
            "name": name,
            "namespace": owner,
            "package_type": "CONTAINER",
            "owner": {"login": owner},
            "package_version": {"container_metadata": {"tag": {"name": tag, "digest": digest}}},
            "registry": {"url": format!("http://{host}/{owner}")},
        }
    })
    .to_string()
}

/// A Gitea package event creating `owner/name:tag` on `host`.
pub fn gitea_created(host: &str, owner: &str, name: &str, tag: &str) -> String {
    serde_json::json!({
        "action": "created",
        "package": {
            "type": "container",
            "name": name,
            "version": tag,
            "owner": {"login": owner},
            "html_url": format!("http://{host}/{owner}/-/packages/container/{name}/{tag}"),
        }
    })
    .to_string()
}

/// The last time the registry logged a completed `PUT` of `name`'s manifest `tag`.
pub fn manifest_put_at(registry: &Registry, name: &str, tag: &str) -> Option<SystemTime> {
    let uri = format!("/v2/{name}/manifests/{tag}");
    let log = std::fs::read_to_string(registry.log_path()).ok()?;
    log.lines()
        .rev()
        .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
        .filter(|e| {
            e["http.request.method"] == "PUT"
                && e["http.request.uri"] == uri.as_str()
                && e["msg"].as_str().is_some_and(|m| m.starts_with("response completed"))
        })
        .find_map(|e| e["time"].as_str().and_then(|t| humantime::parse_rfc3339(t).ok()))
}

/// A digest that is no image's.
pub fn nobody() -> String {
    format!("sha256:{}", "0".repeat(64))
}

/// A Docker Hub push of `repo_name:tag`.
pub fn dockerhub_push(repo_name: &str, tag: &str) -> String {
    serde_json::json!({
        "push_data": {"tag": tag, "pusher": "someone"},
        "repository": {"repo_name": repo_name},
    })
    .to_string()
}
