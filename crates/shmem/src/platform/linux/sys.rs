//! The few system calls that rustix does not wrap the way we need, and the mapping type.
//!
//! Everything `unsafe` about the operating system lives here (the racy copies are in
//! `platform/copy.rs`, the fork and exit handlers in `fork.rs`, views of the mapping in
//! `platform/shared.rs`): OFD locks, the mapping type (`mmap` or SysV `shmat`), the SysV calls
//! and `atexit`. Each function states the syscall it makes.

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

/// `futex_waitv` on two words (Linux 5.16 and later): sleeps while `shared` (a futex in the
/// segment, which may be mapped read-only: waiting only reads it) holds `shared_seen` and
/// `local` (a private futex in this process's memory) holds `local_seen`, at most `timeout`.
/// Returns early on a wake-up of either word, a signal, or a changed word. How a read-only
/// waiter sleeps on the segment's `wake` counter and can still be cancelled from its own
/// process (`WriterSys::wake_local`), since it cannot bump the shared word. `ENOSYS` on older
/// kernels.
#[cfg(not(loom))]
pub(crate) fn futex_wait_either(
    shared: &crate::sync::AtomicU32,
    shared_seen: u32,
    local: &crate::sync::AtomicU32,
    local_seen: u32,
    timeout: Option<std::time::Duration>,
) -> Result<(), Errno> {
    use rustix::thread::futex::{self, ClockId, Wait, WaitFlags, WaitPtr, WaitvFlags};
    let word = |w: &crate::sync::AtomicU32, seen: u32, flags: WaitFlags| {
        let mut wait = Wait::new();
        wait.val = u64::from(seen);
        wait.uaddr = WaitPtr::new(w.as_ptr().cast());
        wait.flags = flags;
        wait
    };
    let waiters = [
        word(shared, shared_seen, WaitFlags::SIZE_U32),
        word(local, local_seen, WaitFlags::SIZE_U32 | WaitFlags::PRIVATE),
    ];
    // futex_waitv takes an absolute deadline on the clock it is given.
    let deadline = match timeout {
        None => None,
        Some(r) => {
            let now = rustix::time::clock_gettime(rustix::time::ClockId::Monotonic);
            let total = u128::from(now.tv_nsec as u64) + u128::from(r.subsec_nanos());
            let secs = (now.tv_sec as u64)
                .saturating_add(r.as_secs())
                .saturating_add((total / 1_000_000_000) as u64);
            Some(futex::Timespec {
                tv_sec: i64::try_from(secs).unwrap_or(i64::MAX),
                tv_nsec: (total % 1_000_000_000) as i64,
            })
        }
    };
    match futex::waitv(
        &waiters,
        WaitvFlags::empty(),
        deadline.as_ref(),
        ClockId::Monotonic,
    ) {
        Ok(_) | Err(Errno::AGAIN) | Err(Errno::INTR) | Err(Errno::TIMEDOUT) => Ok(()),
        Err(e) => Err(e),
    }
}

/// `FUTEX_WAKE_PRIVATE(word, n)`: for a word in this process's own memory.
#[cfg(not(loom))]
pub(crate) fn futex_wake_private(word: &crate::sync::AtomicU32, n: u32) {
    let _ = rustix::thread::futex::wake(word, rustix::thread::futex::Flags::PRIVATE, n);
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

/// Under loom, as `futex_wait`: a spurious wake-up.
#[cfg(loom)]
pub(crate) fn futex_wait_either(
    _shared: &crate::sync::AtomicU32,
    _shared_seen: u32,
    _local: &crate::sync::AtomicU32,
    _local_seen: u32,
    _timeout: Option<std::time::Duration>,
) -> Result<(), Errno> {
    loom::thread::yield_now();
    Ok(())
}

/// Under loom waking is implicit.
#[cfg(loom)]
pub(crate) fn futex_wake_private(_word: &crate::sync::AtomicU32, _n: u32) {}

/// Where a mapping came from, which decides how it is let go.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Source {
    /// `mmap` of a file: `munmap(ptr, len)`.
    File,
    /// `shmat` of a SysV segment: `shmdt(ptr)`.
    SysV,
}

/// `fcntl(fd, F_OFD_GETLK, {F_WRLCK, SEEK_SET, 0, 1})`: whether some description holds a lock
/// on the segment's first byte that a write lock would conflict with (any attach or exclusive
/// lock), without taking one. Works on a read-only descriptor.
pub(crate) fn ofd_locked(fd: BorrowedFd<'_>) -> Result<bool, Errno> {
    Ok(ofd_probe(fd, 0)? == ByteLock::Held)
}

/// A shared mapping of a whole segment: a file (`mmap`) or a SysV shared-memory segment
/// (`shmat`), read-write or read-only ([`Prot`]). The one type both storages use, so the value
/// layer never knows which. Unmapped (or detached) on drop. A read-only mapping is never
/// written through: the layers above refuse writes on a read-only handle before they touch it.
#[derive(Debug)]
pub(crate) struct Mapping {
    ptr: NonNull<u8>,
    len: usize,
    source: Source,
    prot: Prot,
}

// SAFETY: the mapping is plain memory shared with other processes; every access to it goes
// through atomics or the sound copy routines, so sharing the pointer between threads is fine.
unsafe impl Send for Mapping {}
// SAFETY: as above: no access through `&Mapping` creates a Rust reference to racy bytes.
unsafe impl Sync for Mapping {}

/// How a mapping may be accessed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Prot {
    /// `PROT_READ|PROT_WRITE`, or `shmat` without flags.
    ReadWrite,
    /// `PROT_READ` on a descriptor opened `O_RDONLY`, or `shmat(SHM_RDONLY)`.
    ReadOnly,
}

impl Mapping {
    /// `mmap(NULL, len, PROT_READ|PROT_WRITE, MAP_SHARED, fd, 0)` (or `PROT_READ` alone for
    /// [`Prot::ReadOnly`]).
    ///
    /// The caller has checked with `fstat` that the file is at least `len` bytes long, so no
    /// page of the mapping lies past the end of the file (which would raise SIGBUS).
    pub(crate) fn map(fd: BorrowedFd<'_>, len: usize, prot: Prot) -> Result<Mapping, Errno> {
        use rustix::mm::{mmap, MapFlags, ProtFlags};
        if len == 0 {
            return Err(Errno::INVAL);
        }
        let flags = match prot {
            Prot::ReadWrite => ProtFlags::READ | ProtFlags::WRITE,
            Prot::ReadOnly => ProtFlags::READ,
        };
        // SAFETY: a fresh mapping at an address the kernel picks cannot alias any existing Rust
        // object; the memory is only ever accessed through raw pointers and atomics.
        let ptr = unsafe {
            mmap(
                std::ptr::null_mut(),
                len,
                flags,
                MapFlags::SHARED,
                fd.as_fd(),
                0,
            )?
        };
        let map = Mapping {
            ptr: NonNull::new(ptr.cast::<u8>()).ok_or(Errno::INVAL)?,
            len,
            source: Source::File,
            prot,
        };
        map.page_aligned()
    }

    /// `shmat(shmid, NULL, 0)` (`SHM_RDONLY` for [`Prot::ReadOnly`]): attaches SysV segment
    /// `shmid`, whose size the caller has checked (`shm_stat`) to be at least `len`, so every
    /// byte of `0..len` is backed. Linux lets a segment already marked for removal
    /// (`IPC_RMID`) be attached by id.
    pub(crate) fn attach_shm(shmid: i32, len: usize, prot: Prot) -> Result<Mapping, Errno> {
        if len == 0 {
            return Err(Errno::INVAL);
        }
        let flags = match prot {
            Prot::ReadWrite => 0,
            Prot::ReadOnly => libc::SHM_RDONLY,
        };
        // SAFETY: the kernel picks a fresh address (NULL hint), so the new mapping cannot alias
        // any Rust object; the memory is only accessed through raw pointers and atomics.
        let p = unsafe { libc::shmat(shmid, std::ptr::null(), flags) };
        if p as isize == -1 {
            return Err(last_errno());
        }
        let map = Mapping {
            ptr: NonNull::new(p.cast::<u8>()).ok_or(Errno::INVAL)?,
            len,
            source: Source::SysV,
            prot,
        };
        map.page_aligned()
    }

    /// `self` if it starts on a page, as every mapping the kernel hands out does: the views of
    /// `platform/shared.rs` rely on it for alignment. Otherwise `EINVAL` (and `self` is
    /// unmapped by its drop).
    fn page_aligned(self) -> Result<Mapping, Errno> {
        if self.ptr.as_ptr() as usize % crate::platform::shared::BASE_ALIGN != 0 {
            return Err(Errno::INVAL);
        }
        Ok(self)
    }

    /// Whether the mapping may be written (`Prot::ReadWrite`).
    pub(crate) fn writable(&self) -> bool {
        self.prot == Prot::ReadWrite
    }

    /// The first byte of the mapping.
    pub(crate) fn ptr(&self) -> *mut u8 {
        self.ptr.as_ptr()
    }

    /// The length mapped (or, for a SysV segment, used), in bytes.
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    /// Copies the mapping's first `buf.len()` bytes (at most its length) into `buf`, with the
    /// racy-copy routine: other processes may be writing them.
    pub(crate) fn copy_out(&self, buf: &mut [u8]) {
        let n = buf.len().min(self.len);
        crate::platform::shared::Shared::of(self)
            .read(0, &mut buf[..n])
            .expect("`n <= len`: inside the mapping");
    }

    /// `madvise(MADV_POPULATE_WRITE)` over the whole mapping: allocates every page now, so that
    /// running out of memory is an error here (`ENOMEM`) and not a SIGBUS or an OOM kill at a
    /// later write. Kernels before 5.14 answer `EINVAL`; the pages are then touched one by one.
    pub(crate) fn populate(&self) -> Result<(), Errno> {
        // SAFETY: the range is exactly our mapping; the advice only allocates pages.
        let r = unsafe {
            libc::madvise(
                self.ptr.as_ptr().cast(),
                self.len,
                libc::MADV_POPULATE_WRITE,
            )
        };
        if r == 0 {
            return Ok(());
        }
        match last_errno() {
            Errno::INVAL => {
                let page = rustix::param::page_size();
                let mut off = 0;
                while off < self.len {
                    // SAFETY: `off < len`, inside the mapping; a Relaxed atomic add of 0 to a
                    // byte writes the page without changing any value a peer may have written.
                    unsafe {
                        (*self
                            .ptr
                            .as_ptr()
                            .add(off)
                            .cast::<std::sync::atomic::AtomicU8>())
                        .fetch_add(0, std::sync::atomic::Ordering::Relaxed);
                    }
                    off += page;
                }
                Ok(())
            }
            Errno::INTR => self.populate(),
            e => Err(e),
        }
    }
}

impl Drop for Mapping {
    fn drop(&mut self) {
        match self.source {
            // SAFETY: `ptr`/`len` are exactly what `mmap` returned and nothing borrows the
            // memory past the life of `self`. A failure of `munmap` (EINVAL only, for bad
            // arguments) cannot happen with these values and there would be nothing useful to
            // do about it in `drop`.
            Source::File => unsafe {
                let _ = rustix::mm::munmap(self.ptr.as_ptr().cast(), self.len);
            },
            // SAFETY: `ptr` is what `shmat` returned; nothing borrows the memory past the life
            // of `self`. `shmdt` fails only for an address that is not an attachment.
            Source::SysV => unsafe {
                libc::shmdt(self.ptr.as_ptr().cast());
            },
        }
    }
}

fn last_errno() -> Errno {
    Errno::from_raw_os_error(std::io::Error::last_os_error().raw_os_error().unwrap_or(0))
}

/// `SHM_DEST` in `shm_perm.mode`: the segment is marked for removal (`IPC_RMID`) and goes when
/// its last attachment does.
const SHM_DEST: u32 = 0o1000;

/// What `shmctl(IPC_STAT)` tells about a SysV segment.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct ShmStat {
    /// Size in bytes.
    pub(crate) size: u64,
    /// Number of attachments, in all processes.
    pub(crate) nattch: u64,
    /// Marked for removal: freed by the kernel when `nattch` reaches 0.
    pub(crate) marked: bool,
    /// Owner uid.
    pub(crate) uid: u32,
    /// Permission bits.
    pub(crate) mode: u32,
}

/// `shmget(IPC_PRIVATE, size, IPC_CREAT | IPC_EXCL | mode)`: a new, zero-filled SysV segment
/// that only its id can reach. `ENOSPC` (kernel.shmmni or kernel.shmall reached), `ENOMEM`
/// and `EINVAL` (larger than kernel.shmmax) are the caller's to explain.
pub(crate) fn shm_create(size: usize, mode: u32) -> Result<i32, Errno> {
    // SAFETY: plain system call with integer arguments.
    let id = unsafe {
        libc::shmget(
            libc::IPC_PRIVATE,
            size,
            libc::IPC_CREAT | libc::IPC_EXCL | (mode & 0o777) as libc::c_int,
        )
    };
    if id < 0 {
        return Err(last_errno());
    }
    Ok(id)
}

/// `shmctl(shmid, IPC_STAT)`. `EINVAL`/`EIDRM`: no such segment any more (freed).
pub(crate) fn shm_stat(shmid: i32) -> Result<ShmStat, Errno> {
    // SAFETY: `shmid_ds` is plain old data; all-zero is a valid value for the kernel to fill.
    let mut ds: libc::shmid_ds = unsafe { std::mem::zeroed() };
    // SAFETY: `ds` is a valid, writable `shmid_ds` that outlives the call.
    let r = unsafe { libc::shmctl(shmid, libc::IPC_STAT, &mut ds) };
    if r != 0 {
        return Err(last_errno());
    }
    let mode = u32::from(ds.shm_perm.mode);
    Ok(ShmStat {
        size: ds.shm_segsz as u64,
        nattch: ds.shm_nattch as u64,
        marked: mode & SHM_DEST != 0,
        uid: ds.shm_perm.uid,
        mode: mode & 0o777,
    })
}

/// `shmctl(shmid, IPC_SET)`: gives the segment the owner, group and mode of its name file, so
/// that exactly the users who may open the name may attach the memory.
pub(crate) fn shm_set_owner(shmid: i32, uid: u32, gid: u32, mode: u32) -> Result<(), Errno> {
    // SAFETY: as in `shm_stat`.
    let mut ds: libc::shmid_ds = unsafe { std::mem::zeroed() };
    // SAFETY: as in `shm_stat`.
    if unsafe { libc::shmctl(shmid, libc::IPC_STAT, &mut ds) } != 0 {
        return Err(last_errno());
    }
    ds.shm_perm.uid = uid;
    ds.shm_perm.gid = gid;
    ds.shm_perm.mode = (mode & 0o777) as _;
    // SAFETY: `ds` is a valid `shmid_ds` filled by IPC_STAT, read by the kernel.
    if unsafe { libc::shmctl(shmid, libc::IPC_SET, &mut ds) } != 0 {
        return Err(last_errno());
    }
    Ok(())
}

/// `shmctl(shmid, IPC_RMID)`: marks the segment for removal. The kernel frees it when its last
/// attachment goes (detach, exit, exec, crash); until then it can still be attached by id.
pub(crate) fn shm_mark_removed(shmid: i32) -> Result<(), Errno> {
    // SAFETY: IPC_RMID ignores the buffer argument.
    let r = unsafe { libc::shmctl(shmid, libc::IPC_RMID, std::ptr::null_mut()) };
    if r != 0 {
        return Err(last_errno());
    }
    Ok(())
}

/// `atexit(f)`: `f` runs at a normal process exit (`exit`, a return from `main`), before the
/// libraries' destructors. Returns whether it was registered.
pub(crate) fn at_exit(f: extern "C" fn()) -> bool {
    // SAFETY: registering a handler has no precondition; `f` is a plain `extern "C" fn()`.
    unsafe { libc::atexit(f) == 0 }
}
