//! The writer's and the waiter's machinery of [`crate::Value`] and [`crate::Map`], once, on
//! every platform: the cached writer token, taking the writers' lock with a timeout, the
//! readers' hold-off pause, waking after a publish, `wake_waiters`, and the wait loop (watch
//! for the spin window, then sleep). The kernel's part (witnesses, sleeping, waking) is the
//! platform's, behind `platform/` ([`WriterSys`]); this file makes no system call and no
//! unchecked memory access.
//!
//! Both structures keep a `seqlock::Control` line at offset 64 of the segment: its `lock` and
//! `claims` words are the writers' lock (`wlock.rs`), its `version`, `wake` and `sleepers` are
//! channel 0 of their waits. A map adds wait buckets, channels `1..` (`map.rs`). The protocols
//! are stated in `wlock.rs`, `seqlock.rs` and `map/protocol.rs`.
//!
//! # Channels
//! A [`Channel`] is a wake word, its may-sleep flag and its number. A waiter announces itself
//! on its channel (`seqlock::announce`: flag, SeqCst fence, read the word), re-checks its
//! condition and sleeps on the word only while it holds the value read. A publisher bumps the
//! word of every channel its change concerns (Release), then (after unlocking) makes one SeqCst
//! fence and, per channel, takes the flag (`seqlock::take_sleepers`) and wakes that channel's
//! sleepers only if it was set. Dekker's pattern per channel: either the publisher's flag load
//! sees the waiter, or the waiter's loads after its fence see the change (or the bumped word,
//! which makes its sleep return at once). A dead sleeper costs each of its channels one wake-up.
//!
//! Exceptions, for read-only handles (which cannot write the segment; Linux): a value or map
//! whose header says `WakePolicy::EveryPublish` wakes channel 0 at every publish
//! ([`Writer::wake_after_publish`]; a map's announced bucket channels as usual besides),
//! and its read-only waiters, of a value or of a map (`wait_any` and `wait_changed(key)` alike),
//! do not announce themselves and sleep on channel 0 ([`Writer::wait_unannounced`]); a
//! read-only handle's `wake_waiters` bumps nothing shared and wakes only its own waiters
//! ([`Writer::wake_local`]).
//!
//! # Writer token
//! A writer's identity is a *token* claimed at its handle's first write
//! (`WriterSys::claim_token`): a witness the kernel releases when the handle's process exits or
//! crashes (Linux: the OFD lock of one byte far past the data; Windows: a named event the
//! handle keeps open). It is cached per handle with the fork generation it was claimed under
//! (`platform::generation`), so a write costs no system call.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crate::error::{Error, Result};
use crate::header::WakePolicy;
use crate::platform::{self, Park, WriterSys};
use crate::segment::Segment;
use crate::seqlock::{self, Control, Wake};
use crate::sync::AtomicU32;
use crate::wlock::{self, LockError};

/// How long a writer waits for the lock by default.
pub(crate) const DEFAULT_LOCK_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a wait watches for a change before sleeping, by default (docs/BENCHMARKS.md has
/// the measurements behind it).
pub(crate) const DEFAULT_WAIT_SPIN: Duration = Duration::from_micros(20);
/// How many times a writer re-reads a busy lock word before it sleeps on it.
const SPIN_LIMIT: u32 = 400;
/// The shortest pause a writer makes for readers that asked to hold off; callers add one
/// nanosecond per byte a reader may copy, so that the slowest reader's copy fits.
const HOLD_OFF_BASE: Duration = Duration::from_micros(50);

/// How many times a wait of this process came back from a sleep (a wake-up, spurious or
/// not, or a sleep's timeout): what tests read to check that a waiter is not woken by changes
/// it does not wait for ([`wait_wakeups`]). One Relaxed increment per sleep.
static WAKEUPS: AtomicU64 = AtomicU64::new(0);

/// How many times a wait (`Value::wait_changed`, `Map::wait_changed`, `Map::wait_any`) of
/// this process has come back from sleeping in the kernel. For tests.
#[doc(hidden)]
pub fn wait_wakeups() -> u64 {
    WAKEUPS.load(Ordering::Relaxed)
}

/// A wake word, its may-sleep flag, and the channel's number (0: the control line).
#[derive(Clone, Copy, Debug)]
pub(crate) struct Channel<'a> {
    /// The word sleepers sleep on; bumped by each publish that concerns the channel.
    pub wake: &'a AtomicU32,
    /// Set by a waiter about to sleep, cleared by the publisher that wakes.
    pub sleepers: &'a AtomicU32,
    /// The channel's number, below `platform::MAX_CHANNELS`.
    pub id: u32,
}

impl Channel<'_> {
    /// Channel 0: the control line's `wake` and `sleepers`.
    pub(crate) fn control(ctrl: &Control) -> Channel<'_> {
        Channel {
            wake: &ctrl.wake,
            sleepers: &ctrl.sleepers,
            id: 0,
        }
    }
}

/// Where a segment's waits live: the segment, its control line and the offset of the
/// platform's trailer (`platform::TRAILER_LEN` bytes, checked by the caller at open).
#[derive(Clone, Copy, Debug)]
pub(crate) struct Site<'a> {
    /// The segment.
    pub seg: &'a Segment,
    /// Its control line.
    pub ctrl: &'a Control,
    /// The offset of the platform's trailer in the mapping.
    pub trailer: usize,
}

/// What a wait is for, for its error messages.
#[derive(Clone, Copy, Debug)]
pub(crate) struct WaitFor {
    /// What is awaited ("a change of value").
    pub what: &'static str,
    /// The timeout the caller gave, for the message.
    pub timeout: Option<Duration>,
}

/// One handle's writer: its platform state, its cached token, its lock timeout and wait spin.
#[derive(Debug)]
pub(crate) struct Writer {
    sys: WriterSys,
    /// `generation << 32 | token`, 0 before the first write.
    token: AtomicU64,
    lock_timeout: Duration,
    wait_spin: Duration,
}

impl Writer {
    pub(crate) fn new(
        seg: &Segment,
        lock_timeout: Duration,
        wait_spin: Duration,
    ) -> Result<Writer> {
        Ok(Writer {
            sys: WriterSys::new(seg)?,
            token: AtomicU64::new(0),
            lock_timeout,
            wait_spin,
        })
    }

    /// This handle's writer token: cached, or claimed on the first write (and the first after
    /// a fork, whose child must not write under its parent's witness).
    fn token(&self, seg: &Segment, ctrl: &Control) -> Result<u32> {
        let generation = platform::generation();
        let cached = self.token.load(Ordering::Relaxed);
        if cached != 0 && (cached >> 32) as u32 == generation {
            return Ok(cached as u32);
        }
        let token = self.sys.claim_token(seg, &ctrl.claims)?;
        self.token.store(
            (u64::from(generation) << 32) | u64::from(token),
            Ordering::Relaxed,
        );
        Ok(token)
    }

    /// Takes the writers' lock of `ctrl` (in `seg`) under this handle's token;
    /// [`Error::Timeout`] when a live writer keeps it longer than the lock timeout.
    pub(crate) fn lock<'a>(
        &'a self,
        seg: &'a Segment,
        ctrl: &'a Control,
    ) -> Result<wlock::Guard<'a, Park<'a>>> {
        let me = self.token(seg, ctrl)?;
        let park = self.sys.park(seg);
        wlock::lock(&ctrl.lock, me, self.lock_timeout, SPIN_LIMIT, park).map_err(|e| match e {
            LockError::Timeout => Error::Timeout {
                name: seg.name().to_owned(),
                what: "the writers' lock",
                timeout: self.lock_timeout,
            },
        })
    }

    /// After a publish and the unlock: one SeqCst fence (`seqlock::after_publish`, channel 0),
    /// then each further channel of `more` (already bumped); wakes the sleepers of each channel
    /// whose may-sleep flag was set. On a value or map whose header says
    /// `WakePolicy::EveryPublish` (read-only waiters, which cannot set the flag, may sleep on
    /// channel 0) channel 0 is woken whatever its flag says: one wake call per publish, not
    /// two, unless a bucket waiter of `more` announced itself.
    pub(crate) fn wake_after_publish(&self, at: Site<'_>, more: &[Channel<'_>]) {
        let announced = seqlock::after_publish(at.ctrl) == Wake::Sleepers;
        if announced || at.seg.header().wake == WakePolicy::EveryPublish {
            self.wake(at, Channel::control(at.ctrl));
        }
        for &ch in more {
            if seqlock::take_sleepers(ch.sleepers) == Wake::Sleepers {
                self.wake(at, ch);
            }
        }
    }

    /// Linux: wakes this handle's own read-only waiters through their private cancel word,
    /// writing nothing in the segment (how their waits are cancelled).
    #[cfg(target_os = "linux")]
    pub(crate) fn wake_local(&self) {
        self.sys.wake_local();
    }

    /// The platform's sleeping side of a wait on channel `id` of `at`.
    pub(crate) fn sleeper<'a>(&'a self, at: Site<'a>, id: u32) -> Result<platform::Sleeper<'a>> {
        debug_assert!(id < platform::MAX_CHANNELS);
        self.sys.sleeper(at.seg, at.trailer, id)
    }

    /// Watches `changed()` for the spin window (bounded by `deadline`), checking
    /// `cancelled()` now and then; the version if it moved.
    pub(crate) fn spin(
        &self,
        deadline: Option<Instant>,
        changed: &mut impl FnMut() -> Result<Option<u64>>,
        cancelled: &impl Fn() -> bool,
    ) -> Result<Option<u64>> {
        if self.wait_spin.is_zero() {
            return Ok(None);
        }
        let end = Instant::now() + self.wait_spin;
        let end = deadline.map_or(end, |d| d.min(end));
        for i in 1u32.. {
            if let Some(v) = changed()? {
                return Ok(Some(v));
            }
            if i % 64 == 0 && (cancelled() || Instant::now() >= end) {
                break;
            }
            std::hint::spin_loop();
        }
        Ok(None)
    }

    fn wake(&self, at: Site<'_>, ch: Channel<'_>) {
        self.sys.wake(at.seg, at.trailer, ch.wake, ch.id);
    }

    /// Wakes every thread, in every process, that sleeps in a wait on the segment: bumps the
    /// word of each channel (`words`, the control line's first), then wakes them all. They
    /// re-check their condition (and their cancel flag) and sleep again if nothing changed.
    pub(crate) fn wake_waiters(&self, at: Site<'_>, words: &[&AtomicU32]) {
        for w in words {
            seqlock::bump_wake(w);
        }
        self.sys.wake_all(at.seg, at.trailer, words);
    }

    /// Sleeps on `ch` until `changed()` reports a version (returned), `deadline` passes
    /// ([`Error::Timeout`]) or `cancelled()` is true (`Ok(None)`, checked before each sleep).
    /// Watches `changed()` for the spin window first, then registers with the platform and
    /// sleeps, announcing itself on the channel before each re-check (module docs).
    pub(crate) fn wait(
        &self,
        at: Site<'_>,
        ch: Channel<'_>,
        deadline: Option<Instant>,
        w: WaitFor,
        mut changed: impl FnMut() -> Result<Option<u64>>,
        cancelled: &impl Fn() -> bool,
    ) -> Result<Option<u64>> {
        if let Some(v) = changed()? {
            return Ok(Some(v)); // already changed: no clock read, no system call
        }
        if let Some(v) = self.spin(deadline, &mut changed, cancelled)? {
            return Ok(Some(v));
        }
        let sleeper = self.sleeper(at, ch.id)?;
        loop {
            if cancelled() {
                return Ok(None);
            }
            let remaining = remaining(at, deadline, w)?;
            let word = seqlock::announce(ch.sleepers, ch.wake);
            if let Some(v) = changed()? {
                return Ok(Some(v));
            }
            if cancelled() {
                return Ok(None);
            }
            sleeper.wait(ch.wake, word, remaining)?;
            WAKEUPS.fetch_add(1, Ordering::Relaxed);
            if let Some(v) = changed()? {
                return Ok(Some(v));
            }
        }
    }

    /// Linux: the wait of a read-only handle, which cannot set a may-sleep flag. Watches
    /// `changed()` for the spin window, then sleeps on channel 0 (the control line's `wake`)
    /// and on this handle's private cancel word (`platform/linux/mod.rs`), announcing nothing:
    /// before each re-check of `changed()` it reads `wake` ([`seqlock::check_unannounced`]), and it
    /// sleeps only while `wake` still holds that value and the cancel word what it held before
    /// `cancelled()` was checked. Sound only where every publish wakes channel 0
    /// (`WakePolicy::EveryPublish`, which the caller checks): `changed()`'s Acquire loads
    /// start with the control line's `version` (a value's version; a map reader's pass), so if
    /// it still reports no change, the publish that would make one had not bumped `wake` when
    /// it was read, and the publisher's unconditional wake-up after its bump ends the sleep.
    /// A map's one-key waiter is thus woken by every publish of the map and re-checks its key.
    ///
    /// A segment whose writers wake only announced waiters (`WakePolicy::Announced`) would
    /// leave such a sleep unwoken: unless the change is already there, the wait is refused
    /// with [`Error::PermissionDenied`] naming the segment and `what` it holds ("value",
    /// "map").
    #[cfg(target_os = "linux")]
    pub(crate) fn wait_unannounced(
        &self,
        at: Site<'_>,
        what: &str,
        deadline: Option<Instant>,
        w: WaitFor,
        mut changed: impl FnMut() -> Result<Option<u64>>,
        cancelled: &impl Fn() -> bool,
    ) -> Result<Option<u64>> {
        if let Some(v) = changed()? {
            return Ok(Some(v));
        }
        if at.seg.header().wake != crate::header::WakePolicy::EveryPublish {
            return Err(Error::PermissionDenied {
                name: at.seg.name().to_owned(),
                reason: format!(
                    "a read-only handle cannot announce itself to writers, and this {what}'s \
                     writers wake only announced waiters (its mode gave no one read access \
                     without write access when it was created: WakePolicy::Announced); open \
                     it read-write to wait"
                ),
            });
        }
        if let Some(v) = self.spin(deadline, &mut changed, cancelled)? {
            return Ok(Some(v));
        }
        let sleeper = self.sleeper(at, 0)?;
        loop {
            // Read before the cancel check, so that a cancel after it changes this word.
            let cancel_seen = sleeper.cancel_seen();
            if cancelled() {
                return Ok(None);
            }
            let remaining = remaining(at, deadline, w)?;
            let word = match seqlock::check_unannounced(at.ctrl, &mut changed)? {
                seqlock::Unannounced::Changed(v) => return Ok(Some(v)),
                seqlock::Unannounced::Sleep(word) => word,
            };
            sleeper.wait_unannounced(&at.ctrl.wake, word, cancel_seen, remaining)?;
            WAKEUPS.fetch_add(1, Ordering::Relaxed);
            if let Some(v) = changed()? {
                return Ok(Some(v));
            }
        }
    }
}

/// What is left of a wait's `deadline` (`None`: forever), or the wait's [`Error::Timeout`].
pub(crate) fn remaining(
    at: Site<'_>,
    deadline: Option<Instant>,
    w: WaitFor,
) -> Result<Option<Duration>> {
    match deadline {
        None => Ok(None),
        Some(d) => match d.checked_duration_since(Instant::now()) {
            Some(r) if !r.is_zero() => Ok(Some(r)),
            _ => Err(Error::Timeout {
                name: at.seg.name().to_owned(),
                what: w.what,
                timeout: w.timeout.unwrap_or_default(),
            }),
        },
    }
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
