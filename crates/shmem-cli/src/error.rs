//! The command's failure type and its exit codes.

use std::fmt;
use std::process::ExitCode;

/// Exit code 1: an error.
pub const EXIT_ERROR: u8 = 1;
/// Exit code 2: bad usage (clap uses it too).
pub const EXIT_USAGE: u8 = 2;
/// Exit code 3: no such segment.
pub const EXIT_NOT_FOUND: u8 = 3;
/// Exit code 4: a wait timed out.
pub const EXIT_TIMEOUT: u8 = 4;
/// Exit code 5: what was asked cannot be done on this platform (Windows: removing a
/// transient segment).
#[cfg_attr(not(windows), allow(dead_code))]
pub const EXIT_UNSUPPORTED: u8 = 5;

/// Why a command failed: a one-line message for stderr and the exit code.
#[derive(Debug)]
pub struct Failure {
    code: u8,
    message: String,
    quiet: bool,
}

impl Failure {
    /// A failure with `code` and `message`.
    pub fn new(code: u8, message: impl Into<String>) -> Failure {
        Failure {
            code,
            message: message.into(),
            quiet: false,
        }
    }

    /// A plain error (exit code 1).
    pub fn error(message: impl Into<String>) -> Failure {
        Failure::new(EXIT_ERROR, message)
    }

    /// The command was interrupted by a signal before it finished.
    pub fn interrupted(what: &str) -> Failure {
        Failure::error(format!("{what}: interrupted"))
    }

    /// Whether this is a timeout (exit code 4).
    pub fn is_timeout(&self) -> bool {
        self.code == EXIT_TIMEOUT
    }

    /// Whether to exit without a message (the reader of our output went away).
    pub fn is_quiet(&self) -> bool {
        self.quiet
    }

    /// The process exit code.
    pub fn exit_code(&self) -> ExitCode {
        ExitCode::from(self.code)
    }
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl From<shmem::Error> for Failure {
    fn from(e: shmem::Error) -> Failure {
        let code = match e {
            shmem::Error::NotFound { .. } => EXIT_NOT_FOUND,
            shmem::Error::Timeout { .. } => EXIT_TIMEOUT,
            shmem::Error::InvalidName { .. } | shmem::Error::InvalidSize { .. } => EXIT_USAGE,
            _ => EXIT_ERROR,
        };
        Failure::new(code, e.to_string())
    }
}

/// An error writing our output. A closed pipe (`shmem ls | head -1`) is not worth a message.
impl From<std::io::Error> for Failure {
    fn from(e: std::io::Error) -> Failure {
        let quiet = e.kind() == std::io::ErrorKind::BrokenPipe;
        Failure {
            code: EXIT_ERROR,
            message: format!("writing the output: {e}"),
            quiet,
        }
    }
}

/// The result of a command.
pub type Result<T = (), E = Failure> = std::result::Result<T, E>;
