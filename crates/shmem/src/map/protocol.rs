//! The map's protocol: which copy a reader reads, which a writer writes, and how a writer
//! brings the other copy up to date; every atomic operation and ordering of it, free of system
//! calls and of the mapping, so that the loom model checks (`tests/loom_map.rs`, `--cfg loom`)
//! run exactly this code. `map.rs` supplies the table operations (lookup, upsert, delete,
//! rebuild) over the mapping.
//!
//! # Shared state
//! - the control line (`seqlock::Control`): `version` is the map version (the number of
//!   `set`/`delete` operations published), `wake`/`sleepers` serve waits, `lock`/`claims` the
//!   writers' lock, `hold_off` bounded readers, exactly as for a value.
//! - two copies of the table, each with a [`CopyMeta`] line: `seq` (odd while a writer is in the
//!   copy, only grows), `state` (the map version whose contents the copy holds), `bump` (heap
//!   bytes used), `count` (live keys).
//! - the last-op record (`map.rs`): the version and key of the last operation written.
//! - [`WAIT_BUCKETS`] wait buckets ([`WaitBucket`]: `wake`, `sleepers`), the channels of
//!   `wait_changed(key)`: a key's bucket is [`wait_bucket`] of its tag.
//!
//! # Invariant
//! Published version `v` lives in copy `v & 1` (its `state` is `v`, its `seq` even); no writer
//! ever touches that copy while it is published. The other copy holds `v - 1` (one operation
//! behind) unless a writer died in it.
//!
//! # Writer of `v + 1` (holding the lock)
//! 1. [`plan`]: other copy `o = (v + 1) & 1`; if its `seq` is even and its `state` is `v`,
//!    nothing to do ([`CatchUp::Current`]); if its `state` is `v - 1` and the last-op record
//!    says `v`, replay op `v` into it from the published copy ([`CatchUp::Replay`]); anything
//!    else (a writer died in it, garbage) rebuilds it from the published copy
//!    ([`CatchUp::Rebuild`]), which is stable while we hold the lock.
//! 2. [`begin`]: `seq[o]` odd (+1, or +2 if odd already), Relaxed, then a Release fence: no
//!    reader can see the new bytes with the old `seq`. Catch up, apply op `v + 1`.
//! 3. [`finish`]: `state[o] = v + 1` (or `v` when the op changed nothing: a full map, a
//!    delete of a missing key), then `seq[o]` even (Release).
//! 4. write the last-op record, then [`publish_op`]: [`seqlock::publish`] `v + 1` (Release,
//!    bumps the control line's `wake`), then bump the `wake` word of the op's key's wait
//!    bucket (Release); unlock; one SeqCst fence ([`seqlock::after_publish`], which says
//!    whether `wait_any` sleepers need waking), then [`seqlock::take_sleepers`] of that
//!    bucket says whether its sleepers do (`writer.rs`).
//!
//! # Reader ([`read`], no lock)
//! `v = version` (Acquire), `c = v & 1`, `q1 = seq[c]` (Acquire): odd means a writer is in
//! it (a writer of `v + 2` overtook us): retry. `state[c] == v`, else retry (a writer died
//! after finishing the copy but before publishing, or garbage). Look up, copying out with
//! `copy.rs`; Acquire fence; `seq[c] == q1` means nobody touched the copy during the pass, so
//! what was read is state `v` exactly. A lookup that found inconsistent bytes also retries;
//! a state that stays inconsistent is reported as corrupt by the caller's deadline.
//!
//! # One-key waiter (`Map::wait_changed`, over `writer.rs`'s wait loop)
//! Sleeps on its key's wait bucket only, never on the control line: `seqlock::announce` on
//! the bucket (`sleepers = 1`, SeqCst swap; SeqCst fence; read the bucket's `wake`), then a
//! reader pass for the key's version (its loads are after the fence), and sleep on the
//! bucket's `wake` only if that version is still `since` and the word is unchanged. Dekker's
//! pattern with step 4: the publisher's stores (version, bucket word) precede its fence and
//! its flag load; the waiter's flag store precedes its fence and its loads. So either the
//! publisher sees the flag and wakes the bucket, or the waiter's pass sees the new version
//! (or its sleep finds the bumped word and returns at once). A publish of a key in another
//! bucket touches neither this bucket's word nor its flag: it wakes no one here (only keys
//! that share the bucket, 1 in 64 on average, cost a spurious wake-up and a re-check). A
//! waiter that died asleep leaves its bucket's flag set: the next publisher in that bucket
//! clears it and makes one wake call, then the flag stays clear. `tests/loom_map.rs` checks
//! the lost-wakeup case over [`publish_op`] and the `seqlock` functions.
//!
//! # Read-only waiter (Linux; a map whose header says `WakePolicy::EveryPublish`)
//! It cannot write a flag, so it announces nothing and sleeps on the control line's `wake`
//! (channel 0), for one key as for any: read `wake` (Acquire), then the
//! reader pass (its first load is `version`, Acquire), and sleep on `wake` only if the key's
//! version (or the map version) is still `since` and the word unchanged. Every publisher of
//! such a map bumps `wake` in [`publish_op`] (through [`seqlock::publish`], Release, after the
//! version store) and after unlocking makes the wake call on it unconditionally. If the pass
//! still sees no change, the `wake` read came before the bump of the publish that makes one
//! (a load that saw the bump would see that publish's version store and copy), so the sleep
//! fails at once or is queued before the bump, and the wake call after it ends it. A one-key
//! read-only waiter thus wakes at every publish of the map and re-checks its key; the
//! bucket's word is not enough, since no publisher wakes a bucket that nobody announced
//! itself on. `tests/loom_map.rs` checks this case too.
//!
//! A writer killed at any instruction leaves the published copy untouched, and the copy it
//! was in either odd (rebuilt by the next writer) or finished at a state the next writer
//! classifies by its `state` field: `v + 1` unpublished is neither `v` nor `v - 1`, so it is
//! rebuilt. A last-op record that does not name `v` (a torn one reads 0: its version is
//! zeroed before its key is written; or a peer's scribble) forces a rebuild, never a wrong
//! replay.

use crate::seqlock::{self, Control};
use crate::sync::LoadAcquire;
use crate::sync::{fence, AtomicU32, AtomicU64, Ordering};

/// How many wait buckets a map has (a power of two).
pub const WAIT_BUCKETS: usize = 64;

/// One wait bucket: the channel that `wait_changed` on its keys sleeps on.
#[repr(C)]
#[derive(Debug, Default)]
pub struct WaitBucket {
    /// Bumped by every publish of a set or delete of one of its keys; sleepers sleep on it.
    pub wake: AtomicU32,
    /// The may-sleep flag: set by a waiter about to sleep, cleared by the publisher that wakes.
    pub sleepers: AtomicU32,
}

/// The wait bucket of a key whose tag (`map.rs`: the hash's upper half) is `tag`: its low
/// bits (the table's home bucket uses its high bits).
pub fn wait_bucket(tag: u32) -> usize {
    (tag as usize) & (WAIT_BUCKETS - 1)
}

/// Step 4 with the lock held, after the last-op record: publishes `next` and bumps the wait
/// bucket of the op's key.
pub fn publish_op(ctrl: &Control, bucket: &WaitBucket, next: u64) {
    seqlock::publish(ctrl, next);
    seqlock::bump_wake(&bucket.wake);
}

/// The metadata line of one copy of the table.
#[repr(C)]
#[derive(Debug)]
pub struct CopyMeta {
    /// Odd while a writer is in the copy; only grows.
    pub seq: AtomicU64,
    /// The map version whose contents the copy holds.
    pub state: AtomicU64,
    /// Heap bytes used (records are bump-allocated from the heap's start).
    pub bump: AtomicU64,
    /// Live keys.
    pub count: AtomicU64,
    _pad: [AtomicU64; 4],
}

#[cfg(not(loom))]
const _: () = assert!(std::mem::size_of::<CopyMeta>() == 64);

impl Default for CopyMeta {
    fn default() -> CopyMeta {
        CopyMeta {
            seq: AtomicU64::new(0),
            state: AtomicU64::new(0),
            bump: AtomicU64::new(0),
            count: AtomicU64::new(0),
            _pad: std::array::from_fn(|_| AtomicU64::new(0)),
        }
    }
}

/// How the writer brings the unpublished copy to the published state (step 1).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CatchUp {
    /// It already holds the published state.
    Current,
    /// It is one operation behind and the last-op record names that operation: replay it.
    Replay,
    /// Anything else: copy the published copy over it.
    Rebuild,
}

/// A copy being written: what [`begin`] chose, for [`finish`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Ticket {
    /// The copy being written (never the published one).
    pub copy: usize,
    /// The published version when the write began.
    pub published: u64,
    /// The version this write makes.
    pub next: u64,
    odd: u64,
}

/// Step 1, with the lock held: what the unpublished copy needs, given the version the last-op
/// record names (0 if it is torn or unset).
pub fn plan(ctrl: &Control, metas: [&CopyMeta; 2], last_op: u64) -> CatchUp {
    let v = ctrl.version.load(Ordering::Relaxed);
    let other = metas[(v.wrapping_add(1) & 1) as usize];
    if other.seq.load(Ordering::Relaxed) & 1 != 0 {
        return CatchUp::Rebuild;
    }
    let state = other.state.load(Ordering::Relaxed);
    if state == v {
        CatchUp::Current
    } else if v > 0 && state == v - 1 && last_op == v {
        CatchUp::Replay
    } else {
        CatchUp::Rebuild
    }
}

/// Step 2: opens the unpublished copy for writing (its `seq` odd, then a Release fence).
pub fn begin(ctrl: &Control, metas: [&CopyMeta; 2]) -> Ticket {
    let published = ctrl.version.load(Ordering::Relaxed);
    let next = published.wrapping_add(1);
    let copy = (next & 1) as usize;
    let meta = metas[copy];
    let q = meta.seq.load(Ordering::Relaxed);
    let odd = if q & 1 == 0 {
        q.wrapping_add(1)
    } else {
        q.wrapping_add(2)
    };
    meta.seq.store(odd, Ordering::Relaxed);
    fence(Ordering::Release);
    Ticket {
        copy,
        published,
        next,
        odd,
    }
}

/// What the operation did to the copy, for [`finish`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Applied {
    /// The copy now holds state `next`: publish it.
    Changed,
    /// The copy holds the published state (nothing to publish: a full map, a missing key).
    Unchanged,
}

/// Step 3: records the copy's state and closes it (`seq` even, Release). Returns the version
/// to publish, if any.
pub fn finish(metas: [&CopyMeta; 2], t: Ticket, applied: Applied) -> Option<u64> {
    let meta = metas[t.copy];
    let (state, publish) = match applied {
        Applied::Changed => (t.next, Some(t.next)),
        Applied::Unchanged => (t.published, None),
    };
    meta.state.store(state, Ordering::Relaxed);
    meta.seq.store(t.odd.wrapping_add(1), Ordering::Release);
    publish
}

/// The result of one reader pass.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Pass<T> {
    /// The lookup ran on a consistent copy holding map version `version`.
    Done {
        /// What the lookup returned.
        found: T,
        /// The map version it saw.
        version: u64,
    },
    /// The copy moved, or the lookup found inconsistent bytes; `seen` is (version, sequence)
    /// for stuck detection.
    Retry {
        /// The version and copy sequence this pass saw.
        seen: (u64, u64),
    },
}

/// One reader pass: `look(copy, meta)` runs on the published copy and returns `None` when
/// what it read is inconsistent (bounds, probe count); its result counts only if the copy did
/// not move meanwhile. `meta(c)` is copy `c`'s meta line (a function rather than the pair, so
/// that the map computes one address instead of laying both out in memory to index them).
#[inline(always)]
pub fn read<'m, T>(
    ctrl: &Control,
    meta: impl FnOnce(usize) -> &'m CopyMeta,
    look: impl FnOnce(usize, &CopyMeta) -> Option<T>,
) -> Pass<T> {
    let v = ctrl.version.load_acquire();
    let c = (v & 1) as usize;
    let meta = meta(c);
    let q1 = meta.seq.load_acquire();
    let retry = Pass::Retry { seen: (v, q1) };
    if q1 & 1 != 0 || meta.state.load(Ordering::Relaxed) != v {
        return retry;
    }
    let found = look(c, meta);
    fence(Ordering::Acquire);
    if meta.seq.load(Ordering::Relaxed) != q1 {
        return retry;
    }
    match found {
        Some(found) => Pass::Done { found, version: v },
        None => retry,
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    fn state() -> (Control, [CopyMeta; 2]) {
        (
            Control::default(),
            [CopyMeta::default(), CopyMeta::default()],
        )
    }

    fn refs(m: &[CopyMeta; 2]) -> [&CopyMeta; 2] {
        [&m[0], &m[1]]
    }

    fn publish(ctrl: &Control, metas: [&CopyMeta; 2]) -> u64 {
        let t = begin(ctrl, metas);
        let next = finish(metas, t, Applied::Changed).unwrap();
        crate::seqlock::publish(ctrl, next);
        next
    }

    #[test]
    fn the_other_copy_is_replayed_when_one_behind_and_rebuilt_otherwise() {
        let (ctrl, owned) = state();
        let metas = refs(&owned);
        assert_eq!(plan(&ctrl, metas, 0), CatchUp::Current); // empty: both copies state 0
        publish(&ctrl, metas); // v1 in copy 1; copy 0 at state 0
        assert_eq!(plan(&ctrl, metas, 1), CatchUp::Replay);
        assert_eq!(
            plan(&ctrl, metas, 0),
            CatchUp::Rebuild,
            "torn last-op record"
        );
        publish(&ctrl, metas); // v2 in copy 0; copy 1 at state 1
        assert_eq!(plan(&ctrl, metas, 2), CatchUp::Replay);
        // A writer of v3 dies after finishing copy 1 but before publishing: state 3 is neither
        // 2 nor 1, so the next writer rebuilds.
        let t = begin(&ctrl, metas);
        finish(metas, t, Applied::Changed);
        assert_eq!(plan(&ctrl, metas, 3), CatchUp::Rebuild);
        // A writer that dies inside the copy leaves it odd.
        let _ = begin(&ctrl, metas);
        assert_eq!(plan(&ctrl, metas, 2), CatchUp::Rebuild);
    }

    #[test]
    fn an_unchanged_copy_keeps_the_published_state_and_publishes_nothing() {
        let (ctrl, owned) = state();
        let metas = refs(&owned);
        publish(&ctrl, metas);
        let t = begin(&ctrl, metas);
        assert_eq!(finish(metas, t, Applied::Unchanged), None);
        assert_eq!(metas[0].state.load(Ordering::Relaxed), 1);
        assert_eq!(plan(&ctrl, metas, 1), CatchUp::Current);
    }

    #[test]
    fn readers_retry_on_an_odd_copy_a_wrong_state_or_a_bad_lookup() {
        let (ctrl, owned) = state();
        let metas = refs(&owned);
        assert_eq!(
            read(&ctrl, |c| metas[c], |c, _| Some(c)),
            Pass::Done {
                found: 0,
                version: 0
            }
        );
        assert!(matches!(
            read(&ctrl, |c| metas[c], |_, _| None::<()>),
            Pass::Retry { .. }
        ));
        metas[0].seq.store(7, Ordering::Relaxed);
        assert!(matches!(
            read(&ctrl, |c| metas[c], |_, _| Some(())),
            Pass::Retry { .. }
        ));
        metas[0].seq.store(8, Ordering::Relaxed);
        metas[0].state.store(5, Ordering::Relaxed);
        assert!(matches!(
            read(&ctrl, |c| metas[c], |_, _| Some(())),
            Pass::Retry { .. }
        ));
        // A writer entering the copy during the pass is seen.
        metas[0].state.store(0, Ordering::Relaxed);
        let pass = read(
            &ctrl,
            |c| metas[c],
            |_, m| {
                m.seq.fetch_add(1, Ordering::Relaxed);
                Some(())
            },
        );
        assert!(matches!(pass, Pass::Retry { .. }));
    }
}
