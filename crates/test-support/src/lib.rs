//! Starts the REAL components imagewatch's integration tests and `cargo xtask test-matrix`
//! run against: Debian's `docker-registry` (CNCF distribution 2.8) in anonymous, htpasswd and
//! token modes, an in-process token server minting JWTs that registry accepts, deterministic
//! OCI images pushed with skopeo, moto for ECR, a scriptable fault server, an nginx TLS
//! front, swarm mode on the local Docker daemon (left as found), and a private PostgreSQL
//! cluster.
//!
//! Architecture invariants:
//! - Everything binds 127.0.0.1 on ports the OS picks; nothing reaches the network.
//! - Every child process is killed on drop. Logs go to a [`WorkDir`] that is kept (and its
//!   path printed) when the thread is panicking, deleted otherwise.
//! - A component that cannot start PANICS naming the binary, the package to install, and the
//!   log tail. Never a silent skip.
//! - The API is synchronous. In-process servers run on their own thread and tokio runtime, so
//!   a test blocked in `std::process::Command` (skopeo pushing through the token server) cannot
//!   deadlock a current-thread `#[tokio::test]`.
//!
//! A typical token-mode test:
//!
//! ```no_run
//! use test_support::*;
//! let wd = WorkDir::new("token-e2e");
//! let token = TokenServer::start(&wd, TokenServerConfig::new().user("alice", "pw", &["*"]));
//! let registry = Registry::start(&wd, RegistryConfig::token(&token));
//! let image = build_image(&wd, &ImageSpec::with_content("v1"));
//! let digest = skopeo::push(&image, &registry.image_ref("org/app", "latest"),
//!     ManifestFormat::Oci, Some(("alice", "pw")), &RegistryTls::Plain);
//! assert_eq!(digest, image.digest);
//! ```

#![warn(missing_docs)]

mod ca;
mod fault;
mod http;
mod image;
mod moto;
mod nginx;
mod postgres;
mod process;
mod registry;
pub mod signing;
pub mod skopeo;
mod swarm;
mod token;
mod workdir;

pub use ca::TestCa;
pub use fault::{FaultServer, RecordedRequest, Reply};
pub use http::{HttpRequest, HttpResponse, READINESS_USER_AGENT, ServerThread, Upstream, http_get, http_send};
pub use image::{
    ALL_MANIFEST_TYPES, DOCKER_MANIFEST, DOCKER_MANIFEST_LIST, ImageSpec, OCI_INDEX, OCI_MANIFEST, OciLayout, Platform,
    PlatformManifest, build_image, build_index, build_multi_arch, sha256_digest,
};
pub use moto::{AwsCall, GET_AUTHORIZATION_TOKEN_TARGET, Moto};
pub use nginx::NginxFront;
pub use postgres::{PG_USER, Postgres};
pub use process::{READY_TIMEOUT, free_port, log_tail};
pub use registry::{LogMark, Registry, RegistryAuth, RegistryConfig, RequestLog, RequestRecord, TokenAuth, parse_log};
pub use skopeo::{ManifestFormat, RegistryTls};
pub use swarm::Swarm;
pub use token::{
    Access, SeenAuth, TokenFault, TokenField, TokenRequest, TokenServer, TokenServerConfig, TokenUser,
    decode_jwt_claims,
};
pub use workdir::{KEEP_ENV, WorkDir};
