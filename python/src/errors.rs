//! Rust errors as Python exceptions.
//!
//! Python's own exception is used wherever one fits, so that callers catch what they already
//! know: `FileNotFoundError`, `FileExistsError`, `PermissionError` and `TimeoutError` (with
//! their errno, and the file name where there is one), `ValueError` for bad arguments and for
//! any use of a closed handle. Everything else is `shmem.Error`, with `shmem.CorruptError`
//! under it for a segment whose shared state failed validation. The message is always the Rust
//! library's, which names the segment and the cause.

use std::path::Path;

use pyo3::create_exception;
use pyo3::exceptions::{
    PyException, PyFileExistsError, PyFileNotFoundError, PyPermissionError, PyTimeoutError,
    PyValueError,
};
use pyo3::PyErr;

create_exception!(
    shmem,
    Error,
    PyException,
    "A shmem failure that no built-in exception describes (no space, a foreign or \
     incompatible file, a busy segment, a system call that failed)."
);
create_exception!(
    shmem,
    CorruptError,
    Error,
    "A segment's shared state failed validation: another process wrote garbage into it, or \
     its file was cut short."
);

/// The Python exception for `e`.
pub(crate) fn to_py(e: shmem::Error) -> PyErr {
    use shmem::Error as E;
    let msg = e.to_string();
    match &e {
        E::InvalidName { .. }
        | E::InvalidSize { .. }
        | E::InvalidKey { .. }
        | E::TooLarge { .. }
        | E::BufferTooSmall { .. } => PyValueError::new_err(msg),
        E::NotFound { name, dir } => {
            PyFileNotFoundError::new_err((libc::ENOENT, msg, file_of(dir, name)))
        }
        E::Exists { name, dir } => {
            PyFileExistsError::new_err((libc::EEXIST, msg, file_of(dir, name)))
        }
        E::PermissionDenied { .. } => PyPermissionError::new_err((libc::EACCES, msg)),
        E::Timeout { .. } => PyTimeoutError::new_err((libc::ETIMEDOUT, msg)),
        E::Corrupt { .. } => CorruptError::new_err(msg),
        _ => Error::new_err(msg),
    }
}

/// `ValueError` for a handle used after `close()`.
pub(crate) fn closed(kind: &str, name: &str) -> PyErr {
    PyValueError::new_err(format!("{kind} '{name}' is closed"))
}

fn file_of(dir: &Path, name: &str) -> String {
    dir.join(format!("{}{name}", shmem::FILE_PREFIX))
        .display()
        .to_string()
}
