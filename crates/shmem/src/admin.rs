//! Looking at segments from outside: list, inspect, remove and collect.
//!
//! Nothing here attaches. Who is attached is read from `/proc/locks`: each attached handle
//! holds an OFD read lock (counted as a description) and a `flock` (which shows the pid of the
//! process that attached it; a child that inherited the handle through `fork` is counted under
//! its parent's pid). A segment file that nobody holds is *stale*: a transient one was left by
//! users that crashed, and the next opener would start a new generation anyway.
//!
//! `remove` and `collect` take the exclusive lock without blocking before they unlink, exactly
//! as the last detacher does, so they never remove a segment someone holds (unless forced).

use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use rustix::fs::{self as rfs, FileType, Mode, OFlags};

use crate::error::{Error, Result};
use crate::header::{self, Header, Lifetime, HEADER_LEN};
use crate::name;
use crate::sys::{self, LockKind};

/// What a segment file in the directory is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum State {
    /// At least one handle is attached, or the segment is being initialised.
    Live,
    /// Nobody is attached: left by crashed users (transient) or kept on purpose (persistent).
    Stale,
    /// Not a valid shmem segment (wrong magic, layout or type of file); the reason says why.
    Foreign(String),
}

/// Everything known about one segment file without attaching to it.
#[derive(Clone, Debug)]
pub struct Info {
    /// The segment's name.
    pub name: String,
    /// The file.
    pub path: PathBuf,
    /// The file size in bytes.
    pub size: u64,
    /// The validated header; `None` when the file is foreign or still being initialised.
    pub header: Option<Header>,
    /// Permission bits of the file.
    pub mode: u32,
    /// Owner of the file.
    pub uid: u32,
    /// Group of the file.
    pub gid: u32,
    /// Last modification time of the file.
    pub modified: Option<SystemTime>,
    /// Number of attached handles (open file descriptions holding the attach lock).
    pub attached: usize,
    /// Pids of the processes that attached them.
    pub pids: Vec<u32>,
    /// Live, stale or foreign.
    pub state: State,
}

impl Info {
    /// For a value segment, its capacity in bytes (derived from the file size, as an attached
    /// handle would); `None` for raw, foreign or unfinished segments.
    pub fn value_capacity(&self) -> Option<usize> {
        match self.header {
            Some(h) if h.kind == crate::Kind::Value => crate::value::capacity_for_size(self.size),
            _ => None,
        }
    }
}

/// Inspects segment `name` in `dir`.
pub fn inspect(dir: &Path, name: &str) -> Result<Info> {
    name::validate_name(name)?;
    let locks = proc_locks();
    inspect_with(dir, name, &locks)
}

/// Lists every file with our prefix in `dir`, sorted by name. Files with our prefix but a name
/// we would not create are reported as foreign; other files are skipped.
pub fn list(dir: &Path) -> Result<Vec<Info>> {
    let rd = std::fs::read_dir(dir).map_err(|source| Error::Directory {
        dir: dir.to_owned(),
        source,
    })?;
    let locks = proc_locks();
    let mut out = Vec::new();
    for entry in rd.flatten() {
        let file = entry.file_name();
        let Some(file) = file.to_str() else { continue };
        let Some(rest) = file.strip_prefix(name::FILE_PREFIX) else {
            continue;
        };
        match name::name_of_file(file) {
            Some(n) => match inspect_with(dir, n, &locks) {
                Ok(info) => out.push(info),
                Err(Error::NotFound { .. }) => {} // removed while we listed
                Err(e) => return Err(e),
            },
            None => out.push(foreign_info(
                dir,
                rest,
                file,
                "the name is not a valid segment name",
            )),
        }
    }
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

/// Removes segment `name`. Fails with [`Error::Busy`] while a process is attached, unless
/// `force`: then the name goes away at once (attached processes keep their memory until they
/// detach, as with `shm_unlink`) and the next opener creates a new segment.
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
    let header = header::parse(name, &head[..n], st.st_size as u64)
        .ok()
        .flatten();
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

/// Removes the stale segments in `dir`: transient ones nobody holds, plus persistent ones if
/// `persistent`. Segments of other users are skipped unless running as root. With `dry_run`,
/// only reports. Returns the names (that would be) removed.
pub fn collect(dir: &Path, persistent: bool, dry_run: bool) -> Result<Vec<String>> {
    let me = rustix::process::geteuid();
    let mut removed = Vec::new();
    for info in list(dir)? {
        if info.state != State::Stale || (info.uid != me.as_raw() && !me.is_root()) {
            continue;
        }
        let is_persistent = matches!(info.header, Some(h) if h.lifetime == Lifetime::Persistent);
        if is_persistent && !persistent {
            continue;
        }
        if dry_run {
            removed.push(info.name);
            continue;
        }
        let wanted = |h: Option<Header>| {
            persistent || !matches!(h, Some(h) if h.lifetime == Lifetime::Persistent)
        };
        match remove_if(dir, &info.name, false, wanted) {
            Ok(()) => removed.push(info.name),
            Err(Error::Busy { .. }) | Err(Error::NotFound { .. }) => {} // attached meanwhile
            Err(e) => return Err(e),
        }
    }
    Ok(removed)
}

fn foreign_info(dir: &Path, name: &str, file: &str, reason: &str) -> Info {
    let path = dir.join(file);
    let st = rfs::lstat(&path).ok();
    Info {
        name: name.to_owned(),
        size: st.as_ref().map_or(0, |s| s.st_size as u64),
        mode: st.as_ref().map_or(0, |s| s.st_mode & 0o7777),
        uid: st.as_ref().map_or(0, |s| s.st_uid),
        gid: st.as_ref().map_or(0, |s| s.st_gid),
        modified: None,
        path,
        header: None,
        attached: 0,
        pids: Vec::new(),
        state: State::Foreign(reason.to_owned()),
    }
}

fn inspect_with(dir: &Path, name: &str, locks: &str) -> Result<Info> {
    let file = name::file_name(name);
    let path = dir.join(&file);
    let err = |op, e| Error::from_errno(name, dir, op, e);
    let lst = rfs::lstat(&path).map_err(|e| err("lstat", e))?;
    if FileType::from_raw_mode(lst.st_mode) != FileType::RegularFile {
        let kind = format!("{:?}", FileType::from_raw_mode(lst.st_mode));
        return Ok(foreign_info(
            dir,
            name,
            &file,
            &format!("a {kind}, not a regular file"),
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
    let (attached, pids, exclusive) = holders(locks, st.st_dev, st.st_ino);
    let mut info = Info {
        name: name.to_owned(),
        path,
        size: st.st_size as u64,
        header: None,
        mode: st.st_mode & 0o7777,
        uid: st.st_uid,
        gid: st.st_gid,
        modified: SystemTime::UNIX_EPOCH.checked_add(std::time::Duration::new(
            st.st_mtime.max(0) as u64,
            st.st_mtime_nsec.clamp(0, 999_999_999) as u32,
        )),
        attached,
        pids,
        // Being initialised (or removed) by someone holding the exclusive lock counts as live:
        // it is not a leftover.
        state: if attached > 0 || exclusive {
            State::Live
        } else {
            State::Stale
        },
    };
    let Some(fd) = fd else {
        return Ok(info); // not readable by us: what /proc/locks and stat tell is all we know
    };
    let mut head = [0u8; HEADER_LEN];
    let n = rustix::io::pread(&fd, &mut head, 0).map_err(|e| err("pread", e))?;
    match header::parse(name, &head[..n], st.st_size as u64) {
        Ok(h) => info.header = h,
        Err(e @ (Error::Foreign { .. } | Error::Incompatible { .. } | Error::Corrupt { .. })) => {
            info.state = State::Foreign(e.to_string());
        }
        Err(e) => return Err(e),
    }
    Ok(info)
}

/// `/proc/locks`, read in one `read` call. The kernel builds each `read` of this file in one
/// pass under its lock tables' lock, but separate calls see the tables as they are then: with
/// locks coming and going, a file read in pieces can miss entries. So read it whole, with a
/// buffer that grows until the text fits.
fn proc_locks() -> String {
    use std::io::Read;
    let mut size = 256 * 1024;
    loop {
        let Ok(mut f) = std::fs::File::open("/proc/locks") else {
            return String::new();
        };
        let mut buf = vec![0u8; size];
        let n = loop {
            match f.read(&mut buf) {
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                r => break r.unwrap_or(0),
            }
        };
        if n < buf.len() || size >= 64 << 20 {
            buf.truncate(n);
            return String::from_utf8_lossy(&buf).into_owned();
        }
        size *= 4;
    }
}

/// Parses `/proc/locks` for inode (`dev`, `ino`): the number of OFD locks (one per attached
/// handle) and the pids of the `flock` holders (each attaching process).
///
/// Lines look like `1: OFDLCK ADVISORY  READ -1 00:1b:2 0 0` and
/// `2: FLOCK  ADVISORY  READ  2163 00:1b:2 0 EOF`; waiters are marked with `->` and skipped.
/// Also tells whether someone holds the exclusive lock (an initialiser, a detacher, `gc`).
pub(crate) fn holders(locks: &str, dev: u64, ino: u64) -> (usize, Vec<u32>, bool) {
    let want = format!("{:02x}:{:02x}:{}", rfs::major(dev), rfs::minor(dev), ino);
    let mut count = 0;
    let mut exclusive = false;
    let mut pids = Vec::new();
    for line in locks.lines() {
        let fields: Vec<&str> = line.split_whitespace().collect();
        // Only byte 0 carries the attach protocol; writers' liveness witnesses lock bytes far
        // past it (wlock.rs) and are not attachments.
        if fields.get(1) == Some(&"->")
            || fields.len() < 7
            || fields[5] != want
            || (fields[1] == "OFDLCK" && fields[6] != "0")
        {
            continue;
        }
        match fields[1] {
            "OFDLCK" if fields[3] == "READ" => count += 1,
            "OFDLCK" if fields[3] == "WRITE" => exclusive = true,
            "FLOCK" => {
                if let Ok(pid) = fields[4].parse::<u32>() {
                    if !pids.contains(&pid) {
                        pids.push(pid);
                    }
                }
            }
            _ => {}
        }
    }
    pids.sort_unstable();
    (count, pids, exclusive)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_proc_locks() {
        let dev = rfs::makedev(0, 0x1b);
        let text = "1: OFDLCK ADVISORY  READ -1 00:1b:7 0 0\n\
                    1: -> OFDLCK ADVISORY  WRITE -1 00:1b:7 0 0\n\
                    2: FLOCK  ADVISORY  READ  2163 00:1b:7 0 EOF\n\
                    3: OFDLCK ADVISORY  READ -1 00:1b:7 0 0\n\
                    4: FLOCK  ADVISORY  READ  99 00:1b:7 0 EOF\n\
                    5: FLOCK  ADVISORY  READ  5 00:1b:8 0 EOF\n\
                    6: POSIX  ADVISORY  WRITE 7 00:1b:7 0 EOF\n\
                    7: OFDLCK ADVISORY  WRITE -1 00:1b:7 4294967301 4294967301\n";
        assert_eq!(holders(text, dev, 7), (2, vec![99, 2163], false));
        assert_eq!(holders(text, dev, 8), (0, vec![5], false));
        assert_eq!(holders("", dev, 7), (0, vec![], false));
        let creating = "1: OFDLCK ADVISORY  WRITE -1 00:1b:9 0 0\n";
        assert_eq!(holders(creating, dev, 9), (0, vec![], true));
    }
}
