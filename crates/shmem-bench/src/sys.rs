//! The few raw pieces the harness needs: a shared control page (a memfd, so nothing is ever
//! left in /dev/shm), CPU pinning, passing descriptors to a re-executed child, and the C
//! library's handle API loaded with `dlopen`.

use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::sync::atomic::AtomicU32;

use rustix::fs::MemfdFlags;
use rustix::mm::{MapFlags, ProtFlags};
use rustix::thread::CpuSet;

/// Size of the control page.
pub const PAGE: usize = 4096;

/// Offsets of the words in the control page, each on its own cache line.
pub mod ctl {
    /// Set to 1 by the child when it is ready.
    pub const READY: usize = 0;
    /// Set to 1 by the parent to ask the child to stop.
    pub const STOP: usize = 64;
    /// The futex ping-pong word.
    pub const FUTEX: usize = 128;
    /// The busy-polling ping-pong word.
    pub const SPIN: usize = 192;
    /// 1 while the parent times the entry this peer serves; a gated peer parks on it at 0.
    pub const GATE: usize = 256;
}

/// One page of shared memory from a memfd, mapped `MAP_SHARED`.
#[derive(Debug)]
pub struct SharedPage {
    fd: OwnedFd,
    ptr: *mut u8,
}

impl SharedPage {
    /// A new zero-filled page.
    pub fn new() -> io::Result<SharedPage> {
        let fd = rustix::fs::memfd_create("shmem-bench-ctl", MemfdFlags::CLOEXEC)?;
        rustix::fs::ftruncate(&fd, PAGE as u64)?;
        SharedPage::map(fd)
    }

    /// Maps a page received from the parent.
    pub fn map(fd: OwnedFd) -> io::Result<SharedPage> {
        // SAFETY: a fresh shared mapping chosen by the kernel; it aliases no Rust object, and
        // all access goes through atomics (`word`).
        let ptr = unsafe {
            rustix::mm::mmap(
                std::ptr::null_mut(),
                PAGE,
                ProtFlags::READ | ProtFlags::WRITE,
                MapFlags::SHARED,
                &fd,
                0,
            )?
        };
        Ok(SharedPage {
            fd,
            ptr: ptr.cast(),
        })
    }

    /// The atomic word at `offset` (a multiple of 4 below `PAGE`).
    pub fn word(&self, offset: usize) -> &AtomicU32 {
        assert!(offset % 4 == 0 && offset + 4 <= PAGE);
        // SAFETY: in bounds and aligned (checked above; the mapping is page aligned); the page
        // lives as long as `self` and is only ever accessed atomically, by us and the child.
        unsafe { &*self.ptr.add(offset).cast::<AtomicU32>() }
    }

    /// The memfd, to hand to a child.
    pub fn fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

impl Drop for SharedPage {
    fn drop(&mut self) {
        // SAFETY: unmaps exactly our mapping; no reference from `word` outlives `self`. A
        // failure would only leak the mapping.
        let _ = unsafe { rustix::mm::munmap(self.ptr.cast(), PAGE) };
    }
}

/// The CPUs this process may run on.
pub fn cpus() -> Vec<usize> {
    match rustix::thread::sched_getaffinity(None) {
        Ok(set) => (0..CpuSet::MAX_CPU).filter(|&c| set.is_set(c)).collect(),
        Err(_) => Vec::new(),
    }
}

/// Pins the calling thread to `cpu`; false if the kernel refused.
pub fn pin(cpu: usize) -> bool {
    let mut set = CpuSet::new();
    set.set(cpu);
    rustix::thread::sched_setaffinity(None, &set).is_ok()
}

/// Clears `FD_CLOEXEC` so that `fd` survives the `exec` of a child.
pub fn inherit(fd: BorrowedFd<'_>) -> io::Result<()> {
    rustix::io::fcntl_setfd(fd, rustix::io::FdFlags::empty())?;
    Ok(())
}

/// Takes ownership of descriptor `n`, which the parent passed down (see [`inherit`]).
pub fn take_fd(n: RawFd) -> io::Result<OwnedFd> {
    let flags = rustix::io::fcntl_getfd(
        // SAFETY: only borrowed for this check; `fcntl` on a closed number fails with EBADF.
        unsafe { BorrowedFd::borrow_raw(n) },
    );
    if flags.is_err() {
        return Err(io::Error::new(
            io::ErrorKind::NotFound,
            format!("descriptor {n} was not passed"),
        ));
    }
    // SAFETY: the parent passed us this open descriptor for our exclusive use, and nothing
    // else in this process owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(n) })
}

/// The raw number of a descriptor, for a child's argument list.
pub fn raw(fd: &impl AsRawFd) -> String {
    fd.as_raw_fd().to_string()
}

type OpenFn = unsafe extern "C" fn(*const libc::c_char, usize, u32, *mut *mut libc::c_void) -> i32;
type CloseFn = unsafe extern "C" fn(*mut libc::c_void);

/// libshmem (crates/shmem-ffi) loaded with `dlopen`: `shmem_open` and `shmem_close`, the C
/// handle API's attach and detach. Never unloaded (its fork handlers stay registered).
#[derive(Debug)]
pub struct CLib {
    open: OpenFn,
    close: CloseFn,
    /// Where it was loaded from, for the errors.
    path: std::path::PathBuf,
}

impl CLib {
    /// Loads `path` (a `libshmem.so`).
    pub fn load(path: &std::path::Path) -> io::Result<CLib> {
        use std::os::unix::ffi::OsStrExt;
        let c = std::ffi::CString::new(path.as_os_str().as_bytes())
            .map_err(|_| io::Error::other("library path contains a NUL byte"))?;
        // SAFETY: `c` is a NUL-terminated path; loading runs the library's initialisers, and
        // libshmem has no constructor beyond Rust's std set-up.
        let h = unsafe { libc::dlopen(c.as_ptr(), libc::RTLD_NOW | libc::RTLD_LOCAL) };
        if h.is_null() {
            return Err(io::Error::other(format!(
                "dlopen {}: failed",
                path.display()
            )));
        }
        let sym = |name: &std::ffi::CStr| {
            // SAFETY: `h` is a live handle (never closed) and `name` is NUL-terminated.
            let p = unsafe { libc::dlsym(h, name.as_ptr()) };
            if p.is_null() {
                Err(io::Error::other(format!(
                    "{}: no symbol {name:?}",
                    path.display()
                )))
            } else {
                Ok(p)
            }
        };
        let (o, cl) = (sym(c"shmem_open")?, sym(c"shmem_close")?);
        // SAFETY: both symbols are the functions that include/shmem.h declares with exactly
        // these signatures (a test in shmem-ffi keeps the header and the exports in step).
        unsafe {
            Ok(CLib {
                open: std::mem::transmute::<*mut libc::c_void, OpenFn>(o),
                close: std::mem::transmute::<*mut libc::c_void, CloseFn>(cl),
                path: path.to_owned(),
            })
        }
    }

    /// `shmem_open(name, capacity, 0, &h)` (an existing value), then `shmem_close(h)`.
    pub fn attach_detach(&self, name: &std::ffi::CStr, capacity: usize) -> io::Result<()> {
        let mut h = std::ptr::null_mut();
        // SAFETY: `name` is NUL-terminated and `h` is a writable pointer, as shmem_open asks.
        let rc = unsafe { (self.open)(name.as_ptr(), capacity, 0, &mut h) };
        if rc != 0 || h.is_null() {
            // -8 (SHMEM_ERR_INCOMPATIBLE) most often means a libshmem left by an older build:
            // `cargo test` does not refresh the copy beside the binaries, `cargo build` does.
            return Err(io::Error::other(format!(
                "shmem_open({name:?}) returned {rc} from {} (-8: a segment layout this library \
                 does not read; if the library is from an older build, run `cargo build -p \
                 shmem-ffi` in the same profile)",
                self.path.display()
            )));
        }
        // SAFETY: `h` is the handle shmem_open just returned, closed exactly once.
        unsafe { (self.close)(h) };
        Ok(())
    }
}

/// Where libshmem is: `$SHMEM_BENCH_LIBSHMEM`, else `libshmem.so` beside this program (cargo
/// puts both in the same target directory); an error saying how to build it if missing.
pub fn libshmem() -> Result<std::path::PathBuf, String> {
    let path = match std::env::var_os("SHMEM_BENCH_LIBSHMEM") {
        Some(p) => std::path::PathBuf::from(p),
        None => std::env::current_exe()
            .map_err(|e| e.to_string())?
            .with_file_name("libshmem.so"),
    };
    if path.is_file() {
        Ok(path)
    } else {
        Err(format!(
            "{} not found: build it with `cargo build --release -p shmem-ffi` (same profile and \
             target directory as shmem-bench) or set SHMEM_BENCH_LIBSHMEM",
            path.display()
        ))
    }
}
