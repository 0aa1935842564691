//! `shmem.Segment`: a named block of raw shared bytes, and the mapping its buffer views keep.
//!
//! `Segment.buf` is a writable memoryview straight onto the shared pages. The limited C API of
//! Python 3.8 (this package's abi3 floor) has no buffer protocol for extension types, so the
//! view is made in Python (`shmem/_buffer.py`) from the address of the data with `ctypes`; the
//! ctypes array under each view holds a [`Mapping`], which holds the Rust segment. The mapping
//! therefore stays in place while any view of it (a memoryview, a slice of one, a numpy array
//! over it) is alive, even after `close()`: closing with live views never leaves one dangling.
//! The segment detaches when both the handle is closed and the last view is gone.

use std::path::PathBuf;
use std::sync::Arc;

use pyo3::exceptions::PyTypeError;
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyType};

use crate::handle::{OnClose, Slot};
use crate::open::{self, Open};
use crate::{args, errors};

impl OnClose for shmem::Segment {}

/// A named block of `size` bytes of shared memory, zero-filled by the process that creates it
/// (like the memory of a Windows named file mapping). `buf` is a writable memoryview of it,
/// shared with every process that opens the name; a transient segment (the default) is freed
/// when the last of them closes it, exits or crashes.
///
/// The bytes are not synchronised: use `Value` for a consistent value, or your own protocol.
#[pyclass(frozen, module = "shmem", name = "Segment")]
#[derive(Debug)]
pub(crate) struct Segment {
    slot: Arc<Slot<shmem::Segment>>,
}

/// What a buffer view holds to keep the mapping in place.
#[pyclass(frozen, module = "shmem", name = "_Mapping")]
#[derive(Debug)]
pub(crate) struct Mapping {
    segment: Arc<shmem::Segment>,
}

#[pymethods]
impl Mapping {
    /// The address of the first data byte.
    #[getter]
    fn address(&self) -> usize {
        self.segment.as_ptr() as usize
    }

    /// The number of data bytes.
    #[getter]
    fn size(&self) -> usize {
        self.segment.data_len()
    }
}

impl Segment {
    /// Opens the live one named `name` in `dir`, whatever its size (for unpickling).
    pub(crate) fn reopen(py: Python<'_>, name: &str, dir: PathBuf) -> PyResult<Segment> {
        let zero = 0u8.into_pyobject(py)?;
        Segment::attach(
            py,
            name,
            zero.as_any(),
            false,
            0o600,
            Some(dir),
            Open::Existing,
        )
    }

    #[allow(clippy::too_many_arguments)]
    fn attach(
        py: Python<'_>,
        name: &str,
        size: &Bound<'_, PyAny>,
        persistent: bool,
        mode: i64,
        dir: Option<PathBuf>,
        how: Open,
    ) -> PyResult<Segment> {
        let size = args::size("size", name, size)?;
        let builder = shmem::Segment::builder(name)
            .dir(args::dir(dir))
            .size(size)
            .lifetime(open::lifetime(persistent))
            .mode(args::mode(name, mode)?);
        let segment = open::attach(py, builder, how)?;
        Ok(Segment {
            slot: Slot::new("segment", name, segment),
        })
    }
}

#[pymethods]
impl Segment {
    /// Opens segment `name`, or creates it zero-filled with `size` bytes if no live process has
    /// it. `created` tells which happened. An existing segment must have at least `size` bytes.
    #[new]
    #[pyo3(signature = (name, size, *, persistent = false, mode = 0o600, dir = None))]
    fn new(
        py: Python<'_>,
        name: &str,
        size: &Bound<'_, PyAny>,
        persistent: bool,
        mode: i64,
        dir: Option<PathBuf>,
    ) -> PyResult<Segment> {
        Segment::attach(py, name, size, persistent, mode, dir, Open::OrCreate)
    }

    /// Opens the live segment `name`; `FileNotFoundError` if there is none. A `size` above 0 is
    /// the least it must have.
    #[classmethod]
    #[pyo3(signature = (name, size = None, *, dir = None))]
    fn open(
        _cls: &Bound<'_, PyType>,
        py: Python<'_>,
        name: &str,
        size: Option<&Bound<'_, PyAny>>,
        dir: Option<PathBuf>,
    ) -> PyResult<Segment> {
        let zero = 0u8.into_pyobject(py)?;
        let size = size.unwrap_or(zero.as_any());
        Segment::attach(py, name, size, false, 0o600, dir, Open::Existing)
    }

    /// Creates segment `name`; `FileExistsError` if a live one has that name.
    #[classmethod]
    #[pyo3(signature = (name, size, *, persistent = false, mode = 0o600, dir = None))]
    fn create(
        _cls: &Bound<'_, PyType>,
        py: Python<'_>,
        name: &str,
        size: &Bound<'_, PyAny>,
        persistent: bool,
        mode: i64,
        dir: Option<PathBuf>,
    ) -> PyResult<Segment> {
        Segment::attach(py, name, size, persistent, mode, dir, Open::Create)
    }

    /// The segment's name.
    #[getter]
    fn name(&self) -> &str {
        self.slot.name()
    }

    /// Whether this handle created (and zero-filled) the segment.
    #[getter]
    fn created(&self) -> PyResult<bool> {
        Ok(self.slot.get()?.created())
    }

    /// The number of data bytes.
    #[getter]
    fn size(&self) -> PyResult<usize> {
        Ok(self.slot.get()?.data_len())
    }

    /// Whether it stays when its last user goes (until `shmem.unlink`).
    #[getter]
    fn persistent(&self) -> PyResult<bool> {
        Ok(self.slot.get()?.lifetime() == shmem::Lifetime::Persistent)
    }

    /// Whether `close()` was called.
    #[getter]
    fn closed(&self) -> bool {
        self.slot.peek().is_none()
    }

    /// A writable memoryview (format `B`) of all `size` bytes, shared with every process that
    /// has the segment open: `numpy.frombuffer(seg.buf, dtype=...)` makes a zero-copy array.
    /// The mapping stays while any view of it lives, even after `close()`.
    #[getter]
    fn buf<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        let mapping = Mapping {
            segment: self.slot.get()?,
        };
        py.import("shmem._buffer")?
            .getattr("view")?
            .call1((Bound::new(py, mapping)?,))
    }

    /// Copies `length` bytes from `offset` (default: to the end) into a new bytes object.
    #[pyo3(signature = (offset = 0, length = None))]
    fn read<'py>(
        &self,
        py: Python<'py>,
        offset: i64,
        length: Option<i64>,
    ) -> PyResult<Bound<'py, PyBytes>> {
        let segment = self.slot.get()?;
        let offset = args::offset("offset", self.slot.name(), offset)?;
        let length = match length {
            Some(n) => args::offset("length", self.slot.name(), n)?,
            None => segment.data_len().saturating_sub(offset),
        };
        let mut out = vec![0u8; length];
        segment.read(offset, &mut out).map_err(errors::to_py)?;
        Ok(PyBytes::new(py, &out))
    }

    /// Copies `data` (bytes or any buffer) into the segment at `offset`.
    #[pyo3(signature = (data, offset = 0))]
    fn write(&self, py: Python<'_>, data: &Bound<'_, PyAny>, offset: i64) -> PyResult<()> {
        let segment = self.slot.get()?;
        let offset = args::offset("offset", self.slot.name(), offset)?;
        let owned;
        let bytes = match data.cast::<PyBytes>() {
            Ok(b) => b.as_bytes(),
            Err(_) => {
                owned = py
                    .import("builtins")?
                    .getattr("memoryview")?
                    .call1((data,))
                    .map_err(|_| {
                        PyTypeError::new_err(format!(
                            "segment '{}' writes bytes or a buffer",
                            self.slot.name()
                        ))
                    })?
                    .call_method0("tobytes")?;
                owned.cast::<PyBytes>()?.as_bytes()
            }
        };
        segment.write(offset, bytes).map_err(errors::to_py)
    }

    /// Detaches this handle (the mapping stays while views of `buf` live); the last process
    /// to detach from a transient segment frees it. Idempotent.
    fn close(&self) {
        crate::handle::Close::close(&*self.slot);
    }

    fn __enter__(slf: Bound<'_, Self>) -> Bound<'_, Self> {
        slf
    }

    #[pyo3(signature = (*_exc))]
    fn __exit__(&self, _exc: &Bound<'_, pyo3::types::PyTuple>) -> bool {
        self.close();
        false
    }

    /// Pickles as its name (and directory): unpickling opens the live segment again, as
    /// `Segment.open` does, so a `multiprocessing` child can be handed one. `FileNotFoundError`
    /// there if nobody holds it any more.
    fn __reduce__<'py>(&self, py: Python<'py>) -> PyResult<(Bound<'py, PyAny>, (String, PathBuf))> {
        let dir = self.slot.get()?.dir().to_owned();
        let reopen = py.import("shmem._shmem")?.getattr("_reopen_segment")?;
        Ok((reopen, (self.slot.name().to_owned(), dir)))
    }

    fn __repr__(&self) -> String {
        match self.slot.peek() {
            Some(s) => format!(
                "<shmem.Segment '{}' size={}>",
                self.slot.name(),
                s.data_len()
            ),
            None => format!("<shmem.Segment '{}' closed>", self.slot.name()),
        }
    }
}
