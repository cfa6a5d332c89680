//! The watch set: which image references are polled, each with the runtime it serves, if any.
//! By default that is the runtime images of the configured prefix; any other references can be
//! added. The product's naming of workspace images (`<prefix>/workspace-template-<runtime>:latest`)
//! and its default runtimes live here, where the set is made. It owns nothing else: no digests,
//! no registry access.

use std::collections::{HashMap, HashSet};

use registry_core::{ImageReference, ReferenceError, RegistryHost, RegistryPrefix, Tag};

/// The runtimes whose workspace images are watched unless told otherwise.
pub const DEFAULT_RUNTIMES: &[&str] = &[
    "claude-code",
    "langgraph",
    "crewai",
    "autogen",
    "deepagents",
    "hermes",
    "gemini-cli",
    "openclaw",
];

/// `<prefix>/workspace-template-<runtime>:latest`: the moving tag a runtime's workspace image
/// is published under.
pub fn runtime_image(prefix: &RegistryPrefix, runtime: &str) -> Result<ImageReference, ReferenceError> {
    let repository = prefix.repository(&format!("workspace-template-{runtime}"));
    ImageReference::from_parts(prefix.host().clone(), &repository, Some(Tag::latest()), None)
}

/// One watched image: the moving reference and the runtime it is the image of, if any.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WatchedImage {
    reference: ImageReference,
    runtime: Option<String>,
}

impl WatchedImage {
    pub fn new(reference: ImageReference, runtime: Option<String>) -> WatchedImage {
        WatchedImage { reference, runtime }
    }

    pub fn reference(&self) -> &ImageReference {
        &self.reference
    }

    pub fn runtime(&self) -> Option<&str> {
        self.runtime.as_deref()
    }

    pub fn host(&self) -> &RegistryHost {
        self.reference.host()
    }
}

/// Why an image cannot be watched.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WatchSetError {
    #[error("runtime {runtime:?} does not name a valid image under {prefix}: {source}")]
    Runtime {
        runtime: String,
        prefix: String,
        #[source]
        source: ReferenceError,
    },
    #[error(
        "{reference} is pinned by digest, and a pinned digest never moves; expected a tag to watch without a digest, e.g. `{name}`"
    )]
    PinnedByDigest { reference: String, name: String },
}

/// The images a watcher polls, in the order given, without duplicates.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct WatchSet {
    images: Vec<WatchedImage>,
    /// Each reference's index in `images`, so adding and finding stay O(1) at 10,000 images.
    positions: HashMap<ImageReference, usize>,
}

impl WatchSet {
    pub fn new() -> WatchSet {
        WatchSet::default()
    }

    /// The runtime images of `prefix` for each name in `runtimes`.
    pub fn runtimes<S: AsRef<str>>(prefix: &RegistryPrefix, runtimes: &[S]) -> Result<WatchSet, WatchSetError> {
        let mut set = WatchSet::new();
        for runtime in runtimes {
            set.add_runtime(prefix, runtime.as_ref())?;
        }
        Ok(set)
    }

    /// The runtime images of `prefix` for every runtime in [`DEFAULT_RUNTIMES`].
    pub fn default_runtimes(prefix: &RegistryPrefix) -> Result<WatchSet, WatchSetError> {
        WatchSet::runtimes(prefix, DEFAULT_RUNTIMES)
    }

    /// Adds `<prefix>/workspace-template-<runtime>:latest`, tagged with the runtime's name.
    pub fn add_runtime(&mut self, prefix: &RegistryPrefix, runtime: &str) -> Result<(), WatchSetError> {
        let reference = runtime_image(prefix, runtime).map_err(|source| WatchSetError::Runtime {
            runtime: runtime.to_owned(),
            prefix: prefix.to_string(),
            source,
        })?;
        self.insert(WatchedImage::new(reference, Some(runtime.to_owned())));
        Ok(())
    }

    /// Adds any reference by tag. A reference with a digest (`name@digest`, `name:tag@digest`)
    /// is rejected, since what it names can never move.
    pub fn add_image(&mut self, reference: ImageReference) -> Result<(), WatchSetError> {
        // `name:tag@digest` pulls the digest whatever the tag says: watching the tag instead
        // would silently do something else than the reference asks.
        if reference.digest().is_some() {
            let tag = reference.tag().map_or("latest", |tag| tag.as_str());
            return Err(WatchSetError::PinnedByDigest {
                reference: reference.to_string(),
                name: format!("{}/{}:{tag}", reference.host(), reference.repository()),
            });
        }
        self.insert(WatchedImage::new(reference, None));
        Ok(())
    }

    /// Adds `image`; a reference already present keeps its place, and gains a runtime name if it
    /// had none.
    pub fn insert(&mut self, image: WatchedImage) {
        match self.positions.get(&image.reference) {
            Some(&index) => {
                let known = &mut self.images[index];
                if known.runtime.is_none() {
                    known.runtime = image.runtime;
                }
            }
            None => {
                self.positions.insert(image.reference.clone(), self.images.len());
                self.images.push(image);
            }
        }
    }

    pub fn images(&self) -> &[WatchedImage] {
        &self.images
    }

    /// The watched image with exactly this reference.
    pub fn get(&self, reference: &ImageReference) -> Option<&WatchedImage> {
        self.positions.get(reference).map(|&index| &self.images[index])
    }

    pub fn len(&self) -> usize {
        self.images.len()
    }

    pub fn is_empty(&self) -> bool {
        self.images.is_empty()
    }

    /// Each registry host of the set, once, in order of first appearance.
    pub fn hosts(&self) -> Vec<RegistryHost> {
        let mut seen: HashSet<&RegistryHost> = HashSet::new();
        self.images
            .iter()
            .map(WatchedImage::host)
            .filter(|host| seen.insert(host))
            .cloned()
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[rstest::rstest]
    #[case(
        "ghcr.io/molecule-ai",
        "langgraph",
        "ghcr.io/molecule-ai/workspace-template-langgraph:latest"
    )]
    #[case(
        "registry.example.com",
        "crewai",
        "registry.example.com/workspace-template-crewai:latest"
    )]
    #[case("molecule-ai", "hermes", "docker.io/molecule-ai/workspace-template-hermes:latest")]
    #[case::bare_docker_hub("docker.io", "langgraph", "docker.io/library/workspace-template-langgraph:latest")]
    #[case::bare_index_alias("index.docker.io", "hermes", "docker.io/library/workspace-template-hermes:latest")]
    #[case("[::1]:5000/x", "autogen", "[::1]:5000/x/workspace-template-autogen:latest")]
    fn runtime_image_hangs_off_the_prefix(#[case] prefix: &str, #[case] runtime: &str, #[case] expected: &str) {
        let prefix: RegistryPrefix = prefix.parse().expect("valid");
        let image = runtime_image(&prefix, runtime).expect("valid runtime");
        assert_eq!(image.to_string(), expected);
        assert_eq!(image.host(), prefix.host());
        // The state file and hooks compare re-parsed references: it must be the same one.
        assert_eq!(image.to_string().parse::<ImageReference>().expect("valid"), image);
    }

    #[test]
    fn invalid_runtime_name_is_rejected() {
        let prefix: RegistryPrefix = "ghcr.io/molecule-ai".parse().expect("valid");
        assert!(runtime_image(&prefix, "Claude Code").is_err());
    }

    #[test]
    fn every_default_runtime_makes_a_valid_image() {
        let prefix: RegistryPrefix = "ghcr.io/molecule-ai".parse().expect("valid");
        for runtime in DEFAULT_RUNTIMES {
            runtime_image(&prefix, runtime).expect("default runtime image is valid");
        }
    }
    use rstest::rstest;

    fn prefix(value: &str) -> RegistryPrefix {
        value.parse().expect("valid prefix")
    }

    fn reference(value: &str) -> ImageReference {
        value.parse().expect("valid reference")
    }

    #[test]
    fn default_set_is_every_runtime_image_of_the_prefix() {
        let set = WatchSet::default_runtimes(&prefix("ghcr.io/molecule-ai")).expect("valid");
        assert_eq!(set.len(), DEFAULT_RUNTIMES.len());
        let first = &set.images()[0];
        assert_eq!(
            first.reference().to_string(),
            format!("ghcr.io/molecule-ai/workspace-template-{}:latest", DEFAULT_RUNTIMES[0])
        );
        assert_eq!(first.runtime(), Some(DEFAULT_RUNTIMES[0]));
        assert_eq!(set.hosts(), vec![first.host().clone()]);
    }

    #[test]
    fn invalid_runtime_name_is_rejected_with_the_name() {
        let error = WatchSet::runtimes(&prefix("ghcr.io/molecule-ai"), &["Claude Code"]).expect_err("invalid");
        assert!(error.to_string().contains("\"Claude Code\""), "{error}");
    }

    #[rstest]
    #[case::tag("ghcr.io/a/b:v1", Some("ghcr.io/a/b:v1"))]
    #[case::implicit_latest("ghcr.io/a/b", Some("ghcr.io/a/b:latest"))]
    #[case::tag_and_digest_is_rejected(
        "ghcr.io/a/b:v1@sha256:4f9c3ae6f6b5cbbd7bcd5a3a0d1e0e5f3b2e9a3c1b7d8e6f5a4b3c2d1e0f9a8b",
        None
    )]
    #[case::digest_only_is_rejected(
        "ghcr.io/a/b@sha256:4f9c3ae6f6b5cbbd7bcd5a3a0d1e0e5f3b2e9a3c1b7d8e6f5a4b3c2d1e0f9a8b",
        None
    )]
    fn added_image_is_watched_by_its_tag(#[case] input: &str, #[case] watched: Option<&str>) {
        let mut set = WatchSet::new();
        let result = set.add_image(reference(input));
        match watched {
            Some(expected) => {
                result.expect("accepted");
                assert_eq!(set.images()[0].reference().to_string(), expected);
            }
            None => {
                let error = result.expect_err("rejected").to_string();
                assert!(
                    error.contains("expected a tag") && error.contains("ghcr.io/a/b:"),
                    "{error}"
                );
            }
        }
    }

    #[test]
    fn duplicate_reference_is_kept_once_and_gains_the_runtime() {
        let prefix = prefix("ghcr.io/molecule-ai");
        let mut set = WatchSet::new();
        set.add_image(reference("ghcr.io/molecule-ai/workspace-template-hermes"))
            .expect("valid");
        set.add_image(reference("ghcr.io/other/img:1")).expect("valid");
        set.add_runtime(&prefix, "hermes").expect("valid");
        assert_eq!(set.len(), 2);
        assert_eq!(set.images()[0].runtime(), Some("hermes"));
        assert_eq!(set.images()[1].reference().to_string(), "ghcr.io/other/img:1");
    }
}
