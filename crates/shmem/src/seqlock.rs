//! The value protocol: a double-buffered seqlock with wake-ups, free of system calls.
//!
//! `value.rs` lays these structures over a mapped segment and supplies the copies and the
//! futex; this file holds every atomic operation and ordering of the protocol, so that the
//! loom model checks (`tests/loom_value.rs`, `--cfg loom`) run exactly this code.
//!
//! # Shared state (one control line, two slot lines)
//!
//! - `version`: the last published version; 0 before the first `set`. Written by the writer
//!   holding the lock (Release), read by everyone (Acquire).
//! - `wake`: futex word bumped after every publish (and by `wake_waiters`); waiters sleep on it.
//! - `sleepers`: a "may sleep" flag. A waiter sets it before it sleeps; the first publisher that
//!   finds it set clears it and makes the one `FUTEX_WAKE` call. A waiter killed while asleep
//!   therefore costs later `set`s at most one wake-up, never a syscall per `set` forever. (A
//!   value whose header says `WakePolicy::EveryPublish` wakes at every publish whatever the
//!   flag: its read-only waiters cannot set it; see the unannounced waiter below.)
//! - `lock`: the writers' lock word (`wlock.rs`); `claims`: the counter writers' liveness
//!   tokens are drawn from (`fork::writer_token`).
//! - `hold_off`: how many readers failed a pass and ask writers to pause (below).
//! - per slot: `seq` (odd while being written, only grows), `version` (which version the slot
//!   holds), `len`.
//!
//! # Writer (holding the lock)
//! 1. `next = version + 1`, slot `s = next & 1`: never the published slot.
//! 2. `seq[s]` made odd and larger (`+1`, or `+2` if a writer died there leaving it odd),
//!    Relaxed, then a Release fence, so no reader can see the new bytes with the old `seq`.
//! 3. `version[s] = next`, `len[s]`, the bytes.
//! 4. `seq[s] += 1` (Release): the slot is complete.
//! 5. `version = next` (Release), `wake += 1` (Release), unlock, SeqCst fence, then if
//!    `sleepers` is set (or the value is `EveryPublish`), swap it to 0 and wake every sleeper.
//!
//! # Reader (no lock)
//! 1. `v = version` (Acquire), `s = v & 1`, `q1 = seq[s]` (Acquire); odd means a writer is in
//!    the slot: retry.
//! 2. `version[s] == v` and `len[s] <= capacity`, else retry (a writer died after filling the
//!    slot but before publishing; or garbage from a peer).
//! 3. copy, Acquire fence, `q2 = seq[s]` (Relaxed); `q2 == q1` means nobody touched the slot.
//!
//! A writer only writes the slot of the next version, so a reader of version `v` can only be
//! disturbed by the writer of `v + 2`, and then `seq` has moved. A killed writer leaves the
//! published slot untouched.
//!
//! # Bounded readers under a flat-out writer
//! A reader that copies slower than a writer publishes would be disturbed at every pass (the
//! `set` of `v + 2` reuses its slot). After one failed pass a reader with write access
//! increments `hold_off`; a writer that finds `hold_off != 0` before step 2 waits until it is 0
//! or a bounded pause passes, then resets it to 0 and goes on (so a reader that died asking
//! costs one pause, once). While the writer waits, the published slot stays still, so the
//! reader's next pass succeeds. The reader decrements (saturating) when it is done.
//!
//! # Waiter
//! `sleepers = 1` (SeqCst swap), SeqCst fence, `w = wake` (Acquire), re-read `version`; sleep
//! on `wake` only if it is still `since`. With the writer's step 5 this is Dekker's pattern:
//! either the writer's load after its fence sees the flag and wakes, or the waiter's loads
//! after its fence see the new version (and `wake`, bumped after it) and do not sleep; a
//! waiter that read `wake` before the bump finds the futex word changed and returns at once.
//!
//! An unannounced waiter (a read-only handle, on an `EveryPublish` segment only) skips the flag:
//! `w = wake` (Acquire), then re-read `version` (Acquire), both in [`check_unannounced`], which
//! says why no wake-up is lost; sleep on `wake` only if it is still `since`. A map's read-only
//! waiters do the same on its control line, for `wait_any` and for one key alike.

use crate::sync::LoadAcquire;
use crate::sync::{fence, AtomicU32, AtomicU64, Ordering};

/// The control line of a value.
#[repr(C)]
#[derive(Debug)]
pub struct Control {
    /// The last published version (0 = nothing set yet).
    pub version: AtomicU64,
    /// Futex word: bumped after every publish and by `wake_waiters`.
    pub wake: AtomicU32,
    /// Set by a waiter about to sleep; cleared by the publisher that wakes them.
    pub sleepers: AtomicU32,
    /// The writers' lock (`wlock.rs`).
    pub lock: AtomicU32,
    /// Counter that writers' liveness tokens are drawn from.
    pub claims: AtomicU32,
    /// Readers that failed a pass and ask writers to pause.
    pub hold_off: AtomicU32,
    _pad: [AtomicU32; 9],
}

/// The metadata line of one slot.
#[repr(C)]
#[derive(Debug)]
pub struct SlotMeta {
    /// Odd while a writer is in the slot; only grows.
    pub seq: AtomicU64,
    /// The version the slot holds.
    pub version: AtomicU64,
    /// The length of the value in the slot.
    pub len: AtomicU64,
    _pad: [AtomicU64; 5],
}

#[cfg(not(loom))]
const _: () = assert!(std::mem::size_of::<Control>() == 64);
#[cfg(not(loom))]
const _: () = assert!(std::mem::size_of::<SlotMeta>() == 64);

impl Default for Control {
    fn default() -> Control {
        Control {
            version: AtomicU64::new(0),
            wake: AtomicU32::new(0),
            sleepers: AtomicU32::new(0),
            lock: AtomicU32::new(0),
            claims: AtomicU32::new(0),
            hold_off: AtomicU32::new(0),
            _pad: std::array::from_fn(|_| AtomicU32::new(0)),
        }
    }
}

impl Default for SlotMeta {
    fn default() -> SlotMeta {
        SlotMeta {
            seq: AtomicU64::new(0),
            version: AtomicU64::new(0),
            len: AtomicU64::new(0),
            _pad: std::array::from_fn(|_| AtomicU64::new(0)),
        }
    }
}

/// Whether a publish must wake sleepers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Wake {
    /// Somebody may sleep on `wake`: make the `FUTEX_WAKE` call.
    Sleepers,
    /// Nobody sleeps: no system call.
    Nobody,
}

/// How a writer's wait for hold-off readers ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HoldOff {
    /// No reader asked.
    Clear,
    /// Readers asked, and finished within the pause.
    Waited,
    /// The pause ran out (a reader died or stalls): the request was reset.
    Reset,
}

/// A slot being written: what [`begin_write`] chose, for [`end_write`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Ticket {
    /// The slot to fill.
    pub slot: usize,
    /// The version being written.
    pub next: u64,
    odd: u64,
}

/// Writer steps 1-3 up to the bytes, with the lock held: picks the slot of the next version,
/// makes its sequence odd and stores its version and length.
pub fn begin_write(ctrl: &Control, metas: &[SlotMeta; 2], len: u64) -> Ticket {
    let next = ctrl.version.load(Ordering::Relaxed).wrapping_add(1);
    let slot = (next & 1) as usize;
    let meta = &metas[slot];
    let q = meta.seq.load(Ordering::Relaxed);
    let odd = if q & 1 == 0 {
        q.wrapping_add(1)
    } else {
        q.wrapping_add(2)
    };
    meta.seq.store(odd, Ordering::Relaxed);
    fence(Ordering::Release);
    meta.version.store(next, Ordering::Relaxed);
    meta.len.store(len, Ordering::Relaxed);
    Ticket { slot, next, odd }
}

/// Writer step 4, once the bytes are in: the slot is complete (not yet published).
pub fn end_write(metas: &[SlotMeta; 2], t: Ticket) -> u64 {
    metas[t.slot]
        .seq
        .store(t.odd.wrapping_add(1), Ordering::Release);
    t.next
}

/// Writer steps 1-4: fills the next slot through `fill(slot)` and returns its version, not
/// yet published. A `fill` that unwinds leaves the slot odd and unpublished, as a crash does.
pub fn write(ctrl: &Control, metas: &[SlotMeta; 2], len: u64, fill: impl FnOnce(usize)) -> u64 {
    let t = begin_write(ctrl, metas, len);
    fill(t.slot);
    end_write(metas, t)
}

/// Writer step 5, first half, with the lock held: makes `next` the published version.
pub fn publish(ctrl: &Control, next: u64) {
    ctrl.version.store(next, Ordering::Release);
    ctrl.wake.fetch_add(1, Ordering::Release);
}

/// Writer step 5, second half, after unlocking: whether to wake sleepers. Clears the flag
/// when it is set, so a sleeper that died costs one wake-up at most.
pub fn after_publish(ctrl: &Control) -> Wake {
    fence(Ordering::SeqCst);
    take_sleepers(&ctrl.sleepers)
}

/// After a publisher's SeqCst fence (`after_publish`): whether the channel whose may-sleep
/// flag is `sleepers` has sleepers to wake. Clears the flag when it is set, so a sleeper that
/// died costs one wake-up at most. (A map's wait buckets are channels too: `map/protocol.rs`.)
pub fn take_sleepers(sleepers: &AtomicU32) -> Wake {
    if sleepers.load(Ordering::Relaxed) != 0 && sleepers.swap(0, Ordering::Relaxed) != 0 {
        Wake::Sleepers
    } else {
        Wake::Nobody
    }
}

/// Before writer step 2: waits while readers ask to hold off, until `expired()` says the
/// bounded pause is over.
pub fn honour_hold_off(ctrl: &Control, mut expired: impl FnMut() -> bool) -> HoldOff {
    if ctrl.hold_off.load(Ordering::Relaxed) == 0 {
        return HoldOff::Clear;
    }
    loop {
        if ctrl.hold_off.load(Ordering::Relaxed) == 0 {
            return HoldOff::Waited;
        }
        if expired() {
            ctrl.hold_off.store(0, Ordering::Relaxed);
            return HoldOff::Reset;
        }
        crate::sync::spin_hint();
    }
}

/// A reader asks writers to pause (after a failed pass).
pub fn ask_hold_off(ctrl: &Control) {
    ctrl.hold_off.fetch_add(1, Ordering::Relaxed);
}

/// Whether the hold-off request is still standing (a writer may have reset it).
pub fn hold_off_standing(ctrl: &Control) -> bool {
    ctrl.hold_off.load(Ordering::Relaxed) != 0
}

/// A reader withdraws `n` requests (saturating: a writer may have reset them).
pub fn end_hold_off(ctrl: &Control, n: u32) {
    if n > 0 {
        let _ = ctrl
            .hold_off
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |h| {
                Some(h.saturating_sub(n))
            });
    }
}

/// The result of one reader pass.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Pass {
    /// A consistent value of `len` bytes at `version` was copied.
    Copied {
        /// Its length.
        len: usize,
        /// Its version.
        version: u64,
    },
    /// A consistent value of `needed` bytes did not fit the caller's buffer; nothing copied.
    TooSmall {
        /// The value's length.
        needed: usize,
    },
    /// The slot moved or was inconsistent; `seen` is (version, sequence) for stuck detection.
    Retry {
        /// The version and slot sequence this pass saw.
        seen: (u64, u64),
    },
}

/// One reader pass (steps 1-3). `copy(slot, len)` copies `len` bytes of slot `slot` out and
/// returns `false` (copying nothing) when the caller's buffer is too small. `capacity` is what
/// this process mapped per slot: a larger `len` from the segment is never used.
#[inline(always)]
pub fn read(
    ctrl: &Control,
    metas: &[SlotMeta; 2],
    capacity: u64,
    copy: impl FnOnce(usize, usize) -> bool,
) -> Pass {
    let v = ctrl.version.load_acquire();
    let s = (v & 1) as usize;
    let meta = &metas[s];
    let q1 = meta.seq.load_acquire();
    let retry = Pass::Retry { seen: (v, q1) };
    if q1 & 1 != 0 {
        return retry;
    }
    let slot_version = meta.version.load(Ordering::Relaxed);
    let len = meta.len.load(Ordering::Relaxed);
    if slot_version != v || len > capacity {
        return retry;
    }
    let len = len as usize;
    let copied = copy(s, len);
    fence(Ordering::Acquire);
    if meta.seq.load(Ordering::Relaxed) != q1 {
        return retry;
    }
    if copied {
        Pass::Copied { len, version: v }
    } else {
        Pass::TooSmall { needed: len }
    }
}

/// The waiter's half of Dekker's pattern on any channel (a wake word and its may-sleep
/// flag): set the flag (SeqCst swap), SeqCst fence, read the word. The caller then re-checks
/// its condition (loads after the fence) and sleeps on the word only while it holds the value
/// returned.
pub fn announce(sleepers: &AtomicU32, wake: &AtomicU32) -> u32 {
    sleepers.swap(1, Ordering::SeqCst);
    fence(Ordering::SeqCst);
    wake.load_acquire()
}

/// What [`check_unannounced`] found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Unannounced<T> {
    /// The condition holds: no sleep.
    Changed(T),
    /// Sleep on the control line's `wake` while it holds this value.
    Sleep(u32),
}

/// The waiter's half for a waiter that cannot write (a read-only handle), announcing nothing:
/// read the control line's `wake` (Acquire), *then* check the condition with `changed`, whose
/// loads start with `version` (a value's version, or a map reader's pass, which starts with
/// the map version); `Sleep(word)` if it still reports no change (`Writer::wait_unannounced`
/// sleeps on `wake` while it holds `word`). Sound only where every publish wakes
/// (`WakePolicy::EveryPublish`): if the condition still holds, the `wake` read came before
/// the bump of the publish that would end it (the bump is Release after the version store,
/// and a `wake` load that saw it would make the version store visible to the loads after
/// it), so a sleep on that value either fails at once (the bump came meanwhile) or is queued
/// before the bump and woken by the publisher's unconditional wake-up after it. The order of
/// the two steps is the whole argument, which is why they are one function, the one the loom
/// models run.
#[cfg_attr(not(target_os = "linux"), allow(dead_code))]
pub fn check_unannounced<T, E>(
    ctrl: &Control,
    changed: impl FnOnce() -> Result<Option<T>, E>,
) -> Result<Unannounced<T>, E> {
    let word = ctrl.wake.load_acquire();
    Ok(match changed()? {
        Some(v) => Unannounced::Changed(v),
        None => Unannounced::Sleep(word),
    })
}

/// Bumps a channel's wake word (Release): after a publish that concerns the channel, and
/// to wake waiters without a new version (cancellation), before waking its sleepers.
pub fn bump_wake(wake: &AtomicU32) {
    wake.fetch_add(1, Ordering::Release);
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    fn state() -> (Control, [SlotMeta; 2]) {
        (
            Control::default(),
            [SlotMeta::default(), SlotMeta::default()],
        )
    }

    #[test]
    fn a_sleeper_that_died_costs_one_wake_then_none() {
        let (ctrl, metas) = state();
        assert_eq!(announce(&ctrl.sleepers, &ctrl.wake), 0); // and then it is killed
        for expected in [Wake::Sleepers, Wake::Nobody, Wake::Nobody] {
            let next = write(&ctrl, &metas, 0, |_| {});
            publish(&ctrl, next);
            assert_eq!(after_publish(&ctrl), expected);
        }
    }

    #[test]
    fn a_writer_that_died_mid_slot_is_repaired_by_the_next() {
        let (ctrl, metas) = state();
        let t = begin_write(&ctrl, &metas, 3); // dies here: slot 1 odd, nothing published
        assert_eq!(metas[1].seq.load(Ordering::Relaxed) & 1, 1);
        let read_now = || read(&ctrl, &metas, 64, |_, _| true);
        assert_eq!(read_now(), Pass::Copied { len: 0, version: 0 });
        let next = write(&ctrl, &metas, 5, |slot| assert_eq!(slot, t.slot));
        publish(&ctrl, next);
        assert_eq!(metas[1].seq.load(Ordering::Relaxed), 4);
        assert_eq!(read_now(), Pass::Copied { len: 5, version: 1 });
    }

    #[test]
    fn hold_off_is_waited_for_and_reset_when_the_pause_runs_out() {
        let (ctrl, _) = state();
        assert_eq!(honour_hold_off(&ctrl, || unreachable!()), HoldOff::Clear);
        ask_hold_off(&ctrl);
        let mut spins = 0;
        assert_eq!(
            honour_hold_off(&ctrl, || {
                spins += 1;
                spins > 3
            }),
            HoldOff::Reset
        );
        assert!(!hold_off_standing(&ctrl));
        end_hold_off(&ctrl, 1); // saturates at 0 after the reset
        assert_eq!(ctrl.hold_off.load(Ordering::Relaxed), 0);
        ask_hold_off(&ctrl);
        let mut first = true;
        assert_eq!(
            honour_hold_off(&ctrl, || {
                if first {
                    end_hold_off(&ctrl, 1); // the reader finishes during the pause
                    first = false;
                }
                false
            }),
            HoldOff::Waited
        );
    }

    #[test]
    fn lengths_beyond_the_capacity_are_never_copied() {
        let (ctrl, metas) = state();
        let next = write(&ctrl, &metas, 1 << 40, |_| {});
        publish(&ctrl, next);
        let mut copied = false;
        let pass = read(&ctrl, &metas, 64, |_, _| {
            copied = true;
            true
        });
        assert!(matches!(pass, Pass::Retry { .. }));
        assert!(!copied);
    }
}
