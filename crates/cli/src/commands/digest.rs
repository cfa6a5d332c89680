//! `imagewatch digest <reference>`: the digest a tag points at now, asked of the registry the
//! way the watcher asks it (like `crane digest`). An auth failure names the host, the realm and
//! what to configure.

use std::process::ExitCode;

use registry_core::ImageReference;
use serde::Serialize;

use crate::exit::Failure;
use crate::settings::Settings;
use crate::transport::TransportArgs;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The image: `[host[:port]/]path[:tag][@sha256:...]`; a pinned digest is verified.
    reference: String,
    /// Print JSON (`reference`, `digest`, `host`).
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    transport: TransportArgs,
}

#[derive(Debug, Serialize)]
struct Answer {
    reference: String,
    digest: String,
    host: String,
}

pub async fn run(args: Args) -> Result<ExitCode, Failure> {
    let reference: ImageReference = args.reference.trim().parse().map_err(Failure::config)?;
    let settings = Settings::from_env()?;
    let transport = args.transport.transport()?;
    let host = reference.host().clone();
    let client = registry_auth::wire(&settings.auth, transport, std::slice::from_ref(&host))
        .await
        .map_err(Failure::config)?
        .client;
    let digest = client.manifest_digest(&reference).await.map_err(Failure::check)?;
    if args.json {
        let answer = Answer {
            reference: reference.to_string(),
            digest: digest.to_string(),
            host: host.to_string(),
        };
        let json = serde_json::to_string(&answer).map_err(|e| Failure::Internal(e.to_string()))?;
        println!("{json}");
    } else {
        println!("{digest}");
    }
    Ok(ExitCode::SUCCESS)
}
