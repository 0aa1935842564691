//! What `fork` must change in the child: its own attach locks, and its own thread id.
//!
//! # Protocol
//!
//! A forked child inherits its parent's descriptors, and with them the parent's open file
//! descriptions and their attach locks (segment.rs). If parent and child then shared one
//! description, neither could drop its lock without dropping the other's, and a process that
//! spawns children while another thread detaches would see its own description held by a child
//! that has not reached `exec` yet, and leave the segment behind.
//!
//! So every process keeps its own description per handle. Before `fork`, a `pthread_atfork`
//! *prepare* handler opens, for each live segment descriptor `N`, a second description of the
//! same inode through `/proc/self/fd/N` (linked or not) and takes the read lock on it: the
//! spare. The child inherits the spares; its handler `dup3`s each spare over `N` (the child's
//! handle now uses a description of its own, already locked, so there is no instant at which
//! the parent could detach and find the segment unheld) and takes the pid-marker `flock`. The
//! parent's handler closes its copies of the spares, which live on in the child only. The
//! child handler makes only async-signal-safe calls (`dup3`, `close`, `flock`). If a spare
//! cannot be made (no `/proc`, no descriptor left, no permission), parent and child share the
//! description for that handle; the entry is then marked *shared* in both, and neither
//! releases the lock explicitly at detach (the kernel drops it when the last of them closes,
//! which keeps the segment alive exactly as long as either holds it). Each entry also records
//! the inode, so that a descriptor number that was closed behind our back and reused for
//! another file is left alone.
//!
//! Then a detaching handle can release its lock explicitly (`F_UNLCK`) before it closes, which
//! affects only its own process: children spawned with `posix_spawn`/`vfork` (which run no
//! fork handlers) may hold a copy of the descriptor until their `exec`, but no lock on it.
//!
//! The registry of live descriptors is guarded by a spin lock, which the `prepare` handler
//! takes before `fork` and both the parent and the child handler release, so the child never
//! sees a half-updated registry. Registration happens at attach and detach only, never on the
//! `get`/`set` paths.
//!
//! Writers' liveness witnesses (wlock.rs) live here too, one per handle that has written: an
//! unmapped description of the segment's inode holding the OFD lock of its token's byte. The
//! child handler `dup3`s the spare over the inherited witness number as well, so the child no
//! longer holds its parent's witness (a parent that dies holding the writers' lock is then
//! seen dead at once), and clears the token: the child claims its own at its first write.
//! Without a spare, parent and child share the witness and the token; they still exclude each
//! other (a word naming one's own token is waited on), but if one dies holding the lock the
//! others wait until the other has gone too.
//!
//! The child handler also bumps the fork generation, which writers compare with the one their
//! cached token was claimed under.
//!
//! # At exit
//!
//! The same registry is what a normal process exit walks: [`install`] also registers an
//! `atexit` handler which, for every live handle, lets go of its attach lock (see
//! [`Entry::exit`] for when that is allowed) and runs the last-detacher step of
//! `segment.rs` ([`super::segment::release_at_exit`]). It neither unmaps nor closes: other
//! threads may still be running and using the memory until the process is gone, and a handle
//! dropped later (a library destructor) finds its entry marked released and only unmaps and
//! closes. An exit that runs no handler (`_exit`, `exec`, a signal) leaves this to the kernel:
//! the SysV memory goes with its last attachment, and the 64-byte name file that remains is
//! swept by the next open or by `gc`. In a shared library (`libshmem.so`, a Python extension)
//! `atexit` registers the handler with that library's `__dso_handle` (`__cxa_atexit`), so it
//! also runs at `dlclose`, before the library's code is unmapped.

use std::cell::UnsafeCell;
use std::os::fd::{BorrowedFd, RawFd};
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::sync::Once;

/// Bumped in every child after `fork`.
pub(crate) static FORK_GENERATION: AtomicU64 = AtomicU64::new(0);

static REGISTER: Once = Once::new();

/// The most segments one process can hold with fork support; beyond it, extra handles still
/// work but a forked child shares their descriptions with its parent (as without this module).
const MAX_FDS: usize = 4096;

/// What the exit handler does for a handle (fixed at attach).
#[derive(Debug)]
pub(crate) struct AtExit {
    /// The name file, for the last-detacher step; `None` when this handle never unlinks (a
    /// persistent segment, or a name file owned by another user).
    pub(crate) path: Option<Arc<Path>>,
    /// The SysV segment of the generation (SysV storage only). Such a handle may always let go
    /// of its lock explicitly: whoever then wins the write lock also checks the segment's
    /// attach count, so a process that shares the description without our fork handlers (and
    /// so without a lock of its own) still keeps the generation alive (`segment.rs`).
    pub(crate) shmid: Option<i32>,
}

/// How a handle's registry entry ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Unregistered {
    /// Its description is ours alone (as far as the fork handlers know).
    Own,
    /// A fork happened without a spare (or the registry was full): the description may be
    /// shared with another process.
    Shared,
    /// The exit handler already let go of it: only unmapping and closing are left.
    ReleasedAtExit,
}

/// One live segment descriptor.
struct Entry {
    fd: RawFd,
    dev: u64,
    ino: u64,
    /// The spare made by `prepare` for the coming fork, or -1.
    spare: RawFd,
    /// A fork happened without a spare: the description is shared with another process.
    shared: bool,
    /// The writer's liveness witness (an unmapped description of the same inode holding the
    /// OFD lock of byte `WITNESS_BASE + token`), or -1 before the handle's first write.
    witness: RawFd,
    /// The token whose byte `witness` locks; 0 when none is claimed (also after a fork).
    token: u32,
    /// What to do at exit; taken (left `None`) once the exit handler has done it.
    exit: Option<Arc<AtExit>>,
    /// The exit handler has released this handle.
    released: bool,
}

const EMPTY: Entry = Entry {
    fd: -1,
    dev: 0,
    ino: 0,
    spare: -1,
    shared: false,
    witness: -1,
    token: 0,
    exit: None,
    released: false,
};

struct Registry {
    busy: AtomicBool,
    entries: UnsafeCell<[Entry; MAX_FDS]>,
    len: UnsafeCell<usize>,
}

// SAFETY: `entries` and `len` are only touched while `busy` is held (see `locked`), or by the
// fork handlers, which run between `prepare` taking it and `parent`/`child` releasing it.
unsafe impl Sync for Registry {}

static REGISTRY: Registry = Registry {
    busy: AtomicBool::new(false),
    entries: UnsafeCell::new([EMPTY; MAX_FDS]),
    len: UnsafeCell::new(0),
};

impl Registry {
    fn lock(&self) {
        let mut spins = 0u32;
        while self
            .busy
            .compare_exchange_weak(false, true, Ordering::Acquire, Ordering::Relaxed)
            .is_err()
        {
            spins += 1;
            if spins < 64 {
                std::hint::spin_loop();
            } else {
                std::thread::yield_now(); // a fork's `prepare` may hold it for a while
            }
        }
    }

    fn unlock(&self) {
        self.busy.store(false, Ordering::Release);
    }

    /// Runs `f` on the live entries with the lock held.
    fn locked<R>(&self, f: impl FnOnce(&mut [Entry; MAX_FDS], &mut usize) -> R) -> R {
        self.lock();
        // SAFETY: we hold `busy`, so nobody else touches the cells until `unlock`.
        let r = unsafe { f(&mut *self.entries.get(), &mut *self.len.get()) };
        self.unlock();
        r
    }

    /// The live entries, for the fork handlers.
    ///
    /// # Safety
    /// Only between `prepare` (which holds `busy`) and `parent`/`child`, on the forking thread.
    #[allow(clippy::mut_from_ref)]
    unsafe fn live(&self) -> &mut [Entry] {
        // SAFETY: forwarded: the caller is the only one touching the registry now.
        unsafe { &mut (&mut *self.entries.get())[..*self.len.get()] }
    }
}

/// Installs the fork handlers and the exit handler (once per process).
pub(crate) fn install() {
    REGISTER.call_once(|| {
        // SAFETY: the handlers touch the registry only while `prepare` holds its lock, and the
        // child handler makes only async-signal-safe calls, as fork handlers in a threaded
        // process must.
        unsafe {
            libc::pthread_atfork(Some(prepare), Some(parent), Some(child));
        }
        // Without it a normal exit still frees SysV memory (the kernel does), but leaves the
        // name file, and file-storage segments, behind until the next open or `gc`.
        let _ = super::sys::at_exit(at_exit);
    });
}

/// Records a segment's descriptor (of inode `dev`/`ino`), so a forked child gets its own
/// description and a normal exit releases it.
pub(crate) fn register(fd: RawFd, dev: u64, ino: u64, exit: AtExit) {
    install();
    let exit = Some(Arc::new(exit));
    REGISTRY.locked(|entries, len| {
        if *len < MAX_FDS {
            entries[*len] = Entry {
                fd,
                dev,
                ino,
                exit,
                ..EMPTY
            };
            *len += 1;
        }
    });
}

/// Forgets a descriptor (before it is closed), and says how its entry ended; also hands over
/// the handle's writer witness, now the caller's to close.
pub(crate) fn unregister(fd: RawFd) -> (Unregistered, Option<std::os::fd::OwnedFd>) {
    let (how, witness) =
        REGISTRY.locked(
            |entries, len| match entries[..*len].iter().position(|e| e.fd == fd) {
                Some(i) => {
                    let how = if entries[i].released {
                        Unregistered::ReleasedAtExit
                    } else if entries[i].shared {
                        Unregistered::Shared
                    } else {
                        Unregistered::Own
                    };
                    let witness = entries[i].witness;
                    entries.swap(i, *len - 1);
                    entries[*len - 1] = EMPTY;
                    *len -= 1;
                    (how, witness)
                }
                None => (Unregistered::Shared, -1),
            },
        );
    let witness = (witness >= 0).then(|| {
        use std::os::fd::FromRawFd;
        // SAFETY: the registry owned this descriptor (opened by `writer_token`) and has just
        // forgotten it, so ownership passes to the caller exactly once.
        unsafe { std::os::fd::OwnedFd::from_raw_fd(witness) }
    });
    (how, witness)
}

/// The first byte offset of the writers' liveness witnesses: token `t` is alive while some
/// description holds the OFD lock of byte `WITNESS_BASE + t` (wlock.rs). Far past any
/// segment's data, and far from byte 0, which carries the attach protocol.
pub(crate) const WITNESS_BASE: u64 = 1 << 32;

/// Why a writer token could not be claimed.
#[derive(Debug)]
pub(crate) enum ClaimError {
    /// The handle is not in the registry (it is full): no witness can follow it across fork.
    Unregistered,
    /// A system call failed.
    Sys(&'static str, rustix::io::Errno),
    /// Every token tried was taken (a peer keeps the counter on live tokens).
    Exhausted,
}

/// The writer token of the handle whose descriptor is `fd`, claiming one if it has none (first
/// write, or first write after a fork): opens the witness description (once per handle; after a
/// fork the child's handler has pointed it at a description of the child's own), then draws
/// tokens from `claims` until it wins the OFD write lock of one's byte. A token is taken only
/// while its byte is free, so no two live handles share one.
pub(crate) fn writer_token(fd: RawFd, claims: &crate::sync::AtomicU32) -> Result<u32, ClaimError> {
    use std::os::fd::{BorrowedFd, IntoRawFd};
    install();
    REGISTRY.locked(|entries, len| {
        let Some(e) = entries[..*len].iter_mut().find(|e| e.fd == fd) else {
            return Err(ClaimError::Unregistered);
        };
        if e.token != 0 {
            return Ok(e.token);
        }
        if e.witness < 0 {
            let path = format!("/proc/self/fd/{fd}");
            let flags = rustix::fs::OFlags::RDWR
                | rustix::fs::OFlags::CLOEXEC
                | rustix::fs::OFlags::NONBLOCK;
            let w = rustix::fs::open(path.as_str(), flags, rustix::fs::Mode::empty())
                .map_err(|e| ClaimError::Sys("open(/proc/self/fd)", e))?;
            let st = rustix::fs::fstat(&w).map_err(|e| ClaimError::Sys("fstat", e))?;
            if (st.st_dev, st.st_ino) != (e.dev, e.ino) {
                return Err(ClaimError::Sys(
                    "open(/proc/self/fd)",
                    rustix::io::Errno::NOENT,
                ));
            }
            e.witness = w.into_raw_fd();
        }
        // SAFETY: `e.witness` is open and owned by the registry, whose lock we hold, so it is
        // not closed while borrowed here.
        let witness = unsafe { BorrowedFd::borrow_raw(e.witness) };
        for _ in 0..1024 {
            let t = claims.fetch_add(1, crate::sync::Ordering::Relaxed) & crate::wlock::TOKEN_MASK;
            if t == 0 {
                continue;
            }
            let won = super::sys::ofd_lock_at(
                witness,
                super::sys::LockKind::Exclusive,
                WITNESS_BASE + u64::from(t),
            )
            .map_err(|e| ClaimError::Sys("fcntl(F_OFD_SETLK)", e))?;
            if won {
                e.token = t;
                return Ok(t);
            }
        }
        Err(ClaimError::Exhausted)
    })
}

/// Bumped in every child after fork; writers compare it with the one they claimed under.
pub(crate) fn generation() -> u64 {
    FORK_GENERATION.load(Ordering::Relaxed)
}

/// The exit handler: lets go of every live handle's lock where that is safe, then runs the
/// last-detacher step for each (see the module documentation).
extern "C" fn at_exit() {
    let mut todo: Vec<(Arc<AtExit>, u64, u64, u64)> = Vec::new();
    REGISTRY.locked(|entries, len| {
        let live = &mut entries[..*len];
        for i in 0..live.len() {
            if live[i].released {
                continue;
            }
            let Some(exit) = live[i].exit.clone() else {
                continue;
            };
            live[i].released = true;
            if exit.shmid.is_some() || !live[i].shared {
                // SAFETY: the descriptor is registered, so it is open until its handle
                // unregisters it, which waits for the registry lock we hold.
                let fd = unsafe { BorrowedFd::borrow_raw(live[i].fd) };
                let _ = super::sys::ofd_lock(fd, super::sys::LockKind::Unlock);
            }
            // Our own attachments of this SysV segment, which stay until the process is gone.
            let mine = exit.shmid.map_or(0, |id| {
                live.iter()
                    .filter(|e| e.exit.as_ref().and_then(|x| x.shmid) == Some(id))
                    .count() as u64
            });
            todo.push((exit, live[i].dev, live[i].ino, mine));
        }
    });
    for (exit, dev, ino, mine) in todo {
        if let Some(path) = &exit.path {
            super::segment::release_at_exit(path, dev, ino, exit.shmid, mine);
        }
    }
}

extern "C" fn prepare() {
    REGISTRY.lock();
    // SAFETY: we hold the registry lock until `parent`/`child`.
    for e in unsafe { REGISTRY.live() } {
        e.spare = spare_for(e);
        if e.spare < 0 {
            e.shared = true;
        }
    }
}

extern "C" fn parent() {
    // SAFETY: `prepare` holds the registry lock for us.
    for e in unsafe { REGISTRY.live() } {
        if e.spare >= 0 {
            // SAFETY: the spare is our descriptor, opened in `prepare`; the child keeps its copy.
            unsafe { libc::close(e.spare) };
            e.spare = -1;
        }
    }
    REGISTRY.unlock();
}

extern "C" fn child() {
    FORK_GENERATION.fetch_add(1, Ordering::Relaxed);
    // SAFETY: this is the child's copy of the registry, locked by `prepare` in the parent;
    // only this thread exists in the child.
    for e in unsafe { REGISTRY.live() } {
        if e.spare >= 0 {
            // SAFETY: both descriptors are ours; `dup3`, `flock` and `close` are
            // async-signal-safe. After `dup3`, `e.fd` names the spare's locked description.
            unsafe {
                if libc::dup3(e.spare, e.fd, libc::O_CLOEXEC) >= 0 {
                    libc::flock(e.fd, libc::LOCK_SH | libc::LOCK_NB);
                    // Let go of the parent's witness: point our copy of its number at our own
                    // description, which holds no witness byte, and claim anew at the next
                    // write. Otherwise a parent that died holding the writers' lock would look
                    // alive for as long as we live.
                    if e.witness >= 0 && libc::dup3(e.spare, e.witness, libc::O_CLOEXEC) >= 0 {
                        e.token = 0;
                    }
                } else {
                    e.shared = true;
                }
                libc::close(e.spare);
            }
            e.spare = -1;
        }
    }
    REGISTRY.unlock();
}

/// A second description of `e`'s inode holding the attach read lock, or -1 (also when the
/// descriptor number no longer refers to that inode).
fn spare_for(e: &Entry) -> RawFd {
    use std::os::fd::{AsFd, IntoRawFd};
    // SAFETY: `fstat` writes a `struct stat` into `st`; all-zero is a valid initial value, and
    // on a descriptor that was closed behind our back it just fails with EBADF.
    let (r, st) = unsafe {
        let mut st: libc::stat = std::mem::zeroed();
        (libc::fstat(e.fd, &mut st), st)
    };
    if r != 0 || (st.st_dev, st.st_ino) != (e.dev, e.ino) {
        return -1; // not our segment any more: leave that descriptor alone
    }
    let path = format!("/proc/self/fd/{}", e.fd);
    // The spare opens the file as the handle did: a read-only handle may have no write access.
    // SAFETY: `fstat` above showed `e.fd` open on our inode; the registry lock keeps it open.
    let handle = unsafe { BorrowedFd::borrow_raw(e.fd) };
    let rw = match rustix::fs::fcntl_getfl(handle) {
        Ok(f) if f & rustix::fs::OFlags::RWMODE == rustix::fs::OFlags::RDONLY => {
            rustix::fs::OFlags::RDONLY
        }
        _ => rustix::fs::OFlags::RDWR,
    };
    let flags = rw | rustix::fs::OFlags::CLOEXEC | rustix::fs::OFlags::NONBLOCK;
    let Ok(spare) = rustix::fs::open(path.as_str(), flags, rustix::fs::Mode::empty()) else {
        return -1;
    };
    let same = |st: rustix::fs::Stat| (st.st_dev, st.st_ino) == (e.dev, e.ino);
    if !rustix::fs::fstat(&spare).is_ok_and(same) {
        return -1;
    }
    match super::sys::ofd_lock(spare.as_fd(), super::sys::LockKind::Shared) {
        Ok(true) => spare.into_raw_fd(),
        _ => -1,
    }
}
