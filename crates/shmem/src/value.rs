//! A consistent shared value: a double-buffered seqlock in a segment.
//!
//! # Layout (offsets from the start of the segment file)
//!
//! ```text
//!    0  segment header (header.rs), kind = value
//!   64  control, one cache line, written by writers and waiters:
//!         version  u64  the last published version; 0 = nothing set yet
//!         wake     u32  futex word: a counter bumped at every publish and `wake_waiters`
//!         waiters  u32  how many `wait_changed` callers may be asleep on `wake`
//!         lock     u32  the writers' PI-futex lock (wlock.rs)
//!  128  slot 0 meta: seq u64, version u64, len u64 (one cache line)
//!  192  slot 1 meta
//!  256  slot 0 data: `slot_cap` bytes (the capacity, a multiple of 64)
//!  256 + slot_cap  slot 1 data
//! ```
//!
//! All-zero memory (what a fresh segment is) is a valid state: version 0, an empty value in
//! slot 0, the lock free, nobody waiting. So creating a value needs no initialisation step.
//! The capacity is derived from the file size, never read from the segment.
//!
//! # Protocol
//!
//! Version `v` lives in slot `v & 1`. A writer, holding the lock:
//! 1. reads `version = v` and picks slot `s = (v + 1) & 1`, the one readers are *not* reading;
//! 2. makes `seq[s]` odd and larger than before (`+1` if even, `+2` if already odd because a
//!    writer died there), Relaxed store, then a Release fence;
//! 3. stores `version[s] = v + 1`, `len[s]`, and copies the bytes in (`copy.rs`);
//! 4. makes `seq[s]` even (`+1`), Release;
//! 5. publishes: `version = v + 1` (Release), `wake += 1` (Release), unlocks, a SeqCst fence,
//!    and if `waiters != 0`, `FUTEX_WAKE` on `wake`.
//!
//! A reader takes no lock and writes nothing:
//! 1. `v = version` (Acquire), `s = v & 1`, `q1 = seq[s]` (Acquire); retry if `q1` is odd;
//! 2. reads `version[s]` and `len[s]`; retries unless `version[s] == v` and `len <= capacity`;
//! 3. copies `len` bytes out, an Acquire fence, `q2 = seq[s]` (Relaxed); retries if `q2 != q1`.
//!
//! Why it holds: a writer only ever writes the slot of the *next* version, so a reader of the
//! current one is disturbed only if two more `set`s complete during its copy, and then the
//! changed `seq` (seen through the fence pair of steps 2/3) makes it retry. `seq` only grows, so
//! equal before and after means nobody touched the slot. `version[s] == v` rejects a slot that a
//! writer finished but died before publishing. A writer killed at any instruction leaves the
//! published slot untouched: the next writer (which gets the lock as soon as the kernel sees the
//! death, wlock.rs) writes the same unpublished slot again. The retry loop is bounded by a
//! deadline, so garbage written by a peer gives an error, never a hang; every index is `& 1` and
//! every length is checked against the capacity this process mapped.
//!
//! Waiters (`wait_changed`): `waiters += 1` (SeqCst), a SeqCst fence, `w = wake` (Acquire),
//! re-read `version`; if it is still `since` (and the caller has not cancelled),
//! `FUTEX_WAIT(wake, w)`; then `waiters -= 1`. Writer step 5 and this are the two halves of
//! Dekker's pattern: with both fences SeqCst, either the writer sees `waiters != 0` and wakes,
//! or the waiter sees the new version and does not sleep. A waiter that read the old version
//! read `w` before the writer's increment (the increment is ordered after the version store),
//! so if it goes to sleep after the increment, `FUTEX_WAIT` returns at once. `wake_waiters`
//! bumps `wake` and wakes everyone without changing the version: that is how a waiter is
//! cancelled from another thread (set the flag it checks, then wake). With nobody waiting,
//! `set` makes no system call.

use std::sync::atomic::{fence, AtomicU32, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use rustix::io::Errno;
use rustix::thread::futex;

use crate::copy;
use crate::error::{Error, Result};
use crate::header::{Lifetime, HEADER_LEN};
use crate::segment::{Builder, Segment};
use crate::wlock::{self, LockError};

const CTRL_OFFSET: usize = HEADER_LEN;
const META_OFFSET: usize = 128;
const DATA_OFFSET: usize = 256;
/// Data bytes of a value segment besides the two slots.
const OVERHEAD: usize = DATA_OFFSET - HEADER_LEN;
const SLOT_ALIGN: usize = 64;

/// How long a reader retries before it reports that it found no consistent value.
const READ_DEADLINE: Duration = Duration::from_secs(2);
/// How long one inconsistent state may stay unchanged before a reader calls it corrupt.
const STUCK_LIMIT: Duration = Duration::from_millis(20);

/// A reader's retry state.
struct Backoff {
    started: Option<Instant>,
    seen: Option<(u64, u64)>,
    stuck_since: Option<Instant>,
}
/// How long a writer waits for the lock by default.
const DEFAULT_LOCK_TIMEOUT: Duration = Duration::from_secs(5);

#[repr(C)]
struct Control {
    version: AtomicU64,
    wake: AtomicU32,
    waiters: AtomicU32,
    lock: AtomicU32,
    _pad: [AtomicU32; 11],
}

#[repr(C)]
struct SlotMeta {
    seq: AtomicU64,
    version: AtomicU64,
    len: AtomicU64,
    _pad: [AtomicU64; 5],
}

const _: () = assert!(std::mem::size_of::<Control>() == 64);
const _: () = assert!(std::mem::size_of::<SlotMeta>() == 64);
const _: () = assert!(CTRL_OFFSET + 64 == META_OFFSET);
const _: () = assert!(META_OFFSET + 2 * 64 == DATA_OFFSET);

/// Options for opening a value; start with [`Value::builder`].
#[derive(Clone, Debug)]
pub struct ValueBuilder {
    seg: Builder,
    capacity: usize,
    lock_timeout: Duration,
}

impl ValueBuilder {
    /// The directory (see [`Builder::dir`]).
    pub fn dir(mut self, dir: impl Into<std::path::PathBuf>) -> ValueBuilder {
        self.seg = self.seg.dir(dir);
        self
    }

    /// The largest value, in bytes, rounded up to a multiple of 64. Needed to create; when
    /// opening an existing value, it must hold at least this much (0 accepts any).
    pub fn capacity(mut self, bytes: usize) -> ValueBuilder {
        self.capacity = bytes;
        self
    }

    /// The lifetime of a newly created value (see [`Lifetime`]).
    pub fn lifetime(mut self, lifetime: Lifetime) -> ValueBuilder {
        self.seg = self.seg.lifetime(lifetime);
        self
    }

    /// The file mode of a newly created value (see [`Builder::mode`]).
    pub fn mode(mut self, mode: u32) -> ValueBuilder {
        self.seg = self.seg.mode(mode);
        self
    }

    /// How long opening waits for a process that holds the segment's exclusive lock (see
    /// [`Builder::attach_timeout`]).
    pub fn attach_timeout(mut self, timeout: Duration) -> ValueBuilder {
        self.seg = self.seg.attach_timeout(timeout);
        self
    }

    /// How long `set` waits for another live writer before [`Error::Timeout`] (5 s by default).
    /// A dead writer never makes it wait: the kernel hands the lock over.
    pub fn lock_timeout(mut self, timeout: Duration) -> ValueBuilder {
        self.lock_timeout = timeout;
        self
    }

    /// Opens the value, creating it (empty, version 0) if nobody holds it.
    pub fn open(&self) -> Result<Value> {
        self.finish(self.sized()?.open_value(true)?)
    }

    /// Creates the value; fails with [`Error::Exists`] if a live one has the name.
    pub fn create_new(&self) -> Result<Value> {
        self.finish(self.sized()?.create_value()?)
    }

    /// Opens a live value; fails with [`Error::NotFound`] if there is none.
    pub fn open_existing(&self) -> Result<Value> {
        self.finish(self.sized()?.open_value(false)?)
    }

    fn sized(&self) -> Result<Builder> {
        if self.capacity == 0 {
            return Ok(self.seg.clone().with_data_len(0));
        }
        let slot = self
            .capacity
            .checked_next_multiple_of(SLOT_ALIGN)
            .and_then(|s| s.checked_mul(2))
            .and_then(|s| s.checked_add(OVERHEAD))
            .filter(|&d| (d as u64) < crate::MAX_SEGMENT_SIZE)
            .ok_or_else(|| Error::InvalidSize {
                name: self.seg.name().to_owned(),
                reason: format!("a capacity of {} bytes is too large", self.capacity),
            })?;
        Ok(self.seg.clone().with_data_len(slot as u64))
    }

    fn finish(&self, seg: Segment) -> Result<Value> {
        let size = seg.data_len() as u64 + HEADER_LEN as u64;
        let Some(capacity) = capacity_for_size(size) else {
            return Err(Error::Corrupt {
                name: seg.name().to_owned(),
                reason: format!("{size} bytes is not a valid value layout"),
            });
        };
        if !seg.created() && capacity < self.capacity {
            return Err(Error::InvalidSize {
                name: seg.name().to_owned(),
                reason: format!(
                    "the existing value holds at most {capacity} bytes, less than the {} asked \
                     for",
                    self.capacity
                ),
            });
        }
        Ok(Value {
            capacity,
            lock_timeout: self.lock_timeout,
            seg,
        })
    }
}

/// The capacity of a value segment whose file has `size` bytes, if that is a valid layout:
/// `DATA_OFFSET + 2 * capacity`, with the capacity a positive multiple of 64.
pub(crate) fn capacity_for_size(size: u64) -> Option<usize> {
    let slots = usize::try_from(size).ok()?.checked_sub(DATA_OFFSET)?;
    (slots >= 2 * SLOT_ALIGN && slots % (2 * SLOT_ALIGN) == 0).then_some(slots / 2)
}

/// A value shared between processes: a byte string of up to `capacity()` bytes with a version.
///
/// Thread-safe: share it with `Arc` or scoped threads; `set` excludes other writers in this
/// and other processes, `get` never blocks.
#[derive(Debug)]
pub struct Value {
    seg: Segment,
    capacity: usize,
    lock_timeout: Duration,
}

impl Value {
    /// Starts the options for value `name` (transient, owner-only, in `/dev/shm`).
    pub fn builder(name: &str) -> ValueBuilder {
        ValueBuilder {
            seg: Segment::builder(name),
            capacity: 0,
            lock_timeout: DEFAULT_LOCK_TIMEOUT,
        }
    }

    /// Opens or creates transient value `name` in `/dev/shm` holding up to `capacity` bytes.
    pub fn open(name: &str, capacity: usize) -> Result<Value> {
        Value::builder(name).capacity(capacity).open()
    }

    /// The segment's name.
    pub fn name(&self) -> &str {
        self.seg.name()
    }

    /// Whether this handle created the value (it was then empty, at version 0).
    pub fn created(&self) -> bool {
        self.seg.created()
    }

    /// The underlying segment.
    pub fn segment(&self) -> &Segment {
        &self.seg
    }

    /// The largest value this segment holds, in bytes.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// The latest published version (0 before the first `set`).
    pub fn version(&self) -> u64 {
        self.ctrl().version.load(Ordering::Acquire)
    }

    /// Publishes `data` as the new value and returns its version. A value longer than
    /// [`Value::capacity`] is refused with [`Error::TooLarge`] and changes nothing.
    pub fn set(&self, data: &[u8]) -> Result<u64> {
        if data.len() > self.capacity {
            return Err(Error::TooLarge {
                name: self.name().to_owned(),
                len: data.len(),
                capacity: self.capacity,
            });
        }
        let ctrl = self.ctrl();
        let guard = wlock::lock(&ctrl.lock, self.lock_timeout).map_err(|e| self.lock_error(e))?;
        let next = ctrl.version.load(Ordering::Relaxed).wrapping_add(1);
        let s = (next & 1) as usize;
        let meta = self.meta(s);
        let q = meta.seq.load(Ordering::Relaxed);
        let odd = if q & 1 == 0 {
            q.wrapping_add(1)
        } else {
            q.wrapping_add(2)
        };
        meta.seq.store(odd, Ordering::Relaxed);
        fence(Ordering::Release);
        meta.version.store(next, Ordering::Relaxed);
        meta.len.store(data.len() as u64, Ordering::Relaxed);
        // SAFETY: slot `s` spans `capacity` bytes inside the mapping (checked in `finish`), and
        // `data.len() <= capacity`.
        unsafe { copy::copy_to_shared(self.slot_ptr(s), data) };
        meta.seq.store(odd.wrapping_add(1), Ordering::Release);
        ctrl.version.store(next, Ordering::Release);
        ctrl.wake.fetch_add(1, Ordering::Release);
        drop(guard);
        fence(Ordering::SeqCst);
        if ctrl.waiters.load(Ordering::Relaxed) != 0 {
            let _ = futex::wake(&ctrl.wake, futex::Flags::empty(), i32::MAX as u32);
        }
        Ok(next)
    }

    /// Copies the current value into `buf`; returns its length and version. If `buf` is too
    /// small, returns [`Error::BufferTooSmall`] with the length needed and copies nothing.
    pub fn get(&self, buf: &mut [u8]) -> Result<(usize, u64)> {
        let ctrl = self.ctrl();
        let mut state = Backoff {
            started: None,
            seen: None,
            stuck_since: None,
        };
        let mut attempt = 0u32;
        loop {
            let v = ctrl.version.load(Ordering::Acquire);
            let s = (v & 1) as usize;
            let meta = self.meta(s);
            let q1 = meta.seq.load(Ordering::Acquire);
            if q1 & 1 == 0 {
                let slot_version = meta.version.load(Ordering::Relaxed);
                let len = meta.len.load(Ordering::Relaxed);
                if slot_version == v && len <= self.capacity as u64 {
                    let len = len as usize;
                    let fits = len <= buf.len();
                    if fits {
                        // SAFETY: `len <= capacity`, so the copy stays inside slot `s`.
                        unsafe { copy::copy_from_shared(&mut buf[..len], self.slot_ptr(s)) };
                    }
                    fence(Ordering::Acquire);
                    if meta.seq.load(Ordering::Relaxed) == q1 {
                        if fits {
                            return Ok((len, v));
                        }
                        return Err(Error::BufferTooSmall {
                            name: self.name().to_owned(),
                            needed: len,
                            capacity: buf.len(),
                        });
                    }
                }
            }
            attempt += 1;
            self.backoff(attempt, (v, q1), &mut state)?;
        }
    }

    /// The current value and its version, in a new vector.
    pub fn get_vec(&self) -> Result<(Vec<u8>, u64)> {
        let mut buf = vec![0u8; self.peek_len()];
        loop {
            match self.get(&mut buf) {
                Ok((n, v)) => {
                    buf.truncate(n);
                    return Ok((buf, v));
                }
                Err(Error::BufferTooSmall { needed, .. }) => buf.resize(needed, 0),
                Err(e) => return Err(e),
            }
        }
    }

    /// Publishes a UTF-8 string.
    pub fn set_str(&self, s: &str) -> Result<u64> {
        self.set(s.as_bytes())
    }

    /// The current value as a UTF-8 string (invalid sequences replaced by U+FFFD).
    pub fn get_string(&self) -> Result<(String, u64)> {
        let (bytes, v) = self.get_vec()?;
        let s = match String::from_utf8(bytes) {
            Ok(s) => s,
            Err(e) => String::from_utf8_lossy(e.as_bytes()).into_owned(),
        };
        Ok((s, v))
    }

    /// Sleeps until the version differs from `since`, then returns the new version. Returns at
    /// once if it already differs. `None` waits forever; otherwise [`Error::Timeout`] when
    /// `timeout` passes first. Sleeps on a futex: no polling.
    pub fn wait_changed(&self, since: u64, timeout: Option<Duration>) -> Result<u64> {
        self.wait_changed_unless(since, timeout, || false)
            .map(|v| v.expect("never cancelled"))
    }

    /// Like [`Value::wait_changed`], but also returns `Ok(None)` as soon as `cancelled()` is
    /// true. It is checked before each sleep; to end a sleep, make it true from another thread
    /// (a signal handler's thread, say), then call [`Value::wake_waiters`].
    pub fn wait_changed_unless(
        &self,
        since: u64,
        timeout: Option<Duration>,
        cancelled: impl Fn() -> bool,
    ) -> Result<Option<u64>> {
        let ctrl = self.ctrl();
        let v = ctrl.version.load(Ordering::Acquire);
        if v != since {
            return Ok(Some(v)); // already changed: no clock read, no system call
        }
        // A timeout too large to represent waits forever.
        let deadline = timeout.and_then(|t| Instant::now().checked_add(t));
        loop {
            let v = ctrl.version.load(Ordering::Acquire);
            if v != since {
                return Ok(Some(v));
            }
            if cancelled() {
                return Ok(None);
            }
            let remaining = match deadline {
                None => None,
                Some(d) => match d.checked_duration_since(Instant::now()) {
                    Some(r) if !r.is_zero() => Some(r),
                    _ => {
                        return Err(Error::Timeout {
                            name: self.name().to_owned(),
                            what: "a change of value",
                            timeout: timeout.unwrap_or_default(),
                        })
                    }
                },
            };
            ctrl.waiters.fetch_add(1, Ordering::SeqCst);
            fence(Ordering::SeqCst);
            let w = ctrl.wake.load(Ordering::Acquire);
            let r = if ctrl.version.load(Ordering::Acquire) == since && !cancelled() {
                let ts = remaining.map(|r| futex::Timespec {
                    tv_sec: i64::try_from(r.as_secs()).unwrap_or(i64::MAX),
                    tv_nsec: i64::from(r.subsec_nanos()),
                });
                futex::wait(&ctrl.wake, futex::Flags::empty(), w, ts.as_ref())
            } else {
                Ok(())
            };
            // Saturating: a peer may have reset the counter while we slept.
            let _ = ctrl
                .waiters
                .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1));
            match r {
                Ok(()) | Err(Errno::AGAIN) | Err(Errno::INTR) | Err(Errno::TIMEDOUT) => {}
                Err(e) => {
                    return Err(Error::Io {
                        name: self.name().to_owned(),
                        op: "futex(FUTEX_WAIT)",
                        source: e.into(),
                    })
                }
            }
        }
    }

    /// Wakes every thread, in every process, that sleeps in a wait on this value. They
    /// re-check their condition (and their cancel flag) and sleep again if nothing changed.
    pub fn wake_waiters(&self) {
        let ctrl = self.ctrl();
        ctrl.wake.fetch_add(1, Ordering::Release);
        let _ = futex::wake(&ctrl.wake, futex::Flags::empty(), i32::MAX as u32);
    }

    /// The length of the current value, as a hint (not checked for consistency).
    fn peek_len(&self) -> usize {
        let v = self.ctrl().version.load(Ordering::Acquire);
        let len = self.meta((v & 1) as usize).len.load(Ordering::Relaxed);
        len.min(self.capacity as u64) as usize
    }

    /// Spins, then yields; gives up when the same inconsistent state (`seen` = version and
    /// slot sequence) persists for [`STUCK_LIMIT`], which no live writer can cause (it never
    /// writes the published slot), or after [`READ_DEADLINE`] in all.
    fn backoff(&self, attempt: u32, seen: (u64, u64), state: &mut Backoff) -> Result<()> {
        if attempt < 64 {
            std::hint::spin_loop();
            return Ok(());
        }
        let now = Instant::now();
        let t0 = *state.started.get_or_insert(now);
        if state.seen != Some(seen) {
            state.seen = Some(seen);
            state.stuck_since = Some(now);
        }
        let stuck = state
            .stuck_since
            .is_some_and(|t| now.duration_since(t) > STUCK_LIMIT);
        if stuck || now.duration_since(t0) > READ_DEADLINE {
            return Err(Error::Corrupt {
                name: self.name().to_owned(),
                reason: format!(
                    "no consistent value after {attempt} attempts: version {} and its slot's \
                     sequence {} {}",
                    seen.0,
                    seen.1,
                    if stuck {
                        "do not form a valid state"
                    } else {
                        "keep changing"
                    }
                ),
            });
        }
        std::thread::yield_now();
        Ok(())
    }

    fn lock_error(&self, e: LockError) -> Error {
        let name = self.name().to_owned();
        match e {
            LockError::Timeout => Error::Timeout {
                name,
                what: "the writers' lock",
                timeout: self.lock_timeout,
            },
            LockError::Corrupt(word) => Error::Corrupt {
                name,
                reason: format!("the writers' lock word {word:#x} names this thread"),
            },
            LockError::Sys(e) => Error::Io {
                name,
                op: "futex(FUTEX_LOCK_PI)",
                source: e.into(),
            },
        }
    }

    fn ctrl(&self) -> &Control {
        // SAFETY: the mapping is at least DATA_OFFSET + 128 bytes (checked in `finish`) and
        // page aligned; `Control` is made of atomics (padding included), so a
        // shared reference is sound while other processes write it.
        unsafe { &*self.seg.mapping().ptr().add(CTRL_OFFSET).cast::<Control>() }
    }

    fn meta(&self, slot: usize) -> &SlotMeta {
        debug_assert!(slot < 2);
        // SAFETY: as for `ctrl`; `slot` is 0 or 1 (always `& 1`), so the meta line is inside
        // the first DATA_OFFSET bytes.
        unsafe {
            &*self
                .seg
                .mapping()
                .ptr()
                .add(META_OFFSET + 64 * (slot & 1))
                .cast::<SlotMeta>()
        }
    }

    fn slot_ptr(&self, slot: usize) -> *mut u8 {
        // SAFETY: DATA_OFFSET + 2 * capacity == file size (checked in `finish`), so both slots
        // lie inside the mapping.
        unsafe {
            self.seg
                .mapping()
                .ptr()
                .add(DATA_OFFSET + self.capacity * (slot & 1))
        }
    }
}
