//! The order a recreate takes for one running container: start the new copy beside the old one
//! and prove it before the old one stops (start-first: a bad image costs no outage), or stop the
//! old one first (stop-first) when two copies would clash over something only one can hold. It
//! reads the old container's inspect answer only; it touches nothing.
//!
//! Exclusive, so stop-first (each named in the reason):
//! - a published host port with a fixed number (`-p 8080:80`; a random one, `-p 80` or `-P`,
//!   does not clash);
//! - the host's network (`--network host`: whatever it binds, the copy would bind too);
//! - another container's network namespace (`--network container:X`: the same);
//! - a fixed IP address on a network (`--ip`, `--ip6`);
//! - a read-write named volume or bind mount: two copies writing one data directory can
//!   corrupt it (two databases on one volume). Anonymous volumes are per container (except in a
//!   Compose project, whose recreate carries them over, so they count as shared) and read-only
//!   mounts are shared safely. The label `imagewatch.update-order=start-first` says the data
//!   tolerates two writers and lifts this one check (never the others: those make the engine
//!   refuse the second copy, or worse).
//!
//! The label `imagewatch.update-order=stop-first`, or the refresher's policy
//! [`UpdateOrder::StopFirst`], always stops first.

use std::fmt;
use std::str::FromStr;

use bollard::models::ContainerInspectResponse;

use super::labels::{UPDATE_ORDER, value};

/// The refresher-wide policy.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum UpdateOrder {
    /// Start-first where nothing exclusive clashes, stop-first otherwise.
    #[default]
    Auto,
    /// Always stop the old container before the new one starts (the order before start-first).
    StopFirst,
}

impl FromStr for UpdateOrder {
    type Err = String;

    fn from_str(value: &str) -> Result<Self, Self::Err> {
        match value {
            "auto" => Ok(UpdateOrder::Auto),
            "stop-first" => Ok(UpdateOrder::StopFirst),
            other => Err(format!(
                "invalid update order {other:?}; expected `auto` or `stop-first`"
            )),
        }
    }
}

/// The order chosen for one container.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Order {
    StartFirst,
    /// Why the old container must stop first.
    StopFirst(String),
}

impl fmt::Display for Order {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Order::StartFirst => f.write_str("start-first"),
            Order::StopFirst(why) => write!(f, "stop-first ({why})"),
        }
    }
}

/// The order for recreating `old` under `policy`.
pub fn order_for(old: &ContainerInspectResponse, policy: UpdateOrder) -> Order {
    let labels = old.config.as_ref().and_then(|config| config.labels.as_ref());
    let label = value(labels, &[UPDATE_ORDER]);
    match label {
        Some("stop-first") => return Order::StopFirst(format!("label {UPDATE_ORDER}=stop-first")),
        Some("start-first") | None => {}
        Some(other) => {
            return Order::StopFirst(format!(
                "label {UPDATE_ORDER}={other:?} is neither `start-first` nor `stop-first`"
            ));
        }
    }
    if policy == UpdateOrder::StopFirst {
        return Order::StopFirst("update order stop-first".into());
    }
    let mut clashes = Vec::new();
    let host = old.host_config.clone().unwrap_or_default();
    let mut ports: Vec<String> = host
        .port_bindings
        .iter()
        .flatten()
        .flat_map(|(container_port, bindings)| {
            bindings.iter().flatten().filter_map(move |binding| {
                let port = binding.host_port.as_deref().map(str::trim).unwrap_or("");
                (!port.is_empty() && port != "0").then(|| {
                    let ip = binding.host_ip.as_deref().filter(|ip| !ip.is_empty());
                    format!(
                        "{}{port}->{container_port}",
                        ip.map(|ip| format!("{ip}:")).unwrap_or_default()
                    )
                })
            })
        })
        .collect();
    ports.sort();
    if !ports.is_empty() {
        clashes.push(format!("publishes host port(s) {}", ports.join(", ")));
    }
    let network_mode = host.network_mode.as_deref().unwrap_or("default");
    if network_mode == "host" {
        clashes.push("uses the host's network".into());
    } else if let Some(other) = network_mode.strip_prefix("container:") {
        clashes.push(format!("shares the network of container {other}"));
    }
    let networks = old
        .network_settings
        .as_ref()
        .and_then(|settings| settings.networks.as_ref());
    let mut fixed: Vec<String> = networks
        .iter()
        .flat_map(|networks| networks.iter())
        .flat_map(|(network, endpoint)| {
            let ipam = endpoint.ipam_config.clone().unwrap_or_default();
            [ipam.ipv4_address, ipam.ipv6_address]
                .into_iter()
                .flatten()
                .filter(|address| !address.is_empty())
                .map(move |address| format!("{address} on {network}"))
        })
        .collect();
    fixed.sort();
    if !fixed.is_empty() {
        clashes.push(format!("has the fixed address {}", fixed.join(", ")));
    }
    let compose = super::compose::project_service(labels).is_some();
    if label != Some("start-first") {
        let mut shared: Vec<String> = old
            .mounts
            .iter()
            .flatten()
            .filter(|mount| mount.rw == Some(true))
            .filter_map(|mount| match mount.typ.as_deref() {
                Some("bind") => mount.source.clone().map(|source| format!("bind {source}")),
                Some("volume") => mount
                    .name
                    .clone()
                    .filter(|name| compose || !is_anonymous(name))
                    .map(|name| format!("volume {name}")),
                _ => None,
            })
            .collect();
        shared.sort();
        if !shared.is_empty() {
            clashes.push(format!(
                "writes to {} (label {UPDATE_ORDER}=start-first if two copies may share it)",
                shared.join(", ")
            ));
        }
    }
    if clashes.is_empty() {
        Order::StartFirst
    } else {
        Order::StopFirst(clashes.join("; "))
    }
}

/// The engine names an anonymous volume with 64 hex digits; it belongs to one container.
pub(super) fn is_anonymous(name: &str) -> bool {
    name.len() == 64 && name.bytes().all(|b| b.is_ascii_hexdigit())
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use bollard::models::{
        ContainerConfig, EndpointIpamConfig, EndpointSettings, HostConfig, MountPoint, NetworkSettings, PortBinding,
    };
    use rstest::rstest;

    use super::*;

    fn container(host: HostConfig, mounts: Vec<MountPoint>, labels: &[(&str, &str)]) -> ContainerInspectResponse {
        ContainerInspectResponse {
            config: Some(ContainerConfig {
                labels: Some(labels.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect()),
                ..ContainerConfig::default()
            }),
            host_config: Some(host),
            mounts: Some(mounts),
            ..ContainerInspectResponse::default()
        }
    }

    fn ports(host_port: &str) -> HostConfig {
        HostConfig {
            port_bindings: Some(HashMap::from([(
                "80/tcp".to_owned(),
                Some(vec![PortBinding {
                    host_ip: Some(String::new()),
                    host_port: Some(host_port.into()),
                }]),
            )])),
            ..HostConfig::default()
        }
    }

    fn mount(typ: &str, name: &str, rw: bool) -> MountPoint {
        MountPoint {
            typ: Some(typ.into()),
            name: Some(name.into()),
            source: Some(format!("/srv/{name}")),
            rw: Some(rw),
            ..MountPoint::default()
        }
    }

    fn network(mode: &str) -> HostConfig {
        HostConfig {
            network_mode: Some(mode.into()),
            ..HostConfig::default()
        }
    }

    #[rstest]
    #[case::nothing_exclusive(HostConfig::default(), vec![], &[], None)]
    #[case::fixed_host_port(ports("8080"), vec![], &[], Some("publishes host port(s) 8080->80/tcp"))]
    #[case::random_host_port(ports(""), vec![], &[], None)]
    #[case::host_network(network("host"), vec![], &[], Some("uses the host's network"))]
    #[case::container_network(network("container:db"), vec![], &[], Some("shares the network of container db"))]
    #[case::named_volume_rw(HostConfig::default(), vec![mount("volume", "data", true)], &[], Some("writes to volume data"))]
    #[case::bind_rw(HostConfig::default(), vec![mount("bind", "conf", true)], &[], Some("writes to bind /srv/conf"))]
    #[case::read_only_mount(HostConfig::default(), vec![mount("bind", "conf", false)], &[], None)]
    #[case::anonymous_volume(HostConfig::default(), vec![mount("volume", &"a".repeat(64), true)], &[], None)]
    #[case::label_lifts_the_mount_check(HostConfig::default(), vec![mount("volume", "data", true)], &[(UPDATE_ORDER, "start-first")], None)]
    #[case::label_never_lifts_a_port(ports("8080"), vec![], &[(UPDATE_ORDER, "start-first")], Some("publishes host port"))]
    #[case::label_forces_stop_first(HostConfig::default(), vec![], &[(UPDATE_ORDER, "stop-first")], Some("label imagewatch.update-order=stop-first"))]
    #[case::bad_label_is_stop_first(HostConfig::default(), vec![], &[(UPDATE_ORDER, "sideways")], Some("neither"))]
    fn order_is_start_first_unless_something_exclusive_clashes(
        #[case] host: HostConfig,
        #[case] mounts: Vec<MountPoint>,
        #[case] labels: &[(&str, &str)],
        #[case] stop_first_because: Option<&str>,
    ) {
        let order = order_for(&container(host, mounts, labels), UpdateOrder::Auto);
        match (stop_first_because, order) {
            (None, Order::StartFirst) => {}
            (Some(expected), Order::StopFirst(why)) => assert!(why.contains(expected), "{why}"),
            (expected, order) => panic!("expected {expected:?}, got {order}"),
        }
    }

    #[test]
    fn fixed_address_is_exclusive() {
        let mut old = container(HostConfig::default(), vec![], &[]);
        old.network_settings = Some(NetworkSettings {
            networks: Some(HashMap::from([(
                "appnet".to_owned(),
                EndpointSettings {
                    ipam_config: Some(EndpointIpamConfig {
                        ipv4_address: Some("172.30.0.9".into()),
                        ..EndpointIpamConfig::default()
                    }),
                    ..EndpointSettings::default()
                },
            )])),
            ..NetworkSettings::default()
        });
        assert_eq!(
            order_for(&old, UpdateOrder::Auto),
            Order::StopFirst("has the fixed address 172.30.0.9 on appnet".into())
        );
    }

    #[test]
    fn stop_first_policy_wins() {
        let old = container(HostConfig::default(), vec![], &[]);
        assert!(matches!(order_for(&old, UpdateOrder::StopFirst), Order::StopFirst(_)));
    }
}
