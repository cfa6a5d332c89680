//! How imagewatch reaches registries: the transport flags shared by every command that talks to
//! a registry, turned into registry-core's `Transport` at the edge.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use registry_core::RegistryHost;
use registry_core::client::{DEFAULT_CONNECT_TIMEOUT, DEFAULT_REQUEST_TIMEOUT, Transport, TransportConfig};

use crate::exit::Failure;

/// How imagewatch reaches registries: flags with environment fallbacks, shared by every
/// command that talks to a registry.
#[derive(Debug, Clone, clap::Args)]
pub struct TransportArgs {
    /// A registry host that may be reached over plain http when https fails (repeatable;
    /// loopback hosts always may). Credentials are never sent to it over plain http.
    #[arg(
        long = "insecure-registry",
        value_name = "HOST",
        env = "IMAGEWATCH_INSECURE_REGISTRIES",
        value_delimiter = ','
    )]
    pub insecure_registries: Vec<String>,
    /// A PEM file of extra CA certificates to trust besides the system's.
    #[arg(long, value_name = "PEM", env = "IMAGEWATCH_CA_BUNDLE")]
    pub ca_bundle: Option<PathBuf>,
    /// Seconds a whole registry request may take.
    #[arg(long = "request-timeout", value_name = "SECONDS", env = "IMAGEWATCH_REQUEST_TIMEOUT", default_value_t = DEFAULT_REQUEST_TIMEOUT.as_secs_f64())]
    pub request_timeout: f64,
    /// Seconds to wait for a connection.
    #[arg(long = "connect-timeout", value_name = "SECONDS", env = "IMAGEWATCH_CONNECT_TIMEOUT", default_value_t = DEFAULT_CONNECT_TIMEOUT.as_secs_f64())]
    pub connect_timeout: f64,
}

impl TransportArgs {
    /// The transport these flags describe; an invalid host, timeout or CA bundle is a
    /// configuration error.
    pub fn transport(&self) -> Result<Arc<Transport>, Failure> {
        let seconds = |value: f64, flag: &str| {
            Duration::try_from_secs_f64(value)
                .ok()
                .filter(|d| !d.is_zero())
                .ok_or_else(|| Failure::Config(format!("--{flag} {value} is not a positive number of seconds")))
        };
        let insecure_hosts = self
            .insecure_registries
            .iter()
            .map(|host| host.trim())
            .filter(|host| !host.is_empty())
            .map(|host| host.parse::<RegistryHost>().map_err(Failure::config))
            .collect::<Result<Vec<_>, _>>()?;
        let config = TransportConfig {
            connect_timeout: seconds(self.connect_timeout, "connect-timeout")?,
            request_timeout: seconds(self.request_timeout, "request-timeout")?,
            insecure_hosts,
            ca_bundle: self.ca_bundle.clone(),
            ..TransportConfig::default()
        };
        Ok(Arc::new(Transport::new(config).map_err(Failure::config)?))
    }
}
