//! The create request for a copy of an old container on the new image.

use std::collections::HashMap;

use bollard::models::{
    ContainerConfig, ContainerCreateBody, ContainerInspectResponse, EndpointSettings, ImageConfig, NetworkingConfig,
};

/// The create request for a copy of `old` on whatever image its configured reference names now,
/// plus the networks to connect after create (API < 1.44 takes one network at create).
///
/// Values the container only has because the OLD image set them (env, labels, cmd, entrypoint,
/// working dir, user, ports, volumes, healthcheck, ...) are dropped, so the new image's values
/// apply; everything set on the container itself is kept. A container of a Compose project
/// keeps its anonymous volumes too, as `docker compose up` keeps them when it recreates one.
pub fn create_body(
    old: &ContainerInspectResponse,
    image: Option<&ImageConfig>,
) -> (ContainerCreateBody, Vec<(String, EndpointSettings)>) {
    let config = old.config.clone().unwrap_or_default();
    let old_id = old.id.clone().unwrap_or_default();
    let ContainerConfig {
        hostname,
        domainname,
        user,
        attach_stdin,
        attach_stdout,
        attach_stderr,
        exposed_ports,
        tty,
        open_stdin,
        stdin_once,
        env,
        cmd,
        healthcheck,
        args_escaped,
        image: configured_image,
        volumes,
        working_dir,
        entrypoint,
        network_disabled,
        on_build,
        labels,
        stop_signal,
        stop_timeout,
        shell,
    } = config;
    let mut host_config = old.host_config.clone().unwrap_or_default();
    if super::compose::project_service(labels.as_ref()).is_some() {
        let carried = anonymous_volumes(old);
        if !carried.is_empty() {
            host_config.binds.get_or_insert_with(Vec::new).extend(carried);
        }
    }
    let network_mode = host_config.network_mode.clone().unwrap_or_else(|| "default".into());
    let shares_namespace = network_mode.starts_with("container:") || network_mode == "host";
    // The engine's default hostname is the short container ID: let the new one get its own.
    let hostname = hostname.filter(|h| !h.is_empty() && !old_id.starts_with(h.as_str()) && !shares_namespace);
    let domainname = domainname.filter(|_| !shares_namespace);
    if let Some(links) = host_config.links.as_mut() {
        // Inspect shows `/target:/this/alias`; create wants `target:alias`.
        for link in links.iter_mut() {
            if let Some((target, alias)) = link.split_once(':') {
                let alias = alias.rsplit('/').next().unwrap_or(alias);
                *link = format!("{}:{alias}", target.trim_start_matches('/'));
            }
        }
    }

    let (cmd, entrypoint) = match image {
        // The image's own command pair stays the image's own, so a new image may change it.
        Some(image) if cmd == image.cmd && entrypoint == image.entrypoint => (None, None),
        Some(image) if entrypoint == image.entrypoint => (cmd, None),
        _ => (cmd, entrypoint),
    };
    let unless_from_image =
        |value: Option<String>, from_image: Option<&String>| value.filter(|v| !v.is_empty() && Some(v) != from_image);
    let body = ContainerCreateBody {
        hostname,
        domainname,
        user: unless_from_image(user, image.and_then(|i| i.user.as_ref())),
        attach_stdin,
        attach_stdout,
        attach_stderr,
        exposed_ports: without(exposed_ports, image.and_then(|i| i.exposed_ports.as_ref())),
        tty,
        open_stdin,
        stdin_once,
        env: without(env, image.and_then(|i| i.env.as_ref())),
        cmd,
        healthcheck: healthcheck.filter(|h| Some(h) != image.and_then(|i| i.healthcheck.as_ref())),
        args_escaped,
        image: configured_image,
        volumes: without(volumes, image.and_then(|i| i.volumes.as_ref())),
        working_dir: unless_from_image(working_dir, image.and_then(|i| i.working_dir.as_ref())),
        entrypoint,
        network_disabled,
        on_build: on_build.filter(|o| Some(o) != image.and_then(|i| i.on_build.as_ref())),
        labels: labels.map(|labels| {
            let from_image = image.and_then(|i| i.labels.as_ref());
            labels
                .into_iter()
                .filter(|(key, value)| from_image.and_then(|l| l.get(key)) != Some(value))
                .collect()
        }),
        stop_signal: unless_from_image(stop_signal, image.and_then(|i| i.stop_signal.as_ref())),
        stop_timeout,
        shell: shell.filter(|s| Some(s) != image.and_then(|i| i.shell.as_ref())),
        host_config: Some(host_config),
        networking_config: None,
    };

    let networks = old
        .network_settings
        .as_ref()
        .and_then(|settings| settings.networks.clone())
        .unwrap_or_default();
    let primary = if network_mode == "default" {
        "bridge".to_owned()
    } else {
        network_mode.clone()
    };
    let mut body = body;
    let mut extra = Vec::new();
    let mut names: Vec<&String> = networks.keys().collect();
    names.sort();
    for network in names {
        let endpoint = copied_endpoint(&networks[network], &old_id);
        if *network == primary {
            if !matches!(network.as_str(), "bridge" | "host" | "none") && !shares_namespace {
                body.networking_config = Some(NetworkingConfig {
                    endpoints_config: Some(HashMap::from([(network.clone(), endpoint)])),
                });
            }
        } else if !shares_namespace {
            extra.push((network.clone(), endpoint));
        }
    }
    (body, extra)
}

/// The old container's anonymous volumes as `name:destination[:ro]` binds, so a copy mounts the
/// same data.
pub(super) fn anonymous_volumes(old: &ContainerInspectResponse) -> Vec<String> {
    old.mounts
        .iter()
        .flatten()
        .filter(|mount| mount.typ.as_deref() == Some("volume"))
        .filter_map(|mount| {
            let name = mount.name.as_deref().filter(|name| super::order::is_anonymous(name))?;
            let destination = mount.destination.as_deref()?;
            let read_only = if mount.rw == Some(false) { ":ro" } else { "" };
            Some(format!("{name}:{destination}{read_only}"))
        })
        .collect()
}

/// The parts of an endpoint that were configured, not assigned at run time.
fn copied_endpoint(endpoint: &EndpointSettings, old_id: &str) -> EndpointSettings {
    EndpointSettings {
        ipam_config: endpoint.ipam_config.clone(),
        links: endpoint.links.clone(),
        aliases: endpoint.aliases.as_ref().map(|aliases| {
            aliases
                .iter()
                .filter(|alias| !old_id.starts_with(alias.as_str()))
                .cloned()
                .collect()
        }),
        driver_opts: endpoint.driver_opts.clone(),
        ..EndpointSettings::default()
    }
}

fn without(values: Option<Vec<String>>, from_image: Option<&Vec<String>>) -> Option<Vec<String>> {
    let values = values?;
    let kept: Vec<String> = values
        .into_iter()
        .filter(|value| from_image.is_none_or(|image| !image.contains(value)))
        .collect();
    (!kept.is_empty()).then_some(kept)
}

#[cfg(test)]
mod tests {
    use super::*;
    use bollard::models::{ContainerState, HostConfig, NetworkSettings};

    fn strings(values: &[&str]) -> Option<Vec<String>> {
        Some(values.iter().map(|v| (*v).to_owned()).collect())
    }

    fn old_container() -> ContainerInspectResponse {
        ContainerInspectResponse {
            id: Some("0123456789abcdef0123".into()),
            name: Some("/ws-one".into()),
            image: Some("sha256:aaaa".into()),
            state: Some(ContainerState {
                running: Some(true),
                ..ContainerState::default()
            }),
            config: Some(ContainerConfig {
                hostname: Some("0123456789ab".into()),
                image: Some("127.0.0.1:5000/org/app:latest".into()),
                env: strings(&["PATH=/bin", "IMAGEWATCH_TEST_VERSION=1", "MINE=yes"]),
                cmd: strings(&["/bin/busybox", "sleep", "3600"]),
                labels: Some(HashMap::from([
                    ("org.opencontainers.image.version".to_owned(), "1".to_owned()),
                    ("team".to_owned(), "blue".to_owned()),
                ])),
                ..ContainerConfig::default()
            }),
            host_config: Some(HostConfig {
                network_mode: Some("appnet".into()),
                links: strings(&["/db:/ws-one/database"]),
                ..HostConfig::default()
            }),
            network_settings: Some(NetworkSettings {
                networks: Some(HashMap::from([
                    (
                        "appnet".to_owned(),
                        EndpointSettings {
                            aliases: strings(&["0123456789ab", "app"]),
                            ip_address: Some("172.30.0.2".into()),
                            ..EndpointSettings::default()
                        },
                    ),
                    ("other".to_owned(), EndpointSettings::default()),
                ])),
                ..NetworkSettings::default()
            }),
            ..ContainerInspectResponse::default()
        }
    }

    fn old_image() -> ImageConfig {
        ImageConfig {
            env: strings(&["PATH=/bin", "IMAGEWATCH_TEST_VERSION=1"]),
            cmd: strings(&["/bin/busybox", "sleep", "3600"]),
            labels: Some(HashMap::from([(
                "org.opencontainers.image.version".to_owned(),
                "1".to_owned(),
            )])),
            ..ImageConfig::default()
        }
    }

    #[test]
    fn copy_keeps_what_the_container_set_and_drops_what_the_old_image_set() {
        let (body, extra) = create_body(&old_container(), Some(&old_image()));
        assert_eq!(body.image.as_deref(), Some("127.0.0.1:5000/org/app:latest"));
        assert_eq!(body.env, strings(&["MINE=yes"]));
        assert_eq!(body.cmd, None, "the image's own command stays the image's");
        assert_eq!(
            body.labels,
            Some(HashMap::from([("team".to_owned(), "blue".to_owned())]))
        );
        assert_eq!(body.hostname, None, "the default hostname is the old ID");
        let host = body.host_config.expect("host config");
        assert_eq!(host.links, strings(&["db:database"]));
        let endpoints = body
            .networking_config
            .and_then(|n| n.endpoints_config)
            .expect("primary network");
        let appnet = &endpoints["appnet"];
        assert_eq!(appnet.aliases, strings(&["app"]));
        assert_eq!(appnet.ip_address, None, "run-time address not copied");
        assert_eq!(extra.len(), 1);
        assert_eq!(extra[0].0, "other");
    }

    #[test]
    fn without_the_old_image_everything_is_copied() {
        let (body, _) = create_body(&old_container(), None);
        assert_eq!(
            body.env,
            strings(&["PATH=/bin", "IMAGEWATCH_TEST_VERSION=1", "MINE=yes"])
        );
        assert_eq!(body.cmd, strings(&["/bin/busybox", "sleep", "3600"]));
    }

    #[test]
    fn overridden_command_is_kept() {
        let mut old = old_container();
        if let Some(config) = old.config.as_mut() {
            config.cmd = strings(&["/bin/busybox", "sleep", "99"]);
        }
        let (body, _) = create_body(&old, Some(&old_image()));
        assert_eq!(body.cmd, strings(&["/bin/busybox", "sleep", "99"]));
    }
}
