//! The native module `shmem._shmem` of the Python package `shmem` (see `shmem/__init__.py`).
//!
//! A thin layer over the Rust library's public API: `Value`, `Map`, `Segment`, `unlink` and the
//! exceptions. It holds no `unsafe` code: the library keeps the shared memory behind its own
//! checked operations, and the one raw view Python gets (`Segment.buf`) is made by ctypes in
//! `shmem/_buffer.py`, whose lifetime argument is in `segment.rs`.

mod args;
mod errors;
mod handle;
mod map;
mod open;
mod segment;
mod value;

use std::path::PathBuf;

use pyo3::prelude::*;

/// Removes segment `name` (a value or a raw segment). `shmem.Error` if a process still has it
/// open, unless `force`: then the name goes at once (those processes keep their memory until
/// they close it) and the next opener creates a new segment. `FileNotFoundError` if there is
/// no such segment.
#[pyfunction]
#[pyo3(signature = (name, *, force = false, dir = None))]
fn unlink(py: Python<'_>, name: &str, force: bool, dir: Option<PathBuf>) -> PyResult<()> {
    let dir = args::dir(dir);
    py.detach(|| shmem::admin::remove(&dir, name, force))
        .map_err(errors::to_py)
}

/// Opens the live value `name` in `dir` (how a pickled `Value` is unpickled), read-only if the
/// pickled handle was (pickles made before read-only handles existed have no such flag).
#[pyfunction]
#[pyo3(signature = (name, dir, readonly = false))]
fn _reopen_value(
    py: Python<'_>,
    name: &str,
    dir: PathBuf,
    readonly: bool,
) -> PyResult<value::Value> {
    value::Value::reopen(py, name, dir, readonly)
}

/// Opens the live map `name` in `dir` (how a pickled `Map` is unpickled), read-only if the
/// pickled handle was.
#[pyfunction]
#[pyo3(signature = (name, dir, readonly = false))]
fn _reopen_map(py: Python<'_>, name: &str, dir: PathBuf, readonly: bool) -> PyResult<map::Map> {
    map::Map::reopen(py, name, dir, readonly)
}

/// Opens the live segment `name` in `dir` (how a pickled `Segment` is unpickled).
#[pyfunction]
fn _reopen_segment(py: Python<'_>, name: &str, dir: PathBuf) -> PyResult<segment::Segment> {
    segment::Segment::reopen(py, name, dir)
}

/// Closes every `Value` and `Segment` still open (registered with `atexit` by the package).
#[pyfunction]
fn _close_all() {
    handle::close_all();
}

#[pymodule]
fn _shmem(m: &Bound<'_, PyModule>) -> PyResult<()> {
    let py = m.py();
    m.add("Error", py.get_type::<errors::Error>())?;
    m.add("CorruptError", py.get_type::<errors::CorruptError>())?;
    m.add_class::<value::Value>()?;
    m.add_class::<map::Map>()?;
    m.add_class::<map::MapWatch>()?;
    m.add_class::<value::Watch>()?;
    m.add_class::<value::CancelToken>()?;
    m.add_class::<segment::Segment>()?;
    m.add_class::<segment::Mapping>()?;
    m.add_function(wrap_pyfunction!(unlink, m)?)?;
    m.add_function(wrap_pyfunction!(_close_all, m)?)?;
    m.add_function(wrap_pyfunction!(_reopen_value, m)?)?;
    m.add_function(wrap_pyfunction!(_reopen_map, m)?)?;
    m.add_function(wrap_pyfunction!(_reopen_segment, m)?)?;
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    Ok(())
}
