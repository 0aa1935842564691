//! SIGINT, SIGTERM and SIGHUP for the commands that wait.
//!
//! A process killed while attached is safe for the others (the kernel drops its lock), but if it
//! was the last holder of a transient segment its file stays behind as a stale segment until the
//! next opener or `shmem gc`. So a command that may wait for long (`demo`, `hold`, `watch`,
//! `get --wait`) catches these signals, stops waiting, and detaches by dropping its handle. The
//! handler runs on a thread of its own (the `ctrlc` crate), never in signal context, so it may
//! take locks.

//!
//! On Windows the handler is the console's Ctrl-C and Ctrl-Break handler (`ctrlc` again); a
//! console event reaches every process of the console, the demo's child included, so there is
//! no child to stop by hand.

use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError, Weak};

#[cfg(target_os = "linux")]
use rustix::process::{kill_process, Pid, Signal};
use shmem::{Map, Value};

/// A child process, to stop on a signal (Linux only: see the module docs).
#[cfg(target_os = "linux")]
pub type ChildId = Pid;
/// A child process: on Windows the console event reaches it without our help.
#[cfg(windows)]
pub type ChildId = u32;

use crate::error::{Failure, Result};

/// The flag the signal handler raises, and the child process it stops.
#[derive(Clone, Debug)]
pub struct Interrupt {
    shared: Arc<Shared>,
}

#[derive(Debug, Default)]
struct Shared {
    state: Mutex<State>,
    raised: Condvar,
}

#[derive(Debug, Default)]
struct State {
    raised: bool,
    /// A child that has not been reaped yet: the handler sends it SIGTERM.
    child: Option<ChildId>,
    /// A value or map this process may be waiting on: the handler wakes its waiters, which
    /// then see the raised flag. Weak, so that the handler never keeps a segment attached.
    waiting_on: Option<Weak<dyn Wake>>,
}

impl Interrupt {
    /// Installs the handler (at most once per process).
    pub fn install() -> Result<Interrupt> {
        let interrupt = Interrupt {
            shared: Arc::default(),
        };
        let handler = interrupt.clone();
        ctrlc::set_handler(move || handler.raise())
            .map_err(|e| Failure::error(format!("cannot install the signal handler: {e}")))?;
        Ok(interrupt)
    }

    /// Whether a signal arrived.
    pub fn is_raised(&self) -> bool {
        self.state().raised
    }

    /// Blocks until a signal arrives.
    pub fn wait(&self) {
        let mut state = self.state();
        while !state.raised {
            state = self
                .shared
                .raised
                .wait(state)
                .unwrap_or_else(PoisonError::into_inner);
        }
    }

    /// Sets the child to stop on a signal (`None` once it exited, before it is reaped, so that
    /// a reused pid is never signalled). If a signal already arrived, stops it now.
    pub fn set_child(&self, child: Option<ChildId>) {
        let mut state = self.state();
        state.child = child;
        if state.raised {
            stop(child);
        }
    }

    /// Sets the value or map whose waiters a signal must wake.
    pub fn set_waiting_on<T: Wake + 'static>(&self, target: &Arc<T>) {
        let weak: Weak<dyn Wake> = Arc::downgrade(target) as Weak<T>;
        self.state().waiting_on = Some(weak);
    }

    fn raise(&self) {
        let mut state = self.state();
        state.raised = true;
        stop(state.child);
        if let Some(target) = state.waiting_on.as_ref().and_then(Weak::upgrade) {
            target.wake_waiters();
        }
        self.shared.raised.notify_all();
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.shared
            .state
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }
}

/// What a signal wakes: the waiters of a value or of a map.
pub trait Wake: Send + Sync {
    /// Wakes every thread that sleeps in a wait on it.
    fn wake_waiters(&self);
}

impl Wake for Value {
    fn wake_waiters(&self) {
        Value::wake_waiters(self);
    }
}

impl Wake for Map {
    fn wake_waiters(&self) {
        Map::wake_waiters(self);
    }
}

#[cfg(target_os = "linux")]
fn stop(child: Option<ChildId>) {
    if let Some(pid) = child {
        // It may have exited already (not yet reaped): then there is nothing to stop.
        let _ = kill_process(pid, Signal::TERM);
    }
}

/// The console event has reached the child already.
#[cfg(windows)]
fn stop(_child: Option<ChildId>) {}
