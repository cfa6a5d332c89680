//! `imagewatch auth-header`: the `X-Registry-Auth` value the Docker Engine pulls the configured
//! registry's images with. With no credentials it prints nothing on stdout and says so on
//! stderr: anonymous pulls are legitimate, not an error.

use std::process::ExitCode;

use registry_core::EngineAuth;

use crate::exit::Failure;
use crate::wiring::{Settings, engine_credentials};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Print the decoded payload as JSON, with the password replaced by `***`.
    #[arg(long)]
    json: bool,
}

pub async fn run(args: Args) -> Result<ExitCode, Failure> {
    let settings = Settings::from_env()?;
    let host = settings.prefix.host();
    let Some(credentials) = engine_credentials(&settings, host).await? else {
        eprintln!("imagewatch: no credentials for {host}; the Docker Engine will pull anonymously");
        return Ok(ExitCode::SUCCESS);
    };
    let auth = EngineAuth::new(host, credentials);
    if args.json {
        let json = serde_json::to_string_pretty(&auth.redacted_json()).map_err(|e| Failure::Internal(e.to_string()))?;
        println!("{json}");
    } else {
        println!("{}", auth.header_value().expose());
    }
    Ok(ExitCode::SUCCESS)
}
