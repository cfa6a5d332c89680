//! `cargo xtask`: the project's automation, in Rust instead of shell scripts.
//!
//! - `ci`: everything CI checks, in order: components installed, formatting, clippy, all tests,
//!   then the registry test matrix.
//! - `install`: the real components the tests run against (Debian and PyPI packages).
//! - `test-matrix`: the conformance suite against every registry flavour (GHCR, Gitea, Docker
//!   Hub, ECR, Basic, anonymous), started locally.
//! - `bench`: the watcher over 1,000 repositories of a token-auth registry, against skopeo.
//! - `soak`: the HTTP API under slow unauthenticated bodies and idle sockets, on loopback,
//!   bounded in count and time (not part of CI).
//! - `demo`: the main job on a fresh machine: a registry, a push, the watcher sees it and moves a
//!   container to the new image (runs a command instead when no Docker Engine answers).

mod bench;
mod demo;
mod docker_cli;
mod install;
mod interrupt;
mod matrix;
mod narrate;
mod run;
mod soak;

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
    /// Install components, check formatting and lints, run every test and the test matrix.
    Ci,
    /// Install the registry, skopeo, nginx, moto... that the tests start (needs root for apt).
    Install,
    /// Run the conformance suite against every registry flavour and print the matrix.
    TestMatrix,
    /// Measure cold and warm watcher ticks over 1,000 repositories against skopeo.
    Bench(bench::Args),
    /// The bench's watcher process (started by `bench`).
    #[command(hide = true)]
    BenchWatcher(bench::ChildArgs),
    /// Flood the HTTP API on loopback (slow bodies, idle sockets) and check its bounds.
    Soak(soak::Args),
    /// Show the main job: a local registry, a push, `imagewatch watch` moves a container to it.
    Demo,
}

fn main() -> ExitCode {
    let result = match Cli::parse().command {
        Command::Ci => ci(),
        Command::Install => install::components(),
        Command::TestMatrix => matrix::run(),
        Command::Bench(args) => bench::run(&args),
        Command::BenchWatcher(args) => bench::child(&args),
        Command::Demo => demo::run(),
        Command::Soak(args) => soak::run(&args),
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
    matrix::run()
}
