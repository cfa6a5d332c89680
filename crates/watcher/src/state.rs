//! The state file: the last digest seen per image, so a digest that moved while the watcher was
//! down is noticed at the first tick after start. Written atomically (a temporary file in the
//! same directory, synced, then renamed over). A file that cannot be understood is reported and
//! renamed aside (`<name>.corrupt-<unix seconds>`), never silently emptied or overwritten.
//!
//! What the path may be is strict, because operators point it at volumes and devices: a regular
//! file (or none yet), or a symlink to one, which is followed so the write lands beside the
//! target and the link stays (a symlink into a persistent volume keeps updating the volume).
//! Anything else (a directory, a device, a FIFO, a socket), a file this user cannot read, or a
//! file over [`MAX_STATE_BYTES`] is a start-up error that changes nothing on disk. Temporary
//! files a killed save left behind are removed at the next start. Entries for images no longer
//! watched are kept for [`UNWATCHED_GRACE`], then dropped.
//!
//! Beside the applied digest, an image may carry the digest it moved to and when that was first
//! seen, so a cooldown survives a restart. Files without it (older ones) load unchanged.
//!
//! Keys are image references in their normal form (`docker.io/library/alpine:latest`); two
//! keys naming one image load as one entry, the newest, with a warning.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::io::{Read as _, Write as _};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, SystemTime};

use registry_core::{Digest, ImageReference};
use serde::{Deserialize, Serialize};

/// The version written into new state files.
pub const STATE_VERSION: u64 = 1;

/// The largest state file read: about 80,000 images at ~200 bytes each. A larger file is not
/// one imagewatch wrote, and reading it whole would cost its size in memory.
pub const MAX_STATE_BYTES: u64 = 16 * 1024 * 1024;

/// How long the entry of an image no longer watched is kept. A week, because an image dropped
/// from the list by a mistaken restart, or watched only on some deploys, should keep its seen
/// digest: when it comes back, a move made meanwhile is still noticed as a move instead of being
/// seeded silently. Past that, the file only grows with history nobody asks for.
pub const UNWATCHED_GRACE: Duration = Duration::from_secs(7 * 24 * 3600);

/// The prefix of our temporary files; anything else in the directory is never touched.
const TEMPORARY_PREFIX: &str = ".imagewatch-state-";

/// A temporary file younger than this may be another process's save in progress (a save takes
/// milliseconds); older ones are left over from a killed save.
const STALE_TEMPORARY_AGE: Duration = Duration::from_secs(60);

/// Symlink hops followed before the path is called a loop.
const MAX_LINK_HOPS: usize = 40;

/// A state file location.
#[derive(Debug)]
pub struct StateFile {
    path: PathBuf,
    /// When given, entries of other images are pruned after [`UNWATCHED_GRACE`].
    watched: Option<HashSet<ImageReference>>,
    /// Per image, what was last loaded or saved and when: the times written back into entries.
    known: Mutex<HashMap<ImageReference, Known>>,
}

#[derive(Clone, Debug)]
struct Known {
    digest: Digest,
    updated: Option<u64>,
    watched: Option<u64>,
    /// The digest the tag moved to and is not applied yet, with when it was first seen.
    pending: Option<FirstSeen>,
}

/// What [`StateFile::load`] found.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LoadedState {
    pub digests: HashMap<ImageReference, Digest>,
    /// Moved-to digests not applied yet, with when each was first seen.
    pub first_seen: HashMap<ImageReference, FirstSeen>,
    /// Set when the file was corrupt and has been renamed aside.
    pub set_aside: Option<SetAside>,
    /// What the operator should know but that did not stop the load: two keys naming one
    /// image, left-over temporary files removed.
    pub warnings: Vec<String>,
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
        SystemTime::UNIX_EPOCH + Duration::from_secs(self.at)
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
    #[error(
        "state file {path} is {kind}; expected a regular file, a symlink to one, or a path that does not exist yet"
    )]
    NotRegular { path: PathBuf, kind: &'static str },
    #[error("cannot read state file {path}: {source}; expected a file this user can read and write")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "state file {path} is {size} bytes, over the cap of {MAX_STATE_BYTES} bytes; expected a file imagewatch wrote (about 200 bytes per image) — move it aside"
    )]
    TooLarge { path: PathBuf, size: u64 },
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
    /// Unix seconds when this digest was first saved for the image.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    updated: Option<u64>,
    /// Unix seconds of the last save while the image was watched.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    watched: Option<u64>,
    /// A digest moved to and not applied yet (the cooldown's clock survives a restart).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pending: Option<FirstSeen>,
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.as_secs())
}

/// What a file type is called in an error.
fn kind_of(file_type: std::fs::FileType) -> &'static str {
    use std::os::unix::fs::FileTypeExt as _;
    if file_type.is_dir() {
        "a directory"
    } else if file_type.is_char_device() {
        "a character device"
    } else if file_type.is_block_device() {
        "a block device"
    } else if file_type.is_fifo() {
        "a FIFO"
    } else if file_type.is_socket() {
        "a socket"
    } else {
        "not a regular file"
    }
}

impl StateFile {
    pub fn new(path: impl Into<PathBuf>) -> StateFile {
        StateFile {
            path: path.into(),
            watched: None,
            known: Mutex::new(HashMap::new()),
        }
    }

    /// Prunes, when saving, the entries of images not in `watched` once they have been unwatched
    /// for [`UNWATCHED_GRACE`].
    pub fn watching(mut self, watched: impl IntoIterator<Item = ImageReference>) -> StateFile {
        self.watched = Some(watched.into_iter().collect());
        self
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    fn known(&self) -> std::sync::MutexGuard<'_, HashMap<ImageReference, Known>> {
        self.known.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The file the path stands for: the path itself, or where its symlinks end (which may not
    /// exist yet). Anything but a regular file or nothing there is an error.
    fn target(&self) -> Result<PathBuf, StateError> {
        let mut current = self.path.clone();
        for _ in 0..MAX_LINK_HOPS {
            match std::fs::symlink_metadata(&current) {
                Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(current),
                Err(source) => return Err(StateError::Read { path: current, source }),
                Ok(meta) if meta.file_type().is_symlink() => {
                    let link = std::fs::read_link(&current).map_err(|source| StateError::Read {
                        path: current.clone(),
                        source,
                    })?;
                    current = match current.parent() {
                        Some(parent) if link.is_relative() => parent.join(link),
                        _ => link,
                    };
                }
                Ok(meta) if meta.is_file() => return Ok(current),
                Ok(meta) => {
                    return Err(StateError::NotRegular {
                        path: self.path.clone(),
                        kind: kind_of(meta.file_type()),
                    });
                }
            }
        }
        Err(StateError::NotRegular {
            path: self.path.clone(),
            kind: "a loop of symlinks",
        })
    }

    /// Reads the file. A missing file is an empty state. A corrupt one is renamed aside and
    /// reported in [`LoadedState::set_aside`]; if even that fails, this is an error, as are a
    /// path that is not a regular file, a file that cannot be read and one over the size cap.
    pub fn load(&self) -> Result<LoadedState, StateError> {
        let target = self.target()?;
        let mut warnings = remove_stale_temporaries(&directory_of(&target));
        let read_error = |source| StateError::Read {
            path: self.path.clone(),
            source,
        };
        let file = match std::fs::File::open(&target) {
            Ok(file) => file,
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
                return Ok(LoadedState {
                    warnings,
                    ..LoadedState::default()
                });
            }
            Err(error) => return Err(read_error(error)),
        };
        let meta = file.metadata().map_err(read_error)?;
        if !meta.is_file() {
            return Err(StateError::NotRegular {
                path: self.path.clone(),
                kind: kind_of(meta.file_type()),
            });
        }
        if meta.len() > MAX_STATE_BYTES {
            return Err(StateError::TooLarge {
                path: self.path.clone(),
                size: meta.len(),
            });
        }
        let mut bytes = Vec::with_capacity(usize::try_from(meta.len()).unwrap_or(0));
        file.take(MAX_STATE_BYTES + 1)
            .read_to_end(&mut bytes)
            .map_err(read_error)?;
        if bytes.len() as u64 > MAX_STATE_BYTES {
            return Err(StateError::TooLarge {
                path: self.path.clone(),
                size: bytes.len() as u64,
            });
        }
        let reason = match parse(&bytes) {
            Ok(parsed) => {
                warnings.extend(parsed.warnings);
                let digests = parsed
                    .known
                    .iter()
                    .map(|(k, v)| (k.clone(), v.digest.clone()))
                    .collect();
                let first_seen = parsed
                    .known
                    .iter()
                    .filter_map(|(k, v)| v.pending.clone().map(|pending| (k.clone(), pending)))
                    .collect();
                *self.known() = parsed.known;
                return Ok(LoadedState {
                    digests,
                    first_seen,
                    set_aside: None,
                    warnings,
                });
            }
            Err(reason) => reason,
        };
        let aside = aside_path(&target);
        std::fs::rename(&target, &aside).map_err(|source| StateError::SetAside {
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
            warnings,
        })
    }

    /// Writes `digests` atomically: readers see the old file or the new one, never a mix.
    /// Through a symlink, the target is replaced and the link kept.
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
        let target = self.target()?;
        let now = unix_now();
        let grace = UNWATCHED_GRACE.as_secs();
        let mut known = self.known();
        let mut images = BTreeMap::new();
        for (image, digest) in digests {
            let before = known.get(image).filter(|k| k.digest == *digest);
            let updated = before.and_then(|k| k.updated).unwrap_or(now);
            let watched = match &self.watched {
                Some(set) if !set.contains(image) => before.and_then(|k| k.watched).unwrap_or(now),
                _ => now,
            };
            if now.saturating_sub(watched) > grace {
                continue;
            }
            known.insert(
                image.clone(),
                Known {
                    digest: digest.clone(),
                    updated: Some(updated),
                    watched: Some(watched),
                    pending: first_seen.get(image).cloned(),
                },
            );
            let entry = Entry {
                digest: digest.clone(),
                updated: Some(updated),
                watched: Some(watched),
                pending: first_seen.get(image).cloned(),
            };
            images.insert(image.to_string(), entry);
        }
        drop(known);
        let document = Document {
            version: STATE_VERSION,
            images,
        };
        let mut bytes = serde_json::to_vec_pretty(&document).map_err(|e| write_error(std::io::Error::other(e)))?;
        bytes.push(b'\n');
        let dir = directory_of(&target);
        std::fs::create_dir_all(&dir).map_err(write_error)?;
        let mut temporary = tempfile::Builder::new()
            .prefix(TEMPORARY_PREFIX)
            .tempfile_in(&dir)
            .map_err(write_error)?;
        temporary.write_all(&bytes).map_err(write_error)?;
        temporary.as_file().sync_all().map_err(write_error)?;
        temporary.persist(&target).map_err(|e| write_error(e.error))?;
        // Make the rename itself durable; not every filesystem allows syncing a directory.
        if let Ok(directory) = std::fs::File::open(&dir) {
            let _ = directory.sync_all();
        }
        Ok(())
    }
}

fn directory_of(path: &Path) -> PathBuf {
    match path.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

fn aside_path(path: &Path) -> PathBuf {
    let base = format!("{}.corrupt-{}", path.display(), unix_now());
    let mut candidate = PathBuf::from(&base);
    let mut n = 1;
    while candidate.exists() {
        candidate = PathBuf::from(format!("{base}-{n}"));
        n += 1;
    }
    candidate
}

/// Removes regular files of our temporary naming older than [`STALE_TEMPORARY_AGE`] from `dir`,
/// and says what it removed (or could not).
fn remove_stale_temporaries(dir: &Path) -> Vec<String> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut notes = Vec::new();
    for entry in entries.flatten() {
        if !entry.file_name().to_string_lossy().starts_with(TEMPORARY_PREFIX) {
            continue;
        }
        let Ok(meta) = entry.metadata() else { continue };
        let stale = meta
            .modified()
            .ok()
            .and_then(|modified| modified.elapsed().ok())
            .is_some_and(|age| age >= STALE_TEMPORARY_AGE);
        if !meta.is_file() || !stale {
            continue;
        }
        let path = entry.path();
        match std::fs::remove_file(&path) {
            Ok(()) => notes.push(format!(
                "removed {} ({} bytes), left over from an interrupted save",
                path.display(),
                meta.len()
            )),
            Err(error) => notes.push(format!(
                "cannot remove {}, left over from an interrupted save: {error}",
                path.display()
            )),
        }
    }
    notes
}

struct Parsed {
    known: HashMap<ImageReference, Known>,
    warnings: Vec<String>,
}

fn parse(bytes: &[u8]) -> Result<Parsed, String> {
    let value: serde_json::Value = serde_json::from_slice(bytes).map_err(|e| format!("not JSON: {e}"))?;
    match value.get("version").and_then(serde_json::Value::as_u64) {
        Some(STATE_VERSION) => {}
        Some(other) => return Err(format!("version {other} is not supported (expected {STATE_VERSION})")),
        None => return Err(format!("no numeric `version` (expected {STATE_VERSION})")),
    }
    let document: Document = serde_json::from_value(value).map_err(|e| format!("malformed: {e}"))?;
    let mut known: HashMap<ImageReference, (String, Known)> = HashMap::new();
    let mut warnings = Vec::new();
    for (key, entry) in document.images {
        let reference = key
            .parse::<ImageReference>()
            .map_err(|e| format!("malformed image key: {e}"))?;
        let candidate = Known {
            digest: entry.digest,
            updated: entry.updated,
            watched: entry.watched,
            pending: entry.pending,
        };
        match known.remove(&reference) {
            None => {
                known.insert(reference, (key, candidate));
            }
            Some((other_key, other)) => {
                // The newest entry wins; without times, the key in normal form (what we write).
                let normal = reference.to_string();
                let newer = match (candidate.updated, other.updated) {
                    (Some(a), Some(b)) if a != b => a > b,
                    (Some(_), None) => true,
                    (None, Some(_)) => false,
                    _ => key == normal || other_key != normal,
                };
                let ((kept_key, kept), dropped_key) = if newer {
                    ((key, candidate), other_key)
                } else {
                    ((other_key, other), key)
                };
                warnings.push(format!(
                    "state keys {kept_key:?} and {dropped_key:?} both name {normal}; kept the newer entry ({}) from {kept_key:?}",
                    kept.digest
                ));
                known.insert(reference, (kept_key, kept));
            }
        }
    }
    Ok(Parsed {
        known: known
            .into_iter()
            .map(|(reference, (_, entry))| (reference, entry))
            .collect(),
        warnings,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use rstest::rstest;
    use std::time::Duration;

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

    proptest::proptest! {
        /// A state file is outside input (operators edit it, disks truncate it): any bytes, and
        /// any JSON of the right outline, parse or are refused, never panic.
        #[test]
        fn any_state_bytes_parse_or_are_refused(bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..512)) {
            let _ = parse(&bytes);
        }

        #[test]
        fn any_state_document_parses_or_is_refused(
            key in "\\PC{0,60}",
            digest in "\\PC{0,80}",
            version in 0u64..4,
            updated in proptest::option::of(proptest::prelude::any::<u64>()),
        ) {
            let document = serde_json::json!({
                "version": version,
                "images": { key: { "digest": digest, "updated": updated, "pending": { "digest": "x", "at": 1 } } },
            });
            let _ = parse(document.to_string().as_bytes());
        }
    }

    #[test]
    fn first_seen_times_survive_a_save_and_older_files_load_without_them() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = StateFile::new(dir.path().join("state.json"));
        let image: ImageReference = "ghcr.io/a/b:latest".parse().expect("valid");
        let at = SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000);
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
    fn a_directory_is_an_error_that_moves_nothing() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("state.json");
        std::fs::create_dir(&path).expect("mkdir");
        let error = StateFile::new(&path).load().expect_err("not a file");
        assert!(error.to_string().contains("is a directory"), "{error}");
        assert!(path.is_dir(), "left where it was");
        assert_eq!(std::fs::read_dir(dir.path()).expect("lists").count(), 1);
    }

    fn listing(dir: &Path) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(dir)
            .expect("lists")
            .map(|entry| entry.expect("entry").file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    }

    #[test]
    fn a_symlink_is_written_through_and_stays_a_symlink() {
        let dir = tempfile::tempdir().expect("tempdir");
        let volume = dir.path().join("volume");
        std::fs::create_dir(&volume).expect("mkdir");
        let link = dir.path().join("state.json");
        std::os::unix::fs::symlink("volume/state.json", &link).expect("symlink");
        let file = StateFile::new(&link);
        assert!(
            file.load()
                .expect("a dangling link is an empty state")
                .digests
                .is_empty()
        );
        file.save(&sample()).expect("saves through the link");
        file.save(&sample()).expect("and again");
        assert!(std::fs::symlink_metadata(&link).expect("link").file_type().is_symlink());
        assert_eq!(
            listing(&volume),
            vec!["state.json"],
            "temporary files go beside the target"
        );
        assert_eq!(
            StateFile::new(volume.join("state.json")).load().expect("loads").digests,
            sample()
        );
        assert_eq!(file.load().expect("loads").digests, sample());
    }

    #[rstest]
    #[case::character_device("/dev/null", "a character device")]
    #[case::fifo("fifo", "a FIFO")]
    #[case::symlink_to_a_device("link-to-null", "a character device")]
    fn a_path_that_is_not_a_regular_file_is_an_error_that_changes_nothing(#[case] name: &str, #[case] kind: &str) {
        let dir = tempfile::tempdir().expect("tempdir");
        let fifo = dir.path().join("fifo");
        let made = std::process::Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .expect("mkfifo runs");
        assert!(made.success());
        std::os::unix::fs::symlink("/dev/null", dir.path().join("link-to-null")).expect("symlink");
        let before = listing(dir.path());
        let path = dir.path().join(name);
        let file = StateFile::new(&path);
        let error = file.load().expect_err("refused").to_string();
        assert!(
            error.contains(kind) && error.contains("expected a regular file"),
            "{error}"
        );
        let error = file.save(&sample()).expect_err("refused").to_string();
        assert!(error.contains(kind), "{error}");
        assert_eq!(listing(dir.path()), before, "nothing created, moved or removed");
        use std::os::unix::fs::FileTypeExt as _;
        let null = std::fs::metadata("/dev/null").expect("/dev/null");
        assert!(null.file_type().is_char_device(), "the device node is left alone");
    }

    #[test]
    fn a_read_error_is_an_error_not_corruption() {
        // Not a permission error (tests may run as root), but the same path: any failure to read
        // other than "not there" stops the start instead of setting the file aside.
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(dir.path().join("file"), "x").expect("writes");
        let error = StateFile::new(dir.path().join("file/state.json"))
            .load()
            .expect_err("refused");
        assert!(matches!(error, StateError::Read { .. }), "{error}");
        assert!(error.to_string().contains("cannot read state file"), "{error}");
        assert_eq!(listing(dir.path()), vec!["file"]);
    }

    #[test]
    fn a_file_over_the_cap_is_an_error_and_stays() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("state.json");
        let big = std::fs::File::create(&path).expect("creates");
        big.set_len(MAX_STATE_BYTES + 1).expect("sparse");
        let error = StateFile::new(&path).load().expect_err("refused");
        assert!(matches!(error, StateError::TooLarge { .. }), "{error}");
        assert!(error.to_string().contains("over the cap"), "{error}");
        assert_eq!(std::fs::metadata(&path).expect("stays").len(), MAX_STATE_BYTES + 1);
    }

    #[test]
    fn temporaries_of_a_killed_save_are_removed_at_start_and_nothing_else() {
        let dir = tempfile::tempdir().expect("tempdir");
        let old = SystemTime::now() - Duration::from_secs(600);
        for name in [".imagewatch-state-abc123", ".imagewatch-state-def456"] {
            let leftover = std::fs::File::create(dir.path().join(name)).expect("creates");
            leftover.set_len(1024).expect("len");
            leftover.set_modified(old).expect("ages");
        }
        // A save in progress elsewhere, and a file that is not ours.
        std::fs::write(dir.path().join(".imagewatch-state-fresh1"), "").expect("writes");
        let other = std::fs::File::create(dir.path().join("notes.txt")).expect("creates");
        other.set_modified(old).expect("ages");
        let loaded = StateFile::new(dir.path().join("state.json")).load().expect("loads");
        assert_eq!(loaded.warnings.len(), 2, "{:?}", loaded.warnings);
        assert!(loaded.warnings[0].contains("interrupted save"), "{:?}", loaded.warnings);
        assert_eq!(listing(dir.path()), vec![".imagewatch-state-fresh1", "notes.txt"]);
    }

    fn document(entries: &[(&str, char, Option<u64>, Option<u64>)]) -> String {
        let images: serde_json::Map<String, serde_json::Value> = entries
            .iter()
            .map(|(key, c, updated, watched)| {
                let mut entry = serde_json::json!({ "digest": digest(*c).to_string() });
                if let Some(updated) = updated {
                    entry["updated"] = (*updated).into();
                }
                if let Some(watched) = watched {
                    entry["watched"] = (*watched).into();
                }
                ((*key).to_owned(), entry)
            })
            .collect();
        serde_json::json!({ "version": 1, "images": images }).to_string()
    }

    #[rstest]
    #[case::unwatched_past_the_grace(UNWATCHED_GRACE.as_secs() + 3600, false)]
    #[case::unwatched_within_the_grace(UNWATCHED_GRACE.as_secs() - 3600, true)]
    fn entries_no_longer_watched_are_pruned_after_the_grace(#[case] unwatched_for: u64, #[case] kept: bool) {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("state.json");
        let since = unix_now() - unwatched_for;
        let contents = document(&[
            ("ghcr.io/a/b:latest", 'a', Some(since), Some(since)),
            ("ghcr.io/gone/c:latest", 'b', Some(since), Some(since)),
        ]);
        std::fs::write(&path, contents).expect("writes");
        let watched: ImageReference = "ghcr.io/a/b:latest".parse().expect("valid");
        let file = StateFile::new(&path).watching([watched.clone()]);
        let loaded = file.load().expect("loads");
        assert_eq!(loaded.digests.len(), 2, "loading keeps everything");
        file.save(&loaded.digests).expect("saves");
        let saved = StateFile::new(&path).load().expect("loads").digests;
        let gone: ImageReference = "ghcr.io/gone/c:latest".parse().expect("valid");
        assert_eq!(saved.contains_key(&gone), kept);
        assert!(saved.contains_key(&watched), "a watched image is never pruned");
    }

    #[test]
    fn an_image_that_stops_being_watched_starts_its_grace_at_the_next_save() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("state.json");
        StateFile::new(&path).save(&sample()).expect("saves");
        let file = StateFile::new(&path).watching(Vec::new());
        let loaded = file.load().expect("loads");
        file.save(&loaded.digests).expect("saves");
        assert_eq!(StateFile::new(&path).load().expect("loads").digests, sample());
    }

    #[rstest]
    #[case::newer_time_wins_over_the_normal_key(
        &[("alpine", 'a', Some(200), None), ("docker.io/library/alpine:latest", 'b', Some(100), None)], 'a')]
    #[case::without_times_the_normal_key_wins(
        &[("alpine", 'a', None, None), ("docker.io/library/alpine:latest", 'b', None, None), ("index.docker.io/library/alpine", 'c', None, None)], 'b')]
    #[case::a_timed_entry_wins_over_an_untimed_one(
        &[("docker.io/library/alpine:latest", 'b', None, None), ("index.docker.io/library/alpine", 'c', Some(1), None)], 'c')]
    fn keys_naming_one_image_keep_the_newest_with_a_warning(
        #[case] entries: &[(&str, char, Option<u64>, Option<u64>)],
        #[case] kept: char,
    ) {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("state.json");
        std::fs::write(&path, document(entries)).expect("writes");
        let loaded = StateFile::new(&path).load().expect("loads");
        let alpine: ImageReference = "docker.io/library/alpine:latest".parse().expect("valid");
        assert_eq!(loaded.digests.len(), 1);
        assert_eq!(loaded.digests[&alpine], digest(kept));
        assert_eq!(loaded.warnings.len(), entries.len() - 1, "{:?}", loaded.warnings);
        assert!(
            loaded
                .warnings
                .iter()
                .all(|w| w.contains("docker.io/library/alpine:latest"))
        );
    }
}
