//! Windows: segments are named page-file sections (`segment.rs`); the writers' lock and
//! `wait_changed` use named events. All names start with the segment's object name
//! (`Local\shmem.NAME`, see [`segment::Segment::object_name`]), so they share its namespace.
//!
//! # Writers' lock (the `wlock.rs` protocol, with a Windows [`Park`])
//!
//! - **Witness.** A writer's token `T` is proved alive by the event `OBJ.w.T`, which its handle
//!   creates at its first write and keeps open for its life. `CreateEventW` returning
//!   `ERROR_ALREADY_EXISTS` means another live handle holds `T`: draw the next token. The
//!   kernel destroys an event with its last handle, so once the holder's process has exited or
//!   been terminated, `OpenEventW` fails with `ERROR_FILE_NOT_FOUND`: that failure, and only
//!   that one, is "gone" (any other answer counts as alive: never take a lock on a guess).
//! - **Sleeping.** One auto-reset event per segment, `OBJ.lock`, opened by every value and map handle:
//!   a sleeper waits on it for at most `wlock::RECHECK` after checking the word; `wake_one` is
//!   `SetEvent`, which releases one waiter, or stays signalled until the next one comes (so a
//!   wake between the check and the wait is not lost; a stale one is a spurious wake-up, which
//!   the protocol tolerates). No `PulseEvent`.
//!
//! # `wait_changed`: the waiters' table
//!
//! `WaitOnAddress` does not cross processes, so a sleeping waiter registers an event instead.
//! A value's layout gets a trailer after its two slots (`value.rs`), a map's after its two
//! copies (`map.rs`), on Windows only (Linux sleeps on the futex words and keeps its layout):
//!
//! ```text
//!   0  next   u32  the counter waiter ids are drawn from; then 60 bytes of padding
//!  64  slots  [u32; 64]  a registered waiter: channel << 24 | id (id nonzero, 24 bits);
//!                        0 = free
//! ```
//!
//! A waiter sleeps on one *channel* (`writer.rs`): 0 for a value's waits and a map's
//! `wait_any`, `b + 1` for a map's wait bucket `b` (`wait_changed(key)`).
//!
//! - **Register** (one wait that is about to sleep): draw `id` (nonzero, 24 bits),
//!   `CreateEventW(auto-reset, OBJ.v.id)` (on `ERROR_ALREADY_EXISTS` draw again), then
//!   `CAS(slot: 0 -> channel << 24 | id)` (SeqCst) on the first free slot. Only then the
//!   channel's announcement (`seqlock::announce`: its sleepers flag, fence, re-check) and
//!   `WaitForSingleObject`.
//! - **Wake** (a publisher that found a channel's sleepers flag set): for each nonzero slot of
//!   that channel (SeqCst loads, after the publisher's fence in `seqlock::after_publish`),
//!   `OpenEventW(OBJ.v.id)` and `SetEvent`; slots of other channels are skipped, so a set of
//!   one key does not wake waiters on another bucket. `wake_waiters` signals every slot. An id
//!   whose event is gone (`ERROR_FILE_NOT_FOUND`: its waiter died) has its slot freed,
//!   `CAS(word -> 0)`: a dead waiter costs its channel one wake-up.
//! - **Leave**: `CAS(slot: word -> 0)`, close the event.
//!
//! Why no wake-up is lost: the waiter's slot (with its channel) is written before its
//! channel's sleepers flag (both SeqCst), so a publisher whose flag check sees the waiter also
//! sees its slot; a publisher that misses the flag published a change the waiter's re-check
//! sees (Dekker's pattern, `writer.rs`). An event signalled before its waiter waits stays
//! signalled.
//!
//! With all 64 slots taken by live waiters, a further waiter polls the version every
//! millisecond instead (and says so in `wait_changed`'s docs).

pub(crate) mod segment;
mod sys;

pub(crate) use self::sys::Mapping;

use std::os::windows::io::OwnedHandle;
use std::sync::Mutex;
use std::time::Duration;

use windows_sys::Win32::Foundation::ERROR_FILE_NOT_FOUND;

use self::sys::{EventAccess, Opened};
use crate::error::{Error, Result};
use crate::sync::{AtomicU32, Ordering};
use crate::wlock::{self, Holder, TOKEN_MASK};
use segment::Segment;

/// How many waiters can sleep on one value at once without polling.
const WAITER_SLOTS: usize = 64;

/// The waiters' table appended to a value segment.
pub(crate) const TRAILER_LEN: usize = 64 + 4 * WAITER_SLOTS;

/// The bits of a slot word that hold the waiter's id; the channel is above them.
const ID_BITS: u32 = 24;
const ID_MASK: u32 = (1 << ID_BITS) - 1;
const _: () = assert!(crate::platform::MAX_CHANNELS <= u32::MAX >> ID_BITS);

/// How many tokens or ids a claim draws before it gives up.
const MAX_DRAWS: u32 = 4096;

/// How often a waiter that found the table full re-checks the version.
const POLL: Duration = Duration::from_millis(1);

/// The waiters' table, as it lies in shared memory.
#[repr(C)]
pub(crate) struct WaiterTable {
    next: AtomicU32,
    _pad: [AtomicU32; 15],
    slots: [AtomicU32; WAITER_SLOTS],
}

const _: () = assert!(std::mem::size_of::<WaiterTable>() == TRAILER_LEN);

/// There is no `fork` on Windows: a cached token stays valid for the handle's life.
pub(crate) fn generation() -> u32 {
    0
}

/// A value's or map's Windows state: its lock event and, once it has written, its witness.
#[derive(Debug)]
pub(crate) struct WriterSys {
    /// `OBJ`, the segment's object name.
    prefix: String,
    /// `OBJ.lock`, auto-reset: lock sleepers wait on it.
    lock_event: OwnedHandle,
    /// This handle's token and its witness event `OBJ.w.T`.
    witness: Mutex<Option<(u32, OwnedHandle)>>,
}

fn io(seg_name: &str, op: &'static str, code: sys::Code) -> Error {
    Error::Io {
        name: seg_name.to_owned(),
        op,
        source: std::io::Error::from_raw_os_error(code as i32),
    }
}

impl WriterSys {
    pub(crate) fn new(seg: &Segment) -> Result<WriterSys> {
        let prefix = seg.object_name().to_owned();
        let (lock_event, _) =
            sys::create_event(&format!("{prefix}.lock"), false, seg.event_security())
                .map_err(|c| io(seg.name(), "CreateEventW(lock)", c))?;
        Ok(WriterSys {
            prefix,
            lock_event,
            witness: Mutex::new(None),
        })
    }

    /// The lock's kernel side for this segment.
    pub(crate) fn park<'a>(&'a self, _seg: &'a Segment) -> Park<'a> {
        Park { sys: self }
    }

    /// This handle's writer token: the first `T` drawn from `claims` whose witness event
    /// `OBJ.w.T` this call creates (it did not exist: no live handle holds `T`).
    pub(crate) fn claim_token(&self, seg: &Segment, claims: &AtomicU32) -> Result<u32> {
        let mut witness = self.witness.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((t, _)) = &*witness {
            return Ok(*t);
        }
        for _ in 0..MAX_DRAWS {
            let t = claims.fetch_add(1, Ordering::Relaxed).wrapping_add(1) & TOKEN_MASK;
            if t == 0 {
                continue;
            }
            let (h, opened) = sys::create_event(
                &format!("{}.w.{t}", self.prefix),
                true,
                seg.event_security(),
            )
            .map_err(|c| io(seg.name(), "CreateEventW(witness)", c))?;
            if opened == Opened::Created {
                *witness = Some((t, h));
                return Ok(t);
            }
        }
        Err(Error::Corrupt {
            name: seg.name().to_owned(),
            reason: "no free writer token: the token counter keeps naming live writers".into(),
        })
    }

    fn table<'a>(&self, seg: &'a Segment, trailer: usize) -> &'a WaiterTable {
        let map = seg.mapping();
        assert!(trailer % 64 == 0 && trailer + TRAILER_LEN <= map.len());
        // SAFETY: `value.rs` and `map.rs` checked that the segment's size is at least
        // `trailer + TRAILER_LEN` (and the assertion above re-checks it), `trailer` is a
        // multiple of 64 in a page-aligned view, and `WaiterTable` is made of atomics, so a
        // shared reference is sound while other processes write it.
        unsafe { &*map.ptr().add(trailer).cast::<WaiterTable>() }
    }

    fn waiter_event(&self, id: u32) -> String {
        format!("{}.v.{id}", self.prefix)
    }

    /// Registers a waiter on `channel` that is about to sleep (see the module docs).
    pub(crate) fn sleeper<'a>(
        &'a self,
        seg: &'a Segment,
        trailer: usize,
        channel: u32,
    ) -> Result<Sleeper<'a>> {
        debug_assert!(channel < crate::platform::MAX_CHANNELS);
        let table = self.table(seg, trailer);
        let mut event = None;
        for _ in 0..MAX_DRAWS {
            let id = table.next.fetch_add(1, Ordering::Relaxed).wrapping_add(1) & ID_MASK;
            if id == 0 {
                continue;
            }
            let (h, opened) =
                sys::create_event(&self.waiter_event(id), false, seg.event_security())
                    .map_err(|c| io(seg.name(), "CreateEventW(waiter)", c))?;
            if opened == Opened::Created {
                event = Some((id, h));
                break;
            }
        }
        let Some((id, event)) = event else {
            return Ok(Sleeper::polling(seg));
        };
        let word = (channel << ID_BITS) | id;
        for round in 0..2 {
            for (i, slot) in table.slots.iter().enumerate() {
                if slot
                    .compare_exchange(0, word, Ordering::SeqCst, Ordering::Relaxed)
                    .is_ok()
                {
                    return Ok(Sleeper {
                        name: seg.name(),
                        registered: Some(Registered {
                            slot: &table.slots[i],
                            word,
                            event,
                        }),
                    });
                }
            }
            if round == 0 {
                self.signal(table, None); // frees the slots of dead waiters (and wakes the live)
            }
        }
        Ok(Sleeper::polling(seg))
    }

    /// Signals the registered waiters of `channel` (every one for `None`); frees the slots of
    /// those whose event is gone.
    fn signal(&self, table: &WaiterTable, channel: Option<u32>) {
        for slot in &table.slots {
            let word = slot.load(Ordering::SeqCst);
            if word == 0 || channel.is_some_and(|c| word >> ID_BITS != c) {
                continue;
            }
            match sys::open_event(&self.waiter_event(word & ID_MASK), EventAccess::Signal) {
                Ok(h) => {
                    let _ = sys::set_event(&h);
                }
                Err(ERROR_FILE_NOT_FOUND) => {
                    let _ = slot.compare_exchange(word, 0, Ordering::SeqCst, Ordering::Relaxed);
                }
                Err(_) => {}
            }
        }
    }

    /// Wakes the waiters of `channel` (a publish that found its sleepers flag set).
    pub(crate) fn wake(&self, seg: &Segment, trailer: usize, _wake: &AtomicU32, channel: u32) {
        self.signal(self.table(seg, trailer), Some(channel));
    }

    /// Wakes every registered waiter, whatever its channel (`wake_waiters`).
    pub(crate) fn wake_all(&self, seg: &Segment, trailer: usize, _words: &[&AtomicU32]) {
        self.signal(self.table(seg, trailer), None);
    }
}

/// A waiter's registration: its slot and its event.
#[derive(Debug)]
struct Registered<'a> {
    slot: &'a AtomicU32,
    /// `channel << 24 | id`, as in the slot.
    word: u32,
    event: OwnedHandle,
}

/// One `wait_changed` call's sleeping side: registered in the table, or polling when the
/// table is full.
#[derive(Debug)]
pub(crate) struct Sleeper<'a> {
    name: &'a str,
    registered: Option<Registered<'a>>,
}

impl std::fmt::Debug for WaiterTable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WaiterTable").finish_non_exhaustive()
    }
}

impl<'a> Sleeper<'a> {
    fn polling(seg: &'a Segment) -> Sleeper<'a> {
        Sleeper {
            name: seg.name(),
            registered: None,
        }
    }

    /// Sleeps until this waiter's event is signalled or `remaining` passes (polling: at most
    /// [`POLL`]). The caller re-checks the version either way.
    pub(crate) fn wait(
        &self,
        _wake: &AtomicU32,
        _w: u32,
        remaining: Option<Duration>,
    ) -> Result<()> {
        match &self.registered {
            Some(r) => sys::wait(&r.event, remaining)
                .map(drop)
                .map_err(|c| io(self.name, "WaitForSingleObject", c)),
            None => {
                std::thread::sleep(remaining.map_or(POLL, |r| r.min(POLL)));
                Ok(())
            }
        }
    }
}

impl Drop for Sleeper<'_> {
    fn drop(&mut self) {
        if let Some(r) = &self.registered {
            let _ = r
                .slot
                .compare_exchange(r.word, 0, Ordering::SeqCst, Ordering::Relaxed);
        }
    }
}

/// The kernel's side of the writers' lock for one segment: liveness from the witness events,
/// sleeping on the segment's lock event.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Park<'a> {
    sys: &'a WriterSys,
}

impl wlock::Park for Park<'_> {
    fn holder(&self, token: u32) -> Holder {
        match sys::open_event(
            &format!("{}.w.{token}", self.sys.prefix),
            EventAccess::Probe,
        ) {
            Err(ERROR_FILE_NOT_FOUND) => Holder::Gone,
            // An open witness, or an answer that tells nothing: never take a lock on a guess.
            Ok(_) | Err(_) => Holder::Alive,
        }
    }

    fn sleep(&self, word: &AtomicU32, expected: u32, timeout: Duration) {
        if word.load(Ordering::Relaxed) == expected {
            let _ = sys::wait(&self.sys.lock_event, Some(timeout));
        }
    }

    fn wake_one(&self, _word: &AtomicU32) {
        let _ = sys::set_event(&self.sys.lock_event);
    }
}

#[cfg(test)]
mod tests {
    use super::sys::Waited;
    use super::*;

    fn live_slots(table: &WaiterTable) -> usize {
        table
            .slots
            .iter()
            .filter(|s| s.load(Ordering::SeqCst) != 0)
            .count()
    }

    #[test]
    fn dead_waiters_lose_their_slots_and_live_ones_are_signalled_once() {
        let name = format!("wintest-unit-waiters-{}", std::process::id());
        let v = crate::Value::open(&name, 64).unwrap();
        let seg = v.segment();
        let trailer = seg.mapping().len() - TRAILER_LEN;
        let sys = WriterSys::new(seg).unwrap();
        let table = sys.table(seg, trailer);
        // Every slot names a waiter whose event does not exist: all of them died asleep.
        for (i, slot) in table.slots.iter().enumerate() {
            slot.store(1_000_000 + i as u32, Ordering::SeqCst);
        }
        let a = sys.sleeper(seg, trailer, 0).unwrap();
        let reg = a.registered.as_ref().expect("the sweep freed a slot");
        assert_eq!(live_slots(table), 1, "only the live waiter keeps a slot");
        let b = sys.sleeper(seg, trailer, 0).unwrap();
        assert!(b.registered.is_some());
        assert_eq!(live_slots(table), 2);
        // Not signalled before a wake; signalled by one, once (auto-reset).
        assert_eq!(
            sys::wait(&reg.event, Some(Duration::ZERO)),
            Ok(Waited::TimedOut)
        );
        sys.wake(seg, trailer, &AtomicU32::new(0), 0);
        assert_eq!(
            sys::wait(&reg.event, Some(Duration::ZERO)),
            Ok(Waited::Signalled)
        );
        assert_eq!(
            sys::wait(&reg.event, Some(Duration::ZERO)),
            Ok(Waited::TimedOut)
        );
        assert_eq!(live_slots(table), 2, "a wake frees no live waiter's slot");
        drop(a);
        drop(b);
        assert_eq!(live_slots(table), 0, "a waiter that leaves frees its slot");
    }

    #[test]
    fn a_wake_signals_only_its_channel_and_frees_only_its_dead_waiters() {
        let name = format!("wintest-unit-channels-{}", std::process::id());
        let m = crate::Map::open(&name, 4096).unwrap();
        let seg = m.segment();
        let trailer = seg.mapping().len() - TRAILER_LEN;
        let sys = WriterSys::new(seg).unwrap();
        let table = sys.table(seg, trailer);
        let signalled = |s: &Sleeper<'_>| {
            sys::wait(&s.registered.as_ref().unwrap().event, Some(Duration::ZERO))
                == Ok(Waited::Signalled)
        };
        let (any, one, five) = (
            sys.sleeper(seg, trailer, 0).unwrap(),
            sys.sleeper(seg, trailer, 1).unwrap(),
            sys.sleeper(seg, trailer, 5).unwrap(),
        );
        // A waiter of channel 5 that died asleep: its event is gone, its slot stays.
        let dead = table
            .slots
            .iter()
            .find(|s| s.load(Ordering::SeqCst) == 0)
            .unwrap();
        dead.store((5 << ID_BITS) | 0xfe_dcba, Ordering::SeqCst);
        sys.wake(seg, trailer, &AtomicU32::new(0), 1);
        assert!(signalled(&one));
        assert!(
            !signalled(&any) && !signalled(&five),
            "channel 1 woke others"
        );
        assert_ne!(
            dead.load(Ordering::SeqCst),
            0,
            "another channel's wake freed the slot"
        );
        sys.wake(seg, trailer, &AtomicU32::new(0), 5);
        assert!(signalled(&five));
        assert!(
            !signalled(&any) && !signalled(&one),
            "channel 5 woke others"
        );
        assert_eq!(
            dead.load(Ordering::SeqCst),
            0,
            "its channel's wake frees a dead slot"
        );
        sys.wake_all(seg, trailer, &[]);
        assert!(signalled(&any) && signalled(&one) && signalled(&five));
    }

    #[test]
    fn a_token_held_by_a_live_handle_is_not_drawn_again_and_its_holder_is_alive() {
        let name = format!("wintest-unit-tokens-{}", std::process::id());
        let v = crate::Value::open(&name, 64).unwrap();
        let seg = v.segment();
        let claims = AtomicU32::new(0);
        let (a, b) = (WriterSys::new(seg).unwrap(), WriterSys::new(seg).unwrap());
        let ta = a.claim_token(seg, &claims).unwrap();
        assert_eq!(
            a.claim_token(seg, &claims).unwrap(),
            ta,
            "cached per handle"
        );
        claims.store(ta - 1, Ordering::Relaxed); // the counter names `ta` again
        let tb = b.claim_token(seg, &claims).unwrap();
        assert_ne!(ta, tb);
        let park = b.park(seg);
        assert_eq!(wlock::Park::holder(&park, ta), Holder::Alive);
        drop(a); // its witness event goes with its last handle
        assert_eq!(wlock::Park::holder(&park, ta), Holder::Gone);
        assert_eq!(wlock::Park::holder(&park, tb), Holder::Alive);
    }
}
