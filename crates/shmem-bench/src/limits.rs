//! The limits: what the machine does with no library in the way.

use std::hint::black_box;
use std::io;
use std::sync::atomic::Ordering::{Acquire, Release};
use std::time::Instant;

use rustix::fs::Mode;
use rustix::mm::{MapFlags, ProtFlags};
use rustix::shm;
use rustix::thread::futex;

use crate::measure::Entry;
use crate::peer::{futex_wait, Peer};
use crate::stats::{Kind, Results};
use crate::sys::{ctl, SharedPage};
use crate::Ctx;

/// Where a value's slot 0 starts in its page (`value.rs`: header 64 B + control 64 B + two
/// meta lines); the `memcpy` source sits at the same page offset so that both copies see the
/// same relative alignment (on AMD Zen 3, `rep movsb` and so glibc's `memcpy` slow down
/// severalfold when destination and source are a few bytes apart modulo 4096).
pub const SLOT_PAGE_OFFSET: usize = 256;

/// The file size of a value of `capacity` bytes (header, control, two slots), so that the raw
/// cycles map exactly what `Value::open` maps.
pub fn value_file_size(capacity: usize) -> usize {
    shmem::HEADER_LEN + 192 + 2 * capacity.next_multiple_of(64)
}

/// Removes a raw POSIX shared-memory object when dropped.
#[derive(Debug)]
struct Unlink(String);

impl Drop for Unlink {
    fn drop(&mut self) {
        let _ = shm::unlink(&self.0);
    }
}

/// Maps `len` bytes of `fd`, touches the first byte, unmaps.
fn map_touch_unmap(fd: &std::os::fd::OwnedFd, len: usize, write: bool) -> io::Result<()> {
    // SAFETY: a fresh shared mapping of our own object; it aliases no Rust object and is
    // unmapped below before anything else could use it.
    let p = unsafe {
        rustix::mm::mmap(
            std::ptr::null_mut(),
            len,
            ProtFlags::READ | ProtFlags::WRITE,
            MapFlags::SHARED,
            fd,
            0,
        )?
    };
    // SAFETY: `p` is a live mapping of at least one byte; volatile, so the access happens
    // (like reading a header on attach); nobody else writes the object during the cycle.
    unsafe {
        if write {
            std::ptr::write_volatile(p.cast::<u8>(), 1);
        } else {
            black_box(std::ptr::read_volatile(p.cast::<u8>()));
        }
    }
    // SAFETY: unmaps exactly the mapping made above; nothing refers to it any more.
    unsafe { rustix::mm::munmap(p, len)? };
    Ok(())
}

/// Raw POSIX shared memory of a value's file size: an existing object to attach to, and a
/// name for create cycles; both unlinked on drop.
#[derive(Debug)]
pub struct RawShm {
    len: usize,
    existing: Unlink,
    fresh: String,
}

impl RawShm {
    /// Creates the existing object (`/shmem-bench-raw-PID`) for `capacity`.
    pub fn new(cx: &Ctx, capacity: usize) -> io::Result<RawShm> {
        let len = value_file_size(capacity);
        let name = format!("/shmem-bench-raw-{}", cx.pid);
        let fd = shm::open(
            &name,
            shm::OFlags::CREATE | shm::OFlags::EXCL | shm::OFlags::RDWR,
            Mode::from_raw_mode(0o600),
        )?;
        let existing = Unlink(name);
        rustix::fs::ftruncate(&fd, len as u64)?;
        Ok(RawShm {
            len,
            existing,
            fresh: format!("/shmem-bench-rawc-{}", cx.pid),
        })
    }

    /// `shm_open` + `mmap` + read one byte + `munmap` + `close` of the existing object.
    pub fn attach_cycle(&self) -> io::Result<()> {
        let fd = shm::open(&self.existing.0, shm::OFlags::RDWR, Mode::empty())?;
        map_touch_unmap(&fd, self.len, false)
    }

    /// `shm_open(O_CREAT|O_EXCL)` + `ftruncate` + `mmap` + write one byte + `munmap` +
    /// `close` + `shm_unlink` of a new object.
    pub fn create_cycle(&self) -> io::Result<()> {
        let fd = shm::open(
            &self.fresh,
            shm::OFlags::CREATE | shm::OFlags::EXCL | shm::OFlags::RDWR,
            Mode::from_raw_mode(0o600),
        )?;
        let _g = Unlink(self.fresh.clone());
        rustix::fs::ftruncate(&fd, self.len as u64)?;
        map_touch_unmap(&fd, self.len, true)
    }
}

/// One FUTEX_WAKE / FUTEX_WAIT round trip with a `futex-pong` peer (see `peer.rs`) on the
/// word of its control page: store the next odd number and wake, sleep until the peer has
/// stored the even one after it.
fn futex_round_trip(page: &SharedPage) -> impl FnMut() -> io::Result<()> + '_ {
    let w = page.word(ctl::FUTEX);
    let mut turn = 1u32;
    move || {
        w.store(turn, Release);
        let _ = futex::wake(w, futex::Flags::empty(), 1);
        let want = turn.wrapping_add(1);
        let t0 = Instant::now();
        loop {
            let cur = w.load(Acquire);
            if cur == want {
                break;
            }
            futex_wait(w, cur);
            if t0.elapsed().as_secs() >= 5 {
                return Err(io::Error::other("futex peer did not answer in 5 s"));
            }
        }
        turn = turn.wrapping_add(2);
        Ok(())
    }
}

/// A cache line bounced between two processes that spin on it.
fn spin_round_trip(page: &SharedPage) -> impl FnMut() -> io::Result<()> + '_ {
    let w = page.word(ctl::SPIN);
    let mut turn = 1u32;
    move || {
        w.store(turn, Release);
        let want = turn.wrapping_add(1);
        let mut spins = 0u64;
        while w.load(Acquire) != want {
            std::hint::spin_loop();
            spins += 1;
            if spins > 2_000_000_000 {
                return Err(io::Error::other("spinning peer did not answer"));
            }
        }
        turn = turn.wrapping_add(2);
        Ok(())
    }
}

/// The limits of a run: memcpy of each size, the clock, raw attach and create, the futex
/// ping-pong and (with two CPUs) the cache-line ping-pong.
#[derive(Debug)]
pub struct Limits {
    sizes: Vec<usize>,
    raw: RawShm,
    futex: Peer,
    spin: Option<Peer>,
}

impl Limits {
    /// Creates the raw object and starts the peers.
    pub fn new(cx: &Ctx, r: &mut Results) -> io::Result<Limits> {
        let start = |role| -> io::Result<Peer> {
            let mut p = Peer::spawn(role, &[], vec![], cx.peer_cpu)?;
            p.wait_ready()?;
            Ok(p)
        };
        let spin = match cx.peer_cpu {
            Some(_) => Some(start("spin-pong")?),
            None => {
                r.skip("cache-line ping-pong", "needs two CPUs");
                None
            }
        };
        Ok(Limits {
            sizes: cx.sizes.clone(),
            raw: RawShm::new(cx, crate::ATTACH_CAPACITY)?,
            futex: start("futex-pong")?,
            spin,
        })
    }
}

impl crate::Scenario for Limits {
    fn entries(&self) -> io::Result<Vec<Entry<'_>>> {
        let mut e = vec![
            Entry::op("clock read", "Instant::now", 0, || {
                black_box(Instant::now());
                Ok(())
            }),
            Entry::call("empty call", "Instant::now", 0, Kind::Op, || Ok(())),
        ];
        for &size in &self.sizes {
            // `memcpy` from a buffer at the page offset of a value's slot into a `Vec`, as
            // `get` does.
            let backing = vec![0x5au8; size + 2 * 4096];
            let skip = (4096 + SLOT_PAGE_OFFSET - backing.as_ptr() as usize % 4096) % 4096;
            let mut dst = vec![0u8; size];
            e.push(Entry::op("copy", "memcpy", size, move || {
                let src = &backing[skip..skip + size];
                black_box(&mut dst[..]).copy_from_slice(black_box(src));
                Ok(())
            }));
        }
        let (cap, l) = (crate::ATTACH_CAPACITY, Kind::Lifecycle);
        e.push(Entry::call(
            "attach+detach",
            "shm_open+mmap",
            cap,
            l,
            || self.raw.attach_cycle(),
        ));
        e.push(Entry::call(
            "create+destroy",
            "shm_open+mmap",
            cap,
            l,
            || self.raw.create_cycle(),
        ));
        let futex = futex_round_trip(self.futex.page());
        e.push(Entry::half(
            "wake ping-pong",
            "futex",
            4,
            Kind::Blocking,
            futex,
        ));
        if let Some(p) = &self.spin {
            let op = spin_round_trip(p.page());
            e.push(
                Entry::half("poll ping-pong", "cache line", 4, Kind::BusyPoll, op).gated(p.page()),
            );
        }
        Ok(e)
    }

    fn finish(self: Box<Self>) -> io::Result<()> {
        self.futex.finish()?;
        self.spin.map_or(Ok(()), Peer::finish)
    }
}
