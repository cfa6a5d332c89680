//! Ctrl-C during `cargo xtask demo` as an ordinary failure: the first SIGINT or SIGTERM only
//! raises a flag that the demo's waits check, so they return an error and the demo removes its
//! containers and images as on any failure; a second signal exits at once.

use std::sync::atomic::{AtomicBool, Ordering};

static INTERRUPTED: AtomicBool = AtomicBool::new(false);

/// Handles SIGINT and SIGTERM from now on (on a thread of its own).
pub fn install() {
    std::thread::spawn(|| {
        let Ok(runtime) = tokio::runtime::Builder::new_current_thread().enable_all().build() else {
            return;
        };
        runtime.block_on(async {
            use tokio::signal::unix::{SignalKind, signal};
            let (Ok(mut interrupt), Ok(mut terminate)) =
                (signal(SignalKind::interrupt()), signal(SignalKind::terminate()))
            else {
                return;
            };
            loop {
                tokio::select! {
                    _ = interrupt.recv() => {}
                    _ = terminate.recv() => {}
                }
                if INTERRUPTED.swap(true, Ordering::SeqCst) {
                    eprintln!("xtask: interrupted twice: exiting without cleaning up");
                    std::process::exit(130);
                }
                eprintln!("xtask: interrupted: cleaning up (interrupt again to quit at once)");
            }
        });
    });
}

/// An error once interrupted.
pub fn check() -> Result<(), String> {
    if INTERRUPTED.load(Ordering::SeqCst) {
        Err("interrupted".to_owned())
    } else {
        Ok(())
    }
}
