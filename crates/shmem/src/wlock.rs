//! The writers' lock: a priority-inheritance futex that survives a crashed holder.
//!
//! # Protocol
//!
//! One `u32` lock word in shared memory, with the kernel's PI-futex convention:
//! `0` = free; otherwise the holder's thread id (`gettid`) in the low 30 bits, plus the kernel's
//! `FUTEX_WAITERS` / `FUTEX_OWNER_DIED` bits. All-zero memory is a free lock.
//!
//! - **Lock**, fast path: `CAS(0 -> tid)` (Acquire); no system call.
//! - **Lock**, contended: first spin (at most [`SPIN_LIMIT`] reads) while the holder finishes,
//!   unless the kernel already queues waiters. Then `FUTEX_LOCK_PI` with a deadline. The kernel
//!   checks the holder: while it lives we sleep (and lend it our priority); when it exits while
//!   we wait, the kernel hands the lock to us. If the word names a thread that no longer exists
//!   (the holder was killed with nobody queued), the kernel answers `ESRCH`. We then re-read
//!   the word and, if `kill(tid, 0)` also finds its thread dead, rewrite it as the kernel's
//!   robust-futex exit handling would (`CAS(word -> FUTEX_OWNER_DIED | waiters bit)`, thread id
//!   cleared); the next `FUTEX_LOCK_PI` takes such a lock atomically in the kernel, so two
//!   contenders never both win, and a word that moved on to a live holder is never touched.
//!   If the holder died while others were queued in the kernel, the kernel hands the lock to
//!   one of them; until that one has written its tid, `FUTEX_LOCK_PI` answers `EINVAL` to
//!   newcomers, who yield and retry. Every retry is bounded by the deadline.
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
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use rustix::io::Errno;
use rustix::thread::futex;

/// The bits of the lock word that hold the owner's thread id.
const TID_MASK: u32 = 0x3fff_ffff;

/// How many times `lock` re-reads a busy word before it asks the kernel to wait.
const SPIN_LIMIT: u32 = 400;

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
    // Spin a little while a live holder finishes its copy: a `set` holds the lock for a few
    // hundred nanoseconds, far less than two system calls and a cross-core wake-up. Stop as
    // soon as the kernel has queued waiters (then it hands over in order) or the word stays
    // busy (a dead holder's word never becomes 0: the slow path below deals with it).
    for _ in 0..SPIN_LIMIT {
        let seen = word.load(Ordering::Relaxed);
        if seen == 0 {
            if word
                .compare_exchange(0, tid, Ordering::Acquire, Ordering::Relaxed)
                .is_ok()
            {
                return Ok(Guard { word, tid });
            }
        } else if seen & futex::WAITERS != 0 {
            break;
        }
        std::hint::spin_loop();
    }
    let deadline = realtime_deadline(timeout);
    let mut retries = 0u32;
    loop {
        match futex::lock_pi(word, futex::Flags::empty(), Some(&deadline)) {
            Ok(()) => return Ok(Guard { word, tid }),
            Err(Errno::SRCH) => {
                // The kernel found no thread with the id it read from the word. Re-read it (it
                // may have moved on to a live holder since) and, if the thread it names is dead
                // for `kill(tid, 0)` too, mark the word the way the kernel's robust-futex exit
                // handling does: thread id cleared, `FUTEX_OWNER_DIED` set, `FUTEX_WAITERS`
                // kept. The next `FUTEX_LOCK_PI` (ours or a rival's) then takes the lock
                // atomically in the kernel, so two takers can never both win.
                let seen = word.load(Ordering::Relaxed);
                let holder = seen & TID_MASK;
                if holder == tid {
                    return Err(LockError::Corrupt(seen));
                }
                if holder != 0 && !thread_alive(holder) {
                    let dead = (seen & futex::WAITERS) | futex::OWNER_DIED;
                    let _ = word.compare_exchange(seen, dead, Ordering::Relaxed, Ordering::Relaxed);
                }
                if past(&deadline) {
                    return Err(LockError::Timeout);
                }
                backoff(&mut retries);
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
                backoff(&mut retries);
            }
            Err(Errno::DEADLK) => return Err(LockError::Corrupt(word.load(Ordering::Relaxed))),
            Err(Errno::INTR) | Err(Errno::AGAIN) => {
                if past(&deadline) {
                    return Err(LockError::Timeout);
                }
            }
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

/// Whether thread `tid` is alive: it exists (`kill(tid, 0)`; `EPERM` means it exists but
/// belongs to another user) and is not a zombie waiting to be reaped (`/proc/<tid>/stat`),
/// which `kill` still finds but which will never unlock anything.
fn thread_alive(tid: u32) -> bool {
    let Some(pid) = i32::try_from(tid)
        .ok()
        .and_then(rustix::process::Pid::from_raw)
    else {
        return false;
    };
    if matches!(rustix::process::test_kill_process(pid), Err(Errno::SRCH)) {
        return false;
    }
    match std::fs::read_to_string(format!("/proc/{tid}/stat")) {
        // The state is the first field after the command name, which ends with the last ')'.
        Ok(stat) => !matches!(
            stat.rsplit_once(')')
                .map(|(_, rest)| rest.trim_start().as_bytes().first()),
            Some(Some(b'Z' | b'X'))
        ),
        Err(_) => true, // no /proc: trust `kill`
    }
}

/// Between retries of a state the kernel is still sorting out (a hand-over in progress, a
/// holder still exiting) or that a peer wrote: yield a few times, then sleep briefly, so as not
/// to hammer the kernel until the deadline.
fn backoff(retries: &mut u32) {
    *retries += 1;
    if *retries < 16 {
        std::thread::yield_now();
    } else {
        std::thread::sleep(std::time::Duration::from_micros(200));
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

thread_local! {
    /// (fork generation, tid) of this thread, to avoid a `gettid` system call per `set`.
    static TID: Cell<(u64, u32)> = const { Cell::new((u64::MAX, 0)) };
}

/// This thread's kernel thread id, cached per thread and refreshed after `fork`.
pub(crate) fn current_tid() -> u32 {
    crate::fork::install();
    let generation = crate::fork::FORK_GENERATION.load(Ordering::Relaxed);
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
    fn a_dead_holder_is_taken_over_even_with_a_stale_waiters_bit() {
        let dead = std::thread::spawn(current_tid).join().unwrap();
        for stale in [dead, dead | futex::WAITERS, dead | futex::OWNER_DIED] {
            let word = AtomicU32::new(stale);
            let g = lock(&word, Duration::from_secs(5)).expect("takes over a dead holder");
            assert_eq!(word.load(Ordering::Relaxed) & TID_MASK, current_tid());
            drop(g);
            assert_eq!(word.load(Ordering::Relaxed), 0);
        }
    }

    #[test]
    fn a_holder_that_died_but_is_not_reaped_yet_is_taken_over() {
        // SAFETY: the child only calls `_exit`, which is async-signal-safe.
        let pid = unsafe { libc::fork() };
        assert!(pid >= 0);
        if pid == 0 {
            // SAFETY: ends the child at once.
            unsafe { libc::_exit(0) };
        }
        // Wait until it is a zombie (exited, not reaped), without reaping it.
        // SAFETY: `siginfo_t` is plain data; WNOWAIT leaves the child a zombie.
        unsafe {
            let mut info: libc::siginfo_t = std::mem::zeroed();
            libc::waitid(
                libc::P_PID,
                pid as libc::id_t,
                &mut info,
                libc::WEXITED | libc::WNOWAIT,
            );
        }
        let word = AtomicU32::new(pid as u32);
        let g = lock(&word, Duration::from_secs(5)).expect("takes over a zombie holder");
        drop(g);
        // SAFETY: reaps our own child.
        unsafe { libc::waitpid(pid, std::ptr::null_mut(), 0) };
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
