//! The unwind boundary: no Rust panic ever crosses into C.
//!
//! Every exported function runs its body through one of these. A panic would be a bug in
//! libshmem; it is caught here (the default hook has already printed it to stderr) and becomes
//! [`SHMEM_ERR_INTERNAL`] or the function's harmless default, never an abort of the caller.

use std::ffi::c_int;
use std::panic::{catch_unwind, AssertUnwindSafe};

use crate::error::SHMEM_ERR_INTERNAL;

/// Runs `f`, turning a panic into [`SHMEM_ERR_INTERNAL`], and returns its code as an `int`.
pub(crate) fn guard<R: Into<c_int>>(f: impl FnOnce() -> R) -> c_int {
    guard_or(SHMEM_ERR_INTERNAL.into(), || f().into())
}

/// Runs `f`, turning a panic into `default`.
///
/// `AssertUnwindSafe` holds because nothing a body shares outlives a panic in a broken state:
/// handles are only read (their counters are atomics, each change a single operation), and the
/// handle table's guards release their references when they are dropped by the unwind.
pub(crate) fn guard_or<T>(default: T, f: impl FnOnce() -> T) -> T {
    catch_unwind(AssertUnwindSafe(f)).unwrap_or(default)
}
