//! `imagewatch`: the operator's binary and the edge. Parses the command line and environment
//! into registry-core and registry-auth values (`settings`, `transport`), has registry-auth wire
//! a provider to each host, and runs one command. Exit status: 0 done, 1 a check or refresh failed, 2 invalid input or configuration.

mod commands;
mod config;
mod exit;
mod logging;
mod refresh_kind;
mod settings;
mod transport;

use std::process::ExitCode;

use clap::{CommandFactory as _, FromArgMatches as _, Parser, Subcommand};

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
    /// Work with config files (`--config PATH` of `watch`).
    #[command(subcommand)]
    Config(ConfigCommand),
}

#[derive(Debug, Subcommand)]
enum ConfigCommand {
    /// Check a config file without running anything: exit 0 if valid, 2 with the file, line
    /// and key of the first problem.
    Check {
        /// The TOML file.
        path: std::path::PathBuf,
    },
}

/// The command line with the config file's settings beneath it (see `config`).
fn parse_with_config(argv: Vec<std::ffi::OsString>) -> Result<Cli, exit::Failure> {
    let command = Cli::command();
    let argv = config::with_file_defaults(&command, argv).map_err(|e| exit::Failure::Config(e.to_string()))?;
    let matches = command.try_get_matches_from(argv).unwrap_or_else(|e| e.exit());
    Cli::from_arg_matches(&matches).map_err(|e| exit::Failure::Config(e.to_string()))
}

/// The `watch` arguments as they are now: the same command line, the config file read again
/// (what a reload applies).
fn reparse_watch() -> Result<commands::watch::Args, exit::Failure> {
    let command = Cli::command();
    let argv = config::with_file_defaults(&command, std::env::args_os().collect())
        .map_err(|e| exit::Failure::Config(e.to_string()))?;
    let matches = command
        .try_get_matches_from(argv)
        .map_err(|e| exit::Failure::Config(e.to_string().lines().next().unwrap_or_default().to_owned()))?;
    match Cli::from_arg_matches(&matches)
        .map_err(|e| exit::Failure::Config(e.to_string()))?
        .command
    {
        Command::Watch(args) => Ok(*args),
        _ => Err(exit::Failure::Config("not a watch command".into())),
    }
}

fn main() -> ExitCode {
    let cli = match parse_with_config(std::env::args_os().collect()) {
        Ok(cli) => cli,
        Err(failure) => {
            logging::init(LogFormat::Text);
            return exit::fail(failure);
        }
    };
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
            Command::Watch(args) => commands::watch::run(*args, reparse_watch).await,
            Command::Verify(args) => commands::verify::run(args).await,
            Command::Config(ConfigCommand::Check { path }) => match config::check(&Cli::command(), &path) {
                Ok(summary) => {
                    println!("{summary}");
                    Ok(ExitCode::SUCCESS)
                }
                Err(error) => Err(exit::Failure::Config(error.to_string())),
            },
        }
    });
    match result {
        Ok(code) => code,
        Err(failure) => exit::fail(failure),
    }
}
