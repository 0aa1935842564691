//! The original DLL's API: the default segment, attached when the library is loaded and
//! detached when it is unloaded, and `SetSharedMem` / `GetSharedMem` with the seed's defects
//! fixed.
//!
//! # Load and unload (what `DllMain` did)
//!
//! A pointer to [`attach_at_load`] sits in `.init_array`, which the dynamic loader (or the C
//! runtime, for a program linked with `libshmem.a`) calls when the library is loaded, by `dlopen`
//! or at program start. It opens the default value segment: `$SHMEM_COMPAT_NAME`, or
//! `dllmemfilemap` when that is unset or empty, in `$SHMEM_DIR` (default `/dev/shm`), 4096
//! bytes, transient, so the first process to attach creates it zero-filled. A failure is stored,
//! never raised: [`shmem_compat_status`] reports it. [`detach_at_unload`] in `.fini_array` runs
//! at `dlclose` of the last reference and at `exit`, and drops the handle, which frees the
//! segment if this was its last user. A process that crashes runs neither; the kernel then
//! releases its hold (see the Rust library's segment protocol).
//!
//! If the constructor did not run (a loader that skips `.init_array`), the first call attaches
//! instead. After the destructor has run, the functions report [`SHMEM_ERR_NOT_FOUND`] rather
//! than attaching again, which nothing would then undo.
//!
//! # Storage
//!
//! The value holds the string's `wchar_t` code units (4 bytes each, native byte order) followed
//! by a NUL unit, so `GetSharedMem` returns exactly what `SetSharedMem` stored, whatever the code
//! units are. With the default 4096 bytes that is at most 1023 characters and the NUL.

use std::ffi::c_int;
use std::mem::size_of;
use std::sync::{Arc, PoisonError, RwLock, TryLockError};

use libc::wchar_t;
use shmem_core::Value;

use crate::error::{code_of, shmem_result, SHMEM_ERR_NOT_FOUND, SHMEM_OK};
use crate::ffi::segment_dir;
use crate::panic;

/// The seed's object name, used when `SHMEM_COMPAT_NAME` is unset or empty.
const DEFAULT_NAME: &str = "dllmemfilemap";
/// The seed's object size, as the value's capacity in bytes.
const CAPACITY: usize = 4096;
const UNIT: usize = size_of::<wchar_t>();

const _: () = assert!(UNIT == 4, "wchar_t is 32-bit on Linux");

/// Where the default segment stands.
enum State {
    /// Neither the constructor nor a call has tried to attach yet.
    NotYet,
    /// Attached. Calls clone the `Arc` and release the lock before using the value.
    Attached(Arc<Value>),
    /// Attaching failed with this code; it is not retried, as a failed `DllMain` is not.
    Failed(shmem_result),
    /// The destructor has run.
    Detached,
}

/// The default segment. `SetSharedMem` and `GetSharedMem` take the read side only to clone the
/// handle (never across a `set` or `get`, which may wait), attach and detach the write side. A
/// poisoned lock is used as it is: every write to it stores a complete state.
static STATE: RwLock<State> = RwLock::new(State::NotYet);

#[cfg(not(test))]
#[used]
#[link_section = ".init_array"]
static ATTACH_AT_LOAD: extern "C" fn() = attach_at_load;

#[cfg(not(test))]
#[used]
#[link_section = ".fini_array"]
static DETACH_AT_UNLOAD: extern "C" fn() = detach_at_unload;

/// The load-time constructor (not built into this crate's unit tests).
#[cfg_attr(test, allow(dead_code))]
extern "C" fn attach_at_load() {
    panic::guard_or((), attach);
}

/// The unload-time destructor.
#[cfg_attr(test, allow(dead_code))]
extern "C" fn detach_at_unload() {
    panic::guard_or((), || {
        // A forked child can inherit the read side held by a thread of its parent that does not
        // exist in the child; the lock is otherwise only held for an `Arc` clone. So try for a
        // bounded time, and leave the handle to the process's exit (the kernel then lets go of
        // the segment) rather than hang in `exit`.
        let deadline = std::time::Instant::now() + std::time::Duration::from_millis(200);
        let mut state = loop {
            match STATE.try_write() {
                Ok(state) => break state,
                Err(TryLockError::Poisoned(p)) => break p.into_inner(),
                Err(TryLockError::WouldBlock) if std::time::Instant::now() < deadline => {
                    std::thread::yield_now()
                }
                Err(TryLockError::WouldBlock) => return,
            }
        };
        let old = std::mem::replace(&mut *state, State::Detached);
        drop(state);
        drop(old); // after the lock is released: detaching makes system calls
    });
}

fn attach() {
    let mut state = STATE.write().unwrap_or_else(PoisonError::into_inner);
    if matches!(*state, State::NotYet) {
        *state = match open_default() {
            Ok(v) => State::Attached(Arc::new(v)),
            Err(e) => State::Failed(code_of(&e)),
        };
    }
}

fn open_default() -> shmem_core::Result<Value> {
    let name = match std::env::var("SHMEM_COMPAT_NAME") {
        Ok(n) if !n.is_empty() => n,
        _ => DEFAULT_NAME.to_owned(),
    };
    Value::builder(&name)
        .dir(segment_dir())
        .capacity(CAPACITY)
        .open()
}

/// Runs `f` on the default segment, attaching first if nothing tried yet; or the error code.
fn with_value<R>(f: impl FnOnce(&Value) -> R) -> Result<R, shmem_result> {
    let mut state = STATE.read().unwrap_or_else(PoisonError::into_inner);
    if matches!(*state, State::NotYet) {
        drop(state);
        attach();
        state = STATE.read().unwrap_or_else(PoisonError::into_inner);
    }
    let value = match &*state {
        State::Attached(v) => Arc::clone(v),
        State::Failed(code) => return Err(*code),
        State::NotYet | State::Detached => return Err(SHMEM_ERR_NOT_FOUND),
    };
    drop(state);
    Ok(f(&value))
}

/// 0 (`SHMEM_OK`) when the default segment is attached, else the error code of the failed
/// attach (see `shmem_strerror`), or `SHMEM_ERR_NOT_FOUND` once the library is being unloaded.
///
/// The default segment is attached when the library is loaded (at program start or by
/// `dlopen`): it is the value segment named by the environment variable `SHMEM_COMPAT_NAME`,
/// or `dllmemfilemap` when that is unset or empty, in the directory `$SHMEM_DIR` (default
/// `/dev/shm`), with a capacity of 4096 bytes, freed when the last process using it unloads the
/// library, exits or crashes. A failed attach does not abort the program and is not retried.
#[no_mangle]
pub extern "C" fn shmem_compat_status() -> c_int {
    panic::guard(|| with_value(|_| SHMEM_OK).unwrap_or_else(|code| code))
}

/// Stores the NUL-terminated wide string `s` in the default segment; NULL stores the empty
/// string. `wchar_t` is 32-bit on Linux: each character is one 4-byte code unit. A string
/// longer than the segment holds (1023 characters and the NUL, for 4096 bytes) is truncated to
/// that many characters; nothing is ever written past the segment, and `s` is not read past
/// its NUL or that limit. Readers see the old or the new string, never a mix.
///
/// Nothing is stored if the default segment is not attached (see `shmem_compat_status`), or if
/// another live process has been writing it for 5 seconds.
///
/// # Safety
/// `s` is NULL or a NUL-terminated wide string that stays unchanged during the call.
#[allow(non_snake_case)]
#[no_mangle]
pub unsafe extern "C" fn SetSharedMem(s: *const wchar_t) {
    panic::guard_or((), || {
        let _ = with_value(|v| {
            let units = (0..max_units(v.capacity()))
                // SAFETY: the caller passes a NUL-terminated string, and `take_while` stops at
                // the NUL, so `s.add(i)` is never read past it; `map_while` stops at once for
                // NULL without reading.
                .map_while(|i| (!s.is_null()).then(|| unsafe { s.add(i).read() }))
                .take_while(|&c| c != 0);
            let _ = v.set(&encode(units));
        });
    });
}

/// Copies the string stored in the default segment into `buf`: at most `cchSize - 1`
/// characters (4-byte `wchar_t` units on Linux) and a terminating NUL, so `buf` always ends up
/// NUL-terminated. With `cchSize == 0` or a NULL `buf`, writes nothing. The string is read as
/// one consistent snapshot, never half of one `SetSharedMem` and half of another. If the default
/// segment is not attached (see `shmem_compat_status`), stores the empty string.
///
/// # Safety
/// `buf` is NULL or points to `cchSize` writable `wchar_t`s.
#[allow(non_snake_case)]
#[no_mangle]
pub unsafe extern "C" fn GetSharedMem(buf: *mut wchar_t, cchSize: u32) {
    panic::guard_or((), || {
        if buf.is_null() || cchSize == 0 {
            return;
        }
        let stored = with_value(|v| v.get_vec().map(|(bytes, _)| decode(&bytes)));
        let units = match stored {
            Ok(Ok(units)) => units,
            _ => Vec::new(),
        };
        let n = units.len().min(cchSize as usize - 1);
        for (i, &c) in units[..n].iter().enumerate() {
            // SAFETY: `i < n <= cchSize - 1`, inside the caller's buffer of `cchSize` units.
            unsafe { buf.add(i).write(c) };
        }
        // SAFETY: `n <= cchSize - 1`, the buffer's last unit at most.
        unsafe { buf.add(n).write(0) };
    });
}

/// How many characters fit a value of `capacity` bytes with the terminating NUL.
fn max_units(capacity: usize) -> usize {
    (capacity / UNIT).saturating_sub(1)
}

/// The stored form of a string: its code units, then a NUL unit.
fn encode(units: impl Iterator<Item = wchar_t>) -> Vec<u8> {
    let mut bytes: Vec<u8> = units.flat_map(wchar_t::to_ne_bytes).collect();
    bytes.extend_from_slice(&[0; UNIT]);
    bytes
}

/// The code units of a stored string, up to its NUL. A value written by another program may
/// lack the NUL or end in a partial unit: both are tolerated.
fn decode(bytes: &[u8]) -> Vec<wchar_t> {
    bytes
        .chunks_exact(UNIT)
        .map(|c| wchar_t::from_ne_bytes(c.try_into().expect("chunks of UNIT bytes")))
        .take_while(|&c| c != 0)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strings_round_trip_with_any_code_units() {
        let units: Vec<wchar_t> = vec![0x54, 0x1F600, 0xD800, 0x10FFFF, -5i32 as wchar_t];
        let bytes = encode(units.iter().copied());
        assert_eq!(bytes.len(), (units.len() + 1) * UNIT);
        assert_eq!(decode(&bytes), units);
    }

    #[test]
    fn decode_stops_at_nul_and_tolerates_partial_units() {
        let mut bytes = encode([0x41, 0x42].into_iter());
        bytes.extend_from_slice(&encode([0x43].into_iter()));
        assert_eq!(decode(&bytes), vec![0x41, 0x42]);
        let mut cut = encode([0x41].into_iter());
        cut.truncate(UNIT + 2);
        assert_eq!(decode(&cut), vec![0x41]);
        assert_eq!(decode(&[]), Vec::<wchar_t>::new());
    }

    #[test]
    fn the_default_capacity_holds_1023_characters_and_the_nul() {
        assert_eq!(max_units(CAPACITY), 1023);
        assert_eq!(
            encode(std::iter::repeat(0x78).take(max_units(CAPACITY))).len(),
            CAPACITY
        );
        assert_eq!(max_units(0), 0);
    }
}
