//! The platform side of a value: what `value.rs` needs from the kernel, behind one small
//! interface that each platform implements in its own file (as rustix keeps each platform's
//! system calls in its own backend folder).
//!
//! Each backend provides, with the same names and signatures:
//!
//! - `ValueSys`: per-`Value` state, made by `ValueSys::new(&Segment)`;
//! - `ValueSys::park(&Segment) -> Park`: the writers' lock's [`crate::wlock::Park`] (who is
//!   alive, how to sleep and wake on the lock word);
//! - `ValueSys::claim_token(&Segment, claims)`: this handle's writer token, whose liveness
//!   witness the kernel releases when the handle's process dies;
//! - `generation()`: changes when a cached token must be claimed again (after `fork`);
//! - `ValueSys::sleeper(&Segment, trailer)` and `Sleeper::wait`: how a `wait_changed` sleeps
//!   until a publish or `wake_waiters`, and `ValueSys::wake_all` to wake every sleeper;
//! - `TRAILER_LEN`: bytes the platform appends to a value segment after its two slots.
//!
//! The protocols (`seqlock.rs`, `wlock.rs`) and the layout stay platform-free.

#[cfg(target_os = "linux")]
mod linux;
#[cfg(target_os = "linux")]
pub(crate) use linux::{generation, Park, Sleeper, ValueSys, TRAILER_LEN};

#[cfg(windows)]
pub(crate) mod windows;
#[cfg(windows)]
pub(crate) use windows::{generation, Park, ValueSys, TRAILER_LEN};
