//! Named segments with the lifetime of a Windows named file mapping.
//!
//! # Design: the kernel frees the memory, not the last user's code
//!
//! A segment `NAME` has a *name file* `<dir>/shmem.NAME` (on a tmpfs or hugetlbfs) and a
//! *memory*. Where the memory lives is the segment's [`Storage`]:
//!
//! - **SysV** (transient segments on tmpfs, the default). The memory is a SysV shared-memory
//!   segment made with `shmget(IPC_PRIVATE)` and marked `IPC_RMID` by its creator right after
//!   its own `shmat`. The kernel frees a marked segment when its attach count reaches 0, and an
//!   attachment goes with `shmdt`, `exit`, `exec` and any crash, so *every* way out of the
//!   last user frees the memory with no code of ours running; a forked child adds an
//!   attachment of its own. Linux still lets a process `shmat` a marked segment by id, which is
//!   how joiners reach it. The name file holds only the 64-byte header (`header.rs`), which
//!   announces the generation: its `shmid` and a random `token`. The segment's own first 64
//!   bytes carry the same header, so data starts at `HEADER_LEN` in both storages (value.rs
//!   does not know which) and a joiner checks magic and token after `shmat` (ids are reused).
//!   A crash leaves at most the 64-byte name file, whose generation is provably gone; the next
//!   open starts a new generation in it and `gc` sweeps it.
//! - **File** (persistent segments, hugetlbfs directories). The name file *is* the memory, as a
//!   file must be for what SysV cannot do: outlive every process (persistent), or use huge
//!   pages from a hugetlbfs mount. Its pages live until the file is unlinked and unmapped, so
//!   a transient file-storage segment relies on the detach step (or the exit handler) to be
//!   unlinked; a crash leaves the file and its pages until the next open or `gc`.
//!
//! Measured against the alternative of an unlinked tmpfs file reached through a live holder:
//! that needs a process to pass the descriptor on (`SCM_RIGHTS`) or `/proc/PID/fd`, i.e. a
//! judgement of who is alive, which the kernel's attach count gives us for free. The SysV
//! choice trades away: one IPC namespace per sharing group (containers sharing a segment need
//! `--ipc=host` or `--ipc=container:`; a pod shares one), the system-wide `kernel.shmmni` limit
//! (4096 segments by default; the next `open` fails with a `NoSpace` naming it), and the
//! segment is visible to `ipcs -m` (key 0, `dest` once marked).
//!
//! # The lifetime protocol
//!
//! Every attached handle holds its own open file description of the name file, and on it an
//! OFD read lock on byte 0 (`F_OFD_SETLK`, see `sys.rs`). OFD locks belong to the description:
//! two handles in one process conflict like two processes do, and the kernel drops the lock
//! when the last descriptor of the description closes (a crash included). A process that wins
//! the *write* lock (non-blocking) has proved that no handle with a lock of its own is
//! attached. Only a process holding the write lock initialises or unlinks a name file.
//!
//! With SysV storage a second witness comes with it: the generation's attach count. A process
//! may hold the memory without a lock of its own: a child made without our fork handlers
//! (`_Fork()`, raw `clone`) shares its parent's description, so when one of them lets go of the
//! lock explicitly (below), the other holds none. So whoever wins the write lock also asks the
//! kernel (`IPC_STAT`) how many attachments the announced generation has, and treats any it
//! cannot account for as a live user. An attachment is always made while holding a lock and
//! given up before the lock is, so under the write lock every attachment counted belongs to a
//! process that really holds the memory.
//!
//! **Attach** (loop, at most 100 attempts, then [`Error::AttachRetries`]):
//! 1. `open(O_RDWR | O_CREAT? | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC)`; `fstat` must show a
//!    regular file (a symlink, FIFO or directory under our name is refused, never followed or
//!    blocked on).
//! 2. Try the write lock without blocking. Outcomes are named: [`Claim`] `Created`, `Joined` or
//!    `Retry`.
//!    - **Won: no lock holder.** `st_nlink == 0` (a detacher unlinked it after our `open`):
//!      retry. Otherwise read the header ([`header::parse`]): a foreign, incompatible or
//!      damaged header is an error and the file is not touched. A persistent segment is
//!      joined. A SysV generation that is still attached elsewhere (we attach it, check the
//!      token, and `IPC_STAT` shows another attachment besides ours) is joined. Anything else
//!      (an empty or unfinished file, a SysV generation that is gone, a transient file
//!      segment nobody holds) is dead: start a new generation, `created = true`.
//!      - SysV: `shmget` (mode bits from the builder) → `shmat` → write the header into the
//!        segment (magic last) → `IPC_RMID` → give the segment the name file's owner, group
//!        and mode → reserve every page (`MADV_POPULATE_WRITE`; `ENOMEM` is [`Error::NoSpace`]
//!        now, not a SIGBUS or an OOM kill later) → name file: truncate, the header without
//!        its magic, then the magic.
//!      - File: truncate, the header without its magic (tmpfs), `fallocate` the size (rounded
//!        up to the huge page on hugetlbfs), map, the header with the magic last.
//!
//!      Then convert the write lock to a read lock; POSIX-style lock conversion is atomic in
//!      Linux, so no second attacher can win in between.
//!    - **Lost: someone holds a lock.** Wait for the read lock (polling `F_OFD_SETLK` with a
//!      growing pause up to `attach_timeout`, since `F_OFD_SETLKW` cannot time out), which
//!      waits out an initialiser or a detacher holding the write lock. Then read the header:
//!      unlinked or unfinished → retry; SysV → `shmat` the announced id and check the token
//!      (`EINVAL`/`EIDRM`/mismatch: that generation is gone, retry); file → map it. `Joined`.
//!
//! **Detach** (drop): unmap or `shmdt` first (an attachment must never outlive our lock), then
//! release the read lock explicitly (`F_UNLCK`: a child being spawned by another thread holds a
//! copy of the descriptor until its `exec`, which must not keep the name), close, and run the
//! last-detacher step for a transient segment whose name file we own: open the name again
//! without `O_CREAT`; if it is still our inode, try the write lock; if won, read the header
//! under the lock and, unless its SysV generation still has attachments, check once more that
//! the name refers to our still-linked inode, and unlink. With file storage the explicit unlock
//! is skipped on a description that `fork.rs` marked shared (no spare could be made for a
//! child), as the attach count that makes it safe for SysV does not exist there.
//!
//! **Exit** (`fork.rs`): an `atexit` handler, installed with the first handle, releases every
//! live handle's lock and runs the last-detacher step, counting the process's own remaining
//! attachments (it unmaps nothing: other threads may still run until the process is gone). So
//! a normal exit without closing (`exit`, a return from `main`, the end of a Python script)
//! leaves nothing, in either storage. `_exit`, `exec` and signals run no code: the kernel frees
//! SysV memory and the 64-byte name file stays until the next open or `gc`.
//!
//! Every unlink in the crate holds the write lock of the inode it removes, then checks that the
//! name still refers to that inode; since every unlinker does so, the name cannot move between
//! that check and the `unlink`.
//!
//! # Why every race comes out right
//!
//! - **Two attachers.** At most one holds the write lock; the other waits for its read lock
//!   until the first has initialised and converted atomically, then validates a complete header
//!   (magic written last in both the name file and the segment). One initialisation per
//!   generation.
//! - **Two detachers.** Each gives up its attachment and lock, then competes for the write lock
//!   on a fresh description. Whoever wins unlinks; the other loses the lock, or wins after the
//!   unlink and finds no file or another inode, or its check under the lock finds the inode
//!   unlinked. Neither unlinks a newer generation.
//! - **Attacher against detacher.** The detacher unlinks only under the write lock. An attacher
//!   that opened the old inode before the unlink waits for its lock and then sees
//!   `st_nlink == 0` (retry on the new name); one that took its read lock first makes the
//!   detacher's try fail. An attacher that reads a SysV header whose generation was freed
//!   meanwhile (its last user detached without unlinking, say while a spawned child held a
//!   descriptor copy) gets `EINVAL`/`EIDRM` or a token mismatch from the reused id, and
//!   retries; nobody is ever attached to memory a new opener cannot reach.
//! - **A failed attach.** Its lock is released explicitly before the descriptor closes
//!   (`Attaching`); once a handle exists, a failure (`Exists`, wrong kind, too small) drops it,
//!   which detaches like any other handle.
//! - **Fork.** A fork handler gives the child its own description and lock (`fork.rs`), and
//!   the child inherits the SysV attachment; either one's detach leaves the other's lock. File
//!   storage is mapped through a description that holds no lock, so a child's inherited mapping
//!   never keeps its parent's lock (or pid marker) alive after the parent left.
//! - **A child without fork handlers** shares the parent's description. When one of them lets
//!   go explicitly (detach or exit), the shared lock goes, but the other still has its
//!   attachment: the last-detacher step sees it and leaves the name, and an opener that wins
//!   the write lock joins that generation instead of starting another. No split brain. (File
//!   storage has no attach count; there the old rule stays: a description marked shared is
//!   never unlocked explicitly, and one made shared behind fork.rs's back, by `_Fork`, is a
//!   known limit, docs/RELIABILITY.md.)
//! - **Crash, `exec`, `_exit`.** The kernel closes descriptors (dropping locks) and detaches
//!   SysV memory, freeing it with the last attachment. The name file stays; the next attacher
//!   wins the write lock, finds the announced generation gone, and starts a new, zero-filled
//!   one (`created = true`).
//! - **A creator that dies between `shmget` and `IPC_RMID`** leaves an unmarked segment. After
//!   writing the in-segment header it is provably ours and dead (our header, not marked, no
//!   attachment: the creator holds one until `IPC_RMID`), and `gc` frees it. Before its
//!   `shmat` (one system call) it is an empty, page-less segment we cannot tell from another
//!   program's, and is left alone.
//! - **A non-owner last detacher.** It may not unlink another user's file in a sticky
//!   directory, and does not try; SysV memory is freed by the kernel anyway, and the next
//!   opener finds the generation gone and starts a new one in the same name file (`created =
//!   true`, zeroed), owner or not.
//!
//! Besides the OFD lock, each handle takes a `flock(LOCK_SH)` on its description, which the
//! protocol never tests: `/proc/locks` shows the pid of `flock` holders (it shows `-1` for OFD
//! locks), so that is how [`crate::admin`] tells who is attached.
//!
//! # Read-only handles
//!
//! A handle opened with [`Access::ReadOnly`] opens the name file `O_RDONLY`, attaches SysV
//! memory with `SHM_RDONLY` and maps file storage `PROT_READ` (through an `O_RDONLY`
//! description), so read permission is all it needs. It cannot take the write lock (`F_WRLCK`
//! needs a descriptor open for writing), so it never initialises, repairs or unlinks; it takes
//! the read lock like every attached handle, and that is all the protocol asks of a holder:
//!
//! - **It keeps the segment alive.** Its read lock makes every writer's try of the write lock
//!   fail, so no detacher unlinks the name and no attacher starts a new generation while it is
//!   attached; its SysV attachment keeps the memory (the kernel counts it like any other).
//!   When it leaves (drop, exit, crash) the lock and the attachment go with it, and the last
//!   detacher's step (or the next open, or `gc`) proceeds as after any holder.
//! - **`admin` judges it live.** It shows in `/proc/locks` (the OFD read lock and the `flock`
//!   pid marker, both allowed on a read-only descriptor) and in the SysV attach count.
//! - **Joining.** It takes the read lock (waiting out an initialiser or a detacher holding the
//!   write lock, as a losing attacher does) and reads the header. It joins only a generation
//!   that is provably live: a persistent segment; a SysV generation whose memory it can attach
//!   with the announced token (a marked segment exists only while attached, and the name
//!   file's header is complete only after the creator marked it); a transient file-storage
//!   segment only if some other description held a lock when it first looked (before its own
//!   lock, which would otherwise answer for itself). That last rule gives a read-only joiner
//!   exactly the read-write joiner's guarantee: both join a generation that had a holder when
//!   they found the name held. An unfinished header under its read lock means its initialiser
//!   died. Anything not provably live is [`Error::NotFound`]: only a writer may start a new
//!   generation, and a dead one is for the next writer or `gc` to replace.
//! - **It never writes.** Writes through the API are refused before they touch the memory
//!   (`Segment::write`, `Value::set`, `Map::set`...: [`Error::PermissionDenied`] naming the
//!   segment); the readers of a value or map skip the hold-off request and their waiters the
//!   `sleepers` flags (`value.rs`, `map.rs`), the words readers and waiters otherwise write.
//! - **Fork.** `fork.rs` opens the child's spare description with the handle's access mode.
//!
//! # Trust
//!
//! A name file owned by another user is opened at all only when the caller asked for a mode
//! that shares with group or others (so a planted file cannot capture the data of a program
//! that asked for the owner-only default), and is never unlinked by this process. Its header is
//! validated like any other; a new generation in it is created by whoever finds the old one
//! dead, and its SysV memory takes the name file's owner, group and mode.

use std::mem::ManuallyDrop;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rustix::fs::{self as rfs, FileType, Mode, OFlags};
use rustix::io::Errno;

use super::fork::Unregistered;
use super::sys::{self, LockKind, Mapping, Prot};
use crate::error::{Error, Result};
use crate::header::{
    self, Header, Kind, Lifetime, Parsed, RawHeader, Storage, WakePolicy, HEADER_LEN,
};
use crate::name;
use crate::platform::shared::Shared;

/// How many times attach retries after finding a dead generation or a dead initialiser.
const MAX_ATTEMPTS: usize = 100;

/// The largest segment we create: 1 TiB, far above any memory here, small enough for `usize`.
pub const MAX_SEGMENT_SIZE: u64 = 1 << 40;

/// `TMPFS_MAGIC` and `HUGETLBFS_MAGIC` from `<linux/magic.h>`.
const TMPFS_MAGIC: i64 = 0x0102_1994;
const HUGETLBFS_MAGIC: i64 = 0x9584_58f6;

/// How a handle may use a segment: read and write (the default), or only read.
///
/// A read-only handle opens the name file `O_RDONLY`, attaches SysV memory with `SHM_RDONLY`
/// and maps file storage `PROT_READ`, so it needs only read permission: a user who may read
/// another user's 0644 segment can [`get`](crate::Value::get) it (or a map's keys,
/// [`crate::Map::get`]) and wait on it. It never writes the segment: writes
/// ([`Segment::write`], `Value::set`, `set_with`, `sole_writer`, `Map::set`, `delete`) fail
/// with [`Error::PermissionDenied`] naming the segment, never a fault. It never creates
/// (opening is [`Builder::open_existing`]'s, whatever method is called) and holds the segment
/// like any other handle (a read lock on the name file), so the segment lives while it is
/// attached. As for read-write handles, another user's segment is opened only with a mode
/// that shares with group or others ([`Builder::mode`]; nothing is created with it), so a
/// program cannot be fed a planted segment in place of its own without asking for sharing.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub enum Access {
    /// Read and write; may create.
    #[default]
    ReadWrite,
    /// Read only; never creates, never writes.
    ReadOnly,
}

/// What to do when the name does or does not exist.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum OpenMode {
    OpenOrCreate,
    CreateNew,
    OpenExisting,
}

impl OpenMode {
    /// `open` of a value or map: create it if missing, or only open a live one.
    fn open(create: bool) -> OpenMode {
        if create {
            OpenMode::OpenOrCreate
        } else {
            OpenMode::OpenExisting
        }
    }
}

/// Options for opening a segment; start with [`Segment::builder`].
#[derive(Clone, Debug)]
pub struct Builder {
    name: String,
    dir: PathBuf,
    data_len: u64,
    lifetime: Lifetime,
    mode: u32,
    access: Access,
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
            access: Access::ReadWrite,
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

    /// Read-write (the default) or read-only access ([`Access`]). A read-only handle needs
    /// only read permission on the segment, never creates it and never writes it.
    pub fn access(mut self, access: Access) -> Builder {
        self.access = access;
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
    /// [`Segment::created`] tells whether this call created and zero-filled it. A read-only
    /// builder ([`Access::ReadOnly`]) only opens a live segment, as [`Builder::open_existing`].
    ///
    /// # Errors
    /// - [`Error::InvalidName`] for a bad name; [`Error::InvalidSize`] for a size too large,
    ///   or an existing segment smaller than [`Builder::size`];
    /// - [`Error::PermissionDenied`] when the mode or owner of the name file (or of its SysV
    ///   memory) refuses this process, naming both, or for another user's file without a
    ///   sharing [`Builder::mode`];
    /// - [`Error::Foreign`] for a file under the name that is not a segment of ours (never
    ///   touched); [`Error::Incompatible`] for another layout version or kind;
    ///   [`Error::Corrupt`] for a damaged header;
    /// - [`Error::Timeout`] when a process holds the exclusive lock past
    ///   [`Builder::attach_timeout`]; [`Error::AttachRetries`] when generations keep vanishing;
    /// - [`Error::Io`] for any other failed system call, naming it.
    /// - [`Error::NoSpace`] when the memory, the SysV limits or the directory are short,
    ///   saying which; [`Error::InvalidSize`] for a size of 0 when nothing exists;
    ///   [`Error::NotFound`] on a read-only builder when no live segment has the name.
    pub fn open(&self) -> Result<Segment> {
        self.open_kind(Kind::Raw, OpenMode::OpenOrCreate)
    }

    /// Creates the segment; fails with [`Error::Exists`] if a live one has the name.
    /// A transient segment that nobody holds any more (its users crashed) does not count.
    ///
    /// # Errors
    /// [`Error::Exists`]; [`Error::PermissionDenied`] on a read-only builder; otherwise as
    /// [`Builder::open`].
    pub fn create_new(&self) -> Result<Segment> {
        self.open_kind(Kind::Raw, OpenMode::CreateNew)
    }

    /// Opens a live segment; fails with [`Error::NotFound`] if there is none.
    ///
    /// # Errors
    /// [`Error::NotFound`] when no live segment has the name (a stale name of a transient
    /// segment whose users all left counts as none); otherwise as [`Builder::open`], less
    /// the errors of creating.
    pub fn open_existing(&self) -> Result<Segment> {
        self.open_kind(Kind::Raw, OpenMode::OpenExisting)
    }

    pub(crate) fn with_data_len(mut self, data_len: u64) -> Builder {
        self.data_len = data_len;
        self.check_size = false;
        self
    }

    pub(crate) fn open_value(&self, create: bool) -> Result<Segment> {
        self.open_kind(Kind::Value, OpenMode::open(create))
    }

    pub(crate) fn create_value(&self) -> Result<Segment> {
        self.open_kind(Kind::Value, OpenMode::CreateNew)
    }

    pub(crate) fn open_map(&self, create: bool) -> Result<Segment> {
        self.open_kind(Kind::Map, OpenMode::open(create))
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
        let mode = match (self.access, mode) {
            (Access::ReadOnly, OpenMode::CreateNew) => {
                return Err(Error::PermissionDenied {
                    name: self.name.clone(),
                    reason: "a read-only handle (Access::ReadOnly) cannot create a segment".into(),
                })
            }
            // A read-only handle cannot initialise anything: it only opens a live segment.
            (Access::ReadOnly, _) => OpenMode::OpenExisting,
            (Access::ReadWrite, m) => m,
        };
        let total = self.total_size(mode)?;
        let path = self.path();
        let mut why = "";
        let mut pause = Duration::from_micros(50);
        for attempt in 0..MAX_ATTEMPTS {
            match self.attach_once(&path, kind, mode, total)? {
                Attempt::Attached(seg) => return Ok(seg),
                Attempt::Retry(reason) => why = reason,
            }
            // A vanishing generation is normally gone at the next attempt; one that keeps
            // vanishing (a child being spawned holds a copy of the lock until its `exec`) is
            // given a little time.
            if attempt >= 8 {
                std::thread::sleep(pause);
                pause = (pause * 2).min(Duration::from_millis(10));
            }
        }
        Err(Error::AttachRetries {
            name: self.name.clone(),
            attempts: MAX_ATTEMPTS,
            reason: why,
        })
    }

    /// The total size to create with (header included), or 0 when only opening.
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

    /// One attempt of the attach protocol.
    fn attach_once(&self, path: &Path, kind: Kind, mode: OpenMode, total: u64) -> Result<Attempt> {
        let rw = match self.access {
            Access::ReadWrite => OFlags::RDWR,
            Access::ReadOnly => OFlags::RDONLY,
        };
        let base = rw | OFlags::NOFOLLOW | OFlags::NONBLOCK | OFlags::CLOEXEC;
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
            Err(Errno::NOSPC) | Err(Errno::DQUOT) => {
                return Err(Error::NoSpace {
                    name: self.name.clone(),
                    dir: self.dir.clone(),
                    size: total,
                    reason: format!(
                        "{} has no inode or directory entry left for the name file",
                        self.dir.display()
                    ),
                })
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

        let claim = if self.access == Access::ReadOnly {
            self.claim_read_only(&fd)?
        } else if sys::ofd_lock(fd.as_fd(), LockKind::Exclusive)
            .map_err(|e| self.err("fcntl(F_OFD_SETLK)", e))?
        {
            self.claim_alone(&fd, kind, mode, total, trusted)?
        } else {
            self.wait_shared_lock(&fd)?;
            self.join(&fd)?
        };
        let (map, header, created) = match claim {
            Claim::Created(map, h) => (map, h, true),
            Claim::Joined(map, h) => (map, h, false),
            Claim::Retry(why) => return Ok(Attempt::Retry(why)),
        };
        // Only tells tools our pid (see the module docs); the protocol never depends on it, so
        // a failure (someone holding an exclusive flock) is not an error.
        let _ = rfs::flock(&*fd, rfs::FlockOperation::NonBlockingLockShared);
        let fd = fd.into_inner();
        let path: Arc<Path> = Arc::from(path);
        let shmid = (header.storage == Storage::SysV).then_some(header.shmid);
        let unlinks = header.lifetime == Lifetime::Transient && trusted;
        super::fork::register(
            fd.as_raw_fd(),
            st.st_dev,
            st.st_ino,
            super::fork::AtExit {
                path: unlinks.then(|| path.clone()),
                shmid,
            },
        );
        let seg = Segment {
            name: self.name.clone(),
            dir: self.dir.clone(),
            path,
            dev: st.st_dev,
            ino: st.st_ino,
            created,
            header,
            trusted,
            map: ManuallyDrop::new(map),
            fd: Some(fd),
            access: self.access,
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
            return Err(Error::wrong_kind(&self.name, seg.header.kind, kind));
        }
        if self.check_size && !created && (seg.data_len() as u64) < self.data_len {
            return Err(Error::InvalidSize {
                name: self.name.clone(),
                reason: format!(
                    "the existing segment has {} data bytes, less than the {} asked for",
                    seg.data_len(),
                    self.data_len
                ),
            });
        }
        Ok(Attempt::Attached(seg))
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

    /// Reads and checks the name file's header (`fd` holds a lock, so nobody writes it now).
    fn read_header(&self, fd: &OwnedFd) -> Result<(Option<Parsed>, rfs::Stat)> {
        let st = rfs::fstat(fd).map_err(|e| self.err("fstat", e))?;
        if st.st_nlink == 0 {
            return Ok((None, st)); // unlinked by a detacher after our `open`
        }
        let file_len = st.st_size as u64;
        let mut head = [0u8; HEADER_LEN];
        let n = pread_full(fd, &mut head).map_err(|e| self.err("pread", e))?;
        let parsed = header::parse(&self.name, &head[..n], file_len)?;
        Ok((Some(parsed), st))
    }

    /// We hold the read lock: join the generation the name file announces.
    fn join(&self, fd: &OwnedFd) -> Result<Claim> {
        let (parsed, st) = self.read_header(fd)?;
        match parsed {
            None => Ok(Claim::Retry("the name file was removed while attaching")),
            Some(Parsed::Unfinished) => Ok(Claim::Retry("its initialiser died")),
            Some(Parsed::Ready(h)) => match self.map_generation(fd, &h, &st)? {
                Some(map) => Ok(Claim::Joined(map, h)),
                None => Ok(Claim::Retry(
                    "the generation the name file announces is gone (all its users left)",
                )),
            },
        }
    }

    /// A read-only attach (see "Read-only handles" in the module documentation): take the read
    /// lock and join the generation the name file announces if it is provably live; a dead
    /// one is [`Error::NotFound`], since only a writer can start a new generation.
    fn claim_read_only(&self, fd: &OwnedFd) -> Result<Claim> {
        let not_found = || Error::NotFound {
            name: self.name.clone(),
            dir: self.dir.clone(),
        };
        // Whether anyone held the name before our own read lock made that question moot.
        let held_before =
            sys::ofd_locked(fd.as_fd()).map_err(|e| self.err("fcntl(F_OFD_GETLK)", e))?;
        self.wait_shared_lock(fd)?;
        let (parsed, st) = self.read_header(fd)?;
        let h = match parsed {
            None => return Ok(Claim::Retry("the name file was removed while attaching")),
            // Nobody can be initialising while we hold the read lock: the initialiser died.
            Some(Parsed::Unfinished) => return Err(not_found()),
            Some(Parsed::Ready(h)) => h,
        };
        let live = match (h.lifetime, h.storage) {
            (Lifetime::Persistent, _) => true,
            // Attaching proves it: a marked SysV segment exists only while attached.
            (Lifetime::Transient, Storage::SysV) => true,
            // The file outlives its users: live only if somebody held the name.
            (Lifetime::Transient, Storage::File) => held_before,
        };
        if !live {
            return Err(not_found());
        }
        match self.map_generation(fd, &h, &st)? {
            Some(map) => Ok(Claim::Joined(map, h)),
            None => Err(not_found()),
        }
    }

    /// The mapping protection this builder's access needs.
    fn prot(&self) -> Prot {
        match self.access {
            Access::ReadWrite => Prot::ReadWrite,
            Access::ReadOnly => Prot::ReadOnly,
        }
    }

    /// Maps the memory of generation `h`: the file itself, or SysV segment `h.shmid` after
    /// checking that it is still the one `h` describes. `None`: that generation is gone.
    fn map_generation(&self, fd: &OwnedFd, h: &Header, st: &rfs::Stat) -> Result<Option<Mapping>> {
        let len = usize::try_from(h.size).map_err(|_| Error::Corrupt {
            name: self.name.clone(),
            reason: format!("size {} does not fit this address space", h.size),
        })?;
        match h.storage {
            Storage::File => {
                // `parse` checked `size == st_size`, and nobody resizes while we hold a lock.
                debug_assert_eq!(h.size, st.st_size as u64);
                map_file(fd, len, self.prot())
                    .map(Some)
                    .map_err(|e| self.err("mmap", e))
            }
            Storage::SysV => {
                let gone = |e: Errno| matches!(e, Errno::INVAL | Errno::IDRM);
                let stat = match sys::shm_stat(h.shmid) {
                    Ok(s) => s,
                    Err(e) if gone(e) => return Ok(None),
                    Err(Errno::ACCESS | Errno::PERM) => return Err(self.memory_denied(h)),
                    Err(e) => return Err(self.err("shmctl(IPC_STAT)", e)),
                };
                if stat.size < h.size {
                    return Ok(None); // the id now names a smaller, unrelated segment
                }
                let map = match Mapping::attach_shm(h.shmid, len, self.prot()) {
                    Ok(m) => m,
                    Err(e) if gone(e) => return Ok(None),
                    Err(Errno::ACCESS | Errno::PERM) => return Err(self.memory_denied(h)),
                    Err(e) => return Err(self.err("shmat", e)),
                };
                let mut inside = [0u8; HEADER_LEN];
                map.copy_out(&mut inside); // the mapping has `h.size >= HEADER_LEN` bytes
                Ok(header::same_generation(&inside, h).then_some(map))
            }
        }
    }

    /// We hold the write lock: nobody else holds a lock on the name. Decide between joining a
    /// generation that is still in use (a SysV segment with attachments), keeping a persistent
    /// segment, and starting a new generation; then convert to the read lock.
    fn claim_alone(
        &self,
        fd: &OwnedFd,
        kind: Kind,
        mode: OpenMode,
        total: u64,
        trusted: bool,
    ) -> Result<Claim> {
        let (parsed, st) = self.read_header(fd)?;
        let Some(parsed) = parsed else {
            return Ok(Claim::Retry("the name file was removed while attaching"));
        };
        let claim = match parsed {
            Parsed::Ready(h) if h.lifetime == Lifetime::Persistent => {
                if mode == OpenMode::CreateNew {
                    return Err(Error::Exists {
                        name: self.name.clone(),
                        dir: self.dir.clone(),
                    });
                }
                match self.map_generation(fd, &h, &st)? {
                    Some(map) => Claim::Joined(map, h),
                    // `parse` allows persistent segments only in file storage, which maps.
                    None => return Ok(Claim::Retry("the persistent segment could not be mapped")),
                }
            }
            Parsed::Ready(h) if h.storage == Storage::SysV => {
                // Nobody holds a lock, but a process that shares a description without our
                // fork handlers may still have the memory attached: then it is alive.
                match self.map_generation(fd, &h, &st)? {
                    Some(map) if sys::shm_stat(h.shmid).is_ok_and(|s| s.nattch >= 2) => {
                        Claim::Joined(map, h)
                    }
                    _ => return self.new_generation(fd, kind, mode, total, trusted),
                }
            }
            // A transient file-storage segment nobody holds, or an unfinished one.
            Parsed::Ready(_) | Parsed::Unfinished => {
                return self.new_generation(fd, kind, mode, total, trusted)
            }
        };
        self.downgrade(fd)?;
        Ok(claim)
    }

    fn downgrade(&self, fd: &OwnedFd) -> Result<()> {
        sys::ofd_lock(fd.as_fd(), LockKind::Shared)
            .map_err(|e| self.err("fcntl(F_OFD_SETLK)", e))?;
        Ok(())
    }

    /// Whatever the name file held is dead (or it is new): start a generation, if asked to.
    fn new_generation(
        &self,
        fd: &OwnedFd,
        kind: Kind,
        mode: OpenMode,
        total: u64,
        trusted: bool,
    ) -> Result<Claim> {
        if mode == OpenMode::OpenExisting || self.data_len == 0 {
            if trusted {
                unlink_if_ours(fd, &self.path());
            }
            if mode == OpenMode::OpenExisting {
                return Err(Error::NotFound {
                    name: self.name.clone(),
                    dir: self.dir.clone(),
                });
            }
            return Err(Error::InvalidSize {
                name: self.name.clone(),
                reason: "the segment does not exist and a size of 0 bytes cannot be created".into(),
            });
        }
        let created = self.initialise(fd, kind, total, trusted);
        if created.is_err() && trusted {
            unlink_if_ours(fd, &self.path());
        }
        let (map, h) = created?;
        self.downgrade(fd)?;
        Ok(Claim::Created(map, h))
    }

    /// Makes a new generation: a zero-filled memory of `total` bytes (rounded up to the huge
    /// page on hugetlbfs) and the name file's header announcing it, magic last.
    fn initialise(
        &self,
        fd: &OwnedFd,
        kind: Kind,
        total: u64,
        trusted: bool,
    ) -> Result<(Mapping, Header)> {
        let fs = match rfs::fstatfs(fd) {
            // `f_type` is i64 here but another integer type on other architectures.
            #[allow(clippy::unnecessary_cast)]
            Ok(s) if s.f_type as i64 == TMPFS_MAGIC => Fs::Tmpfs,
            #[allow(clippy::unnecessary_cast)]
            Ok(s) if s.f_type as i64 == HUGETLBFS_MAGIC => Fs::Hugetlbfs(s.f_bsize as u64),
            Ok(_) => {
                return Err(Error::Io {
                    name: self.name.clone(),
                    op: "open",
                    source: std::io::Error::other(format!(
                        "{} is not a tmpfs or hugetlbfs mount",
                        self.dir.display()
                    )),
                })
            }
            Err(e) => return Err(self.err("fstatfs", e)),
        };
        if trusted {
            rfs::fchmod(fd, Mode::from_raw_mode(self.mode)).map_err(|e| self.err("fchmod", e))?;
        }
        // Who may open the name file decides how a value's or map's writers wake (header.rs,
        // `WakePolicy`); only values and maps have read-only waiters, so a raw segment (no
        // waits) never pays for it.
        let file = rfs::fstat(fd).map_err(|e| self.err("fstat", e))?;
        let wake = match kind {
            Kind::Value | Kind::Map => WakePolicy::for_mode(file.st_mode & 0o777),
            _ => WakePolicy::Announced,
        };
        match fs {
            Fs::Tmpfs if self.lifetime == Lifetime::Transient => {
                self.initialise_sysv(fd, kind, total, wake)
            }
            _ => self.initialise_file(fd, kind, total, fs, wake),
        }
    }

    /// SysV storage: `shmget` → `shmat` → header inside → `IPC_RMID` → reserve the pages →
    /// the name file's header, magic last.
    fn initialise_sysv(
        &self,
        fd: &OwnedFd,
        kind: Kind,
        total: u64,
        wake: WakePolicy,
    ) -> Result<(Mapping, Header)> {
        let len = total as usize; // total <= MAX_SEGMENT_SIZE, which fits usize
        let no_space = |e: Errno, op: &str| {
            let limit = match e {
                Errno::NOSPC => {
                    "the system-wide number of SysV segments (kernel.shmmni) or \
                                 their total pages (kernel.shmall) is reached"
                }
                Errno::INVAL => "it is larger than the largest SysV segment (kernel.shmmax)",
                _ => "memory is short (the machine's, or the memory cgroup's)",
            };
            Error::NoSpace {
                name: self.name.clone(),
                dir: self.dir.clone(),
                size: total,
                reason: format!(
                    "{op}: {}: {limit}; transient segments are SysV shared memory, limited by \
                     memory, kernel.shmmax/shmall/shmmni and the memory cgroup, not by the size \
                     of {}",
                    std::io::Error::from(e),
                    self.dir.display()
                ),
            }
        };
        let file = rfs::fstat(fd).map_err(|e| self.err("fstat", e))?;
        let shmid = match sys::shm_create(len, self.mode) {
            Ok(id) => id,
            Err(e @ (Errno::NOSPC | Errno::NOMEM | Errno::INVAL)) => {
                return Err(no_space(e, "shmget"))
            }
            Err(e) => return Err(self.err("shmget", e)),
        };
        // Until `IPC_RMID` below the segment would outlive a crash: keep that window small.
        let attached = Mapping::attach_shm(shmid, len, Prot::ReadWrite);
        let map = match attached {
            Ok(map) => map,
            Err(e) => {
                let _ = sys::shm_mark_removed(shmid);
                return Err(self.err("shmat", e));
            }
        };
        let h = Header::new(kind, Lifetime::Transient, total, Storage::SysV, shmid).with_wake(wake);
        let raw = Shared::of(&map).line::<RawHeader>(0);
        raw.expect("the segment holds its header").init(&h);
        let marked = sys::shm_mark_removed(shmid);
        // Exactly the users who may open the name file may attach the memory (the segment
        // belongs to whoever created this generation, which may not own the name file).
        let owner = sys::shm_set_owner(shmid, file.st_uid, file.st_gid, file.st_mode & 0o777);
        if let Err(e) = marked {
            return Err(self.err("shmctl(IPC_RMID)", e)); // dropping `map` detaches it
        }
        if let Err(e) = owner {
            return Err(self.err("shmctl(IPC_SET)", e));
        }
        if let Err(e) = map.populate() {
            return Err(match e {
                Errno::NOMEM | Errno::NOSPC | Errno::FAULT => no_space(e, "reserving the pages"),
                e => self.err("madvise(MADV_POPULATE_WRITE)", e),
            });
        }
        self.write_name_header(fd, &h)?;
        Ok((map, h))
    }

    /// The name file of a SysV generation: emptied, then the header without its magic, then
    /// the magic, so a crash at any point leaves an empty or an unfinished header.
    fn write_name_header(&self, fd: &OwnedFd, h: &Header) -> Result<()> {
        let bytes = h.encode();
        rfs::ftruncate(fd, 0).map_err(|e| self.err("ftruncate", e))?;
        pwrite_full(fd, &bytes[8..], 8).map_err(|e| self.err("pwrite", e))?;
        pwrite_full(fd, &bytes[..8], 0).map_err(|e| self.err("pwrite", e))?;
        Ok(())
    }

    /// File storage: the name file holds the memory. Truncated, the header without its magic
    /// (tmpfs), the pages reserved, then the header through the mapping with the magic last.
    fn initialise_file(
        &self,
        fd: &OwnedFd,
        kind: Kind,
        total: u64,
        fs: Fs,
        wake: WakePolicy,
    ) -> Result<(Mapping, Header)> {
        let size = match fs {
            Fs::Hugetlbfs(page) if page > 0 => total
                .checked_next_multiple_of(page)
                .filter(|&s| s <= MAX_SEGMENT_SIZE)
                .ok_or_else(|| Error::InvalidSize {
                    name: self.name.clone(),
                    reason: format!(
                        "{total} bytes rounded up to the huge page size ({page} bytes) is more \
                         than the largest segment"
                    ),
                })?,
            _ => total,
        };
        let h = Header::new(kind, self.lifetime, size, Storage::File, 0).with_wake(wake);
        let no_space = |e: Errno| Error::NoSpace {
            name: self.name.clone(),
            dir: self.dir.clone(),
            size,
            reason: match fs {
                Fs::Hugetlbfs(page) => format!(
                    "fallocate: {}; huge pages of {page} bytes must be free in the pool \
                     (vm.nr_hugepages) and within the mount's size",
                    std::io::Error::from(e)
                ),
                Fs::Tmpfs => format!(
                    "fallocate: {}; the tmpfs mount {} is full",
                    std::io::Error::from(e),
                    self.dir.display()
                ),
            },
        };
        rfs::ftruncate(fd, 0).map_err(|e| self.err("ftruncate", e))?;
        if fs == Fs::Tmpfs {
            pwrite_full(fd, &h.encode()[8..], 8).map_err(|e| self.err("pwrite", e))?;
        }
        let reserved = loop {
            match rfs::fallocate(fd, rfs::FallocateFlags::empty(), 0, size) {
                Err(Errno::INTR) => continue, // a signal arrived while reserving pages
                r => break r,
            }
        };
        match reserved {
            Ok(()) => {}
            Err(e @ (Errno::NOSPC | Errno::NOMEM | Errno::FBIG)) => return Err(no_space(e)),
            Err(e) => return Err(self.err("fallocate", e)),
        }
        let st = rfs::fstat(fd).map_err(|e| self.err("fstat", e))?;
        if st.st_size as u64 != size {
            return Err(Error::Io {
                name: self.name.clone(),
                op: "fallocate",
                source: std::io::Error::other(format!(
                    "the file has {} bytes after reserving {size}",
                    st.st_size
                )),
            });
        }
        let map = map_file(fd, size as usize, Prot::ReadWrite).map_err(|e| self.err("mmap", e))?;
        let raw = Shared::of(&map).line::<RawHeader>(0);
        raw.expect("the file holds its header").init(&h);
        Ok((map, h))
    }

    /// The name file let us in but the generation's SysV memory does not.
    fn memory_denied(&self, h: &Header) -> Error {
        Error::PermissionDenied {
            name: self.name.clone(),
            reason: format!(
                "its memory (SysV segment {}) refuses this process: the segment took the name \
                 file's owner, group and mode when it was created, so a later chown or chmod \
                 of the name file applies only to the next generation",
                h.shmid
            ),
        }
    }

    fn foreign(&self, reason: String) -> Error {
        Error::Foreign {
            name: self.name.clone(),
            reason,
        }
    }

    fn permission(&self, path: &Path) -> Error {
        let reason = match rfs::lstat(path) {
            Ok(st) => {
                let (how, hint) = match self.access {
                    Access::ReadWrite => {
                        let ro = OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::NONBLOCK;
                        let readable = rfs::open(path, ro | OFlags::CLOEXEC, Mode::empty()).is_ok();
                        let hint = if readable {
                            "; this user may open it read-only"
                        } else {
                            ""
                        };
                        ("O_RDWR", hint)
                    }
                    Access::ReadOnly => ("O_RDONLY", ""),
                };
                format!(
                    "open({how}) refused: mode {:o}, owner uid {}, this process uid {}{hint}",
                    st.st_mode & 0o7777,
                    st.st_uid,
                    rustix::process::geteuid().as_raw()
                )
            }
            Err(_) => format!("cannot create files in {}", self.dir.display()),
        };
        Error::PermissionDenied {
            name: self.name.clone(),
            reason,
        }
    }
}

/// The filesystem of the directory.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Fs {
    Tmpfs,
    /// With its page size.
    Hugetlbfs(u64),
}

/// The outcome of one attach attempt.
enum Attempt {
    Attached(Segment),
    /// The generation went away under us: start again (the reason is kept for the error).
    Retry(&'static str),
}

/// What a process holding a lock on the name file decided.
enum Claim {
    /// It started a new, zero-filled generation.
    Created(Mapping, Header),
    /// It joined the live (or persistent) generation.
    Joined(Mapping, Header),
    /// That generation is gone: start again.
    Retry(&'static str),
}

/// Maps the file of `fd` through a description of its own (`/proc/self/fd/N`), which holds no
/// lock: a mapping keeps its description alive, and a forked child inherits our mappings, so
/// mapping the locked description would let a child keep our attach lock (and our pid marker)
/// after we detached or died. Without `/proc`, maps `fd` itself.
fn map_file(fd: &OwnedFd, len: usize, prot: Prot) -> Result<Mapping, Errno> {
    let rw = match prot {
        Prot::ReadWrite => OFlags::RDWR,
        Prot::ReadOnly => OFlags::RDONLY,
    };
    let flags = rw | OFlags::CLOEXEC | OFlags::NONBLOCK;
    let path = format!("/proc/self/fd/{}", fd.as_raw_fd());
    if let Ok(other) = rfs::open(path.as_str(), flags, Mode::empty()) {
        let same = |a: rfs::Stat, b: rfs::Stat| (a.st_dev, a.st_ino) == (b.st_dev, b.st_ino);
        if let (Ok(a), Ok(b)) = (rfs::fstat(&other), rfs::fstat(fd)) {
            if same(a, b) {
                return Mapping::map(other.as_fd(), len, prot);
            }
        }
    }
    Mapping::map(fd.as_fd(), len, prot)
}

/// `pread` until `buf` is full or the file ends; returns the bytes read.
fn pread_full(fd: &OwnedFd, buf: &mut [u8]) -> Result<usize, Errno> {
    let mut n = 0;
    while n < buf.len() {
        match rustix::io::pread(fd, &mut buf[n..], n as u64) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(Errno::INTR) => continue,
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

fn pwrite_full(fd: &OwnedFd, mut buf: &[u8], mut at: u64) -> Result<(), Errno> {
    while !buf.is_empty() {
        match rustix::io::pwrite(fd, buf, at) {
            Ok(0) => return Err(Errno::NOSPC),
            Ok(k) => {
                buf = &buf[k..];
                at += k as u64;
            }
            Err(Errno::INTR) => continue,
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// A descriptor being attached. If the attach fails or retries, whatever lock it holds is
/// released explicitly before it closes: a child forked meanwhile by another thread has a copy
/// of the descriptor (and no spare, since it is not registered yet), which must not keep the
/// lock alive; that child has no handle for it, so releasing its copy takes nothing from it.
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

/// The last-detacher step (see the module documentation): if `path` still names inode
/// `dev`/`ino` and nobody holds a lock on it, and the generation its header announces has no
/// attachment besides `mine` of ours (SysV `shmid`), unlink it.
fn release_name(path: &Path, dev: u64, ino: u64, shmid: Option<i32>, mine: u64) {
    let flags = OFlags::RDWR | OFlags::NOFOLLOW | OFlags::NONBLOCK | OFlags::CLOEXEC;
    let Ok(fd) = rfs::open(path, flags, Mode::empty()) else {
        return; // already unlinked, or not ours to open any more
    };
    let Ok(st) = rfs::fstat(&fd) else { return };
    if st.st_dev != dev || st.st_ino != ino {
        return; // the name now belongs to another file
    }
    if !matches!(sys::ofd_lock(fd.as_fd(), LockKind::Exclusive), Ok(true)) {
        return; // somebody is attached (or attaching)
    }
    // Nobody holds a lock. Under ours, nobody can start a generation or unlink: look at the
    // generation the name announces now (a newer one may have been made in this same file).
    let mut head = [0u8; HEADER_LEN];
    let Ok(n) = pread_full(&fd, &mut head) else {
        return;
    };
    match header::parse("", &head[..n], st.st_size as u64) {
        Ok(Parsed::Ready(h)) if h.storage == Storage::SysV => {
            let ours = if Some(h.shmid) == shmid { mine } else { 0 };
            if sys::shm_stat(h.shmid).is_ok_and(|s| s.nattch > ours) {
                // Attached by a process that holds no lock of its own (it shares a description
                // without our fork handlers, and one of them let go): still in use.
                return;
            }
        }
        Ok(_) => {}
        Err(_) => return, // not a header of ours any more: not ours to remove
    }
    unlink_if_ours(&fd, path);
}

/// The exit handler's step for one handle (`fork.rs`): its lock is released; the process keeps
/// `mine` attachments of SysV segment `shmid` until it is gone.
pub(crate) fn release_at_exit(path: &Path, dev: u64, ino: u64, shmid: Option<i32>, mine: u64) {
    release_name(path, dev, ino, shmid, mine);
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
    path: Arc<Path>,
    /// Device and inode of the name file.
    dev: u64,
    ino: u64,
    created: bool,
    header: Header,
    /// The name file is owned by this user (only then may we unlink it).
    trusted: bool,
    /// The memory: `mmap` of the file or `shmat` of the SysV segment. Let go of first in
    /// `drop`: an attachment must never outlive our lock (a detacher that wins the write lock
    /// counts attachments).
    map: ManuallyDrop<Mapping>,
    /// The name file, holding the attach lock. `Some` until drop; taken there so it is closed
    /// before the last-detacher check.
    fd: Option<OwnedFd>,
    /// Read-write, or read-only (the mapping is then `PROT_READ`/`SHM_RDONLY`).
    access: Access,
}

impl Segment {
    /// Starts the options for segment `name`.
    pub fn builder(name: &str) -> Builder {
        Builder::new(name)
    }

    /// Opens or creates transient segment `name` in `/dev/shm` with `size` data bytes.
    ///
    /// # Errors
    /// As [`Builder::open`].
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

    /// The name file.
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

    /// Where its memory lives: a SysV segment (transient segments on tmpfs) or the file.
    pub fn storage(&self) -> Storage {
        self.header.storage
    }

    /// The name file's device and inode numbers. With SysV storage one name file may announce
    /// several generations over time; [`Header::token`] tells them apart.
    pub fn file_id(&self) -> (u64, u64) {
        (self.dev, self.ino)
    }

    /// The header as validated when this handle attached.
    pub fn header(&self) -> &Header {
        &self.header
    }

    /// Whether this handle may write ([`Access::ReadWrite`]) or only read.
    pub fn access(&self) -> Access {
        self.access
    }

    /// Whether this handle is read-only (the protocols above it then never write).
    pub(crate) fn read_only(&self) -> bool {
        self.access == Access::ReadOnly
    }

    /// `Ok` on a read-write handle; on a read-only one, the [`Error::PermissionDenied`] that
    /// `op` (a write) gets, naming the segment.
    pub(crate) fn writable(&self, op: &str) -> Result<()> {
        match self.access {
            Access::ReadWrite => Ok(()),
            Access::ReadOnly => Err(Error::PermissionDenied {
                name: self.name.clone(),
                reason: format!(
                    "{op} needs write access, and this handle opened it read-only \
                     (Access::ReadOnly)"
                ),
            }),
        }
    }

    /// Whether the name still leads to this handle's generation. `false` once it was removed
    /// (`shmem rm --force`) or replaced by a newer generation: this handle then holds an
    /// orphan that no new opener will see.
    pub fn is_current(&self) -> bool {
        let flags = OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::NONBLOCK | OFlags::CLOEXEC;
        let Ok(fd) = rfs::open(&*self.path, flags, Mode::empty()) else {
            return false;
        };
        let Ok(st) = rfs::fstat(&fd) else {
            return false;
        };
        if (st.st_dev, st.st_ino) != (self.dev, self.ino) || st.st_nlink == 0 {
            return false;
        }
        let mut head = [0u8; HEADER_LEN];
        let Ok(n) = pread_full(&fd, &mut head) else {
            return false;
        };
        matches!(header::parse(&self.name, &head[..n], st.st_size as u64),
            Ok(Parsed::Ready(h)) if h.token == self.header.token)
    }

    /// The number of data bytes (the segment's size less the 64-byte header).
    pub fn data_len(&self) -> usize {
        self.map.len() - HEADER_LEN
    }

    /// The first data byte. Other processes may write any byte at any time: access it only
    /// with atomics or volatile operations, never through `&`/`&mut` references. On a
    /// read-only handle ([`Segment::access`]) the memory is mapped read-only: writing through
    /// this pointer faults.
    pub fn as_ptr(&self) -> *mut u8 {
        // Inside: the mapping is at least HEADER_LEN bytes long (checked when attaching).
        self.map.ptr().wrapping_add(HEADER_LEN)
    }

    /// Copies `buf.len()` data bytes starting at `offset` into `buf`. Not atomic: bytes that
    /// another process writes meanwhile may be old or new (use [`crate::Value`] for that).
    ///
    /// # Errors
    /// [`Error::InvalidSize`] for a range outside the data area.
    pub fn read(&self, offset: usize, buf: &mut [u8]) -> Result<()> {
        self.check_range(offset, buf.len())?;
        Shared::of(&self.map)
            .read(HEADER_LEN + offset, buf)
            .expect("`offset + len <= data_len`, checked above: inside the mapping");
        Ok(())
    }

    /// Copies `data` into the data area at `offset`. Not atomic for readers.
    ///
    /// # Errors
    /// [`Error::InvalidSize`] for a range outside the data area; [`Error::PermissionDenied`]
    /// on a read-only handle.
    pub fn write(&self, offset: usize, data: &[u8]) -> Result<()> {
        self.writable("write")?;
        self.check_range(offset, data.len())?;
        Shared::of(&self.map)
            .write(HEADER_LEN + offset, data)
            .expect("`offset + len <= data_len` (checked above) in a writable mapping");
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
}

impl Drop for Segment {
    fn drop(&mut self) {
        let fd = self.fd.take();
        let (how, witness) = fd.as_ref().map_or((Unregistered::Shared, None), |fd| {
            super::fork::unregister(fd.as_raw_fd())
        });
        drop(witness); // releases this handle's writer token, if it had one

        // The memory first: our attachment must be gone before our lock is (see `map`).
        // SAFETY: `map` is never used again: this is `drop`, and nothing below touches it.
        unsafe { ManuallyDrop::drop(&mut self.map) };
        if how == Unregistered::ReleasedAtExit {
            return; // the exit handler did the rest; `fd` closes here
        }
        // Let go of our lock explicitly: a child being spawned by another thread holds a copy
        // of the descriptor until its `exec`, which must not keep the name. With SysV storage
        // this is always safe, even on a description shared with a process that has no lock
        // of its own: the last-detacher step counts attachments. With file storage it is done
        // only on a description that is ours alone (fork.rs).
        if let Some(fd) = &fd {
            if self.header.storage == Storage::SysV || how == Unregistered::Own {
                let _ = sys::ofd_lock(fd.as_fd(), LockKind::Unlock);
            }
        }
        drop(fd);
        if self.header.lifetime == Lifetime::Transient && self.trusted {
            let shmid = (self.header.storage == Storage::SysV).then_some(self.header.shmid);
            release_name(&self.path, self.dev, self.ino, shmid, 0);
        }
    }
}
