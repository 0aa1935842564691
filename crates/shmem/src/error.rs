//! The one error type of the crate.
//!
//! Every variant names the segment (or the input) and the cause, so that a message printed
//! as-is tells a user what to fix. Callers that need to act on a cause match on the variant;
//! [`Error::raw_os_error`] is the escape hatch for an errno we did not classify.

use std::io;
use std::path::PathBuf;

/// What went wrong, and with which segment.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The name is empty, too long, or has a character we do not allow.
    #[error("invalid segment name {name:?}: {reason}")]
    InvalidName {
        /// The name as given.
        name: String,
        /// Why it was refused.
        reason: &'static str,
    },
    /// A size or capacity that is zero, too large, or does not match the segment.
    #[error("invalid size for segment '{name}': {reason}")]
    InvalidSize {
        /// The segment.
        name: String,
        /// Why the size was refused.
        reason: String,
    },
    /// No segment has this name (opening an existing one only).
    #[error("segment '{name}' not found in {}", dir.display())]
    NotFound {
        /// The segment.
        name: String,
        /// The directory searched.
        dir: PathBuf,
    },
    /// A segment with this name exists (creating a new one only).
    #[error("segment '{name}' already exists in {}", dir.display())]
    Exists {
        /// The segment.
        name: String,
        /// The directory.
        dir: PathBuf,
    },
    /// The file mode or owner forbids this process to use the segment.
    #[error("permission denied for segment '{name}': {reason}")]
    PermissionDenied {
        /// The segment.
        name: String,
        /// The mode, owner or operation that was refused.
        reason: String,
    },
    /// No room for the segment: memory, the SysV limits, the directory's pages or inodes.
    #[error("no space left for segment '{name}' of {size} bytes (directory {}): {reason}", dir.display())]
    NoSpace {
        /// The segment.
        name: String,
        /// The directory of its name.
        dir: PathBuf,
        /// The bytes that were asked for.
        size: u64,
        /// Which limit was reached.
        reason: String,
    },
    /// The file under our name is not a shmem segment (a foreign object, a symlink, a FIFO).
    #[error("'{name}' is not a shmem segment: {reason}")]
    Foreign {
        /// The name.
        name: String,
        /// What was found instead.
        reason: String,
    },
    /// A shmem segment of another layout version or kind.
    #[error("segment '{name}' is incompatible: {reason}")]
    Incompatible {
        /// The segment.
        name: String,
        /// What differs.
        reason: String,
    },
    /// The segment's header or state is inconsistent (a peer wrote garbage, or a file was cut).
    #[error("segment '{name}' is corrupt: {reason}")]
    Corrupt {
        /// The segment.
        name: String,
        /// The field that failed validation.
        reason: String,
    },
    /// A value larger than the segment's capacity; nothing was stored.
    #[error("value of {len} bytes does not fit segment '{name}' (capacity {capacity} bytes)")]
    TooLarge {
        /// The segment.
        name: String,
        /// The length offered.
        len: usize,
        /// The capacity of the segment.
        capacity: usize,
    },
    /// A map key that is empty or longer than [`crate::MAX_KEY_LEN`] bytes.
    #[error("invalid key of {len} bytes for map '{name}': {reason}")]
    InvalidKey {
        /// The map.
        name: String,
        /// The key's length.
        len: usize,
        /// Why it was refused.
        reason: &'static str,
    },
    /// A map has no room for the operation (keys or heap bytes); nothing was changed.
    #[error("map '{name}' is full: {reason}")]
    MapFull {
        /// The map.
        name: String,
        /// Which space ran out, with the sizes.
        reason: String,
    },
    /// The segment is in use and the operation would disturb its users.
    #[error("segment '{name}' is busy: {reason}")]
    Busy {
        /// The segment.
        name: String,
        /// Who holds it.
        reason: String,
    },
    /// The caller's buffer cannot hold the value; nothing was copied.
    #[error("buffer of {capacity} bytes is too small for the value of {needed} bytes in segment '{name}'")]
    BufferTooSmall {
        /// The segment.
        name: String,
        /// The length of the value.
        needed: usize,
        /// The length of the buffer.
        capacity: usize,
    },
    /// Attaching kept finding a dead or vanishing generation (removed, or its initialiser
    /// dying) and gave up after a bounded number of attempts.
    #[error("could not attach segment '{name}' after {attempts} attempts: {reason}")]
    AttachRetries {
        /// The segment.
        name: String,
        /// How many attempts were made.
        attempts: usize,
        /// What the last attempt found.
        reason: &'static str,
    },
    /// A wait or a lock did not finish before its deadline.
    #[error("timed out after {timeout:?} waiting for {what} on segment '{name}'")]
    Timeout {
        /// The segment.
        name: String,
        /// What was awaited.
        what: &'static str,
        /// The time allowed.
        timeout: std::time::Duration,
    },
    /// The directory itself could not be read (listing segments).
    #[error("cannot read directory {}: {source}", dir.display())]
    Directory {
        /// The directory.
        dir: PathBuf,
        /// The system's error.
        #[source]
        source: io::Error,
    },
    /// This platform cannot do what was asked (a persistent segment on Windows).
    #[error("segment '{name}': {what} is not supported on this platform")]
    Unsupported {
        /// The segment.
        name: String,
        /// What was asked for.
        what: &'static str,
    },
    /// A `Serde` value (feature `serde`) that could not be encoded, or stored bytes that do not
    /// decode as the type asked for (a writer of another type or version, or garbage).
    #[error("segment '{name}': {reason}")]
    Codec {
        /// The segment.
        name: String,
        /// What failed: the type, the bytes and version, the codec's message.
        reason: String,
    },
    /// Any other system error, with the operation that failed.
    #[error("segment '{name}': {op} failed: {source}")]
    Io {
        /// The segment.
        name: String,
        /// The operation (`open`, `mmap`, ...).
        op: &'static str,
        /// The system's error.
        #[source]
        source: io::Error,
    },
}

impl Error {
    /// Segment `name` holds `found` data where `wanted` was asked for.
    pub(crate) fn wrong_kind(name: &str, found: crate::Kind, wanted: crate::Kind) -> Error {
        Error::Incompatible {
            name: name.to_owned(),
            reason: format!("it holds {} data, not {}", found.as_str(), wanted.as_str()),
        }
    }

    /// The errno behind an [`Error::Io`], if any.
    pub fn raw_os_error(&self) -> Option<i32> {
        match self {
            Error::Io { source, .. } | Error::Directory { source, .. } => source.raw_os_error(),
            _ => None,
        }
    }

    /// Classifies an errno from an operation on segment `name` in `dir`.
    #[cfg(target_os = "linux")]
    pub(crate) fn from_errno(
        name: &str,
        dir: &std::path::Path,
        op: &'static str,
        e: rustix::io::Errno,
    ) -> Error {
        use rustix::io::Errno;
        let name = name.to_owned();
        match e {
            Errno::NOENT => Error::NotFound {
                name,
                dir: dir.to_owned(),
            },
            Errno::EXIST => Error::Exists {
                name,
                dir: dir.to_owned(),
            },
            Errno::ACCESS | Errno::PERM => Error::PermissionDenied {
                name,
                reason: format!("{op}: {}", io::Error::from(e)),
            },
            Errno::NOSPC | Errno::NOMEM | Errno::DQUOT => Error::NoSpace {
                name,
                dir: dir.to_owned(),
                size: 0,
                reason: format!("{op}: {}", io::Error::from(e)),
            },
            Errno::LOOP => Error::Foreign {
                name,
                reason: "it is a symbolic link (never followed)".into(),
            },
            _ => Error::Io {
                name,
                op,
                source: e.into(),
            },
        }
    }
}

/// The crate's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;
