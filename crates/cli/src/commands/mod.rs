//! One module per subcommand: each turns its arguments into a result and output.

pub mod auth_header;
pub mod digest;
pub mod registry;
pub mod verify;
pub mod watch;
