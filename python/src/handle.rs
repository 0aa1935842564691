//! The state behind a Python `Value` or `Segment`, and the list of open ones.
//!
//! A Python object holds an `Arc<Slot<T>>`; the slot holds the Rust handle as
//! `Option<Arc<T>>`. Every operation clones the inner `Arc` under the slot's mutex and then
//! works on the clone, with the mutex released (a wait can last forever). `close()` takes the
//! handle out of the slot: later calls raise `ValueError`, and the Rust handle is dropped, which
//! detaches, as soon as the last clone goes.
//!
//! Work done without the GIL (a wait, a large copy) goes through [`Slot::detached`], which
//! counts it in `busy` and drops its clone *before* asking for the GIL back. `close()` marks the
//! handle closed (a value then wakes its waiters, which see the mark and return), waits up to
//! [`CLOSE_GRACE`] for `busy` to reach 0, and drops the handle itself, so the detach is done
//! when `close()` returns. That matters at interpreter exit: a daemon thread that wakes then
//! never gets the GIL back, and a clone dropped only after that would never be dropped. Views
//! of a segment's buffer hold clones too, on purpose (see `segment.rs`); they are not `busy`.
//!
//! Every slot is also listed, weakly, in [`OPEN`], so that [`close_all`] (run by `atexit`) can
//! close the handles that are still open when the interpreter exits: objects that live until
//! then are not always freed by the interpreter, and a segment that is never detached stays in
//! /dev/shm after its last user is gone.

use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError, Weak};
use std::time::{Duration, Instant};

use pyo3::{PyResult, Python};

use crate::errors;

/// What a handle does when it is closed, besides being dropped.
pub(crate) trait OnClose: Send + Sync {
    /// Called once, with the handle still alive, before the slot lets go of it.
    fn closing(&self) {}
}

/// How long `close()` waits for work without the GIL to let go of the handle. Woken waits
/// return in microseconds; only a copy of a huge value could take longer, and its clone then
/// detaches when it ends.
const CLOSE_GRACE: Duration = Duration::from_secs(2);

/// The Python object's hold on a Rust handle.
#[derive(Debug)]
pub(crate) struct Slot<T> {
    kind: &'static str,
    name: String,
    state: Mutex<State<T>>,
    /// Notified when `busy` goes down.
    released: Condvar,
}

#[derive(Debug)]
struct State<T> {
    /// `None` once closed.
    handle: Option<Arc<T>>,
    /// Calls in [`Slot::detached`] that still hold a clone.
    busy: usize,
}

impl<T: OnClose + 'static> Slot<T> {
    /// A slot holding `handle`, listed in [`OPEN`].
    pub(crate) fn new(kind: &'static str, name: &str, handle: T) -> Arc<Slot<T>> {
        let slot = Arc::new(Slot {
            kind,
            name: name.to_owned(),
            state: Mutex::new(State {
                handle: Some(Arc::new(handle)),
                busy: 0,
            }),
            released: Condvar::new(),
        });
        let weak: Weak<dyn Close> = Arc::downgrade(&slot) as Weak<dyn Close>;
        let mut open = OPEN.lock().unwrap_or_else(PoisonError::into_inner);
        open.retain(|w| w.strong_count() > 0);
        open.push(weak);
        slot
    }

    /// The handle, or `ValueError` if it was closed.
    pub(crate) fn get(&self) -> PyResult<Arc<T>> {
        self.peek()
            .ok_or_else(|| errors::closed(self.kind, &self.name))
    }

    /// The handle if still open.
    pub(crate) fn peek(&self) -> Option<Arc<T>> {
        self.lock().handle.clone()
    }

    /// Runs `f` on the handle with the GIL released; `ValueError` if it is closed. The clone
    /// is dropped before the GIL is taken back (see the module documentation).
    pub(crate) fn detached<R: Send>(
        &self,
        py: Python<'_>,
        f: impl FnOnce(&T) -> R + Send,
    ) -> PyResult<R> {
        let handle = {
            let mut state = self.lock();
            let handle = state
                .handle
                .clone()
                .ok_or_else(|| errors::closed(self.kind, &self.name))?;
            state.busy += 1;
            handle
        };
        Ok(py.detach(move || {
            let r = f(&handle);
            drop(handle);
            self.lock().busy -= 1;
            self.released.notify_all();
            r
        }))
    }

    pub(crate) fn name(&self) -> &str {
        &self.name
    }

    fn lock(&self) -> MutexGuard<'_, State<T>> {
        // A poisoned lock still holds a complete state: every write stores one.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Type-erased closing, for [`OPEN`].
pub(crate) trait Close: Send + Sync {
    /// Closes the handle (idempotent).
    fn close(&self);
}

impl<T: OnClose + 'static> Close for Slot<T> {
    fn close(&self) {
        let Some(handle) = self.lock().handle.take() else {
            return;
        };
        handle.closing();
        let deadline = Instant::now() + CLOSE_GRACE;
        let mut state = self.lock();
        while state.busy > 0 {
            let Some(left) = deadline.checked_duration_since(Instant::now()) else {
                break;
            };
            state = self
                .released
                .wait_timeout(state, left)
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
        drop(state);
        drop(handle); // detaches, unless views of a segment's buffer still hold it
    }
}

/// Every slot made so far, weakly; dead entries are pruned when a slot is added.
static OPEN: Mutex<Vec<Weak<dyn Close>>> = Mutex::new(Vec::new());

/// Closes every handle still open (run at interpreter exit).
pub(crate) fn close_all() {
    let open: Vec<Arc<dyn Close>> = {
        let mut list = OPEN.lock().unwrap_or_else(PoisonError::into_inner);
        let alive = list.iter().filter_map(Weak::upgrade).collect();
        list.clear();
        alive
    };
    for slot in open {
        slot.close();
    }
}
