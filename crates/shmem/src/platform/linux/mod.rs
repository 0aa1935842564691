//! Linux: the writers' liveness witnesses are OFD locks of bytes far past the data (held on a
//! description that `fork.rs` keeps per process), sleeping is a futex on the lock word or on
//! a channel's `wake` word (the futex itself tells channels apart: one word each); a
//! read-only waiter sleeps with `futex_waitv` on `wake` and its handle's private cancel word.
//! Nothing is appended to the value or map layout.

use std::os::fd::{AsRawFd, BorrowedFd};
use std::time::Duration;

pub(crate) mod fork;
pub(crate) mod segment;
pub(crate) mod sys;

use self::fork::ClaimError;
use self::segment::Segment;
use self::sys::ByteLock;
use crate::error::{Error, Result};
use crate::sync::LoadAcquire;
use crate::sync::{AtomicU32, Ordering};
use crate::wlock::{self, Holder};

/// No waiter table: the futex carries `wait_changed`.
pub(crate) const TRAILER_LEN: usize = 0;

/// The fork generation a cached writer token was claimed under.
pub(crate) fn generation() -> u32 {
    fork::generation() as u32
}

/// A writer's Linux state beyond the segment's descriptor: the cancel counter of its
/// read-only waiters.
///
/// A waiter on a read-only handle cannot announce itself (`sleepers`) nor be woken through the
/// segment by its own process (`wake_waiters` would have to bump the shared `wake` word). So it
/// sleeps with `futex_waitv` on two words: the segment's `wake` (publishers of a
/// `WakePolicy::EveryPublish` value wake it at every publish) and `cancel`, a private word of
/// this handle that `wake_local` bumps and wakes. It reads `cancel` before it checks its
/// cancel flag, so a cancel that comes after that check changes the word it sleeps on: no
/// lost wake-up.
#[derive(Debug)]
pub(crate) struct WriterSys {
    cancel: AtomicU32,
}

impl WriterSys {
    pub(crate) fn new(_seg: &Segment) -> Result<WriterSys> {
        Ok(WriterSys {
            cancel: AtomicU32::new(0),
        })
    }

    /// The lock's kernel side for this segment.
    pub(crate) fn park<'a>(&'a self, seg: &'a Segment) -> Park<'a> {
        Park { fd: seg.lock_fd() }
    }

    /// Claims this handle's writer token (`fork::writer_token`): the OFD lock of its byte.
    pub(crate) fn claim_token(&self, seg: &Segment, claims: &AtomicU32) -> Result<u32> {
        let fd = seg.lock_fd().as_raw_fd();
        fork::writer_token(fd, claims).map_err(|e| {
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
        })
    }

    /// A waiter sleeps on its channel's `wake` futex word: nothing to register.
    pub(crate) fn sleeper<'a>(
        &'a self,
        seg: &'a Segment,
        _trailer: usize,
        _channel: u32,
    ) -> Result<Sleeper<'a>> {
        Ok(Sleeper {
            name: seg.name(),
            cancel: &self.cancel,
        })
    }

    /// `FUTEX_WAKE` of every sleeper on the channel's word `wake`.
    pub(crate) fn wake(&self, _seg: &Segment, _trailer: usize, wake: &AtomicU32, _channel: u32) {
        sys::futex_wake(wake, i32::MAX as u32);
    }

    /// `FUTEX_WAKE` of every sleeper on each of `words` (every channel of the segment).
    pub(crate) fn wake_all(&self, _seg: &Segment, _trailer: usize, words: &[&AtomicU32]) {
        for w in words {
            sys::futex_wake(w, i32::MAX as u32);
        }
    }

    /// Wakes this handle's read-only waiters, which then re-check their cancel flag: bumps the
    /// private `cancel` word and wakes it. Writes nothing in the segment.
    pub(crate) fn wake_local(&self) {
        self.cancel.fetch_add(1, Ordering::Release);
        sys::futex_wake_private(&self.cancel, i32::MAX as u32);
    }
}

/// One `wait_changed` call's sleeping side.
#[derive(Debug)]
pub(crate) struct Sleeper<'a> {
    name: &'a str,
    cancel: &'a AtomicU32,
}

impl Sleeper<'_> {
    /// `FUTEX_WAIT(wake, w, remaining)`: returns on a wake-up, a changed word or the timeout.
    pub(crate) fn wait(&self, wake: &AtomicU32, w: u32, remaining: Option<Duration>) -> Result<()> {
        sys::futex_wait(wake, w, remaining).map_err(|e| Error::Io {
            name: self.name.to_owned(),
            op: "futex(FUTEX_WAIT)",
            source: e.into(),
        })
    }

    /// The cancel counter, read before a read-only waiter checks its cancel flag.
    pub(crate) fn cancel_seen(&self) -> u32 {
        self.cancel.load_acquire()
    }

    /// A read-only waiter's sleep (see [`WriterSys`]): `futex_waitv` on the segment's `wake`
    /// (still `w`) and this handle's cancel word (still `cancel_seen`).
    pub(crate) fn wait_unannounced(
        &self,
        wake: &AtomicU32,
        w: u32,
        cancel_seen: u32,
        remaining: Option<Duration>,
    ) -> Result<()> {
        sys::futex_wait_either(wake, w, self.cancel, cancel_seen, remaining).map_err(|e| match e {
            rustix::io::Errno::NOSYS => Error::Unsupported {
                name: self.name.to_owned(),
                what: "waiting on a read-only handle (it needs futex_waitv, Linux 5.16 or later)",
            },
            e => Error::Io {
                name: self.name.to_owned(),
                op: "futex_waitv",
                source: e.into(),
            },
        })
    }
}

/// The kernel's side of the writers' lock for one segment: liveness from the witness bytes'
/// OFD locks, sleeping on the futex.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Park<'a> {
    fd: BorrowedFd<'a>,
}

impl wlock::Park for Park<'_> {
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
