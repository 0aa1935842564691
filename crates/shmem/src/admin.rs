//! Looking at segments from outside: list, inspect, remove and collect.
//!
//! Nothing here attaches to a live segment. Who holds a name is read from `/proc/locks`, read
//! whole and parsed once per call into a map keyed by device and inode (`Locks::read`, which reads it three times and merges, see there): each attached handle
//! holds an OFD read lock on its name file (counted as a handle) and a `flock` (which shows
//! the pid of the process that attached it). A name that `/proc/locks` shows unheld is checked
//! once more with `F_OFD_GETLK` on the file itself, since the kernel builds `/proc/locks` in
//! pieces and entries that come and go meanwhile can shift others out of a read. A SysV
//! generation is also looked at through `shmctl(IPC_STAT)`: attachments without a lock (a
//! process that shares a description without our fork handlers) still make it live.
//!
//! A file is ours only with our magic and a consistent header ([`crate::Header`]; magic 0
//! counts as "an initialiser died" only when the length says so). Everything else is
//! [`State::Foreign`] and is never modified or removed; a damaged header of ours is
//! [`State::Corrupt`], which only a forced [`remove`] takes away. [`list`] reports an entry it
//! cannot read (one that changes under it, say a file swapped with a symlink) as
//! [`State::Unreadable`] and goes on with the rest.
//!
//! `remove` and `collect` take the exclusive lock without blocking before they unlink, exactly
//! as the last detacher does, so they never remove a segment someone holds (unless forced).

use std::collections::{HashMap, HashSet};
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use rustix::fs::{self as rfs, FileType, Mode, OFlags};

use crate::error::{Error, Result};
use crate::header::{self, Header, Lifetime, Parsed, Storage, HEADER_LEN};
use crate::name;
use crate::platform::linux::sys::{self, LockKind, Mapping};

/// What a segment file in the directory is.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum State {
    /// At least one handle is attached (or its SysV memory is), or it is being initialised.
    Live,
    /// Nobody holds it: a transient name left by users that ended without running their exit
    /// step (its memory is already freed), or a persistent segment kept on purpose.
    Stale,
    /// Its name was removed (`rm --force`), but processes still hold the old generation
    /// (`ipcs -m` shows such SysV segments as `dest`). Found only for holders whose
    /// descriptors this process may read in `/proc`.
    Removed,
    /// A header of ours that is damaged (the reason says how): an error for every command,
    /// never re-initialised or removed except by a forced removal.
    Corrupt(String),
    /// Not a shmem segment (another magic, layout or type of file); the reason says why.
    Foreign(String),
    /// It could not be read, or changed while it was being read; the reason says what failed.
    Unreadable(String),
}

impl State {
    /// `live`, `stale`, `removed`, `corrupt`, `foreign` or `unreadable`.
    pub fn as_str(&self) -> &'static str {
        match self {
            State::Live => "live",
            State::Stale => "stale",
            State::Removed => "removed",
            State::Corrupt(_) => "corrupt",
            State::Foreign(_) => "foreign",
            State::Unreadable(_) => "unreadable",
        }
    }

    /// The reason, for the states that have one.
    pub fn reason(&self) -> Option<&str> {
        match self {
            State::Corrupt(r) | State::Foreign(r) | State::Unreadable(r) => Some(r),
            _ => None,
        }
    }
}

/// A SysV generation's memory as `shmctl(IPC_STAT)` shows it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Memory {
    /// The SysV id.
    pub shmid: i32,
    /// Attachments in all processes.
    pub attachments: u64,
    /// Marked for removal (always, once created): freed with its last attachment.
    pub marked: bool,
}

/// Everything known about one segment without attaching to it.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct Info {
    /// The segment's name.
    pub name: String,
    /// The name file.
    pub path: PathBuf,
    /// The segment's size in bytes (header included) when the header is readable, else the
    /// name file's length.
    pub size: u64,
    /// The name file's length (64 for SysV storage).
    pub file_len: u64,
    /// The validated header; `None` when the file is not ours, damaged or unfinished.
    pub header: Option<Header>,
    /// Its SysV memory, while it exists (SysV storage only).
    pub memory: Option<Memory>,
    /// Permission bits of the file.
    pub mode: u32,
    /// Owner of the file.
    pub uid: u32,
    /// Group of the file.
    pub gid: u32,
    /// Last modification time of the file.
    pub modified: Option<SystemTime>,
    /// Number of attached handles: for SysV storage the kernel's attach count, otherwise the
    /// open file descriptions holding the attach lock.
    pub attached: usize,
    /// Pids of the processes that attached them.
    pub pids: Vec<u32>,
    /// Live, stale, removed, corrupt, foreign or unreadable.
    pub state: State,
}

impl Info {
    /// The capacity in bytes of a value (its largest value), a map (its heap for records) or a
    /// raw segment (its data bytes), derived from the size in the header as an attached handle
    /// would; `None` for foreign or unfinished segments, or a size no layout of its kind has.
    pub fn capacity(&self) -> Option<usize> {
        let h = self.header?;
        match h.kind {
            crate::Kind::Value => crate::value::capacity_for_size(h.size),
            crate::Kind::Map => crate::map::capacity_for_size(h.size),
            crate::Kind::Raw => usize::try_from(h.size.checked_sub(crate::HEADER_LEN as u64)?).ok(),
        }
    }
}

/// Inspects segment `name` in `dir`.
pub fn inspect(dir: &Path, name: &str) -> Result<Info> {
    name::validate_name(name)?;
    let locks = Locks::read();
    inspect_with(dir, name, &locks)
}

/// Lists every file with our prefix in `dir`, sorted by name, and the segments whose name was
/// removed while processes still hold them. Files with our prefix but a name we would not
/// create are reported as foreign, entries that cannot be read as unreadable; other files are
/// skipped.
pub fn list(dir: &Path) -> Result<Vec<Info>> {
    let rd = std::fs::read_dir(dir).map_err(|source| Error::Directory {
        dir: dir.to_owned(),
        source,
    })?;
    let locks = Locks::read();
    let mut out = Vec::new();
    let mut seen = HashSet::new();
    for entry in rd.flatten() {
        let file = entry.file_name();
        let Some(file) = file.to_str() else { continue };
        let Some(rest) = file.strip_prefix(name::FILE_PREFIX) else {
            continue;
        };
        let info = match name::name_of_file(file) {
            Some(n) => match inspect_with(dir, n, &locks) {
                Ok(info) => info,
                Err(Error::NotFound { .. }) => continue, // removed while we listed
                Err(e) => bare_info(dir, n, file, State::Unreadable(e.to_string())),
            },
            None => bare_info(
                dir,
                rest,
                file,
                State::Foreign("the name is not a valid segment name".into()),
            ),
        };
        if let Ok(st) = rfs::lstat(&info.path) {
            seen.insert((st.st_dev, st.st_ino));
        }
        out.push(info);
    }
    out.extend(removed_but_held(dir, &locks, &seen));
    out.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(out)
}

/// Names of the files in `dir` that are not ours (no shmem prefix), for `ls --all`.
pub fn foreign_files(dir: &Path) -> Result<Vec<String>> {
    let rd = std::fs::read_dir(dir).map_err(|source| Error::Directory {
        dir: dir.to_owned(),
        source,
    })?;
    let mut out: Vec<String> = rd
        .flatten()
        .filter_map(|e| e.file_name().into_string().ok())
        .filter(|f| !f.starts_with(name::FILE_PREFIX))
        .collect();
    out.sort();
    Ok(out)
}

/// Removes segment `name`. Fails with [`Error::Busy`] while a process is attached, and with
/// the header's error for a file that is not a sound segment of ours, unless `force`: then the
/// name goes away at once (attached processes keep their memory until they detach, as with
/// `shm_unlink`) and the next opener creates a new segment.
pub fn remove(dir: &Path, name: &str, force: bool) -> Result<()> {
    remove_if(dir, name, force, |_| true)
}

/// [`remove`], but only if `still_wanted` accepts the header (`None`: unfinished) read while
/// holding the exclusive lock; otherwise [`Error::Busy`]. `collect` decides from a listing made
/// earlier, and the name may have become a new (say persistent) segment since.
fn remove_if(
    dir: &Path,
    name: &str,
    force: bool,
    still_wanted: impl Fn(Option<Header>) -> bool,
) -> Result<()> {
    name::validate_name(name)?;
    let path = dir.join(name::file_name(name));
    let err = |op, e| Error::from_errno(name, dir, op, e);
    let st = rfs::lstat(&path).map_err(|e| err("lstat", e))?;
    if FileType::from_raw_mode(st.st_mode) != FileType::RegularFile {
        return Err(Error::Foreign {
            name: name.to_owned(),
            reason: "it is not a regular file; remove it by hand if you must".into(),
        });
    }
    let fd = rfs::open(
        &path,
        OFlags::RDWR | OFlags::NOFOLLOW | OFlags::NONBLOCK | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| err("open", e))?;
    let alone =
        sys::ofd_lock(fd.as_fd(), LockKind::Exclusive).map_err(|e| err("fcntl(F_OFD_SETLK)", e))?;
    if !alone && !force {
        let info = inspect(dir, name)?;
        return Err(Error::Busy {
            name: name.to_owned(),
            reason: format!(
                "{} handle(s) attached (pids {:?}); force the removal to take the name away anyway",
                info.attached, info.pids
            ),
        });
    }
    // As every unlinker does (segment.rs): with the inode's write lock held, check that it is
    // still linked under this name, so that a newer generation is never removed. A forced
    // removal without the lock is `shm_unlink`'s semantics: the check then narrows the race
    // with a new generation but cannot close it.
    let now = rfs::lstat(&path).map_err(|e| err("lstat", e))?;
    let st = rfs::fstat(&fd).map_err(|e| err("fstat", e))?;
    let mut head = [0u8; HEADER_LEN];
    let n = rustix::io::pread(&fd, &mut head, 0).map_err(|e| err("pread", e))?;
    let header = match header::parse(name, &head[..n], st.st_size as u64) {
        Ok(Parsed::Ready(h)) => Some(h),
        Ok(Parsed::Unfinished) => None,
        Err(_) if force => None,
        Err(e) => return Err(e),
    };
    if !force {
        if let Some(h) = header.filter(|h| h.storage == Storage::SysV) {
            if let Some(s) = sys::shm_stat(h.shmid).ok().filter(|s| s.nattch > 0) {
                return Err(Error::Busy {
                    name: name.to_owned(),
                    reason: format!(
                        "its memory has {} attachment(s) by processes that hold no lock of \
                         their own; force the removal to take the name away anyway",
                        s.nattch
                    ),
                });
            }
        }
    }
    if !still_wanted(header) {
        return Err(Error::Busy {
            name: name.to_owned(),
            reason: "it changed since it was listed".into(),
        });
    }
    if st.st_nlink == 0 || (now.st_dev, now.st_ino) != (st.st_dev, st.st_ino) {
        return Err(Error::NotFound {
            name: name.to_owned(),
            dir: dir.to_owned(),
        });
    }
    rfs::unlink(&path).map_err(|e| err("unlink", e))
}

/// What [`collect`] did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Collected {
    /// The names removed (or, with `dry_run`, that would be).
    pub removed: Vec<String>,
    /// Entries left alone because they are damaged or unreadable, with the reason.
    pub skipped: Vec<(String, String)>,
    /// SysV segments of ours whose creator died before marking them for removal, freed (or,
    /// with `dry_run`, that would be).
    pub orphans: Vec<i32>,
}

/// Removes the stale segments in `dir`: transient ones nobody holds, plus persistent ones if
/// `persistent`; and frees SysV orphans of ours (see [`Collected::orphans`]). Segments of
/// other users are skipped unless running as root. With `dry_run`, only reports.
pub fn collect(dir: &Path, persistent: bool, dry_run: bool) -> Result<Collected> {
    let me = rustix::process::geteuid();
    let mut done = Collected::default();
    for info in list(dir)? {
        if let Some(reason) = info.state.reason() {
            if !matches!(info.state, State::Foreign(_)) {
                done.skipped.push((info.name.clone(), reason.to_owned()));
            }
            continue;
        }
        if info.state != State::Stale || (info.uid != me.as_raw() && !me.is_root()) {
            continue;
        }
        let is_persistent = matches!(info.header, Some(h) if h.lifetime == Lifetime::Persistent);
        if is_persistent && !persistent {
            continue;
        }
        if dry_run {
            done.removed.push(info.name);
            continue;
        }
        let wanted = |h: Option<Header>| {
            persistent || !matches!(h, Some(h) if h.lifetime == Lifetime::Persistent)
        };
        match remove_if(dir, &info.name, false, wanted) {
            Ok(()) => done.removed.push(info.name),
            Err(Error::Busy { .. }) | Err(Error::NotFound { .. }) => {} // attached meanwhile
            Err(e) => done.skipped.push((info.name, e.to_string())),
        }
    }
    done.orphans = sysv_orphans(dry_run);
    Ok(done)
}

/// Frees SysV segments that are provably ours and dead: private key, owned by us (or any,
/// as root), not marked for removal, no attachment, and our header (magic, layout, SysV
/// storage, its own id) inside. Only a creator that died between writing that header and
/// `IPC_RMID` leaves one: until `IPC_RMID` it holds an attachment, so nattch 0 means it is
/// gone. (One that died between `shmget` and `shmat` leaves a zero-filled segment we cannot
/// tell from another program's, and which has no pages yet; it is left alone.)
fn sysv_orphans(dry_run: bool) -> Vec<i32> {
    let me = rustix::process::geteuid();
    let Ok(text) = std::fs::read_to_string("/proc/sysvipc/shm") else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for line in text.lines().skip(1) {
        let f: Vec<&str> = line.split_whitespace().collect();
        if f.len() < 10 {
            continue;
        }
        let (Ok(key), Ok(shmid), Ok(perms), Ok(size), Ok(nattch), Ok(uid)) = (
            f[0].parse::<i64>(),
            f[1].parse::<i32>(),
            u32::from_str_radix(f[2], 8),
            f[3].parse::<u64>(),
            f[6].parse::<u64>(),
            f[7].parse::<u32>(),
        ) else {
            continue;
        };
        if key != 0 || perms & 0o1000 != 0 || nattch != 0 || size < HEADER_LEN as u64 {
            continue;
        }
        if uid != me.as_raw() && !me.is_root() {
            continue;
        }
        let Ok(map) = Mapping::attach_shm(shmid, HEADER_LEN, sys::Prot::ReadWrite) else {
            continue;
        };
        let mut head = [0u8; HEADER_LEN];
        map.copy_out(&mut head); // the segment has at least HEADER_LEN bytes (checked above)
        let ours = matches!(header::parse("", &head, HEADER_LEN as u64),
            Ok(Parsed::Ready(h)) if h.storage == Storage::SysV && h.shmid == shmid);
        if ours {
            if !dry_run {
                let _ = sys::shm_mark_removed(shmid); // freed when `map` detaches below
            }
            out.push(shmid);
        }
        drop(map);
    }
    out
}

fn bare_info(dir: &Path, name: &str, file: &str, state: State) -> Info {
    let path = dir.join(file);
    let st = rfs::lstat(&path).ok();
    let len = st.as_ref().map_or(0, |s| s.st_size as u64);
    Info {
        name: name.to_owned(),
        size: len,
        file_len: len,
        mode: st.as_ref().map_or(0, |s| s.st_mode & 0o7777),
        uid: st.as_ref().map_or(0, |s| s.st_uid),
        gid: st.as_ref().map_or(0, |s| s.st_gid),
        modified: None,
        path,
        header: None,
        memory: None,
        attached: 0,
        pids: Vec::new(),
        state,
    }
}

fn inspect_with(dir: &Path, name: &str, locks: &Locks) -> Result<Info> {
    let file = name::file_name(name);
    let path = dir.join(&file);
    let err = |op, e| Error::from_errno(name, dir, op, e);
    let lst = rfs::lstat(&path).map_err(|e| err("lstat", e))?;
    if FileType::from_raw_mode(lst.st_mode) != FileType::RegularFile {
        let kind = format!("{:?}", FileType::from_raw_mode(lst.st_mode));
        return Ok(bare_info(
            dir,
            name,
            &file,
            State::Foreign(format!("a {kind}, not a regular file")),
        ));
    }
    // O_RDONLY | O_NOFOLLOW | O_NONBLOCK: never follows a link planted since lstat, never blocks
    // on a FIFO; we only read the header.
    let fd = match rfs::open(
        &path,
        OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::NONBLOCK | OFlags::CLOEXEC,
        Mode::empty(),
    ) {
        Ok(fd) => Some(fd),
        Err(rustix::io::Errno::ACCESS) => None,
        Err(e) => return Err(err("open", e)),
    };
    let st = match &fd {
        Some(fd) => rfs::fstat(fd).map_err(|e| err("fstat", e))?,
        None => lst,
    };
    if FileType::from_raw_mode(st.st_mode) != FileType::RegularFile {
        return Ok(bare_info(
            dir,
            name,
            &file,
            State::Unreadable("it changed while being read".into()),
        ));
    }
    let held = locks.get(st.st_dev, st.st_ino);
    // `/proc/locks` can miss entries that shifted while it was read: ask the file itself.
    let locked = held.attached > 0
        || held.exclusive
        || fd
            .as_ref()
            .is_some_and(|fd| sys::ofd_locked(fd.as_fd()).unwrap_or(false));
    let mut info = Info {
        name: name.to_owned(),
        path,
        size: st.st_size as u64,
        file_len: st.st_size as u64,
        header: None,
        memory: None,
        mode: st.st_mode & 0o7777,
        uid: st.st_uid,
        gid: st.st_gid,
        modified: SystemTime::UNIX_EPOCH.checked_add(std::time::Duration::new(
            st.st_mtime.max(0) as u64,
            st.st_mtime_nsec.clamp(0, 999_999_999) as u32,
        )),
        attached: held.attached.max(usize::from(locked && !held.exclusive)),
        pids: held.pids,
        state: if locked { State::Live } else { State::Stale },
    };
    let Some(fd) = fd else {
        return Ok(info); // not readable by us: what /proc/locks and stat tell is all we know
    };
    let mut head = [0u8; HEADER_LEN];
    let n = rustix::io::pread(&fd, &mut head, 0).map_err(|e| err("pread", e))?;
    match header::parse(name, &head[..n], st.st_size as u64) {
        Ok(Parsed::Ready(h)) => {
            info.header = Some(h);
            info.size = h.size;
            if h.storage == Storage::SysV {
                info.memory = sys::shm_stat(h.shmid)
                    .ok()
                    .filter(|s| s.size >= h.size)
                    .map(|s| Memory {
                        shmid: h.shmid,
                        attachments: s.nattch,
                        marked: s.marked,
                    });
                if let Some(m) = info.memory {
                    // Every handle (a forked child's too) holds one attachment: the kernel's
                    // count is exact where /proc/locks can be off by one.
                    info.attached = m.attachments as usize;
                    if m.attachments > 0 {
                        info.state = State::Live; // possibly without a lock of its own
                    }
                }
            }
        }
        Ok(Parsed::Unfinished) => {}
        Err(e @ (Error::Foreign { .. } | Error::Incompatible { .. })) => {
            info.state = State::Foreign(e.to_string());
        }
        Err(e @ Error::Corrupt { .. }) => info.state = State::Corrupt(e.to_string()),
        Err(e) => return Err(e),
    }
    Ok(info)
}

/// Segments of `dir` whose name was removed while handles still hold them: inodes of `dir`'s
/// device with attach locks in `/proc/locks` but no name in the listing (`seen`). The name
/// comes from the holders' descriptors (`/proc/PID/fd/N` -> `DIR/shmem.NAME (deleted)`), so
/// only holders whose `/proc` entries we may read are found.
fn removed_but_held(dir: &Path, locks: &Locks, seen: &HashSet<(u64, u64)>) -> Vec<Info> {
    let Ok(dst) = rfs::stat(dir) else {
        return Vec::new();
    };
    let (major, minor) = (rfs::major(dst.st_dev), rfs::minor(dst.st_dev));
    let prefix = dir.join(name::FILE_PREFIX);
    let prefix = prefix.to_string_lossy();
    let mut out = Vec::new();
    for (&(ma, mi, ino), held) in &locks.0 {
        if (ma, mi) != (major, minor) || held.attached == 0 || seen.contains(&(dst.st_dev, ino)) {
            continue;
        }
        let found = held.pids.iter().find_map(|pid| {
            let fds = std::fs::read_dir(format!("/proc/{pid}/fd")).ok()?;
            fds.flatten().find_map(|fd| {
                let target = std::fs::read_link(fd.path()).ok()?;
                let target = target.to_str()?;
                let file = target.strip_prefix(&*prefix)?.strip_suffix(" (deleted)")?;
                let st = rfs::stat(fd.path()).ok()?;
                ((st.st_dev, st.st_ino) == (dst.st_dev, ino)).then(|| (file.to_owned(), st))
            })
        });
        let Some((name, st)) = found else { continue };
        let mut info = bare_info(
            dir,
            &name,
            &format!("{}{name}", name::FILE_PREFIX),
            State::Removed,
        );
        info.attached = held.attached;
        info.pids = held.pids.clone();
        info.uid = st.st_uid;
        info.gid = st.st_gid;
        info.mode = st.st_mode & 0o7777;
        out.push(info);
    }
    out
}

/// Who holds locks on one inode, from `/proc/locks`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct Holders {
    /// OFD read locks: attached handles.
    pub(crate) attached: usize,
    /// Someone holds the exclusive lock (an initialiser, a detacher, `gc`).
    pub(crate) exclusive: bool,
    /// The pids of the `flock` holders, sorted, each once.
    pub(crate) pids: Vec<u32>,
}

/// `/proc/locks` parsed once, keyed by (device major, minor, inode).
#[derive(Debug, Default)]
pub(crate) struct Locks(HashMap<(u32, u32, u64), Holders>);

impl Locks {
    /// Reads `/proc/locks` to its end and parses it, three times, keeping for each inode the
    /// median count, the majority's exclusive flag and every pid seen. The kernel hands the
    /// file out about a page per `read`, each built afresh from a position in its lock lists,
    /// and any lock taken or dropped anywhere on the machine between two pages shifts entries:
    /// one pass can miss a lock or show it twice. Passes rarely err on the same inode. (For
    /// SysV storage, `inspect_with` takes the count from the kernel's attach count instead,
    /// which is exact.)
    fn read() -> Locks {
        let once = || match std::fs::read("/proc/locks") {
            Ok(bytes) => Locks::parse(&String::from_utf8_lossy(&bytes)),
            Err(_) => Locks::default(),
        };
        let passes = [once(), once(), once()];
        let keys: HashSet<(u32, u32, u64)> =
            passes.iter().flat_map(|p| p.0.keys().copied()).collect();
        let mut all = HashMap::new();
        for key in keys {
            let seen: Vec<Holders> = passes
                .iter()
                .map(|p| p.0.get(&key).cloned().unwrap_or_default())
                .collect();
            let mut counts: Vec<usize> = seen.iter().map(|h| h.attached).collect();
            counts.sort_unstable();
            let mut pids: Vec<u32> = seen.iter().flat_map(|h| h.pids.iter().copied()).collect();
            pids.sort_unstable();
            pids.dedup();
            let held = Holders {
                attached: counts[1],
                exclusive: seen.iter().filter(|h| h.exclusive).count() >= 2,
                pids,
            };
            all.insert(key, held);
        }
        Locks(all)
    }

    /// Lines look like `1: OFDLCK ADVISORY  READ -1 00:1b:2 0 0` and
    /// `2: FLOCK  ADVISORY  READ  2163 00:1b:2 0 EOF` (device numbers in hex, the inode in
    /// decimal); waiters are marked with `->` and skipped.
    pub(crate) fn parse(text: &str) -> Locks {
        let mut map: HashMap<(u32, u32, u64), Holders> = HashMap::new();
        for line in text.lines() {
            let f: Vec<&str> = line.split_whitespace().collect();
            if f.len() < 6 || f[1] == "->" {
                continue;
            }
            let mut id = f[5].split(':');
            let (Some(ma), Some(mi), Some(ino), None) =
                (id.next(), id.next(), id.next(), id.next())
            else {
                continue;
            };
            let (Ok(ma), Ok(mi), Ok(ino)) = (
                u32::from_str_radix(ma, 16),
                u32::from_str_radix(mi, 16),
                ino.parse::<u64>(),
            ) else {
                continue;
            };
            // Only byte 0 carries the attach protocol; writers' liveness witnesses lock bytes
            // far past it (wlock.rs) and are neither attachments nor an initialiser.
            if f[1] == "OFDLCK" && f.get(6) != Some(&"0") {
                continue;
            }
            let h = map.entry((ma, mi, ino)).or_default();
            match (f[1], f[3]) {
                ("OFDLCK", "READ") => h.attached += 1,
                ("OFDLCK", "WRITE") => h.exclusive = true,
                ("FLOCK", _) => {
                    if let Ok(pid) = f[4].parse::<u32>() {
                        h.pids.push(pid);
                    }
                }
                _ => {}
            }
        }
        for h in map.values_mut() {
            h.pids.sort_unstable();
            h.pids.dedup();
        }
        Locks(map)
    }

    /// The holders of inode `ino` on device `dev`.
    pub(crate) fn get(&self, dev: u64, ino: u64) -> Holders {
        self.0
            .get(&(rfs::major(dev), rfs::minor(dev), ino))
            .cloned()
            .unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_proc_locks_once_into_a_map() {
        let dev = rfs::makedev(0, 0x1b);
        let text = "1: OFDLCK ADVISORY  READ -1 00:1b:7 0 0\n\
                    1: -> OFDLCK ADVISORY  WRITE -1 00:1b:7 0 0\n\
                    2: FLOCK  ADVISORY  READ  2163 00:1b:7 0 EOF\n\
                    3: OFDLCK ADVISORY  READ -1 00:1b:7 0 0\n\
                    4: FLOCK  ADVISORY  READ  99 00:1b:7 0 EOF\n\
                    5: FLOCK  ADVISORY  READ  5 00:1b:8 0 EOF\n\
                    6: POSIX  ADVISORY  WRITE 7 00:1b:7 0 EOF\n\
                    7: OFDLCK ADVISORY  READ -1 fd:01:7 0 0\n\
                    8: garbage\n\
                    9: OFDLCK ADVISORY  WRITE -1 00:1b:7 4294967301 4294967301\n";
        let locks = Locks::parse(text);
        let h = |attached, exclusive, pids: Vec<u32>| Holders {
            attached,
            exclusive,
            pids,
        };
        assert_eq!(locks.get(dev, 7), h(2, false, vec![99, 2163]));
        assert_eq!(locks.get(dev, 8), h(0, false, vec![5]));
        assert_eq!(locks.get(rfs::makedev(0xfd, 1), 7), h(1, false, vec![]));
        assert_eq!(Locks::parse("").get(dev, 7), Holders::default());
        let creating = Locks::parse("1: OFDLCK ADVISORY  WRITE -1 00:1b:9 0 0\n");
        assert_eq!(creating.get(dev, 9), h(0, true, vec![]));
    }
}
