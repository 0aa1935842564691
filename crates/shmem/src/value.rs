//! A consistent shared value: a double-buffered seqlock in a segment.
//!
//! # Layout (offsets from the start of the segment file)
//!
//! ```text
//!    0  segment header (header.rs), kind = value
//!   64  control, one cache line (seqlock::Control), written by writers and waiters:
//!         version  u64  the last published version; 0 = nothing set yet
//!         wake     u32  futex word: a counter bumped at every publish and `wake_waiters` (of a read-write handle)
//!         sleepers u32  set by a waiter about to sleep, cleared by the publisher that wakes
//!         lock     u32  the writers' futex lock (wlock.rs)
//!         claims   u32  the counter writer tokens are drawn from
//!         hold_off u32  readers asking writers to pause
//!  128  slot 0 meta: seq u64, version u64, len u64 (one cache line)
//!  192  slot 1 meta
//!  256  slot 0 data: `slot_cap` bytes (the capacity, a multiple of 64)
//!  256 + slot_cap  slot 1 data
//!  256 + 2 * slot_cap  the platform's trailer (`platform::TRAILER_LEN` bytes): none on
//!         Linux; on Windows the waiters' table (`platform/windows/mod.rs`)
//! ```
//!
//! All-zero memory (what a fresh segment is) is a valid state: version 0, an empty value in
//! slot 0, the lock free, nobody waiting. So creating a value needs no initialisation step.
//! The capacity is derived from the file size, never read from the segment. The layout up to
//! the slots is the same on every platform; only the trailer differs, and no segment is ever
//! shared between a Linux and a Windows kernel.
//!
//! # Protocol
//!
//! The seqlock, the waiters' flag and the readers' hold-off request are in `seqlock.rs`, the
//! writers' lock in `wlock.rs`: every atomic operation of the protocol lives there, free of
//! system calls, and the loom model checks run that code. This file lays those structures over
//! the mapping through `platform/shared.rs` (bounds-checked atomic views and the racy copies of
//! `platform/copy.rs`), and bounds-checks what it reads. The system calls
//! (sleeping and waking, and the witness that tells a live lock holder from a gone one) are the
//! platform's, behind `platform/` (Linux: the futex and OFD locks; Windows: named events).
//!
//! The writer's token, the lock, the wake-up after a publish and the wait loop are
//! `writer.rs`'s, shared with `Map`: a value's waits all use channel 0 (the control line).
//!
//! # Read-only handles
//!
//! A handle opened read-only (`Access::ReadOnly`: `SHM_RDONLY`/`PROT_READ`) writes nothing:
//! `set`, `set_with` and `sole_writer` are refused with a permission error before any lock or
//! slot is touched. Its reader never asks writers to hold off (that is a write of `hold_off`),
//! so under a writer that republishes faster than it copies it is bounded by the read
//! deadline only (`retry.rs`, `Corrupt` after 2 s saying so). Its waiter cannot set the
//! `sleepers` flag, and writers make the wake-up system call only when they find that flag
//! set, so a read-only wait needs the writers to wake unannounced: a value created with a
//! mode that lets group or others read without writing (0644, 0640) records
//! `WakePolicy::EveryPublish` in its header, and every publish on it makes the `FUTEX_WAKE`
//! call (one system call per `set`, on such values only: about 0.5 us here, BENCHMARKS.md).
//! The waiter then reads `wake` and re-checks `version` without announcing itself
//! (`seqlock::check_unannounced` and `Writer::wait_unannounced`, which state why no wake-up is lost;
//! a map's read-only waiters use the same loop) and sleeps with
//! `futex_waitv` on `wake` and a private word of its handle, which `wake_waiters` on a
//! read-only handle bumps and wakes (so its own threads can still cancel its waits without
//! writing the segment). A read-only wait on a value without the flag is refused with a
//! permission error that says to open it read-write; that avoids polling, and a value whose
//! mode lets nobody read without writing has no reader that needs it. Why not poll, or make
//! every value wake always: polling costs latency or CPU for every read-only waiter, and waking
//! always costs every `set` a system call on values that no read-only reader can open.
//!

use std::time::{Duration, Instant};

use crate::error::{Error, Result};
use crate::header::{Lifetime, HEADER_LEN};
use crate::platform;
use crate::platform::shared::{Shared, Slots, SlotsLayout};
use crate::retry::{ask_hold_off, Backoff};
use crate::segment::{Builder, Segment};
use crate::seqlock::{self, Control, Pass, SlotMeta};
use crate::sync::LoadAcquire;
use crate::wlock;
use crate::writer::{self, Channel, Site, WaitFor, Writer};

const CTRL_OFFSET: usize = HEADER_LEN;
const META_OFFSET: usize = 128;
const DATA_OFFSET: usize = 256;
/// Bytes the platform appends after the two slots.
const TRAILER: usize = platform::TRAILER_LEN;
/// Data bytes of a value segment besides the two slots.
const OVERHEAD: usize = DATA_OFFSET - HEADER_LEN + TRAILER;
const SLOT_ALIGN: usize = 64;

const _: () = assert!(CTRL_OFFSET + 64 == META_OFFSET);
const _: () = assert!(META_OFFSET + 2 * 64 == DATA_OFFSET);

/// Options for opening a value; start with [`Value::builder`].
#[derive(Clone, Debug)]
pub struct ValueBuilder {
    seg: Builder,
    capacity: usize,
    lock_timeout: Duration,
    wait_spin: Duration,
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

    /// The file mode of a newly created value (see [`Builder::mode`]). A mode that lets group
    /// or others read without writing (0644, 0640) makes every `set` wake waiters, so that
    /// read-only handles can wait ([`crate::WakePolicy`]).
    pub fn mode(mut self, mode: u32) -> ValueBuilder {
        self.seg = self.seg.mode(mode);
        self
    }

    /// Read-write (the default) or read-only access (see [`crate::Access`]). A read-only value
    /// needs only read permission and never writes the segment: `get` and `version` work,
    /// `set`, `set_with` and `sole_writer` fail with [`Error::PermissionDenied`].
    /// Its readers cannot ask writers to hold off, so under a writer that never pauses a
    /// `get` is bounded only by its deadline ([`Error::Corrupt`] after 2 s of disturbed
    /// passes). `wait_changed` works on values whose writers wake at every publish
    /// ([`crate::WakePolicy::EveryPublish`]) and is refused on the others.
    #[cfg(target_os = "linux")]
    pub fn access(mut self, access: crate::Access) -> ValueBuilder {
        self.seg = self.seg.access(access);
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

    /// How long a wait watches the version before it sleeps on the futex: 20 us by default,
    /// `Duration::ZERO` to sleep at once. A change that comes within the window is seen without
    /// the wake-up of a sleeping CPU (several microseconds on a VM); a wait that ends in sleep
    /// costs at most the window in CPU time.
    pub fn wait_spin(mut self, spin: Duration) -> ValueBuilder {
        self.wait_spin = spin;
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
        let layout = SlotsLayout::new(capacity)
            .filter(|l| l.end() + TRAILER == seg.mapping().len())
            .ok_or_else(|| Error::Corrupt {
                name: seg.name().to_owned(),
                reason: format!("{size} bytes is not a valid value layout"),
            })?;
        Ok(Value {
            writer: Writer::new(&seg, self.lock_timeout, self.wait_spin)?,
            capacity,
            layout,
            seg,
        })
    }
}

/// The capacity of a value segment whose file has `size` bytes, if that is a valid layout:
/// `DATA_OFFSET + 2 * capacity + TRAILER`, with the capacity a positive multiple of 64.
pub(crate) fn capacity_for_size(size: u64) -> Option<usize> {
    let slots = usize::try_from(size)
        .ok()?
        .checked_sub(DATA_OFFSET + TRAILER)?;
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
    /// The control and meta lines below `DATA_OFFSET`, and the two slots of `capacity` bytes
    /// from there up to the platform's trailer (checked in `finish`).
    layout: SlotsLayout<DATA_OFFSET>,
    /// The writer's token, lock and waits (`writer.rs`).
    writer: Writer,
}

impl Value {
    /// Starts the options for value `name` (transient, owner-only, in `/dev/shm`).
    pub fn builder(name: &str) -> ValueBuilder {
        ValueBuilder {
            seg: Segment::builder(name),
            capacity: 0,
            lock_timeout: writer::DEFAULT_LOCK_TIMEOUT,
            wait_spin: writer::DEFAULT_WAIT_SPIN,
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
        self.ctrl().version.load_acquire()
    }

    /// Publishes `data` as the new value and returns its version. A value longer than
    /// [`Value::capacity`] is refused with [`Error::TooLarge`] and changes nothing.
    ///
    /// # Errors
    /// [`Error::TooLarge`]; [`Error::Timeout`] when another live writer holds the lock for
    /// longer than the lock timeout (a dead one is taken over at once); [`Error::Io`] when this
    /// handle cannot claim its liveness witness (first write only).
    pub fn set(&self, data: &[u8]) -> Result<u64> {
        self.writable("set")?;
        self.publish_with(data.len(), |slot, _| self.fill_slot(slot, data))
    }

    /// Publishes a value of `len` bytes written in place by `fill`, with no staging copy, and
    /// returns its version. `fill` gets the next slot's `len` bytes (their old contents are
    /// unspecified) while this handle holds the writers' lock; readers keep reading the
    /// previous value until `fill` returns. If `fill` panics, or the process dies inside it,
    /// nothing is published and the next writer goes on as after a crashed `set`.
    ///
    /// The bytes are shared memory: a process with write access that ignores the protocol
    /// could change them while `fill` runs, so `fill` should write them, not trust what it
    /// reads back.
    ///
    /// # Errors
    /// As [`Value::set`].
    pub fn set_with(&self, len: usize, fill: impl FnOnce(&mut [u8])) -> Result<u64> {
        self.writable("set_with")?;
        self.publish_with(len, |slot, held| fill(self.slot_mut(slot, len, held)))
    }

    /// The writer's side of the protocol: lock, publish through `fill(slot, lock)`, unlock,
    /// wake.
    fn publish_with(&self, len: usize, fill: impl FnOnce(usize, &mut Held<'_>)) -> Result<u64> {
        self.check_len(len)?;
        let mut guard = self.lock()?;
        let next = self.publish_locked(&mut guard, len, fill);
        drop(guard);
        self.wake_after_publish();
        Ok(next)
    }

    fn check_len(&self, len: usize) -> Result<()> {
        if len > self.capacity {
            return Err(Error::TooLarge {
                name: self.name().to_owned(),
                len,
                capacity: self.capacity,
            });
        }
        Ok(())
    }

    /// Takes the writers' lock under this handle's token.
    fn lock(&self) -> Result<Held<'_>> {
        self.writer.lock(&self.seg, self.ctrl())
    }

    /// With the lock held: hold off for asking readers, fill the next slot, publish.
    fn publish_locked(
        &self,
        held: &mut Held<'_>,
        len: usize,
        fill: impl FnOnce(usize, &mut Held<'_>),
    ) -> u64 {
        let ctrl = self.ctrl();
        writer::honour_hold_off(ctrl, self.capacity);
        let next = seqlock::write(ctrl, self.metas(), len as u64, |slot| fill(slot, held));
        seqlock::publish(ctrl, next);
        next
    }

    fn wake_after_publish(&self) {
        self.writer.wake_after_publish(self.site(), &[]);
    }

    fn site(&self) -> Site<'_> {
        Site {
            seg: &self.seg,
            ctrl: self.ctrl(),
            trailer: self.trailer(),
        }
    }

    /// Makes this handle the value's only writer until the returned [`SoleWriter`] is dropped
    /// or its process dies: it takes the writers' lock (waiting as `set` does) and keeps it, so
    /// its `set`s need no lock at all. Other writers wait for it as for any holder and get
    /// [`Error::Timeout`]; when its process exits, execs or crashes, the kernel releases its
    /// witness and they take over.
    ///
    /// # Errors
    /// As [`Value::set`], for taking the lock.
    pub fn sole_writer(&self) -> Result<SoleWriter<'_>> {
        self.writable("sole_writer")?;
        Ok(SoleWriter {
            value: self,
            guard: self.lock()?,
        })
    }

    /// Copies the current value into `buf`; returns its length and version. If `buf` is too
    /// small, returns [`Error::BufferTooSmall`] with the length needed and copies nothing.
    ///
    /// Never blocks on a writer. After a pass that a writer disturbed, the reader asks writers
    /// to hold off (`seqlock.rs`), so a writer running flat out cannot starve it.
    ///
    /// # Errors
    /// [`Error::BufferTooSmall`]; [`Error::Corrupt`] when the segment holds no consistent
    /// value for a long time (a peer wrote garbage).
    pub fn get(&self, buf: &mut [u8]) -> Result<(usize, u64)> {
        match self.pass(buf) {
            Pass::Copied { len, version } => Ok((len, version)),
            Pass::TooSmall { needed } => Err(self.too_small(needed, buf.len())),
            Pass::Retry { seen } => self.get_disturbed(buf, seen),
        }
    }

    /// One reader pass of `get` (`seqlock::read`), copying into `buf`.
    #[inline(always)]
    fn pass(&self, buf: &mut [u8]) -> Pass {
        // One bounds check for the lines and the slots; the copy's `len <= cap` is the
        // seqlock's own check (`Slots::read`).
        let slots = self.slots();
        let ctrl = slots.line::<Control, CTRL_OFFSET>();
        let metas = slots.line::<[SlotMeta; 2], META_OFFSET>();
        seqlock::read(ctrl, metas, slots.cap() as u64, |slot, len| {
            if len > buf.len() {
                return false;
            }
            slots
                .read(slot, &mut buf[..len])
                .expect("`seqlock::read` checked `len <= capacity`");
            true
        })
    }

    /// `get` after a pass that a writer disturbed (it saw `seen`): out of line, as the map's
    /// retries are, so that the undisturbed pass is one straight run that builds no retry
    /// state. Each retry asks writers to hold off (`seqlock.rs`) and backs off, until the
    /// stuck deadline; the requests are withdrawn either way.
    #[cold]
    #[inline(never)]
    fn get_disturbed(&self, buf: &mut [u8], mut seen: (u64, u64)) -> Result<(usize, u64)> {
        let ctrl = self.slots().line::<Control, CTRL_OFFSET>();
        let mut backoff = if self.read_only() {
            Backoff::without_hold_off()
        } else {
            Backoff::default()
        };
        let mut asked = 0u32;
        let r = loop {
            // A read-only handle cannot ask: its deadline bounds it (retry.rs).
            if !self.read_only() {
                ask_hold_off(ctrl, &mut asked);
            }
            if let Err(e) = backoff.retry(self.name(), "value", seen) {
                break Err(e);
            }
            match self.pass(buf) {
                Pass::Copied { len, version } => break Ok((len, version)),
                Pass::TooSmall { needed } => break Err(self.too_small(needed, buf.len())),
                Pass::Retry { seen: again } => seen = again,
            }
        };
        seqlock::end_hold_off(ctrl, asked);
        r
    }

    #[cold]
    fn too_small(&self, needed: usize, capacity: usize) -> Error {
        Error::BufferTooSmall {
            name: self.name().to_owned(),
            needed,
            capacity,
        }
    }

    /// The current value and its version, in a new vector.
    ///
    /// # Errors
    /// As [`Value::get`].
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
    ///
    /// # Errors
    /// As [`Value::set`].
    pub fn set_str(&self, s: &str) -> Result<u64> {
        self.set(s.as_bytes())
    }

    /// The current value as a UTF-8 string (invalid sequences replaced by U+FFFD).
    ///
    /// # Errors
    /// As [`Value::get`].
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
    /// `timeout` passes first. Sleeps in the kernel (Linux: a futex; Windows: a named event the
    /// writer signals): no polling, except on Windows for a 65th simultaneous waiter on one
    /// value, which re-checks every millisecond (the waiters' table has 64 slots).
    ///
    /// # Errors
    /// [`Error::Timeout`]; [`Error::Io`] if the sleep fails.
    pub fn wait_changed(&self, since: u64, timeout: Option<Duration>) -> Result<u64> {
        self.wait_changed_unless(since, timeout, || false)
            .map(|v| v.expect("never cancelled"))
    }

    /// Like [`Value::wait_changed`], but also returns `Ok(None)` as soon as `cancelled()` is
    /// true. It is checked before each sleep; to end a sleep, make it true from another thread
    /// (a signal handler's thread, say), then call [`Value::wake_waiters`].
    ///
    /// # Errors
    /// As [`Value::wait_changed`].
    pub fn wait_changed_unless(
        &self,
        since: u64,
        timeout: Option<Duration>,
        cancelled: impl Fn() -> bool,
    ) -> Result<Option<u64>> {
        let ctrl = self.ctrl();
        let v = ctrl.version.load_acquire();
        if v != since {
            return Ok(Some(v)); // already changed: no clock read, no system call
        }
        // A timeout too large to represent waits forever.
        let deadline = timeout.and_then(|t| Instant::now().checked_add(t));
        let w = WaitFor {
            what: "a change of value",
            timeout,
        };
        let changed = || {
            let v = ctrl.version.load_acquire();
            Ok((v != since).then_some(v))
        };
        let at = self.site();
        #[cfg(target_os = "linux")]
        if self.read_only() {
            // No `sleepers` flag (that would be a write): writer.rs's unannounced wait.
            return self
                .writer
                .wait_unannounced(at, "value", deadline, w, changed, &cancelled);
        }
        self.writer
            .wait(at, Channel::control(ctrl), deadline, w, changed, &cancelled)
    }

    /// Whether this handle is read-only (Linux only; Windows handles always write).
    #[inline]
    fn read_only(&self) -> bool {
        self.seg.read_only()
    }

    /// `Ok` when this handle may write; the permission error for `op` on a read-only one.
    fn writable(&self, op: &str) -> Result<()> {
        self.seg.writable(op)
    }

    /// Wakes every thread, in every process, that sleeps in a wait on this value. They
    /// re-check their condition (and their cancel flag) and sleep again if nothing changed.
    ///
    /// On a read-only handle, which may not write the segment's wake-up counter, it wakes this
    /// handle's own waiters only (how a wait is cancelled from another thread; they sleep on
    /// a private word of the handle as well), and waiters elsewhere sleep on.
    pub fn wake_waiters(&self) {
        #[cfg(target_os = "linux")]
        if self.read_only() {
            self.writer.wake_local();
            return;
        }
        self.writer.wake_waiters(self.site(), &[&self.ctrl().wake]);
    }

    /// The length of the current value, as a hint (not checked for consistency).
    fn peek_len(&self) -> usize {
        let v = self.ctrl().version.load_acquire();
        let len = self.metas()[(v & 1) as usize]
            .len
            .load(crate::sync::Ordering::Relaxed);
        len.min(self.capacity as u64) as usize
    }

    /// The value's lines and slots (inside: `finish` checked that the slots end where the
    /// trailer starts, and a mapping does not shrink).
    #[inline]
    fn slots(&self) -> Slots<'_, DATA_OFFSET> {
        Shared::of(self.seg.mapping())
            .slots(self.layout)
            .expect("value layout checked at open")
    }

    /// The control line.
    #[inline]
    fn ctrl(&self) -> &Control {
        self.slots().line::<Control, CTRL_OFFSET>()
    }

    /// The two slots' meta lines.
    #[inline]
    fn metas(&self) -> &[SlotMeta; 2] {
        self.slots().line::<[SlotMeta; 2], META_OFFSET>()
    }

    /// The offset of the platform's trailer, inside the mapping (`finish` checked that
    /// `DATA_OFFSET + 2 * capacity + TRAILER` is the segment's size).
    fn trailer(&self) -> usize {
        self.layout.end()
    }

    /// Copies `data` (at most `capacity` bytes, checked by the caller) into slot `slot`; the
    /// caller holds the writers' lock and writes.
    fn fill_slot(&self, slot: usize, data: &[u8]) {
        self.slots()
            .write(slot, data)
            .expect("value layout checked at open, and the handle writes");
    }

    /// Slot `slot`'s first `len` bytes (at most `capacity`, checked by the caller), to write in
    /// place while `held`, this handle's writers' lock, stays borrowed.
    fn slot_mut<'g>(&'g self, slot: usize, len: usize, held: &'g mut Held<'_>) -> &'g mut [u8] {
        self.slots()
            .bytes_mut(slot, len, held)
            .expect("value layout checked at open, the handle writes, and it holds its lock")
    }
}

/// The writers' lock, held by a handle of this value.
type Held<'a> = wlock::Guard<'a, platform::Park<'a>>;

/// A handle that holds the writers' lock for its whole life: see [`Value::sole_writer`].
#[derive(Debug)]
pub struct SoleWriter<'a> {
    value: &'a Value,
    guard: Held<'a>,
}

impl SoleWriter<'_> {
    /// Publishes `data` without taking the lock (this handle holds it); as [`Value::set`].
    ///
    /// # Errors
    /// [`Error::TooLarge`], changing nothing.
    pub fn set(&mut self, data: &[u8]) -> Result<u64> {
        let v = self.value;
        v.check_len(data.len())?;
        let next = v.publish_locked(&mut self.guard, data.len(), |slot, _| {
            v.fill_slot(slot, data)
        });
        v.wake_after_publish();
        Ok(next)
    }

    /// Publishes `len` bytes written in place by `fill`; as [`Value::set_with`].
    ///
    /// # Errors
    /// [`Error::TooLarge`], changing nothing.
    pub fn set_with(&mut self, len: usize, fill: impl FnOnce(&mut [u8])) -> Result<u64> {
        let v = self.value;
        v.check_len(len)?;
        let next = v.publish_locked(&mut self.guard, len, |slot, held| {
            fill(v.slot_mut(slot, len, held))
        });
        v.wake_after_publish();
        Ok(next)
    }

    /// The value it writes.
    pub fn value(&self) -> &Value {
        self.value
    }
}
