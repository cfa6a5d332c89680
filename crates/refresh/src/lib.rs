//! Refreshers: what happens when the watcher sees a digest move. Each implements
//! `watcher::Refresher`:
//! - [`docker`]: pull through the Docker Engine with the host's credentials, then recreate (or
//!   remove) the containers configured with the image, never leaving a service down;
//! - [`webhook`]: POST the event as JSON, optionally HMAC-signed, with bounded retries;
//! - [`exec`]: run a command with the event in environment variables;
//! - [`swarm`]: tell each Swarm service of the tag its new digest and report how Swarm's rolling
//!   update (or its rollback) ended.
//!
//! Beside them, [`notify`] tells people what each tick moved, in the chat and push services'
//! own formats.
//!
//! Architecture invariant: no auth crate here. Pull credentials come through registry-core's
//! `EngineAuthSource` as a ready `X-Registry-Auth` value, which the wiring (registry-auth)
//! backs with each host's provider; the refresher sends it as is.

pub mod docker;
pub mod exec;
pub mod notify;
pub mod swarm;
pub mod webhook;

pub use docker::{
    ContainerFailure, ContainerFilter, DEFAULT_DOCKER_SOCKET, Discovered, DiscoveredImage, Discovery, DiscoveryConfig,
    DockerConfig, DockerError, DockerMode, DockerOutcome, DockerRefresher, Order, ROLLED_BACK_START_FIRST, Skipped,
    UpdateOrder,
};
pub use exec::{ExecConfig, ExecError, ExecRefresher};
pub use notify::{Notifier, NotifyError, NotifyFormat, NotifyTarget};
pub use swarm::{ServiceFailure, ServiceFilter, SwarmConfig, SwarmError, SwarmOutcome, SwarmRefresher};
pub use webhook::{WebhookConfig, WebhookError, WebhookRefresher};
