//! What a moved digest sets off: the `--refresh` choices, shared by the watch flags and the
//! config file's per-image settings. It builds no refresher (see `commands::watch`).

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, clap::ValueEnum)]
pub enum RefreshKind {
    /// Monitor only: log moves, change nothing.
    None,
    /// Pull through the Docker Engine and recreate (or remove) the image's containers.
    Docker,
    /// POST the event to a URL.
    Webhook,
    /// Run a command with the event in environment variables.
    Exec,
    /// Move the tag's Swarm services to the new digest; Swarm rolls them (or back).
    Swarm,
}
