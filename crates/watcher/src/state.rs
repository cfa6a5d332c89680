//! The state file: the last digest seen per image, so a digest that moved while the watcher was
//! down is noticed at the first tick after start. Written atomically (a temporary file in the
//! same directory, synced, then renamed over). A file that cannot be read or understood is
//! reported and renamed aside (`<name>.corrupt-<unix seconds>`), never silently emptied or
//! overwritten.
//!
//! Beside the applied digest, an image may carry the digest it moved to and when that was first
//! seen, so a cooldown survives a restart. Files without it (older ones) load unchanged.

use std::collections::{BTreeMap, HashMap};
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use registry_core::{Digest, ImageReference};
use serde::{Deserialize, Serialize};

/// The version written into new state files.
pub const STATE_VERSION: u64 = 1;

/// A state file location.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StateFile {
    path: PathBuf,
}

/// What [`StateFile::load`] found.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LoadedState {
    pub digests: HashMap<ImageReference, Digest>,
    /// Moved-to digests not applied yet, with when each was first seen.
    pub first_seen: HashMap<ImageReference, FirstSeen>,
    /// Set when the file was unreadable or corrupt and has been renamed aside.
    pub set_aside: Option<SetAside>,
}

/// A digest a tag moved to, and when imagewatch first saw it there.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FirstSeen {
    pub digest: Digest,
    /// Seconds since the Unix epoch.
    pub at: u64,
}

impl FirstSeen {
    /// `at` rounded up to the second, so a cooldown timed from it never ends early.
    pub fn new(digest: Digest, at: SystemTime) -> FirstSeen {
        let since = at.duration_since(SystemTime::UNIX_EPOCH).unwrap_or_default();
        FirstSeen {
            digest,
            at: since.as_secs() + u64::from(since.subsec_nanos() > 0),
        }
    }

    pub fn time(&self) -> SystemTime {
        SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(self.at)
    }
}

/// A state file that could not be used and was moved out of the way.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SetAside {
    /// Where the original bytes now are.
    pub moved_to: PathBuf,
    /// Why it could not be used.
    pub reason: String,
}

/// A state file could not be read, set aside or written.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error(
        "state file {path} cannot be used ({reason}) and could not be renamed aside to {aside}: {source}; refusing to start with an empty state over it — move or fix it by hand"
    )]
    SetAside {
        path: PathBuf,
        aside: PathBuf,
        reason: String,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot write state file {path}: {source}; expected a writable directory")]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

#[derive(Serialize, Deserialize)]
struct Document {
    version: u64,
    images: BTreeMap<String, Entry>,
}

#[derive(Serialize, Deserialize)]
struct Entry {
    digest: Digest,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pending: Option<FirstSeen>,
}

impl StateFile {
    pub fn new(path: impl Into<PathBuf>) -> StateFile {
        StateFile { path: path.into() }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Reads the file. A missing file is an empty state. An unreadable or corrupt one is renamed
    /// aside and reported in [`LoadedState::set_aside`]; if even that fails, this is an error.
    pub fn load(&self) -> Result<LoadedState, StateError> {
        let reason = match std::fs::read(&self.path) {
            Ok(bytes) => match parse(&bytes) {
                Ok((digests, first_seen)) => {
                    return Ok(LoadedState {
                        digests,
                        first_seen,
                        set_aside: None,
                    });
                }
                Err(reason) => reason,
            },
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(LoadedState::default()),
            Err(error) => format!("unreadable: {error}"),
        };
        let aside = self.aside_path();
        std::fs::rename(&self.path, &aside).map_err(|source| StateError::SetAside {
            path: self.path.clone(),
            aside: aside.clone(),
            reason: reason.clone(),
            source,
        })?;
        Ok(LoadedState {
            digests: HashMap::new(),
            first_seen: HashMap::new(),
            set_aside: Some(SetAside {
                moved_to: aside,
                reason,
            }),
        })
    }

    /// Writes `digests` atomically: readers see the old file or the new one, never a mix.
    pub fn save(&self, digests: &HashMap<ImageReference, Digest>) -> Result<(), StateError> {
        self.save_with(digests, &HashMap::new())
    }

    /// Like [`StateFile::save`], with the first-seen times of digests not applied yet (only
    /// for images that have an applied digest).
    pub fn save_with(
        &self,
        digests: &HashMap<ImageReference, Digest>,
        first_seen: &HashMap<ImageReference, FirstSeen>,
    ) -> Result<(), StateError> {
        let write_error = |source| StateError::Write {
            path: self.path.clone(),
            source,
        };
        let document = Document {
            version: STATE_VERSION,
            images: digests
                .iter()
                .map(|(image, digest)| {
                    let entry = Entry {
                        digest: digest.clone(),
                        pending: first_seen.get(image).cloned(),
                    };
                    (image.to_string(), entry)
                })
                .collect(),
        };
        let mut bytes = serde_json::to_vec_pretty(&document).map_err(|e| write_error(std::io::Error::other(e)))?;
        bytes.push(b'\n');
        let dir = self.directory();
        std::fs::create_dir_all(&dir).map_err(write_error)?;
        let mut temporary = tempfile::Builder::new()
            .prefix(".imagewatch-state-")
            .tempfile_in(&dir)
            .map_err(write_error)?;
        temporary.write_all(&bytes).map_err(write_error)?;
        temporary.as_file().sync_all().map_err(write_error)?;
        temporary.persist(&self.path).map_err(|e| write_error(e.error))?;
        // Make the rename itself durable; not every filesystem allows syncing a directory.
        if let Ok(directory) = std::fs::File::open(&dir) {
            let _ = directory.sync_all();
        }
        Ok(())
    }

    fn directory(&self) -> PathBuf {
        match self.path.parent() {
            Some(parent) if !parent.as_os_str().is_empty() => parent.to_path_buf(),
            _ => PathBuf::from("."),
        }
    }

    fn aside_path(&self) -> PathBuf {
        let seconds = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |elapsed| elapsed.as_secs());
        let base = format!("{}.corrupt-{seconds}", self.path.display());
        let mut candidate = PathBuf::from(&base);
        let mut n = 1;
        while candidate.exists() {
            candidate = PathBuf::from(format!("{base}-{n}"));
            n += 1;
        }
        candidate
    }
}

type Parsed = (HashMap<ImageReference, Digest>, HashMap<ImageReference, FirstSeen>);

fn parse(bytes: &[u8]) -> Result<Parsed, String> {
    let value: serde_json::Value = serde_json::from_slice(bytes).map_err(|e| format!("not JSON: {e}"))?;
    match value.get("version").and_then(serde_json::Value::as_u64) {
        Some(STATE_VERSION) => {}
        Some(other) => return Err(format!("version {other} is not supported (expected {STATE_VERSION})")),
        None => return Err(format!("no numeric `version` (expected {STATE_VERSION})")),
    }
    let document: Document = serde_json::from_value(value).map_err(|e| format!("malformed: {e}"))?;
    let mut digests = HashMap::new();
    let mut first_seen = HashMap::new();
    for (image, entry) in document.images {
        let reference = image
            .parse::<ImageReference>()
            .map_err(|e| format!("malformed image key: {e}"))?;
        if let Some(pending) = entry.pending {
            first_seen.insert(reference.clone(), pending);
        }
        digests.insert(reference, entry.digest);
    }
    Ok((digests, first_seen))
}

#[cfg(test)]
mod tests {
    use super::*;
    use rstest::rstest;

    fn digest(c: char) -> Digest {
        format!("sha256:{}", c.to_string().repeat(64)).parse().expect("valid")
    }

    fn sample() -> HashMap<ImageReference, Digest> {
        HashMap::from([
            ("ghcr.io/a/b:latest".parse().expect("valid"), digest('a')),
            ("127.0.0.1:5000/c:v1".parse().expect("valid"), digest('b')),
        ])
    }

    #[test]
    fn saved_state_loads_back_and_leaves_no_temporary_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = StateFile::new(dir.path().join("state.json"));
        file.save(&sample()).expect("saves");
        file.save(&sample()).expect("saves over");
        let loaded = file.load().expect("loads");
        assert_eq!(loaded.digests, sample());
        assert_eq!(loaded.set_aside, None);
        let names: Vec<_> = std::fs::read_dir(dir.path())
            .expect("lists")
            .map(|entry| entry.expect("entry").file_name())
            .collect();
        assert_eq!(names, vec![std::ffi::OsString::from("state.json")]);
    }

    #[test]
    fn first_seen_times_survive_a_save_and_older_files_load_without_them() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = StateFile::new(dir.path().join("state.json"));
        let image: ImageReference = "ghcr.io/a/b:latest".parse().expect("valid");
        let at = SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(1_800_000_000);
        let first_seen = HashMap::from([(image.clone(), FirstSeen::new(digest('c'), at))]);
        file.save_with(&sample(), &first_seen).expect("saves");
        let loaded = file.load().expect("loads");
        assert_eq!(loaded.digests, sample());
        assert_eq!(loaded.first_seen, first_seen);
        assert_eq!(loaded.first_seen[&image].time(), at);
        file.save(&sample()).expect("saves");
        assert!(file.load().expect("loads").first_seen.is_empty());
    }

    #[test]
    fn missing_file_is_an_empty_state_and_missing_directory_is_created() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = StateFile::new(dir.path().join("sub/state.json"));
        assert_eq!(file.load().expect("loads"), LoadedState::default());
        file.save(&sample()).expect("saves");
        assert_eq!(file.load().expect("loads").digests.len(), 2);
    }

    #[rstest]
    #[case::garbage(b"{not json".as_slice(), "not JSON")]
    #[case::empty(b"".as_slice(), "not JSON")]
    #[case::no_version(br#"{"images":{}}"#.as_slice(), "version")]
    #[case::future_version(br#"{"version":2,"images":{}}"#.as_slice(), "version 2")]
    #[case::bad_digest(br#"{"version":1,"images":{"ghcr.io/a/b:latest":{"digest":"sha256:nothex"}}}"#.as_slice(), "malformed")]
    #[case::bad_key(br#"{"version":1,"images":{"Bad Key":{"digest":"sha256:aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"}}}"#.as_slice(), "image key")]
    fn corrupt_file_is_set_aside_with_its_bytes_intact(#[case] contents: &[u8], #[case] reason: &str) {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("state.json");
        std::fs::write(&path, contents).expect("writes");
        let loaded = StateFile::new(&path).load().expect("set aside, not an error");
        assert!(loaded.digests.is_empty());
        let aside = loaded.set_aside.expect("reported");
        assert!(aside.reason.contains(reason), "{}", aside.reason);
        assert!(!path.exists(), "the corrupt file must not stay in place");
        assert!(
            aside
                .moved_to
                .to_string_lossy()
                .starts_with(&format!("{}.corrupt-", path.display())),
            "{}",
            aside.moved_to.display()
        );
        assert_eq!(std::fs::read(&aside.moved_to).expect("kept"), contents);
    }

    #[test]
    fn second_set_aside_in_the_same_second_does_not_clobber_the_first() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("state.json");
        let file = StateFile::new(&path);
        std::fs::write(&path, "first").expect("writes");
        let first = file.load().expect("loads").set_aside.expect("aside");
        std::fs::write(&path, "second").expect("writes");
        let second = file.load().expect("loads").set_aside.expect("aside");
        assert_ne!(first.moved_to, second.moved_to);
        assert_eq!(std::fs::read_to_string(&first.moved_to).expect("kept"), "first");
        assert_eq!(std::fs::read_to_string(&second.moved_to).expect("kept"), "second");
    }

    #[test]
    fn unreadable_path_is_set_aside() {
        // A directory where the file should be cannot be read as a file.
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("state.json");
        std::fs::create_dir(&path).expect("mkdir");
        let loaded = StateFile::new(&path).load().expect("set aside");
        let aside = loaded.set_aside.expect("reported");
        assert!(aside.reason.contains("unreadable"), "{}", aside.reason);
        assert!(aside.moved_to.is_dir());
    }
}
