//! `imagewatch watch` beyond one host: the Swarm refresher's flags, `--state` as a file or a
//! PostgreSQL database shared by replicas, and the replica's flags, turned into library values
//! at the edge.

use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use refresh::{ContainerFilter, ServiceFilter, SwarmConfig, SwarmRefresher};
use registry_auth::EngineAuths;
use registry_core::Secret;
use state_postgres::{PostgresConfig, PostgresStore, is_postgres_url, redacted};

use crate::exit::Failure;

/// Where seen digests persist: a JSON file, or a PostgreSQL database replicas share.
#[derive(Clone)]
pub enum StateArg {
    File(PathBuf),
    Postgres(Secret),
}

impl fmt::Debug for StateArg {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_string())
    }
}

impl fmt::Display for StateArg {
    /// A database without its password.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StateArg::File(path) => write!(f, "{}", path.display()),
            StateArg::Postgres(url) => f.write_str(&redacted(url.expose())),
        }
    }
}

/// `--state`: `postgres://...` or `postgresql://...` is a database, anything else a path.
pub(super) fn state(value: &str) -> Result<StateArg, String> {
    let value = value.trim();
    if value.is_empty() {
        return Err("expected a file path or `postgres://user:password@host:port/db`".into());
    }
    if is_postgres_url(value) {
        Ok(StateArg::Postgres(Secret::new(value)))
    } else {
        Ok(StateArg::File(PathBuf::from(value)))
    }
}

#[derive(Debug, clap::Args)]
pub struct FleetArgs {
    /// Only Swarm services whose name starts with this.
    #[arg(
        long,
        value_name = "PREFIX",
        env = "IMAGEWATCH_SERVICE_PREFIX",
        help_heading = "Swarm refresher"
    )]
    service_prefix: Option<String>,
    /// Only Swarm services with this label (`key=value`).
    #[arg(long, value_name = "KEY=VALUE", env = "IMAGEWATCH_SERVICE_LABEL", value_parser = ContainerFilter::parse_label, help_heading = "Swarm refresher")]
    service_label: Option<(String, String)>,
    /// How long one service's rolling update (or Swarm's rollback) may take to settle.
    #[arg(long, value_name = "DURATION", env = "IMAGEWATCH_SWARM_TIMEOUT", default_value = "10m", value_parser = super::duration, help_heading = "Swarm refresher")]
    swarm_timeout: Duration,
    /// This replica's name with a PostgreSQL `--state` (default: host name and process id).
    #[arg(
        long,
        value_name = "NAME",
        env = "IMAGEWATCH_REPLICA",
        help_heading = "Replicas (PostgreSQL state)"
    )]
    replica: Option<String>,
    /// How often a standby tries for the leader lock and the leader proves it still holds it:
    /// the bound on a takeover once the leader's session ends.
    #[arg(long, value_name = "DURATION", env = "IMAGEWATCH_LEADER_RETRY", default_value = "5s", value_parser = super::duration, help_heading = "Replicas (PostgreSQL state)")]
    leader_retry: Duration,
}

impl FleetArgs {
    /// The Swarm refresher, sending the wiring's `X-Registry-Auth` per host (the Docker
    /// refresher's very payload) for the nodes to pull with.
    pub async fn swarm(&self, endpoint: Option<String>, engine_auth: EngineAuths) -> Result<SwarmRefresher, Failure> {
        let config = SwarmConfig {
            endpoint,
            filter: ServiceFilter {
                name_prefix: self.service_prefix.clone().filter(|p| !p.is_empty()),
                label: self.service_label.clone(),
            },
            converge_timeout: self.swarm_timeout,
            ..SwarmConfig::default()
        };
        SwarmRefresher::connect(config, Arc::new(engine_auth))
            .await
            .map_err(Failure::config)
    }

    /// Connects the shared store; its first connection must succeed.
    pub async fn postgres(&self, url: &Secret) -> Result<PostgresStore, Failure> {
        let replica = match self.replica.as_deref().map(str::trim) {
            Some(name) if !name.is_empty() => name.to_owned(),
            Some(_) => {
                return Err(Failure::Config(
                    "--replica is empty; expected a name for this replica".into(),
                ));
            }
            None => default_replica(),
        };
        let mut config = PostgresConfig::new(url.expose(), replica);
        config.retry = self.leader_retry;
        PostgresStore::connect(config).await.map_err(Failure::config)
    }
}

/// `<host name>-<process id>`: unique per replica on a host and across hosts.
fn default_replica() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|name| name.trim().to_owned())
        .filter(|name| !name.is_empty())
        .unwrap_or_else(|| "imagewatch".into());
    format!("{host}-{}", std::process::id())
}
