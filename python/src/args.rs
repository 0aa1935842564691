//! Checks of the arguments Python passes: sizes, modes and timeouts.

use std::path::PathBuf;
use std::time::Duration;

use pyo3::exceptions::{PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::PyInt;

/// A size or capacity in bytes: an `int` from 0 up. `ValueError` for a negative or huge one
/// (not `OverflowError`, which is not a `ValueError`).
pub(crate) fn size(what: &str, name: &str, obj: &Bound<'_, PyAny>) -> PyResult<usize> {
    if !obj.is_instance_of::<PyInt>() {
        return Err(PyTypeError::new_err(format!(
            "{what} for segment '{name}' must be an int, not {}",
            obj.get_type().name()?
        )));
    }
    let n: i128 = obj.extract().map_err(|_| {
        PyValueError::new_err(format!(
            "invalid {what} for segment '{name}': {obj} is too large"
        ))
    })?;
    usize::try_from(n).map_err(|_| {
        PyValueError::new_err(format!(
            "invalid {what} for segment '{name}': {n} is {}",
            if n < 0 { "negative" } else { "too large" }
        ))
    })
}

/// An offset or length within a segment: from 0 up (the range is checked by the library).
pub(crate) fn offset(what: &str, name: &str, n: i64) -> PyResult<usize> {
    usize::try_from(n).map_err(|_| {
        PyValueError::new_err(format!(
            "invalid {what} for segment '{name}': {n} is negative"
        ))
    })
}

/// A file mode: permission bits only (`0o600`, `0o660`, ...).
pub(crate) fn mode(name: &str, mode: i64) -> PyResult<u32> {
    match u32::try_from(mode) {
        Ok(m) if m <= 0o777 => Ok(m),
        _ => Err(PyValueError::new_err(format!(
            "invalid mode for segment '{name}': {mode:#o} is not a set of permission bits \
             (0o000 to 0o777)"
        ))),
    }
}

/// A timeout in seconds: `None` waits forever, and so does one too large for a `Duration`.
pub(crate) fn timeout(name: &str, seconds: Option<f64>) -> PyResult<Option<Duration>> {
    let Some(s) = seconds else { return Ok(None) };
    if s.is_nan() || s < 0.0 {
        return Err(PyValueError::new_err(format!(
            "invalid timeout for segment '{name}': {s} s (give a number of seconds from 0, or \
             None to wait forever)"
        )));
    }
    Ok(Duration::try_from_secs_f64(s).ok())
}

/// The directory of the segment files: `/dev/shm` unless given.
pub(crate) fn dir(dir: Option<PathBuf>) -> PathBuf {
    dir.unwrap_or_else(|| PathBuf::from(shmem::DEFAULT_DIR))
}
