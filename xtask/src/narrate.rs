//! The demo's voice: every line it tells the operator, marked as the demo's. Shared by the demo
//! and the Docker CLI wrapper it drives, so neither imports the other for it.

/// Prints one line of the demo's story.
pub fn say(line: &str) {
    println!("demo | {line}");
}
