//! The Win32 calls of the Windows backend, each behind a safe wrapper. Every `unsafe` of the
//! backend about the operating system lives here; each function names the call it makes.
//! Errors are Win32 error codes (`GetLastError`), which the callers classify.

use std::os::windows::io::{AsRawHandle, FromRawHandle, OwnedHandle, RawHandle};
use std::ptr::NonNull;
use std::time::Duration;

use windows_sys::Win32::Foundation::{
    GetLastError, ERROR_ALREADY_EXISTS, HANDLE, INVALID_HANDLE_VALUE, WAIT_ABANDONED,
    WAIT_OBJECT_0, WAIT_TIMEOUT,
};
use windows_sys::Win32::System::Memory::{
    CreateFileMappingW, MapViewOfFile, OpenFileMappingW, UnmapViewOfFile, VirtualQuery,
    FILE_MAP_READ, FILE_MAP_WRITE, MEMORY_BASIC_INFORMATION, MEMORY_MAPPED_VIEW_ADDRESS,
    PAGE_READWRITE,
};
use windows_sys::Win32::System::Threading::{
    CreateEventW, OpenEventW, SetEvent, WaitForSingleObject, EVENT_MODIFY_STATE, INFINITE,
    SYNCHRONIZATION_SYNCHRONIZE,
};

use crate::header::{RawHeader, HEADER_LEN};

/// A Win32 error code, as `GetLastError` returns it.
pub(crate) type Code = u32;

/// Whether a create made the object or found it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Opened {
    /// The object is new (for a mapping: zero-filled).
    Created,
    /// An object of that name existed (`ERROR_ALREADY_EXISTS`): this is a handle to it.
    Existed,
}

/// What an event wait returned.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Waited {
    /// The event was signalled.
    Signalled,
    /// The timeout passed.
    TimedOut,
}

/// How a named event is opened by someone who did not create it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum EventAccess {
    /// `SYNCHRONIZE`: enough to prove it exists.
    Probe,
    /// `EVENT_MODIFY_STATE`: to signal it.
    Signal,
}

/// A NUL-terminated UTF-16 copy of `s`.
fn wide(s: &str) -> Vec<u16> {
    s.encode_utf16().chain(std::iter::once(0)).collect()
}

fn last_error() -> Code {
    // SAFETY: `GetLastError` only reads this thread's last-error value.
    unsafe { GetLastError() }
}

/// Takes ownership of a handle a `Create*`/`Open*` call returned, or its error.
fn owned(h: HANDLE) -> Result<OwnedHandle, Code> {
    if h.is_null() || h == INVALID_HANDLE_VALUE {
        return Err(last_error());
    }
    // SAFETY: `h` is a handle the calling `Create*`/`Open*` function just returned to us; no
    // one else owns it, and `OwnedHandle` closes it exactly once.
    Ok(unsafe { OwnedHandle::from_raw_handle(h as RawHandle) })
}

fn raw(h: &OwnedHandle) -> HANDLE {
    h.as_raw_handle() as HANDLE
}

/// `CreateFileMappingW(INVALID_HANDLE_VALUE, NULL, PAGE_READWRITE, size, name)`: a named
/// section backed by the page file, committed (so a lack of memory is an error here, not a
/// fault later) and zero-filled when new. An existing section keeps its own size.
pub(crate) fn create_mapping(name: &str, size: u64) -> Result<(OwnedHandle, Opened), Code> {
    let name = wide(name);
    // SAFETY: `name` is a NUL-terminated UTF-16 string that outlives the call; a null security
    // attributes pointer asks for the default security descriptor.
    let h = unsafe {
        CreateFileMappingW(
            INVALID_HANDLE_VALUE,
            std::ptr::null(),
            PAGE_READWRITE,
            (size >> 32) as u32,
            size as u32,
            name.as_ptr(),
        )
    };
    // Read before anything else can overwrite the thread's last error.
    let err = last_error();
    let h = owned(h)?;
    let opened = if err == ERROR_ALREADY_EXISTS {
        Opened::Existed
    } else {
        Opened::Created
    };
    Ok((h, opened))
}

/// `OpenFileMappingW(FILE_MAP_READ | FILE_MAP_WRITE, FALSE, name)`.
pub(crate) fn open_mapping(name: &str) -> Result<OwnedHandle, Code> {
    let name = wide(name);
    // SAFETY: `name` is a NUL-terminated UTF-16 string that outlives the call.
    owned(unsafe { OpenFileMappingW(FILE_MAP_READ | FILE_MAP_WRITE, 0, name.as_ptr()) })
}

/// `CreateEventW(NULL, manual_reset, FALSE, name)`: a named event, not signalled when new.
pub(crate) fn create_event(name: &str, manual_reset: bool) -> Result<(OwnedHandle, Opened), Code> {
    let name = wide(name);
    // SAFETY: `name` is a NUL-terminated UTF-16 string that outlives the call; null security
    // attributes ask for the default security descriptor.
    let h = unsafe { CreateEventW(std::ptr::null(), i32::from(manual_reset), 0, name.as_ptr()) };
    let err = last_error();
    let h = owned(h)?;
    let opened = if err == ERROR_ALREADY_EXISTS {
        Opened::Existed
    } else {
        Opened::Created
    };
    Ok((h, opened))
}

/// `OpenEventW(access, FALSE, name)`. Fails with `ERROR_FILE_NOT_FOUND` once the kernel has
/// destroyed the event, which it does when its last handle closes (exit and crash included).
pub(crate) fn open_event(name: &str, access: EventAccess) -> Result<OwnedHandle, Code> {
    let name = wide(name);
    let access = match access {
        EventAccess::Probe => SYNCHRONIZATION_SYNCHRONIZE,
        EventAccess::Signal => EVENT_MODIFY_STATE,
    };
    // SAFETY: `name` is a NUL-terminated UTF-16 string that outlives the call.
    owned(unsafe { OpenEventW(access, 0, name.as_ptr()) })
}

/// `SetEvent(h)`.
pub(crate) fn set_event(h: &OwnedHandle) -> Result<(), Code> {
    // SAFETY: `h` is an open event handle, borrowed for the call.
    if unsafe { SetEvent(raw(h)) } != 0 {
        Ok(())
    } else {
        Err(last_error())
    }
}

/// `WaitForSingleObject(h, ms)`, `None` waiting forever. A timeout is rounded up to whole
/// milliseconds, so that a short remaining time does not become a busy loop of zero waits.
pub(crate) fn wait(h: &OwnedHandle, timeout: Option<Duration>) -> Result<Waited, Code> {
    let ms = match timeout {
        None => INFINITE,
        Some(t) => {
            let ms = t.as_micros().div_ceil(1000);
            u32::try_from(ms).unwrap_or(INFINITE - 1).min(INFINITE - 1)
        }
    };
    // SAFETY: `h` is an open event handle, borrowed for the call.
    match unsafe { WaitForSingleObject(raw(h), ms) } {
        WAIT_OBJECT_0 | WAIT_ABANDONED => Ok(Waited::Signalled),
        WAIT_TIMEOUT => Ok(Waited::TimedOut),
        _ => Err(last_error()),
    }
}

/// A read-write view of a whole section. Unmapped on drop (the section itself lives while
/// any handle or view of it does).
#[derive(Debug)]
pub(crate) struct Mapping {
    ptr: NonNull<u8>,
    /// The bytes the segment uses: at most the view's size.
    len: usize,
    /// The view's size, whole pages.
    view_len: usize,
}

// SAFETY: the view is plain memory shared with other processes; every access to it goes
// through atomics or the sound copy routines, so sharing the pointer between threads is fine.
unsafe impl Send for Mapping {}
// SAFETY: as above: no access through `&Mapping` creates a Rust reference to racy bytes.
unsafe impl Sync for Mapping {}

impl Mapping {
    /// `MapViewOfFile(h, FILE_MAP_READ | FILE_MAP_WRITE, 0, 0, 0)` (the whole section), then
    /// `VirtualQuery` for the view's size.
    pub(crate) fn map(h: &OwnedHandle) -> Result<Mapping, Code> {
        // SAFETY: `h` is an open section handle; a view at an address the kernel picks cannot
        // alias any existing Rust object; its memory is only accessed through raw pointers
        // and atomics.
        let view = unsafe { MapViewOfFile(raw(h), FILE_MAP_READ | FILE_MAP_WRITE, 0, 0, 0) };
        let Some(ptr) = NonNull::new(view.Value.cast::<u8>()) else {
            return Err(last_error());
        };
        // Owned from here on: an early return unmaps the view.
        let mut mapping = Mapping {
            ptr,
            len: 0,
            view_len: 0,
        };
        // SAFETY: all-zero is a valid `MEMORY_BASIC_INFORMATION` (integers and pointers).
        let mut info: MEMORY_BASIC_INFORMATION = unsafe { std::mem::zeroed() };
        // SAFETY: `info` is a writable buffer of the size passed; the address is our view.
        let n = unsafe {
            VirtualQuery(
                ptr.as_ptr().cast(),
                &mut info,
                std::mem::size_of::<MEMORY_BASIC_INFORMATION>(),
            )
        };
        if n == 0 {
            return Err(last_error()); // `mapping` unmaps the view
        }
        mapping.len = info.RegionSize;
        mapping.view_len = info.RegionSize;
        Ok(mapping)
    }

    /// The view's size in bytes (whole pages).
    pub(crate) fn view_len(&self) -> usize {
        self.view_len
    }

    /// Limits the bytes the segment uses to `len` (at most the view's size).
    pub(crate) fn set_len(&mut self, len: usize) {
        assert!(len <= self.view_len, "a segment longer than its view");
        self.len = len;
    }

    /// The first byte of the view.
    pub(crate) fn ptr(&self) -> *mut u8 {
        self.ptr.as_ptr()
    }

    /// The bytes the segment uses.
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    /// The header, as atomics.
    pub(crate) fn raw_header(&self) -> &RawHeader {
        assert!(self.view_len >= HEADER_LEN);
        // SAFETY: the view is at least HEADER_LEN bytes (checked above) and page aligned (so
        // 8-aligned), and `RawHeader` is made of atomics, so a shared reference to it is sound
        // while other processes write there.
        unsafe { &*self.ptr.as_ptr().cast::<RawHeader>() }
    }

    /// A copy of the header's bytes.
    pub(crate) fn header_bytes(&self) -> [u8; HEADER_LEN] {
        assert!(self.view_len >= HEADER_LEN);
        let mut head = [0u8; HEADER_LEN];
        // SAFETY: the view has at least HEADER_LEN bytes (checked above).
        unsafe { crate::copy::copy_from_shared(&mut head, self.ptr.as_ptr()) };
        head
    }
}

impl Drop for Mapping {
    fn drop(&mut self) {
        let view = MEMORY_MAPPED_VIEW_ADDRESS {
            Value: self.ptr.as_ptr().cast(),
        };
        // SAFETY: `ptr` is the base address `MapViewOfFile` returned and nothing borrows the
        // memory past the life of `self`. A failure could only mean a bad address, which this
        // is not, and there is nothing useful to do about it in `drop`.
        unsafe {
            let _ = UnmapViewOfFile(view);
        }
    }
}
