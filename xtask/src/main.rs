//! `cargo xtask`: the project's automation, in Rust instead of shell scripts.
//!
//! - `ci`: everything CI checks, in order: components installed, formatting, clippy, all tests.
//! - `install`: the real components the tests run against (Debian and PyPI packages).

mod install;
mod run;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(name = "cargo xtask")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Install components, check formatting and lints, run every test.
    Ci,
    /// Install the registry, skopeo, nginx, moto... that the tests start (needs root for apt).
    Install,
}

fn main() -> ExitCode {
    let result = match Cli::parse().command {
        Command::Ci => ci(),
        Command::Install => install::components(),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("xtask: {error}");
            ExitCode::FAILURE
        }
    }
}

fn ci() -> Result<(), String> {
    install::components()?;
    run::cargo(&["fmt", "--all", "--", "--check"])?;
    run::cargo(&["clippy", "--workspace", "--all-targets", "--", "-D", "warnings"])?;
    run::cargo(&["test", "--workspace", "--all-targets"])?;
    Ok(())
}
