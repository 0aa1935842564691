//! The writers' lock: a priority-inheritance futex that survives a crashed holder.
//!
//! # Protocol
//!
//! One `u32` lock word in shared memory, with the kernel's PI-futex convention:
//! `0` = free; otherwise the holder's thread id (`gettid`) in the low 30 bits, plus the kernel's
//! `FUTEX_WAITERS` / `FUTEX_OWNER_DIED` bits. All-zero memory is a free lock.
//!
//! - **Lock**, fast path: `CAS(0 -> tid)` (Acquire); no system call.
//! - **Lock**, contended: `FUTEX_LOCK_PI` with a deadline. The kernel checks the holder: while
//!   it lives we sleep (and lend it our priority); when it exits while we wait, the kernel
//!   hands the lock to us. If the word names a thread that no longer exists (the holder was
//!   killed with nobody waiting), the kernel answers `ESRCH`, and we take the lock over with
//!   `CAS(dead word -> tid)`; two contenders doing that race on the CAS, so one wins.
//!   If the holder died while others were queued in the kernel, the kernel hands the lock to
//!   one of them; until that one has written its tid, `FUTEX_LOCK_PI` answers `EINVAL` to
//!   newcomers, who yield and retry (bounded by the deadline).
//! - **Unlock**: `CAS(tid -> 0)` (Release); if the kernel set `FUTEX_WAITERS`, the CAS fails and
//!   `FUTEX_UNLOCK_PI` hands the lock to the next waiter.
//!
//! Unlike a robust `pthread_mutex_t`, nothing here depends on glibc's per-thread robust list,
//! which links the mutex's own (shared, so attacker-writable) pointers into the thread's list:
//! garbage in the lock word can make us wait until the deadline or fail, never crash.
//! Thread ids are those of the caller's pid namespace: all users of a segment must share one
//! (as they must for robust pthread mutexes too).
//!
//! What a crashed holder leaves behind is dealt with by the value protocol (`value.rs`): the
//! lock only guarantees that writers never overlap and that a dead writer never blocks the
//! others for longer than it takes the kernel to notice its death.

use std::cell::Cell;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::Once;
use std::time::Duration;

use rustix::io::Errno;
use rustix::thread::futex;

/// The bits of the lock word that hold the owner's thread id.
const TID_MASK: u32 = 0x3fff_ffff;

/// Why the lock could not be taken.
#[derive(Debug)]
pub(crate) enum LockError {
    /// The deadline passed while another live thread held it.
    Timeout,
    /// The word claims that this very thread holds the lock, which it does not.
    Corrupt(u32),
    /// Any other error from `futex`.
    Sys(Errno),
}

/// A held lock; unlocks on drop.
#[derive(Debug)]
pub(crate) struct Guard<'a> {
    word: &'a AtomicU32,
    tid: u32,
}

/// Takes the lock, waiting at most `timeout` for a live holder.
pub(crate) fn lock(word: &AtomicU32, timeout: Duration) -> Result<Guard<'_>, LockError> {
    let tid = current_tid();
    if word
        .compare_exchange(0, tid, Ordering::Acquire, Ordering::Relaxed)
        .is_ok()
    {
        return Ok(Guard { word, tid });
    }
    let deadline = realtime_deadline(timeout);
    loop {
        match futex::lock_pi(word, futex::Flags::empty(), Some(&deadline)) {
            Ok(()) => return Ok(Guard { word, tid }),
            Err(Errno::SRCH) => {
                // The holder named in the word is gone and nobody was waiting for it.
                let seen = word.load(Ordering::Relaxed);
                if seen & TID_MASK == tid {
                    return Err(LockError::Corrupt(seen));
                }
                if word
                    .compare_exchange(seen, tid, Ordering::Acquire, Ordering::Relaxed)
                    .is_ok()
                {
                    return Ok(Guard { word, tid });
                }
            }
            Err(Errno::TIMEDOUT) => return Err(LockError::Timeout),
            // The holder died while others were queued in the kernel: the kernel has released
            // its state and is handing the lock to one of them, who will write its tid into
            // the word; until then the word still names the dead holder without
            // `FUTEX_OWNER_DIED` (only glibc's robust list would set it), and the kernel answers
            // EINVAL. It is transient: let the new holder run, and retry until the deadline.
            Err(Errno::INVAL) => {
                if past(&deadline) {
                    return Err(LockError::Timeout);
                }
                std::thread::yield_now();
            }
            Err(Errno::DEADLK) => return Err(LockError::Corrupt(word.load(Ordering::Relaxed))),
            Err(Errno::INTR) | Err(Errno::AGAIN) => {}
            Err(e) => return Err(LockError::Sys(e)),
        }
    }
}

impl Drop for Guard<'_> {
    fn drop(&mut self) {
        if self
            .word
            .compare_exchange(self.tid, 0, Ordering::Release, Ordering::Relaxed)
            .is_err()
        {
            // Waiters are queued in the kernel: let it pick the next holder. EPERM means a peer
            // overwrote the word while we held it; the lock is then theirs to sort out.
            let _ = futex::unlock_pi(self.word, futex::Flags::empty());
        }
    }
}

/// Whether the `CLOCK_REALTIME` deadline has passed.
fn past(deadline: &futex::Timespec) -> bool {
    let now = rustix::time::clock_gettime(rustix::time::ClockId::Realtime);
    (now.tv_sec, now.tv_nsec) >= (deadline.tv_sec, deadline.tv_nsec)
}

/// An absolute `CLOCK_REALTIME` deadline, as `FUTEX_LOCK_PI` wants it.
fn realtime_deadline(timeout: Duration) -> futex::Timespec {
    let now = rustix::time::clock_gettime(rustix::time::ClockId::Realtime);
    let secs = i64::try_from(timeout.as_secs()).unwrap_or(i64::MAX / 2);
    let mut ts = futex::Timespec {
        tv_sec: now.tv_sec.saturating_add(secs),
        tv_nsec: now.tv_nsec + i64::from(timeout.subsec_nanos()),
    };
    if ts.tv_nsec >= 1_000_000_000 {
        ts.tv_sec += 1;
        ts.tv_nsec -= 1_000_000_000;
    }
    ts
}

/// Bumped in every child after `fork`, so that cached thread ids are refreshed there.
static FORK_GENERATION: AtomicU64 = AtomicU64::new(0);
static REGISTER_ATFORK: Once = Once::new();

thread_local! {
    /// (fork generation, tid) of this thread, to avoid a `gettid` system call per `set`.
    static TID: Cell<(u64, u32)> = const { Cell::new((u64::MAX, 0)) };
}

extern "C" fn after_fork_in_child() {
    FORK_GENERATION.fetch_add(1, Ordering::Relaxed);
}

/// This thread's kernel thread id, cached per thread and refreshed after `fork`.
pub(crate) fn current_tid() -> u32 {
    REGISTER_ATFORK.call_once(|| {
        // SAFETY: registers a handler that only touches an atomic, which is async-signal-safe
        // as a fork child handler must be.
        unsafe {
            libc::pthread_atfork(None, None, Some(after_fork_in_child));
        }
    });
    let generation = FORK_GENERATION.load(Ordering::Relaxed);
    TID.with(|cell| {
        let (g, tid) = cell.get();
        if g == generation {
            return tid;
        }
        let tid = rustix::thread::gettid().as_raw_nonzero().get() as u32;
        cell.set((generation, tid));
        tid
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn excludes_threads_and_survives_a_dead_owner() {
        let word = AtomicU32::new(0);
        {
            let _g = lock(&word, Duration::from_secs(5)).unwrap();
            assert_eq!(word.load(Ordering::Relaxed) & TID_MASK, current_tid());
            std::thread::scope(|s| {
                s.spawn(|| {
                    assert!(matches!(
                        lock(&word, Duration::from_millis(20)),
                        Err(LockError::Timeout)
                    ));
                });
            });
        }
        assert_eq!(word.load(Ordering::Relaxed), 0);
        // A thread that exits holding the lock: the next locker takes it over.
        std::thread::scope(|s| {
            s.spawn(|| std::mem::forget(lock(&word, Duration::from_secs(5)).unwrap()));
        });
        let g = lock(&word, Duration::from_secs(5)).unwrap();
        drop(g);
        assert_eq!(word.load(Ordering::Relaxed), 0);
    }

    #[test]
    fn a_word_naming_this_thread_is_an_error_not_a_hang() {
        let word = AtomicU32::new(current_tid());
        assert!(matches!(
            lock(&word, Duration::from_secs(5)),
            Err(LockError::Corrupt(_))
        ));
    }
}
