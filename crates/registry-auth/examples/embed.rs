//! Embedding imagewatch in a platform: at startup, build the registry client for the configured
//! prefix (the provider is picked from the host: GHCR, ECR or generic), check a digest, and run
//! watcher ticks with the platform's own `Refresher`.
//!
//! `cargo run -p registry-auth --example embed -- ghcr.io/molecule-ai langgraph`

use std::sync::Arc;

use async_trait::async_trait;
use registry_auth::{AuthSettings, wire};
use registry_core::{Digest, RegistryPrefix, Transport, TransportConfig};
use watcher::{
    RefreshError, RefreshEvent, RefreshOutcome, Refresher, RegistrySource, WatchSet, Watcher, WatcherConfig,
};

/// The platform's reaction to a moved image (here: say so).
#[derive(Debug)]
pub struct Announce;

#[async_trait]
impl Refresher for Announce {
    fn name(&self) -> &'static str {
        "announce"
    }

    async fn refresh(&self, event: &RefreshEvent) -> Result<RefreshOutcome, RefreshError> {
        println!("{} moved to {}", event.image, event.new_digest);
        Ok(RefreshOutcome::new("announced"))
    }
}

/// The startup: `var` is where the platform keeps its settings (here: the environment).
pub async fn start(
    prefix: &str,
    runtime: &str,
    var: impl Fn(&str) -> Option<String>,
) -> Result<(Digest, Watcher), Box<dyn std::error::Error>> {
    let prefix: RegistryPrefix = prefix.parse()?;
    let settings = AuthSettings::from_vars(prefix.host().clone(), var)?;
    let transport = Arc::new(Transport::new(TransportConfig::default())?);
    let wired = wire(&settings, transport, &[prefix.host().clone()]).await?;
    let image = watcher::runtime_image(&prefix, runtime)?;
    let digest = wired.client.manifest_digest(&image).await?;
    let source = Arc::new(RegistrySource::new(Arc::new(wired.client)));
    let set = WatchSet::runtimes(&prefix, &[runtime])?;
    let watcher = Watcher::new(set, source, Arc::new(Announce), WatcherConfig::default())?;
    Ok((digest, watcher))
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [prefix, runtime] = args.as_slice() else {
        return Err("usage: embed PREFIX RUNTIME".into());
    };
    let (digest, mut watcher) = start(prefix, runtime, |name| std::env::var(name).ok()).await?;
    println!("{prefix} {runtime}: {digest}");
    print!("{}", watcher.tick().await);
    Ok(())
}
