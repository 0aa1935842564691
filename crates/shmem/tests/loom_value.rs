//! Model checks (loom) of the value protocol and the writers' lock: every interleaving and
//! every reordering the memory model allows, for small cases.
//!
//! These run the library's own protocol code (`src/seqlock.rs`, `src/wlock.rs`, exported as
//! `shmem::model` under `--cfg loom` only), compiled against loom's atomics. Only the data
//! copy (assembly in the library) and the kernel (futex, witness locks) are stand-ins here: the
//! bytes are Relaxed atomic words, a futex wait is a spurious wake-up, and liveness is a flag.
//!
//! `RUSTFLAGS="--cfg loom" cargo test -p named-shm --test loom_value --release`
#![cfg(loom)]

use loom::sync::atomic::AtomicBool;
use loom::sync::Arc;
use loom::thread;
use shmem::model::*;
use std::time::Duration;

const WORDS: usize = 2;

#[derive(Default)]
struct Shared {
    ctrl: Control,
    metas: [SlotMeta; 2],
    data: [[AtomicU64; WORDS]; 2],
}

impl Shared {
    /// `Value::set` of a value whose every word is `word`, lock held by the caller.
    fn set(&self, word: u64) -> Wake {
        let next = write(&self.ctrl, &self.metas, WORDS as u64, |slot| {
            for w in &self.data[slot] {
                w.store(word, Ordering::Relaxed);
            }
        });
        publish(&self.ctrl, next);
        after_publish(&self.ctrl)
    }

    /// `Value::get` with at most `attempts` passes: `Some((version, words))` or `None`.
    fn get(&self, attempts: usize) -> Option<(u64, [u64; WORDS])> {
        for _ in 0..attempts {
            let mut words = [0; WORDS];
            let pass = read(&self.ctrl, &self.metas, WORDS as u64, |slot, len| {
                for (i, w) in self.data[slot][..len].iter().enumerate() {
                    words[i] = w.load(Ordering::Relaxed);
                }
                true
            });
            if let Pass::Copied { version, .. } = pass {
                return Some((version, words));
            }
            thread::yield_now();
        }
        None
    }
}

/// A value written at version `v` is `[v, v]` (the empty value at version 0 reads `[0, 0]`).
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
                    s.set(v);
                }
            })
        };
        check(s.get(2));
        w.join().unwrap();
        assert_eq!(s.get(1), Some((2, [2, 2])));
    });
}

#[test]
fn a_writer_killed_mid_copy_never_damages_what_readers_see() {
    loom::model(|| {
        let s = Arc::new(Shared::default());
        s.set(1);
        let w = {
            let s = Arc::clone(&s);
            thread::spawn(move || {
                // Killed after one word of version 2 (no `end_write`, no publish); the next
                // writer, after taking the lock over, writes version 2 into the same slot.
                let t = begin_write(&s.ctrl, &s.metas, WORDS as u64);
                s.data[t.slot][0].store(99, Ordering::Relaxed);
                s.set(2);
            })
        };
        check(s.get(2));
        w.join().unwrap();
        assert_eq!(s.get(1), Some((2, [2, 2])));
    });
}

#[test]
fn a_waiter_never_sleeps_through_a_set() {
    loom::model(|| {
        let s = Arc::new(Shared::default());
        // Set by the writer when it makes its wake call (a stand-in for `FUTEX_WAKE`).
        let woke = Arc::new(AtomicBool::new(false));
        let waiter = {
            let (s, woke) = (Arc::clone(&s), Arc::clone(&woke));
            thread::spawn(move || {
                // `writer::wait`: announce on channel 0, then re-check the version.
                let w = announce(&s.ctrl.sleepers, &s.ctrl.wake);
                if s.ctrl.version.load(Ordering::Acquire) != 0 {
                    return None; // saw the change: does not sleep
                }
                // FUTEX_WAIT queues the waiter only while the word still holds what we saw
                // (the kernel compares and queues atomically); a wake call made before that
                // wakes nobody. So: was a wake already made, then does the sleep happen?
                let woken_before = woke.load(Ordering::SeqCst);
                (s.ctrl.wake.load(Ordering::SeqCst) == w).then_some(woken_before)
            })
        };
        let wakes = s.set(1) == Wake::Sleepers;
        if wakes {
            woke.store(true, Ordering::SeqCst);
        }
        if let Some(woken_before) = waiter.join().unwrap() {
            assert!(
                wakes && !woken_before,
                "the waiter sleeps and the writer did not wake it (no wake call, or one made \
                 before it slept on an unchanged word)"
            );
        }
    });
}

/// A read-only waiter announces nothing (`check_unannounced`: `wake`, then its re-check of `version`, as
/// `Writer::wait_unannounced` does), and the writer of a `WakePolicy::EveryPublish` value
/// wakes after every publish. No wake-up is lost if a waiter that decides to sleep saw `wake`
/// from before the publish's bump: its `FUTEX_WAIT` then either fails (the bump came first)
/// or is queued before the bump, and so before the wake the writer makes after it.
#[test]
fn an_unannounced_waiter_sleeps_only_on_a_wake_count_from_before_the_publish() {
    loom::model(|| {
        let s = Arc::new(Shared::default());
        let waiter = {
            let s = Arc::clone(&s);
            thread::spawn(move || {
                // The library's step: `wake` first, then the condition.
                let step = check_unannounced(&s.ctrl, || -> Result<Option<u64>, ()> {
                    let v = s.ctrl.version.load(Ordering::Acquire);
                    Ok((v != 0).then_some(v))
                });
                match step.unwrap() {
                    Unannounced::Sleep(w) => Ok(w),
                    Unannounced::Changed(v) => Err(v),
                }
            })
        };
        let before = s.ctrl.wake.load(Ordering::Relaxed);
        s.set(1); // then the writer wakes, announced or not
        match waiter.join().unwrap() {
            Ok(w) => assert_eq!(w, before, "sleeps on a count that includes the bump"),
            Err(v) => assert_eq!(v, 1),
        }
    });
}

/// Liveness as the kernel would tell it: token `t` is alive until `dead[t]` is set.
struct Witnesses {
    dead: [AtomicBool; 4],
}

impl Witnesses {
    fn new() -> Witnesses {
        Witnesses {
            dead: std::array::from_fn(|_| AtomicBool::new(false)),
        }
    }
}

impl Park for Witnesses {
    fn holder(&self, token: u32) -> Holder {
        match self.dead.get(token as usize) {
            Some(d) if !d.load(Ordering::SeqCst) => Holder::Alive,
            _ => Holder::Gone,
        }
    }
    fn sleep(&self, _word: &AtomicU32, _expected: u32, _timeout: Duration) {
        thread::yield_now();
    }
    fn wake_one(&self, _word: &AtomicU32) {}
}

const FOREVER: Duration = Duration::from_secs(3600);

#[test]
fn two_writers_never_hold_the_lock_together() {
    loom::model(|| {
        let word = Arc::new(AtomicU32::new(0));
        let inside = Arc::new(AtomicU32::new(0));
        let park = Arc::new(Witnesses::new());
        let writers: Vec<_> = [1u32, 2]
            .into_iter()
            .map(|me| {
                let (word, inside, park) = (word.clone(), inside.clone(), park.clone());
                thread::spawn(move || {
                    let g = lock(&word, me, FOREVER, 1, &*park).unwrap();
                    assert_eq!(inside.fetch_add(1, Ordering::Relaxed), 0, "two holders");
                    inside.fetch_sub(1, Ordering::Relaxed);
                    drop(g);
                })
            })
            .collect();
        for w in writers {
            w.join().unwrap();
        }
        assert_eq!(word.load(Ordering::Relaxed), 0);
    });
}

#[test]
fn a_dead_holder_is_taken_over_by_exactly_one_rival_at_a_time() {
    loom::model(|| {
        let word = Arc::new(AtomicU32::new(0));
        let park = Arc::new(Witnesses::new());
        // Token 1 takes the lock and dies holding it: the kernel drops its witness.
        std::mem::forget(lock(&word, 1, FOREVER, 1, &*park).unwrap());
        park.dead[1].store(true, Ordering::SeqCst);
        let inside = Arc::new(AtomicU32::new(0));
        let rivals: Vec<_> = [2u32, 3]
            .into_iter()
            .map(|me| {
                let (word, inside, park) = (word.clone(), inside.clone(), park.clone());
                thread::spawn(move || {
                    let g = lock(&word, me, FOREVER, 1, &*park).unwrap();
                    assert_eq!(inside.fetch_add(1, Ordering::Relaxed), 0, "two holders");
                    inside.fetch_sub(1, Ordering::Relaxed);
                    g.taken()
                })
            })
            .collect();
        let taken: Vec<Taken> = rivals.into_iter().map(|r| r.join().unwrap()).collect();
        assert!(
            taken.contains(&Taken::FromDead),
            "nobody took over: {taken:?}"
        );
        assert_eq!(word.load(Ordering::Relaxed), 0);
    });
}

#[test]
fn a_lock_handed_off_to_a_sleeper_that_died_is_taken_by_one_rival_at_a_time() {
    loom::model(|| {
        // The unlocker handed the lock to the sleepers, and the sleeper it woke died.
        let word = Arc::new(AtomicU32::new(HANDED_OFF));
        let park = Arc::new(Witnesses::new());
        let inside = Arc::new(AtomicU32::new(0));
        let rivals: Vec<_> = [2u32, 3]
            .into_iter()
            .map(|me| {
                let (word, inside, park) = (word.clone(), inside.clone(), park.clone());
                thread::spawn(move || {
                    let g = lock(&word, me, FOREVER, 1, &*park).unwrap();
                    assert_eq!(inside.fetch_add(1, Ordering::Relaxed), 0, "two holders");
                    inside.fetch_sub(1, Ordering::Relaxed);
                    drop(g);
                })
            })
            .collect();
        for r in rivals {
            r.join().unwrap();
        }
        assert_eq!(word.load(Ordering::Relaxed) & TOKEN_MASK, 0);
    });
}
