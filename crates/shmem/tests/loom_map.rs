//! Model checks (loom) of the map's protocol: copy selection, catch-up (replay, rebuild) and
//! the readers' validation, in every interleaving and reordering the memory model allows.
//!
//! These run the library's own protocol code (`src/map/protocol.rs` and `src/seqlock.rs`'s
//! publish, exported as `shmem::model` under `--cfg loom` only). The table is a stand-in: one
//! Relaxed atomic word per key per copy (the entry's version, 0 when absent), where the library
//! has buckets and records copied with `copy.rs`; replay copies the last-op key's word from
//! the published copy, rebuild copies every word.
//!
//! `RUSTFLAGS="--cfg loom" cargo test -p named-shm --test loom_map --release`
#![cfg(loom)]

use loom::sync::atomic::AtomicBool;
use loom::sync::Arc;
use loom::thread;
use shmem::model::map as mp;
use shmem::model::{
    after_publish, announce, check_unannounced, take_sleepers, AtomicU64, Control, Ordering,
    Unannounced, Wake,
};

const KEYS: usize = 2;

#[derive(Default)]
struct Shared {
    ctrl: Control,
    metas: [mp::CopyMeta; 2],
    tables: [[AtomicU64; KEYS]; 2],
    last_version: AtomicU64,
    last_key: AtomicU64,
    /// Key `k`'s wait bucket is `buckets[k]` (two keys in two buckets).
    buckets: [mp::WaitBucket; KEYS],
    /// Set by a publisher when it makes a wake call (a stand-in for `FUTEX_WAKE`).
    woke: AtomicBool,
}

/// The operations the writers run, in version order: op `v` sets key `OPS[v-1].0` to version
/// `v`, or deletes it when `.1` is false.
const OPS: [(usize, bool); 3] = [(0, true), (1, true), (0, false)];

/// The table after version `v`.
fn expected(v: u64) -> [u64; KEYS] {
    let mut t = [0; KEYS];
    for (i, &(k, set)) in OPS.iter().take(v as usize).enumerate() {
        t[k] = if set { i as u64 + 1 } else { 0 };
    }
    t
}

impl Shared {
    fn metas(&self) -> [&mp::CopyMeta; 2] {
        [&self.metas[0], &self.metas[1]]
    }

    /// `Map::write_locked` of the next op (the lock held by the caller); `die_after` words
    /// written to the copy, a writer is killed there (no finish, nothing published). Returns
    /// the op's key.
    fn write(&self, die_after: Option<usize>) -> usize {
        let plan = mp::plan(
            &self.ctrl,
            self.metas(),
            self.last_version.load(Ordering::Relaxed),
        );
        let t = mp::begin(&self.ctrl, self.metas());
        let (dst, src) = (&self.tables[t.copy], &self.tables[t.copy ^ 1]);
        let copy_word = |k: usize| dst[k].store(src[k].load(Ordering::Relaxed), Ordering::Relaxed);
        match plan {
            mp::CatchUp::Current => {}
            mp::CatchUp::Replay => copy_word(self.last_key.load(Ordering::Relaxed) as usize),
            mp::CatchUp::Rebuild => (0..KEYS).for_each(copy_word),
        }
        let (key, set) = OPS[(t.next - 1) as usize];
        if die_after == Some(0) {
            dst[key].store(99, Ordering::Relaxed); // half an operation, then killed
            return key;
        }
        dst[key].store(if set { t.next } else { 0 }, Ordering::Relaxed);
        let next = mp::finish(self.metas(), t, mp::Applied::Changed).expect("changed");
        self.last_version.store(0, Ordering::Relaxed);
        self.last_key.store(key as u64, Ordering::Relaxed);
        self.last_version.store(next, Ordering::Relaxed);
        mp::publish_op(&self.ctrl, &self.buckets[key], next);
        key
    }

    /// `Map::write`'s wake-up after the unlock (`Writer::wake_after_publish`): whether the
    /// op's key's bucket had sleepers to wake.
    fn wake_after(&self, key: usize) -> Wake {
        after_publish(&self.ctrl); // the fence; no `wait_any` sleeper in these models
        let wake = take_sleepers(&self.buckets[key].sleepers);
        if wake == Wake::Sleepers {
            self.woke.store(true, Ordering::SeqCst);
        }
        wake
    }

    /// `Map::snapshot` with at most `attempts` passes.
    fn read(&self, attempts: usize) -> Option<(u64, [u64; KEYS])> {
        for _ in 0..attempts {
            let pass = mp::read(
                &self.ctrl,
                |c| self.metas()[c],
                |c, _| {
                    let mut t = [0; KEYS];
                    for (k, w) in self.tables[c].iter().enumerate() {
                        t[k] = w.load(Ordering::Relaxed);
                    }
                    Some(t)
                },
            );
            if let mp::Pass::Done { found, version } = pass {
                return Some((version, found));
            }
            thread::yield_now();
        }
        None
    }
}

fn check(read: Option<(u64, [u64; KEYS])>) {
    if let Some((v, t)) = read {
        assert_eq!(
            t,
            expected(v),
            "a reader saw a state that no version had (at {v})"
        );
    }
}

#[test]
fn a_reader_sees_exactly_the_published_state_while_writers_replay_and_apply() {
    loom::model(|| {
        let s = Arc::new(Shared::default());
        let w = {
            let s = Arc::clone(&s);
            thread::spawn(move || {
                for _ in 0..OPS.len() {
                    s.write(None);
                }
            })
        };
        check(s.read(2));
        w.join().unwrap();
        assert_eq!(s.read(1), Some((3, expected(3))));
    });
}

#[test]
fn a_writer_killed_mid_operation_is_rebuilt_over_and_never_seen() {
    loom::model(|| {
        let s = Arc::new(Shared::default());
        s.write(None); // v1
        let w = {
            let s = Arc::clone(&s);
            thread::spawn(move || {
                s.write(Some(0)); // killed in copy 0 while writing v2; the lock is taken over
                s.write(None); // v2 again: the copy is odd, so it is rebuilt first
                s.write(None); // v3: a replay of v2
            })
        };
        check(s.read(2));
        w.join().unwrap();
        assert_eq!(s.read(1), Some((3, expected(3))));
    });
}

/// `Map::wait_changed(key 1, since 0)` (`writer.rs`'s wait loop: announce on the key's
/// bucket, then a reader pass for the key's version) against a writer of op 1 (key 0, another
/// bucket) and op 2 (key 1): the waiter never sleeps through the set of its key, and the set of
/// the other key never wakes its bucket.
#[test]
fn a_one_key_waiter_never_sleeps_through_a_set_of_its_key() {
    loom::model(|| {
        let s = Arc::new(Shared::default());
        let waiter = {
            let s = Arc::clone(&s);
            thread::spawn(move || {
                let b = &s.buckets[1];
                let w = announce(&b.sleepers, &b.wake);
                match s.read(2) {
                    // FUTEX_WAIT queues the waiter only while the word still holds what it
                    // saw (the kernel compares and queues atomically); a wake call made before
                    // that wakes nobody. So: was a wake already made, then is the word still
                    // `w` (the sleep happens)?
                    Some((_, t)) if t[1] == 0 => {
                        let woken_before = s.woke.load(Ordering::SeqCst);
                        (b.wake.load(Ordering::SeqCst) == w).then_some(woken_before)
                    }
                    // Saw the change (or was disturbed: it would retry, not sleep).
                    _ => None,
                }
            })
        };
        let k0 = s.write(None);
        assert_eq!(k0, 0);
        assert_eq!(
            s.wake_after(k0),
            Wake::Nobody,
            "key 0's set woke no bucket-1 sleeper"
        );
        let k1 = s.write(None);
        let woke = s.wake_after(k1) == Wake::Sleepers;
        if let Some(woken_before) = waiter.join().unwrap() {
            assert!(
                woke && !woken_before,
                "the waiter sleeps on key 1's bucket and the set of key 1 did not wake it \
                 (no wake call, or one made before it slept on an unchanged word)"
            );
        }
    });
}

/// A read-only `Map::wait_changed(key 1, since 0)` on a `WakePolicy::EveryPublish` map
/// (`Writer::wait_unannounced`: read the control line's `wake`, then a reader pass for the
/// key's version, announcing nothing) against a writer of op 1 (key 0) and op 2 (key 1), each
/// publish followed by the unconditional wake call on the control line. If the waiter decides
/// to sleep (key 1 still absent), the word it sleeps on predates op 2's bump: its
/// `FUTEX_WAIT` fails at once or is queued before the bump, so the wake call that follows the
/// bump ends it. No wake-up of its key is lost.
#[test]
fn an_unannounced_one_key_waiter_sleeps_only_on_a_word_from_before_its_keys_set() {
    loom::model(|| {
        let s = Arc::new(Shared::default());
        let waiter = {
            let s = Arc::clone(&s);
            thread::spawn(move || {
                // The library's step: `wake` first, then the pass for key 1's version; a
                // pass that must retry counts as "changed" here (the waiter would not sleep).
                let step = check_unannounced(&s.ctrl, || -> Result<Option<()>, ()> {
                    Ok(match s.read(2) {
                        Some((_, t)) if t[1] == 0 => None,
                        _ => Some(()),
                    })
                });
                match step.unwrap() {
                    Unannounced::Sleep(w) => Some(w), // would sleep on `w`
                    Unannounced::Changed(()) => None, // saw the change, or would retry
                }
            })
        };
        let k0 = s.write(None);
        let after_op1 = s.ctrl.wake.load(Ordering::Relaxed);
        let k1 = s.write(None);
        assert_eq!((k0, k1), (0, 1));
        if let Some(w) = waiter.join().unwrap() {
            assert!(
                w <= after_op1,
                "the waiter sleeps on wake {w}, which includes the bump of key 1's set: \
                 the wake call after that bump may come before its sleep"
            );
        }
    });
}
