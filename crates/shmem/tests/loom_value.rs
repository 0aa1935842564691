//! Model checks (loom) of the value protocol in `src/value.rs`: every interleaving and every
//! reordering the memory model allows, for small cases.
//!
//! The model mirrors the library's atomic operations and orderings one for one (the data copy,
//! which the library does in assembly, is modelled as Relaxed atomic words, the same guarantee);
//! if an ordering in `value.rs` changes, change it here too.
//!
//! `RUSTFLAGS="--cfg loom" cargo test -p shmem --test loom_value --release`
#![cfg(loom)]

use loom::sync::atomic::{fence, AtomicU32, AtomicU64, Ordering::*};
use loom::sync::Arc;
use loom::thread;

const WORDS: usize = 2;

#[derive(Default)]
struct Slot {
    seq: AtomicU64,
    version: AtomicU64,
    len: AtomicU64,
    data: [AtomicU64; WORDS],
}

#[derive(Default)]
struct Shared {
    version: AtomicU64,
    wake: AtomicU32,
    waiters: AtomicU32,
    slots: [Slot; 2],
}

/// `Value::set` steps 1-5 for a value whose every word is `word` (the caller holds the lock).
/// With `die_after_words = Some(k)`, the writer is killed after copying `k` words.
fn set(s: &Shared, word: u64, die_after_words: Option<usize>) -> bool {
    let next = s.version.load(Relaxed).wrapping_add(1);
    let slot = &s.slots[(next & 1) as usize];
    let q = slot.seq.load(Relaxed);
    let odd = if q & 1 == 0 { q + 1 } else { q + 2 };
    slot.seq.store(odd, Relaxed);
    fence(Release);
    slot.version.store(next, Relaxed);
    slot.len.store(WORDS as u64, Relaxed);
    for (i, w) in slot.data.iter().enumerate() {
        if die_after_words == Some(i) {
            return false;
        }
        w.store(word, Relaxed);
    }
    slot.seq.store(odd + 1, Release);
    s.version.store(next, Release);
    s.wake.fetch_add(1, Release);
    fence(SeqCst);
    s.waiters.load(Relaxed) != 0
}

/// `Value::get`, with at most `attempts` tries: `Some((version, words))` or `None`.
fn get(s: &Shared, attempts: usize) -> Option<(u64, [u64; WORDS])> {
    for _ in 0..attempts {
        let v = s.version.load(Acquire);
        let slot = &s.slots[(v & 1) as usize];
        let q1 = slot.seq.load(Acquire);
        if q1 & 1 == 0 && slot.version.load(Relaxed) == v && slot.len.load(Relaxed) == WORDS as u64
        {
            let words = [slot.data[0].load(Relaxed), slot.data[1].load(Relaxed)];
            fence(Acquire);
            if slot.seq.load(Relaxed) == q1 {
                return Some((v, words));
            }
        }
        thread::yield_now();
    }
    None
}

/// A value written at version `v` is `[v, v]` (and the empty value at version 0 is `[0, 0]`
/// in this model, since nothing was written).
fn check(read: Option<(u64, [u64; WORDS])>) {
    if let Some((v, words)) = read {
        assert_eq!(words, [v, v], "torn or mislabelled read at version {v}");
    }
}

#[test]
fn a_reader_never_sees_a_torn_or_mislabelled_value() {
    loom::model(|| {
        let s = Arc::new(Shared::default());
        let w = {
            let s = Arc::clone(&s);
            thread::spawn(move || {
                for v in 1..=2 {
                    set(&s, v, None);
                }
            })
        };
        check(get(&s, 2));
        w.join().unwrap();
        assert_eq!(get(&s, 1), Some((2, [2, 2])));
    });
}

#[test]
fn a_writer_killed_mid_copy_never_damages_what_readers_see() {
    loom::model(|| {
        let s = Arc::new(Shared::default());
        set(&s, 1, None);
        let w = {
            let s = Arc::clone(&s);
            thread::spawn(move || {
                // Killed after one word of version 2; the next writer (after the lock's
                // hand-over) publishes version 2 into the same slot.
                assert!(!set(&s, 99, Some(1)));
                set(&s, 2, None);
            })
        };
        check(get(&s, 2));
        w.join().unwrap();
        assert_eq!(get(&s, 1), Some((2, [2, 2])));
    });
}

#[test]
fn a_waiter_never_sleeps_through_a_set() {
    loom::model(|| {
        let s = Arc::new(Shared::default());
        let since = 0;
        let waiter = {
            let s = Arc::clone(&s);
            thread::spawn(move || {
                // `wait_changed_unless`, one round.
                s.waiters.fetch_add(1, SeqCst);
                fence(SeqCst);
                let seen = s.wake.load(Acquire);
                if s.version.load(Acquire) != since {
                    return false; // saw the change: does not sleep
                }
                // FUTEX_WAIT: sleeps only if the word still holds what we saw (the kernel
                // compares and queues atomically).
                s.wake.load(SeqCst) == seen
            })
        };
        let woke = set(&s, 1, None);
        let slept = waiter.join().unwrap();
        assert!(
            !slept || woke,
            "the waiter sleeps and the writer did not wake it"
        );
    });
}
