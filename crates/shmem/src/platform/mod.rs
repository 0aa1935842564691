//! The platform backends: everything that talks to the kernel or touches mapped memory
//! directly, one folder per platform (as rustix keeps each platform's system calls in its own
//! backend folder), and the only place in the library where `unsafe` is written
//! (`tests/unsafe_fence.rs` checks it; `map.rs` is the one exception left, until it moves to
//! [`shared`]).
//!
//! - `linux/`: `segment.rs` (the lifetime protocol and `Segment`), `sys.rs` (OFD locks, `mmap`
//!   and SysV `shmat`, `atexit`), `fork.rs` (fork and exit handlers, writers' witnesses), and
//!   `mod.rs` (the writer and waiter interface below: futexes, `futex_waitv`);
//! - `windows/`: `segment.rs` (sections and persistent files), `sys.rs` (Win32 calls), and
//!   `mod.rs` (the interface below: named events and the waiters' table);
//! - `copy.rs`: the racy copies between private memory and a mapping (assembly on x86-64);
//! - `shared.rs`: [`shared::Shared`], the one door to a mapping's bytes for the protocol modules
//!   (`value.rs`, `map.rs`): bounds-checked atomic views and copies, no system calls.
//!
//! # The writer and waiter interface
//!
//! What `writer.rs` (and through it `Value` and `Map`) needs from the kernel, behind one small
//! interface. Each backend provides, with the same names and signatures:
//!
//! - `WriterSys`: per-handle state, made by `WriterSys::new(&Segment)`;
//! - `WriterSys::park(&Segment) -> Park`: the writers' lock's [`crate::wlock::Park`] (who is
//!   alive, how to sleep and wake on the lock word);
//! - `WriterSys::claim_token(&Segment, claims)`: this handle's writer token, whose liveness
//!   witness the kernel releases when the handle's process dies;
//! - `generation()`: changes when a cached token must be claimed again (after `fork`);
//! - `WriterSys::sleeper(&Segment, trailer, channel)` and `Sleeper::wait`: how a wait sleeps
//!   until a publish on its *channel* (a wake word with its may-sleep flag: a value's or a
//!   map's control line is channel 0, a map's wait bucket `b` is channel `b + 1`);
//! - `WriterSys::wake(&Segment, trailer, word, channel)`: wakes the sleepers of one channel;
//!   `WriterSys::wake_all(&Segment, trailer, words)`: wakes every sleeper of the segment;
//! - Linux only, for read-only handles: `WriterSys::wake_local` (wakes this handle's own
//!   waiters through a private word), `Sleeper::cancel_seen` and `Sleeper::wait_unannounced`
//!   (sleep on the segment's word and that private word);
//! - `TRAILER_LEN`: bytes the platform appends to a value's or a map's layout (after the
//!   value's slots, after the map's copies).
//!
//! The protocols (`seqlock.rs`, `wlock.rs`, `map/protocol.rs`), the layouts and the loops
//! around these calls (`writer.rs`) stay platform-free.

pub(crate) mod copy;
pub(crate) mod shared;

#[cfg(target_os = "linux")]
pub(crate) mod linux;
#[cfg(target_os = "linux")]
pub(crate) use linux::{generation, sys::Mapping, Park, Sleeper, WriterSys, TRAILER_LEN};

#[cfg(windows)]
pub(crate) mod windows;
#[cfg(windows)]
pub(crate) use windows::{generation, Mapping, Park, Sleeper, WriterSys, TRAILER_LEN};

/// The most channels a segment has: channel 0 and up to 254 wait buckets (the Windows
/// waiters' table records a channel in 8 bits).
pub(crate) const MAX_CHANNELS: u32 = 255;
