//! Windows segments: named file mappings backed by the page file.
//!
//! # The lifetime protocol
//!
//! A segment `NAME` is the section `Local\shmem.NAME` (or `Global\shmem.NAME`, see
//! [`Namespace`]), made by `CreateFileMappingW(INVALID_HANDLE_VALUE, ...)`. Each handle holds
//! one section handle and one view. The kernel counts both, and destroys the section when the
//! last goes, whether by drop, exit or `TerminateProcess`: there is nothing to unlink and
//! nothing stale to collect, which is the lifetime the Linux backend builds with OFD locks.
//!
//! **Attach.**
//! 1. Create: `CreateFileMappingW` with the full size. The kernel answers for the name
//!    atomically: either the section is new (zero-filled, `created = true`), or the call
//!    returns a handle to the existing one with `ERROR_ALREADY_EXISTS` (its size unchanged).
//!    Open only: `OpenFileMappingW`; `ERROR_FILE_NOT_FOUND` means nobody holds it.
//! 2. Map a view of the whole section (`MapViewOfFile`, size from `VirtualQuery`).
//! 3. The creator writes the header, magic last (Release). A joiner waits, with the attach
//!    timeout as its deadline, until it reads a nonzero magic (Acquire), then validates the
//!    header: the size it records must fit the view (which is whole pages), and is the size
//!    used from then on.
//!
//! **Detach**: unmap the view, close the handle. A creator that dies before writing the magic
//! leaves a section that joiners time out on; it is destroyed when they give up.
//!
//! # What differs from Linux
//!
//! - Persistent segments are refused with [`Error::Unsupported`]: a page-file section cannot
//!   outlive its last handle.
//! - No directory, file mode, path or inode: the namespace replaces the directory, and the
//!   section gets the creator's default security descriptor (its user, `SYSTEM` and the
//!   administrators), which cannot be loosened from here yet.
//! - No listing: Windows has no call that lists named sections, so there is no `admin`.

use std::os::windows::io::OwnedHandle;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use windows_sys::Win32::Foundation::{
    ERROR_ACCESS_DENIED, ERROR_COMMITMENT_LIMIT, ERROR_DISK_FULL, ERROR_FILE_NOT_FOUND,
    ERROR_INVALID_HANDLE, ERROR_NOT_ENOUGH_MEMORY,
};

use super::sys::{self, Code, Mapping, Opened};
use crate::copy;
use crate::error::{Error, Result};
use crate::header::{self, Header, Kind, Lifetime, Storage, HEADER_LEN};
use crate::name;

/// The largest segment we create: 1 TiB.
pub const MAX_SEGMENT_SIZE: u64 = 1 << 40;

/// The kernel object namespace a segment's name lives in.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub enum Namespace {
    /// `Local\`: the caller's session (the default, and what the seed used implicitly).
    #[default]
    Local,
    /// `Global\`: every session, for services and the programs that talk to them. Creating a
    /// section there needs `SeCreateGlobalPrivilege` (services, administrators); opening an
    /// existing one does not.
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
    data_len: u64,
    lifetime: Lifetime,
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
            data_len: 0,
            lifetime: Lifetime::Transient,
            namespace: Namespace::Local,
            attach_timeout: Duration::from_secs(10),
            check_size: true,
        }
    }

    /// The number of data bytes, not counting the 64-byte header. Needed to create a segment;
    /// when opening an existing one, the segment must have at least this many (0 accepts any).
    pub fn size(mut self, bytes: usize) -> Builder {
        self.data_len = bytes as u64;
        self
    }

    /// The lifetime of a newly created segment. Only [`Lifetime::Transient`] exists on
    /// Windows: asking for a persistent one fails with [`Error::Unsupported`] when opening.
    pub fn lifetime(mut self, lifetime: Lifetime) -> Builder {
        self.lifetime = lifetime;
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

    /// Opens the segment, creating it if nobody holds it (`CreateFileMappingW`).
    /// [`Segment::created`] tells whether this call created and zero-filled it.
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
        if self.lifetime == Lifetime::Persistent {
            return Err(Error::Unsupported {
                name: self.name.clone(),
                what: "a persistent segment (a Windows page-file section ends with its last \
                       handle)",
            });
        }
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
        let object = self.object_name();
        let (handle, created) = if mode == OpenMode::OpenExisting || self.data_len == 0 {
            match sys::open_mapping(&object) {
                Ok(h) => (h, false),
                Err(ERROR_FILE_NOT_FOUND) if mode == OpenMode::OpenOrCreate => {
                    return Err(invalid(
                        "the segment does not exist and a size of 0 bytes cannot be created".into(),
                    ))
                }
                Err(code) => return Err(self.open_error("OpenFileMappingW", code, total)),
            }
        } else {
            match sys::create_mapping(&object, total) {
                Ok((h, opened)) => (h, opened == Opened::Created),
                Err(code) => return Err(self.open_error("CreateFileMappingW", code, total)),
            }
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
            let h = Header::new(kind, self.lifetime, total, Storage::File, 0);
            map.raw_header().init(&h);
            self.validate(&map)?
        } else {
            self.wait_for_header(&map)?;
            self.validate(&map)?
        };
        map.set_len(header.size as usize);
        let seg = Segment {
            name: self.name.clone(),
            object,
            created,
            header,
            map,
            _handle: handle,
        };
        if mode == OpenMode::CreateNew && !created {
            return Err(Error::Exists {
                name: self.name.clone(),
                dir: self.where_(),
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
        Ok(seg)
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

    /// Validates the header against the view: the size it records must fit.
    fn validate(&self, map: &Mapping) -> Result<Header> {
        let head = map.header_bytes();
        let size = u64::from_le_bytes(head[24..32].try_into().expect("8 bytes"));
        if size > map.view_len() as u64 {
            return Err(Error::Corrupt {
                name: self.name.clone(),
                reason: format!(
                    "the header records {size} bytes but the section has {}",
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
    created: bool,
    header: Header,
    /// Declared before the handle: the view is unmapped first.
    map: Mapping,
    _handle: OwnedHandle,
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
    /// of the segment's events too.
    pub fn object_name(&self) -> &str {
        &self.object
    }

    /// Whether this handle created (and zero-filled) the section, the equivalent of
    /// `GetLastError() != ERROR_ALREADY_EXISTS` after `CreateFileMapping`.
    pub fn created(&self) -> bool {
        self.created
    }

    /// The lifetime its creator chose (always transient on Windows).
    pub fn lifetime(&self) -> Lifetime {
        self.header.lifetime
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
        // SAFETY: `offset + len <= data_len`, checked above, so the range is inside the view.
        unsafe { copy::copy_from_shared(buf, self.as_ptr().add(offset)) };
        Ok(())
    }

    /// Copies `data` into the data area at `offset`. Not atomic for readers.
    pub fn write(&self, offset: usize, data: &[u8]) -> Result<()> {
        self.check_range(offset, data.len())?;
        // SAFETY: `offset + len <= data_len`, checked above, so the range is inside the view.
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

    /// The whole view (header included), for the value layer.
    pub(crate) fn mapping(&self) -> &Mapping {
        &self.map
    }
}
