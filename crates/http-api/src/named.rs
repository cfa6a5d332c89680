//! What a webhook payload is allowed to do: NAME an image. A [`NamedImage`] is matched against
//! the watch set and, at most, selects watched images to check against the registry now. It never
//! carries a digest into a decision, never adds an image to the watch set, and never makes
//! imagewatch contact a URL found in a payload.

use std::collections::HashMap;
use std::fmt;

use registry_core::{Digest, ImageReference, RegistryHost};
use watcher::WatchSet;

/// What a payload says about the registry host.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum HostHint {
    /// Nothing: the repository and tag decide.
    Any,
    /// The host as the sender saw it (distribution's `Host` header, Gitea's web URL): watched
    /// images on it are preferred, but a registry is often reached under another name than the
    /// one it reports (a proxy, `localhost` versus `127.0.0.1`), so when none is, the
    /// repository and tag alone decide. Selecting too much costs a check; missing a push costs
    /// a poll interval.
    Prefer(RegistryHost),
    /// The host is certain (Docker Hub's hooks are about Docker Hub, GitHub's name the
    /// registry URL): only watched images on it match.
    Only(RegistryHost),
}

/// An image a payload names: a repository, what it says about the host, the tag if it says
/// (without one, every watched tag of the repository matches), and the digest it claims the
/// tag has now, which decides nothing (see `watcher::TriggerHandle::check_expecting`).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct NamedImage {
    pub host: HostHint,
    pub repository: String,
    pub tag: Option<String>,
    pub claim: Option<Digest>,
}

impl NamedImage {
    pub fn new(host: HostHint, repository: &str, tag: Option<&str>) -> NamedImage {
        NamedImage {
            host,
            repository: repository.trim_matches('/').to_ascii_lowercase(),
            tag: tag.map(str::trim).filter(|tag| !tag.is_empty()).map(str::to_owned),
            claim: None,
        }
    }

    /// With the digest the payload claims, if it is a valid digest.
    pub fn claiming(mut self, digest: Option<&str>) -> NamedImage {
        self.claim = digest.and_then(|digest| digest.trim().parse().ok());
        self
    }

    /// The watched references this name selects (see [`HostHint`]).
    pub fn matches(&self, set: &WatchSet) -> Vec<ImageReference> {
        self.matches_in(&WatchIndex::new(set))
    }

    /// [`NamedImage::matches`] against an index built once for every name of a payload, so a
    /// payload costs its names plus the watched images, not their product.
    pub fn matches_in(&self, index: &WatchIndex<'_>) -> Vec<ImageReference> {
        let candidates: Vec<&ImageReference> = index
            .by_repository
            .get(self.repository.as_str())
            .map(Vec::as_slice)
            .unwrap_or_default()
            .iter()
            .copied()
            .filter(|reference| match &self.tag {
                Some(tag) => reference.tag().is_some_and(|watched| watched.as_str() == tag),
                None => true,
            })
            .collect();
        let on = |host: &RegistryHost| -> Vec<ImageReference> {
            candidates
                .iter()
                .filter(|r| r.host() == host)
                .map(|r| (*r).clone())
                .collect()
        };
        match &self.host {
            HostHint::Any => candidates.into_iter().cloned().collect(),
            HostHint::Only(host) => on(host),
            HostHint::Prefer(host) => {
                let preferred = on(host);
                if preferred.is_empty() {
                    candidates.into_iter().cloned().collect()
                } else {
                    preferred
                }
            }
        }
    }
}

/// The watched references by repository.
#[derive(Debug)]
pub struct WatchIndex<'a> {
    by_repository: HashMap<&'a str, Vec<&'a ImageReference>>,
}

impl<'a> WatchIndex<'a> {
    pub fn new(set: &'a WatchSet) -> WatchIndex<'a> {
        let mut by_repository: HashMap<&str, Vec<&ImageReference>> = HashMap::new();
        for image in set.images() {
            let reference = image.reference();
            by_repository.entry(reference.repository()).or_default().push(reference);
        }
        WatchIndex { by_repository }
    }
}

impl fmt::Display for NamedImage {
    /// `host/repository:tag`, with `*` for a missing host or tag.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let host = match &self.host {
            HostHint::Any => "*",
            HostHint::Prefer(host) | HostHint::Only(host) => host.as_str(),
        };
        write!(f, "{host}/{}:{}", self.repository, self.tag.as_deref().unwrap_or("*"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rstest::rstest;

    fn set() -> WatchSet {
        let mut set = WatchSet::new();
        for image in [
            "127.0.0.1:5000/org/app:latest",
            "127.0.0.1:5000/org/app:v2",
            "127.0.0.1:6000/org/app:latest",
            "ghcr.io/org/tool:latest",
            "nginx:latest",
        ] {
            set.add_image(image.parse().expect("valid")).expect("valid");
        }
        set
    }

    fn prefer(value: &str) -> HostHint {
        HostHint::Prefer(value.parse().expect("valid"))
    }

    fn only(value: &str) -> HostHint {
        HostHint::Only(value.parse().expect("valid"))
    }

    #[rstest]
    #[case::host_repository_tag(prefer("127.0.0.1:5000"), "org/app", Some("latest"), &["127.0.0.1:5000/org/app:latest"])]
    #[case::other_host_same_name(prefer("127.0.0.1:6000"), "org/app", Some("latest"), &["127.0.0.1:6000/org/app:latest"])]
    #[case::unknown_preferred_host_falls_back_to_the_name(prefer("localhost:5000"), "org/app", Some("latest"), &["127.0.0.1:5000/org/app:latest", "127.0.0.1:6000/org/app:latest"])]
    #[case::unknown_certain_host_matches_nothing(only("docker.io"), "org/app", Some("latest"), &[])]
    #[case::any_host(HostHint::Any, "org/app", Some("latest"), &["127.0.0.1:5000/org/app:latest", "127.0.0.1:6000/org/app:latest"])]
    #[case::no_tag_is_every_watched_tag(prefer("127.0.0.1:5000"), "org/app", None, &["127.0.0.1:5000/org/app:latest", "127.0.0.1:5000/org/app:v2"])]
    #[case::unwatched_tag(prefer("127.0.0.1:5000"), "org/app", Some("v3"), &[])]
    #[case::unwatched_repository(only("ghcr.io"), "org/other", Some("latest"), &[])]
    #[case::case_is_folded(only("ghcr.io"), "Org/Tool", Some("latest"), &["ghcr.io/org/tool:latest"])]
    #[case::docker_hub_library(only("docker.io"), "library/nginx", Some("latest"), &["docker.io/library/nginx:latest"])]
    fn a_name_selects_watched_references(
        #[case] host: HostHint,
        #[case] repository: &str,
        #[case] tag: Option<&str>,
        #[case] expected: &[&str],
    ) {
        let named = NamedImage::new(host, repository, tag);
        let matched: Vec<String> = named.matches(&set()).iter().map(ToString::to_string).collect();
        assert_eq!(matched, expected);
    }
}
