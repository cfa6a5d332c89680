//! `imagewatch registry`: how `MOLECULE_IMAGE_REGISTRY` resolves, so an operator can see which
//! host, API and auth flow imagewatch will use before anything is polled.

use std::process::ExitCode;

use serde::Serialize;

use crate::exit::Failure;
use crate::settings::Settings;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Print JSON (`prefix`, `host`, `api_base`, `provider`, `serveraddress`).
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Serialize)]
struct Resolved {
    prefix: String,
    host: String,
    api_base: String,
    provider: String,
    serveraddress: String,
}

pub async fn run(args: Args) -> Result<ExitCode, Failure> {
    let settings = Settings::from_env()?;
    let host = settings.prefix.host();
    let kind = settings.auth.overrides.kind_for(host);
    let resolved = Resolved {
        prefix: settings.prefix.to_string(),
        host: host.to_string(),
        api_base: host.api_base(),
        provider: kind.name().to_owned(),
        serveraddress: host.engine_server_address().to_owned(),
    };
    if args.json {
        let json = serde_json::to_string_pretty(&resolved).map_err(|e| Failure::Internal(e.to_string()))?;
        println!("{json}");
    } else {
        println!("prefix:        {}", resolved.prefix);
        println!("host:          {}", resolved.host);
        println!("api_base:      {}", resolved.api_base);
        println!("provider:      {}", resolved.provider);
        if let registry_auth::ProviderKind::Ecr(ecr) = &kind {
            println!("               ({ecr})");
        }
        println!("serveraddress: {}", resolved.serveraddress);
    }
    Ok(ExitCode::SUCCESS)
}
