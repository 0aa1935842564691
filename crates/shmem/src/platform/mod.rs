//! The platform side of a writer and a waiter: what `writer.rs` (and through it `Value` and
//! `Map`) needs from the kernel, behind one small interface that each platform implements in
//! its own file (as rustix keeps each platform's system calls in its own backend folder).
//!
//! Each backend provides, with the same names and signatures:
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

#[cfg(target_os = "linux")]
mod linux;
#[cfg(target_os = "linux")]
pub(crate) use linux::{generation, Park, Sleeper, WriterSys, TRAILER_LEN};

#[cfg(windows)]
pub(crate) mod windows;
#[cfg(windows)]
pub(crate) use windows::{generation, Park, Sleeper, WriterSys, TRAILER_LEN};

/// The most channels a segment has: channel 0 and up to 254 wait buckets (the Windows
/// waiters' table records a channel in 8 bits).
pub(crate) const MAX_CHANNELS: u32 = 255;
