//! `imagewatch watch`: polls the watched images' digests and refreshes on a move. Parses flags
//! and environment into a `WatchSet`, a `WatcherConfig` and one refresher, then runs one tick
//! (`--once`) or the loop until SIGINT/SIGTERM. Refresh is opt-in: without `--refresh` it is
//! `docker` when `IMAGE_AUTO_REFRESH=true`, otherwise `none` (monitor only).

use std::collections::HashMap;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use refresh::{
    ContainerFilter, Discovered, Discovery, DiscoveryConfig, DockerConfig, DockerMode, DockerRefresher, ExecConfig,
    ExecRefresher, Notifier, NotifyTarget, UpdateOrder, WebhookConfig, WebhookRefresher,
};
use registry_auth::EngineAuths;
use registry_core::{ImageReference, Secret};
use tracing::info;
use watcher::{MonitorOnly, Refresher, RegistrySource, WatchSet, Watcher, WatcherConfig};

use crate::exit::Failure;
use crate::refresh_kind::RefreshKind;
use crate::settings::Settings;
use crate::transport::TransportArgs;

mod api;
mod fleet;
mod reload;
mod routed;
pub mod trust_gate;

/// The platform's switch for refreshing containers; opt-in.
pub const AUTO_REFRESH_ENV: &str = "IMAGE_AUTO_REFRESH";

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum ModeArg {
    Recreate,
    Remove,
}

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Run one tick and exit: status 1 if any image failed (a fresh state only seeds).
    #[arg(long)]
    once: bool,
    /// Time between ticks, e.g. `30s`, `5m`, `1h`.
    #[arg(long, value_name = "DURATION", env = "IMAGEWATCH_INTERVAL", default_value = "5m", value_parser = duration)]
    interval: Duration,
    /// Jitter as a fraction of the interval (0.1 = ±10 %, at most 0.5).
    #[arg(long, value_name = "FRACTION", env = "IMAGEWATCH_JITTER", default_value_t = 0.1)]
    jitter: f64,
    /// Watch the runtime image `<prefix>/workspace-template-NAME:latest` (repeatable). Without
    /// `--runtime` and `--image`, every default runtime is watched.
    #[arg(
        long = "runtime",
        value_name = "NAME",
        env = "IMAGEWATCH_RUNTIMES",
        value_delimiter = ','
    )]
    runtimes: Vec<String>,
    /// Watch any image reference (repeatable).
    #[arg(long = "image", value_name = "REF", env = "IMAGEWATCH_IMAGES", value_delimiter = ',')]
    images: Vec<String>,
    /// Where seen digests persist across restarts: a JSON file (written atomically), or
    /// `postgres://user:password@host:port/db` shared by replicas, one of which refreshes.
    #[arg(long, value_name = "PATH|URL", env = "IMAGEWATCH_STATE", hide_env_values = true, value_parser = fleet::state)]
    state: Option<fleet::StateArg>,
    /// What to do when a digest moves. Default: `docker` if IMAGE_AUTO_REFRESH=true, else `none`.
    #[arg(long, value_enum, env = "IMAGEWATCH_REFRESH")]
    refresh: Option<RefreshKind>,
    /// `true` enables the Docker refresher when `--refresh` is not given.
    #[arg(long = "auto-refresh", value_name = "BOOL", env = AUTO_REFRESH_ENV, hide = true)]
    auto_refresh: Option<String>,
    /// Digest checks running at once per registry host (each host on its own).
    #[arg(long, value_name = "N", env = "IMAGEWATCH_CONCURRENCY", default_value_t = 8)]
    concurrency: usize,
    /// Digest checks running at once over all registry hosts together.
    #[arg(long, value_name = "N", env = "IMAGEWATCH_GLOBAL_CONCURRENCY", default_value_t = registry_core::client::DEFAULT_GLOBAL_CONCURRENCY)]
    global_concurrency: usize,
    /// A TOML file holding what the flags hold (keys are the long flag names, e.g.
    /// `interval = "30s"`, `image = ["ghcr.io/org/app:latest"]`) and `[[image]]` tables with
    /// per-image settings (`ref`, `refresh`). Flags and environment win over the file. Reloaded
    /// on SIGHUP or when it changes; check one with `imagewatch config check PATH`.
    #[arg(long, value_name = "PATH", env = crate::config::CONFIG_ENV)]
    config: Option<PathBuf>,

    /// Docker Engine address (`unix:///var/run/docker.sock`, `tcp://host:2375`).
    #[arg(long, value_name = "URL", env = "DOCKER_HOST", help_heading = "Docker refresher")]
    docker_host: Option<String>,
    /// `recreate` the image's containers on the new image, or `remove` them for a platform
    /// that re-provisions.
    #[arg(
        long,
        value_enum,
        env = "IMAGEWATCH_DOCKER_MODE",
        default_value = "recreate",
        help_heading = "Docker refresher"
    )]
    docker_mode: ModeArg,
    /// Only containers whose name starts with this (e.g. `ws-`).
    #[arg(
        long,
        value_name = "PREFIX",
        env = "IMAGEWATCH_CONTAINER_PREFIX",
        help_heading = "Docker refresher"
    )]
    container_prefix: Option<String>,
    /// Only containers with this label (`key=value`).
    #[arg(long, value_name = "KEY=VALUE", env = "IMAGEWATCH_CONTAINER_LABEL", value_parser = ContainerFilter::parse_label, help_heading = "Docker refresher")]
    container_label: Option<(String, String)>,
    /// How long a container may take to stop before it is killed.
    #[arg(long, value_name = "DURATION", env = "IMAGEWATCH_STOP_TIMEOUT", default_value = "10s", value_parser = duration, help_heading = "Docker refresher")]
    stop_timeout: Duration,
    /// How long a recreated container must keep running before the old one is removed; if it
    /// exits or restarts within this, the old container is put back.
    #[arg(long, value_name = "DURATION", env = "IMAGEWATCH_SETTLE", default_value = "5s", value_parser = duration, help_heading = "Docker refresher")]
    settle: Duration,
    /// How long a recreated container with a HEALTHCHECK may take to become healthy before the
    /// old one is put back.
    #[arg(long, value_name = "DURATION", env = "IMAGEWATCH_HEALTH_TIMEOUT", default_value = "60s", value_parser = duration, help_heading = "Docker refresher")]
    health_timeout: Duration,

    #[command(flatten)]
    host: DockerHostArgs,

    /// The URL events are POSTed to.
    #[arg(
        long,
        value_name = "URL",
        env = "IMAGEWATCH_WEBHOOK_URL",
        help_heading = "Webhook refresher"
    )]
    webhook_url: Option<String>,
    /// Signs each body: `X-Imagewatch-Signature-256: sha256=<HMAC-SHA256 hex>`.
    #[arg(
        long,
        value_name = "SECRET",
        env = "IMAGEWATCH_WEBHOOK_SECRET",
        hide_env_values = true,
        value_parser = api::secret,
        help_heading = "Webhook refresher"
    )]
    webhook_secret: Option<Secret>,
    /// Per attempt.
    #[arg(long, value_name = "DURATION", env = "IMAGEWATCH_WEBHOOK_TIMEOUT", default_value = "10s", value_parser = duration, help_heading = "Webhook refresher")]
    webhook_timeout: Duration,
    /// Attempts in all; 5xx, 429, 408 and network errors are retried with backoff.
    #[arg(
        long,
        value_name = "N",
        env = "IMAGEWATCH_WEBHOOK_ATTEMPTS",
        default_value_t = 3,
        help_heading = "Webhook refresher"
    )]
    webhook_attempts: u32,

    /// The program to run (no shell); it gets IMAGEWATCH_IMAGE, IMAGEWATCH_RUNTIME,
    /// IMAGEWATCH_HOST, IMAGEWATCH_OLD_DIGEST, IMAGEWATCH_NEW_DIGEST, IMAGEWATCH_TIME, and with a
    /// trust policy IMAGEWATCH_VERIFIED_KEY and IMAGEWATCH_VERIFIED_AT.
    #[arg(
        long,
        value_name = "PROGRAM",
        env = "IMAGEWATCH_EXEC_COMMAND",
        help_heading = "Exec refresher"
    )]
    exec_command: Option<PathBuf>,
    /// An argument for the program (repeatable, in order).
    #[arg(
        long = "exec-arg",
        value_name = "ARG",
        allow_hyphen_values = true,
        help_heading = "Exec refresher"
    )]
    exec_args: Vec<String>,
    /// The program is killed after this long.
    #[arg(long, value_name = "DURATION", env = "IMAGEWATCH_EXEC_TIMEOUT", default_value = "60s", value_parser = duration, help_heading = "Exec refresher")]
    exec_timeout: Duration,
    /// A variable of imagewatch's environment the program also gets (repeatable or
    /// comma-separated). It gets only PATH, HOME, LANG, LC_ALL, TZ, the event's IMAGEWATCH_*
    /// variables and these: never our registry credentials, tokens or secrets unless named here.
    #[arg(
        long = "exec-env",
        value_name = "NAME",
        env = "IMAGEWATCH_EXEC_ENV",
        value_delimiter = ',',
        help_heading = "Exec refresher"
    )]
    exec_env: Vec<String>,

    #[command(flatten)]
    transport: TransportArgs,

    #[command(flatten)]
    api: api::ApiArgs,

    #[command(flatten)]
    trust: trust_gate::TrustArgs,

    #[command(flatten)]
    fleet: fleet::FleetArgs,
}

/// Docker hosts as their operators run them: discovery, update order, cleanup.
#[derive(Debug, clap::Args)]
struct DockerHostArgs {
    /// Also watch the images this host's containers run (`docker`): only containers labelled
    /// `imagewatch.enable=true` (or Watchtower's), followed as they come and go. Then only
    /// such containers are refreshed.
    #[arg(
        long,
        value_enum,
        value_name = "SOURCE",
        env = "IMAGEWATCH_DISCOVER",
        help_heading = "Docker host"
    )]
    discover: Option<DiscoverSource>,
    /// With `--discover`: every container except those labelled `imagewatch.enable=false`.
    #[arg(
        long,
        env = "IMAGEWATCH_DISCOVER_ALL",
        requires = "discover",
        help_heading = "Docker host"
    )]
    discover_all: bool,
    /// `auto`: start the new container beside the old one and prove it first, unless they would
    /// clash (fixed host port, host or shared network, fixed IP, read-write volume/bind);
    /// `stop-first`: always stop the old one first.
    #[arg(long, value_name = "ORDER", env = "IMAGEWATCH_UPDATE_ORDER", default_value = "auto", value_parser = str::parse::<UpdateOrder>, help_heading = "Docker host")]
    update_order: UpdateOrder,
    /// Remove the previous image after a successful recreate, when no container uses it.
    #[arg(long, env = "IMAGEWATCH_CLEANUP", help_heading = "Docker host")]
    cleanup: bool,
    /// How long a container's `imagewatch.pre-update` / `post-update` hook may run.
    #[arg(long, value_name = "DURATION", env = "IMAGEWATCH_HOOK_TIMEOUT", default_value = "60s", value_parser = duration, help_heading = "Docker host")]
    hook_timeout: Duration,
    /// One message per tick that moved something, as `FORMAT=URL` (repeatable); FORMAT is
    /// slack, discord, teams, ntfy, gotify or apprise. The URL is a secret: https only
    /// (loopback excepted), shown in logs as its origin.
    #[arg(long = "notify", value_name = "FORMAT=URL", env = "IMAGEWATCH_NOTIFY", value_delimiter = ',', hide_env_values = true, value_parser = NotifyTarget::parse, help_heading = "Notifications")]
    notify: Vec<NotifyTarget>,
    /// Per message.
    #[arg(long, value_name = "DURATION", env = "IMAGEWATCH_NOTIFY_TIMEOUT", default_value = "10s", value_parser = duration, help_heading = "Notifications")]
    notify_timeout: Duration,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
enum DiscoverSource {
    /// The containers of the Docker Engine the refresher talks to.
    Docker,
}

fn duration(value: &str) -> Result<Duration, String> {
    humantime::parse_duration(value.trim())
        .map_err(|e| format!("{e}; expected a duration such as `30s`, `5m` or `1h`"))
        .and_then(|d| {
            if d.is_zero() {
                Err("expected a duration above zero".into())
            } else {
                Ok(d)
            }
        })
}

impl Args {
    /// The refresher kind: the flag, else `docker` when IMAGE_AUTO_REFRESH is true, else none.
    fn refresh_kind(&self) -> Result<RefreshKind, Failure> {
        if let Some(kind) = self.refresh {
            return Ok(kind);
        }
        match self.auto_refresh.as_deref().map(|v| v.trim().to_ascii_lowercase()) {
            None => Ok(RefreshKind::None),
            Some(value) => match value.as_str() {
                "true" | "1" | "yes" | "on" => Ok(RefreshKind::Docker),
                "false" | "0" | "no" | "off" | "" => Ok(RefreshKind::None),
                _ => Err(Failure::Config(format!(
                    "{AUTO_REFRESH_ENV}={value:?} is not a boolean; expected `true` or `false`"
                ))),
            },
        }
    }

    /// The containers a refresh (and discovery) may touch.
    fn container_filter(&self) -> ContainerFilter {
        ContainerFilter {
            name_prefix: self.container_prefix.clone().filter(|p| !p.is_empty()),
            label: self.container_label.clone(),
            opt_in: self.host.discover.is_some() && !self.host.discover_all,
        }
    }

    fn watch_set(&self, settings: &Settings) -> Result<WatchSet, Failure> {
        let runtimes: Vec<&str> = self
            .runtimes
            .iter()
            .map(|r| r.trim())
            .filter(|r| !r.is_empty())
            .collect();
        let images: Vec<&str> = self.images.iter().map(|i| i.trim()).filter(|i| !i.is_empty()).collect();
        // A list given but blank (`--image ","`, `IMAGEWATCH_IMAGES=""`) is a mistake, never
        // "watch everything": with the Docker refresher on, that would act on eight images.
        for (given, kept, what) in [
            (self.runtimes.len(), runtimes.len(), "--runtime (IMAGEWATCH_RUNTIMES)"),
            (self.images.len(), images.len(), "--image (IMAGEWATCH_IMAGES)"),
        ] {
            if given > 0 && kept == 0 {
                return Err(Failure::Config(format!(
                    "{what} is empty; expected at least one name, or leave it unset to watch every default runtime"
                )));
            }
        }
        for variable in ["IMAGEWATCH_RUNTIMES", "IMAGEWATCH_IMAGES"] {
            if runtimes.is_empty()
                && images.is_empty()
                && std::env::var_os(variable).is_some_and(|v| v.to_string_lossy().trim().is_empty())
            {
                return Err(Failure::Config(format!(
                    "{variable} is set but empty; expected at least one name, or unset it to watch every default runtime"
                )));
            }
        }
        if runtimes.is_empty() && images.is_empty() {
            if self.host.discover.is_some() {
                return Ok(WatchSet::new());
            }
            return WatchSet::default_runtimes(&settings.prefix).map_err(Failure::config);
        }
        let mut set = WatchSet::runtimes(&settings.prefix, &runtimes).map_err(Failure::config)?;
        for image in images {
            let reference: ImageReference = image.parse().map_err(Failure::config)?;
            set.add_image(reference).map_err(Failure::config)?;
        }
        Ok(set)
    }
}

pub async fn run(args: Args, reparse: fn() -> Result<Args, Failure>) -> Result<ExitCode, Failure> {
    let settings = Settings::from_env()?;
    let base = args.watch_set(&settings)?;
    let discovery = match args.host.discover {
        Some(DiscoverSource::Docker) => Some(discovery(&args).await?),
        None => None,
    };
    let set = match &discovery {
        Some((_, found)) => found.watch_set(&base),
        None => base.clone(),
    };
    if args.concurrency == 0 || args.global_concurrency == 0 {
        return Err(Failure::Config(
            "--concurrency and --global-concurrency must be at least 1".into(),
        ));
    }
    let transport = args.transport.transport()?;
    let policy = args.trust.policy()?;
    let cooldown = args.trust.cooldown();

    let hosts = set.hosts();
    let wired = registry_auth::wire(&settings.auth, transport, &hosts)
        .await
        .map_err(Failure::config)?;
    let engine_auth = wired.engine_auth();
    let client = Arc::new(wired.client.with_global_concurrency(args.global_concurrency));
    let stats = client.stats().clone();
    let source = RegistrySource::new(client.clone());
    let refresher = build_refresher(&args, &engine_auth).await?;
    let config = WatcherConfig {
        interval: args.interval,
        jitter: args.jitter,
        concurrency: args.concurrency,
        state_file: match &args.state {
            Some(fleet::StateArg::File(path)) => Some(path.clone()),
            _ => None,
        },
        ..WatcherConfig::default()
    };
    info!(
        images = set.len(),
        hosts = hosts.len(),
        refresh = refresher.name(),
        once = args.once,
        state = args.state.as_ref().map(ToString::to_string).unwrap_or_default(),
        verified = !policy.is_empty(),
        cooldown_secs = cooldown.as_secs(),
        "imagewatch watch"
    );
    let (watcher, leadership) = match &args.state {
        Some(fleet::StateArg::Postgres(url)) => {
            let store: Arc<dyn watcher::StateStore> = Arc::new(args.fleet.postgres(url).await?);
            let leadership = store.leadership_changes();
            let watcher = Watcher::with_store(set.clone(), Arc::new(source), refresher, config, store)
                .await
                .map_err(Failure::config)?;
            (watcher, leadership)
        }
        _ => (
            Watcher::new(set.clone(), Arc::new(source), refresher, config).map_err(Failure::config)?,
            None,
        ),
    };
    let mut watcher = watcher.with_cooldown(cooldown);
    if !policy.is_empty() {
        watcher = watcher.with_gate(Arc::new(trust_gate::TrustGate::new(client, policy)));
    }
    // The watch set changes at run time through one channel, whoever changes it: discovery,
    // a reloaded config file, or both (the file's images beside the discovered ones).
    let reload_sets = if args.once {
        None
    } else {
        let config_file = args.config.is_some();
        match discovery {
            Some((discovery, _)) => {
                let (updates, receiver) = tokio::sync::watch::channel(set);
                watcher.follow_watch_set(receiver);
                if config_file {
                    let (found, found_sets) = tokio::sync::watch::channel(WatchSet::new());
                    let (bases, base_sets) = tokio::sync::watch::channel(base);
                    tokio::spawn(discovery.follow(WatchSet::new(), found));
                    tokio::spawn(reload::beside_discovered(base_sets, found_sets, updates));
                    Some(bases)
                } else {
                    tokio::spawn(discovery.follow(base, updates));
                    None
                }
            }
            None if config_file => {
                let (updates, receiver) = tokio::sync::watch::channel(set);
                watcher.follow_watch_set(receiver);
                Some(updates)
            }
            None => None,
        }
    };

    let notifier = if args.host.notify.is_empty() {
        None
    } else {
        let notifier = Notifier::new(args.host.notify.clone(), args.host.notify_timeout).map_err(Failure::Config)?;
        let (reports, received) = tokio::sync::mpsc::channel(16);
        watcher.send_reports_to(reports);
        Some(tokio::spawn(notifier.serve(received)))
    };

    let server = args.api.start(&watcher, stats, leadership, args.once).await?;
    if args.once {
        let report = watcher.tick().await;
        print!("{report}");
        if let Some(notifier) = notifier {
            // The watcher holds the sender: dropping it lets the notifier finish this tick.
            drop(watcher);
            let _ = notifier.await;
        }
        let failed = report.images.iter().filter(|image| image.status.is_failure()).count();
        if report.failed() {
            return Err(Failure::Check(match &report.state_error {
                Some(error) if failed == 0 => error.clone(),
                _ => format!("{failed} of {} image(s) failed", report.images.len()),
            }));
        }
        return Ok(ExitCode::SUCCESS);
    }
    let reloading = args.config.clone().zip(reload_sets).map(|(path, sets)| {
        let context = reload::Context {
            settings,
            hosts: hosts.clone(),
            engine_auth,
        };
        tokio::spawn(reload::watch_file(path, reparse, context, watcher.reloader(), sets))
    });
    let stopped = watcher.run(shutdown_signal()).await;
    if let Some(reloading) = reloading {
        reloading.abort();
    }
    if let Some(server) = server {
        server.shutdown().await;
    }
    stopped.map_err(Failure::check)?;
    Ok(ExitCode::SUCCESS)
}

/// The refresher `--refresh` names, with the config file's per-image refresh modes routed
/// to refreshers of their own.
async fn build_refresher(args: &Args, engine_auth: &EngineAuths) -> Result<Arc<dyn Refresher>, Failure> {
    let kind = args.refresh_kind()?;
    let default = refresher(args, kind, engine_auth.clone()).await?;
    let Some(path) = &args.config else {
        return Ok(default);
    };
    let file = crate::config::ConfigFile::load(path).map_err(Failure::config)?;
    let mut by_kind: HashMap<RefreshKind, Arc<dyn Refresher>> = HashMap::new();
    let mut routes = HashMap::new();
    for image in &file.images {
        let Some(own) = image.settings.refresh.filter(|own| *own != kind) else {
            continue;
        };
        let refresher = match by_kind.get(&own) {
            Some(refresher) => refresher.clone(),
            None => {
                let built = refresher(args, own, engine_auth.clone()).await?;
                by_kind.insert(own, built.clone());
                built
            }
        };
        routes.insert(image.reference.without_digest(), refresher);
    }
    if routes.is_empty() {
        return Ok(default);
    }
    Ok(Arc::new(routed::RoutedRefresher { default, routes }))
}

async fn refresher(args: &Args, kind: RefreshKind, engine_auth: EngineAuths) -> Result<Arc<dyn Refresher>, Failure> {
    Ok(match kind {
        RefreshKind::None => Arc::new(MonitorOnly),
        RefreshKind::Docker => {
            let config = DockerConfig {
                endpoint: args.docker_host.clone().filter(|h| !h.trim().is_empty()),
                mode: match args.docker_mode {
                    ModeArg::Recreate => DockerMode::Recreate,
                    ModeArg::Remove => DockerMode::Remove,
                },
                filter: args.container_filter(),
                stop_timeout: args.stop_timeout,
                settle: args.settle,
                health_timeout: args.health_timeout,
                order: args.host.update_order,
                cleanup: args.host.cleanup,
                hook_timeout: args.host.hook_timeout,
                ..DockerConfig::default()
            };
            Arc::new(
                DockerRefresher::connect(config, Arc::new(engine_auth))
                    .await
                    .map_err(Failure::config)?,
            )
        }
        RefreshKind::Webhook => {
            let url = args.webhook_url.as_deref().ok_or_else(|| {
                Failure::Config("--refresh webhook needs --webhook-url (or IMAGEWATCH_WEBHOOK_URL)".into())
            })?;
            let url = url
                .trim()
                .parse()
                .map_err(|e| Failure::Config(format!("--webhook-url is not a URL ({e}); expected `https://...`")))?;
            let mut config = WebhookConfig::new(url);
            config.secret = args.webhook_secret.clone().filter(|s| !s.is_empty());
            config.timeout = args.webhook_timeout;
            config.attempts = args.webhook_attempts.max(1);
            Arc::new(WebhookRefresher::new(config).map_err(Failure::config)?)
        }
        RefreshKind::Exec => {
            let program = args.exec_command.clone().ok_or_else(|| {
                Failure::Config("--refresh exec needs --exec-command (or IMAGEWATCH_EXEC_COMMAND)".into())
            })?;
            let mut config = ExecConfig::new(program, args.exec_args.clone());
            config.timeout = args.exec_timeout;
            config.inherited = exec_environment(&args.exec_env);
            Arc::new(ExecRefresher::new(config))
        }
        RefreshKind::Swarm => {
            let endpoint = args.docker_host.clone().filter(|h| !h.trim().is_empty());
            Arc::new(args.fleet.swarm(endpoint, engine_auth).await?)
        }
    })
}

/// What the exec refresher's program inherits: a few variables every program expects, and the
/// ones the operator named (`--exec-env`); the rest of our environment holds secrets.
fn exec_environment(named: &[String]) -> Vec<(String, Secret)> {
    const ALWAYS: [&str; 5] = ["PATH", "HOME", "LANG", "LC_ALL", "TZ"];
    let mut names: Vec<&str> = ALWAYS.to_vec();
    names.extend(named.iter().map(|name| name.trim()).filter(|name| !name.is_empty()));
    names.dedup();
    names
        .into_iter()
        .filter_map(|name| {
            std::env::var(name)
                .ok()
                .map(|value| (name.to_owned(), Secret::new(value)))
        })
        .collect()
}

/// Connects discovery to the engine and scans once, so the hosts of the discovered images are
/// wired from the start. Images on a host first seen later are checked with the providers of
/// the hosts known at start (none: anonymously).
async fn discovery(args: &Args) -> Result<(Discovery, Discovered), Failure> {
    let engine = DockerConfig {
        endpoint: args.docker_host.clone().filter(|h| !h.trim().is_empty()),
        ..DockerConfig::default()
    };
    let connected = DockerRefresher::connect(engine, Arc::new(registry_core::AnonymousPulls))
        .await
        .map_err(Failure::config)?;
    let discovery = Discovery::new(
        connected.docker().clone(),
        DiscoveryConfig {
            filter: args.container_filter(),
            ..DiscoveryConfig::default()
        },
    );
    let found = discovery.scan().await.map_err(Failure::config)?;
    for skipped in &found.skipped {
        tracing::warn!(container = %skipped.container, image = %skipped.image, reason = %skipped.reason, "container not watched");
    }
    info!(
        images = found.images.len(),
        containers = found.images.iter().map(|image| image.containers.len()).sum::<usize>(),
        skipped = found.skipped.len(),
        all = args.host.discover_all,
        "discovered"
    );
    Ok((discovery, found))
}

/// Resolves on SIGINT or SIGTERM. If a handler cannot be installed, that signal is simply not
/// awaited (the other still is).
async fn shutdown_signal() {
    let interrupt = async {
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        () = interrupt => info!(signal = "SIGINT", "stopping"),
        () = terminate => info!(signal = "SIGTERM", "stopping"),
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    #[derive(Debug, Parser)]
    struct Command {
        #[command(flatten)]
        args: super::Args,
    }

    #[test]
    fn debug_of_the_arguments_never_shows_a_secret() {
        let secrets = [
            "webhook-s3cret",
            "api-s3cret",
            "hook-s3cret",
            "github-s3cret",
            "gitea-s3cret",
            "pg-s3cret",
            "discord-s3cret",
        ];
        let command = Command::try_parse_from([
            "watch",
            "--webhook-secret",
            secrets[0],
            "--api-token",
            secrets[1],
            "--hook-token",
            secrets[2],
            "--github-secret",
            secrets[3],
            "--gitea-secret",
            secrets[4],
            "--state",
            "postgres://imagewatch:pg-s3cret@127.0.0.1:5432/watch",
            "--notify",
            &format!("discord=https://discord.com/api/webhooks/1/{}", secrets[6]),
        ])
        .expect("valid arguments");
        let printed = format!("{command:?}");
        for secret in secrets {
            assert!(!printed.contains(secret), "{secret} printed in {printed}");
        }
    }
}
