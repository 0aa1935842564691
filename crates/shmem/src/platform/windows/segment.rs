//! Windows segments: named file mappings backed by the page file (transient) or by a file in a
//! directory (persistent).
//!
//! # Transient segments: the lifetime protocol
//!
//! A segment `NAME` is the section `Local\shmem.NAME` (or `Global\shmem.NAME`, see
//! [`Namespace`]), made by `CreateFileMappingW(INVALID_HANDLE_VALUE, ...)`. Each handle holds
//! one section handle and one view. The kernel counts both, and destroys the section when the
//! last goes, whether by drop, exit or `TerminateProcess`: there is nothing to unlink and
//! nothing stale to collect, which is the lifetime the Linux backend builds with OFD locks.
//!
//! **Attach.**
//! 1. Open or create: `OpenFileMappingW` first (it asks only for the access a joiner uses,
//!    which the segment's DACL may grant when `CreateFileMappingW`'s wider request would be
//!    refused); on `ERROR_FILE_NOT_FOUND`, `CreateFileMappingW` with the full size. The kernel
//!    answers for the name atomically: either the section is new (zero-filled, `created =
//!    true`), or the call returns a handle to the existing one with `ERROR_ALREADY_EXISTS`
//!    (its size unchanged); a create refused access because another creator won meanwhile
//!    goes back to the open. Open only: `OpenFileMappingW`; `ERROR_FILE_NOT_FOUND` means
//!    nobody holds it.
//! 2. Map a view of the whole section (`MapViewOfFile`, size from `VirtualQuery`).
//! 3. The creator writes the header, magic last (Release). A joiner waits, with the attach
//!    timeout as its deadline, until it reads a nonzero magic (Acquire), then validates the
//!    header: the size it records must fit the view (which is whole pages), and is the size
//!    used from then on.
//!
//! **Detach**: unmap the view, close the handle. A creator that dies before writing the magic
//! leaves a section that joiners time out on; it is destroyed when they give up.
//!
//! # Persistent segments: a file in a directory
//!
//! A persistent segment is the file `DIR\shmem.NAME`, mapped through an unnamed section of
//! the file (`CreateFileW` + `CreateFileMappingW(file)`), so its bytes outlive every process.
//! `DIR` is the builder's [`Builder::dir`], by default [`default_dir`]:
//! `%LOCALAPPDATA%\shmem`. Why there: it is per user (like a `0o600` segment), local to the
//! machine (the roaming profile would copy segments between machines), outside `%TEMP%`
//! (which cleaners empty) and needs no privilege; the default directory is made on the first
//! create, a directory given explicitly must exist.
//!
//! **Create** (no lock needed: the file's sharing mode is the lock).
//! 1. `CreateFileW(CREATE_NEW, share 0)`: the kernel makes the name atomically, and while
//!    this handle is open nobody else can open the file (`ERROR_SHARING_VIOLATION`), nor
//!    rename or delete it. `created` is true for this opener only.
//! 2. Extend it to the full size (zero-filled), write the header without its magic, then the
//!    magic, then close the handle.
//! 3. Join it as below (a joiner that finds another generation's header there, after an `rm`
//!    and a new create in between, reports `created = false`).
//!
//! **Join.** `CreateFileW(OPEN_EXISTING)`, shared for reading, writing and deleting; a sharing
//! violation means a creator is at step 2: retry until the attach timeout. Then the header is
//! read under the open handle: a file shorter than a header, or one without the magic (its
//! creator died in step 2, since nobody else holds it) is [`Error::Corrupt`], never
//! re-initialised (`rm` removes it); a foreign file is [`Error::Foreign`]. The header's size
//! must equal the file's length. Then the section and the view. A mapped file cannot be
//! truncated under its views (Windows refuses `SetEndOfFile` with `ERROR_USER_MAPPED_FILE`),
//! so the length checked at attach holds for the handle's life.
//!
//! **Remove** ([`Builder::remove`], `shmem rm`): rename the file to a hidden tomb name in the
//! same directory (`.shmem-removed.NAME.PID.NANOS`, which no listing takes for a segment),
//! then `DeleteFileW` it. Live holders keep their views and go on sharing the old bytes (the
//! file is *delete pending* and the kernel deletes it at its last handle, crash included),
//! while the name is free at once: the next open creates a new segment, as on Linux. Without
//! the rename, a delete-pending name could not be created again until the last holder left.
//!
//! **One name, one segment.** Every open looks for `DIR\shmem.NAME` first and joins the file
//! when it exists, whatever lifetime was asked (a segment keeps its creator's lifetime, as on
//! Linux); only when there is none does it use the transient section. A transient section and
//! a persistent file of the same name can still both exist if they are created at the same
//! moment, since the two live in different namespaces (files and kernel objects); the file
//! wins for every later opener.
//!
//! # Security: the mode as a DACL
//!
//! The builder's unix mode becomes a protected DACL (SDDL, see [`sddl_for_mode`]) on the
//! section, on the segment's events (the lock, the writers' witnesses, the waiters') and on
//! the file: owner bits to the creating user's SID, group bits to `BU` (the local users
//! group) and other bits to `WD` (everyone). The owner is the user's SID from the process
//! token, not `OW` (the owner rights SID): Wine's access check does not match `OW` to the
//! owner (measured: a section with only an `OW` ACE refuses its own creator a second open),
//! and on Windows an ACE for the creator's SID grants the same while the object keeps its
//! owner, which nothing here changes. Windows has no per-object group
//! in the unix sense: a token's primary group ("None" on a workstation, "Domain Users" in a
//! domain) is rarely what a user means, so group access is "the other users of this machine"
//! and other access is everyone, services and guests included. Read, write and execute map to
//! each object type's own rights; the owner also keeps `READ_CONTROL` and `WRITE_DAC` (a
//! `chmod`) and, on the file, `DELETE` (only the owner can `rm`, like `/dev/shm`'s sticky
//! bit). Events a joiner creates (its writer witness, its waiter event) take the joiner's
//! own builder mode: give every process of a segment the same mode.
//!
//! What Wine checks: it stores and returns the DACLs of sections and events (the tests read
//! them back) and checks a handle's access against them, for the one user it has (tests: a
//! mode that gives the owner read only refuses the owner a read-write open). Checked only on
//! paper: access by a second user or by a group (Wine has one user); file DACLs beyond their
//! other bits (Wine turns a new file's DACL into its unix mode and reads back an ACL made
//! from that mode: a test checks that everyone's access comes and goes with the other bits); `Global\`, which
//! needs `SeCreateGlobalPrivilege` to create a section (services and administrators have it;
//! opening an existing one needs only the DACL's consent) and sessions, neither of which Wine
//! models.
//!
//! # What differs from Linux
//!
//! - Transient segments have no file and no path: the namespace replaces the directory.
//! - No listing of transient segments: Windows has no call that lists named sections, so there
//!   is no `admin`; [`list_persistent`] lists a directory's persistent segments and
//!   [`collect_persistent`] removes those nobody holds.

use std::fs::File;
use std::os::windows::fs::FileExt;
use std::os::windows::io::{AsHandle, OwnedHandle};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use windows_sys::Win32::Foundation::{
    ERROR_ACCESS_DENIED, ERROR_ALREADY_EXISTS, ERROR_COMMITMENT_LIMIT, ERROR_DISK_FULL,
    ERROR_FILE_EXISTS, ERROR_FILE_NOT_FOUND, ERROR_HANDLE_DISK_FULL, ERROR_INVALID_HANDLE,
    ERROR_NOT_ENOUGH_MEMORY, ERROR_PATH_NOT_FOUND, ERROR_SHARING_VIOLATION,
};

pub(crate) use super::sys::Security;
use super::sys::{self, Code, FileOpen, Mapping, ObjectType, Opened};
use crate::error::{Error, Result};
use crate::header::{self, Header, Kind, Lifetime, Storage, HEADER_LEN};
use crate::name;
use crate::platform::shared::Shared;

/// The largest segment we create: 1 TiB.
pub const MAX_SEGMENT_SIZE: u64 = 1 << 40;

/// The kernel object namespace a segment's name lives in.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub enum Namespace {
    /// `Local\`: the caller's session (the default, and what the seed used implicitly).
    #[default]
    Local,
    /// `Global\`: every session, for services and the programs that talk to them. Creating a
    /// section there needs `SeCreateGlobalPrivilege` (services, administrators; a refusal is
    /// [`Error::PermissionDenied`] saying so); opening an existing one needs only its DACL's
    /// consent (the creator's [`Builder::mode`]). Checked only on paper: the tests run under
    /// Wine, which models neither this privilege check nor sessions.
    Global,
}

impl Namespace {
    fn prefix(self) -> &'static str {
        match self {
            Namespace::Local => "Local\\",
            Namespace::Global => "Global\\",
        }
    }
}

/// The default directory of persistent segments: `%LOCALAPPDATA%\shmem` (see the module
/// docs for why), or `shmem` in the temporary directory when `LOCALAPPDATA` is not set.
pub fn default_dir() -> PathBuf {
    match std::env::var_os("LOCALAPPDATA") {
        Some(d) if !d.is_empty() => PathBuf::from(d).join("shmem"),
        _ => std::env::temp_dir().join("shmem"),
    }
}

/// The kinds of object a mode is turned into a DACL for (see [`sddl_for_mode`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Securable {
    /// The section (`SECTION_*` rights).
    Section,
    /// An event of the segment (the lock, a witness, a waiter).
    Event,
    /// A persistent segment's file (`FILE_GENERIC_*` rights).
    File,
}

// Access rights, spelled out so that the DACL is exact (generic rights would be mapped per
// object type when the descriptor is assigned, and read back differently).
const READ_CONTROL: u32 = 0x0002_0000;
const WRITE_DAC: u32 = 0x0004_0000;
const DELETE: u32 = 0x0001_0000;
const SYNCHRONIZE: u32 = 0x0010_0000;
const SECTION_QUERY: u32 = 0x1;
const SECTION_MAP_WRITE: u32 = 0x2;
const SECTION_MAP_READ: u32 = 0x4;
const SECTION_MAP_EXECUTE: u32 = 0x8;
const EVENT_MODIFY_STATE: u32 = 0x2;
const FILE_GENERIC_READ: u32 = 0x0012_0089;
const FILE_GENERIC_WRITE: u32 = 0x0012_0116;
const FILE_GENERIC_EXECUTE: u32 = 0x0012_00A0;

/// The rights one class's `rwx` bits grant on `object`.
fn rights(bits: u32, object: Securable) -> u32 {
    let (r, w, x) = match object {
        Securable::Section => (
            SECTION_QUERY | SECTION_MAP_READ,
            SECTION_MAP_WRITE,
            SECTION_MAP_EXECUTE,
        ),
        // Waiting needs SYNCHRONIZE, signalling EVENT_MODIFY_STATE; there is nothing to run.
        Securable::Event => (SYNCHRONIZE, EVENT_MODIFY_STATE, 0),
        Securable::File => (FILE_GENERIC_READ, FILE_GENERIC_WRITE, FILE_GENERIC_EXECUTE),
    };
    let mut m = 0;
    if bits & 4 != 0 {
        m |= r;
    }
    if bits & 2 != 0 {
        m |= w;
    }
    if bits & 1 != 0 {
        m |= x;
    }
    m
}

/// The SID string of this process's user (`S-1-5-21-...`): the owner in the DACLs this
/// process creates (see [`sddl_for_mode`]).
pub fn user_sid() -> Result<String> {
    static SID: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    if let Some(s) = SID.get() {
        return Ok(s.clone());
    }
    let s = sys::user_sid().map_err(|c| Error::Io {
        name: String::new(),
        op: "GetTokenInformation(TokenUser)",
        source: std::io::Error::from_raw_os_error(c as i32),
    })?;
    Ok(SID.get_or_init(|| s).clone())
}

/// The SDDL of the protected DACL that unix mode `mode` (`0o777` bits) gives `object`, with
/// `owner` (a SID string, [`user_sid`] for what this process creates) as the owner: one allow
/// ACE each for the owner (always with `READ_CONTROL | WRITE_DAC`, and `DELETE` on a file),
/// the group (`BU`) and others (`WD`) whose bits are not all zero.
pub fn sddl_for_mode(mode: u32, object: Securable, owner: &str) -> String {
    let mut sddl = String::from("D:P");
    let owner_extra = READ_CONTROL | WRITE_DAC | if object == Securable::File { DELETE } else { 0 };
    for (shift, sid) in [(6, owner), (3, "BU"), (0, "WD")] {
        let bits = (mode >> shift) & 7;
        let mut mask = rights(bits, object);
        if shift == 6 {
            mask |= owner_extra;
        }
        if mask != 0 {
            sddl.push_str(&format!("(A;;0x{mask:x};;;{sid})"));
        }
    }
    sddl
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

/// How many times an open starts over after the file it was about to join went away.
const MAX_ATTEMPTS: usize = 100;

/// Options for opening a segment; start with [`Segment::builder`].
#[derive(Clone, Debug)]
pub struct Builder {
    name: String,
    dir: Option<PathBuf>,
    data_len: u64,
    lifetime: Lifetime,
    mode: u32,
    namespace: Namespace,
    attach_timeout: Duration,
    /// Whether attaching checks `data_len` against an existing segment (the value layer
    /// checks its capacity itself, in its own terms).
    check_size: bool,
}

impl Builder {
    pub(crate) fn new(name: &str) -> Builder {
        Builder {
            name: name.to_owned(),
            dir: None,
            data_len: 0,
            lifetime: Lifetime::Transient,
            mode: 0o600,
            namespace: Namespace::Local,
            attach_timeout: Duration::from_secs(10),
            check_size: true,
        }
    }

    /// The directory of persistent segments' files: [`default_dir`] by default
    /// (`%LOCALAPPDATA%\shmem`, made on the first create); a directory given here must exist.
    /// Every open looks there first, since a name is one segment whatever its lifetime.
    pub fn dir(mut self, dir: impl Into<PathBuf>) -> Builder {
        self.dir = Some(dir.into());
        self
    }

    /// The number of data bytes, not counting the 64-byte header. Needed to create a segment;
    /// when opening an existing one, the segment must have at least this many (0 accepts any).
    pub fn size(mut self, bytes: usize) -> Builder {
        self.data_len = bytes as u64;
        self
    }

    /// The lifetime a newly created segment gets (transient by default: a page-file section;
    /// persistent: a file in [`Builder::dir`]). An existing segment keeps its creator's.
    pub fn lifetime(mut self, lifetime: Lifetime) -> Builder {
        self.lifetime = lifetime;
        self
    }

    /// The unix mode of what this handle creates, `0o600` (owner only) by default, applied
    /// as a DACL (see the module docs and [`sddl_for_mode`]).
    pub fn mode(mut self, mode: u32) -> Builder {
        self.mode = mode & 0o777;
        self
    }

    /// The namespace of the name: `Local\` by default (see [`Namespace`]).
    pub fn namespace(mut self, namespace: Namespace) -> Builder {
        self.namespace = namespace;
        self
    }

    /// How long a joiner waits for the creator to finish the header before
    /// [`Error::Timeout`]: 10 s by default.
    pub fn attach_timeout(mut self, timeout: Duration) -> Builder {
        self.attach_timeout = timeout;
        self
    }

    /// The segment's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The directory of persistent segments this builder uses.
    pub fn directory(&self) -> PathBuf {
        self.dir.clone().unwrap_or_else(default_dir)
    }

    /// Opens the segment, creating it if nobody holds it (`CreateFileMappingW`, or the file
    /// for a persistent one). [`Segment::created`] tells whether this call created it.
    pub fn open(&self) -> Result<Segment> {
        self.open_kind(Kind::Raw, OpenMode::OpenOrCreate)
    }

    /// Creates the segment; fails with [`Error::Exists`] if a live one has the name.
    pub fn create_new(&self) -> Result<Segment> {
        self.open_kind(Kind::Raw, OpenMode::CreateNew)
    }

    /// Opens a live segment; fails with [`Error::NotFound`] if there is none.
    pub fn open_existing(&self) -> Result<Segment> {
        self.open_kind(Kind::Raw, OpenMode::OpenExisting)
    }

    /// Removes persistent segment `NAME`: its file is renamed to a tomb and deleted, so the
    /// name is free at once; live holders keep the old bytes until their last handle closes
    /// (see the module docs). A transient segment cannot be removed on Windows (nothing
    /// names it but its holders' handles): [`Error::Unsupported`]; no segment at all:
    /// [`Error::NotFound`].
    pub fn remove(&self) -> Result<()> {
        name::validate_name(&self.name)?;
        let dir = self.directory();
        let path = self.path();
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        let tomb = dir.join(format!(
            ".shmem-removed.{}.{}.{nanos}",
            self.name,
            std::process::id()
        ));
        match std::fs::rename(&path, &tomb) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return match sys::open_mapping(&self.object_name()) {
                    Ok(_) => Err(Error::Unsupported {
                        name: self.name.clone(),
                        what: "removing a transient segment (Windows frees a section with its \
                               last handle, and nothing else names it)",
                    }),
                    Err(_) => Err(Error::NotFound {
                        name: self.name.clone(),
                        dir,
                    }),
                };
            }
            Err(e) => return Err(self.file_error("MoveFileExW", &e)),
        }
        std::fs::remove_file(&tomb).map_err(|e| self.file_error("DeleteFileW", &e))
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

    /// The section's name: `Local\shmem.NAME` or `Global\shmem.NAME`.
    fn object_name(&self) -> String {
        format!("{}{}", self.namespace.prefix(), name::file_name(&self.name))
    }

    /// A persistent segment's file: `DIR\shmem.NAME`.
    fn path(&self) -> PathBuf {
        self.directory().join(name::file_name(&self.name))
    }

    /// The namespace, where the Linux backend names a directory in its errors.
    fn where_(&self) -> PathBuf {
        PathBuf::from(self.namespace.prefix())
    }

    fn io(&self, op: &'static str, code: Code) -> Error {
        Error::Io {
            name: self.name.clone(),
            op,
            source: std::io::Error::from_raw_os_error(code as i32),
        }
    }

    fn security(&self, object: Securable) -> Result<Security> {
        let sddl = sddl_for_mode(self.mode, object, &user_sid()?);
        Security::from_sddl(&sddl).map_err(|c| self.io("ConvertStringSecurityDescriptor", c))
    }

    /// Classifies the error of a file operation on the segment's file.
    fn file_error(&self, op: &'static str, e: &std::io::Error) -> Error {
        match e.raw_os_error().map(|c| c as u32) {
            Some(ERROR_ACCESS_DENIED) => Error::PermissionDenied {
                name: self.name.clone(),
                reason: format!("{op} of {} refused by its DACL", self.path().display()),
            },
            Some(ERROR_DISK_FULL | ERROR_HANDLE_DISK_FULL) => Error::NoSpace {
                name: self.name.clone(),
                dir: self.directory(),
                size: self.data_len + HEADER_LEN as u64,
                reason: "the disk is full".into(),
            },
            Some(ERROR_SHARING_VIOLATION) => Error::Io {
                name: self.name.clone(),
                op,
                source: std::io::Error::other(format!(
                    "{} is being created by another process (sharing violation)",
                    self.path().display()
                )),
            },
            _ => Error::Io {
                name: self.name.clone(),
                op,
                source: std::io::Error::new(e.kind(), format!("{}: {e}", self.path().display())),
            },
        }
    }

    /// Classifies the error of a create or open call.
    fn open_error(&self, op: &'static str, code: Code, total: u64) -> Error {
        match code {
            ERROR_FILE_NOT_FOUND => Error::NotFound {
                name: self.name.clone(),
                dir: self.where_(),
            },
            ERROR_ACCESS_DENIED => {
                Error::PermissionDenied {
                    name: self.name.clone(),
                    reason: match self.namespace {
                        Namespace::Global => format!(
                        "{op} refused: creating in Global\\ needs SeCreateGlobalPrivilege, and \
                         the section's security descriptor may exclude this user"
                    ),
                        Namespace::Local => {
                            format!("{op} refused: the section's security descriptor excludes this user")
                        }
                    },
                }
            }
            ERROR_NOT_ENOUGH_MEMORY | ERROR_COMMITMENT_LIMIT | ERROR_DISK_FULL => Error::NoSpace {
                name: self.name.clone(),
                dir: self.where_(),
                size: total,
                reason: "the system's commit limit (page file and memory) is reached".into(),
            },
            // The name belongs to an object of another type (an event, a mutex, ...).
            ERROR_INVALID_HANDLE => Error::Foreign {
                name: self.name.clone(),
                reason: format!(
                    "{} is a kernel object other than a section",
                    self.object_name()
                ),
            },
            _ => self.io(op, code),
        }
    }

    fn open_kind(&self, kind: Kind, mode: OpenMode) -> Result<Segment> {
        name::validate_name(&self.name)?;
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
        let seg = match self.attach_file(kind, mode, total)? {
            Some(seg) => seg,
            None => self.attach_section(kind, mode, total)?,
        };
        if mode == OpenMode::CreateNew && !seg.created {
            return Err(Error::Exists {
                name: self.name.clone(),
                dir: seg.path.clone().unwrap_or_else(|| self.where_()),
            });
        }
        if seg.header.kind != kind {
            return Err(Error::wrong_kind(&self.name, seg.header.kind, kind));
        }
        if self.check_size && !seg.created && seg.data_len() < self.data_len as usize {
            return Err(Error::InvalidSize {
                name: self.name.clone(),
                reason: format!(
                    "the existing segment has {} data bytes, less than the {} asked for",
                    seg.data_len(),
                    self.data_len
                ),
            });
        }
        Ok(seg)
    }

    /// The transient path: the page-file section `Local\shmem.NAME`.
    fn attach_section(&self, kind: Kind, mode: OpenMode, total: u64) -> Result<Segment> {
        let object = self.object_name();
        let (handle, created) = if mode == OpenMode::OpenExisting || self.data_len == 0 {
            match sys::open_mapping(&object) {
                Ok(h) => (h, false),
                Err(ERROR_FILE_NOT_FOUND) if mode == OpenMode::OpenOrCreate => {
                    return Err(Error::InvalidSize {
                        name: self.name.clone(),
                        reason: "the segment does not exist and a size of 0 bytes cannot be \
                                 created"
                            .into(),
                    })
                }
                Err(code) => return Err(self.open_error("OpenFileMappingW", code, total)),
            }
        } else {
            self.open_or_create_section(&object, total)?
        };
        let mut map = Mapping::map(&handle).map_err(|code| self.io("MapViewOfFile", code))?;
        let header = if created {
            if (map.view_len() as u64) < total {
                return Err(Error::Corrupt {
                    name: self.name.clone(),
                    reason: format!(
                        "a new section of {total} bytes has a view of {}",
                        map.view_len()
                    ),
                });
            }
            // The header's storage field describes Linux storage; a section is neither a file
            // nor SysV memory, and nothing on Windows reads the field.
            let h = Header::new(kind, Lifetime::Transient, total, Storage::File, 0);
            map.raw_header().init(&h);
            self.validate(&map, None)?
        } else {
            self.wait_for_header(&map)?;
            self.validate(&map, None)?
        };
        map.set_len(header.size as usize);
        Ok(Segment {
            name: self.name.clone(),
            object,
            path: None,
            created,
            header,
            map,
            _handle: handle,
            file: None,
            event_security: self.security(Securable::Event)?,
        })
    }

    /// Opens the section, or creates it. Opening comes first because `CreateFileMappingW` of
    /// an existing section asks for more access (`SECTION_QUERY` and all it maps) than a
    /// joiner needs, which a mode may not grant; a create that loses the race to another
    /// creator is answered with the existing section (or, without that access, refused, and
    /// the next round opens it).
    fn open_or_create_section(&self, object: &str, total: u64) -> Result<(OwnedHandle, bool)> {
        let security = self.security(Securable::Section)?;
        let mut last = ERROR_FILE_NOT_FOUND;
        for _ in 0..MAX_ATTEMPTS {
            match sys::open_mapping(object) {
                Ok(h) => return Ok((h, false)),
                Err(ERROR_FILE_NOT_FOUND) => {}
                Err(code) => return Err(self.open_error("OpenFileMappingW", code, total)),
            }
            match sys::create_mapping(object, total, &security) {
                Ok((h, opened)) => return Ok((h, opened == Opened::Created)),
                Err(ERROR_ACCESS_DENIED) => last = ERROR_ACCESS_DENIED,
                Err(code) => return Err(self.open_error("CreateFileMappingW", code, total)),
            }
        }
        Err(self.open_error("CreateFileMappingW", last, total))
    }

    /// The persistent path: joins `DIR\shmem.NAME` if it exists (whatever lifetime was asked)
    /// and creates it first for a persistent open; `None` when there is no file and the open
    /// is not a persistent create (the caller goes on to the section).
    fn attach_file(&self, kind: Kind, mode: OpenMode, total: u64) -> Result<Option<Segment>> {
        let path = self.path();
        let creating = self.lifetime == Lifetime::Persistent
            && mode != OpenMode::OpenExisting
            && self.data_len > 0;
        let start = Instant::now();
        // Rounds that found the file gone (removed between our create and our open); a round
        // that waits for a creator does not count, the attach timeout bounds those.
        let mut vanished = 0;
        while vanished < MAX_ATTEMPTS {
            let mut made = None;
            if creating {
                let security = self.security(Securable::File)?;
                match sys::open_file(&path, FileOpen::CreateAlone, Some(&security)) {
                    Ok(f) => made = Some(self.initialise(f, &path, kind, total)?),
                    Err(ERROR_FILE_EXISTS | ERROR_ALREADY_EXISTS) => {}
                    Err(ERROR_PATH_NOT_FOUND) if self.dir.is_none() => {
                        std::fs::create_dir_all(self.directory())
                            .map_err(|e| self.file_error("CreateDirectoryW", &e))?;
                        vanished += 1;
                        continue;
                    }
                    Err(code) => return Err(self.file_code_error("CreateFileW", code)),
                }
            }
            let file = match sys::open_file(&path, FileOpen::Join, None) {
                Ok(f) => f,
                Err(ERROR_FILE_NOT_FOUND | ERROR_PATH_NOT_FOUND) if creating => {
                    vanished += 1;
                    continue;
                }
                Err(ERROR_FILE_NOT_FOUND | ERROR_PATH_NOT_FOUND) => return Ok(None),
                Err(ERROR_SHARING_VIOLATION) => {
                    // A creator is between its CREATE_NEW and its close: polled, since
                    // nothing signals the close, until the attach timeout.
                    if start.elapsed() > self.attach_timeout {
                        return Err(Error::Timeout {
                            name: self.name.clone(),
                            what: "the creator to finish the segment's file",
                            timeout: self.attach_timeout,
                        });
                    }
                    std::thread::sleep(Duration::from_millis(1));
                    continue;
                }
                Err(code) => return Err(self.file_code_error("CreateFileW", code)),
            };
            return self.join_file(file, path, made).map(Some);
        }
        Err(Error::AttachRetries {
            name: self.name.clone(),
            attempts: MAX_ATTEMPTS,
            reason: "its file kept vanishing between its create and its open (removed each time)",
        })
    }

    fn file_code_error(&self, op: &'static str, code: Code) -> Error {
        self.file_error(op, &std::io::Error::from_raw_os_error(code as i32))
    }

    /// Step 2 of a create, on the file this process alone has open: the full size
    /// (zero-filled), the header without its magic, then the magic. Returns the header's token.
    fn initialise(&self, f: File, path: &Path, kind: Kind, total: u64) -> Result<u64> {
        let h = Header::new(kind, Lifetime::Persistent, total, Storage::File, 0);
        let bytes = h.encode();
        let write = || -> std::io::Result<()> {
            f.set_len(total)?;
            write_all_at(&f, &bytes[8..], 8)?;
            write_all_at(&f, &bytes[..8], 0)
        };
        if let Err(e) = write() {
            drop(f);
            // Ours alone until now; a joiner that opens it between the close and the delete
            // finds it without a magic and reports Corrupt.
            let _ = std::fs::remove_file(path);
            return Err(self.file_error("WriteFile", &e));
        }
        Ok(h.token)
    }

    /// Joins the file `file` (opened shared): validates its header, maps it.
    fn join_file(&self, file: File, path: PathBuf, made: Option<u64>) -> Result<Segment> {
        let corrupt = |reason: String| Error::Corrupt {
            name: self.name.clone(),
            reason: format!("{} {reason}; `shmem rm` removes it", path.display()),
        };
        let len = file
            .metadata()
            .map_err(|e| self.file_error("GetFileSizeEx", &e))?
            .len();
        if len < HEADER_LEN as u64 {
            return Err(corrupt(format!(
                "has {len} bytes, less than a header (its creator died before writing it, or \
                 it was truncated)"
            )));
        }
        let mut head = [0u8; HEADER_LEN];
        read_exact_at(&file, &mut head, 0).map_err(|e| self.file_error("ReadFile", &e))?;
        let header = match header::parse(&self.name, &head, len)? {
            header::Parsed::Ready(h) => h,
            header::Parsed::Unfinished => {
                return Err(corrupt(
                    "has no magic number (its creator died before finishing it)".into(),
                ))
            }
        };
        if header.lifetime != Lifetime::Persistent || header.storage != Storage::File {
            return Err(corrupt(format!(
                "records a {} segment in {} storage, not a persistent file",
                header.lifetime.as_str(),
                header.storage.as_str()
            )));
        }
        let handle = sys::map_file(&file, None).map_err(|c| self.io("CreateFileMappingW", c))?;
        let mut map = Mapping::map(&handle).map_err(|code| self.io("MapViewOfFile", code))?;
        // The view must still carry the header read through the file (same bytes: the file
        // cannot shrink while mapped, but a writer could have rewritten the header).
        let mapped = self.validate(&map, Some(len))?;
        if mapped != header {
            return Err(corrupt("changed its header while being opened".into()));
        }
        map.set_len(header.size as usize);
        Ok(Segment {
            name: self.name.clone(),
            // The events' prefix names this file's generation: segments of one name in two
            // directories, or before and after an `rm`, never share a lock event or a
            // writer's witness (a witness of one would prove a dead holder of the other alive).
            object: format!("{}.g{:016x}", self.object_name(), header.token),
            path: Some(path),
            created: made == Some(header.token),
            header,
            map,
            _handle: handle,
            file: Some(file),
            event_security: self.security(Securable::Event)?,
        })
    }

    /// Waits until the creator has published the header's magic, at most the attach timeout.
    /// The creator writes the header right after its view is mapped, so this is a window of
    /// microseconds unless the creator died in it.
    fn wait_for_header(&self, map: &Mapping) -> Result<()> {
        let start = Instant::now();
        let mut pause = Duration::from_micros(50);
        for attempt in 0u32.. {
            if map.raw_header().is_initialised() {
                return Ok(());
            }
            if start.elapsed() > self.attach_timeout {
                return Err(Error::Timeout {
                    name: self.name.clone(),
                    what: "the creator to write the segment's header",
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

    /// Validates the header against the view: the size it records must fit, and equal the
    /// file's length for a file.
    fn validate(&self, map: &Mapping, file_len: Option<u64>) -> Result<Header> {
        let head = map.header_bytes();
        let recorded = u64::from_le_bytes(head[24..32].try_into().expect("8 bytes"));
        let size = file_len.unwrap_or(recorded);
        if size > map.view_len() as u64 {
            return Err(Error::Corrupt {
                name: self.name.clone(),
                reason: format!(
                    "the header records {recorded} bytes but the section has {}",
                    map.view_len()
                ),
            });
        }
        match header::parse(&self.name, &head, size)? {
            header::Parsed::Ready(h) => Ok(h),
            header::Parsed::Unfinished => Err(Error::Corrupt {
                name: self.name.clone(),
                reason: "the header's magic went back to 0".into(),
            }),
        }
    }
}

/// An attached named segment. Dropping it detaches; the kernel frees the section when its
/// last handle and view are gone.
///
/// The data area (`data_len()` bytes after the header) is shared with other processes that may
/// write it at any time, so it is never handed out as a slice: use [`Segment::read`] and
/// [`Segment::write`], or [`Segment::as_ptr`] with atomics of your own.
#[derive(Debug)]
pub struct Segment {
    name: String,
    object: String,
    /// A persistent segment's file.
    path: Option<PathBuf>,
    created: bool,
    header: Header,
    /// Declared before the handles: the view is unmapped first.
    map: Mapping,
    _handle: OwnedHandle,
    /// A persistent segment's file handle (the section holds the file open too; this one is
    /// kept to read its DACL).
    file: Option<File>,
    /// The descriptor of the events this handle creates (the mode's DACL for events).
    event_security: Security,
}

impl Segment {
    /// Starts the options for segment `name`.
    pub fn builder(name: &str) -> Builder {
        Builder::new(name)
    }

    /// Opens or creates transient segment `name` in `Local\` with `size` data bytes.
    pub fn open(name: &str, size: usize) -> Result<Segment> {
        Builder::new(name).size(size).open()
    }

    /// The segment's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The section's kernel object name, `Local\shmem.NAME` or `Global\shmem.NAME`; the prefix
    /// of the segment's events too. For a persistent segment (whose section is unnamed) it is
    /// only that prefix, `Local\shmem.NAME.gTOKEN`, with the token of the file's generation.
    pub fn object_name(&self) -> &str {
        &self.object
    }

    /// Whether this handle is read-only: never on Windows, whose handles always write.
    pub(crate) fn read_only(&self) -> bool {
        false
    }

    /// `Ok`: a Windows handle may always write (there are no read-only handles).
    pub(crate) fn writable(&self, _op: &str) -> Result<()> {
        Ok(())
    }

    /// Whether this handle created (and zero-filled) the section, the equivalent of
    /// `GetLastError() != ERROR_ALREADY_EXISTS` after `CreateFileMapping`.
    pub fn created(&self) -> bool {
        self.created
    }

    /// The lifetime its creator chose.
    pub fn lifetime(&self) -> Lifetime {
        self.header.lifetime
    }

    /// Whether the name still leads to this segment. A transient one always does (a section
    /// cannot be removed or replaced while a handle holds it); a persistent one while
    /// `DIR\shmem.NAME` holds this generation's header (false after `rm`, and after a new
    /// segment took the name).
    pub fn is_current(&self) -> bool {
        let Some(path) = &self.path else {
            return true;
        };
        let b = Builder::new(&self.name);
        match sys::open_file(path, FileOpen::Inspect, None) {
            Ok(f) => read_header(&b, &f).is_ok_and(|h| h.token == self.header.token),
            Err(_) => false,
        }
    }

    /// A persistent segment's file, `DIR\shmem.NAME` (`None` for a transient one).
    pub fn path(&self) -> Option<&Path> {
        self.path.as_deref()
    }

    /// The DACL of the section in SDDL, as the kernel returns it (`GetSecurityInfo`); for a
    /// persistent segment, the file's (a file-backed section is unnamed and has none of its
    /// own worth reading). Compare with [`sddl_for_mode`] through
    /// [`canonical_sddl`].
    pub fn dacl(&self) -> Result<String> {
        let got = match &self.file {
            Some(f) => sys::dacl_of(f.as_handle(), ObjectType::File),
            None => sys::dacl_of(self._handle.as_handle(), ObjectType::Kernel),
        };
        got.map_err(|c| Error::Io {
            name: self.name.clone(),
            op: "GetSecurityInfo",
            source: std::io::Error::from_raw_os_error(c as i32),
        })
    }

    /// The header as validated when this handle attached.
    pub fn header(&self) -> &Header {
        &self.header
    }

    /// The number of data bytes (the segment's size less the 64-byte header).
    pub fn data_len(&self) -> usize {
        self.map.len() - HEADER_LEN
    }

    /// The first data byte. Other processes may write any byte at any time: access it only
    /// with atomics or volatile operations, never through `&`/`&mut` references.
    pub fn as_ptr(&self) -> *mut u8 {
        self.map.ptr().wrapping_add(HEADER_LEN)
    }

    /// Copies `buf.len()` data bytes starting at `offset` into `buf`. Not atomic: bytes that
    /// another process writes meanwhile may be old or new (use [`crate::Value`] for that).
    pub fn read(&self, offset: usize, buf: &mut [u8]) -> Result<()> {
        self.check_range(offset, buf.len())?;
        Shared::of(&self.map)
            .read(HEADER_LEN + offset, buf)
            .expect("`offset + len <= data_len`, checked above: inside the view");
        Ok(())
    }

    /// Copies `data` into the data area at `offset`. Not atomic for readers.
    pub fn write(&self, offset: usize, data: &[u8]) -> Result<()> {
        self.check_range(offset, data.len())?;
        Shared::of(&self.map)
            .write(HEADER_LEN + offset, data)
            .expect("`offset + len <= data_len`, checked above: inside the (writable) view");
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

    /// The whole view (header included), for the value layer.
    pub(crate) fn mapping(&self) -> &Mapping {
        &self.map
    }

    /// The descriptor for the events of this segment that this handle creates.
    pub(crate) fn event_security(&self) -> &Security {
        &self.event_security
    }
}

/// `sddl` in the canonical form the system prints DACLs in (parsed and printed again), so
/// that [`Segment::dacl`] and [`sddl_for_mode`] compare as strings.
pub fn canonical_sddl(sddl: &str) -> Result<String> {
    let io = |op, c: Code| Error::Io {
        name: String::new(),
        op,
        source: std::io::Error::from_raw_os_error(c as i32),
    };
    Security::from_sddl(sddl)
        .map_err(|c| io("ConvertStringSecurityDescriptor", c))?
        .dacl_sddl()
        .map_err(|c| io("ConvertSecurityDescriptorToStringSecurityDescriptor", c))
}

/// A persistent segment found in a directory by [`list_persistent`].
#[derive(Debug)]
pub struct Listed {
    /// The segment's name.
    pub name: String,
    /// Its file.
    pub path: PathBuf,
    /// Its header, or why it could not be read (`Corrupt`, `Foreign`, ...).
    pub header: Result<Header>,
}

/// The persistent segments in `dir` (files `shmem.NAME` with a valid name), sorted by name.
/// Each header is read through a shared open of the file, without mapping it; who holds a
/// segment is not known (Windows cannot tell which processes have a file open). Transient
/// segments cannot be listed at all: Windows has no call that enumerates named sections.
pub fn list_persistent(dir: &Path) -> Result<Vec<Listed>> {
    let entries = std::fs::read_dir(dir).map_err(|e| Error::Io {
        name: String::new(),
        op: "FindFirstFileW",
        source: std::io::Error::new(e.kind(), format!("{}: {e}", dir.display())),
    })?;
    let mut out = Vec::new();
    for entry in entries.flatten() {
        let file = entry.file_name();
        let Some(name) = file.to_str().and_then(name::name_of_file) else {
            continue;
        };
        let b = Builder::new(name).dir(dir);
        let header = match sys::open_file(&entry.path(), FileOpen::Inspect, None) {
            Ok(f) => read_header(&b, &f),
            Err(code) => Err(b.file_code_error("CreateFileW", code)),
        };
        out.push(Listed {
            name: name.to_owned(),
            path: entry.path(),
            header,
        });
    }
    out.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(out)
}

/// What [`collect_persistent`] did.
#[derive(Debug, Default)]
pub struct Collected {
    /// The segments removed (with `dry_run`: that nobody holds, which would be).
    pub removed: Vec<String>,
    /// The segments somebody holds, left alone.
    pub held: Vec<String>,
    /// Damaged, foreign or unreadable files, left alone, with why.
    pub skipped: Vec<(String, String)>,
}

/// Removes the persistent segments of `dir` that nobody holds (`shmem gc --persistent`).
/// The proof that nobody does is the kernel's: an open of the file that shares it with no
/// reader or writer succeeds only when no other handle has it open, and every holder keeps
/// one. While that open lasts nobody can join (a joiner waits for it, as for a creator), so
/// the file is deleted under it, after its header is checked again through it: a file that
/// is not a valid segment of ours is never removed.
pub fn collect_persistent(dir: &Path, dry_run: bool) -> Result<Collected> {
    let mut done = Collected::default();
    for l in list_persistent(dir)? {
        if let Err(e) = &l.header {
            done.skipped.push((l.name, e.to_string()));
            continue;
        }
        let b = Builder::new(&l.name).dir(dir);
        let alone = match sys::open_file(&l.path, FileOpen::Alone, None) {
            Ok(f) => f,
            Err(ERROR_SHARING_VIOLATION) => {
                done.held.push(l.name);
                continue;
            }
            Err(ERROR_FILE_NOT_FOUND) => continue, // removed meanwhile
            Err(code) => {
                let e = b.file_code_error("CreateFileW", code);
                done.skipped.push((l.name, e.to_string()));
                continue;
            }
        };
        if let Err(e) = read_header(&b, &alone) {
            done.skipped.push((l.name, e.to_string()));
            continue;
        }
        if !dry_run {
            // Delete pending under our handle (it shares deleting); gone when it closes.
            if let Err(e) = std::fs::remove_file(&l.path) {
                let e = b.file_error("DeleteFileW", &e);
                done.skipped.push((l.name, e.to_string()));
                continue;
            }
        }
        drop(alone);
        done.removed.push(l.name);
    }
    Ok(done)
}

/// The header of a persistent segment's file, checked as an open checks it.
fn read_header(b: &Builder, f: &File) -> Result<Header> {
    let corrupt = |reason: String| Error::Corrupt {
        name: b.name.clone(),
        reason,
    };
    let len = f
        .metadata()
        .map_err(|e| b.file_error("GetFileSizeEx", &e))?
        .len();
    if len < HEADER_LEN as u64 {
        return Err(corrupt(format!(
            "the file has {len} bytes, less than a header"
        )));
    }
    let mut head = [0u8; HEADER_LEN];
    read_exact_at(f, &mut head, 0).map_err(|e| b.file_error("ReadFile", &e))?;
    match header::parse(&b.name, &head, len)? {
        header::Parsed::Ready(h) => Ok(h),
        header::Parsed::Unfinished => Err(corrupt("the file has no magic number".into())),
    }
}

fn write_all_at(f: &File, mut buf: &[u8], mut offset: u64) -> std::io::Result<()> {
    while !buf.is_empty() {
        let n = f.seek_write(buf, offset)?;
        if n == 0 {
            return Err(std::io::ErrorKind::WriteZero.into());
        }
        buf = &buf[n..];
        offset += n as u64;
    }
    Ok(())
}

fn read_exact_at(f: &File, mut buf: &mut [u8], mut offset: u64) -> std::io::Result<()> {
    while !buf.is_empty() {
        let n = f.seek_read(buf, offset)?;
        if n == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        buf = &mut buf[n..];
        offset += n as u64;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::super::sys::{self, EventAccess, ObjectType};
    use super::*;
    use std::os::windows::io::AsHandle;

    /// The DACL of the named event `name`, read back from the kernel.
    fn event_dacl(name: &str) -> String {
        let h = sys::open_event(name, EventAccess::Inspect).unwrap();
        sys::dacl_of(h.as_handle(), ObjectType::Kernel).unwrap()
    }

    #[test]
    fn the_mode_is_the_dacl_of_the_lock_witness_and_waiter_events() {
        let me = user_sid().unwrap();
        let name = format!("wintest-unit-event-dacl-{}", std::process::id());
        let v = crate::Value::builder(&name)
            .capacity(64)
            .mode(0o640)
            .wait_spin(Duration::ZERO)
            .open()
            .unwrap();
        let obj = v.segment().object_name().to_owned();
        let want = canonical_sddl(&sddl_for_mode(0o640, Securable::Event, &me)).unwrap();
        assert_eq!(event_dacl(&format!("{obj}.lock")), want);
        v.set_str("x").unwrap(); // claims token 1: the witness OBJ.w.1
        assert_eq!(event_dacl(&format!("{obj}.w.1")), want);
        std::thread::scope(|s| {
            let waiter = s.spawn(|| v.wait_changed(1, Some(Duration::from_secs(60))));
            // The waiter's event, OBJ.v.1, exists once it is registered.
            let start = Instant::now();
            let h = loop {
                match sys::open_event(&format!("{obj}.v.1"), EventAccess::Inspect) {
                    Ok(h) => break h,
                    Err(_) => {
                        assert!(
                            start.elapsed() < Duration::from_secs(60),
                            "never registered"
                        );
                        std::thread::yield_now();
                    }
                }
            };
            assert_eq!(
                sys::dacl_of(h.as_handle(), ObjectType::Kernel).unwrap(),
                want
            );
            v.set_str("y").unwrap();
            assert_eq!(waiter.join().unwrap().unwrap(), 2);
        });
    }
}
