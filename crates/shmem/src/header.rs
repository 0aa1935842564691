//! The segment header: the first 64 bytes of every name file, and of every segment's memory.
//!
//! ```text
//! offset  size  field
//!      0     8  magic        "SHMEMSEG" (written last by the initialiser)
//!      8     4  layout       layout version, 3 (2 had no flags word: its writers would
//!                            not honour `WakePolicy`, so it is refused)
//!     12     4  kind         1 = raw bytes, 2 = a shared value (value.rs), 5 = a map
//!                            (map.rs, map layout 3); 3 and 4 were map layouts 1 and 2,
//!                            refused
//!     16     4  lifetime     1 = transient, 2 = persistent
//!     20     4  creator_pid  pid of the process that initialised this generation
//!     24     8  size         bytes of the segment's memory, this header included
//!     32     8  created_ns   creation time, nanoseconds since the Unix epoch
//!     40     4  storage      1 = file (the data follows in the name file), 2 = SysV
//!     44     4  shmid        the SysV segment's id (storage 2), else 0
//!     48     8  token        random, new for every generation
//!     56     4  flags        bit 0: every publish wakes (see [`WakePolicy`]); others zero
//!     60     4  reserved     zero
//! ```
//!
//! With file storage the name file *is* the segment: `size` is its length. With SysV storage
//! the name file is exactly this header (64 bytes) and the memory is SysV segment `shmid`,
//! whose own first 64 bytes carry the same header, so a joiner that attaches by id checks the
//! magic and `token` (ids are reused) before trusting it, and data still starts at
//! [`HEADER_LEN`] in both storages.
//!
//! The header is written once, by the initialiser, while it holds the exclusive lock (see
//! `platform/linux/segment.rs`), and only read afterwards. A peer may still scribble on it, so
//! every read goes through [`parse`], which checks every field against what this process knows
//! (the file length from `fstat`); a bad field is an error, never trusted.
//!
//! **Unfinished headers.** An initialiser writes everything but the magic first, then the
//! magic. So a file whose magic is 0 is "an initialiser died (or is at work)" only when the
//! rest is a consistent header of ours whose length fits (64 bytes for SysV storage, `size` for
//! file storage), or when the file is empty; any other file whose first 8 bytes are 0 is
//! foreign, and admin never touches it.

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::error::{Error, Result};

/// Length of the header in bytes; the data area starts here.
pub const HEADER_LEN: usize = 64;

/// The magic number, "SHMEMSEG" in little-endian byte order.
pub(crate) const MAGIC: u64 = u64::from_le_bytes(*b"SHMEMSEG");

/// The layout version this library reads and writes.
pub const LAYOUT_VERSION: u32 = 3;

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
#[non_exhaustive]
pub enum Kind {
    /// Raw bytes, for the caller to lay out ([`crate::Segment`]).
    Raw,
    /// A consistent shared value ([`crate::Value`]).
    Value,
    /// A multi-key store ([`crate::Map`]).
    Map,
}

/// The kind number of a map of the current map layout (3: the folded-multiply key hash,
/// `map.rs`).
const MAP_KIND: u32 = 5;
/// The kind numbers of map layouts 1 (no wait buckets) and 2 (the multiply-rotate key hash,
/// whose buckets this library would not find), which this library refuses, with the layout
/// each stands for.
const OLD_MAP_KINDS: [(u32, u32); 2] = [(3, 1), (4, 2)];

impl Kind {
    fn to_raw(self) -> u32 {
        match self {
            Kind::Raw => 1,
            Kind::Value => 2,
            Kind::Map => MAP_KIND,
        }
    }

    fn from_raw(v: u32) -> Option<Kind> {
        match v {
            1 => Some(Kind::Raw),
            2 => Some(Kind::Value),
            MAP_KIND => Some(Kind::Map),
            _ => None,
        }
    }

    /// `"raw"`, `"value"` or `"map"`.
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Raw => "raw",
            Kind::Value => "value",
            Kind::Map => "map",
        }
    }
}

/// Where a segment's memory lives.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Storage {
    /// In the name file itself (persistent segments, hugetlbfs directories): the file's pages
    /// live until the file is unlinked and unmapped.
    File,
    /// In a SysV shared-memory segment marked for removal at creation (transient segments on
    /// tmpfs): the kernel frees it when its last attachment goes, whatever way the process
    /// ends; the name file holds only the header.
    SysV,
}

impl Storage {
    fn to_raw(self) -> u32 {
        match self {
            Storage::File => 1,
            Storage::SysV => 2,
        }
    }

    fn from_raw(v: u32) -> Option<Storage> {
        match v {
            1 => Some(Storage::File),
            2 => Some(Storage::SysV),
            _ => None,
        }
    }

    /// `"file"` or `"sysv"`.
    pub fn as_str(self) -> &'static str {
        match self {
            Storage::File => "file",
            Storage::SysV => "sysv",
        }
    }
}

/// How the writers of a value or a map wake its waiters, fixed when a generation is created.
///
/// A waiter with write access announces itself (the `sleepers` flag, `seqlock.rs`; a map's
/// one-key waiter on its key's wait bucket) and writers make the `FUTEX_WAKE` system call only
/// when they find it. A waiter on a read-only handle cannot write that flag, so a value or map
/// generation whose mode lets users read it who cannot write it (group or other read without
/// write, as 0644 or 0640) is created with [`WakePolicy::EveryPublish`]: every publish wakes
/// the control line's waiters, announced or not (one system call per publish, for such
/// segments only), and read-only handles may wait (a map's read-only waiters, of one key or
/// of any, all sleep there). Decided from the name file's mode when the generation is made; a
/// later `chmod` applies to the next generation. Raw segments have no waits and stay
/// [`WakePolicy::Announced`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
#[non_exhaustive]
pub enum WakePolicy {
    /// Writers wake only announced waiters (no system call per publish otherwise); a
    /// read-only handle cannot wait on such a value or map.
    #[default]
    Announced,
    /// Every publish wakes, so read-only handles can wait too.
    EveryPublish,
}

/// Header flag bit 0: [`WakePolicy::EveryPublish`].
const FLAG_WAKE_EVERY_PUBLISH: u32 = 1;

impl WakePolicy {
    /// The policy a generation whose name file has `mode` gets: [`WakePolicy::EveryPublish`]
    /// when group or others may read without being able to write.
    pub fn for_mode(mode: u32) -> WakePolicy {
        let group_reads_only = mode & 0o040 != 0 && mode & 0o020 == 0;
        let others_read_only = mode & 0o004 != 0 && mode & 0o002 == 0;
        if group_reads_only || others_read_only {
            WakePolicy::EveryPublish
        } else {
            WakePolicy::Announced
        }
    }

    /// `"announced"` or `"every-publish"`.
    pub fn as_str(self) -> &'static str {
        match self {
            WakePolicy::Announced => "announced",
            WakePolicy::EveryPublish => "every-publish",
        }
    }

    fn to_flags(self) -> u32 {
        match self {
            WakePolicy::Announced => 0,
            WakePolicy::EveryPublish => FLAG_WAKE_EVERY_PUBLISH,
        }
    }
}

/// The header's fields, validated and copied out of shared memory.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Header {
    /// What the segment holds.
    pub kind: Kind,
    /// How long it lives.
    pub lifetime: Lifetime,
    /// The pid that initialised this generation.
    pub creator_pid: u32,
    /// Bytes of the segment's memory, header included.
    pub size: u64,
    /// When this generation was initialised.
    pub created: SystemTime,
    /// Where the memory lives.
    pub storage: Storage,
    /// The SysV segment's id (SysV storage only; 0 otherwise).
    pub shmid: i32,
    /// Random, new for every generation: what a joiner compares after attaching by id.
    pub token: u64,
    /// How writers of a value or map wake its waiters.
    pub wake: WakePolicy,
}

/// What a name file's first bytes say, when they are ours.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Parsed {
    /// A complete header.
    Ready(Header),
    /// An initialiser died or is at work: an empty file, or a consistent header without its
    /// magic in a file of the length that header implies.
    Unfinished,
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
    storage: AtomicU32,
    shmid: AtomicU32,
    token: AtomicU64,
    flags: AtomicU32,
    reserved: AtomicU32,
}

const _: () = assert!(std::mem::size_of::<RawHeader>() == HEADER_LEN);
const _: () = assert!(std::mem::align_of::<RawHeader>() == 8);

/// Reads a name file's header from raw bytes (a `pread` of `file_len` bytes' first 64).
///
/// Every field is checked; the magic 0 case is [`Parsed::Unfinished`] only as the module
/// documentation says.
pub(crate) fn parse(name: &str, bytes: &[u8], file_len: u64) -> Result<Parsed> {
    let foreign = |reason: String| Error::Foreign {
        name: name.to_owned(),
        reason,
    };
    if file_len == 0 && bytes.is_empty() {
        return Ok(Parsed::Unfinished);
    }
    if bytes.len() < HEADER_LEN {
        return Err(foreign(format!(
            "the file has {file_len} bytes, less than a header"
        )));
    }
    let magic = u64::from_le_bytes(bytes[0..8].try_into().expect("8 bytes"));
    if magic == 0 {
        let mut whole = [0u8; HEADER_LEN];
        whole.copy_from_slice(&bytes[..HEADER_LEN]);
        whole[0..8].copy_from_slice(&MAGIC.to_le_bytes());
        return match fields(name, &whole, file_len) {
            Ok(_) => Ok(Parsed::Unfinished),
            Err(_) => Err(foreign(format!(
                "its first 8 bytes are 0 but the rest is not an unfinished shmem header for a \
                 file of {file_len} bytes"
            ))),
        };
    }
    if magic != MAGIC {
        return Err(foreign(
            "the file does not start with the shmem magic number".into(),
        ));
    }
    fields(name, bytes, file_len).map(Parsed::Ready)
}

/// Checks every field of a header that starts with our magic.
fn fields(name: &str, bytes: &[u8], file_len: u64) -> Result<Header> {
    let corrupt = |reason: String| Error::Corrupt {
        name: name.to_owned(),
        reason,
    };
    let u32_at = |o: usize| u32::from_le_bytes(bytes[o..o + 4].try_into().expect("4 bytes"));
    let u64_at = |o: usize| u64::from_le_bytes(bytes[o..o + 8].try_into().expect("8 bytes"));
    let layout = u32_at(8);
    if layout != LAYOUT_VERSION {
        return Err(Error::Incompatible {
            name: name.to_owned(),
            reason: format!("layout version {layout}, this library reads {LAYOUT_VERSION}"),
        });
    }
    if let Some((_, old)) = OLD_MAP_KINDS.iter().find(|(k, _)| *k == u32_at(12)) {
        return Err(Error::Incompatible {
            name: name.to_owned(),
            reason: format!(
                "a map of map layout {old} (made by an older shmem); this library reads map \
                 layout 3"
            ),
        });
    }
    let kind = Kind::from_raw(u32_at(12))
        .ok_or_else(|| corrupt(format!("unknown kind {}", u32_at(12))))?;
    let lifetime = Lifetime::from_raw(u32_at(16))
        .ok_or_else(|| corrupt(format!("unknown lifetime {}", u32_at(16))))?;
    let storage = Storage::from_raw(u32_at(40))
        .ok_or_else(|| corrupt(format!("unknown storage {}", u32_at(40))))?;
    let size = u64_at(24);
    if size < HEADER_LEN as u64 {
        return Err(corrupt(format!("size {size} is smaller than the header")));
    }
    if size > crate::MAX_SEGMENT_SIZE {
        return Err(corrupt(format!(
            "size {size} is more than any segment ({} bytes)",
            crate::MAX_SEGMENT_SIZE
        )));
    }
    let shmid = u32_at(44) as i32;
    let flags = u32_at(56);
    if flags & !FLAG_WAKE_EVERY_PUBLISH != 0 {
        return Err(corrupt(format!("unknown flags {flags:#x}")));
    }
    let wake = if flags & FLAG_WAKE_EVERY_PUBLISH != 0 {
        WakePolicy::EveryPublish
    } else {
        WakePolicy::Announced
    };
    match storage {
        Storage::File if size != file_len => {
            return Err(corrupt(format!(
                "the header records {size} bytes but the file has {file_len}"
            )))
        }
        Storage::SysV if file_len != HEADER_LEN as u64 => {
            return Err(corrupt(format!(
                "a SysV segment's name file has {file_len} bytes, not {HEADER_LEN}"
            )))
        }
        Storage::SysV if shmid < 0 => {
            return Err(corrupt(format!("negative SysV id {shmid}")));
        }
        Storage::SysV if lifetime == Lifetime::Persistent => {
            return Err(corrupt("a persistent segment in SysV storage".into()));
        }
        _ => {}
    }
    Ok(Header {
        kind,
        lifetime,
        creator_pid: u32_at(20),
        size,
        created: UNIX_EPOCH + Duration::from_nanos(u64_at(32)),
        storage,
        shmid,
        token: u64_at(48),
        wake,
    })
}

/// Whether the header copied out of a SysV segment's memory is the one its name file
/// announced: our magic, the same token, size and kind. A mismatch means the id was reused by
/// another segment after ours was freed.
#[cfg_attr(not(target_os = "linux"), allow(dead_code))]
pub(crate) fn same_generation(bytes: &[u8; HEADER_LEN], expected: &Header) -> bool {
    let u32_at = |o: usize| u32::from_le_bytes(bytes[o..o + 4].try_into().expect("4 bytes"));
    let u64_at = |o: usize| u64::from_le_bytes(bytes[o..o + 8].try_into().expect("8 bytes"));
    u64_at(0) == MAGIC
        && u32_at(8) == LAYOUT_VERSION
        && u64_at(48) == expected.token
        && u64_at(24) == expected.size
        && Kind::from_raw(u32_at(12)) == Some(expected.kind)
}

impl Header {
    /// A header for a new generation created now by this process.
    pub(crate) fn new(
        kind: Kind,
        lifetime: Lifetime,
        size: u64,
        storage: Storage,
        shmid: i32,
    ) -> Header {
        Header {
            kind,
            lifetime,
            creator_pid: std::process::id(),
            size,
            created: SystemTime::now(),
            storage,
            shmid,
            token: random_token(),
            wake: WakePolicy::Announced,
        }
    }

    /// The same header with wake policy `wake`.
    #[cfg_attr(not(target_os = "linux"), allow(dead_code))]
    pub(crate) fn with_wake(mut self, wake: WakePolicy) -> Header {
        self.wake = wake;
        self
    }

    /// The 64 bytes of this header as they lie in a file, magic included.
    pub(crate) fn encode(&self) -> [u8; HEADER_LEN] {
        let mut b = [0u8; HEADER_LEN];
        let created = self
            .created
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX));
        b[0..8].copy_from_slice(&MAGIC.to_le_bytes());
        b[8..12].copy_from_slice(&LAYOUT_VERSION.to_le_bytes());
        b[12..16].copy_from_slice(&self.kind.to_raw().to_le_bytes());
        b[16..20].copy_from_slice(&self.lifetime.to_raw().to_le_bytes());
        b[20..24].copy_from_slice(&self.creator_pid.to_le_bytes());
        b[24..32].copy_from_slice(&self.size.to_le_bytes());
        b[32..40].copy_from_slice(&created.to_le_bytes());
        b[40..44].copy_from_slice(&self.storage.to_raw().to_le_bytes());
        b[44..48].copy_from_slice(&(self.shmid as u32).to_le_bytes());
        b[48..56].copy_from_slice(&self.token.to_le_bytes());
        b[56..60].copy_from_slice(&self.wake.to_flags().to_le_bytes());
        b
    }
}

/// 64 random bits from the kernel (`getrandom`), or, if that fails, from the clock and pid.
fn random_token() -> u64 {
    #[cfg(target_os = "linux")]
    let got = {
        let mut b = [0u8; 8];
        match rustix::rand::getrandom(&mut b, rustix::rand::GetRandomFlags::empty()) {
            Ok(8) => Some(u64::from_le_bytes(b)),
            _ => None,
        }
    };
    #[cfg(not(target_os = "linux"))]
    let got: Option<u64> = None;
    match got {
        Some(t) => t,
        None => {
            let now = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos() as u64);
            now.rotate_left(17) ^ u64::from(std::process::id()).wrapping_mul(0x9E37_79B9_7F4A_7C15)
        }
    }
}

impl RawHeader {
    /// Whether the initialiser has published the header (its magic is nonzero, Acquire: a
    /// Relaxed load and a fence, as `sync::LoadAcquire` for the protocols' atomics, which are
    /// loom's under `--cfg loom` while the header's are always `std`'s).
    #[cfg_attr(not(windows), allow(dead_code))]
    pub(crate) fn is_initialised(&self) -> bool {
        let magic = self.magic.load(Ordering::Relaxed);
        std::sync::atomic::fence(Ordering::Acquire);
        magic != 0
    }

    /// Writes `h` into shared memory; the magic goes last (Release) so that a crash part-way
    /// leaves magic 0.
    pub(crate) fn init(&self, h: &Header) {
        let b = h.encode();
        let u32_at = |o: usize| u32::from_le_bytes(b[o..o + 4].try_into().expect("4 bytes"));
        let u64_at = |o: usize| u64::from_le_bytes(b[o..o + 8].try_into().expect("8 bytes"));
        self.layout.store(u32_at(8), Ordering::Relaxed);
        self.kind.store(u32_at(12), Ordering::Relaxed);
        self.lifetime.store(u32_at(16), Ordering::Relaxed);
        self.creator_pid.store(u32_at(20), Ordering::Relaxed);
        self.size.store(u64_at(24), Ordering::Relaxed);
        self.created_ns.store(u64_at(32), Ordering::Relaxed);
        self.storage.store(u32_at(40), Ordering::Relaxed);
        self.shmid.store(u32_at(44), Ordering::Relaxed);
        self.token.store(u64_at(48), Ordering::Relaxed);
        self.flags.store(u32_at(56), Ordering::Relaxed);
        self.reserved.store(0, Ordering::Relaxed);
        self.magic.store(MAGIC, Ordering::Release);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bytes(kind: u32, lifetime: u32, size: u64, storage: u32) -> Vec<u8> {
        let mut b = vec![0u8; HEADER_LEN];
        b[0..8].copy_from_slice(&MAGIC.to_le_bytes());
        b[8..12].copy_from_slice(&LAYOUT_VERSION.to_le_bytes());
        b[12..16].copy_from_slice(&kind.to_le_bytes());
        b[16..20].copy_from_slice(&lifetime.to_le_bytes());
        b[24..32].copy_from_slice(&size.to_le_bytes());
        b[40..44].copy_from_slice(&storage.to_le_bytes());
        b
    }

    fn ready(p: Result<Parsed>) -> Header {
        match p {
            Ok(Parsed::Ready(h)) => h,
            other => panic!("not a ready header: {other:?}"),
        }
    }

    #[test]
    fn parses_good_headers_of_both_storages() {
        let h = ready(parse("t", &bytes(2, 1, 4096, 1), 4096));
        assert_eq!(
            (h.kind, h.lifetime, h.size, h.storage),
            (Kind::Value, Lifetime::Transient, 4096, Storage::File)
        );
        let h = ready(parse("t", &bytes(1, 1, 1 << 20, 2), 64));
        assert_eq!((h.size, h.storage), (1 << 20, Storage::SysV));
        let made = Header::new(Kind::Raw, Lifetime::Transient, 128, Storage::SysV, 7);
        let back = ready(parse("t", &made.encode(), 64));
        assert_eq!((back.shmid, back.token), (7, made.token));
        assert!(same_generation(&made.encode(), &made));
        let other = Header::new(Kind::Raw, Lifetime::Transient, 128, Storage::SysV, 7);
        assert!(!same_generation(&other.encode(), &made), "tokens differ");
    }

    #[test]
    fn magic_zero_is_unfinished_only_when_the_length_says_so() {
        assert_eq!(parse("t", &[], 0).unwrap(), Parsed::Unfinished);
        let mut b = bytes(1, 1, 128, 2);
        b[0..8].fill(0);
        assert_eq!(parse("t", &b, 64).unwrap(), Parsed::Unfinished);
        let mut b = bytes(1, 1, 4096, 1);
        b[0..8].fill(0);
        assert_eq!(parse("t", &b, 4096).unwrap(), Parsed::Unfinished);
        // A program's own file whose first bytes are 0: foreign, whatever its length.
        assert!(matches!(
            parse("t", &[0u8; 64], 64),
            Err(Error::Foreign { .. })
        ));
        assert!(matches!(
            parse("t", &[0u8; 64], 1 << 20),
            Err(Error::Foreign { .. })
        ));
        // A file-storage header without magic in a file of another length.
        assert!(matches!(parse("t", &b, 8192), Err(Error::Foreign { .. })));
        assert!(matches!(
            parse("t", &[0u8; 10], 10),
            Err(Error::Foreign { .. })
        ));
    }

    #[test]
    fn refuses_each_bad_field() {
        assert!(matches!(
            parse("t", b"garbage", 7),
            Err(Error::Foreign { .. })
        ));
        let mut b = bytes(1, 1, 128, 1);
        b[0] ^= 1;
        assert!(matches!(parse("t", &b, 128), Err(Error::Foreign { .. })));
        let mut b = bytes(1, 1, 128, 1);
        b[8] = 9;
        assert!(matches!(
            parse("t", &b, 128),
            Err(Error::Incompatible { .. })
        ));
        let corrupt = |b: &[u8], len: u64| matches!(parse("t", b, len), Err(Error::Corrupt { .. }));
        assert!(corrupt(&bytes(7, 1, 128, 1), 128));
        assert!(corrupt(&bytes(1, 0, 128, 1), 128));
        assert!(corrupt(&bytes(1, 1, 128, 9), 128));
        assert!(corrupt(&bytes(1, 1, 128, 1), 64));
        assert!(corrupt(&bytes(1, 1, 8, 1), 8));
        assert!(
            corrupt(&bytes(1, 1, 128, 2), 128),
            "SysV name file longer than a header"
        );
        assert!(corrupt(&bytes(1, 2, 128, 2), 64), "persistent SysV");
        let huge = 2u64 << 40;
        assert!(corrupt(&bytes(1, 1, huge, 1), huge), "2 TiB");
        let mut b = bytes(1, 1, 128, 1);
        b[56] = 2;
        assert!(corrupt(&b, 128), "unknown flag");
    }

    #[test]
    fn the_wake_policy_follows_the_mode_and_round_trips() {
        for (mode, policy) in [
            (0o600, WakePolicy::Announced),
            (0o660, WakePolicy::Announced),
            (0o666, WakePolicy::Announced),
            (0o644, WakePolicy::EveryPublish),
            (0o640, WakePolicy::EveryPublish),
            (0o664, WakePolicy::EveryPublish),
            (0o604, WakePolicy::EveryPublish),
        ] {
            assert_eq!(WakePolicy::for_mode(mode), policy, "mode {mode:o}");
        }
        let made = Header::new(Kind::Value, Lifetime::Transient, 128, Storage::SysV, 3)
            .with_wake(WakePolicy::EveryPublish);
        assert_eq!(
            ready(parse("t", &made.encode(), 64)).wake,
            WakePolicy::EveryPublish
        );
        let plain = Header::new(Kind::Value, Lifetime::Transient, 128, Storage::SysV, 3);
        assert_eq!(
            ready(parse("t", &plain.encode(), 64)).wake,
            WakePolicy::Announced
        );
        // A map's header carries the flag too (its read-only handles wait on it).
        let map = Header::new(Kind::Map, Lifetime::Transient, 128, Storage::SysV, 3)
            .with_wake(WakePolicy::EveryPublish);
        let parsed = ready(parse("t", &map.encode(), 64));
        assert_eq!(
            (parsed.kind, parsed.wake),
            (Kind::Map, WakePolicy::EveryPublish)
        );
    }

    #[test]
    fn segments_of_layout_2_are_refused_since_their_writers_ignore_the_wake_policy() {
        let mut old = bytes(2, 1, 128, 1);
        old[8..12].copy_from_slice(&2u32.to_le_bytes());
        old[56..60].copy_from_slice(&1u32.to_le_bytes()); // the flag its writers never read
        match parse("t", &old, 128) {
            Err(e @ Error::Incompatible { .. }) => {
                assert!(e.to_string().contains("layout version 2"), "{e}")
            }
            other => panic!("layout 2 gave {other:?}"),
        }
        assert_eq!(
            ready(parse("t", &bytes(2, 1, 128, 1), 128)).kind,
            Kind::Value
        );
    }

    #[test]
    fn maps_of_the_old_map_layouts_are_refused_by_name() {
        assert_eq!(
            match parse("t", &bytes(5, 1, 128, 1), 128) {
                Ok(Parsed::Ready(h)) => Some(h.kind),
                _ => None,
            },
            Some(Kind::Map)
        );
        for (kind, layout) in [(3, 1), (4, 2)] {
            match parse("t", &bytes(kind, 1, 128, 1), 128) {
                Err(e @ Error::Incompatible { .. }) => assert!(
                    e.to_string().contains(&format!("map layout {layout}")),
                    "{e}"
                ),
                other => panic!("map layout {layout} gave {other:?}"),
            }
        }
    }
}
