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
//! - **Sleeping.** One auto-reset event per segment, `OBJ.lock`, opened by every value handle:
//!   a sleeper waits on it for at most `wlock::RECHECK` after checking the word; `wake_one` is
//!   `SetEvent`, which releases one waiter, or stays signalled until the next one comes (so a
//!   wake between the check and the wait is not lost; a stale one is a spurious wake-up, which
//!   the protocol tolerates). No `PulseEvent`.
//!
//! # `wait_changed`: the waiters' table
//!
//! `WaitOnAddress` does not cross processes, so a sleeping waiter registers an event instead.
//! The value layout gets a trailer after the two slots (`value.rs`), on Windows only (Linux
//! sleeps on the futex word and keeps its layout):
//!
//! ```text
//!   0  next   u32  the counter waiter ids are drawn from; then 60 bytes of padding
//!  64  slots  [u32; 64]  a registered waiter's id, 0 = free
//! ```
//!
//! - **Register** (one `wait_changed` call that is about to sleep): draw `id` (nonzero),
//!   `CreateEventW(auto-reset, OBJ.v.id)` (on `ERROR_ALREADY_EXISTS` draw again), then
//!   `CAS(slot: 0 -> id)` (SeqCst) on the first free slot. Only then the seqlock's
//!   `prepare_sleep` (sleepers flag, fence, version check) and `WaitForSingleObject`.
//! - **Wake** (a publisher that found the sleepers flag set, or `wake_waiters`): for each
//!   nonzero slot (SeqCst loads, after the publisher's fence in `seqlock::after_publish`),
//!   `OpenEventW(OBJ.v.id)` and `SetEvent`. An id whose event is gone (`ERROR_FILE_NOT_FOUND`:
//!   its waiter died) has its slot freed, `CAS(id -> 0)`.
//! - **Leave**: `CAS(slot: id -> 0)`, close the event.
//!
//! Why no wake-up is lost: the waiter's slot is written before its sleepers flag (both
//! SeqCst), so a publisher whose flag check sees the waiter also sees its slot; a publisher
//! that misses the flag published a version the waiter's re-check sees (Dekker's pattern of
//! `seqlock.rs`). An event signalled before its waiter waits stays signalled.
//!
//! With all 64 slots taken by live waiters, a further waiter polls the version every
//! millisecond instead (and says so in `wait_changed`'s docs).

pub(crate) mod segment;
mod sys;

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

/// A value's Windows state: its lock event and, once it has written, its witness.
#[derive(Debug)]
pub(crate) struct ValueSys {
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

impl ValueSys {
    pub(crate) fn new(seg: &Segment) -> Result<ValueSys> {
        let prefix = seg.object_name().to_owned();
        let (lock_event, _) =
            sys::create_event(&format!("{prefix}.lock"), false, seg.event_security())
                .map_err(|c| io(seg.name(), "CreateEventW(lock)", c))?;
        Ok(ValueSys {
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
        // SAFETY: `value.rs` checked that the segment's size is `trailer + TRAILER_LEN` (and
        // the assertion above re-checks it), `trailer` is a multiple of 64 in a page-aligned
        // view, and `WaiterTable` is made of atomics, so a shared reference is sound while
        // other processes write it.
        unsafe { &*map.ptr().add(trailer).cast::<WaiterTable>() }
    }

    fn waiter_event(&self, id: u32) -> String {
        format!("{}.v.{id}", self.prefix)
    }

    /// Registers a waiter that is about to sleep (see the module docs).
    pub(crate) fn sleeper<'a>(&'a self, seg: &'a Segment, trailer: usize) -> Result<Sleeper<'a>> {
        let table = self.table(seg, trailer);
        let mut event = None;
        for _ in 0..MAX_DRAWS {
            let id = table.next.fetch_add(1, Ordering::Relaxed).wrapping_add(1);
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
        for round in 0..2 {
            for (i, slot) in table.slots.iter().enumerate() {
                if slot
                    .compare_exchange(0, id, Ordering::SeqCst, Ordering::Relaxed)
                    .is_ok()
                {
                    return Ok(Sleeper {
                        name: seg.name(),
                        registered: Some(Registered {
                            slot: &table.slots[i],
                            id,
                            event,
                        }),
                    });
                }
            }
            if round == 0 {
                self.signal(table); // frees the slots of dead waiters (and wakes the live)
            }
        }
        Ok(Sleeper::polling(seg))
    }

    /// Signals every registered waiter; frees the slots of those whose event is gone.
    fn signal(&self, table: &WaiterTable) {
        for slot in &table.slots {
            let id = slot.load(Ordering::SeqCst);
            if id == 0 {
                continue;
            }
            match sys::open_event(&self.waiter_event(id), EventAccess::Signal) {
                Ok(h) => {
                    let _ = sys::set_event(&h);
                }
                Err(ERROR_FILE_NOT_FOUND) => {
                    let _ = slot.compare_exchange(id, 0, Ordering::SeqCst, Ordering::Relaxed);
                }
                Err(_) => {}
            }
        }
    }

    /// Wakes every registered waiter (a publish that found the sleepers flag, or
    /// `wake_waiters`).
    pub(crate) fn wake_all(&self, seg: &Segment, trailer: usize, _wake: &AtomicU32) {
        self.signal(self.table(seg, trailer));
    }
}

/// A waiter's registration: its slot and its event.
#[derive(Debug)]
struct Registered<'a> {
    slot: &'a AtomicU32,
    id: u32,
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
                .compare_exchange(r.id, 0, Ordering::SeqCst, Ordering::Relaxed);
        }
    }
}

/// The kernel's side of the writers' lock for one segment: liveness from the witness events,
/// sleeping on the segment's lock event.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Park<'a> {
    sys: &'a ValueSys,
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
        let sys = ValueSys::new(seg).unwrap();
        let table = sys.table(seg, trailer);
        // Every slot names a waiter whose event does not exist: all of them died asleep.
        for (i, slot) in table.slots.iter().enumerate() {
            slot.store(1_000_000 + i as u32, Ordering::SeqCst);
        }
        let a = sys.sleeper(seg, trailer).unwrap();
        let reg = a.registered.as_ref().expect("the sweep freed a slot");
        assert_eq!(live_slots(table), 1, "only the live waiter keeps a slot");
        let b = sys.sleeper(seg, trailer).unwrap();
        assert!(b.registered.is_some());
        assert_eq!(live_slots(table), 2);
        // Not signalled before a wake; signalled by one, once (auto-reset).
        assert_eq!(
            sys::wait(&reg.event, Some(Duration::ZERO)),
            Ok(Waited::TimedOut)
        );
        sys.wake_all(seg, trailer, &AtomicU32::new(0));
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
    fn a_token_held_by_a_live_handle_is_not_drawn_again_and_its_holder_is_alive() {
        let name = format!("wintest-unit-tokens-{}", std::process::id());
        let v = crate::Value::open(&name, 64).unwrap();
        let seg = v.segment();
        let claims = AtomicU32::new(0);
        let (a, b) = (ValueSys::new(seg).unwrap(), ValueSys::new(seg).unwrap());
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
