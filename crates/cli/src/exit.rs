//! How a command ends: the exit status and the one-line message on stderr.

use std::process::ExitCode;

/// Why a command did not succeed, mapped to an exit status.
#[derive(Debug)]
pub enum Failure {
    /// Invalid input or configuration: exit 2.
    Config(String),
    /// A registry check, an auth exchange or a refresh failed: exit 1.
    Check(String),
    /// Something that is neither: exit 1.
    Internal(String),
}

impl Failure {
    pub fn config(error: impl std::fmt::Display) -> Failure {
        Failure::Config(error.to_string())
    }

    pub fn check(error: impl std::fmt::Display) -> Failure {
        Failure::Check(error.to_string())
    }
}

/// Prints the failure as one line and returns its exit status.
pub fn fail(failure: Failure) -> ExitCode {
    let (code, message) = match failure {
        Failure::Config(message) => (2, message),
        Failure::Check(message) | Failure::Internal(message) => (1, message),
    };
    eprintln!("imagewatch: {}", registry_core::outside::escaped(&message));
    ExitCode::from(code)
}
