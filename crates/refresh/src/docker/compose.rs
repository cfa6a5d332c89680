//! Docker Compose awareness: which containers belong to a Compose project and service (the
//! `com.docker.compose.*` labels Compose writes and reads back), and which depend on a service
//! (`com.docker.compose.depends_on`, `service:condition:restart` entries, comma-separated), in
//! the order they must be restarted after it. A recreate keeps everything Compose recognises a
//! container by (its labels, name, project network and aliases, volumes; see `copy.rs`), so
//! `docker compose ps` lists it and `docker compose up` adopts it. It only reads labels.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use super::labels::value;

pub const PROJECT: &str = "com.docker.compose.project";
pub const SERVICE: &str = "com.docker.compose.service";
pub const DEPENDS_ON: &str = "com.docker.compose.depends_on";

/// The Compose project and service of a container, if Compose made it.
pub fn project_service(labels: Option<&HashMap<String, String>>) -> Option<(String, String)> {
    let project = value(labels, &[PROJECT]).filter(|p| !p.is_empty())?;
    let service = value(labels, &[SERVICE]).filter(|s| !s.is_empty())?;
    Some((project.to_owned(), service.to_owned()))
}

/// The services a container's `depends_on` label names.
pub fn depends_on(labels: Option<&HashMap<String, String>>) -> BTreeSet<String> {
    value(labels, &[DEPENDS_ON])
        .unwrap_or("")
        .split(',')
        .filter_map(|entry| entry.split(':').next())
        .map(str::trim)
        .filter(|service| !service.is_empty())
        .map(str::to_owned)
        .collect()
}

/// One container of a project, as the list answers it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Member {
    pub name: String,
    pub service: String,
    pub depends_on: BTreeSet<String>,
}

/// The containers to restart after `refreshed` services of one project were recreated: every
/// service depending on them, directly or not, each after the services it depends on (a cycle
/// is broken by name order). The refreshed services themselves are not restarted.
pub fn dependents_in_order(refreshed: &BTreeSet<String>, members: &[Member]) -> Vec<String> {
    let mut needs: BTreeMap<&str, &BTreeSet<String>> = BTreeMap::new();
    for member in members {
        needs.insert(member.service.as_str(), &member.depends_on);
    }
    // Every service reached from the refreshed ones.
    let mut reached: BTreeSet<&str> = BTreeSet::new();
    loop {
        let before = reached.len();
        for (service, deps) in &needs {
            if refreshed.contains(*service) {
                continue;
            }
            if deps
                .iter()
                .any(|dep| refreshed.contains(dep) || reached.contains(dep.as_str()))
            {
                reached.insert(service);
            }
        }
        if reached.len() == before {
            break;
        }
    }
    // Each after what it depends on among the reached ones.
    let mut ordered: Vec<&str> = Vec::new();
    while ordered.len() < reached.len() {
        let ready = reached.iter().copied().find(|service| {
            !ordered.contains(service)
                && needs[service]
                    .iter()
                    .all(|dep| !reached.contains(dep.as_str()) || ordered.contains(&dep.as_str()))
        });
        let next = ready.unwrap_or_else(|| {
            reached
                .iter()
                .copied()
                .find(|service| !ordered.contains(service))
                .unwrap_or_default()
        });
        ordered.push(next);
    }
    let mut names = Vec::new();
    for service in ordered {
        let mut of_service: Vec<&str> = members
            .iter()
            .filter(|member| member.service == service)
            .map(|member| member.name.as_str())
            .collect();
        of_service.sort_unstable();
        names.extend(of_service.into_iter().map(str::to_owned));
    }
    names
}

#[cfg(test)]
mod tests {
    use super::*;

    fn member(name: &str, service: &str, deps: &str) -> Member {
        let labels = HashMap::from([(DEPENDS_ON.to_owned(), deps.to_owned())]);
        Member {
            name: name.into(),
            service: service.into(),
            depends_on: depends_on(Some(&labels)),
        }
    }

    #[test]
    fn depends_on_label_is_read_as_compose_writes_it() {
        let labels = HashMap::from([(
            DEPENDS_ON.to_owned(),
            "db:service_healthy:false,cache:service_started:true".to_owned(),
        )]);
        let deps: Vec<String> = depends_on(Some(&labels)).into_iter().collect();
        assert_eq!(deps, vec!["cache".to_owned(), "db".to_owned()]);
    }

    #[test]
    fn dependents_come_after_what_they_depend_on_transitively() {
        let members = [
            member("p-web-1", "web", "api:service_started:false"),
            member("p-api-1", "api", "db:service_started:false"),
            member("p-db-1", "db", ""),
            member(
                "p-worker-1",
                "worker",
                "db:service_started:false,api:service_started:false",
            ),
            member("p-other-1", "other", ""),
        ];
        let refreshed = BTreeSet::from(["db".to_owned()]);
        let order = dependents_in_order(&refreshed, &members);
        assert_eq!(order, vec!["p-api-1", "p-web-1", "p-worker-1"]);
    }

    #[test]
    fn a_refreshed_service_is_not_restarted_and_a_cycle_still_ends() {
        let members = [
            member("a", "a", "b"),
            member("b", "b", "a"),
            member("db", "db", ""),
            member("c", "c", "db"),
        ];
        let refreshed = BTreeSet::from(["db".to_owned(), "a".to_owned()]);
        assert_eq!(dependents_in_order(&refreshed, &members), vec!["b", "c"]);
    }
}
