//! The map API: `shmem_map`, many keys in one segment (`shmem_core::Map`).
//!
//! Handles work exactly as `shmem_value`'s (`value.rs` states the protocol): a `shmem_map *` is
//! a key of [`HANDLES`] plus one, never dereferenced; every call holds a reference to the entry
//! for its duration; `shmem_map_close` marks it closed, wakes its waiters and removes the key,
//! and the last reference drops the `Map`.
//!
//! Keys are NUL-terminated strings of 1 to 255 bytes (any bytes but NUL, not necessarily
//! UTF-8); NULL or empty is `SHMEM_ERR_INVALID_ARGUMENT`.

use std::ffi::{c_char, c_int, c_void, CStr, CString};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::LazyLock;
use std::time::Duration;

use sharded_slab::Slab;
use shmem_core::{Delete, Map};

use crate::error::{
    code_of, shmem_result, SHMEM_ERR_BUFFER_TOO_SMALL, SHMEM_ERR_CLOSED,
    SHMEM_ERR_INVALID_ARGUMENT, SHMEM_ERR_IO, SHMEM_ERR_NOT_FOUND, SHMEM_OK,
};
use crate::ffi;
#[cfg(target_os = "linux")]
use crate::ffi::segment_dir;
use crate::panic;
use crate::value::{Attach, Keys, OpenFlags};

/// Many keys and their values in one segment, shared between processes. Every
/// `shmem_map_set`, and every `shmem_map_delete` that removes a key, gives the map a new
/// version, larger than any before; each entry keeps the version of its last set. Readers
/// never see a torn entry and never block; a writer that crashes never damages the map.
///
/// A handle may be used by several threads at once, `shmem_map_close` included, as a
/// `shmem_value` (a `shmem_map_wait` in progress ends with `SHMEM_ERR_CLOSED`).
///
/// The handle is an opaque token, not a pointer to memory: do not dereference it.
#[allow(non_camel_case_types)] // the C name
#[derive(Debug)]
pub struct shmem_map {
    _opaque: [u8; 0],
}

/// Called by `shmem_map_foreach` for each entry: its key (NUL-terminated), its value (`len`
/// bytes at `data`, valid only during the call), the version of its last set, and the `ctx`
/// given to `shmem_map_foreach`. Returning nonzero stops the iteration.
#[allow(non_camel_case_types)] // the C name
pub type shmem_map_visit = Option<
    unsafe extern "C" fn(
        key: *const c_char,
        data: *const c_void,
        len: usize,
        version: u64,
        ctx: *mut c_void,
    ) -> c_int,
>;

/// What a map handle stands for: an entry of [`HANDLES`].
#[derive(Debug)]
struct Handle {
    map: Map,
    /// Set by `shmem_map_close` before it wakes this handle's waiters.
    closed: AtomicBool,
}

/// Every open map handle of this process.
static HANDLES: LazyLock<Slab<Handle, Keys>> = LazyLock::new(Slab::new_with_config);

fn token(key: usize) -> *mut shmem_map {
    // Plus one: key 0 exists and NULL must not. The token is never dereferenced.
    (key + 1) as *mut shmem_map
}

/// Runs `f` on the handle `m` stands for, holding a reference to it for the call.
fn with_handle(m: *const shmem_map, f: impl FnOnce(&Handle) -> shmem_result) -> shmem_result {
    let Some(key) = (m as usize).checked_sub(1) else {
        return SHMEM_ERR_INVALID_ARGUMENT;
    };
    match HANDLES.get(key) {
        Some(h) => f(&h),
        None => SHMEM_ERR_CLOSED,
    }
}

/// Borrows a key argument: `None` if NULL or empty (longer than 255 bytes is refused by the
/// map, also with `SHMEM_ERR_INVALID_ARGUMENT`).
///
/// # Safety
/// A non-NULL `key` is a NUL-terminated string that stays unchanged during the call.
unsafe fn key_arg<'a>(key: *const c_char) -> Option<&'a [u8]> {
    if key.is_null() {
        return None;
    }
    // SAFETY: not NULL, and the caller guarantees a live NUL-terminated string.
    let k = unsafe { CStr::from_ptr(key) }.to_bytes();
    (!k.is_empty()).then_some(k)
}

/// Opens the map segment `name` in the segment directory (as `shmem_open`) and stores a new
/// handle in `*out`.
///
/// `capacity` is the heap bytes its records may use (each takes 16 bytes plus its key rounded
/// up to 8 plus its value, rounded up to 8; rounded up to a multiple of 64 in all); it is
/// needed to create, and an existing map must hold at least that much (0 accepts any). `flags`
/// as for `shmem_open`, `SHMEM_READONLY` included (Linux: a handle that only reads; its
/// `shmem_map_set` and `shmem_map_delete` return `SHMEM_ERR_PERMISSION`, and its
/// `shmem_map_wait` works only on a map created with a mode that lets someone read without
/// writing).
///
/// Returns `SHMEM_OK`, or an error code and leaves `*out` unchanged
/// (`SHMEM_ERR_CORRUPT` if the segment is not a map). Close the handle with `shmem_map_close`.
///
/// # Safety
/// `name` is NULL or a NUL-terminated string; `out` is NULL or points to writable memory for a
/// pointer.
#[no_mangle]
pub unsafe extern "C" fn shmem_map_open(
    name: *const c_char,
    capacity: usize,
    flags: u32,
    out: *mut *mut shmem_map,
) -> c_int {
    panic::guard(|| {
        // SAFETY: the caller passes NULL or a NUL-terminated string.
        let Some(name) = (unsafe { ffi::try_str(name) }) else {
            return SHMEM_ERR_INVALID_ARGUMENT;
        };
        let Some(how) = OpenFlags::parse(flags).filter(|_| !out.is_null()) else {
            return SHMEM_ERR_INVALID_ARGUMENT;
        };
        let builder = Map::builder(name).capacity(capacity).lifetime(how.lifetime);
        #[cfg(target_os = "linux")]
        let builder = builder.dir(segment_dir());
        // As `shmem_open`: a group/other mode is how the core crate accepts another user's
        // segment; nothing is created read-only, so it sets no file's mode.
        #[cfg(target_os = "linux")]
        let builder = if how.read_only {
            builder.access(shmem_core::Access::ReadOnly).mode(0o644)
        } else {
            builder
        };
        let opened = match how.attach {
            Attach::Existing => builder.open_existing(),
            Attach::OrCreate => builder.open(),
            Attach::CreateNew => builder.create_new(),
        };
        match opened {
            Ok(map) => {
                let handle = Handle {
                    map,
                    closed: AtomicBool::new(false),
                };
                let Some(key) = HANDLES.insert(handle) else {
                    return SHMEM_ERR_IO;
                };
                // SAFETY: `out` is not NULL (checked above) and the caller guarantees it is
                // writable.
                unsafe { out.write(token(key)) };
                SHMEM_OK
            }
            Err(e) => code_of(&e),
        }
    })
}

/// Sets `key` to the `len` bytes at `data` (`data` may be NULL when `len` is 0) and, if
/// `out_version` is not NULL, stores the new map version (the entry's) in `*out_version`.
///
/// Returns `SHMEM_OK`; `SHMEM_ERR_INVALID_ARGUMENT` for a NULL, empty or over-255-byte key;
/// `SHMEM_ERR_NO_SPACE` when the map is full (its live records and this one do not fit, or it
/// holds its most keys): nothing changes; `SHMEM_ERR_TOO_LARGE` for a record larger than the
/// whole heap; `SHMEM_ERR_TIMEOUT` when another live writer keeps the lock 5 s;
/// `SHMEM_ERR_PERMISSION` on a read-only handle (`SHMEM_READONLY`); `SHMEM_ERR_CLOSED`; or
/// another error code.
///
/// # Safety
/// `key` is NULL or a NUL-terminated string; `data` is NULL or points to `len` readable bytes;
/// `out_version` is NULL or points to a writable `uint64_t`.
#[no_mangle]
pub unsafe extern "C" fn shmem_map_set(
    m: *mut shmem_map,
    key: *const c_char,
    data: *const c_void,
    len: usize,
    out_version: *mut u64,
) -> c_int {
    panic::guard(|| {
        with_handle(m, |h| {
            // SAFETY: the caller passes NULL or a NUL-terminated string.
            let Some(key) = (unsafe { key_arg(key) }) else {
                return SHMEM_ERR_INVALID_ARGUMENT;
            };
            // SAFETY: the caller passes NULL or `len` readable bytes.
            let Some(data) = (unsafe { ffi::try_slice(data.cast(), len) }) else {
                return SHMEM_ERR_INVALID_ARGUMENT;
            };
            match h.map.set(key, data) {
                Ok(version) => {
                    // SAFETY: the caller passes NULL or a writable `uint64_t`.
                    unsafe { ffi::write_opt(out_version, version) };
                    SHMEM_OK
                }
                Err(e) => code_of(&e),
            }
        })
    })
}

/// Copies the value of `key` into `buf` (`cap` bytes; `buf` may be NULL when `cap` is 0),
/// stores its length in `*out_len` and, if `out_version` is not NULL, the version of its last
/// set in `*out_version`. Never torn, never blocks on writers.
///
/// Returns `SHMEM_OK`; `SHMEM_ERR_NOT_FOUND` if the key is not in the map (nothing stored);
/// `SHMEM_ERR_BUFFER_TOO_SMALL` if the value is longer than `cap`: nothing is copied and
/// `*out_len` is the length needed; `SHMEM_ERR_INVALID_ARGUMENT` for a NULL `out_len` or a bad
/// key; `SHMEM_ERR_CLOSED`; or another error code.
///
/// # Safety
/// `key` is NULL or a NUL-terminated string; `buf` is NULL or points to `cap` writable bytes;
/// `out_len` and `out_version` are NULL or point to writable memory of their type.
#[no_mangle]
pub unsafe extern "C" fn shmem_map_get(
    m: *mut shmem_map,
    key: *const c_char,
    buf: *mut c_void,
    cap: usize,
    out_len: *mut usize,
    out_version: *mut u64,
) -> c_int {
    panic::guard(|| {
        with_handle(m, |h| {
            // SAFETY: the caller passes NULL or a NUL-terminated string.
            let Some(key) = (unsafe { key_arg(key) }) else {
                return SHMEM_ERR_INVALID_ARGUMENT;
            };
            if out_len.is_null() {
                return SHMEM_ERR_INVALID_ARGUMENT;
            }
            // SAFETY: the caller passes NULL or `cap` writable bytes.
            let Some(buf) = (unsafe { ffi::try_slice_mut(buf.cast(), cap) }) else {
                return SHMEM_ERR_INVALID_ARGUMENT;
            };
            let (len, version, code) = match h.map.get_into(key, buf) {
                Ok(Some((len, version))) => (len, Some(version), SHMEM_OK),
                Ok(None) => return SHMEM_ERR_NOT_FOUND,
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
    })
}

/// Removes `key` from the map (a new map version). Returns `SHMEM_OK`, `SHMEM_ERR_NOT_FOUND`
/// if it was not there (nothing changes), `SHMEM_ERR_INVALID_ARGUMENT` for a bad key,
/// `SHMEM_ERR_PERMISSION` on a read-only handle, `SHMEM_ERR_CLOSED`, or another error code.
///
/// # Safety
/// `key` is NULL or a NUL-terminated string.
#[no_mangle]
pub unsafe extern "C" fn shmem_map_delete(m: *mut shmem_map, key: *const c_char) -> c_int {
    panic::guard(|| {
        with_handle(m, |h| {
            // SAFETY: the caller passes NULL or a NUL-terminated string.
            let Some(key) = (unsafe { key_arg(key) }) else {
                return SHMEM_ERR_INVALID_ARGUMENT;
            };
            match h.map.delete(key) {
                Ok(Delete::Removed { .. }) => SHMEM_OK,
                Ok(Delete::NotFound) => SHMEM_ERR_NOT_FOUND,
                Err(e) => code_of(&e),
            }
        })
    })
}

/// Stores the number of keys in `*out_len`. Returns `SHMEM_OK`, `SHMEM_ERR_INVALID_ARGUMENT`
/// if a pointer is NULL, `SHMEM_ERR_CLOSED`, or another error code.
///
/// # Safety
/// `out_len` is NULL or points to a writable `size_t`.
#[no_mangle]
pub unsafe extern "C" fn shmem_map_len(m: *mut shmem_map, out_len: *mut usize) -> c_int {
    panic::guard(|| {
        with_handle(m, |h| {
            if out_len.is_null() {
                return SHMEM_ERR_INVALID_ARGUMENT;
            }
            match h.map.len() {
                Ok(n) => {
                    // SAFETY: not NULL (checked above), and the caller guarantees it is
                    // writable.
                    unsafe { out_len.write(n) };
                    SHMEM_OK
                }
                Err(e) => code_of(&e),
            }
        })
    })
}

/// Stores the map version (0 before the first change) in `*out_version`. Returns `SHMEM_OK`,
/// `SHMEM_ERR_INVALID_ARGUMENT` if a pointer is NULL, or `SHMEM_ERR_CLOSED`.
///
/// # Safety
/// `out_version` is NULL or points to a writable `uint64_t`.
#[no_mangle]
pub unsafe extern "C" fn shmem_map_version(m: *mut shmem_map, out_version: *mut u64) -> c_int {
    panic::guard(|| {
        with_handle(m, |h| {
            if out_version.is_null() {
                return SHMEM_ERR_INVALID_ARGUMENT;
            }
            // SAFETY: not NULL (checked above), and the caller guarantees it is writable.
            unsafe { out_version.write(h.map.version()) };
            SHMEM_OK
        })
    })
}

/// Sleeps until the version of `key` (of its last set; 0 while it is absent) differs from
/// `since`, or with `key` NULL until the map version does (any key set or deleted); then
/// stores that version in `*out_version` (if not NULL) and returns `SHMEM_OK`. Returns at once
/// if it already differs. A negative `timeout_ms` waits forever; otherwise
/// `SHMEM_ERR_TIMEOUT` when it passes first. Sleeps on a futex in the segment. Ends with
/// `SHMEM_ERR_CLOSED` when `shmem_map_close` is called on the handle; an empty key is
/// `SHMEM_ERR_INVALID_ARGUMENT`. On a read-only handle it returns `SHMEM_ERR_PERMISSION` when
/// the map's writers wake only waiters that announce themselves (a map created with the
/// owner-only mode) and nothing changed yet.
///
/// # Safety
/// `key` is NULL or a NUL-terminated string; `out_version` is NULL or points to a writable
/// `uint64_t`.
#[no_mangle]
pub unsafe extern "C" fn shmem_map_wait(
    m: *mut shmem_map,
    key: *const c_char,
    since: u64,
    timeout_ms: i64,
    out_version: *mut u64,
) -> c_int {
    panic::guard(|| {
        with_handle(m, |h| {
            let timeout = u64::try_from(timeout_ms).ok().map(Duration::from_millis);
            let cancelled = || h.closed.load(Ordering::SeqCst);
            let r = if key.is_null() {
                h.map.wait_any_unless(since, timeout, cancelled)
            } else {
                // SAFETY: not NULL, and the caller passes a NUL-terminated string.
                let Some(key) = (unsafe { key_arg(key) }) else {
                    return SHMEM_ERR_INVALID_ARGUMENT;
                };
                h.map.wait_changed_unless(key, since, timeout, cancelled)
            };
            match r {
                Ok(Some(version)) => {
                    // SAFETY: the caller passes NULL or a writable `uint64_t`.
                    unsafe { ffi::write_opt(out_version, version) };
                    SHMEM_OK
                }
                Ok(None) => SHMEM_ERR_CLOSED,
                Err(e) => code_of(&e),
            }
        })
    })
}

/// Calls `visit(key, data, len, version, ctx)` for every entry of one consistent version of
/// the map (a snapshot copied out first, so `visit` may call the map, even change it), in
/// ascending byte order of the keys, until `visit` returns nonzero. `key` and `data` are valid
/// only during the call. A key holding a NUL byte (possible only from Rust) is passed up to its
/// first NUL. Returns `SHMEM_OK` (also when `visit` stopped early),
/// `SHMEM_ERR_INVALID_ARGUMENT` if `visit` is NULL, `SHMEM_ERR_CLOSED`, or another error code.
///
/// # Safety
/// `visit` is NULL or a function that may be called with the arguments above; `ctx` is passed
/// to it as it is.
#[no_mangle]
pub unsafe extern "C" fn shmem_map_foreach(
    m: *mut shmem_map,
    visit: shmem_map_visit,
    ctx: *mut c_void,
) -> c_int {
    panic::guard(|| {
        with_handle(m, |h| {
            let Some(visit) = visit else {
                return SHMEM_ERR_INVALID_ARGUMENT;
            };
            let snapshot = match h.map.snapshot() {
                Ok(s) => s,
                Err(e) => return code_of(&e),
            };
            for e in snapshot {
                let end = e.key.iter().position(|&b| b == 0).unwrap_or(e.key.len());
                let key = CString::new(&e.key[..end]).expect("no NUL before `end`");
                // SAFETY: the caller passes a function that takes these arguments; the key and
                // the value live until the call returns.
                let stop = unsafe {
                    visit(
                        key.as_ptr(),
                        e.value.as_ptr().cast(),
                        e.value.len(),
                        e.version,
                        ctx,
                    )
                };
                if stop != 0 {
                    break;
                }
            }
            SHMEM_OK
        })
    })
}

/// Closes a handle from `shmem_map_open`; NULL and handles already closed are ignored. As
/// `shmem_close`: waits in progress end with `SHMEM_ERR_CLOSED`, other calls in progress
/// complete, later calls return `SHMEM_ERR_CLOSED`; the last handle of a transient map (in any
/// process) to let go frees it.
#[no_mangle]
pub extern "C" fn shmem_map_close(m: *mut shmem_map) {
    panic::guard_or((), || {
        let Some(key) = (m as usize).checked_sub(1) else {
            return;
        };
        let Some(h) = HANDLES.get(key) else {
            return; // closed already
        };
        h.closed.store(true, Ordering::SeqCst);
        h.map.wake_waiters();
        HANDLES.remove(key);
        drop(h); // the last reference drops the entry, and the `Map` detaches
    })
}
