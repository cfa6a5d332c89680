//! Image references (`host/path:tag@digest`) normalised the way Docker normalises them:
//! a first component that is not a host means Docker Hub, and a single-name Docker Hub image
//! lives under `library/`.

use std::fmt;
use std::str::FromStr;
use std::sync::Arc;

use crate::digest::Digest;
use crate::host::{RegistryHost, looks_like_host};
use crate::path::path_problem;

/// The tag a reference without one means, as Docker reads it.
pub const DEFAULT_TAG: &str = "latest";

/// A validated tag: `[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}`.
#[derive(Clone, PartialEq, Eq, Hash, Debug)]
pub struct Tag(String);

impl Tag {
    pub fn latest() -> Tag {
        Tag(DEFAULT_TAG.to_owned())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl FromStr for Tag {
    type Err = &'static str;

    fn from_str(value: &str) -> Result<Self, Self::Err> {
        let bytes = value.as_bytes();
        let word = |b: u8| b.is_ascii_alphanumeric() || b == b'_';
        if bytes.is_empty() {
            return Err("the tag is empty");
        }
        if bytes.len() > 128 {
            return Err("the tag is longer than 128 characters");
        }
        if !word(bytes[0]) || !bytes.iter().all(|b| word(*b) || *b == b'.' || *b == b'-') {
            return Err("the tag is not letters, digits, `_`, `.` and `-` (not starting with `.` or `-`)");
        }
        Ok(Tag(value.to_owned()))
    }
}

impl fmt::Display for Tag {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A fully qualified image reference: host, repository, and a tag and/or a digest.
///
/// The parts sit behind one `Arc`: a watcher holds each reference in its watch set, status
/// board, seen digests and every round's bookkeeping, so a clone must cost a counter, not four
/// strings (at 10,000 images those copies were most of the heap).
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct ImageReference(Arc<Parts>);

#[derive(Clone, PartialEq, Eq, Hash)]
struct Parts {
    host: RegistryHost,
    repository: String,
    tag: Option<Tag>,
    digest: Option<Digest>,
}

/// Why a string is not an image reference.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid image reference {value:?}: {reason}; expected `[host[:port]/]path[:tag][@sha256:<64 hex>]`")]
pub struct ReferenceError {
    value: String,
    reason: String,
}

impl ImageReference {
    /// Builds a reference from parts already split, validating the repository path. A one-
    /// component Docker Hub repository gains `library/`, as parsing gives it, so the reference
    /// is the one its Display re-parses to (`docker.io/alpine` is `docker.io/library/alpine`).
    pub fn from_parts(
        host: RegistryHost,
        repository: &str,
        tag: Option<Tag>,
        digest: Option<Digest>,
    ) -> Result<ImageReference, ReferenceError> {
        let library;
        let repository = if host.is_docker_hub() && !repository.contains('/') && !repository.is_empty() {
            library = format!("library/{repository}");
            library.as_str()
        } else {
            repository
        };
        if let Some(problem) = path_problem(repository) {
            return Err(ReferenceError {
                value: format!("{host}/{repository}"),
                reason: format!("the repository path {problem}"),
            });
        }
        Ok(ImageReference(Arc::new(Parts {
            host,
            repository: repository.to_owned(),
            tag,
            digest,
        })))
    }

    pub fn host(&self) -> &RegistryHost {
        &self.0.host
    }

    /// The repository name as the registry API uses it (`library/alpine` on Docker Hub).
    pub fn repository(&self) -> &str {
        &self.0.repository
    }

    pub fn tag(&self) -> Option<&Tag> {
        self.0.tag.as_ref()
    }

    pub fn digest(&self) -> Option<&Digest> {
        self.0.digest.as_ref()
    }

    /// What goes after `/manifests/`: the digest when pinned, else the tag, else `latest`.
    pub fn manifest_reference(&self) -> String {
        match (&self.0.digest, &self.0.tag) {
            (Some(digest), _) => digest.to_string(),
            (None, Some(tag)) => tag.to_string(),
            (None, None) => DEFAULT_TAG.to_owned(),
        }
    }

    /// The same image without its digest: the moving reference a watcher polls. A reference
    /// pinned by digest alone gets `latest`, the tag its Display would re-parse to.
    pub fn without_digest(&self) -> ImageReference {
        if self.0.digest.is_none() && self.0.tag.is_some() {
            return self.clone();
        }
        ImageReference(Arc::new(Parts {
            digest: None,
            tag: self.0.tag.clone().or_else(|| Some(Tag::latest())),
            ..(*self.0).clone()
        }))
    }

    /// `host/repository[:tag]` as Docker's `fromImage` and container `Config.Image` spell it.
    pub fn name_and_tag(&self) -> String {
        match &self.0.tag {
            Some(tag) => format!("{}/{}:{tag}", self.0.host, self.0.repository),
            None => format!("{}/{}", self.0.host, self.0.repository),
        }
    }
}

impl FromStr for ImageReference {
    type Err = ReferenceError;

    fn from_str(raw: &str) -> Result<Self, Self::Err> {
        let error = |reason: String| ReferenceError {
            value: raw.to_owned(),
            reason,
        };
        let value = raw.trim();
        if value.is_empty() {
            return Err(error("it is empty".into()));
        }
        if value.contains("://") {
            return Err(error("it has a URL scheme; give the host without `https://`".into()));
        }
        if value.chars().any(char::is_whitespace) {
            return Err(error("it contains whitespace".into()));
        }
        let (name_and_tag, digest) = match value.split_once('@') {
            Some((rest, digest)) => (rest, Some(digest.parse::<Digest>().map_err(|e| error(e.to_string()))?)),
            None => (value, None),
        };
        let last_slash = name_and_tag.rfind('/').map_or(0, |i| i + 1);
        let (name, tag) = match name_and_tag[last_slash..].rfind(':') {
            Some(colon) => {
                let colon = last_slash + colon;
                let tag = name_and_tag[colon + 1..]
                    .parse::<Tag>()
                    .map_err(|e| error(e.to_owned()))?;
                (&name_and_tag[..colon], Some(tag))
            }
            None => (name_and_tag, None),
        };
        let (host, repository) = match name.split_once('/') {
            Some((first, rest)) if looks_like_host(first) => (
                first.parse::<RegistryHost>().map_err(|e| error(e.to_string()))?,
                rest.to_owned(),
            ),
            _ if name.starts_with('/') => return Err(error("the host is empty".into())),
            _ => (RegistryHost::docker_hub(), name.to_owned()),
        };
        let repository = if host.is_docker_hub() && !repository.contains('/') {
            format!("library/{repository}")
        } else {
            repository
        };
        if let Some(problem) = path_problem(&repository) {
            return Err(error(format!("the repository path {problem}")));
        }
        let tag = if tag.is_none() && digest.is_none() {
            Some(Tag::latest())
        } else {
            tag
        };
        Ok(ImageReference(Arc::new(Parts {
            host,
            repository,
            tag,
            digest,
        })))
    }
}

impl fmt::Display for ImageReference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.name_and_tag())?;
        if let Some(digest) = &self.0.digest {
            write!(f, "@{digest}")?;
        }
        Ok(())
    }
}

impl fmt::Debug for ImageReference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ImageReference({self})")
    }
}

impl serde::Serialize for ImageReference {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for ImageReference {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        String::deserialize(deserializer)?
            .parse()
            .map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rstest::rstest;

    const D: &str = "sha256:4f9c3ae6f6b5cbbd7bcd5a3a0d1e0e5f3b2e9a3c1b7d8e6f5a4b3c2d1e0f9a8b";

    #[rstest]
    #[case::short_hub("alpine", "docker.io", "library/alpine", Some("latest"), None)]
    #[case::short_hub_tag("alpine:3.20", "docker.io", "library/alpine", Some("3.20"), None)]
    #[case::hub_namespace("molecule-ai/img", "docker.io", "molecule-ai/img", Some("latest"), None)]
    #[case::explicit_hub_single("docker.io/alpine", "docker.io", "library/alpine", Some("latest"), None)]
    #[case::index_alias("index.docker.io/library/alpine:3", "docker.io", "library/alpine", Some("3"), None)]
    #[case::ghcr(
        "ghcr.io/molecule-ai/workspace-template-langgraph:latest",
        "ghcr.io",
        "molecule-ai/workspace-template-langgraph",
        Some("latest"),
        None
    )]
    #[case::port_no_tag("localhost:5000/x/y", "localhost:5000", "x/y", Some("latest"), None)]
    #[case::port_and_tag("localhost:5000/x/y:v1", "localhost:5000", "x/y", Some("v1"), None)]
    #[case::ipv6("[::1]:5000/img:v2", "[::1]:5000", "img", Some("v2"), None)]
    #[case::digest_only(&format!("ghcr.io/a/b@{D}"), "ghcr.io", "a/b", None, Some(D))]
    #[case::tag_and_digest(&format!("ghcr.io/a/b:v1@{D}"), "ghcr.io", "a/b", Some("v1"), Some(D))]
    #[case::localhost_single("localhost/img", "localhost", "img", Some("latest"), None)]
    #[case::host_port_alone_is_hub_name_and_tag("localhost:5000", "docker.io", "library/localhost", Some("5000"), None)]
    fn reference_is_normalised(
        #[case] input: &str,
        #[case] host: &str,
        #[case] repository: &str,
        #[case] tag: Option<&str>,
        #[case] digest: Option<&str>,
    ) {
        let reference: ImageReference = input.parse().expect("valid reference");
        assert_eq!(reference.host().as_str(), host);
        assert_eq!(reference.repository(), repository);
        assert_eq!(reference.tag().map(Tag::as_str), tag);
        assert_eq!(reference.digest().map(Digest::as_str), digest);
        let reparsed: ImageReference = reference.to_string().parse().expect("display re-parses");
        assert_eq!(reparsed, reference);
    }

    #[rstest]
    #[case::empty("", "empty")]
    #[case::scheme("https://ghcr.io/a/b", "scheme")]
    #[case::uppercase("ghcr.io/A/b", "uppercase")]
    #[case::bad_digest("ghcr.io/a/b@sha256:123", "digest")]
    #[case::bad_tag("ghcr.io/a/b:-x", "tag")]
    #[case::empty_tag("ghcr.io/a/b:", "tag")]
    #[case::empty_host("/a/b", "host")]
    #[case::space("ghcr.io/a b", "whitespace")]
    #[case::bad_port("ghcr.io:99999/a", "port")]
    fn malformed_reference_is_rejected(#[case] input: &str, #[case] reason: &str) {
        let error = input
            .parse::<ImageReference>()
            .expect_err("must be rejected")
            .to_string();
        assert!(error.contains(reason), "{error}");
        assert!(error.contains("expected"), "{error}");
    }

    #[test]
    fn manifest_reference_prefers_digest() {
        let pinned: ImageReference = format!("ghcr.io/a/b:v1@{D}").parse().expect("valid");
        assert_eq!(pinned.manifest_reference(), D);
        assert_eq!(pinned.without_digest().manifest_reference(), "v1");
    }

    #[rstest]
    #[case::tagged(format!("ghcr.io/a/b:v1@{D}"), "ghcr.io/a/b:v1")]
    #[case::digest_only(format!("ghcr.io/a/b@{D}"), "ghcr.io/a/b:latest")]
    fn without_digest_re_parses_to_itself(#[case] input: String, #[case] expected: &str) {
        let moving = input.parse::<ImageReference>().expect("valid").without_digest();
        assert_eq!(moving.to_string(), expected);
        assert_eq!(moving.to_string().parse::<ImageReference>().expect("valid"), moving);
    }

    #[rstest]
    #[case::one_component("alpine", "docker.io/library/alpine:latest")]
    #[case::two_components("org/app", "docker.io/org/app:latest")]
    fn docker_hub_parts_are_normalised_like_a_parse(#[case] repository: &str, #[case] expected: &str) {
        let built = ImageReference::from_parts(RegistryHost::docker_hub(), repository, Some(Tag::latest()), None)
            .expect("valid");
        assert_eq!(built.to_string(), expected);
        assert_eq!(built, expected.parse::<ImageReference>().expect("valid"));
    }

    proptest::proptest! {
        /// Any string parses or is refused (never a panic), and what parses re-parses from its
        /// Display to the same reference (state keys and hooks compare these).
        #[test]
        fn display_round_trips(value in "[a-zA-Z0-9./:@_-]{0,80}") {
            if let Ok(reference) = value.parse::<ImageReference>() {
                let again: ImageReference = reference.to_string().parse().expect("its own Display parses");
                proptest::prop_assert_eq!(&again, &reference);
                let moving = reference.without_digest();
                proptest::prop_assert_eq!(moving.to_string().parse::<ImageReference>().expect("parses"), moving);
            }
        }

        #[test]
        fn any_text_parses_or_is_refused(value in proptest::prelude::any::<String>()) {
            let _ = value.parse::<ImageReference>();
        }
    }

    #[test]
    fn a_clone_shares_the_parts_instead_of_copying_them() {
        let reference: ImageReference = "ghcr.io/acme/app:latest".parse().expect("parses");
        let copy = reference.clone();
        assert!(std::ptr::eq(
            reference.repository().as_ptr(),
            copy.repository().as_ptr()
        ));
        let moving = reference.without_digest();
        assert!(std::ptr::eq(
            reference.repository().as_ptr(),
            moving.repository().as_ptr()
        ));
        assert_eq!(copy, reference);
    }
}
