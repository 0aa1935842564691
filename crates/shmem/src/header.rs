//! The segment header: the first 64 bytes of every segment file.
//!
//! ```text
//! offset  size  field
//!      0     8  magic        "SHMEMSEG" (written last by the initialiser, Release)
//!      8     4  layout       layout version, 1
//!     12     4  kind         1 = raw bytes, 2 = a shared value (value.rs)
//!     16     4  lifetime     1 = transient, 2 = persistent
//!     20     4  creator_pid  pid of the process that initialised this generation
//!     24     8  size         total file size in bytes, header included
//!     32     8  created_ns   creation time, nanoseconds since the Unix epoch
//!     40    24  reserved     zero
//! ```
//!
//! The header is written once, by the initialiser, while it holds the exclusive lock (see
//! `segment.rs`), and only read afterwards. A peer may still scribble on it, so every read goes
//! through [`parse`], which checks every field against what this process knows (the file size
//! from `fstat`); a bad field is an error, never trusted.

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::error::{Error, Result};

/// Length of the header in bytes; the data area starts here.
pub const HEADER_LEN: usize = 64;

/// The magic number, "SHMEMSEG" in little-endian byte order.
pub(crate) const MAGIC: u64 = u64::from_le_bytes(*b"SHMEMSEG");

/// The layout version this library reads and writes.
pub const LAYOUT_VERSION: u32 = 1;

/// How long a segment lives.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub enum Lifetime {
    /// Freed when the last process that has it open detaches (drop, exit or crash), like a
    /// Windows named file mapping. The next opener gets a fresh, zero-filled segment.
    #[default]
    Transient,
    /// Stays until removed explicitly, like a file.
    Persistent,
}

impl Lifetime {
    fn to_raw(self) -> u32 {
        match self {
            Lifetime::Transient => 1,
            Lifetime::Persistent => 2,
        }
    }

    fn from_raw(v: u32) -> Option<Lifetime> {
        match v {
            1 => Some(Lifetime::Transient),
            2 => Some(Lifetime::Persistent),
            _ => None,
        }
    }

    /// `"transient"` or `"persistent"`.
    pub fn as_str(self) -> &'static str {
        match self {
            Lifetime::Transient => "transient",
            Lifetime::Persistent => "persistent",
        }
    }
}

/// What a segment holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Kind {
    /// Raw bytes, for the caller to lay out ([`crate::Segment`]).
    Raw,
    /// A consistent shared value ([`crate::Value`]).
    Value,
}

impl Kind {
    fn to_raw(self) -> u32 {
        match self {
            Kind::Raw => 1,
            Kind::Value => 2,
        }
    }

    fn from_raw(v: u32) -> Option<Kind> {
        match v {
            1 => Some(Kind::Raw),
            2 => Some(Kind::Value),
            _ => None,
        }
    }

    /// `"raw"` or `"value"`.
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Raw => "raw",
            Kind::Value => "value",
        }
    }
}

/// The header's fields, validated and copied out of shared memory.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Header {
    /// What the segment holds.
    pub kind: Kind,
    /// How long it lives.
    pub lifetime: Lifetime,
    /// The pid that initialised this generation.
    pub creator_pid: u32,
    /// Total file size, header included.
    pub size: u64,
    /// When this generation was initialised.
    pub created: SystemTime,
}

/// The header as it lies in shared memory.
#[repr(C)]
pub(crate) struct RawHeader {
    magic: AtomicU64,
    layout: AtomicU32,
    kind: AtomicU32,
    lifetime: AtomicU32,
    creator_pid: AtomicU32,
    size: AtomicU64,
    created_ns: AtomicU64,
    reserved: [AtomicU64; 3],
}

const _: () = assert!(std::mem::size_of::<RawHeader>() == HEADER_LEN);
const _: () = assert!(std::mem::align_of::<RawHeader>() == 8);

/// Reads a header from raw bytes (a `pread` of an unmapped file, or a copy out of a mapping).
///
/// Returns `Ok(None)` when the magic is zero: an initialiser created the file but died (or is
/// still working) before it finished.
pub(crate) fn parse(name: &str, bytes: &[u8], file_len: u64) -> Result<Option<Header>> {
    let corrupt = |reason: String| Error::Corrupt {
        name: name.to_owned(),
        reason,
    };
    if bytes.len() < HEADER_LEN {
        // An initialiser that died before `fallocate` leaves an empty (or zero) file; anything
        // else this short is not ours.
        if bytes.iter().all(|&b| b == 0) {
            return Ok(None);
        }
        return Err(Error::Foreign {
            name: name.to_owned(),
            reason: format!("the file has {} bytes, less than a header", bytes.len()),
        });
    }
    let u32_at = |o: usize| u32::from_le_bytes(bytes[o..o + 4].try_into().expect("4 bytes"));
    let u64_at = |o: usize| u64::from_le_bytes(bytes[o..o + 8].try_into().expect("8 bytes"));
    let magic = u64_at(0);
    if magic == 0 {
        return Ok(None);
    }
    if magic != MAGIC {
        return Err(Error::Foreign {
            name: name.to_owned(),
            reason: "the file does not start with the shmem magic number".into(),
        });
    }
    let layout = u32_at(8);
    if layout != LAYOUT_VERSION {
        return Err(Error::Incompatible {
            name: name.to_owned(),
            reason: format!("layout version {layout}, this library reads {LAYOUT_VERSION}"),
        });
    }
    let kind = Kind::from_raw(u32_at(12))
        .ok_or_else(|| corrupt(format!("unknown kind {}", u32_at(12))))?;
    let lifetime = Lifetime::from_raw(u32_at(16))
        .ok_or_else(|| corrupt(format!("unknown lifetime {}", u32_at(16))))?;
    let size = u64_at(24);
    if size != file_len {
        return Err(corrupt(format!(
            "the header records {size} bytes but the file has {file_len}"
        )));
    }
    if size < HEADER_LEN as u64 {
        return Err(corrupt(format!("size {size} is smaller than the header")));
    }
    Ok(Some(Header {
        kind,
        lifetime,
        creator_pid: u32_at(20),
        size,
        created: UNIX_EPOCH + Duration::from_nanos(u64_at(32)),
    }))
}

impl RawHeader {
    /// Whether the initialiser has published the header (its magic is nonzero, Acquire).
    #[cfg_attr(not(windows), allow(dead_code))]
    pub(crate) fn is_initialised(&self) -> bool {
        self.magic.load(Ordering::Acquire) != 0
    }

    /// Writes a fresh header; the magic goes last so that a crash part-way leaves magic 0.
    pub(crate) fn init(&self, kind: Kind, lifetime: Lifetime, size: u64) {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX));
        self.layout.store(LAYOUT_VERSION, Ordering::Relaxed);
        self.kind.store(kind.to_raw(), Ordering::Relaxed);
        self.lifetime.store(lifetime.to_raw(), Ordering::Relaxed);
        self.creator_pid
            .store(std::process::id(), Ordering::Relaxed);
        self.size.store(size, Ordering::Relaxed);
        self.created_ns.store(now, Ordering::Relaxed);
        for r in &self.reserved {
            r.store(0, Ordering::Relaxed);
        }
        self.magic.store(MAGIC, Ordering::Release);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bytes(kind: u32, lifetime: u32, size: u64) -> Vec<u8> {
        let mut b = vec![0u8; HEADER_LEN];
        b[0..8].copy_from_slice(&MAGIC.to_le_bytes());
        b[8..12].copy_from_slice(&LAYOUT_VERSION.to_le_bytes());
        b[12..16].copy_from_slice(&kind.to_le_bytes());
        b[16..20].copy_from_slice(&lifetime.to_le_bytes());
        b[24..32].copy_from_slice(&size.to_le_bytes());
        b
    }

    #[test]
    fn parses_a_good_header() {
        let h = parse("t", &bytes(2, 1, 4096), 4096).unwrap().unwrap();
        assert_eq!(
            (h.kind, h.lifetime, h.size),
            (Kind::Value, Lifetime::Transient, 4096)
        );
    }

    #[test]
    fn refuses_each_bad_field() {
        assert!(parse("t", &[0u8; 64], 64).unwrap().is_none());
        assert!(parse("t", &[0u8; 10], 10).unwrap().is_none());
        assert!(matches!(
            parse("t", b"garbage", 7),
            Err(Error::Foreign { .. })
        ));
        let mut b = bytes(1, 1, 128);
        b[0] ^= 1;
        assert!(matches!(parse("t", &b, 128), Err(Error::Foreign { .. })));
        let mut b = bytes(1, 1, 128);
        b[8] = 9;
        assert!(matches!(
            parse("t", &b, 128),
            Err(Error::Incompatible { .. })
        ));
        assert!(matches!(
            parse("t", &bytes(7, 1, 128), 128),
            Err(Error::Corrupt { .. })
        ));
        assert!(matches!(
            parse("t", &bytes(1, 0, 128), 128),
            Err(Error::Corrupt { .. })
        ));
        assert!(matches!(
            parse("t", &bytes(1, 1, 128), 64),
            Err(Error::Corrupt { .. })
        ));
        assert!(matches!(
            parse("t", &bytes(1, 1, 8), 8),
            Err(Error::Corrupt { .. })
        ));
    }
}
