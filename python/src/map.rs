//! `shmem.Map`: many keys in one segment, with the mapping protocol and change waits.
//!
//! Waits follow `value.rs`'s protocol: the library's futex wait with the GIL released,
//! cancelled by the handle's `closed` flag (set by `close()`, which then wakes the waiters) and,
//! for `changed()`, the caller's token; on the main thread cut into slices with
//! `check_signals()` between them, so that Ctrl-C interrupts it.
//!
//! Keys are `str` (stored as UTF-8) or `bytes`, 1 to 255 bytes; keys come back as `str` when
//! they are valid UTF-8, else as `bytes`.
//!
//! Read-only handles (`Map.open(name, readonly=True)`) go through the library's
//! `Access::ReadOnly`, which refuses `set` and `delete` with a permission error naming the map
//! before touching the segment (`PermissionError` here, as every write path of this class ends
//! in one of those two), and allows waits only on maps whose writers wake at every publish
//! (created with a read-without-write mode such as 0o644).

use std::borrow::Cow;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use pyo3::exceptions::{PyKeyError, PyTimeoutError, PyTypeError};
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyList, PyString, PyTuple, PyType};

use crate::handle::{OnClose, Slot};
use crate::open::{self, Open};
use crate::value::CancelTarget;
use crate::{args, errors};

/// How long a wait on the main thread sleeps between two checks for signals.
const SIGNAL_SLICE: Duration = Duration::from_millis(100);

/// The Rust handle and its closed flag, shared by the Python object and any wait in progress.
#[derive(Debug)]
pub(crate) struct Shared {
    map: shmem::Map,
    closed: AtomicBool,
}

impl OnClose for Shared {
    fn closing(&self) {
        self.closed.store(true, Ordering::SeqCst);
        self.map.wake_waiters();
    }
}

impl CancelTarget for Slot<Shared> {
    fn wake(&self) {
        if let Some(shared) = self.peek() {
            shared.map.wake_waiters();
        }
    }
}

/// A key argument: `str` (as UTF-8) or `bytes`.
fn key_of<'a>(key: &'a Bound<'_, PyAny>) -> PyResult<Cow<'a, [u8]>> {
    if let Ok(s) = key.cast::<PyString>() {
        return Ok(match s.to_cow()? {
            Cow::Borrowed(s) => Cow::Borrowed(s.as_bytes()),
            Cow::Owned(s) => Cow::Owned(s.into_bytes()),
        });
    }
    if let Ok(b) = key.cast::<PyBytes>() {
        return Ok(Cow::Borrowed(b.as_bytes()));
    }
    Err(PyTypeError::new_err(format!(
        "map keys are str or bytes, not {}",
        key.get_type().name()?
    )))
}

/// A key as Python sees it: `str` when it is UTF-8, else `bytes`.
fn key_out<'py>(py: Python<'py>, key: &[u8]) -> Bound<'py, PyAny> {
    match std::str::from_utf8(key) {
        Ok(s) => PyString::new(py, s).into_any(),
        Err(_) => PyBytes::new(py, key).into_any(),
    }
}

/// A value argument: `bytes`, a `str` (as UTF-8), or anything with the buffer protocol.
fn data_of(data: &Bound<'_, PyAny>) -> PyResult<Vec<u8>> {
    if let Ok(s) = data.cast::<PyString>() {
        return Ok(s.to_cow()?.as_bytes().to_vec());
    }
    if let Ok(b) = data.cast::<PyBytes>() {
        return Ok(b.as_bytes().to_vec());
    }
    let b = data
        .py()
        .import("builtins")?
        .getattr("bytes")?
        .call1((data,))?;
    Ok(b.cast::<PyBytes>()?.as_bytes().to_vec())
}

/// Keys and values shared between processes in one segment. `Map(name, capacity)` opens the map
/// or creates it empty, with `capacity` heap bytes for its records (each takes 16 bytes plus its
/// key rounded up to 8 plus its value, rounded up to 8). It is a mutable mapping: `m[key]`, `m[key] = data`,
/// `del m[key]`, `key in m`, `len(m)`, iteration over the keys of one consistent version.
/// Every set and delete gives the map a new `version`; `wait`, `watch` and `changed` sleep
/// until a key, or any key, changes. Readers never see a torn entry; a writer that crashes
/// never damages the map.
#[pyclass(frozen, module = "shmem", name = "Map")]
#[derive(Debug)]
pub(crate) struct Map {
    slot: Arc<Slot<Shared>>,
}

impl Map {
    /// Opens the live one named `name` in `dir`, whatever its capacity (for unpickling),
    /// read-only if the pickled handle was.
    pub(crate) fn reopen(
        py: Python<'_>,
        name: &str,
        dir: PathBuf,
        readonly: bool,
    ) -> PyResult<Map> {
        let zero = 0u8.into_pyobject(py)?;
        Map::attach(
            py,
            name,
            zero.as_any(),
            false,
            0o600,
            Some(dir),
            Open::existing(readonly),
        )
    }

    fn attach(
        py: Python<'_>,
        name: &str,
        capacity: &Bound<'_, PyAny>,
        persistent: bool,
        mode: i64,
        dir: Option<PathBuf>,
        how: Open,
    ) -> PyResult<Map> {
        let capacity = args::size("capacity", name, capacity)?;
        let builder = shmem::Map::builder(name)
            .dir(args::dir(dir))
            .capacity(capacity)
            .lifetime(open::lifetime(persistent))
            .mode(args::mode(name, mode)?);
        let map = open::attach(py, builder, how)?;
        Ok(Map {
            slot: Slot::new(
                "map",
                name,
                Shared {
                    map,
                    closed: AtomicBool::new(false),
                },
            ),
        })
    }

    /// Sleeps until the version of `key` (or with `None`, of the map) differs from `since`.
    /// `Ok(None)` when `token` was cancelled.
    fn wait_for(
        &self,
        py: Python<'_>,
        key: Option<&[u8]>,
        since: u64,
        timeout: Option<Duration>,
        token: Option<&AtomicBool>,
    ) -> PyResult<Option<u64>> {
        self.slot.get()?;
        let deadline = timeout.and_then(|t| Instant::now().checked_add(t));
        let on_main = crate::value::on_main_thread(py)?;
        loop {
            let remaining = match deadline {
                None => None,
                Some(d) => match d.checked_duration_since(Instant::now()) {
                    Some(r) if !r.is_zero() => Some(r),
                    _ => {
                        return Err(PyTimeoutError::new_err((
                            libc::ETIMEDOUT,
                            format!(
                                "timed out after {:?} waiting for a change of {} in map '{}' \
                                 (still at version {since})",
                                timeout.unwrap_or_default(),
                                if key.is_some() { "the key" } else { "any key" },
                                self.slot.name()
                            ),
                        )))
                    }
                },
            };
            let slice = if on_main {
                Some(remaining.map_or(SIGNAL_SLICE, |r| r.min(SIGNAL_SLICE)))
            } else {
                remaining
            };
            let r = self.slot.detached(py, |s| {
                let cancelled = || {
                    s.closed.load(Ordering::SeqCst)
                        || token.is_some_and(|t| t.load(Ordering::SeqCst))
                };
                let r = match key {
                    Some(k) => s.map.wait_changed_unless(k, since, slice, cancelled),
                    None => s.map.wait_any_unless(since, slice, cancelled),
                };
                (r, s.closed.load(Ordering::SeqCst))
            })?;
            match r {
                (Ok(Some(v)), _) => return Ok(Some(v)),
                (Ok(None), true) => return Err(errors::closed("map", self.slot.name())),
                (Ok(None), false) => return Ok(None),
                (Err(shmem::Error::Timeout { .. }), _) => {} // end of a slice or of the wait
                (Err(e), _) => return Err(errors::to_py(e)),
            }
            py.check_signals()?;
        }
    }

    /// The value of `key` as a new `bytes`, and its version. A value of up to
    /// `LOOKUP_BUF` bytes is copied through a buffer on the stack (no allocation but the
    /// `bytes` object); a longer one through `Map::get`'s vector.
    fn lookup<'py>(
        &self,
        py: Python<'py>,
        key: &Bound<'py, PyAny>,
    ) -> PyResult<Option<(Bound<'py, PyBytes>, u64)>> {
        const LOOKUP_BUF: usize = 256;
        let k = key_of(key)?;
        let h = self.slot.get()?;
        let mut buf = [0u8; LOOKUP_BUF];
        match h.map.get_into(&k, &mut buf) {
            Ok(found) => Ok(found.map(|(len, version)| (PyBytes::new(py, &buf[..len]), version))),
            Err(shmem::Error::BufferTooSmall { .. }) => {
                let found = h.map.get(&k).map_err(errors::to_py)?;
                Ok(found.map(|(v, version)| (PyBytes::new(py, &v), version)))
            }
            Err(e) => Err(errors::to_py(e)),
        }
    }
}

#[pymethods]
impl Map {
    /// Opens map `name`, or creates it empty (version 0) with `capacity` heap bytes if no live
    /// process has it. An existing map must hold at least `capacity` bytes.
    #[new]
    #[pyo3(signature = (name, capacity, *, persistent = false, mode = 0o600, dir = None))]
    fn new(
        py: Python<'_>,
        name: &str,
        capacity: &Bound<'_, PyAny>,
        persistent: bool,
        mode: i64,
        dir: Option<PathBuf>,
    ) -> PyResult<Map> {
        Map::attach(py, name, capacity, persistent, mode, dir, Open::OrCreate)
    }

    /// Opens the live map `name`; `FileNotFoundError` if there is none. A `capacity` above 0
    /// is the least it must hold. With `readonly=True` it needs only read permission (also on
    /// another user's map whose mode lets this user read it) and never writes: `set`,
    /// `delete`, `m[key] = data` and `del m[key]` raise `PermissionError`, and waits work on
    /// maps created with a mode that lets someone read without writing (0o644, 0o640), whose
    /// every set and delete wakes them (a wait on one key then wakes at every change of the
    /// map and checks its key again).
    #[classmethod]
    #[pyo3(signature = (name, capacity = None, *, dir = None, readonly = false))]
    fn open(
        _cls: &Bound<'_, PyType>,
        py: Python<'_>,
        name: &str,
        capacity: Option<&Bound<'_, PyAny>>,
        dir: Option<PathBuf>,
        readonly: bool,
    ) -> PyResult<Map> {
        let zero = 0u8.into_pyobject(py)?;
        let capacity = capacity.unwrap_or(zero.as_any());
        Map::attach(
            py,
            name,
            capacity,
            false,
            0o600,
            dir,
            Open::existing(readonly),
        )
    }

    /// Whether this handle was opened read-only (`Map.open(..., readonly=True)`).
    #[getter]
    fn readonly(&self) -> PyResult<bool> {
        Ok(self.slot.get()?.map.segment().access() == shmem::Access::ReadOnly)
    }

    /// Creates map `name`; `FileExistsError` if a live one has that name.
    #[classmethod]
    #[pyo3(signature = (name, capacity, *, persistent = false, mode = 0o600, dir = None))]
    fn create(
        _cls: &Bound<'_, PyType>,
        py: Python<'_>,
        name: &str,
        capacity: &Bound<'_, PyAny>,
        persistent: bool,
        mode: i64,
        dir: Option<PathBuf>,
    ) -> PyResult<Map> {
        Map::attach(py, name, capacity, persistent, mode, dir, Open::Create)
    }

    /// The map's name.
    #[getter]
    fn name(&self) -> &str {
        self.slot.name()
    }

    /// Whether this handle created the map (it was then empty, at version 0).
    #[getter]
    fn created(&self) -> PyResult<bool> {
        Ok(self.slot.get()?.map.created())
    }

    /// The heap bytes its records may use.
    #[getter]
    fn capacity(&self) -> PyResult<usize> {
        Ok(self.slot.get()?.map.capacity())
    }

    /// The map version: 0 at first, one more per set and per delete of a present key.
    #[getter]
    fn version(&self) -> PyResult<u64> {
        Ok(self.slot.get()?.map.version())
    }

    /// Whether `close()` was called.
    #[getter]
    fn closed(&self) -> bool {
        self.slot.peek().is_none()
    }

    /// Sets `key` to `data` (bytes, a str stored as UTF-8, or any buffer) and returns the new
    /// map version. `shmem.Error` when the map is full (nothing changes), `ValueError` for a
    /// bad key or a record larger than the whole map.
    fn set(&self, key: &Bound<'_, PyAny>, data: &Bound<'_, PyAny>) -> PyResult<u64> {
        let k = key_of(key)?;
        let d = data_of(data)?;
        self.slot.get()?.map.set(&k, &d).map_err(errors::to_py)
    }

    /// The value of `key` as bytes, or `default` when it is absent.
    #[pyo3(signature = (key, default = None))]
    fn get<'py>(
        &self,
        py: Python<'py>,
        key: &Bound<'py, PyAny>,
        default: Option<Bound<'py, PyAny>>,
    ) -> PyResult<Bound<'py, PyAny>> {
        Ok(match self.lookup(py, key)? {
            Some((v, _)) => v.into_any(),
            None => default.unwrap_or_else(|| py.None().into_bound(py)),
        })
    }

    /// `(version, data)` of `key` (the version of its last set), or `None` when absent.
    fn get_versioned<'py>(
        &self,
        py: Python<'py>,
        key: &Bound<'py, PyAny>,
    ) -> PyResult<Option<(u64, Bound<'py, PyBytes>)>> {
        Ok(self.lookup(py, key)?.map(|(v, version)| (version, v)))
    }

    /// Removes `key`; returns whether it was there (a removal is a new map version).
    fn delete(&self, key: &Bound<'_, PyAny>) -> PyResult<bool> {
        let k = key_of(key)?;
        match self.slot.get()?.map.delete(&k).map_err(errors::to_py)? {
            shmem::Delete::Removed { .. } => Ok(true),
            shmem::Delete::NotFound => Ok(false),
        }
    }

    fn __getitem__<'py>(
        &self,
        py: Python<'py>,
        key: &Bound<'py, PyAny>,
    ) -> PyResult<Bound<'py, PyBytes>> {
        match self.lookup(py, key)? {
            Some((v, _)) => Ok(v),
            None => Err(PyKeyError::new_err(key.clone().unbind())),
        }
    }

    fn __setitem__(&self, key: &Bound<'_, PyAny>, data: &Bound<'_, PyAny>) -> PyResult<()> {
        self.set(key, data).map(drop)
    }

    fn __delitem__(&self, key: &Bound<'_, PyAny>) -> PyResult<()> {
        if self.delete(key)? {
            Ok(())
        } else {
            Err(PyKeyError::new_err(key.clone().unbind()))
        }
    }

    fn __contains__(&self, key: &Bound<'_, PyAny>) -> PyResult<bool> {
        let k = key_of(key)?;
        self.slot.get()?.map.contains_key(&k).map_err(errors::to_py)
    }

    fn __len__(&self) -> PyResult<usize> {
        self.slot.get()?.map.len().map_err(errors::to_py)
    }

    /// The keys of one consistent version, sorted by their bytes.
    fn __iter__<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        self.keys(py)?.into_any().try_iter().map(Bound::into_any)
    }

    /// The keys of one consistent version, sorted by their bytes.
    fn keys<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyList>> {
        let snap = self.slot.get()?.map.snapshot().map_err(errors::to_py)?;
        PyList::new(py, snap.iter().map(|e| key_out(py, &e.key)))
    }

    /// `(key, data)` for every entry of one consistent version, sorted by key.
    fn items<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyList>> {
        let snap = self.slot.get()?.map.snapshot().map_err(errors::to_py)?;
        let items: PyResult<Vec<Bound<'py, PyTuple>>> = snap
            .iter()
            .map(|e| {
                PyTuple::new(
                    py,
                    [key_out(py, &e.key), PyBytes::new(py, &e.value).into_any()],
                )
            })
            .collect();
        PyList::new(py, items?)
    }

    /// Sleeps until `key`'s version (of its last set; 0 while absent) differs from `since`, or
    /// with `key=None` until the map version does (any key set or deleted), and returns that
    /// version (at once if it already differs). Releases the GIL while asleep; Ctrl-C
    /// interrupts it on the main thread. `TimeoutError` after `timeout` seconds (`None`: wait
    /// forever); `ValueError` if the map is closed meanwhile.
    #[pyo3(signature = (key = None, since = 0, timeout = None))]
    fn wait(
        &self,
        py: Python<'_>,
        key: Option<&Bound<'_, PyAny>>,
        since: u64,
        timeout: Option<f64>,
    ) -> PyResult<u64> {
        let timeout = args::timeout(self.slot.name(), timeout)?;
        let key = key.map(key_of).transpose()?;
        let v = self.wait_for(py, key.as_deref(), since, timeout, None)?;
        Ok(v.expect("no token, so only `close` cancels, which raises"))
    }

    /// An iterator of versions, one per change of `key` (or of any key with `None`) after
    /// `since` (default: the current version). Changes faster than the loop merge. `timeout`
    /// bounds each wait (`TimeoutError`).
    #[pyo3(signature = (key = None, since = None, timeout = None))]
    fn watch(
        slf: &Bound<'_, Self>,
        key: Option<&Bound<'_, PyAny>>,
        since: Option<u64>,
        timeout: Option<f64>,
    ) -> PyResult<MapWatch> {
        let this = slf.get();
        let timeout = args::timeout(this.slot.name(), timeout)?;
        let key = key.map(|k| key_of(k).map(Cow::into_owned)).transpose()?;
        let shared = this.slot.get()?;
        let since = match (since, &key) {
            (Some(s), _) => s,
            (None, None) => shared.map.version(),
            (None, Some(k)) => shared
                .map
                .get(k)
                .map_err(errors::to_py)?
                .map_or(0, |(_, v)| v),
        };
        Ok(MapWatch {
            map: slf.clone().unbind(),
            key,
            since,
            timeout,
        })
    }

    /// `await m.changed(since)`: the new map version (any key), as `wait(None, since)` returns
    /// it, without blocking the event loop (a thread sleeps for it). Cancelling the task ends
    /// that thread's wait.
    #[pyo3(signature = (since, timeout = None))]
    fn changed<'py>(
        slf: &Bound<'py, Self>,
        since: u64,
        timeout: Option<f64>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let this = slf.get();
        args::timeout(this.slot.name(), timeout)?;
        this.slot.get()?;
        slf.py()
            .import("shmem._aio")?
            .getattr("changed")?
            .call1((slf, since, timeout))
    }

    /// `wait(None, ...)` for `shmem._aio`: returns `None` once `token` is cancelled.
    #[pyo3(signature = (since, timeout, token))]
    fn _wait_cancellable(
        &self,
        py: Python<'_>,
        since: u64,
        timeout: Option<f64>,
        token: &crate::value::CancelToken,
    ) -> PyResult<Option<u64>> {
        let timeout = args::timeout(self.slot.name(), timeout)?;
        self.slot.get()?;
        token.set_target(Some(self.slot.clone()));
        let r = self.wait_for(py, None, since, timeout, Some(token.flag()));
        token.set_target(None);
        r
    }

    /// Detaches; the last process to detach from a transient map frees it. A wait in progress
    /// on another thread raises `ValueError`. Idempotent.
    fn close(&self) {
        crate::handle::Close::close(&*self.slot);
    }

    fn __enter__(slf: Bound<'_, Self>) -> Bound<'_, Self> {
        slf
    }

    #[pyo3(signature = (*_exc))]
    fn __exit__(&self, _exc: &Bound<'_, PyTuple>) -> bool {
        self.close();
        false
    }

    /// Pickles as its name (and directory): unpickling opens the live map again, as
    /// `Map.open` does (read-only if this handle is), so a `multiprocessing` child can be
    /// handed one. `FileNotFoundError` there if nobody holds it any more.
    fn __reduce__<'py>(
        &self,
        py: Python<'py>,
    ) -> PyResult<(Bound<'py, PyAny>, (String, PathBuf, bool))> {
        let shared = self.slot.get()?;
        let segment = shared.map.segment();
        let readonly = segment.access() == shmem::Access::ReadOnly;
        let dir = segment.dir().to_owned();
        let reopen = py.import("shmem._shmem")?.getattr("_reopen_map")?;
        Ok((reopen, (self.slot.name().to_owned(), dir, readonly)))
    }

    fn __repr__(&self) -> String {
        match self.slot.peek() {
            Some(s) => format!(
                "<shmem.Map '{}' capacity={} version={}>",
                self.slot.name(),
                s.map.capacity(),
                s.map.version()
            ),
            None => format!("<shmem.Map '{}' closed>", self.slot.name()),
        }
    }
}

/// The iterator that `Map.watch()` returns.
#[pyclass(module = "shmem", name = "MapWatch")]
#[derive(Debug)]
pub(crate) struct MapWatch {
    map: Py<Map>,
    key: Option<Vec<u8>>,
    since: u64,
    timeout: Option<Duration>,
}

#[pymethods]
impl MapWatch {
    fn __iter__(slf: PyRef<'_, Self>) -> PyRef<'_, Self> {
        slf
    }

    fn __next__(&mut self, py: Python<'_>) -> PyResult<u64> {
        let map = self.map.get();
        let v = map
            .wait_for(py, self.key.as_deref(), self.since, self.timeout, None)?
            .expect("no token, so only `close` cancels, which raises");
        self.since = v;
        Ok(v)
    }
}
