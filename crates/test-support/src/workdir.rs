//! The scratch directory every component writes its config, data and logs into.
//!
//! Owns the keep-on-panic rule: a failing test leaves its logs behind (and says where),
//! a passing test leaves nothing. It must not know about any component.

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use tempfile::TempDir;

/// Set to any value to keep every work dir, even of passing tests (debugging aid).
pub const KEEP_ENV: &str = "TEST_SUPPORT_KEEP";

/// A temporary directory shared by the components of one test.
///
/// Why a handle and not a `TempDir`: every component keeps a clone, so the directory (and the
/// logs in it) lives exactly as long as the last component using it. When the last clone is
/// dropped while the thread is panicking (a failed assertion, a component that did not start),
/// the directory is KEPT and its path printed to stderr, so the logs can be read after the
/// fact; otherwise it is deleted.
#[derive(Clone)]
pub struct WorkDir {
    inner: Arc<Inner>,
}

struct Inner {
    path: PathBuf,
    dir: Mutex<Option<TempDir>>,
}

impl std::fmt::Debug for WorkDir {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("WorkDir").field(&self.inner.path).finish()
    }
}

impl WorkDir {
    /// Creates a fresh directory under the system temp dir, named after `label` (say the test
    /// name) so a kept directory is easy to recognise.
    ///
    /// # Panics
    /// When the temp dir cannot be created (a broken machine, not a test failure).
    pub fn new(label: &str) -> WorkDir {
        let clean: String = label
            .chars()
            .map(|c| if c.is_ascii_alphanumeric() || c == '-' { c } else { '_' })
            .take(40)
            .collect();
        let dir = TempDir::with_prefix(format!("imagewatch-{clean}-"))
            .unwrap_or_else(|e| panic!("test-support: cannot create a temp work dir: {e}"));
        WorkDir {
            inner: Arc::new(Inner {
                path: dir.path().to_path_buf(),
                dir: Mutex::new(Some(dir)),
            }),
        }
    }

    /// The directory itself.
    pub fn path(&self) -> &Path {
        &self.inner.path
    }

    /// `path()/name`, without creating anything.
    pub fn join(&self, name: &str) -> PathBuf {
        self.inner.path.join(name)
    }

    /// Creates and returns a NEW sub-directory `name`, `name-2`, `name-3`, ... so that two
    /// components of the same kind sharing a work dir never share files.
    ///
    /// # Panics
    /// When the directory cannot be created.
    pub fn fresh_dir(&self, name: &str) -> PathBuf {
        for n in 1.. {
            let candidate = if n == 1 {
                self.join(name)
            } else {
                self.join(&format!("{name}-{n}"))
            };
            match fs::create_dir(&candidate) {
                Ok(()) => return candidate,
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
                Err(e) => panic!("test-support: cannot create {}: {e}", candidate.display()),
            }
        }
        unreachable!("an unbounded loop either returns or panics")
    }

    /// Writes `contents` to `dir/name` (dir relative to the work dir or absolute) and returns
    /// the path.
    ///
    /// # Panics
    /// On an I/O error, naming the file.
    pub fn write(&self, path: &Path, contents: impl AsRef<[u8]>) -> PathBuf {
        let full = self.inner.path.join(path);
        if let Some(parent) = full.parent() {
            fs::create_dir_all(parent)
                .unwrap_or_else(|e| panic!("test-support: cannot create {}: {e}", parent.display()));
        }
        fs::write(&full, contents).unwrap_or_else(|e| panic!("test-support: cannot write {}: {e}", full.display()));
        full
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        let taken = match self.dir.get_mut() {
            Ok(slot) => slot.take(),
            Err(poisoned) => poisoned.into_inner().take(),
        };
        let Some(dir) = taken else { return };
        if std::thread::panicking() {
            let path = dir.keep();
            eprintln!(
                "test-support: the thread panicked; keeping work dir {} (component logs are inside)",
                path.display()
            );
        } else if std::env::var_os(KEEP_ENV).is_some() {
            let path = dir.keep();
            eprintln!("test-support: {KEEP_ENV} is set; keeping work dir {}", path.display());
        }
        // Otherwise `dir` drops here and deletes the tree.
    }
}
