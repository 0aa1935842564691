//! The handle API: `shmem_value`, a consistent byte string shared between processes.
//!
//! # Handles and `shmem_close` (the protocol)
//!
//! A `shmem_value *` is not a pointer to memory: it is the key of an entry in [`HANDLES`] (a
//! `sharded_slab::Slab`) plus one, so that it is never NULL, cast to a pointer. Nothing ever
//! dereferences it, so a stale, closed or made-up handle can never make a call touch freed
//! memory.
//!
//! - Every call looks its key up with `Slab::get`, which returns a guard that holds a
//!   reference to the entry (a count in the slot, one CAS; no lock), and drops the guard when
//!   it returns. A key whose entry is gone or marked for removal, or whose slot has since been
//!   reused (the key's generation no longer matches), finds nothing: `SHMEM_ERR_CLOSED`.
//! - `shmem_close` takes a guard itself, sets `closed`, calls `Value::wake_waiters` (so a
//!   `shmem_wait` on the handle, whose cancellation test reads `closed` before each sleep,
//!   returns), and `Slab::remove`s the key: from then on no call finds it. The entry, and with
//!   it the `Value` (mapping, descriptor, lock on the segment), is dropped when the last guard
//!   goes: by `shmem_close` itself when no other call is in progress, otherwise by the last
//!   call in progress when it returns.
//! - A waiter cannot miss the close: it reads the wake word, then tests `closed`, then sleeps
//!   only if the wake word still has the value it read. `shmem_close` stores `closed` (SeqCst)
//!   before bumping the wake word (Release) and always makes the `FUTEX_WAKE` call. So either
//!   the waiter sees `closed`, or its sleep fails on the changed word, or it is asleep and is
//!   woken.
//! - Generations: [`Keys`] leaves 33 bits of each key to the slot's generation, so a slot has to
//!   be reused 2^33 times before an old key could name a new handle.

use std::ffi::{c_char, c_int, c_void};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::LazyLock;
use std::time::Duration;

use sharded_slab::Slab;
use shmem_core::{Lifetime, Value};

use crate::error::{
    code_of, shmem_result, SHMEM_ERR_BUFFER_TOO_SMALL, SHMEM_ERR_CANCELLED, SHMEM_ERR_CLOSED,
    SHMEM_ERR_INVALID_ARGUMENT, SHMEM_ERR_IO, SHMEM_OK,
};
use crate::ffi;
use crate::ffi::segment_dir;
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
/// `shmem_open` flag, without `SHMEM_CREATE` (Linux): open a live segment read-only. The
/// handle needs only read permission, also on a segment another user owns whose mode lets
/// this user read it (it writes nothing there); `shmem_get` works, `shmem_set` returns
/// `SHMEM_ERR_PERMISSION`, and `shmem_wait` works on segments created with a mode that lets
/// someone read without writing (0644, 0640), whose every `shmem_set` wakes waiters (others
/// return `SHMEM_ERR_PERMISSION`). `shmem_wake` on such a handle ends its own waits only.
/// `shmem_map_open` takes it too, with the same meaning for a map: `shmem_map_get`,
/// `shmem_map_len`, `shmem_map_version` and `shmem_map_foreach` work, `shmem_map_set` and
/// `shmem_map_delete` return `SHMEM_ERR_PERMISSION`, and `shmem_map_wait` works as
/// `shmem_wait` does (a wait for one key is then woken by every change of the map, and
/// re-checks its key).
pub const SHMEM_READONLY: u32 = 8;

const ALL_FLAGS: u32 = SHMEM_CREATE | SHMEM_EXCLUSIVE | SHMEM_PERSISTENT | SHMEM_READONLY;

/// How `shmem_open` and `shmem_map_open` attach, from their flags.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Attach {
    /// No `SHMEM_CREATE`: a live segment only.
    Existing,
    /// `SHMEM_CREATE`: open it, or create it if nobody holds it.
    OrCreate,
    /// `SHMEM_CREATE | SHMEM_EXCLUSIVE`: create it; a live one is `SHMEM_ERR_EXISTS`.
    CreateNew,
}

/// The flags of `shmem_open` and `shmem_map_open`, checked once for both.
#[derive(Clone, Copy, Debug)]
pub(crate) struct OpenFlags {
    pub(crate) attach: Attach,
    pub(crate) lifetime: Lifetime,
    /// `SHMEM_READONLY` (Linux only: elsewhere `parse` refuses it).
    #[cfg_attr(not(target_os = "linux"), allow(dead_code))]
    pub(crate) read_only: bool,
}

impl OpenFlags {
    /// `None` (`SHMEM_ERR_INVALID_ARGUMENT`) for an unknown bit, `EXCLUSIVE` or `PERSISTENT`
    /// without `CREATE`, `READONLY` with any other flag, or `READONLY` off Linux.
    pub(crate) fn parse(flags: u32) -> Option<OpenFlags> {
        let create = flags & SHMEM_CREATE != 0;
        let read_only = flags & SHMEM_READONLY != 0;
        if flags & !ALL_FLAGS != 0
            || (read_only && (flags != SHMEM_READONLY || cfg!(not(target_os = "linux"))))
            || (!create && !read_only && flags != 0)
        {
            return None;
        }
        let attach = match (create, flags & SHMEM_EXCLUSIVE != 0) {
            (false, _) => Attach::Existing,
            (true, false) => Attach::OrCreate,
            (true, true) => Attach::CreateNew,
        };
        let lifetime = if flags & SHMEM_PERSISTENT != 0 {
            Lifetime::Persistent
        } else {
            Lifetime::Transient
        };
        Some(OpenFlags {
            attach,
            lifetime,
            read_only,
        })
    }
}

/// A value shared between processes: a byte string of up to a fixed capacity, with a version
/// that grows by one at each `shmem_set`. Readers never see a torn value and never block.
///
/// A handle may be used by several threads at once, `shmem_close` included: a call that runs
/// while another thread closes the handle either completes or returns `SHMEM_ERR_CLOSED`, and
/// a `shmem_wait` in progress ends with `SHMEM_ERR_CLOSED`. Any call on a handle that has been
/// closed returns `SHMEM_ERR_CLOSED` (a closed handle's value names no other handle until its
/// slot in the process's handle table has been reused 2^33 times). The segment is let go when
/// the close and every call that was in progress have returned.
///
/// The handle is an opaque token, not a pointer to memory: do not dereference it.
#[allow(non_camel_case_types)] // the C name
#[derive(Debug)]
pub struct shmem_value {
    _opaque: [u8; 0],
}

/// What a handle stands for: an entry of [`HANDLES`].
#[derive(Debug)]
struct Handle {
    value: Value,
    /// Bumped by `shmem_wake`; a `shmem_wait` ends when it differs from what it saw at start.
    wakes: AtomicU64,
    /// Set by `shmem_close` before it wakes this handle's waiters.
    closed: AtomicBool,
}

/// The slab's layout of a key: 4096 threads (as sharded-slab's default; 13 bits), 12 pages per
/// thread (32 handles in the first, doubling: 131,040 handles opened by one thread at once; 18
/// bits), and the rest of a 64-bit key (33 bits) for the generation, which is what keeps
/// closed handles from naming new ones.
#[derive(Debug)]
pub(crate) struct Keys;

impl sharded_slab::Config for Keys {
    const INITIAL_PAGE_SIZE: usize = 32;
    #[cfg(target_pointer_width = "64")]
    const MAX_THREADS: usize = 4096;
    #[cfg(target_pointer_width = "64")]
    const MAX_PAGES: usize = 12;
    #[cfg(not(target_pointer_width = "64"))]
    const MAX_THREADS: usize = 64;
    #[cfg(not(target_pointer_width = "64"))]
    const MAX_PAGES: usize = 6;
}

/// Every open handle of this process.
static HANDLES: LazyLock<Slab<Handle, Keys>> = LazyLock::new(Slab::new_with_config);

/// The C token of a slab key.
fn token(key: usize) -> *mut shmem_value {
    // Plus one: key 0 exists and NULL must not. The token is never dereferenced.
    (key + 1) as *mut shmem_value
}

/// Runs `f` on the handle `v` stands for, holding a reference to it for the call:
/// `SHMEM_ERR_INVALID_ARGUMENT` for NULL, `SHMEM_ERR_CLOSED` for a handle that is closed (or
/// was never one).
fn with_handle<R: From<shmem_result>>(v: *const shmem_value, f: impl FnOnce(&Handle) -> R) -> R {
    let Some(key) = (v as usize).checked_sub(1) else {
        return SHMEM_ERR_INVALID_ARGUMENT.into();
    };
    match HANDLES.get(key) {
        Some(h) => f(&h),
        None => SHMEM_ERR_CLOSED.into(),
    }
}

/// Opens the value segment `name` in the segment directory (`$SHMEM_DIR` when set and not
/// empty, else `/dev/shm`; the file is `<dir>/shmem.<name>`) and stores a new handle in `*out`.
/// On Windows a transient segment is the section `Local\shmem.<name>`, and only a persistent
/// one is a file in the directory (default `%LOCALAPPDATA%\shmem`).
///
/// `name` is 1 to 200 bytes of `[A-Za-z0-9._-]`, not starting with a dot. `capacity` is the
/// largest value in bytes (rounded up to a multiple of 64); it is needed to create, and an
/// existing segment must hold at least that much (0 accepts any). `flags` is 0 (open a live
/// segment only: `SHMEM_ERR_NOT_FOUND` if there is none), `SHMEM_READONLY` (the same,
/// read-only; Linux) or `SHMEM_CREATE`, optionally with `SHMEM_EXCLUSIVE` and/or
/// `SHMEM_PERSISTENT`. A new segment is readable and writable by its owner only.
///
/// Returns `SHMEM_OK`, or an error code and leaves `*out` unchanged (`SHMEM_ERR_IO` also when
/// this thread already has 131,040 handles open). Close the handle with `shmem_close`.
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
        let Some(how) = OpenFlags::parse(flags).filter(|_| !out.is_null()) else {
            return SHMEM_ERR_INVALID_ARGUMENT;
        };
        let builder = Value::builder(name)
            .capacity(capacity)
            .lifetime(how.lifetime)
            .dir(segment_dir());
        // A group/other mode is how the core crate accepts another user's segment; nothing is
        // created read-only, so it sets no file's mode.
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
            Ok(value) => {
                let handle = Handle {
                    value,
                    wakes: AtomicU64::new(0),
                    closed: AtomicBool::new(false),
                };
                // `None`: this thread has 131,040 handles open, or 4096 threads use libshmem.
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

/// Whether this handle created the segment (like Windows' "not `ERROR_ALREADY_EXISTS`"): 1 if
/// it did (the value was then empty, at version 0), 0 if it opened an existing one,
/// `SHMEM_ERR_INVALID_ARGUMENT` if `v` is NULL, or `SHMEM_ERR_CLOSED`.
#[no_mangle]
pub extern "C" fn shmem_created(v: *const shmem_value) -> c_int {
    panic::guard(|| with_handle(v, |h| c_int::from(h.value.created())))
}

/// Stores the value's capacity in bytes (the largest value `shmem_set` accepts) in
/// `*out_capacity`. Returns `SHMEM_OK`, `SHMEM_ERR_INVALID_ARGUMENT` if a pointer is NULL, or
/// `SHMEM_ERR_CLOSED`.
///
/// # Safety
/// `out_capacity` is NULL or points to a writable `size_t`.
#[no_mangle]
pub unsafe extern "C" fn shmem_capacity(v: *const shmem_value, out_capacity: *mut usize) -> c_int {
    panic::guard(|| {
        with_handle(v, |h| {
            if out_capacity.is_null() {
                return SHMEM_ERR_INVALID_ARGUMENT;
            }
            // SAFETY: not NULL (checked above), and the caller guarantees it is writable.
            unsafe { out_capacity.write(h.value.capacity()) };
            SHMEM_OK
        })
    })
}

/// Publishes the `len` bytes at `data` as the new value (`data` may be NULL when `len` is 0).
/// Waits for other writers (5 seconds at most for a live one; a writer that died never blocks).
///
/// Returns `SHMEM_OK`, `SHMEM_ERR_TOO_LARGE` if `len` exceeds the capacity (nothing is
/// stored), `SHMEM_ERR_TIMEOUT`, `SHMEM_ERR_CLOSED`, or another error code.
///
/// # Safety
/// `data` is NULL or points to `len` readable bytes.
#[no_mangle]
pub unsafe extern "C" fn shmem_set(v: *mut shmem_value, data: *const c_void, len: usize) -> c_int {
    panic::guard(|| {
        with_handle(v, |h| {
            // SAFETY: the caller passes NULL or `len` readable bytes.
            let Some(data) = (unsafe { ffi::try_slice(data.cast(), len) }) else {
                return SHMEM_ERR_INVALID_ARGUMENT;
            };
            match h.value.set(data) {
                Ok(_) => SHMEM_OK,
                Err(e) => code_of(&e),
            }
        })
    })
}

/// Copies the current value into `buf` (`cap` bytes; `buf` may be NULL when `cap` is 0), stores
/// its length in `*out_len` and, if `out_version` is not NULL, its version in `*out_version`
/// (0 before the first `shmem_set`). The copy is never torn, and never blocks on writers.
///
/// If the value is longer than `cap`, returns `SHMEM_ERR_BUFFER_TOO_SMALL`, copies nothing and
/// stores the length needed in `*out_len` (so `cap` 0 asks for the length). On other errors
/// nothing is stored (`SHMEM_ERR_CLOSED` for a closed handle).
///
/// # Safety
/// `buf` is NULL or points to `cap` writable bytes; `out_len` and `out_version` are NULL or
/// point to writable memory of their type.
#[no_mangle]
pub unsafe extern "C" fn shmem_get(
    v: *mut shmem_value,
    buf: *mut c_void,
    cap: usize,
    out_len: *mut usize,
    out_version: *mut u64,
) -> c_int {
    panic::guard(|| {
        with_handle(v, |h| {
            // SAFETY: the caller passes NULL or pointers to memory of the stated sizes.
            unsafe { get_into(h, buf, cap, out_len, out_version) }
        })
    })
}

/// `shmem_get`'s body, on a handle.
///
/// # Safety
/// As `shmem_get`.
unsafe fn get_into(
    h: &Handle,
    buf: *mut c_void,
    cap: usize,
    out_len: *mut usize,
    out_version: *mut u64,
) -> shmem_result {
    {
        if out_len.is_null() {
            return SHMEM_ERR_INVALID_ARGUMENT;
        }
        // SAFETY: the caller passes NULL or `cap` writable bytes.
        let Some(buf) = (unsafe { ffi::try_slice_mut(buf.cast(), cap) }) else {
            return SHMEM_ERR_INVALID_ARGUMENT;
        };
        let (len, version, code) = match h.value.get(buf) {
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
    }
}

/// Sleeps until the value's version differs from `since`, then stores the new version in
/// `*out_version` (if not NULL) and returns `SHMEM_OK`; returns at once if it already differs.
/// A negative `timeout_ms` waits forever; otherwise `SHMEM_ERR_TIMEOUT` when it passes first.
/// Sleeps on a futex in the segment: no polling, and no cost to writers when nobody waits.
/// Ends with `SHMEM_ERR_CANCELLED` when `shmem_wake` is called on the handle, and with
/// `SHMEM_ERR_CLOSED` when `shmem_close` is.
///
/// # Safety
/// `out_version` is NULL or points to a writable `uint64_t`.
#[no_mangle]
pub unsafe extern "C" fn shmem_wait(
    v: *mut shmem_value,
    since: u64,
    timeout_ms: i64,
    out_version: *mut u64,
) -> c_int {
    panic::guard(|| {
        with_handle(v, |h| {
            let timeout = u64::try_from(timeout_ms).ok().map(Duration::from_millis);
            let wakes = h.wakes.load(Ordering::SeqCst);
            let cancelled =
                || h.closed.load(Ordering::SeqCst) || h.wakes.load(Ordering::SeqCst) != wakes;
            match h.value.wait_changed_unless(since, timeout, cancelled) {
                Ok(Some(version)) => {
                    // SAFETY: the caller passes NULL or a writable `uint64_t`.
                    unsafe { ffi::write_opt(out_version, version) };
                    SHMEM_OK
                }
                Ok(None) if h.closed.load(Ordering::SeqCst) => SHMEM_ERR_CLOSED,
                Ok(None) => SHMEM_ERR_CANCELLED,
                Err(e) => code_of(&e),
            }
        })
    })
}

/// Ends every `shmem_wait` in progress on this handle (in any thread of this process) with
/// `SHMEM_ERR_CANCELLED`, even one that waits forever: the way to stop a waiting thread, say
/// without closing the handle (`shmem_close` ends them too). Returns `SHMEM_OK`,
/// `SHMEM_ERR_INVALID_ARGUMENT` if `v` is NULL, or `SHMEM_ERR_CLOSED`. Waits that start
/// afterwards are not affected. Other processes' waiters wake up, see no change, and sleep
/// again.
#[no_mangle]
pub extern "C" fn shmem_wake(v: *mut shmem_value) -> c_int {
    panic::guard(|| {
        with_handle(v, |h| {
            h.wakes.fetch_add(1, Ordering::SeqCst);
            h.value.wake_waiters();
            SHMEM_OK
        })
    })
}

/// Closes a handle from `shmem_open`; NULL and handles already closed are ignored. Other
/// threads may be using the handle meanwhile: their `shmem_wait`s end with `SHMEM_ERR_CLOSED`,
/// other calls in progress complete, and every later call on the handle returns
/// `SHMEM_ERR_CLOSED`. The handle lets go of the segment when this call and those in progress
/// have returned (at once when none is); when the last handle of a transient segment (in any
/// process) lets go, the segment is freed.
#[no_mangle]
pub extern "C" fn shmem_close(v: *mut shmem_value) {
    panic::guard_or((), || {
        let Some(key) = (v as usize).checked_sub(1) else {
            return;
        };
        let Some(h) = HANDLES.get(key) else {
            return; // closed already
        };
        h.closed.store(true, Ordering::SeqCst);
        h.value.wake_waiters();
        HANDLES.remove(key);
        drop(h); // the last reference drops the entry, and the `Value` detaches
    })
}

/// Removes the name `name` from the segment directory at once, like `shm_unlink`: processes
/// that have it open keep their memory until they close it, and the next `shmem_open` with
/// `SHMEM_CREATE` makes a new segment. This is how a persistent segment is deleted.
///
/// Returns `SHMEM_OK`, `SHMEM_ERR_NOT_FOUND`, or another error code. On Windows, where only a
/// persistent segment has a name to remove (its file in `$SHMEM_DIR`, else
/// `%LOCALAPPDATA%\shmem`), `SHMEM_ERR_INVALID_ARGUMENT` for a live transient one: the kernel
/// frees it with its last handle.
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
        #[cfg(target_os = "linux")]
        let removed = shmem_core::admin::remove(&segment_dir(), name, true);
        // A persistent segment's file; a transient segment is `Unsupported`.
        #[cfg(windows)]
        let removed = shmem_core::Segment::builder(name)
            .dir(segment_dir())
            .remove();
        match removed {
            Ok(()) => SHMEM_OK,
            Err(e) => code_of(&e),
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_closed_key_names_nothing_while_its_slot_is_reused() {
        let slab: Slab<u32, Keys> = Slab::new_with_config();
        let first = slab.insert(0).expect("insert");
        assert!(slab.remove(first));
        assert!(!slab.remove(first), "a second close finds nothing");
        let mut slots = std::collections::HashSet::new();
        for i in 1..100_000 {
            let key = slab.insert(i).expect("insert");
            assert_ne!(key, first);
            assert!(slab.get(first).is_none());
            slots.insert(key & ((1 << 20) - 1));
            assert!(slab.remove(key));
        }
        assert!(
            slots.len() < 10,
            "the same slot is reused: {} slots",
            slots.len()
        );
    }

    #[test]
    fn tokens_are_never_null_and_null_is_refused() {
        assert!(!token(0).is_null());
        assert_eq!(
            with_handle(std::ptr::null(), |_| SHMEM_OK),
            SHMEM_ERR_INVALID_ARGUMENT
        );
        assert_eq!(with_handle(token(12345), |_| SHMEM_OK), SHMEM_ERR_CLOSED);
    }
}
