//! The few system calls that rustix does not wrap the way we need, and the mapping type.
//!
//! Everything `unsafe` about the operating system lives here (the shared-memory atomics live in
//! `copy.rs`, `header.rs` and `value.rs`). Each function states the syscall it makes.

use std::os::fd::{AsFd, AsRawFd, BorrowedFd};
use std::ptr::NonNull;

use rustix::io::Errno;

/// The kind of open-file-description lock to take on the segment's first byte.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum LockKind {
    /// `F_RDLCK`: held by every attached handle.
    Shared,
    /// `F_WRLCK`: held by whoever proves it is alone (to initialise or to unlink).
    Exclusive,
    /// `F_UNLCK`: a detaching handle lets go before it closes (see `fork.rs`).
    Unlock,
}

/// `fcntl(fd, F_OFD_SETLK, {type, SEEK_SET, 0, 1})`, never blocking: the attach lock.
///
/// Open file description locks belong to the description, not to the process: two handles in
/// one process conflict like two processes do, a forked child shares its parent's lock, and the
/// kernel drops the lock when the last reference to the description goes (descriptors and
/// mappings, so also at a crash). Converting a held lock to another type is atomic (the kernel
/// replaces it in place). We never use `F_OFD_SETLKW`: it can neither time out nor be
/// interrupted, so waiting is the caller's loop, with its deadline.
///
/// Returns `Ok(false)` when a conflicting lock is held.
pub(crate) fn ofd_lock(fd: BorrowedFd<'_>, kind: LockKind) -> Result<bool, Errno> {
    ofd_lock_at(fd, kind, 0)
}

/// `fcntl(fd, F_OFD_SETLK, {type, SEEK_SET, start, 1})`, never blocking: a lock on one byte
/// (which may lie past the end of the file). Returns `Ok(false)` when a conflicting lock is
/// held.
pub(crate) fn ofd_lock_at(fd: BorrowedFd<'_>, kind: LockKind, start: u64) -> Result<bool, Errno> {
    let l_type = match kind {
        LockKind::Shared => libc::F_RDLCK,
        LockKind::Exclusive => libc::F_WRLCK,
        LockKind::Unlock => libc::F_UNLCK,
    };
    let mut fl = one_byte(l_type, start)?;
    loop {
        match fcntl_lock(fd, libc::F_OFD_SETLK, &mut fl) {
            Ok(()) => return Ok(true),
            Err(Errno::INTR) => continue,
            Err(Errno::AGAIN) | Err(Errno::ACCESS) => return Ok(false),
            Err(e) => return Err(e),
        }
    }
}

/// Whether another open file description holds a lock on byte `start`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum ByteLock {
    /// Some other description holds a read or write lock on it.
    Held,
    /// Nobody else does.
    Free,
}

/// `fcntl(fd, F_OFD_GETLK, {F_WRLCK, SEEK_SET, start, 1})`: whether a description other than
/// `fd`'s holds a lock on byte `start`. The kernel answers from its lock table, which it updates
/// when a description goes away (exit, exec, crash), so this is a liveness witness that no pid,
/// thread id or namespace enters into.
pub(crate) fn ofd_probe(fd: BorrowedFd<'_>, start: u64) -> Result<ByteLock, Errno> {
    let mut fl = one_byte(libc::F_WRLCK, start)?;
    loop {
        match fcntl_lock(fd, libc::F_OFD_GETLK, &mut fl) {
            Ok(()) if i32::from(fl.l_type) == libc::F_UNLCK => return Ok(ByteLock::Free),
            Ok(()) => return Ok(ByteLock::Held),
            Err(Errno::INTR) => continue,
            Err(e) => return Err(e),
        }
    }
}

/// A `struct flock` for one byte at `start`.
fn one_byte(l_type: libc::c_int, start: u64) -> Result<libc::flock, Errno> {
    // SAFETY: `flock` is plain old data; all-zero is a valid value that we then fill in.
    let mut fl: libc::flock = unsafe { std::mem::zeroed() };
    fl.l_type = l_type as libc::c_short;
    fl.l_whence = libc::SEEK_SET as libc::c_short;
    fl.l_start = libc::off_t::try_from(start).map_err(|_| Errno::INVAL)?;
    fl.l_len = 1;
    fl.l_pid = 0; // required to be 0 for OFD locks
    Ok(fl)
}

/// `fcntl(fd, cmd, fl)` for the OFD lock commands.
fn fcntl_lock(fd: BorrowedFd<'_>, cmd: libc::c_int, fl: &mut libc::flock) -> Result<(), Errno> {
    // SAFETY: `fd` is a valid open descriptor for the duration of the call (it is borrowed),
    // `cmd` is one of the OFD lock commands, which read and may write the `struct flock` that
    // `fl` points to, and `fl` outlives the call.
    let r = unsafe { libc::fcntl(fd.as_raw_fd(), cmd, fl as *mut libc::flock) };
    if r == 0 {
        Ok(())
    } else {
        Err(Errno::from_raw_os_error(
            std::io::Error::last_os_error().raw_os_error().unwrap_or(0),
        ))
    }
}

/// `FUTEX_WAIT(word, expected, timeout)` with a relative timeout, which the kernel measures on
/// `CLOCK_MONOTONIC`. Returns early on a wake-up, a signal, or a changed word.
#[cfg(not(loom))]
pub(crate) fn futex_wait(
    word: &crate::sync::AtomicU32,
    expected: u32,
    timeout: Option<std::time::Duration>,
) -> Result<(), Errno> {
    use rustix::thread::futex;
    let ts = timeout.map(|r| futex::Timespec {
        tv_sec: i64::try_from(r.as_secs()).unwrap_or(i64::MAX),
        tv_nsec: i64::from(r.subsec_nanos()),
    });
    match futex::wait(word, futex::Flags::empty(), expected, ts.as_ref()) {
        Ok(()) | Err(Errno::AGAIN) | Err(Errno::INTR) | Err(Errno::TIMEDOUT) => Ok(()),
        Err(e) => Err(e),
    }
}

/// `FUTEX_WAKE(word, n)`.
#[cfg(not(loom))]
pub(crate) fn futex_wake(word: &crate::sync::AtomicU32, n: u32) {
    let _ = rustix::thread::futex::wake(word, rustix::thread::futex::Flags::empty(), n);
}

/// Under loom a futex wait is a spurious wake-up, which the protocols must tolerate anyway.
#[cfg(loom)]
pub(crate) fn futex_wait(
    _word: &crate::sync::AtomicU32,
    _expected: u32,
    _timeout: Option<std::time::Duration>,
) -> Result<(), Errno> {
    loom::thread::yield_now();
    Ok(())
}

/// Under loom waking is implicit: every sleeper re-checks at its next scheduling point.
#[cfg(loom)]
pub(crate) fn futex_wake(_word: &crate::sync::AtomicU32, _n: u32) {}

/// A shared, read-write mapping of a whole segment file. Unmapped on drop.
#[derive(Debug)]
pub(crate) struct Mapping {
    ptr: NonNull<u8>,
    len: usize,
}

// SAFETY: the mapping is plain memory shared with other processes; every access to it goes
// through atomics or the sound copy routines, so sharing the pointer between threads is fine.
unsafe impl Send for Mapping {}
// SAFETY: as above: no access through `&Mapping` creates a Rust reference to racy bytes.
unsafe impl Sync for Mapping {}

impl Mapping {
    /// `mmap(NULL, len, PROT_READ|PROT_WRITE, MAP_SHARED, fd, 0)`.
    ///
    /// The caller has checked with `fstat` that the file is at least `len` bytes long, so no
    /// page of the mapping lies past the end of the file (which would raise SIGBUS).
    pub(crate) fn map(fd: BorrowedFd<'_>, len: usize) -> Result<Mapping, Errno> {
        use rustix::mm::{mmap, MapFlags, ProtFlags};
        if len == 0 {
            return Err(Errno::INVAL);
        }
        // SAFETY: a fresh mapping at an address the kernel picks cannot alias any existing Rust
        // object; the memory is only ever accessed through raw pointers and atomics.
        let ptr = unsafe {
            mmap(
                std::ptr::null_mut(),
                len,
                ProtFlags::READ | ProtFlags::WRITE,
                MapFlags::SHARED,
                fd.as_fd(),
                0,
            )?
        };
        let ptr = NonNull::new(ptr.cast::<u8>()).ok_or(Errno::INVAL)?;
        Ok(Mapping { ptr, len })
    }

    /// The first byte of the mapping.
    pub(crate) fn ptr(&self) -> *mut u8 {
        self.ptr.as_ptr()
    }

    /// The length mapped, in bytes.
    pub(crate) fn len(&self) -> usize {
        self.len
    }
}

impl Drop for Mapping {
    fn drop(&mut self) {
        // SAFETY: `ptr`/`len` are exactly what `mmap` returned and nothing borrows the memory
        // past the life of `self`. A failure of `munmap` (EINVAL only, for bad arguments) cannot
        // happen with these values and there would be nothing useful to do about it in `drop`.
        unsafe {
            let _ = rustix::mm::munmap(self.ptr.as_ptr().cast(), self.len);
        }
    }
}
