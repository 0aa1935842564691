//! Pointer plumbing: turning C arguments into Rust references and slices, checking each for
//! NULL at run time (a `debug_assert!` would vanish from release builds).
//!
//! These helpers cannot check what C does not tell: that a non-NULL pointer points to live
//! memory of the stated length. That is the caller's side of the contract, stated on each
//! exported function.

use std::ffi::{c_char, CStr};
use std::path::PathBuf;

/// The directory of segments: `$SHMEM_DIR` when set and not empty, else `/dev/shm` (on
/// Windows, where only persistent segments are files: `%LOCALAPPDATA%\shmem`).
pub(crate) fn segment_dir() -> PathBuf {
    match std::env::var_os("SHMEM_DIR") {
        Some(d) if !d.is_empty() => PathBuf::from(d),
        #[cfg(target_os = "linux")]
        _ => PathBuf::from(shmem_core::DEFAULT_DIR),
        #[cfg(windows)]
        _ => shmem_core::default_dir(),
    }
}

/// Borrows a NUL-terminated string argument as UTF-8; `None` if NULL or not UTF-8.
///
/// # Safety
/// A non-NULL `p` points to a NUL-terminated string that lives and stays unchanged during the
/// call.
pub(crate) unsafe fn try_str<'a>(p: *const c_char) -> Option<&'a str> {
    if p.is_null() {
        return None;
    }
    // SAFETY: `p` is not NULL, and the caller guarantees it is a live NUL-terminated string.
    unsafe { CStr::from_ptr(p) }.to_str().ok()
}

/// Borrows `len` bytes at `p`; a length of 0 needs no pointer. `None` if `p` is NULL with a
/// non-zero length, or the length is larger than any object can be.
///
/// # Safety
/// A non-NULL `p` points to `len` readable bytes that stay unchanged during the call.
pub(crate) unsafe fn try_slice<'a>(p: *const u8, len: usize) -> Option<&'a [u8]> {
    if len == 0 {
        return Some(&[]);
    }
    if p.is_null() || len > isize::MAX as usize {
        return None;
    }
    // SAFETY: `p` is not NULL, `len` fits in `isize`, and the caller guarantees `len` readable
    // bytes at `p`.
    Some(unsafe { std::slice::from_raw_parts(p, len) })
}

/// Borrows `len` writable bytes at `p`; as [`try_slice`].
///
/// # Safety
/// A non-NULL `p` points to `len` writable bytes that nothing else accesses during the call.
pub(crate) unsafe fn try_slice_mut<'a>(p: *mut u8, len: usize) -> Option<&'a mut [u8]> {
    if len == 0 {
        return Some(&mut []);
    }
    if p.is_null() || len > isize::MAX as usize {
        return None;
    }
    // SAFETY: `p` is not NULL, `len` fits in `isize`, and the caller guarantees `len` writable
    // bytes at `p` that nothing else uses meanwhile.
    Some(unsafe { std::slice::from_raw_parts_mut(p, len) })
}

/// Stores `v` through an out-parameter that may be NULL (then nothing is stored).
///
/// # Safety
/// A non-NULL `p` points to writable, properly aligned memory for a `T`.
pub(crate) unsafe fn write_opt<T>(p: *mut T, v: T) {
    if !p.is_null() {
        // SAFETY: not NULL, and the caller guarantees it is valid for writes.
        unsafe { p.write(v) };
    }
}
