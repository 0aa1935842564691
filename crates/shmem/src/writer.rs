//! The writer's and the waiter's machinery shared by [`crate::Value`] and [`crate::Map`]: the
//! cached writer token, the kernel's side of the writers' lock (`Kernel`), taking the lock,
//! waking after a publish, waiting for the version to move, and a reader's retry state.
//!
//! Both structures keep a `seqlock::Control` line at offset 64 of the segment: its `lock` and
//! `claims` words are the writers' lock (`wlock.rs`), its `version`, `wake` and `sleepers` are
//! what waits sleep on. The protocols are stated in `wlock.rs` and `seqlock.rs`; this file only
//! makes the system calls (futex, `F_OFD_GETLK`) and turns outcomes into [`Error`]s.
//!
//! A writer's identity is a *token* claimed at its handle's first write (`fork::writer_token`):
//! the OFD lock of one byte far past the data, held on a description that is never mapped, so
//! the kernel releases it when the handle's process exits, execs or crashes. The token is cached
//! per handle with the fork generation it was claimed under, so a write costs no system call.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crate::error::{Error, Result};
use crate::fork::{self, ClaimError};
pub(crate) use crate::retry::{ask_hold_off, Backoff};
use crate::segment::Segment;
use crate::seqlock::{self, Control, Sleep, Wake};
use crate::sync::AtomicU32;
use crate::sys::{self, ByteLock};
use crate::wlock::{self, Holder, LockError, Park};

/// How long a writer waits for the lock by default.
pub(crate) const DEFAULT_LOCK_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a wait watches the version before sleeping, by default (docs/BENCHMARKS.md has the
/// measurements behind it).
pub(crate) const DEFAULT_WAIT_SPIN: Duration = Duration::from_micros(20);
/// How many times a writer re-reads a busy lock word before it sleeps on it.
const SPIN_LIMIT: u32 = 400;
/// The shortest pause a writer makes for readers that asked to hold off; callers add one
/// nanosecond per byte a reader may copy, so that the slowest reader's copy fits.
pub(crate) const HOLD_OFF_BASE: Duration = Duration::from_micros(50);

/// A handle's writer token with the fork generation it was claimed under
/// (`generation << 32 | token`), 0 before the first write.
#[derive(Debug, Default)]
pub(crate) struct WriterToken(AtomicU64);

impl WriterToken {
    /// This handle's token: cached, or claimed on the first write (and the first after a fork,
    /// whose child must not write under its parent's witness).
    pub(crate) fn get(&self, seg: &Segment, ctrl: &Control) -> Result<u32> {
        let generation = fork::generation() as u32;
        let cached = self.0.load(Ordering::Relaxed);
        if cached != 0 && (cached >> 32) as u32 == generation {
            return Ok(cached as u32);
        }
        let fd = std::os::fd::AsRawFd::as_raw_fd(&seg.lock_fd());
        let token = fork::writer_token(fd, &ctrl.claims).map_err(|e| {
            let name = seg.name().to_owned();
            match e {
                ClaimError::Sys(op, errno) => Error::Io {
                    name,
                    op,
                    source: errno.into(),
                },
                ClaimError::Unregistered => Error::Io {
                    name,
                    op: "claim the writer's liveness witness",
                    source: std::io::Error::other("this process holds too many segments"),
                },
                ClaimError::Exhausted => Error::Corrupt {
                    name,
                    reason: "no free writer token: the token counter keeps naming live writers"
                        .into(),
                },
            }
        })?;
        self.0.store(
            (u64::from(generation) << 32) | u64::from(token),
            Ordering::Relaxed,
        );
        Ok(token)
    }
}

/// Takes the writers' lock of `ctrl` (in `seg`) under this handle's token.
pub(crate) fn lock<'a>(
    seg: &'a Segment,
    ctrl: &'a Control,
    token: &WriterToken,
    timeout: Duration,
) -> Result<wlock::Guard<'a, Kernel<'a>>> {
    let me = token.get(seg, ctrl)?;
    let park = Kernel { fd: seg.lock_fd() };
    wlock::lock(&ctrl.lock, me, timeout, SPIN_LIMIT, park).map_err(|e| match e {
        LockError::Timeout => Error::Timeout {
            name: seg.name().to_owned(),
            what: "the writers' lock",
            timeout,
        },
    })
}

/// With the lock held, before touching anything readers may read: pauses (at most
/// `HOLD_OFF_BASE + copy_bytes` ns) for readers that asked writers to hold off.
pub(crate) fn honour_hold_off(ctrl: &Control, copy_bytes: usize) {
    let pause = HOLD_OFF_BASE + Duration::from_nanos(copy_bytes as u64);
    let mut since = None;
    seqlock::honour_hold_off(ctrl, || {
        since.get_or_insert_with(Instant::now).elapsed() > pause
    });
}

/// After a publish and the unlock: wakes sleepers if any may sleep (`seqlock::after_publish`).
pub(crate) fn wake_after_publish(ctrl: &Control) {
    if seqlock::after_publish(ctrl) == Wake::Sleepers {
        sys::futex_wake(&ctrl.wake, i32::MAX as u32);
    }
}

/// Wakes every thread, in every process, that sleeps in a wait on `ctrl`.
pub(crate) fn wake_waiters(ctrl: &Control) {
    seqlock::bump_wake(ctrl);
    sys::futex_wake(&ctrl.wake, i32::MAX as u32);
}

/// What a wait is for, for its error messages.
#[derive(Clone, Copy, Debug)]
pub(crate) struct WaitFor<'a> {
    /// The segment.
    pub name: &'a str,
    /// What is awaited ("a change of value").
    pub what: &'static str,
    /// The timeout the caller gave, for the message.
    pub timeout: Option<Duration>,
    /// How long to watch the version before sleeping.
    pub spin: Duration,
}

/// Sleeps until `ctrl.version` differs from `since` (returns it), `deadline` passes
/// ([`Error::Timeout`]) or `cancelled()` is true (`Ok(None)`, checked before each sleep).
/// Watches the version for `w.spin` first, then sleeps on the `wake` futex (Dekker's pattern
/// with the publisher, `seqlock.rs`).
pub(crate) fn wait_version(
    ctrl: &Control,
    since: u64,
    deadline: Option<Instant>,
    w: WaitFor<'_>,
    cancelled: &impl Fn() -> bool,
) -> Result<Option<u64>> {
    let v = ctrl.version.load(crate::sync::Ordering::Acquire);
    if v != since {
        return Ok(Some(v)); // already changed: no clock read, no system call
    }
    if let Some(v) = spin_for_change(ctrl, since, deadline, w.spin, cancelled) {
        return Ok(Some(v));
    }
    loop {
        if cancelled() {
            return Ok(None);
        }
        let remaining = match deadline {
            None => None,
            Some(d) => match d.checked_duration_since(Instant::now()) {
                Some(r) if !r.is_zero() => Some(r),
                _ => {
                    return Err(Error::Timeout {
                        name: w.name.to_owned(),
                        what: w.what,
                        timeout: w.timeout.unwrap_or_default(),
                    })
                }
            },
        };
        let word = match seqlock::prepare_sleep(ctrl, since) {
            Sleep::Changed(v) => return Ok(Some(v)),
            Sleep::On(word) => word,
        };
        if cancelled() {
            return Ok(None);
        }
        sys::futex_wait(&ctrl.wake, word, remaining).map_err(|e| Error::Io {
            name: w.name.to_owned(),
            op: "futex(FUTEX_WAIT)",
            source: e.into(),
        })?;
        let v = ctrl.version.load(crate::sync::Ordering::Acquire);
        if v != since {
            return Ok(Some(v));
        }
    }
}

/// Watches the version for the spin window (bounded by the deadline), checking the cancel flag
/// now and then; returns the new version if it moved.
fn spin_for_change(
    ctrl: &Control,
    since: u64,
    deadline: Option<Instant>,
    spin: Duration,
    cancelled: &impl Fn() -> bool,
) -> Option<u64> {
    if spin.is_zero() {
        return None;
    }
    let end = Instant::now() + spin;
    let end = deadline.map_or(end, |d| d.min(end));
    for i in 1u32.. {
        let v = ctrl.version.load(crate::sync::Ordering::Acquire);
        if v != since {
            return Some(v);
        }
        if i % 64 == 0 && (cancelled() || Instant::now() >= end) {
            return None;
        }
        std::hint::spin_loop();
    }
    None
}

/// The kernel's side of the writers' lock for one segment: liveness from the witness bytes'
/// OFD locks, sleeping on the futex.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Kernel<'a> {
    fd: std::os::fd::BorrowedFd<'a>,
}

impl Park for Kernel<'_> {
    fn holder(&self, token: u32) -> Holder {
        match sys::ofd_probe(self.fd, fork::WITNESS_BASE + u64::from(token)) {
            Ok(ByteLock::Free) => Holder::Gone,
            // A probe that fails tells nothing: never take a lock on a guess.
            Ok(ByteLock::Held) | Err(_) => Holder::Alive,
        }
    }

    fn sleep(&self, word: &AtomicU32, expected: u32, timeout: Duration) {
        let _ = sys::futex_wait(word, expected, Some(timeout));
    }

    fn wake_one(&self, word: &AtomicU32) {
        sys::futex_wake(word, 1);
    }
}
