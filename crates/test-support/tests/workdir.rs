//! The work dir is deleted after a passing test and kept when the thread panics.

use test_support::*;

#[test]
fn deleted_when_not_panicking() {
    let wd = WorkDir::new("deleted");
    let path = wd.path().to_path_buf();
    wd.write(std::path::Path::new("log.txt"), "x");
    assert!(path.join("log.txt").is_file());
    drop(wd);
    assert!(!path.exists());
}

#[test]
fn kept_when_the_thread_panics() {
    let (tx, rx) = std::sync::mpsc::channel();
    let joined = std::thread::spawn(move || {
        let wd = WorkDir::new("kept");
        tx.send(wd.path().to_path_buf()).expect("send");
        panic!("simulated test failure");
    })
    .join();
    assert!(joined.is_err());
    let path = rx.recv().expect("path");
    assert!(path.is_dir(), "{} must be kept", path.display());
    std::fs::remove_dir_all(&path).expect("cleanup");
}
