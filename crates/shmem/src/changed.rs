//! `Value::changed`: an async wait for tokio (feature `tokio`).
//!
//! The wait itself is the blocking futex wait of [`Value::wait_changed_unless`], run on
//! tokio's blocking pool, so the event loop never blocks and nothing polls. Dropping the future
//! (a `select!` that took another branch, a timeout) sets the wait's cancel flag and wakes the
//! waiters, so the blocking thread returns at once instead of sleeping on.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crate::error::{Error, Result};
use crate::value::Value;

impl Value {
    /// Waits, without blocking the async runtime, until the version differs from `since`, and
    /// returns the new version; [`Error::Timeout`] when `timeout` passes first. Needs a tokio
    /// runtime. Cancel-safe: dropping the future ends the wait.
    ///
    /// # Errors
    /// As [`Value::wait_changed`]; [`Error::Io`] if the blocking task could not run.
    pub async fn changed(self: &Arc<Self>, since: u64, timeout: Option<Duration>) -> Result<u64> {
        let v = self.version();
        if v != since {
            return Ok(v);
        }
        let cancel = Arc::new(AtomicBool::new(false));
        let mut on_drop = CancelOnDrop {
            value: Some(Arc::clone(self)),
            cancel: Arc::clone(&cancel),
        };
        let value = Arc::clone(self);
        let r = tokio::task::spawn_blocking(move || {
            value.wait_changed_unless(since, timeout, || cancel.load(Ordering::Relaxed))
        })
        .await;
        on_drop.value = None; // finished: nothing to cancel
        match r {
            Ok(Ok(Some(v))) => Ok(v),
            Ok(Ok(None)) => Err(Error::Io {
                name: self.name().to_owned(),
                op: "changed",
                source: std::io::Error::other("the wait was cancelled"),
            }),
            Ok(Err(e)) => Err(e),
            Err(e) => Err(Error::Io {
                name: self.name().to_owned(),
                op: "tokio::task::spawn_blocking",
                source: std::io::Error::other(e),
            }),
        }
    }
}

/// Ends the blocking wait of a `changed` future that is dropped before it finished.
struct CancelOnDrop {
    value: Option<Arc<Value>>,
    cancel: Arc<AtomicBool>,
}

impl Drop for CancelOnDrop {
    fn drop(&mut self) {
        if let Some(v) = self.value.take() {
            self.cancel.store(true, Ordering::Relaxed);
            v.wake_waiters();
        }
    }
}
