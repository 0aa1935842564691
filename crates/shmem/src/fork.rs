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
//! cannot be made, that child shares its parent's description for that handle, as without
//! this module.
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
//! The child handler also bumps the fork generation that `wlock.rs` uses to refresh its cached
//! thread id.

use std::cell::UnsafeCell;
use std::os::fd::RawFd;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Once;

/// Bumped in every child after `fork`.
pub(crate) static FORK_GENERATION: AtomicU64 = AtomicU64::new(0);

static REGISTER: Once = Once::new();

/// The most segments one process can hold with fork support; beyond it, extra handles still
/// work but a forked child shares their descriptions with its parent (as without this module).
const MAX_FDS: usize = 4096;

struct Registry {
    busy: AtomicBool,
    /// `(descriptor, spare)` of every live segment; the spare is -1 outside a fork.
    fds: UnsafeCell<[(RawFd, RawFd); MAX_FDS]>,
    len: UnsafeCell<usize>,
}

// SAFETY: `fds` and `len` are only touched while `busy` is held (see `locked`), or by the
// fork handlers, which run between `prepare` taking it and `parent`/`child` releasing it.
unsafe impl Sync for Registry {}

static REGISTRY: Registry = Registry {
    busy: AtomicBool::new(false),
    fds: UnsafeCell::new([(-1, -1); MAX_FDS]),
    len: UnsafeCell::new(0),
};

impl Registry {
    fn lock(&self) {
        while self
            .busy
            .compare_exchange_weak(false, true, Ordering::Acquire, Ordering::Relaxed)
            .is_err()
        {
            std::hint::spin_loop();
        }
    }

    fn unlock(&self) {
        self.busy.store(false, Ordering::Release);
    }

    /// Runs `f` on the registry's entries with the lock held.
    fn locked<R>(&self, f: impl FnOnce(&mut [(RawFd, RawFd); MAX_FDS], &mut usize) -> R) -> R {
        self.lock();
        // SAFETY: we hold `busy`, so nobody else touches the cells until `unlock`.
        let r = unsafe { f(&mut *self.fds.get(), &mut *self.len.get()) };
        self.unlock();
        r
    }

    /// The entries, for the fork handlers.
    ///
    /// # Safety
    /// Only between `prepare` (which holds `busy`) and `parent`/`child`, on the forking thread.
    #[allow(clippy::mut_from_ref)]
    unsafe fn entries(&self) -> &mut [(RawFd, RawFd)] {
        // SAFETY: forwarded: the caller is the only one touching the registry now.
        unsafe { &mut (&mut *self.fds.get())[..*self.len.get()] }
    }
}

/// Installs the fork handlers (once per process).
pub(crate) fn install() {
    REGISTER.call_once(|| {
        // SAFETY: the handlers touch the registry only while `prepare` holds its lock, and the
        // child handler makes only async-signal-safe calls, as fork handlers in a threaded
        // process must.
        unsafe {
            libc::pthread_atfork(Some(prepare), Some(parent), Some(child));
        }
    });
}

/// Records a segment's descriptor, so a forked child gets its own description.
pub(crate) fn register(fd: RawFd) {
    install();
    REGISTRY.locked(|fds, len| {
        if *len < MAX_FDS {
            fds[*len] = (fd, -1);
            *len += 1;
        }
    });
}

/// Forgets a descriptor (before it is closed).
pub(crate) fn unregister(fd: RawFd) {
    REGISTRY.locked(|fds, len| {
        if let Some(i) = fds[..*len].iter().position(|&(f, _)| f == fd) {
            fds[i] = fds[*len - 1];
            *len -= 1;
        }
    });
}

extern "C" fn prepare() {
    REGISTRY.lock();
    // SAFETY: we hold the registry lock until `parent`/`child`.
    for entry in unsafe { REGISTRY.entries() } {
        entry.1 = spare_for(entry.0);
    }
}

extern "C" fn parent() {
    // SAFETY: `prepare` holds the registry lock for us.
    for entry in unsafe { REGISTRY.entries() } {
        if entry.1 >= 0 {
            // SAFETY: the spare is our descriptor, opened in `prepare`; the child keeps its copy.
            unsafe { libc::close(entry.1) };
            entry.1 = -1;
        }
    }
    REGISTRY.unlock();
}

extern "C" fn child() {
    FORK_GENERATION.fetch_add(1, Ordering::Relaxed);
    // SAFETY: this is the child's copy of the registry, locked by `prepare` in the parent;
    // only this thread exists in the child.
    for entry in unsafe { REGISTRY.entries() } {
        if entry.1 >= 0 {
            // SAFETY: both descriptors are ours; `dup3`, `flock` and `close` are
            // async-signal-safe. After `dup3`, `entry.0` names the spare's locked description.
            unsafe {
                if libc::dup3(entry.1, entry.0, libc::O_CLOEXEC) >= 0 {
                    libc::flock(entry.0, libc::LOCK_SH | libc::LOCK_NB);
                }
                libc::close(entry.1);
            }
            entry.1 = -1;
        }
    }
    REGISTRY.unlock();
}

/// A second description of `fd`'s inode holding the attach read lock, or -1.
fn spare_for(fd: RawFd) -> RawFd {
    let path = format!("/proc/self/fd/{fd}");
    let flags =
        rustix::fs::OFlags::RDWR | rustix::fs::OFlags::CLOEXEC | rustix::fs::OFlags::NONBLOCK;
    let Ok(spare) = rustix::fs::open(path.as_str(), flags, rustix::fs::Mode::empty()) else {
        return -1;
    };
    match crate::sys::ofd_lock(
        std::os::fd::AsFd::as_fd(&spare),
        crate::sys::LockKind::Shared,
    ) {
        Ok(true) => std::os::fd::IntoRawFd::into_raw_fd(spare),
        _ => -1,
    }
}
