//! The atomics the shared-memory protocols are written with.
//!
//! Normal builds use `std`'s. Under `--cfg loom` the same protocol code (`seqlock.rs`,
//! `wlock.rs`) is compiled against loom's atomics, so the model checks in
//! `tests/loom_value.rs` exercise the shipped protocol, not a copy of it (crossbeam-utils swaps
//! its primitives the same way). Code that lays these types over mapped memory (`value.rs`)
//! is never run under loom.

#[cfg(loom)]
pub use loom::sync::atomic::{fence, AtomicU32, AtomicU64, Ordering};
#[cfg(not(loom))]
pub use std::sync::atomic::{fence, AtomicU32, AtomicU64, Ordering};

/// An Acquire load made as a Relaxed load followed by an Acquire fence: the same guarantees
/// (a release store the load reads from happens before what follows the fence), and the only
/// kind of atomic load that Rust promises is sound on read-only memory (`std::sync::atomic`,
/// "Atomic accesses to read-only memory": small Relaxed loads), which read-only handles map.
/// On x86-64 the fence is no instruction at all. Every load on a path that a read-only handle
/// runs goes through it.
pub trait LoadAcquire {
    /// The value type.
    type V;
    /// `self.load(Relaxed)`, then `fence(Acquire)`.
    fn load_acquire(&self) -> Self::V;
}

impl LoadAcquire for AtomicU64 {
    type V = u64;
    #[inline(always)]
    fn load_acquire(&self) -> u64 {
        let v = self.load(Ordering::Relaxed);
        fence(Ordering::Acquire);
        v
    }
}

impl LoadAcquire for AtomicU32 {
    type V = u32;
    #[inline(always)]
    fn load_acquire(&self) -> u32 {
        let v = self.load(Ordering::Relaxed);
        fence(Ordering::Acquire);
        v
    }
}

/// A spin hint inside a retry loop (a scheduling point under loom).
pub fn spin_hint() {
    #[cfg(loom)]
    loom::thread::yield_now();
    #[cfg(not(loom))]
    std::hint::spin_loop();
}
