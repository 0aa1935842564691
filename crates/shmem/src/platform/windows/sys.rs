//! The Win32 calls of the Windows backend, each behind a safe wrapper. Every `unsafe` of the
//! backend about the operating system lives here; each function names the call it makes.
//! Errors are Win32 error codes (`GetLastError`), which the callers classify.

use std::os::windows::ffi::OsStrExt;
use std::os::windows::io::{AsRawHandle, BorrowedHandle, FromRawHandle, OwnedHandle, RawHandle};
use std::path::Path;
use std::ptr::NonNull;
use std::time::Duration;

use windows_sys::Win32::Foundation::{
    GetLastError, LocalFree, ERROR_ALREADY_EXISTS, GENERIC_READ, GENERIC_WRITE, HANDLE,
    INVALID_HANDLE_VALUE, WAIT_ABANDONED, WAIT_OBJECT_0, WAIT_TIMEOUT,
};
use windows_sys::Win32::Security::Authorization::ConvertSidToStringSidW;
use windows_sys::Win32::Security::Authorization::{
    ConvertSecurityDescriptorToStringSecurityDescriptorW,
    ConvertStringSecurityDescriptorToSecurityDescriptorW, GetSecurityInfo, SDDL_REVISION_1,
    SE_FILE_OBJECT, SE_KERNEL_OBJECT,
};
use windows_sys::Win32::Security::{
    GetTokenInformation, TokenUser, DACL_SECURITY_INFORMATION, PSECURITY_DESCRIPTOR,
    SECURITY_ATTRIBUTES, TOKEN_QUERY, TOKEN_USER,
};
use windows_sys::Win32::Storage::FileSystem::{
    CreateFileW, CREATE_NEW, FILE_ATTRIBUTE_NORMAL, FILE_SHARE_DELETE, FILE_SHARE_READ,
    FILE_SHARE_WRITE, OPEN_EXISTING, READ_CONTROL,
};
use windows_sys::Win32::System::Memory::{
    CreateFileMappingW, MapViewOfFile, OpenFileMappingW, UnmapViewOfFile, VirtualQuery,
    FILE_MAP_READ, FILE_MAP_WRITE, MEMORY_BASIC_INFORMATION, MEMORY_MAPPED_VIEW_ADDRESS,
    PAGE_READWRITE,
};
use windows_sys::Win32::System::Threading::{
    CreateEventExW, GetCurrentProcess, OpenEventW, OpenProcessToken, SetEvent, WaitForSingleObject,
    CREATE_EVENT_MANUAL_RESET, EVENT_MODIFY_STATE, INFINITE, SYNCHRONIZATION_SYNCHRONIZE,
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
    /// `READ_CONTROL`: to read its DACL back.
    #[cfg_attr(not(test), allow(dead_code))]
    Inspect,
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

/// A self-relative security descriptor made from SDDL
/// (`ConvertStringSecurityDescriptorToSecurityDescriptorW`), freed with `LocalFree`.
#[derive(Debug)]
pub(crate) struct Security {
    sd: PSECURITY_DESCRIPTOR,
}

// SAFETY: the descriptor is an immutable block of memory owned by this value; the kernel only
// reads it during the calls it is passed to.
unsafe impl Send for Security {}
// SAFETY: as above: nothing writes the descriptor after it is made.
unsafe impl Sync for Security {}

impl Security {
    /// Parses `sddl`; fails with the Win32 code (`ERROR_INVALID_PARAMETER` for bad SDDL).
    pub(crate) fn from_sddl(sddl: &str) -> Result<Security, Code> {
        let text = wide(sddl);
        let mut sd: PSECURITY_DESCRIPTOR = std::ptr::null_mut();
        // SAFETY: `text` is NUL-terminated UTF-16 that outlives the call; `sd` is a writable
        // pointer the call fills with a `LocalAlloc`ed descriptor, which we own from here on.
        let ok = unsafe {
            ConvertStringSecurityDescriptorToSecurityDescriptorW(
                text.as_ptr(),
                SDDL_REVISION_1,
                &mut sd,
                std::ptr::null_mut(),
            )
        };
        if ok == 0 || sd.is_null() {
            return Err(last_error());
        }
        Ok(Security { sd })
    }

    /// The DACL in its canonical SDDL form (what the system prints back for it), the form
    /// [`dacl_of`] answers in, so that the two compare as strings.
    pub(crate) fn dacl_sddl(&self) -> Result<String, Code> {
        sddl_of(self.sd)
    }

    /// Security attributes pointing at this descriptor, for a `Create*` call made while `self`
    /// is borrowed.
    fn attributes(&self) -> SECURITY_ATTRIBUTES {
        SECURITY_ATTRIBUTES {
            nLength: std::mem::size_of::<SECURITY_ATTRIBUTES>() as u32,
            lpSecurityDescriptor: self.sd,
            bInheritHandle: 0,
        }
    }
}

impl Drop for Security {
    fn drop(&mut self) {
        // SAFETY: `sd` was allocated by `ConvertStringSecurityDescriptorToSecurityDescriptorW`
        // with `LocalAlloc`, is owned by `self` and freed exactly once here.
        unsafe {
            LocalFree(self.sd.cast());
        }
    }
}

/// `ConvertSecurityDescriptorToStringSecurityDescriptorW` of the DACL of `sd`.
fn sddl_of(sd: PSECURITY_DESCRIPTOR) -> Result<String, Code> {
    let mut text: *mut u16 = std::ptr::null_mut();
    let mut len = 0u32;
    // SAFETY: `sd` is a valid descriptor for the call; `text` receives a `LocalAlloc`ed
    // NUL-terminated string of `len` units, freed below.
    let ok = unsafe {
        ConvertSecurityDescriptorToStringSecurityDescriptorW(
            sd,
            SDDL_REVISION_1,
            DACL_SECURITY_INFORMATION,
            &mut text,
            &mut len,
        )
    };
    if ok == 0 || text.is_null() {
        return Err(last_error());
    }
    // SAFETY: the call wrote `len` units at `text` (the length may or may not count the NUL).
    let units = unsafe { std::slice::from_raw_parts(text, len as usize) };
    let s = String::from_utf16_lossy(units)
        .trim_end_matches('\0')
        .to_owned();
    // SAFETY: `text` was allocated by the call above with `LocalAlloc`, freed once here.
    unsafe {
        LocalFree(text.cast());
    }
    Ok(s)
}

/// The SID of this process's user in string form (`S-1-5-21-...`), from its token
/// (`OpenProcessToken`, `GetTokenInformation(TokenUser)`, `ConvertSidToStringSidW`).
pub(crate) fn user_sid() -> Result<String, Code> {
    let mut token: HANDLE = std::ptr::null_mut();
    // SAFETY: the pseudo-handle of the current process needs no closing; `token` is a
    // writable out pointer, and the handle it receives is owned just below.
    if unsafe { OpenProcessToken(GetCurrentProcess(), TOKEN_QUERY, &mut token) } == 0 {
        return Err(last_error());
    }
    let token = owned(token)?;
    // A TOKEN_USER is a pointer and attributes followed by the SID it points to: 8-aligned
    // storage of 256 bytes holds any SID (at most 68 bytes).
    let mut buf = [0u64; 32];
    let mut needed = 0u32;
    // SAFETY: `buf` is writable for the size passed and aligned for TOKEN_USER.
    let ok = unsafe {
        GetTokenInformation(
            raw(&token),
            TokenUser,
            buf.as_mut_ptr().cast(),
            std::mem::size_of_val(&buf) as u32,
            &mut needed,
        )
    };
    if ok == 0 {
        return Err(last_error());
    }
    // SAFETY: the call succeeded, so `buf` starts with a TOKEN_USER whose SID pointer points
    // into `buf` (alive for this function).
    let sid = unsafe { (*buf.as_ptr().cast::<TOKEN_USER>()).User.Sid };
    let mut text: *mut u16 = std::ptr::null_mut();
    // SAFETY: `sid` is a valid SID (above); `text` receives a `LocalAlloc`ed string.
    if unsafe { ConvertSidToStringSidW(sid, &mut text) } == 0 || text.is_null() {
        return Err(last_error());
    }
    // SAFETY: `text` is a NUL-terminated UTF-16 string written by the call.
    let len = (0..).take_while(|&i| unsafe { *text.add(i) } != 0).count();
    // SAFETY: `len` units before the NUL were written by the call.
    let s = String::from_utf16_lossy(unsafe { std::slice::from_raw_parts(text, len) });
    // SAFETY: allocated by `ConvertSidToStringSidW` with `LocalAlloc`, freed once here.
    unsafe {
        LocalFree(text.cast());
    }
    Ok(s)
}

/// What kind of object a handle given to [`dacl_of`] is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum ObjectType {
    /// A section, event or other kernel object.
    Kernel,
    /// A file.
    File,
}

/// The DACL of the object behind `h` in SDDL (`GetSecurityInfo`); `h` needs `READ_CONTROL`.
pub(crate) fn dacl_of(h: BorrowedHandle<'_>, ty: ObjectType) -> Result<String, Code> {
    let mut sd: PSECURITY_DESCRIPTOR = std::ptr::null_mut();
    let ty = match ty {
        ObjectType::Kernel => SE_KERNEL_OBJECT,
        ObjectType::File => SE_FILE_OBJECT,
    };
    // SAFETY: `h` is an open handle borrowed for the call; the out pointers we pass are
    // either null (not wanted) or writable; `sd` receives a `LocalAlloc`ed descriptor that
    // the DACL pointer (not asked for) would point into, freed below.
    let err = unsafe {
        GetSecurityInfo(
            h.as_raw_handle() as HANDLE,
            ty,
            DACL_SECURITY_INFORMATION,
            std::ptr::null_mut(),
            std::ptr::null_mut(),
            std::ptr::null_mut(),
            std::ptr::null_mut(),
            &mut sd,
        )
    };
    if err != 0 {
        return Err(err);
    }
    let s = sddl_of(sd);
    // SAFETY: `sd` was allocated by `GetSecurityInfo` with `LocalAlloc`, freed once here.
    unsafe {
        LocalFree(sd.cast());
    }
    s
}

/// How [`open_file`] opens a segment's file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum FileOpen {
    /// `CREATE_NEW` with no sharing: nobody else can open the file until this handle
    /// closes, so a creator initialises it alone (others get `ERROR_SHARING_VIOLATION`).
    CreateAlone,
    /// `OPEN_EXISTING`, shared for reading, writing and deleting (so that `rm` works while
    /// it is held).
    Join,
    /// `OPEN_EXISTING` for reading only, shared for everything: to read a header.
    Inspect,
    /// `OPEN_EXISTING` for reading, shared for deleting only: it succeeds only if no other
    /// handle has the file open for reading or writing (every holder does), the kernel's
    /// proof that nobody holds the segment; while it is open, nobody can join.
    Alone,
}

/// `CreateFileW(path, access, share, sa, disposition)`, as [`FileOpen`] says.
pub(crate) fn open_file(
    path: &Path,
    how: FileOpen,
    security: Option<&Security>,
) -> Result<std::fs::File, Code> {
    let path: Vec<u16> = path
        .as_os_str()
        .encode_wide()
        .chain(std::iter::once(0))
        .collect();
    let (access, share, disposition) = match how {
        FileOpen::CreateAlone => (GENERIC_READ | GENERIC_WRITE | READ_CONTROL, 0, CREATE_NEW),
        FileOpen::Join => (
            GENERIC_READ | GENERIC_WRITE | READ_CONTROL,
            FILE_SHARE_READ | FILE_SHARE_WRITE | FILE_SHARE_DELETE,
            OPEN_EXISTING,
        ),
        FileOpen::Inspect => (
            GENERIC_READ,
            FILE_SHARE_READ | FILE_SHARE_WRITE | FILE_SHARE_DELETE,
            OPEN_EXISTING,
        ),
        FileOpen::Alone => (GENERIC_READ, FILE_SHARE_DELETE, OPEN_EXISTING),
    };
    let sa = security.map(Security::attributes);
    let sa_ptr = sa
        .as_ref()
        .map_or(std::ptr::null(), |a| a as *const SECURITY_ATTRIBUTES);
    // SAFETY: `path` is NUL-terminated UTF-16 that outlives the call; `sa_ptr` is null or
    // points at attributes whose descriptor (`security`) is borrowed for the call.
    let h = unsafe {
        CreateFileW(
            path.as_ptr(),
            access,
            share,
            sa_ptr,
            disposition,
            FILE_ATTRIBUTE_NORMAL,
            std::ptr::null_mut(),
        )
    };
    owned(h).map(std::fs::File::from)
}

/// `CreateFileMappingW(file, sa, PAGE_READWRITE, 0, 0, NULL)`: an unnamed section of the whole
/// file (the file's path is the segment's name).
pub(crate) fn map_file(
    file: &std::fs::File,
    security: Option<&Security>,
) -> Result<OwnedHandle, Code> {
    let sa = security.map(Security::attributes);
    let sa_ptr = sa
        .as_ref()
        .map_or(std::ptr::null(), |a| a as *const SECURITY_ATTRIBUTES);
    // SAFETY: `file` is an open file handle borrowed for the call; `sa_ptr` is null or points
    // at attributes whose descriptor is borrowed for the call; a null name makes the section
    // unnamed.
    owned(unsafe {
        CreateFileMappingW(
            file.as_raw_handle() as HANDLE,
            sa_ptr,
            PAGE_READWRITE,
            0,
            0,
            std::ptr::null(),
        )
    })
}

/// `CreateFileMappingW(INVALID_HANDLE_VALUE, NULL, PAGE_READWRITE, size, name)`: a named
/// section backed by the page file, committed (so a lack of memory is an error here, not a
/// fault later) and zero-filled when new. An existing section keeps its own size.
pub(crate) fn create_mapping(
    name: &str,
    size: u64,
    security: &Security,
) -> Result<(OwnedHandle, Opened), Code> {
    let name = wide(name);
    let sa = security.attributes();
    // SAFETY: `name` is a NUL-terminated UTF-16 string that outlives the call; `sa` points at
    // the descriptor `security`, borrowed for the call (used only if the section is new).
    let h = unsafe {
        CreateFileMappingW(
            INVALID_HANDLE_VALUE,
            &sa,
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

/// `OpenFileMappingW(FILE_MAP_READ | FILE_MAP_WRITE | READ_CONTROL, FALSE, name)`.
pub(crate) fn open_mapping(name: &str) -> Result<OwnedHandle, Code> {
    let name = wide(name);
    // SAFETY: `name` is a NUL-terminated UTF-16 string that outlives the call.
    owned(unsafe {
        OpenFileMappingW(
            FILE_MAP_READ | FILE_MAP_WRITE | READ_CONTROL,
            0,
            name.as_ptr(),
        )
    })
}

/// `CreateEventExW(sa, name, flags, SYNCHRONIZE | EVENT_MODIFY_STATE | READ_CONTROL)`: a named
/// event, not signalled when new, with the segment's descriptor. The access asked for is what
/// the lock and the waiters use (wait, set; `READ_CONTROL` to read the DACL back), so that
/// opening an existing event needs no more than the mode grants (`CreateEventW` would ask for
/// `EVENT_ALL_ACCESS`).
pub(crate) fn create_event(
    name: &str,
    manual_reset: bool,
    security: &Security,
) -> Result<(OwnedHandle, Opened), Code> {
    let name = wide(name);
    let sa = security.attributes();
    let flags = if manual_reset {
        CREATE_EVENT_MANUAL_RESET
    } else {
        0
    };
    // SAFETY: `name` is a NUL-terminated UTF-16 string that outlives the call; `sa` points at
    // the descriptor `security`, borrowed for the call (used only if the event is new).
    let h = unsafe {
        CreateEventExW(
            &sa,
            name.as_ptr(),
            flags,
            SYNCHRONIZATION_SYNCHRONIZE | EVENT_MODIFY_STATE | READ_CONTROL,
        )
    };
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
        EventAccess::Inspect => READ_CONTROL,
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
        // Views start on the allocation granularity (64 KiB); `platform/shared.rs` relies on
        // at least a page for alignment.
        if ptr.as_ptr() as usize % crate::platform::shared::BASE_ALIGN != 0 {
            return Err(windows_sys::Win32::Foundation::ERROR_MAPPED_ALIGNMENT);
        }
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

    /// Whether the view may be written: always (views are `FILE_MAP_WRITE`).
    pub(crate) fn writable(&self) -> bool {
        true
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
        unsafe { crate::platform::copy::copy_from_shared(&mut head, self.ptr.as_ptr()) };
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
