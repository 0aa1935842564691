//! Named segments with the lifetime of a Windows named file mapping.
//!
//! # The lifetime protocol
//!
//! A segment is a file `<dir>/shmem.NAME` on a tmpfs. Every attached handle holds its own open
//! file description of it, and on that description an OFD read lock on byte 0 (`F_OFD_SETLK`,
//! see `sys.rs`). OFD locks belong to the description: two handles in one process conflict like
//! two processes do, a forked child shares its parent's description (and so its lock), and the
//! kernel drops the lock when the last descriptor of the description closes, which includes a
//! crash. "Somebody is attached" is therefore exactly "somebody holds a read lock", and a
//! process that wins the *write* lock (non-blocking) has proved that nobody else is attached.
//! Only a process holding the write lock initialises, truncates or unlinks the file.
//!
//! **Attach** (loop, bounded):
//! 1. `open(O_RDWR | O_CREAT? | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC)`; `fstat` must show a
//!    regular file (a symlink, FIFO or directory under our name is refused, never followed or
//!    blocked on).
//! 2. Try the write lock without blocking.
//!    - **Won: we are alone.** If `st_nlink == 0` the file was unlinked after our `open` by the
//!      last detacher of an older generation: close and retry. Otherwise, for a transient
//!      segment (or a file whose magic is 0: an initialiser that died), this is a new generation:
//!      truncate to 0, `fallocate` the full size (zero pages, reserved now so that a full tmpfs
//!      is an error here and not a SIGBUS later), write the header with the magic last, and
//!      report `created = true`. A valid persistent segment is kept as it is. Then convert the
//!      write lock to a read lock; POSIX-style lock conversion is atomic in Linux (the lock is
//!      replaced in place), so there is no instant at which a second attacher could also win.
//!    - **Lost: someone else holds a lock.** Wait for the read lock (polling `F_OFD_SETLK`
//!      with a growing pause up to a deadline, since `F_OFD_SETLKW` cannot time out), which
//!      waits out an initialiser or a detacher holding the write lock. Then if `st_nlink == 0`
//!      (a detacher unlinked it meanwhile) or the magic is 0 (the initialiser died), close and
//!      retry; otherwise validate the header and report `created = false`.
//! 3. `mmap` exactly the `fstat` size, after checking it against the header.
//!
//! **Detach** (transient segments): unmap, close our descriptor (a mapping holds a reference to
//! the description too, so both must go before our read lock does; a forked child that shares
//! the description keeps it, and the lock, alive), then open the name again *without* `O_CREAT`,
//! and if that is still our inode (same `st_dev`/`st_ino`), try the write lock without blocking.
//! Winning it proves nobody is attached; then, *under the lock*, check again that our inode is
//! still linked and still the one the name refers to (another detacher may have unlinked it,
//! and a new generation taken the name, between our `open` and our lock), and unlink.
//! Every unlink in the crate follows this rule: hold the inode's write lock, then check that the
//! name refers to it. Since every unlinker holds the write lock of what it unlinks, the name
//! cannot move between that check and the `unlink`.
//!
//! # Why every race comes out right
//!
//! - **Two attachers.** At most one can hold the write lock; the other blocks for its read lock
//!   until the first has initialised and converted atomically to a read lock, then validates a
//!   complete header. One initialisation per generation.
//! - **Two detachers.** Each first closes its own description, then competes for the write lock
//!   on a fresh one. Whoever wins unlinks; the other either loses the lock (and leaves), or wins
//!   after the unlink, in which case its `open` found no file or a different inode, or its
//!   check under the lock finds the inode unlinked, so it never unlinks a newer generation.
//! - **A failed attach.** Once the read lock is held, a failure (`Exists`, wrong kind, too
//!   small) drops a complete `Segment`, which detaches like any other handle, so a segment whose
//!   last other user left meanwhile is still freed.
//! - **Attacher against detacher.** The detacher unlinks only while it holds the write lock, and
//!   nobody else holds any lock then. An attacher that opened the old inode before the unlink
//!   either waited on its read lock (and then sees `st_nlink == 0` and retries on the new name),
//!   or won the write lock after the detacher released it (and sees `st_nlink == 0`, retries).
//!   An attacher that takes its read lock before the detacher's try makes that try fail, so the
//!   file stays. No process ends up attached to an unlinked orphan, and none is freed under one.
//! - **Fork.** A fork handler gives the child a description of its own with its own read lock
//!   (`fork.rs`), so each process releases only its own lock when it detaches (explicitly, with
//!   `F_UNLCK`, before closing), and the other's lock makes the first detacher's write-lock try
//!   fail. The last one unlinks. A child that `posix_spawn` is starting holds a copy of the
//!   descriptor until its `exec`, but no lock: it cannot keep the segment alive.
//! - **One process, two handles.** Two `open`s give two descriptions with two read locks; they
//!   conflict with each other's write-lock tries exactly as two processes would.
//! - **Crash.** The kernel closes the crashed process's descriptors, dropping its locks. If it
//!   was the last user, the file stays (nobody ran the detach step), but the next attacher wins
//!   the write lock and starts a new, zero-filled generation (`created = true`); `gc` removes
//!   such leftovers for tools that list the directory.
//!
//! Besides the OFD lock, each handle takes a `flock(LOCK_SH)` on its description, which the
//! protocol never tests: `/proc/locks` shows the pid of `flock` holders (it shows `-1` for OFD
//! locks), so that is how [`crate::admin`] tells who is attached.
//!
//! # Trust
//!
//! A segment file owned by another user is not trusted for lifetime decisions: it is never
//! re-initialised or unlinked by this process, and it is opened at all only when the caller
//! asked for a mode that shares with group or others (so a planted file cannot capture the data
//! of a program that asked for the owner-only default).

use std::mem::ManuallyDrop;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use rustix::fs::{self as rfs, FileType, Mode, OFlags};
use rustix::io::Errno;

use crate::copy;
use crate::error::{Error, Result};
use crate::header::{self, Header, Kind, Lifetime, RawHeader, HEADER_LEN};
use crate::name;
use crate::sys::{self, LockKind, Mapping};

/// How many times attach retries after finding an orphan or a dead initialiser.
const MAX_ATTEMPTS: usize = 100;

/// The largest segment we create: 1 TiB, far above any tmpfs here, small enough for `usize`.
pub const MAX_SEGMENT_SIZE: u64 = 1 << 40;

/// `TMPFS_MAGIC` and `HUGETLBFS_MAGIC` from `<linux/magic.h>`.
const TMPFS_MAGIC: i64 = 0x0102_1994;
const HUGETLBFS_MAGIC: i64 = 0x9584_58f6;

/// What to do when the name does or does not exist.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum OpenMode {
    OpenOrCreate,
    CreateNew,
    OpenExisting,
}

/// Options for opening a segment; start with [`Segment::builder`].
#[derive(Clone, Debug)]
pub struct Builder {
    name: String,
    dir: PathBuf,
    data_len: u64,
    lifetime: Lifetime,
    mode: u32,
    attach_timeout: Duration,
    /// Whether attaching checks `data_len` against an existing segment (the value layer
    /// checks its capacity itself, in its own terms).
    check_size: bool,
}

impl Builder {
    pub(crate) fn new(name: &str) -> Builder {
        Builder {
            name: name.to_owned(),
            dir: PathBuf::from(name::DEFAULT_DIR),
            data_len: 0,
            lifetime: Lifetime::Transient,
            mode: 0o600,
            attach_timeout: Duration::from_secs(10),
            check_size: true,
        }
    }

    /// The directory that holds the segment files: `/dev/shm` by default, or any tmpfs or
    /// hugetlbfs mount (tests use a small private tmpfs).
    pub fn dir(mut self, dir: impl Into<PathBuf>) -> Builder {
        self.dir = dir.into();
        self
    }

    /// The number of data bytes, not counting the 64-byte header. Needed to create a segment;
    /// when opening an existing one, the segment must have at least this many (0 accepts any).
    pub fn size(mut self, bytes: usize) -> Builder {
        self.data_len = bytes as u64;
        self
    }

    /// The lifetime a newly created segment gets (transient by default). An existing segment
    /// keeps the lifetime its creator chose; [`Segment::lifetime`] tells which.
    pub fn lifetime(mut self, lifetime: Lifetime) -> Builder {
        self.lifetime = lifetime;
        self
    }

    /// The file mode of a newly created segment: `0o600` (owner only) by default. A mode that
    /// grants group or others access also allows opening a segment owned by another user.
    pub fn mode(mut self, mode: u32) -> Builder {
        self.mode = mode & 0o777;
        self
    }

    /// How long attaching waits for a process that holds the segment's exclusive lock (an
    /// initialiser reserving a large segment, or a detacher) before [`Error::Timeout`]:
    /// 10 s by default.
    pub fn attach_timeout(mut self, timeout: Duration) -> Builder {
        self.attach_timeout = timeout;
        self
    }

    /// The segment's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The directory.
    pub fn directory(&self) -> &Path {
        &self.dir
    }

    /// Opens the segment, creating it if nobody holds it (like `CreateFileMapping`).
    /// [`Segment::created`] tells whether this call created and zero-filled it.
    pub fn open(&self) -> Result<Segment> {
        self.open_kind(Kind::Raw, OpenMode::OpenOrCreate)
    }

    /// Creates the segment; fails with [`Error::Exists`] if a live one has the name.
    /// A transient segment that nobody holds any more (its users crashed) does not count.
    pub fn create_new(&self) -> Result<Segment> {
        self.open_kind(Kind::Raw, OpenMode::CreateNew)
    }

    /// Opens a live segment; fails with [`Error::NotFound`] if there is none.
    pub fn open_existing(&self) -> Result<Segment> {
        self.open_kind(Kind::Raw, OpenMode::OpenExisting)
    }

    pub(crate) fn with_data_len(mut self, data_len: u64) -> Builder {
        self.data_len = data_len;
        self.check_size = false;
        self
    }

    pub(crate) fn open_value(&self, create: bool) -> Result<Segment> {
        let mode = if create {
            OpenMode::OpenOrCreate
        } else {
            OpenMode::OpenExisting
        };
        self.open_kind(Kind::Value, mode)
    }

    pub(crate) fn create_value(&self) -> Result<Segment> {
        self.open_kind(Kind::Value, OpenMode::CreateNew)
    }

    pub(crate) fn open_map(&self, create: bool) -> Result<Segment> {
        let mode = if create {
            OpenMode::OpenOrCreate
        } else {
            OpenMode::OpenExisting
        };
        self.open_kind(Kind::Map, mode)
    }

    pub(crate) fn create_map(&self) -> Result<Segment> {
        self.open_kind(Kind::Map, OpenMode::CreateNew)
    }

    pub(crate) fn path(&self) -> PathBuf {
        self.dir.join(name::file_name(&self.name))
    }

    fn err(&self, op: &'static str, e: Errno) -> Error {
        Error::from_errno(&self.name, &self.dir, op, e)
    }

    fn open_kind(&self, kind: Kind, mode: OpenMode) -> Result<Segment> {
        name::validate_name(&self.name)?;
        let total = self.total_size(mode)?;
        let path = self.path();
        for _ in 0..MAX_ATTEMPTS {
            if let Some(seg) = self.attach_once(&path, kind, mode, total)? {
                return Ok(seg);
            }
        }
        Err(Error::Corrupt {
            name: self.name.clone(),
            reason: format!(
                "could not attach after {MAX_ATTEMPTS} attempts: the file keeps being removed, \
                 or its initialiser keeps dying"
            ),
        })
    }

    /// The total file size to create with, or 0 when only opening.
    fn total_size(&self, mode: OpenMode) -> Result<u64> {
        let invalid = |reason: String| Error::InvalidSize {
            name: self.name.clone(),
            reason,
        };
        let total = self
            .data_len
            .checked_add(HEADER_LEN as u64)
            .filter(|&t| t <= MAX_SEGMENT_SIZE)
            .ok_or_else(|| {
                invalid(format!(
                    "{} bytes is more than the largest segment ({MAX_SEGMENT_SIZE} bytes)",
                    self.data_len
                ))
            })?;
        if self.data_len == 0 && mode == OpenMode::CreateNew {
            return Err(invalid("a size of 0 bytes cannot be created".into()));
        }
        Ok(total)
    }

    /// One attempt of the attach protocol. `Ok(None)` means "retry from the start".
    fn attach_once(
        &self,
        path: &Path,
        kind: Kind,
        mode: OpenMode,
        total: u64,
    ) -> Result<Option<Segment>> {
        let base = OFlags::RDWR | OFlags::NOFOLLOW | OFlags::NONBLOCK | OFlags::CLOEXEC;
        let flags = match mode {
            OpenMode::OpenOrCreate | OpenMode::CreateNew => base | OFlags::CREATE,
            OpenMode::OpenExisting => base,
        };
        let fd = match rfs::open(path, flags, Mode::from_raw_mode(self.mode)) {
            Ok(fd) => Attaching(Some(fd)),
            Err(Errno::NOENT) if !self.dir.is_dir() => {
                return Err(Error::Io {
                    name: self.name.clone(),
                    op: "open",
                    source: std::io::Error::new(
                        std::io::ErrorKind::NotFound,
                        format!("directory {} does not exist", self.dir.display()),
                    ),
                })
            }
            Err(Errno::ACCESS) => return Err(self.permission(path)),
            Err(Errno::ISDIR) | Err(Errno::NXIO) => {
                return Err(self.foreign("it is not a regular file".into()))
            }
            Err(e) => return Err(self.err("open", e)),
        };
        let st = rfs::fstat(&fd).map_err(|e| self.err("fstat", e))?;
        if FileType::from_raw_mode(st.st_mode) != FileType::RegularFile {
            return Err(self.foreign(format!(
                "it is a {:?}, not a regular file",
                FileType::from_raw_mode(st.st_mode)
            )));
        }
        let trusted = st.st_uid == rustix::process::geteuid().as_raw();
        if !trusted && self.mode & 0o077 == 0 {
            return Err(Error::PermissionDenied {
                name: self.name.clone(),
                reason: format!(
                    "the file is owned by uid {}, not by this user; open with a group or other \
                     mode to share a segment across users",
                    st.st_uid
                ),
            });
        }

        let alone = sys::ofd_lock(fd.as_fd(), LockKind::Exclusive)
            .map_err(|e| self.err("fcntl(F_OFD_SETLK)", e))?;
        let (created, locked_st) = if alone && trusted {
            match self.claim_alone(&fd, kind, mode, total)? {
                Some(created) => (created, None),
                None => return Ok(None),
            }
        } else {
            if !alone {
                self.wait_shared_lock(&fd)?;
            } else {
                // Alone but not the owner: attach as an ordinary user, decide nothing.
                sys::ofd_lock(fd.as_fd(), LockKind::Shared)
                    .map_err(|e| self.err("fcntl(F_OFD_SETLK)", e))?;
            }
            let st = rfs::fstat(&fd).map_err(|e| self.err("fstat", e))?;
            if st.st_nlink == 0 {
                return Ok(None); // unlinked by the last detacher while we waited
            }
            (false, Some(st))
        };
        let Some(seg) = self.map_and_validate(fd, path, created, trusted, locked_st)? else {
            return Ok(None);
        };
        // From here on, failing drops `seg`, which detaches like any handle (and frees the
        // segment if its last other user left meanwhile).
        if mode == OpenMode::CreateNew && !created {
            return Err(Error::Exists {
                name: self.name.clone(),
                dir: self.dir.clone(),
            });
        }
        if seg.header.kind != kind {
            return Err(Error::Incompatible {
                name: self.name.clone(),
                reason: format!(
                    "it holds {} data, not {}",
                    seg.header.kind.as_str(),
                    kind.as_str()
                ),
            });
        }
        if self.check_size && !created && seg.data_len() < self.data_len as usize {
            return Err(Error::InvalidSize {
                name: self.name.clone(),
                reason: format!(
                    "the existing segment has {} data bytes, less than the {} asked for",
                    seg.data_len(),
                    self.data_len
                ),
            });
        }
        Ok(Some(seg))
    }

    /// Takes the read lock while someone else holds the write lock (an initialiser or a
    /// detacher, for microseconds), waiting at most [`Builder::attach_timeout`]. Polls with a
    /// growing pause, since `F_OFD_SETLKW` has no timeout and cannot be interrupted.
    fn wait_shared_lock(&self, fd: &OwnedFd) -> Result<()> {
        let start = Instant::now();
        let mut pause = Duration::from_micros(50);
        for attempt in 0u32.. {
            if sys::ofd_lock(fd.as_fd(), LockKind::Shared)
                .map_err(|e| self.err("fcntl(F_OFD_SETLK)", e))?
            {
                return Ok(());
            }
            if start.elapsed() > self.attach_timeout {
                return Err(Error::Timeout {
                    name: self.name.clone(),
                    what: "the initialiser or detacher holding the segment's lock",
                    timeout: self.attach_timeout,
                });
            }
            if attempt < 16 {
                std::thread::yield_now();
            } else {
                std::thread::sleep(pause);
                pause = (pause * 2).min(Duration::from_millis(10));
            }
        }
        unreachable!("the loop returns")
    }

    /// We hold the write lock and own the file: decide whether this is a new generation,
    /// initialise it if so, and convert to the read lock. `Ok(None)` means retry.
    fn claim_alone(
        &self,
        fd: &OwnedFd,
        kind: Kind,
        mode: OpenMode,
        total: u64,
    ) -> Result<Option<bool>> {
        let st = rfs::fstat(fd).map_err(|e| self.err("fstat", e))?;
        if st.st_nlink == 0 {
            return Ok(None);
        }
        let file_len = st.st_size as u64;
        let mut head = [0u8; HEADER_LEN];
        let n = rustix::io::pread(fd, &mut head, 0).map_err(|e| self.err("pread", e))?;
        let existing = match header::parse(&self.name, &head[..n], file_len) {
            Ok(h) => h,
            // Our magic but a broken header in a file nobody holds: a dead generation that was
            // damaged. Foreign and incompatible files are never touched.
            Err(Error::Corrupt { .. }) if file_len >= HEADER_LEN as u64 => None,
            Err(e) => return Err(e),
        };
        let keep = matches!(existing, Some(h) if h.lifetime == Lifetime::Persistent);
        if keep {
            if mode == OpenMode::CreateNew {
                return Err(Error::Exists {
                    name: self.name.clone(),
                    dir: self.dir.clone(),
                });
            }
        } else {
            // Nobody holds it: whatever is here is a dead generation (or a fresh empty file).
            if mode == OpenMode::OpenExisting || self.data_len == 0 {
                unlink_if_ours(fd, &self.path());
                if mode == OpenMode::OpenExisting {
                    return Err(Error::NotFound {
                        name: self.name.clone(),
                        dir: self.dir.clone(),
                    });
                }
                return Err(Error::InvalidSize {
                    name: self.name.clone(),
                    reason: "the segment does not exist and a size of 0 bytes cannot be created"
                        .into(),
                });
            }
            self.initialise(fd, kind, total)?;
        }
        sys::ofd_lock(fd.as_fd(), LockKind::Shared)
            .map_err(|e| self.err("fcntl(F_OFD_SETLK)", e))?;
        Ok(Some(!keep))
    }

    /// Makes `fd` a fresh, zero-filled segment of `total` bytes with a valid header.
    /// On failure the file is unlinked (we hold the write lock, so nobody else uses it).
    fn initialise(&self, fd: &OwnedFd, kind: Kind, total: u64) -> Result<()> {
        let fail = |e: Error| {
            unlink_if_ours(fd, &self.path());
            Err(e)
        };
        match rfs::fstatfs(fd) {
            // `f_type` is i64 here but another integer type on other architectures.
            #[allow(clippy::unnecessary_cast)]
            Ok(s) if s.f_type as i64 == TMPFS_MAGIC || s.f_type as i64 == HUGETLBFS_MAGIC => {}
            Ok(_) => {
                return fail(Error::Io {
                    name: self.name.clone(),
                    op: "open",
                    source: std::io::Error::other(format!(
                        "{} is not a tmpfs or hugetlbfs mount",
                        self.dir.display()
                    )),
                })
            }
            Err(e) => return fail(self.err("fstatfs", e)),
        }
        if let Err(e) = rfs::ftruncate(fd, 0) {
            return fail(self.err("ftruncate", e));
        }
        let reserved = loop {
            match rfs::fallocate(fd, rfs::FallocateFlags::empty(), 0, total) {
                Err(Errno::INTR) => continue, // a signal arrived while reserving pages
                r => break r,
            }
        };
        match reserved {
            Ok(()) => {}
            Err(Errno::NOSPC) | Err(Errno::NOMEM) | Err(Errno::FBIG) => {
                return fail(Error::NoSpace {
                    name: self.name.clone(),
                    dir: self.dir.clone(),
                    size: total,
                })
            }
            Err(e) => return fail(self.err("fallocate", e)),
        }
        if let Err(e) = rfs::fchmod(fd, Mode::from_raw_mode(self.mode)) {
            return fail(self.err("fchmod", e));
        }
        let map = match Mapping::map(fd.as_fd(), total as usize) {
            Ok(m) => m,
            Err(e) => return fail(self.err("mmap", e)),
        };
        // SAFETY: the mapping is at least HEADER_LEN bytes, page aligned (so 8-aligned), and
        // `RawHeader` is made of atomics, so a shared reference to it is sound even while other
        // processes write there.
        let raw = unsafe { &*map.ptr().cast::<RawHeader>() };
        raw.init(kind, self.lifetime, total);
        Ok(())
    }

    /// Maps the file and validates its header. `Ok(None)` means the initialiser died: retry.
    /// `st` is the file's status if it was taken under the read lock (nobody can resize the file
    /// while we hold it); otherwise it is taken here.
    fn map_and_validate(
        &self,
        fd: Attaching,
        path: &Path,
        created: bool,
        trusted: bool,
        st: Option<rfs::Stat>,
    ) -> Result<Option<Segment>> {
        let st = match st {
            Some(st) => st,
            None => rfs::fstat(&fd).map_err(|e| self.err("fstat", e))?,
        };
        let file_len = st.st_size as u64;
        if file_len < HEADER_LEN as u64 {
            if file_len == 0 {
                return Ok(None);
            }
            return Err(Error::Corrupt {
                name: self.name.clone(),
                reason: format!("the file has {file_len} bytes, less than a header"),
            });
        }
        if file_len > MAX_SEGMENT_SIZE {
            return Err(Error::Corrupt {
                name: self.name.clone(),
                reason: format!("the file has {file_len} bytes, more than any segment"),
            });
        }
        let map = Mapping::map(fd.as_fd(), file_len as usize).map_err(|e| self.err("mmap", e))?;
        let mut head = [0u8; HEADER_LEN];
        // SAFETY: the mapping has at least HEADER_LEN bytes.
        unsafe { copy::copy_from_shared(&mut head, map.ptr()) };
        let Some(header) = header::parse(&self.name, &head, file_len)? else {
            return Ok(None);
        };
        // Only tells tools our pid (see the module docs); the protocol never depends on it, so
        // a failure (someone holding an exclusive flock) is not an error.
        let _ = rfs::flock(&fd, rfs::FlockOperation::NonBlockingLockShared);
        let fd = fd.into_inner();
        crate::fork::register(fd.as_raw_fd(), st.st_dev, st.st_ino);
        Ok(Some(Segment {
            name: self.name.clone(),
            dir: self.dir.clone(),
            path: path.to_owned(),
            dev: st.st_dev,
            ino: st.st_ino,
            created,
            header,
            trusted,
            map: ManuallyDrop::new(map),
            fd: Some(fd),
        }))
    }

    fn foreign(&self, reason: String) -> Error {
        Error::Foreign {
            name: self.name.clone(),
            reason,
        }
    }

    fn permission(&self, path: &Path) -> Error {
        let reason = match rfs::lstat(path) {
            Ok(st) => format!(
                "open(O_RDWR) refused: mode {:o}, owner uid {}, this process uid {}",
                st.st_mode & 0o7777,
                st.st_uid,
                rustix::process::geteuid().as_raw()
            ),
            Err(_) => format!("cannot create files in {}", self.dir.display()),
        };
        Error::PermissionDenied {
            name: self.name.clone(),
            reason,
        }
    }
}

/// A descriptor being attached. If the attach fails or retries, whatever lock it holds is
/// released explicitly before it closes: a child forked meanwhile by another thread has a copy
/// of the descriptor (and no spare, since it is not registered yet), which must not keep the
/// lock alive.
struct Attaching(Option<OwnedFd>);

impl Attaching {
    fn into_inner(mut self) -> OwnedFd {
        self.0.take().expect("taken only once")
    }
}

impl std::ops::Deref for Attaching {
    type Target = OwnedFd;

    fn deref(&self) -> &OwnedFd {
        self.0.as_ref().expect("present until into_inner")
    }
}

impl AsFd for Attaching {
    fn as_fd(&self) -> std::os::fd::BorrowedFd<'_> {
        (**self).as_fd()
    }
}

impl Drop for Attaching {
    fn drop(&mut self) {
        if let Some(fd) = self.0.take() {
            let _ = sys::ofd_lock(fd.as_fd(), LockKind::Unlock);
        }
    }
}

/// Unlinks `path` if it still names the inode of `fd`, on which the caller holds the write
/// lock. Every unlinker holds the write lock of the inode it unlinks, so once this check passes
/// under our lock the name cannot move before the `unlink`.
fn unlink_if_ours(fd: &OwnedFd, path: &Path) {
    let (Ok(mine), Ok(named)) = (rfs::fstat(fd), rfs::lstat(path)) else {
        return;
    };
    if mine.st_nlink > 0 && (mine.st_dev, mine.st_ino) == (named.st_dev, named.st_ino) {
        let _ = rfs::unlink(path);
    }
}

/// An attached named segment. Dropping it detaches; the last detacher of a transient segment
/// frees it.
///
/// The data area (`data_len()` bytes after the header) is shared with other processes that may
/// write it at any time, so it is never handed out as a slice: use [`Segment::read`] and
/// [`Segment::write`], or [`Segment::as_ptr`] with atomics of your own.
#[derive(Debug)]
pub struct Segment {
    name: String,
    dir: PathBuf,
    path: PathBuf,
    dev: u64,
    ino: u64,
    created: bool,
    header: Header,
    trusted: bool,
    /// Unmapped first in `drop`: a mapping holds a reference to the open file description,
    /// so the description (and its attach lock) lives on until the mapping is gone.
    map: ManuallyDrop<Mapping>,
    /// `Some` until drop; taken there so it is closed before the last-detacher check.
    fd: Option<OwnedFd>,
}

impl Segment {
    /// Starts the options for segment `name`.
    pub fn builder(name: &str) -> Builder {
        Builder::new(name)
    }

    /// Opens or creates transient segment `name` in `/dev/shm` with `size` data bytes.
    pub fn open(name: &str, size: usize) -> Result<Segment> {
        Builder::new(name).size(size).open()
    }

    /// The segment's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The directory that holds it.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The file that holds it.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Whether this handle created (and zero-filled) the segment's current generation, the
    /// equivalent of `GetLastError() != ERROR_ALREADY_EXISTS` after `CreateFileMapping`.
    pub fn created(&self) -> bool {
        self.created
    }

    /// The lifetime its creator chose.
    pub fn lifetime(&self) -> Lifetime {
        self.header.lifetime
    }

    /// The file's device and inode numbers: the identity of this generation of the segment.
    pub fn file_id(&self) -> (u64, u64) {
        (self.dev, self.ino)
    }

    /// The header as validated when this handle attached.
    pub fn header(&self) -> &Header {
        &self.header
    }

    /// The number of data bytes (the file size less the 64-byte header).
    pub fn data_len(&self) -> usize {
        self.map.len() - HEADER_LEN
    }

    /// The first data byte. Other processes may write any byte at any time: access it only
    /// with atomics or volatile operations, never through `&`/`&mut` references.
    pub fn as_ptr(&self) -> *mut u8 {
        // SAFETY: the mapping is at least HEADER_LEN bytes long (checked when attaching).
        unsafe { self.map.ptr().add(HEADER_LEN) }
    }

    /// Copies `buf.len()` data bytes starting at `offset` into `buf`. Not atomic: bytes that
    /// another process writes meanwhile may be old or new (use [`crate::Value`] for that).
    pub fn read(&self, offset: usize, buf: &mut [u8]) -> Result<()> {
        self.check_range(offset, buf.len())?;
        // SAFETY: `offset + len <= data_len`, checked above, so the range is inside the mapping.
        unsafe { copy::copy_from_shared(buf, self.as_ptr().add(offset)) };
        Ok(())
    }

    /// Copies `data` into the data area at `offset`. Not atomic for readers.
    pub fn write(&self, offset: usize, data: &[u8]) -> Result<()> {
        self.check_range(offset, data.len())?;
        // SAFETY: `offset + len <= data_len`, checked above, so the range is inside the mapping.
        unsafe { copy::copy_to_shared(self.as_ptr().add(offset), data) };
        Ok(())
    }

    fn check_range(&self, offset: usize, len: usize) -> Result<()> {
        match offset.checked_add(len) {
            Some(end) if end <= self.data_len() => Ok(()),
            _ => Err(Error::InvalidSize {
                name: self.name.clone(),
                reason: format!(
                    "range {offset}+{len} is outside the {} data bytes",
                    self.data_len()
                ),
            }),
        }
    }

    /// The attach descriptor, for the value layer's witness probes (`F_OFD_GETLK`).
    pub(crate) fn lock_fd(&self) -> std::os::fd::BorrowedFd<'_> {
        self.fd.as_ref().expect("present until drop").as_fd()
    }

    /// The whole mapping (header included), for the value layer.
    pub(crate) fn mapping(&self) -> &Mapping {
        &self.map
    }

    /// The detach step for a transient segment: see the module documentation.
    fn release_name(&self) {
        let flags = OFlags::RDWR | OFlags::NOFOLLOW | OFlags::NONBLOCK | OFlags::CLOEXEC;
        let Ok(fd) = rfs::open(&self.path, flags, Mode::empty()) else {
            return; // already unlinked, or not ours to open any more
        };
        let Ok(st) = rfs::fstat(&fd) else { return };
        if st.st_dev != self.dev || st.st_ino != self.ino {
            return; // the name now belongs to a newer generation
        }
        if let Ok(true) = sys::ofd_lock(fd.as_fd(), LockKind::Exclusive) {
            // Nobody is attached. But another detacher may have unlinked our inode (and a new
            // generation taken the name) between our `open` and our lock: check again, now
            // that nobody else can unlink.
            unlink_if_ours(&fd, &self.path);
        }
    }
}

impl Drop for Segment {
    fn drop(&mut self) {
        // Let go of our read lock explicitly: our description is ours alone (fork.rs gives a
        // forked child its own), but a child being spawned by another thread may hold a copy
        // of the descriptor until its `exec`, and that copy must not keep the segment alive.
        // Then unmap and close (a mapping, too, holds a reference to the description).
        let fd = self.fd.take();
        // A description shared with a forked child (no spare could be made for it) keeps its
        // lock until the last of them closes it: releasing it here would release theirs.
        if let Some(fd) = &fd {
            let gone = crate::fork::unregister(fd.as_raw_fd());
            if !gone.shared {
                let _ = sys::ofd_lock(fd.as_fd(), LockKind::Unlock);
            }
            drop(gone.witness); // releases this handle's writer token, if it had one
        }
        // SAFETY: `map` is never used again: this is `drop`, and nothing below touches it.
        unsafe { ManuallyDrop::drop(&mut self.map) };
        drop(fd);
        if self.header.lifetime == Lifetime::Transient && self.trusted {
            self.release_name();
        }
    }
}
