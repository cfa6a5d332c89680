//! `imagewatch`: the operator's binary and the edge. Parses the command line and environment
//! into registry-core and registry-auth values (`settings`, `transport`), has registry-auth wire
//! a provider to each host, and runs one command. Exit status: 0 done, 1 a check or refresh failed, 2 invalid input or configuration.

mod commands;
mod exit;
mod logging;
mod settings;
mod transport;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::logging::LogFormat;

/// jemalloc rather than the system allocator: glibc keeps what a burst of connections freed in
/// its per-thread arenas, so the process stayed near its peak after an attack ended; jemalloc's
/// background thread returns freed pages to the OS within seconds (`cargo xtask soak`).
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

#[derive(Debug, Parser)]
#[command(
    name = "imagewatch",
    version,
    about = "Keep running containers on the newest published image"
)]
struct Cli {
    /// Log format on stderr.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text, env = "IMAGEWATCH_LOG_FORMAT")]
    log_format: LogFormat,

    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Show how MOLECULE_IMAGE_REGISTRY resolves: prefix, host, API base, provider, serveraddress.
    Registry(commands::registry::Args),
    /// Print the Docker Engine `X-Registry-Auth` value for the configured registry.
    AuthHeader(commands::auth_header::Args),
    /// Print the digest an image reference points at now (like `crane digest`).
    Digest(commands::digest::Args),
    /// Poll image digests and refresh on a move (monitor only unless refresh is opted into).
    Watch(Box<commands::watch::Args>),
    /// Check that the digest an image points at carries a cosign signature by a key.
    Verify(commands::verify::Args),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    logging::init(cli.log_format);
    // Idle arenas purge only from this thread: without it, what a burst freed stays resident.
    if let Err(error) = tikv_jemalloc_ctl::background_thread::write(true) {
        tracing::debug!(%error, "the allocator's background purging is unavailable");
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(error) => {
            return exit::fail(exit::Failure::Internal(format!(
                "cannot start the async runtime: {error}"
            )));
        }
    };
    let result = runtime.block_on(async {
        match cli.command {
            Command::Registry(args) => commands::registry::run(args).await,
            Command::AuthHeader(args) => commands::auth_header::run(args).await,
            Command::Digest(args) => commands::digest::run(args).await,
            Command::Watch(args) => commands::watch::run(*args).await,
            Command::Verify(args) => commands::verify::run(args).await,
        }
    });
    match result {
        Ok(code) => code,
        Err(failure) => exit::fail(failure),
    }
}
