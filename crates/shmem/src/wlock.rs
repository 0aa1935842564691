//! The writers' lock: a futex lock whose holder is proven dead by the kernel, never by an id.
//!
//! # Protocol
//!
//! One `u32` word in shared memory. `0` is free; otherwise the low 30 bits are the holder's
//! *token*, bit 31 (`SLEEPERS`) says that somebody may sleep on the word, and bit 30
//! (`STARVING`) that a sleeper asks for a hand-off. All-zero memory is a free lock.
//!
//! A token names a writer handle, not a thread or process: a handle that writes first claims
//! a token `t` by taking an OFD write lock on byte `WITNESS_BASE + t` of the segment's file,
//! on a description of its own that is never mapped (`fork::writer_token`, reached through the
//! platform backend's `claim_token`; on Windows a named event plays the byte's part). The kernel
//! drops that lock when the description goes: at exit, at `exec` (close-on-exec), at a crash,
//! and nowhere else while the handle lives (a handle cannot close while it holds the lock).
//! Tokens come from a shared counter and a token is only taken if its byte is free, so no two
//! live handles ever have the same token; a token is reused only after the counter wraps
//! (2^30 claims: a token is the counter's low 30 bits). So "the byte of token `t` is unlocked" proves "whoever wrote `t` into the word
//! is gone", whatever its pid namespace, whatever ids the kernel reuses. Threads of one process
//! share their handle's token; the word naming our own token means another of our threads
//! holds it.
//!
//! - **Lock**, fast path: `CAS(0 -> me)` (Acquire). No system call.
//! - Contended: spin a little (a `set` holds the lock for nanoseconds to microseconds) while
//!   nobody sleeps; then loop until the deadline (monotonic clock):
//!   - a free word (token 0, maybe a stale `SLEEPERS` bit): `CAS(w -> me | SLEEPERS?)`; a
//!     locker that has slept keeps `SLEEPERS` set, so its unlock wakes the next sleeper;
//!   - a holder whose witness byte is free (`F_OFD_GETLK`, one syscall, only here): it is gone;
//!     `CAS(w -> me | (w & SLEEPERS))`. The CAS fails if the word moved meanwhile, so a live
//!     holder that took the lock in between is never robbed, and two rivals never both win;
//!   - otherwise set `SLEEPERS` and `FUTEX_WAIT` with a relative (monotonic) timeout of at
//!     most `RECHECK`, so a holder that dies while we sleep (nobody wakes us then) is found
//!     within `RECHECK`. A dead holder is always checked before the deadline is, so a zero
//!     timeout still takes over from a dead holder.
//! - **Unlock**: `CAS(me -> 0)` (Release); if it fails, the word has `SLEEPERS`: clear the word
//!   (or, with `STARVING`, make it `HANDED_OFF`) and `FUTEX_WAKE` one sleeper. A word that no
//!   longer names us (a peer overwrote it) is left alone.
//! - **Fairness** (Go's `sync.Mutex` starvation mode): a free lock goes to whoever CASes first,
//!   and a writer that unlocks and relocks in a loop wins against a sleeper that needs
//!   microseconds to wake. So a locker that has slept [`SLEEPS_BEFORE_STARVING`] times sets
//!   `STARVING`; the unlock then leaves `HANDED_OFF` (token 0, both bits) instead of 0, which
//!   the fast path and every locker that has not slept treat as held, and a woken sleeper takes
//!   (`CAS(HANDED_OFF -> me | SLEEPERS)`). If the woken sleeper died, the others wake within
//!   `RECHECK` and take it; a newcomer sleeps once and becomes one of them. So a waiter's wait
//!   is bounded by a few hand-offs, not by luck.
//!
//! Why not `FUTEX_LOCK_PI`: the kernel resolves the thread id in the word in the *caller's*
//! pid namespace, thread ids are reused, and `exec` from another thread hands the dead
//! holder's id to the new program: each of these wedged writers or let two in. What priority
//! inheritance bought (a low-priority holder boosted while a high-priority writer waits)
//! matters only under real-time scheduling, and the holder's critical section is a bounded
//! copy; what replaces it is a plain futex and the spin before it.
//!
//! What a dead holder leaves in the value (an odd sequence in the unpublished slot) is dealt
//! with by `seqlock.rs`.

use std::time::{Duration, Instant};

use crate::sync::{AtomicU32, Ordering};

/// Somebody may sleep on the word: the unlocker must wake one.
pub const SLEEPERS: u32 = 1 << 31;
/// A sleeper has lost the race for the lock too often: the unlocker hands the lock to a
/// sleeper instead of freeing it. With token 0, the word is *handed off*: free for a locker
/// that has slept, not for a newcomer.
pub const STARVING: u32 = 1 << 30;
/// The bits of the word that hold the holder's token.
pub const TOKEN_MASK: u32 = !(SLEEPERS | STARVING);
/// The word of a lock handed off to the sleepers.
pub const HANDED_OFF: u32 = SLEEPERS | STARVING;

/// How many times a locker sleeps before it asks for a hand-off.
const SLEEPS_BEFORE_STARVING: u32 = 2;

/// The longest a sleeper waits before it checks the holder's liveness again.
pub const RECHECK: Duration = Duration::from_millis(2);

/// What the kernel says of a token's holder.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Holder {
    /// Its witness lock is held: the handle is alive.
    Alive,
    /// Its witness lock is free: the handle is gone (exit, exec, crash), or never existed.
    Gone,
}

/// The platform side of the lock: liveness from the kernel, and the futex.
pub trait Park {
    /// Whether the handle owning `token` is alive.
    fn holder(&self, token: u32) -> Holder;
    /// Sleeps while `word` holds `expected`, at most `timeout`; may return early.
    fn sleep(&self, word: &AtomicU32, expected: u32, timeout: Duration);
    /// Wakes one sleeper on `word`.
    fn wake_one(&self, word: &AtomicU32);
}

impl<P: Park + ?Sized> Park for &P {
    fn holder(&self, token: u32) -> Holder {
        (**self).holder(token)
    }
    fn sleep(&self, word: &AtomicU32, expected: u32, timeout: Duration) {
        (**self).sleep(word, expected, timeout)
    }
    fn wake_one(&self, word: &AtomicU32) {
        (**self).wake_one(word)
    }
}

/// How the lock was taken.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Taken {
    /// It was free.
    Free,
    /// Its holder was gone: taken over.
    FromDead,
}

/// Why the lock could not be taken.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LockError {
    /// The deadline passed while a live holder kept it.
    Timeout,
}

/// A held lock; unlocks on drop.
#[derive(Debug)]
pub struct Guard<'a, P: Park> {
    word: &'a AtomicU32,
    me: u32,
    park: P,
    taken: Taken,
}

impl<P: Park> Guard<'_, P> {
    /// The lock word it holds (which segment's lock this is: `platform/shared.rs` asks).
    pub fn word(&self) -> &AtomicU32 {
        self.word
    }

    /// How the lock was taken. The library needs no special step after a takeover (the value
    /// protocol repairs what a dead writer left); tests and the model checks assert it.
    #[cfg_attr(not(any(test, loom)), allow(dead_code))]
    pub fn taken(&self) -> Taken {
        self.taken
    }
}

/// Takes the lock for token `me` (nonzero, within [`TOKEN_MASK`]), spinning at most `spin`
/// reads first and waiting at most `timeout` for a live holder.
pub fn lock<'a, P: Park>(
    word: &'a AtomicU32,
    me: u32,
    timeout: Duration,
    spin: u32,
    park: P,
) -> Result<Guard<'a, P>, LockError> {
    debug_assert!(me != 0 && me & !TOKEN_MASK == 0);
    if word
        .compare_exchange(0, me, Ordering::Acquire, Ordering::Relaxed)
        .is_ok()
    {
        return Ok(Guard {
            word,
            me,
            park,
            taken: Taken::Free,
        });
    }
    let guard = |taken, park| Guard {
        word,
        me,
        park,
        taken,
    };
    for _ in 0..spin {
        let w = word.load(Ordering::Relaxed);
        if w == 0 {
            if word
                .compare_exchange(0, me, Ordering::Acquire, Ordering::Relaxed)
                .is_ok()
            {
                return Ok(guard(Taken::Free, park));
            }
        } else if w & SLEEPERS != 0 {
            break; // others already sleep: join them rather than burn the CPU
        }
        crate::sync::spin_hint();
    }
    let deadline = Instant::now().checked_add(timeout);
    let mut sleeps = 0u32;
    loop {
        let w = word.load(Ordering::Relaxed);
        let holder = w & TOKEN_MASK;
        if holder == 0 && (w != HANDED_OFF || sleeps > 0) {
            // Free (maybe with stale bits), or handed off and we are a sleeper. A locker that
            // has slept keeps `SLEEPERS`, so its unlock wakes the next sleeper.
            let keep = if sleeps > 0 { SLEEPERS } else { w & SLEEPERS };
            if word
                .compare_exchange(w, me | keep, Ordering::Acquire, Ordering::Relaxed)
                .is_ok()
            {
                return Ok(guard(Taken::Free, park));
            }
            continue;
        }
        if holder != 0 && holder != me && park.holder(holder) == Holder::Gone {
            let keep = w & (SLEEPERS | STARVING);
            if word
                .compare_exchange(w, me | keep, Ordering::Acquire, Ordering::Relaxed)
                .is_ok()
            {
                return Ok(guard(Taken::FromDead, park));
            }
            continue;
        }
        let remaining = match deadline {
            None => RECHECK,
            Some(d) => match d.checked_duration_since(Instant::now()) {
                Some(r) if !r.is_zero() => r.min(RECHECK),
                _ if w == HANDED_OFF => {
                    // Out of time and the lock is free, only reserved for sleepers: take it
                    // rather than time out on a free lock (the CAS keeps it exclusive).
                    if word
                        .compare_exchange(w, me | SLEEPERS, Ordering::Acquire, Ordering::Relaxed)
                        .is_ok()
                    {
                        return Ok(guard(Taken::Free, park));
                    }
                    continue;
                }
                _ => {
                    // Giving up: withdraw a hand-off request (ours, or one another sleeper
                    // will make again after its next sleep), so nobody hands off to no one.
                    if w & STARVING != 0 && holder != 0 {
                        let _ = word.compare_exchange(
                            w,
                            w & !STARVING,
                            Ordering::Relaxed,
                            Ordering::Relaxed,
                        );
                    }
                    return Err(LockError::Timeout);
                }
            },
        };
        let mut want = w | SLEEPERS;
        if sleeps >= SLEEPS_BEFORE_STARVING && holder != 0 {
            want |= STARVING;
        }
        if want != w
            && word
                .compare_exchange(w, want, Ordering::Relaxed, Ordering::Relaxed)
                .is_err()
        {
            continue;
        }
        park.sleep(word, want, remaining);
        sleeps = sleeps.saturating_add(1);
    }
}

impl<P: Park> Drop for Guard<'_, P> {
    fn drop(&mut self) {
        if self
            .word
            .compare_exchange(self.me, 0, Ordering::Release, Ordering::Relaxed)
            .is_ok()
        {
            return;
        }
        let mut w = self.word.load(Ordering::Relaxed);
        while w & TOKEN_MASK == self.me {
            let next = if w & STARVING != 0 { HANDED_OFF } else { 0 };
            match self
                .word
                .compare_exchange(w, next, Ordering::Release, Ordering::Relaxed)
            {
                Ok(_) => {
                    if w & SLEEPERS != 0 {
                        self.park.wake_one(self.word);
                    }
                    return;
                }
                Err(now) => w = now,
            }
        }
        // The word names someone else: a peer overwrote it while we held it. It is theirs.
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;
    use std::collections::HashSet;
    use std::sync::Mutex;

    /// Liveness from a set of live tokens; the futex as a short sleep.
    #[derive(Default)]
    struct Fake {
        live: Mutex<HashSet<u32>>,
        sleeps: AtomicU32,
    }

    impl Park for Fake {
        fn holder(&self, token: u32) -> Holder {
            if self.live.lock().unwrap().contains(&token) {
                Holder::Alive
            } else {
                Holder::Gone
            }
        }
        fn sleep(&self, word: &AtomicU32, expected: u32, timeout: Duration) {
            self.sleeps.fetch_add(1, Ordering::Relaxed);
            if word.load(Ordering::Relaxed) == expected {
                std::thread::sleep(timeout.min(Duration::from_micros(100)));
            }
        }
        fn wake_one(&self, _word: &AtomicU32) {}
    }

    #[test]
    fn a_live_holder_is_waited_for_and_a_gone_one_taken_over() {
        let park = Fake::default();
        park.live.lock().unwrap().extend([1, 2]);
        let word = AtomicU32::new(0);
        let g = lock(&word, 1, Duration::from_secs(5), 10, &park).unwrap();
        assert_eq!(g.taken(), Taken::Free);
        assert_eq!(
            lock(&word, 2, Duration::from_millis(5), 10, &park).err(),
            Some(LockError::Timeout)
        );
        std::mem::forget(g);
        park.live.lock().unwrap().remove(&1); // the holder's witness is released
        let g = lock(&word, 2, Duration::ZERO, 10, &park).expect("zero timeout still takes over");
        assert_eq!(g.taken(), Taken::FromDead);
        drop(g);
        assert_eq!(word.load(Ordering::Relaxed), 0);
    }

    #[test]
    fn garbage_and_stale_sleeper_bits_are_taken_over_and_cleared() {
        let park = Fake::default();
        park.live.lock().unwrap().insert(7);
        for stale in [
            2,
            0x1234_5678,
            SLEEPERS | 9,
            SLEEPERS,
            STARVING,
            STARVING | 11,
        ] {
            let word = AtomicU32::new(stale);
            let g = lock(&word, 7, Duration::ZERO, 0, &park).unwrap();
            assert_eq!(word.load(Ordering::Relaxed) & TOKEN_MASK, 7);
            drop(g);
            // A stale hand-off request is honoured once: the word is free, or handed off to
            // sleepers, which any locker becomes after one sleep.
            let after = word.load(Ordering::Relaxed);
            assert!(
                after == 0 || after == HANDED_OFF,
                "from {stale:#x}: {after:#x}"
            );
            drop(lock(&word, 7, Duration::from_secs(5), 0, &park).unwrap());
            assert_eq!(word.load(Ordering::Relaxed), 0, "from {stale:#x}");
        }
    }

    #[test]
    fn a_starving_sleeper_gets_the_lock_handed_off_and_newcomers_wait() {
        let park = Fake::default();
        park.live.lock().unwrap().extend([1, 2, 3]);
        let word = AtomicU32::new(1 | SLEEPERS | STARVING); // 1 holds; a sleeper starves
        drop(Guard {
            word: &word,
            me: 1,
            park: &park,
            taken: Taken::Free,
        });
        assert_eq!(word.load(Ordering::Relaxed), HANDED_OFF);
        // A newcomer that has not slept does not take a handed-off lock: it sleeps first, and
        // then takes it as a sleeper.
        drop(lock(&word, 2, Duration::from_secs(5), 10, &park).unwrap());
        assert_eq!(park.sleeps.load(Ordering::Relaxed), 1);
        // One whose deadline has passed takes it rather than time out on a free lock.
        word.store(HANDED_OFF, Ordering::Relaxed);
        drop(lock(&word, 2, Duration::ZERO, 10, &park).unwrap());
        assert_eq!(park.sleeps.load(Ordering::Relaxed), 1);
        word.store(HANDED_OFF, Ordering::Relaxed);
        // After one sleep it is one of the sleepers and may.
        let g = lock(&word, 3, Duration::from_secs(5), 10, &park).unwrap();
        assert_eq!(word.load(Ordering::Relaxed), 3 | SLEEPERS);
        drop(g);
        assert_eq!(word.load(Ordering::Relaxed), 0);
    }

    #[test]
    fn an_overwritten_word_is_left_to_its_new_owner() {
        let park = Fake::default();
        park.live.lock().unwrap().extend([1, 5]);
        let word = AtomicU32::new(0);
        let g = lock(&word, 1, Duration::ZERO, 0, &park).unwrap();
        word.store(5, Ordering::Relaxed); // a peer scribbles
        drop(g);
        assert_eq!(word.load(Ordering::Relaxed), 5);
    }

    #[test]
    fn threads_of_one_handle_exclude_each_other() {
        let park = Fake::default();
        park.live.lock().unwrap().insert(3);
        let word = AtomicU32::new(0);
        let inside = AtomicU32::new(0);
        std::thread::scope(|s| {
            for _ in 0..4 {
                s.spawn(|| {
                    for _ in 0..2000 {
                        let _g = lock(&word, 3, Duration::from_secs(10), 50, &park).unwrap();
                        assert_eq!(inside.fetch_add(1, Ordering::Relaxed), 0);
                        inside.fetch_sub(1, Ordering::Relaxed);
                    }
                });
            }
        });
        assert_eq!(word.load(Ordering::Relaxed), 0);
    }
}
