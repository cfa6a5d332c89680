//! `imagewatch auth-header`: the `X-Registry-Auth` value the Docker Engine pulls the configured
//! registry's images with. With no credentials it prints nothing on stdout and says so on
//! stderr: anonymous pulls are legitimate, not an error.

use std::process::ExitCode;

use std::sync::Arc;

use registry_core::{Transport, TransportConfig};

use crate::exit::Failure;
use crate::settings::Settings;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Print the decoded payload as JSON, with the password replaced by `***`.
    #[arg(long)]
    json: bool,
}

pub async fn run(args: Args) -> Result<ExitCode, Failure> {
    let settings = Settings::from_env()?;
    let host = settings.prefix.host();
    let transport = Arc::new(Transport::new(TransportConfig::default()).map_err(Failure::config)?);
    let wired = registry_auth::wire(&settings.auth, transport, std::slice::from_ref(host))
        .await
        .map_err(Failure::config)?;
    // The same answer the Docker refresher sends: `EngineAuths` is its `EngineAuthSource`.
    let Some(auth) = wired.engine_auth().payload(host).await.map_err(Failure::check)? else {
        eprintln!("imagewatch: no credentials for {host}; the Docker Engine will pull anonymously");
        return Ok(ExitCode::SUCCESS);
    };
    if args.json {
        let json = serde_json::to_string_pretty(&auth.redacted_json()).map_err(|e| Failure::Internal(e.to_string()))?;
        println!("{json}");
    } else {
        println!("{}", auth.header_value().expose());
    }
    Ok(ExitCode::SUCCESS)
}
