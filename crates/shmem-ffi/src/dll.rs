//! The seed's DLL on its own platform: `shmem.dll` attaches the default value when it is
//! loaded and detaches when it is unloaded, and exports the seed's `SetSharedMem` and
//! `GetSharedMem` (Windows only; on Linux the same pair is `libshmem_compat`).
//!
//! - `DllMain(DLL_PROCESS_ATTACH)` opens (creating if need be) the transient value named by
//!   `SHMEM_COMPAT_NAME`, or `dllmemfilemap` as in the seed, with room for 4096 UTF-16 units;
//!   a failure makes the load fail, as the seed's `return FALSE` did. `DLL_PROCESS_DETACH`
//!   (`FreeLibrary`, or exit) drops it; a process that is terminated runs neither, and the
//!   kernel's handle count frees the segment anyway.
//! - `SetSharedMem(s)` publishes the UTF-16 string `s` (up to its NUL, at most 4095 units, as
//!   the seed copied) as one consistent value: a reader never sees half of it.
//! - `GetSharedMem(buf, n)` copies the current string into `buf`, at most `n - 1` units, and
//!   always NUL-terminates (the seed wrote `buf[0]` even for `n == 0`, and past the end for
//!   a string of exactly `n` units). An empty segment, or no attach, reads as "".
//!
//! `wchar_t` is 16-bit here, so the stored units are UTF-16 (Linux's library keeps 32-bit
//! units). NULL pointers are ignored; a panic never crosses into C.

use std::ffi::c_void;
use std::sync::Mutex;

use shmem_core::Value;

use crate::panic;

/// The seed's object name.
const DEFAULT_NAME: &str = "dllmemfilemap";
/// The seed's SHMEMSIZE, in UTF-16 units (its copy loops count units, not bytes).
const UNITS: usize = 4096;

const DLL_PROCESS_DETACH: u32 = 0;
const DLL_PROCESS_ATTACH: u32 = 1;

/// The default value, `Some` between attach and detach.
static DEFAULT: Mutex<Option<Value>> = Mutex::new(None);

fn default_value() -> std::sync::MutexGuard<'static, Option<Value>> {
    DEFAULT.lock().unwrap_or_else(|e| e.into_inner())
}

fn attach() -> bool {
    let name = match std::env::var("SHMEM_COMPAT_NAME") {
        Ok(n) if !n.is_empty() => n,
        _ => DEFAULT_NAME.to_owned(),
    };
    match Value::open(&name, UNITS * 2) {
        Ok(v) => {
            *default_value() = Some(v);
            true
        }
        Err(e) => {
            eprintln!("shmem.dll: cannot attach the default segment: {e}");
            false
        }
    }
}

/// The DLL's entry point, called by the loader (under its lock: nothing here waits for
/// another thread or loads a library).
///
/// # Safety
/// Called by the Windows loader only.
#[no_mangle]
pub unsafe extern "system" fn DllMain(
    _module: *mut c_void,
    reason: u32,
    _reserved: *mut c_void,
) -> i32 {
    panic::guard_or(0, || match reason {
        DLL_PROCESS_ATTACH => i32::from(attach()),
        DLL_PROCESS_DETACH => {
            drop(default_value().take());
            1
        }
        _ => 1,
    })
}

/// Stores the NUL-terminated UTF-16 string `s` (at most 4095 units) in the default segment.
///
/// # Safety
/// `s` is NULL or points to a NUL-terminated string of 16-bit units.
#[no_mangle]
pub unsafe extern "C" fn SetSharedMem(s: *const u16) {
    if s.is_null() {
        return;
    }
    let mut len = 0;
    // SAFETY: the caller passes a NUL-terminated string; we stop at its NUL, or at the
    // seed's limit of UNITS - 1 units, whichever comes first.
    while len < UNITS - 1 && unsafe { *s.add(len) } != 0 {
        len += 1;
    }
    // SAFETY: the `len` units before the NUL (or the limit) were just read above.
    let units = unsafe { std::slice::from_raw_parts(s, len) };
    let bytes: Vec<u8> = units.iter().flat_map(|u| u.to_le_bytes()).collect();
    panic::guard_or((), || {
        if let Some(v) = &*default_value() {
            let _ = v.set(&bytes);
        }
    });
}

/// Copies the default segment's string into `buf` (at most `n - 1` units, NUL-terminated).
///
/// # Safety
/// `buf` is NULL or points to `n` writable 16-bit units.
#[no_mangle]
pub unsafe extern "C" fn GetSharedMem(buf: *mut u16, n: u32) {
    if buf.is_null() || n == 0 {
        return;
    }
    let room = n as usize - 1;
    let units = panic::guard_or(Vec::new(), || {
        let Some(v) = &*default_value() else {
            return Vec::new();
        };
        match v.get_vec() {
            Ok((bytes, _)) => bytes
                .chunks_exact(2)
                .map(|c| u16::from_le_bytes([c[0], c[1]]))
                .take_while(|&u| u != 0)
                .take(room)
                .collect(),
            Err(_) => Vec::new(),
        }
    });
    // SAFETY: the caller gives `n` writable units; we write `units.len() <= n - 1` of them
    // and the NUL after them.
    unsafe {
        std::ptr::copy_nonoverlapping(units.as_ptr(), buf, units.len());
        *buf.add(units.len()) = 0;
    }
}
