//! `shmem.Value`: a byte string shared between processes, never torn, with change waits.
//!
//! Waiting protocol. A wait runs with the GIL released, on the Rust library's futex wait,
//! cancelled by a predicate that reads two flags: the handle's `closed` (set by `close()`,
//! which then calls `wake_waiters`) and, for `changed()`, the caller's token (set by
//! [`CancelToken::cancel`], which does the same). The library checks the predicate before
//! every sleep and after every wake-up, so a cancel that lands anywhere ends the wait. On the
//! main thread, where Python runs its signal handlers, the sleep is cut into slices of
//! [`SIGNAL_SLICE`] with `check_signals()` between them, so that Ctrl-C raises
//! `KeyboardInterrupt` within one slice; other threads never receive signals and sleep until
//! the change, the deadline or a cancel. No thread ever polls the value.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use pyo3::exceptions::{PyTimeoutError, PyTypeError};
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyString, PyType};

use crate::handle::{OnClose, Slot};
use crate::open::{self, Open};
use crate::{args, errors};

/// How long a wait on the main thread sleeps between two checks for signals.
const SIGNAL_SLICE: Duration = Duration::from_millis(100);

/// Values at least this long are copied with the GIL released; shorter copies take less time
/// than releasing and retaking it.
const RELEASE_GIL_FROM: usize = 64 * 1024;

/// The Rust handle and its closed flag, shared by the Python object and any wait in progress.
#[derive(Debug)]
pub(crate) struct Shared {
    value: shmem::Value,
    closed: AtomicBool,
    /// The length of the value at the last read: the size of the next `bytes` (a hint only).
    last_len: AtomicUsize,
}

impl OnClose for Shared {
    fn closing(&self) {
        self.closed.store(true, Ordering::SeqCst);
        self.value.wake_waiters();
    }
}

/// How a wait ended, when it did not raise.
enum Waited {
    Changed(u64),
    Cancelled,
}

/// A value shared between processes by name: a byte string of up to `capacity` bytes and a
/// version that every `set` increments. Readers always get one complete value, never part of
/// one write and part of another, and never block; `wait`, `watch` and `changed` sleep until
/// the version moves.
///
/// `Value(name, capacity)` opens the value or creates it (empty, version 0). A transient value
/// (the default) is freed when the last process that has it open closes it, exits or crashes.
#[pyclass(frozen, module = "shmem", name = "Value")]
#[derive(Debug)]
pub(crate) struct Value {
    slot: Arc<Slot<Shared>>,
}

impl Value {
    /// Opens the live one named `name` in `dir`, whatever its size (for unpickling),
    /// read-only if the pickled handle was.
    pub(crate) fn reopen(
        py: Python<'_>,
        name: &str,
        dir: PathBuf,
        readonly: bool,
    ) -> PyResult<Value> {
        let zero = 0u8.into_pyobject(py)?;
        let how = Open::existing(readonly);
        Value::attach(py, name, zero.as_any(), false, 0o600, Some(dir), how)
    }

    #[allow(clippy::too_many_arguments)]
    fn attach(
        py: Python<'_>,
        name: &str,
        capacity: &Bound<'_, PyAny>,
        persistent: bool,
        mode: i64,
        dir: Option<PathBuf>,
        how: Open,
    ) -> PyResult<Value> {
        let capacity = args::size("capacity", name, capacity)?;
        let builder = shmem::Value::builder(name)
            .dir(args::dir(dir))
            .capacity(capacity)
            .lifetime(open::lifetime(persistent))
            .mode(args::mode(name, mode)?);
        let value = open::attach(py, builder, how)?;
        Ok(Value {
            slot: Slot::new(
                "value",
                name,
                Shared {
                    value,
                    closed: AtomicBool::new(false),
                    last_len: AtomicUsize::new(0),
                },
            ),
        })
    }

    /// The current value and its version. Copies straight into the `bytes` object when the
    /// value has the length the last read saw (the common case); otherwise once more.
    fn read<'py>(&self, py: Python<'py>) -> PyResult<(Bound<'py, PyBytes>, u64)> {
        let shared = self.slot.get()?;
        let mut hint = shared
            .last_len
            .load(Ordering::Relaxed)
            .min(shared.value.capacity());
        loop {
            if hint >= RELEASE_GIL_FROM {
                drop(shared);
                let (data, version) = self
                    .slot
                    .detached(py, |s| {
                        let got = s.value.get_vec();
                        if let Ok((data, _)) = &got {
                            s.last_len.store(data.len(), Ordering::Relaxed);
                        }
                        got
                    })?
                    .map_err(errors::to_py)?;
                return Ok((PyBytes::new(py, &data), version));
            }
            let mut outcome = Ok((0, 0));
            let bytes = PyBytes::new_with(py, hint, |buf| {
                outcome = shared.value.get(buf);
                Ok(())
            })?;
            match outcome {
                Ok((n, version)) => {
                    shared.last_len.store(n, Ordering::Relaxed);
                    if n == hint {
                        return Ok((bytes, version));
                    }
                    return Ok((PyBytes::new(py, &bytes.as_bytes()[..n]), version));
                }
                Err(shmem::Error::BufferTooSmall { needed, .. }) => hint = needed,
                Err(e) => return Err(errors::to_py(e)),
            }
        }
    }

    /// Sleeps until the version differs from `since` (see the module's waiting protocol).
    fn wait_for(
        &self,
        py: Python<'_>,
        since: u64,
        timeout: Option<Duration>,
        token: Option<&AtomicBool>,
    ) -> PyResult<Waited> {
        let now = self.slot.get()?.value.version();
        if now != since {
            return Ok(Waited::Changed(now));
        }
        let deadline = timeout.and_then(|t| Instant::now().checked_add(t));
        let on_main = on_main_thread(py)?;
        loop {
            let remaining = match deadline {
                None => None,
                Some(d) => match d.checked_duration_since(Instant::now()) {
                    Some(r) if !r.is_zero() => Some(r),
                    _ => {
                        return Err(PyTimeoutError::new_err((
                            libc::ETIMEDOUT,
                            format!(
                                "timed out after {:?} waiting for a change of value '{}' (still \
                                 at version {since})",
                                timeout.unwrap_or_default(),
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
                let r = s.value.wait_changed_unless(since, slice, cancelled);
                (r, s.closed.load(Ordering::SeqCst))
            })?;
            match r {
                (Ok(Some(v)), _) => return Ok(Waited::Changed(v)),
                (Ok(None), true) => return Err(errors::closed("value", self.slot.name())),
                (Ok(None), false) => return Ok(Waited::Cancelled),
                (Err(shmem::Error::Timeout { .. }), _) => {} // end of a slice or of the wait
                (Err(e), _) => return Err(errors::to_py(e)),
            }
            py.check_signals()?;
        }
    }
}

/// Whether this is the interpreter's main thread, the only one that runs signal handlers.
pub(crate) fn on_main_thread(py: Python<'_>) -> PyResult<bool> {
    let threading = py.import("threading")?;
    let main = threading.call_method0("main_thread")?;
    let current = threading.call_method0("current_thread")?;
    Ok(main.is(&current))
}

#[pymethods]
impl Value {
    /// Opens value `name`, or creates it empty (version 0) with room for `capacity` bytes if
    /// no live process has it. `created` tells which happened. An existing value must hold at
    /// least `capacity` bytes.
    #[new]
    #[pyo3(signature = (name, capacity, *, persistent = false, mode = 0o600, dir = None))]
    fn new(
        py: Python<'_>,
        name: &str,
        capacity: &Bound<'_, PyAny>,
        persistent: bool,
        mode: i64,
        dir: Option<PathBuf>,
    ) -> PyResult<Value> {
        Value::attach(py, name, capacity, persistent, mode, dir, Open::OrCreate)
    }

    /// Opens the live value `name`; `FileNotFoundError` if there is none. A `capacity` above 0
    /// is the least it must hold. With `readonly=True` it needs only read permission (also on
    /// another user's value whose mode lets this user read it) and never writes: `set` raises
    /// `PermissionError`, and waits work on values created with a mode that lets someone read
    /// without writing (0o644, 0o640), whose every `set` wakes them.
    #[classmethod]
    #[pyo3(signature = (name, capacity = None, *, dir = None, readonly = false))]
    fn open(
        _cls: &Bound<'_, PyType>,
        py: Python<'_>,
        name: &str,
        capacity: Option<&Bound<'_, PyAny>>,
        dir: Option<PathBuf>,
        readonly: bool,
    ) -> PyResult<Value> {
        let zero = 0u8.into_pyobject(py)?;
        let capacity = capacity.unwrap_or(zero.as_any());
        let how = Open::existing(readonly);
        Value::attach(py, name, capacity, false, 0o600, dir, how)
    }

    /// Whether this handle was opened read-only (`Value.open(..., readonly=True)`).
    #[getter]
    fn readonly(&self) -> PyResult<bool> {
        Ok(self.slot.get()?.value.segment().access() == shmem::Access::ReadOnly)
    }

    /// Creates value `name`; `FileExistsError` if a live one has that name. A persistent value
    /// stays until `shmem.unlink(name)`; `mode` is its file mode.
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
    ) -> PyResult<Value> {
        Value::attach(py, name, capacity, persistent, mode, dir, Open::Create)
    }

    /// The value's name.
    #[getter]
    fn name(&self) -> &str {
        self.slot.name()
    }

    /// Whether this handle created the value (it was then empty, at version 0).
    #[getter]
    fn created(&self) -> PyResult<bool> {
        Ok(self.slot.get()?.value.created())
    }

    /// The largest value it holds, in bytes (the capacity asked for, rounded up to 64).
    #[getter]
    fn capacity(&self) -> PyResult<usize> {
        Ok(self.slot.get()?.value.capacity())
    }

    /// The latest version: 0 before the first `set`, then one more per `set`.
    #[getter]
    fn version(&self) -> PyResult<u64> {
        Ok(self.slot.get()?.value.version())
    }

    /// Whether it stays when its last user goes (until `shmem.unlink`).
    #[getter]
    fn persistent(&self) -> PyResult<bool> {
        Ok(self.slot.get()?.value.segment().lifetime() == shmem::Lifetime::Persistent)
    }

    /// Whether `close()` was called.
    #[getter]
    fn closed(&self) -> bool {
        self.slot.peek().is_none()
    }

    /// Publishes `data` (bytes, a str stored as UTF-8, or any object with the buffer protocol)
    /// as the new value and returns its version. `ValueError` if it is longer than `capacity`;
    /// nothing is stored then.
    fn set(&self, py: Python<'_>, data: &Bound<'_, PyAny>) -> PyResult<u64> {
        let store = |bytes: &[u8]| {
            if bytes.len() >= RELEASE_GIL_FROM {
                self.slot.detached(py, |s| s.value.set(bytes))?
            } else {
                self.slot.get()?.value.set(bytes)
            }
            .map_err(errors::to_py)
        };
        if let Ok(b) = data.cast::<PyBytes>() {
            return store(b.as_bytes());
        }
        if let Ok(s) = data.cast::<PyString>() {
            return store(s.to_cow()?.as_bytes());
        }
        let view = py
            .import("builtins")?
            .getattr("memoryview")?
            .call1((data,))
            .map_err(|_| {
                let kind = data
                    .get_type()
                    .name()
                    .map(|n| n.to_string())
                    .unwrap_or_default();
                PyTypeError::new_err(format!(
                    "value '{}' stores bytes, a str or a buffer, not {kind}",
                    self.slot.name()
                ))
            })?;
        let bytes = view.call_method0("tobytes")?;
        store(bytes.cast::<PyBytes>()?.as_bytes())
    }

    /// The current value: one complete `set`, never a mix of two.
    fn get<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyBytes>> {
        Ok(self.read(py)?.0)
    }

    /// The current value and its version, read together: `(version, data)`.
    fn get_versioned<'py>(&self, py: Python<'py>) -> PyResult<(u64, Bound<'py, PyBytes>)> {
        let (data, version) = self.read(py)?;
        Ok((version, data))
    }

    /// The current value decoded from UTF-8 (`errors` as for `bytes.decode`).
    #[pyo3(signature = (errors = "strict"))]
    fn get_str<'py>(&self, py: Python<'py>, errors: &str) -> PyResult<Bound<'py, PyAny>> {
        let (data, _) = self.read(py)?;
        match std::str::from_utf8(data.as_bytes()) {
            Ok(s) => Ok(PyString::new(py, s).into_any()),
            Err(_) => data.call_method1("decode", ("utf-8", errors)),
        }
    }

    /// Sleeps until the version differs from `since` and returns the new version (at once if
    /// it already differs). Releases the GIL while asleep; Ctrl-C interrupts it on the main
    /// thread. `TimeoutError` after `timeout` seconds (`None`: wait forever); `ValueError` if
    /// the value is closed meanwhile.
    #[pyo3(signature = (since, timeout = None))]
    fn wait(&self, py: Python<'_>, since: u64, timeout: Option<f64>) -> PyResult<u64> {
        let timeout = args::timeout(self.slot.name(), timeout)?;
        match self.wait_for(py, since, timeout, None)? {
            Waited::Changed(v) => Ok(v),
            Waited::Cancelled => unreachable!("no token, so only `close` cancels, which raises"),
        }
    }

    /// An iterator of `(version, data)`, one per change after `since` (default: the current
    /// version). Changes that come faster than the loop reads them merge: each item is the
    /// latest value. `timeout` bounds each wait (`TimeoutError`).
    #[pyo3(signature = (since = None, timeout = None))]
    fn watch(slf: &Bound<'_, Self>, since: Option<u64>, timeout: Option<f64>) -> PyResult<Watch> {
        let this = slf.get();
        let timeout = args::timeout(this.slot.name(), timeout)?;
        let since = match since {
            Some(s) => s,
            None => this.slot.get()?.value.version(),
        };
        Ok(Watch {
            value: slf.clone().unbind(),
            since,
            timeout,
        })
    }

    /// `await value.changed(since)`: the new version, as `wait` returns it, without blocking
    /// the event loop (a thread sleeps for it). Cancelling the task ends that thread's wait.
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

    /// `wait` for `shmem._aio`: returns `None` once `token` is cancelled.
    #[pyo3(signature = (since, timeout, token))]
    fn _wait_cancellable(
        &self,
        py: Python<'_>,
        since: u64,
        timeout: Option<f64>,
        token: &CancelToken,
    ) -> PyResult<Option<u64>> {
        let timeout = args::timeout(self.slot.name(), timeout)?;
        self.slot.get()?;
        token.set_target(Some(self.slot.clone()));
        let r = self.wait_for(py, since, timeout, Some(&token.flag));
        token.set_target(None);
        match r? {
            Waited::Changed(v) => Ok(Some(v)),
            Waited::Cancelled => Ok(None),
        }
    }

    /// Detaches; the last process to detach from a transient value frees it. A wait in progress
    /// on another thread raises `ValueError`. Idempotent.
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

    /// Pickles as its name (and directory): unpickling opens the live value again, as
    /// `Value.open` does, so a `multiprocessing` child can be handed one. `FileNotFoundError`
    /// there if nobody holds it any more.
    fn __reduce__<'py>(
        &self,
        py: Python<'py>,
    ) -> PyResult<(Bound<'py, PyAny>, (String, PathBuf, bool))> {
        let shared = self.slot.get()?;
        let segment = shared.value.segment();
        let readonly = segment.access() == shmem::Access::ReadOnly;
        let dir = segment.dir().to_owned();
        let reopen = py.import("shmem._shmem")?.getattr("_reopen_value")?;
        Ok((reopen, (self.slot.name().to_owned(), dir, readonly)))
    }

    fn __repr__(&self) -> String {
        match self.slot.peek() {
            Some(s) => format!(
                "<shmem.Value '{}' capacity={} version={}>",
                self.slot.name(),
                s.value.capacity(),
                s.value.version()
            ),
            None => format!("<shmem.Value '{}' closed>", self.slot.name()),
        }
    }
}

/// The iterator that `Value.watch()` returns.
#[pyclass(module = "shmem", name = "Watch")]
#[derive(Debug)]
pub(crate) struct Watch {
    value: Py<Value>,
    since: u64,
    timeout: Option<Duration>,
}

#[pymethods]
impl Watch {
    fn __iter__(slf: PyRef<'_, Self>) -> PyRef<'_, Self> {
        slf
    }

    fn __next__<'py>(&mut self, py: Python<'py>) -> PyResult<(u64, Bound<'py, PyBytes>)> {
        let value = self.value.get();
        match value.wait_for(py, self.since, self.timeout, None)? {
            Waited::Changed(_) => {}
            Waited::Cancelled => unreachable!("no token, so only `close` cancels, which raises"),
        }
        let (data, version) = value.read(py)?;
        self.since = version;
        Ok((version, data))
    }
}

/// What a [`CancelToken`] wakes: the slot of a value or a map being waited on.
pub(crate) trait CancelTarget: Send + Sync + std::fmt::Debug {
    /// Wakes the waiters of the handle, if it is still open.
    fn wake(&self);
}

impl CancelTarget for Slot<Shared> {
    fn wake(&self) {
        if let Some(shared) = self.peek() {
            shared.value.wake_waiters();
        }
    }
}

/// Ends a `_wait_cancellable` from another thread (used by `changed()` when its task is
/// cancelled).
#[pyclass(frozen, module = "shmem", name = "_CancelToken")]
#[derive(Debug, Default)]
pub(crate) struct CancelToken {
    flag: AtomicBool,
    /// The value or map being waited on, while a wait runs: whose waiters to wake. The slot,
    /// not the handle, so that the token never keeps the segment attached.
    target: Mutex<Option<Arc<dyn CancelTarget>>>,
}

impl CancelToken {
    /// Sets (or clears) what `cancel` wakes.
    pub(crate) fn set_target(&self, target: Option<Arc<dyn CancelTarget>>) {
        *self.target.lock().unwrap_or_else(PoisonError::into_inner) = target;
    }

    /// The flag `cancel` sets.
    pub(crate) fn flag(&self) -> &AtomicBool {
        &self.flag
    }
}

#[pymethods]
impl CancelToken {
    #[new]
    fn new() -> CancelToken {
        CancelToken::default()
    }

    /// Makes the wait return `None` (now if it sleeps, at once if it has not started).
    fn cancel(&self) {
        self.flag.store(true, Ordering::SeqCst);
        let target = self
            .target
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        if let Some(target) = target {
            target.wake();
        }
    }
}
