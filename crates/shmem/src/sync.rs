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

/// A spin hint inside a retry loop (a scheduling point under loom).
pub fn spin_hint() {
    #[cfg(loom)]
    loom::thread::yield_now();
    #[cfg(not(loom))]
    std::hint::spin_loop();
}
