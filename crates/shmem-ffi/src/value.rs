//! The handle API: `shmem_value`, a consistent byte string shared between processes.

use std::ffi::{c_char, c_int, c_void};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use shmem_core::{Lifetime, Value};

use crate::error::{
    code_of, SHMEM_ERR_BUFFER_TOO_SMALL, SHMEM_ERR_CANCELLED, SHMEM_ERR_INVALID_ARGUMENT, SHMEM_OK,
};
use crate::ffi::{self, segment_dir};
use crate::panic;

/// `shmem_open` flag: create the segment if no live one has the name (its creator sees
/// `shmem_created` return 1). Without it, only a live segment is opened.
pub const SHMEM_CREATE: u32 = 1;
/// `shmem_open` flag, with `SHMEM_CREATE`: fail with `SHMEM_ERR_EXISTS` if a live segment has
/// the name.
pub const SHMEM_EXCLUSIVE: u32 = 2;
/// `shmem_open` flag, with `SHMEM_CREATE`: a newly created segment stays after its last user
/// closes it, until `shmem_unlink`. Without it, a segment is transient: it is freed when the
/// last process that has it open closes it, exits or crashes.
pub const SHMEM_PERSISTENT: u32 = 4;

const ALL_FLAGS: u32 = SHMEM_CREATE | SHMEM_EXCLUSIVE | SHMEM_PERSISTENT;

/// A value shared between processes: a byte string of up to a fixed capacity, with a version
/// that grows by one at each `shmem_set`. Readers never see a torn value and never block.
///
/// A handle may be used by several threads at once (`shmem_wake` stops their waits); only
/// `shmem_close` must not run concurrently with any other use of the same handle.
#[allow(non_camel_case_types)] // the C name
#[derive(Debug)]
pub struct shmem_value {
    value: Value,
    /// Bumped by `shmem_wake`; a `shmem_wait` ends when it differs from what it saw at start.
    wakes: AtomicU64,
}

/// Opens the value segment `name` in the segment directory (`$SHMEM_DIR` when set and not
/// empty, else `/dev/shm`; the file is `<dir>/shmem.<name>`) and stores a new handle in `*out`.
///
/// `name` is 1 to 200 bytes of `[A-Za-z0-9._-]`, not starting with a dot. `capacity` is the
/// largest value in bytes (rounded up to a multiple of 64); it is needed to create, and an
/// existing segment must hold at least that much (0 accepts any). `flags` is 0 (open a live
/// segment only: `SHMEM_ERR_NOT_FOUND` if there is none) or `SHMEM_CREATE`, optionally with
/// `SHMEM_EXCLUSIVE` and/or `SHMEM_PERSISTENT`. A new segment is readable and writable by its
/// owner only.
///
/// Returns `SHMEM_OK`, or an error code and leaves `*out` unchanged. Close the handle with
/// `shmem_close`.
///
/// # Safety
/// `name` is NULL or a NUL-terminated string; `out` is NULL or points to writable memory for a
/// pointer.
#[no_mangle]
pub unsafe extern "C" fn shmem_open(
    name: *const c_char,
    capacity: usize,
    flags: u32,
    out: *mut *mut shmem_value,
) -> c_int {
    panic::guard(|| {
        // SAFETY: the caller passes NULL or a NUL-terminated string.
        let Some(name) = (unsafe { ffi::try_str(name) }) else {
            return SHMEM_ERR_INVALID_ARGUMENT;
        };
        if out.is_null() || flags & !ALL_FLAGS != 0 {
            return SHMEM_ERR_INVALID_ARGUMENT;
        }
        let create = flags & SHMEM_CREATE != 0;
        if !create && flags != 0 {
            return SHMEM_ERR_INVALID_ARGUMENT; // EXCLUSIVE or PERSISTENT without CREATE
        }
        let lifetime = if flags & SHMEM_PERSISTENT != 0 {
            Lifetime::Persistent
        } else {
            Lifetime::Transient
        };
        let builder = Value::builder(name)
            .dir(segment_dir())
            .capacity(capacity)
            .lifetime(lifetime);
        let opened = if !create {
            builder.open_existing()
        } else if flags & SHMEM_EXCLUSIVE != 0 {
            builder.create_new()
        } else {
            builder.open()
        };
        match opened {
            Ok(value) => {
                let handle = Box::into_raw(Box::new(shmem_value {
                    value,
                    wakes: AtomicU64::new(0),
                }));
                // SAFETY: `out` is not NULL (checked above) and the caller guarantees it is
                // writable.
                unsafe { out.write(handle) };
                SHMEM_OK
            }
            Err(e) => code_of(&e),
        }
    })
}

/// Whether this handle created the segment (like Windows' "not `ERROR_ALREADY_EXISTS`"): 1 if
/// it did (the value was then empty, at version 0), 0 if it opened an existing one, or
/// `SHMEM_ERR_INVALID_ARGUMENT` if `v` is NULL.
///
/// # Safety
/// `v` is NULL or a handle from `shmem_open` that has not been closed.
#[no_mangle]
pub unsafe extern "C" fn shmem_created(v: *const shmem_value) -> c_int {
    panic::guard(|| {
        // SAFETY: the caller passes NULL or a live handle.
        match unsafe { ffi::try_ref(v) } {
            Some(v) => c_int::from(v.value.created()),
            None => SHMEM_ERR_INVALID_ARGUMENT.into(),
        }
    })
}

/// Publishes the `len` bytes at `data` as the new value (`data` may be NULL when `len` is 0).
/// Waits for other writers (5 seconds at most for a live one; a writer that died never blocks).
///
/// Returns `SHMEM_OK`, `SHMEM_ERR_TOO_LARGE` if `len` exceeds the capacity (nothing is
/// stored), `SHMEM_ERR_TIMEOUT`, or another error code.
///
/// # Safety
/// `v` is NULL or a live handle; `data` is NULL or points to `len` readable bytes.
#[no_mangle]
pub unsafe extern "C" fn shmem_set(v: *mut shmem_value, data: *const c_void, len: usize) -> c_int {
    panic::guard(|| {
        // SAFETY: the caller passes NULL or a live handle.
        let Some(v) = (unsafe { ffi::try_ref(v) }) else {
            return SHMEM_ERR_INVALID_ARGUMENT;
        };
        // SAFETY: the caller passes NULL or `len` readable bytes.
        let Some(data) = (unsafe { ffi::try_slice(data.cast(), len) }) else {
            return SHMEM_ERR_INVALID_ARGUMENT;
        };
        match v.value.set(data) {
            Ok(_) => SHMEM_OK,
            Err(e) => code_of(&e),
        }
    })
}

/// Copies the current value into `buf` (`cap` bytes; `buf` may be NULL when `cap` is 0), stores
/// its length in `*out_len` and, if `out_version` is not NULL, its version in `*out_version`
/// (0 before the first `shmem_set`). The copy is never torn, and never blocks on writers.
///
/// If the value is longer than `cap`, returns `SHMEM_ERR_BUFFER_TOO_SMALL`, copies nothing and
/// stores the length needed in `*out_len` (so `cap` 0 asks for the length). On other errors
/// nothing is stored.
///
/// # Safety
/// `v` is NULL or a live handle; `buf` is NULL or points to `cap` writable bytes; `out_len` and
/// `out_version` are NULL or point to writable memory of their type.
#[no_mangle]
pub unsafe extern "C" fn shmem_get(
    v: *mut shmem_value,
    buf: *mut c_void,
    cap: usize,
    out_len: *mut usize,
    out_version: *mut u64,
) -> c_int {
    panic::guard(|| {
        // SAFETY: the caller passes NULL or a live handle.
        let Some(v) = (unsafe { ffi::try_ref(v) }) else {
            return SHMEM_ERR_INVALID_ARGUMENT;
        };
        if out_len.is_null() {
            return SHMEM_ERR_INVALID_ARGUMENT;
        }
        // SAFETY: the caller passes NULL or `cap` writable bytes.
        let Some(buf) = (unsafe { ffi::try_slice_mut(buf.cast(), cap) }) else {
            return SHMEM_ERR_INVALID_ARGUMENT;
        };
        let (len, version, code) = match v.value.get(buf) {
            Ok((len, version)) => (len, Some(version), SHMEM_OK),
            Err(shmem_core::Error::BufferTooSmall { needed, .. }) => {
                (needed, None, SHMEM_ERR_BUFFER_TOO_SMALL)
            }
            Err(e) => return code_of(&e),
        };
        // SAFETY: `out_len` is not NULL (checked above) and the caller guarantees it is
        // writable.
        unsafe { out_len.write(len) };
        if let Some(version) = version {
            // SAFETY: the caller passes NULL or a writable `uint64_t`.
            unsafe { ffi::write_opt(out_version, version) };
        }
        code
    })
}

/// Sleeps until the value's version differs from `since`, then stores the new version in
/// `*out_version` (if not NULL) and returns `SHMEM_OK`; returns at once if it already differs.
/// A negative `timeout_ms` waits forever; otherwise `SHMEM_ERR_TIMEOUT` when it passes first.
/// Sleeps on a futex in the segment: no polling, and no cost to writers when nobody waits.
///
/// # Safety
/// `v` is NULL or a live handle; `out_version` is NULL or points to a writable `uint64_t`.
#[no_mangle]
pub unsafe extern "C" fn shmem_wait(
    v: *mut shmem_value,
    since: u64,
    timeout_ms: i64,
    out_version: *mut u64,
) -> c_int {
    panic::guard(|| {
        // SAFETY: the caller passes NULL or a live handle.
        let Some(v) = (unsafe { ffi::try_ref(v) }) else {
            return SHMEM_ERR_INVALID_ARGUMENT;
        };
        let timeout = u64::try_from(timeout_ms).ok().map(Duration::from_millis);
        let wakes = v.wakes.load(Ordering::SeqCst);
        let cancelled = || v.wakes.load(Ordering::SeqCst) != wakes;
        match v.value.wait_changed_unless(since, timeout, cancelled) {
            Ok(Some(version)) => {
                // SAFETY: the caller passes NULL or a writable `uint64_t`.
                unsafe { ffi::write_opt(out_version, version) };
                SHMEM_OK
            }
            Ok(None) => SHMEM_ERR_CANCELLED,
            Err(e) => code_of(&e),
        }
    })
}

/// Ends every `shmem_wait` in progress on this handle (in any thread of this process) with
/// `SHMEM_ERR_CANCELLED`, even one that waits forever: the way to stop a waiting thread, say
/// before `shmem_close`. Returns `SHMEM_OK`, or `SHMEM_ERR_INVALID_ARGUMENT` if `v` is NULL.
/// Waits that start afterwards are not affected. Other processes' waiters wake up, see no
/// change, and sleep again.
///
/// # Safety
/// `v` is NULL or a live handle.
#[no_mangle]
pub unsafe extern "C" fn shmem_wake(v: *mut shmem_value) -> c_int {
    panic::guard(|| {
        // SAFETY: the caller passes NULL or a live handle.
        let Some(v) = (unsafe { ffi::try_ref(v) }) else {
            return SHMEM_ERR_INVALID_ARGUMENT;
        };
        v.wakes.fetch_add(1, Ordering::SeqCst);
        v.value.wake_waiters();
        SHMEM_OK
    })
}

/// Closes a handle from `shmem_open`; NULL is ignored. When the last handle of a transient
/// segment (in any process) closes, the segment is freed.
///
/// # Safety
/// `v` is NULL or a live handle, which must not be used again, and which no other thread is
/// using.
#[no_mangle]
pub unsafe extern "C" fn shmem_close(v: *mut shmem_value) {
    panic::guard_or((), || {
        if !v.is_null() {
            // SAFETY: `v` came from `Box::into_raw` in `shmem_open` and the caller gives it
            // back exactly once.
            drop(unsafe { Box::from_raw(v) });
        }
    })
}

/// Removes the name `name` from the segment directory at once, like `shm_unlink`: processes
/// that have it open keep their memory until they close it, and the next `shmem_open` with
/// `SHMEM_CREATE` makes a new segment. This is how a persistent segment is deleted.
///
/// Returns `SHMEM_OK`, `SHMEM_ERR_NOT_FOUND`, or another error code.
///
/// # Safety
/// `name` is NULL or a NUL-terminated string.
#[no_mangle]
pub unsafe extern "C" fn shmem_unlink(name: *const c_char) -> c_int {
    panic::guard(|| {
        // SAFETY: the caller passes NULL or a NUL-terminated string.
        let Some(name) = (unsafe { ffi::try_str(name) }) else {
            return SHMEM_ERR_INVALID_ARGUMENT;
        };
        match shmem_core::admin::remove(&segment_dir(), name, true) {
            Ok(()) => SHMEM_OK,
            Err(e) => code_of(&e),
        }
    })
}
