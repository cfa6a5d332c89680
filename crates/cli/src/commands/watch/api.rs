//! `imagewatch watch --listen`: the HTTP API's flags and environment, turned into an
//! `http_api::ApiConfig` at the edge. Off unless an address is given; an address beyond loopback
//! is refused without an API token for `POST /check`, and there the token-less webhooks
//! (distribution, Docker Hub) stay disabled until a hook token is set.

use std::sync::Arc;

use http_api::{Api, ApiConfig, ListenAddr, Server};
use registry_core::Secret;
use registry_core::client::ClientStats;
use tracing::warn;
use watcher::Watcher;

use crate::exit::Failure;

#[derive(Debug, clap::Args)]
pub struct ApiArgs {
    /// Serve the HTTP API (registry webhooks, POST /check, /healthz, /status, /metrics) on a
    /// port of 127.0.0.1 (`8080`) or on `IP:PORT`. Off unless given.
    #[arg(long, value_name = "ADDR", env = "IMAGEWATCH_LISTEN", value_parser = listen, help_heading = "HTTP API")]
    listen: Option<ListenAddr>,
    /// The bearer token `POST /check` requires; needed to listen beyond loopback.
    #[arg(long, value_name = "TOKEN", env = "IMAGEWATCH_API_TOKEN", hide_env_values = true, value_parser = secret, help_heading = "HTTP API")]
    api_token: Option<Secret>,
    /// The token `/hooks/distribution` and `/hooks/dockerhub` require (`?token=` in the hook URL
    /// or `Authorization: Bearer`); without one they are open on loopback and off beyond it.
    #[arg(long, value_name = "TOKEN", env = "IMAGEWATCH_HOOK_TOKEN", hide_env_values = true, value_parser = secret, help_heading = "HTTP API")]
    hook_token: Option<Secret>,
    /// The secret of GitHub `package` webhooks (`X-Hub-Signature-256`); enables `/hooks/github`.
    #[arg(long, value_name = "SECRET", env = "IMAGEWATCH_GITHUB_SECRET", hide_env_values = true, value_parser = secret, help_heading = "HTTP API")]
    github_secret: Option<Secret>,
    /// The secret of Gitea or Forgejo package webhooks (`X-Gitea-Signature`); enables
    /// `/hooks/gitea`.
    #[arg(long, value_name = "SECRET", env = "IMAGEWATCH_GITEA_SECRET", hide_env_values = true, value_parser = secret, help_heading = "HTTP API")]
    gitea_secret: Option<Secret>,
    /// A host name the API answers to (its `Host` header), for webhook senders that reach it by
    /// name (`hooks.example.com`); repeatable or comma-separated. IP addresses and `localhost`
    /// always work; once a name is listed, requests naming another host are refused.
    #[arg(
        long = "api-host",
        value_name = "NAME",
        env = "IMAGEWATCH_API_HOSTS",
        value_delimiter = ',',
        help_heading = "HTTP API"
    )]
    api_hosts: Vec<String>,
}

fn listen(value: &str) -> Result<ListenAddr, String> {
    value.parse().map_err(|e: http_api::ListenError| e.to_string())
}

/// A secret from a flag or variable, trimmed; parsed straight into `Secret` so no `Debug` of
/// the arguments can show it.
pub(super) fn secret(value: &str) -> Result<Secret, String> {
    Ok(Secret::new(value.trim()))
}

impl ApiArgs {
    /// Serves the API for `watcher` when `--listen` was given (not with `--once`).
    pub async fn start(
        &self,
        watcher: &Watcher,
        stats: Arc<ClientStats>,
        leadership: Option<tokio::sync::watch::Receiver<watcher::Leadership>>,
        once: bool,
    ) -> Result<Option<Server>, Failure> {
        let Some(listen) = self.listen else {
            return Ok(None);
        };
        if once {
            warn!(listen = %listen, "--once checks and exits: the HTTP API is not started");
            return Ok(None);
        }
        let mut config = ApiConfig::for_listen(&listen);
        config.api_token = self.api_token.clone();
        config.hook_token = self.hook_token.clone();
        config.github_secret = self.github_secret.clone();
        config.gitea_secret = self.gitea_secret.clone();
        config.allowed_hosts = self.api_hosts.clone();
        config
            .check_exposure(&listen)
            .map_err(|e| Failure::Config(format!("{e} (--api-token or IMAGEWATCH_API_TOKEN)")))?;
        let mut api = Api::new(config, watcher.trigger(), watcher.status()).with_registry_stats(stats);
        if let Some(leadership) = leadership {
            api = api.with_leadership(leadership);
        }
        let server = Server::bind(listen, api).await.map_err(Failure::config)?;
        Ok(Some(server))
    }
}
