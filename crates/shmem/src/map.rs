//! A multi-key store in one segment: keys created at run time, values of any size that fits,
//! several crash-safe writers, lock-free readers that never see a torn entry, and waits on one
//! key or on any key.
//!
//! # Design: two copies of the whole table ("left-right with seqlock validation")
//!
//! The segment holds two complete copies of a hash table. Published map version `v` lives in
//! copy `v & 1`; the other copy lags one operation behind (state `v - 1`) unless a writer died
//! in it. A writer (holding the writers' lock of `wlock.rs`, exactly as for a `Value`) brings
//! the other copy to state `v` (replaying op `v` from the last-op record, or rebuilding it from
//! the published copy), applies its own operation to it, and publishes `v + 1`. Readers run a
//! seqlock over the published copy. `protocol.rs` states the protocol and its orderings and is
//! what the loom model checks run.
//!
//! Why this and not the alternatives:
//! - *Per-entry seqlocks* (one seqlock per record, writers update in place) need a separate
//!   protocol for the index itself: an insert that moves entries (probing, compaction) or a
//!   delete races with readers of other keys, and a writer killed mid-compaction leaves an
//!   index that no reader can use until someone repairs it. Here the index and the data of one
//!   copy are always published together, so compaction is just another operation.
//! - *Copy-on-write with a published pointer* needs a free-space allocator that knows when no
//!   reader still reads an old version (epochs, hazard pointers); across processes that means
//!   per-reader state in shared memory, which dead readers leak. Two copies give the same
//!   guarantee with no per-reader state: a reader of `v` is disturbed only by the writer of
//!   `v + 2`, and then the copy's sequence has moved, so it retries.
//! - The cost: every operation is done twice (once per copy, the second time by the next
//!   writer, as a replay), and the segment holds the table twice. Reads touch one copy only.
//!
//! # Layout (offsets from the start of the segment file; all derived from the file size)
//!
//! ```text
//!    0  segment header (header.rs), kind = map
//!   64  control (seqlock::Control): version = map version, wake, sleepers, lock, claims,
//!       hold_off
//!  128  last-op record (320 B): version u64 (0 while being written), kind u32 (1 set,
//!       2 delete), key_len u32, key [255]
//!  448  wait buckets: 64 x (wake u32, sleepers u32) (protocol::WaitBucket), the channels
//!       of `wait_changed(key)`: a key sleeps on bucket `tag & 63` only
//!  960  copy 0: meta line (protocol::CopyMeta: seq, state, bump, count)
//!               B buckets of u64 (0 empty, else tag << 32 | (heap offset / 8 + 1))
//!               heap of H bytes: records (key_len u16, 0 u16, val_len u32, version u64,
//!               key zero-padded to a multiple of 8, value), each 8-aligned
//!  960 + C  copy 1 (C = 64 + 8 B + H)
//!  960 + 2C  the platform's trailer (`platform::TRAILER_LEN` bytes): none on Linux; on
//!       Windows the waiters' table (`platform/windows/mod.rs`), which records each sleeping
//!       waiter's channel (0: `wait_any`, `b + 1`: wait bucket `b`)
//! ```
//!
//! This is map layout 3 (header kind 5); layouts 1 (kind 3, no wait buckets) and 2 (kind 4,
//! the multiply-rotate key hash, so its keys sit in other buckets, and keys not padded in
//! their records) are refused with [`Error::Incompatible`]. The trailer goes last, as after a
//! value's slots: everything up to it is the same on every platform, its offset follows from
//! the sizes like the rest, and no segment is ever shared between a Linux and a Windows
//! kernel, so only its length differs.
//! All-zero memory is a valid trailer too (no waiter registered).
//!
//! `H` is the capacity asked for, rounded up to 64; `B` the next power of two at least
//! `max(16, H / 48)`. At most 3/4 of `B` keys live at once. Both are recomputed from the file
//! size at open (the function from `H` to the file size is strictly increasing, so it has one
//! inverse), never read from the segment.
//!
//! # Index and allocation
//! Open addressing with linear probing over a fixed, unseeded 64-bit hash (so that every
//! process agrees; see [`hash`]: two folded multiplies for a key of up to 16 bytes): the tag
//! is the hash's upper 32 bits and a key's home bucket is the tag's top bits, a function of
//! the tag alone, so that a bucket word alone tells where its entry belongs. A lookup hashes
//! the key once into its two words ([`Key`]), reads bucket words, passing those whose tag
//! differs without reading their record; for a matching tag it loads the record's header
//! words and compares the key's whole words in place (atomic loads, no copy, no mask: the
//! record's key is zero-padded to a word), then copies the value out. A key of up to 16 bytes
//! is probed from its tag, length and two words alone ([`View::find_short`]; `get_into`'s
//! [`ShortLook`]), so a lookup keeps few values live and they stay in registers. The
//! undisturbed pass is one straight run with no retry state ([`Map::look`],
//! [`Map::look_once`]). Deletion shifts the following entries back (no tombstones), so probe
//! sequences never grow with churn.
//! Records are bump-allocated; an overwrite reuses the old record's space when the new one
//! fits it. When the heap is full the writer rebuilds its copy compacted from the published
//! copy's live entries (the published copy is stable while the lock is held) and retries; if
//! the record still does not fit, or the table holds 3/4 B keys, the copy is left at the
//! published state and the writer returns [`Error::MapFull`]: nothing changes. So a map whose
//! live records fit the heap never runs out, however long it is rewritten.
//!
//! # Hostile bytes
//! Everything read from the segment is untrusted: bucket words, record headers, lengths,
//! counts, the last-op record. Every access goes through [`Shared`], whose methods check the
//! offset and length against what this process mapped and return `None` otherwise, or through
//! a [`Whole`] view (a reader's pass), checked once against a geometry derived from the file
//! size, never from the segment's bytes, which hands out the fixed parts (control and meta
//! lines, a copy's bucket and heap words). Offsets read from the segment are checked against
//! the copy's heap words (slice accesses that return `None` outside). A probe visits at most
//! `B` buckets. Readers treat an inconsistency as a retry and report [`Error::Corrupt`] when it
//! persists (the caller's deadline, as for `Value`); writers rebuild their copy from the
//! published one, and report `Corrupt` if that is itself unusable.
//!
//! # Read-only handles (Linux)
//! A map opened read-only (`MapBuilder::access(Access::ReadOnly)`: the name file `O_RDONLY`,
//! SysV `SHM_RDONLY`, file storage `PROT_READ`) never writes the segment, as a value's
//! read-only handle (`value.rs`): `set` and `delete` are refused with
//! [`Error::PermissionDenied`] before any lock or word is touched. Its reader never asks
//! writers to hold off (a write of `hold_off`): the undisturbed pass is the same for every
//! handle, and only the cold retry path ([`Map::look_disturbed`]) differs, bounded by the
//! read deadline alone (`retry.rs`, `Corrupt` after 2 s saying so). Its waiter cannot set a
//! `sleepers` flag, neither the control line's nor a wait bucket's, so it needs writers that
//! wake without being asked: a map created with a mode that lets group or others read
//! without writing (0644, 0640) records `WakePolicy::EveryPublish`, and every publish on it
//! makes the wake call on channel 0 (the control line) whatever its flag says, besides the
//! usual wake of the key's bucket when a bucket waiter announced itself: one system call per
//! `set` or `delete`, not two. A read-only waiter, for `wait_any` and for `wait_changed(key)`
//! alike, sleeps unannounced on channel 0 and on its handle's private cancel word
//! (`Writer::wait_unannounced`, as `Value`'s read-only wait): a one-key read-only waiter is
//! therefore woken by every publish of the map, not only of its bucket, and re-checks its
//! key's version each time (the bucket's word alone would not do: no publisher wakes a bucket
//! unannounced). On a map without the policy a read-only wait is refused with a permission
//! error (open it read-write to wait), unless the awaited change is already there.
//! `wake_waiters` on a read-only handle wakes its own waiters only (the cancel word).

pub(crate) mod protocol;

use std::time::{Duration, Instant};

use crate::error::{Error, Result};
use crate::header::{Lifetime, HEADER_LEN};
use crate::platform::shared::{read_words, Parts, PartsIn, Shared};
use crate::retry::{ask_hold_off, Backoff};
use crate::segment::{Builder, Segment};
use crate::seqlock::{self, Control};
use crate::sync::LoadAcquire;
use crate::sync::{AtomicU64, Ordering};
use crate::writer::{self, Channel, Site, WaitFor, Writer};
use protocol::{Applied, CatchUp, CopyMeta, Pass, WaitBucket, WAIT_BUCKETS};

/// The longest key, in bytes.
pub const MAX_KEY_LEN: usize = 255;

const CTRL_OFFSET: usize = HEADER_LEN;
const LAST_OP_OFFSET: usize = CTRL_OFFSET + 64;
const LAST_OP_LEN: usize = 320;
const WAIT_OFFSET: usize = LAST_OP_OFFSET + LAST_OP_LEN;
const COPIES_OFFSET: usize = WAIT_OFFSET + 8 * WAIT_BUCKETS;
const META_LEN: usize = 64;
const ALIGN: usize = 64;
const MIN_BUCKETS: usize = 16;
/// Heap bytes per bucket: a table sized for records of about 48 bytes on average.
const BYTES_PER_BUCKET: usize = 48;
const RECORD_HEADER: usize = 16;
/// A slot word's offset field is 32 bits of (offset / 8 + 1).
const MAX_HEAP: usize = (u32::MAX as usize - 1) * 8;

const _: () = assert!(16 + MAX_KEY_LEN <= LAST_OP_LEN);
const _: () = assert!(COPIES_OFFSET % ALIGN == 0 && WAIT_OFFSET % ALIGN == 0);
#[cfg(not(loom))]
const _: () = assert!(std::mem::size_of::<[WaitBucket; WAIT_BUCKETS]>() == 8 * WAIT_BUCKETS);
const _: () = assert!((WAIT_BUCKETS as u32) < crate::platform::MAX_CHANNELS); // channels 0..=64

/// Bytes the platform appends after the two copies (the Windows waiters' table).
const TRAILER: usize = crate::platform::TRAILER_LEN;

const OP_SET: u32 = 1;
const OP_DELETE: u32 = 2;

/// The hash's constants: digits of pi. No aligned 8 bytes of valid UTF-8 equal one of them
/// (each holds a byte that cannot follow the byte before it), so text keys never meet the
/// degenerate case of a folded multiply (a factor of zero); a byte key that does only costs
/// more tag collisions, never a wrong answer (keys are compared in full).
const SEEDS: [u64; 4] = [
    0x243f_6a88_85a3_08d3,
    0x1319_8a2e_0370_7344,
    0xa409_3822_299f_31d0,
    0x082e_fa98_ec4e_6c89,
];

/// The folded multiply: the two halves of the 128-bit product, xored. One `mul` (a few
/// cycles); every output bit depends on most input bits.
#[inline(always)]
fn fold(a: u64, b: u64) -> u64 {
    let p = u128::from(a) * u128::from(b);
    (p as u64) ^ (p >> 64) as u64
}

/// Folds two key words (16 bytes) into the accumulator.
#[inline(always)]
fn hash_pair(acc: u64, a: u64, b: u64) -> u64 {
    fold(a ^ SEEDS[0] ^ acc, b ^ SEEDS[1])
}

/// The last fold: the key's length mixed in, and one more multiply over the accumulator.
#[inline(always)]
fn hash_finish(acc: u64, len: usize) -> u64 {
    fold(acc ^ SEEDS[2], SEEDS[3] ^ len as u64)
}

/// The key hash: fixed and unseeded, so that every process computes the same buckets; part of
/// the map layout (its values are pinned by a test). The key is read as little-endian words,
/// the last one zero-padded; each pair of words is folded into an accumulator with one
/// folded multiply ([`fold`], as foldhash does), and a last fold mixes in the length. A key of
/// up to 16 bytes (most) costs two multiplies in a row: the hash is on the path from the key
/// to the bucket load, so its latency is a lookup's: that is why it replaced map layout 2's
/// hash (a multiply-rotate step per word, then a three-multiply finalizer). Keys of up to 16
/// bytes take [`Key::new`]'s path, from the two words it keeps.
#[inline]
fn hash(key: &[u8]) -> u64 {
    let n = key.len();
    if n <= 16 {
        return Key::new(key).hash;
    }
    let word = |i: usize| u64::from_le_bytes(key[i..i + 8].try_into().expect("8 bytes"));
    let mut acc = 0;
    let whole = n - n % 16;
    for i in (0..whole).step_by(16) {
        acc = hash_pair(acc, word(i), word(i + 8));
    }
    let r = n - whole; // 0..=15 bytes left, with at least 16 before them
    if r >= 8 {
        let b = if r > 8 { tail_word(key, whole + 8) } else { 0 };
        acc = hash_pair(acc, word(whole), b);
    } else if r > 0 {
        acc = hash_pair(acc, tail_word(key, whole), 0);
    }
    hash_finish(acc, n)
}

/// A key being looked up, hashed once: its tag and, for keys of up to 16 bytes (most), its
/// two zero-padded little-endian words, which the hash folds in and the probe compares with
/// the record's key words (no loop, no second pass over the bytes).
#[derive(Clone, Copy, Debug)]
struct Key<'k> {
    bytes: &'k [u8],
    hash: u64,
    /// Words 0 and 1 of a key of up to 16 bytes (zero past its end); unused for longer keys.
    words: [u64; 2],
}

impl<'k> Key<'k> {
    /// `bytes` must be a checked key (1 to [`MAX_KEY_LEN`] bytes).
    #[inline(always)]
    fn new(bytes: &'k [u8]) -> Key<'k> {
        let n = bytes.len();
        if n > 16 {
            return Key {
                bytes,
                hash: hash(bytes),
                words: [0; 2],
            };
        }
        let words = short_words(bytes);
        Key {
            bytes,
            hash: short_hash(words, n),
            words,
        }
    }

    /// The 32-bit tag stored in the key's bucket word: the hash's upper half.
    #[inline(always)]
    fn tag(&self) -> u32 {
        hash_tag(self.hash)
    }
}

/// The hash of a key of `n` bytes, 1 to 16, from its two words ([`short_words`]): what
/// [`hash`] computes for it, in two folded multiplies.
#[inline(always)]
fn short_hash(words: [u64; 2], n: usize) -> u64 {
    hash_finish(hash_pair(0, words[0], words[1]), n)
}

/// The tag of a key of this hash: the bucket word's upper half.
#[inline(always)]
fn hash_tag(hash: u64) -> u32 {
    (hash >> 32) as u32
}

/// The two zero-padded little-endian words of a key of at most 16 bytes (zero past its end).
#[inline(always)]
fn short_words(bytes: &[u8]) -> [u64; 2] {
    let n = bytes.len();
    debug_assert!(n <= 16);
    let word = |i: usize| u64::from_le_bytes(bytes[i..i + 8].try_into().expect("8 bytes"));
    if n >= 8 {
        // Bytes 8.. of the key: its last 8 bytes shifted down past those before byte 8
        // (none for 16 bytes), the zero-padded word `tail_word` gives, in one branch.
        let w1 = if n > 8 {
            word(n - 8) >> (8 * (16 - n))
        } else {
            0
        };
        [word(0), w1]
    } else if n == 0 {
        [0, 0]
    } else {
        [padded_word(bytes), 0]
    }
}

/// The zero-padded little-endian word of `key[start..]`, 1 to 7 bytes: when the key has 8
/// bytes before its end, one load of its last 8 shifted down (the same word, fewer
/// instructions), else [`padded_word`].
#[inline]
fn tail_word(key: &[u8], start: usize) -> u64 {
    let n = key.len();
    debug_assert!((1..8).contains(&(n - start)));
    if n >= 8 {
        let last = u64::from_le_bytes(key[n - 8..].try_into().expect("8 bytes"));
        last >> (8 * (8 - (n - start)))
    } else {
        padded_word(&key[start..])
    }
}

/// The little-endian word of 1 to 7 bytes, zero-padded: two overlapping loads (or three byte
/// loads), not a loop over the bytes; the same word as folding them in one by one.
#[inline]
fn padded_word(rest: &[u8]) -> u64 {
    let n = rest.len();
    debug_assert!((1..8).contains(&n));
    if n >= 4 {
        let half = |i: usize| {
            u64::from(u32::from_le_bytes([
                rest[i],
                rest[i + 1],
                rest[i + 2],
                rest[i + 3],
            ]))
        };
        half(0) | half(n - 4) << (8 * (n - 4))
    } else {
        let byte = |i: usize| u64::from(rest[i]) << (8 * i);
        byte(0) | byte(n / 2) | byte(n - 1)
    }
}

/// The 32-bit tag stored in a key's bucket word: the hash's upper half.
#[inline]
fn tag_of(key: &[u8]) -> u32 {
    Key::new(key).tag()
}

/// A tag's home bucket among `2^bits` (4 to 32): the tag's top bits (the hash's, which the
/// folds mix well), so that the home is a function of the bucket word alone, which
/// deletion's backward shift needs. The wait bucket takes the tag's low bits.
#[inline]
fn home_of(tag: u32, bits: u32) -> usize {
    (tag >> (32 - bits)) as usize
}

/// The bytes a key takes in a record: its own, zero-padded to a whole word, so that a probe
/// compares whole words (no mask) and the value starts on a word.
#[inline(always)]
fn key_span(key_len: usize) -> usize {
    key_len.div_ceil(8) * 8
}

/// The heap bytes a record of this key and value takes.
fn record_size(key_len: usize, val_len: usize) -> Option<usize> {
    RECORD_HEADER
        .checked_add(key_span(key_len))?
        .checked_add(val_len)?
        .checked_next_multiple_of(8)
}

fn buckets_for(heap: usize) -> usize {
    (heap / BYTES_PER_BUCKET)
        .max(MIN_BUCKETS)
        .next_power_of_two()
}

/// The sizes of a map segment.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Layout {
    /// Buckets per copy (a power of two).
    buckets: usize,
    /// Heap bytes per copy (a multiple of 64).
    heap: usize,
}

impl Layout {
    fn for_capacity(capacity: usize) -> Option<Layout> {
        let heap = capacity.checked_next_multiple_of(ALIGN)?.max(ALIGN);
        if heap > MAX_HEAP {
            return None;
        }
        let l = Layout {
            buckets: buckets_for(heap),
            heap,
        };
        l.file_size()?;
        Some(l)
    }

    fn from_size(size: u64) -> Option<Layout> {
        let rest = usize::try_from(size)
            .ok()?
            .checked_sub(COPIES_OFFSET + TRAILER)?;
        if rest % 2 != 0 {
            return None;
        }
        let copy = rest / 2;
        let mut buckets = MIN_BUCKETS;
        while let Some(heap) = copy.checked_sub(META_LEN + 8 * buckets) {
            if heap > 0 && heap % ALIGN == 0 && heap <= MAX_HEAP && buckets_for(heap) == buckets {
                return Some(Layout { buckets, heap });
            }
            buckets = buckets.checked_mul(2)?;
        }
        None
    }

    fn copy_len(&self) -> usize {
        META_LEN + 8 * self.buckets + self.heap
    }

    fn copy_offset(&self, copy: usize) -> usize {
        COPIES_OFFSET + self.copy_len() * (copy & 1)
    }

    /// Where the platform's trailer starts: right after the two copies.
    fn trailer_offset(&self) -> usize {
        COPIES_OFFSET + 2 * self.copy_len()
    }

    /// Where the parts of copy `copy` lie (computed once at open for the readers).
    fn copy_at(&self, copy: usize) -> CopyAt {
        let meta = self.copy_offset(copy);
        CopyAt {
            meta,
            buckets: meta + META_LEN,
            heap: meta + META_LEN + 8 * self.buckets,
        }
    }

    fn file_size(&self) -> Option<u64> {
        let total = self
            .copy_len()
            .checked_mul(2)?
            .checked_add(COPIES_OFFSET + TRAILER)?;
        let total = u64::try_from(total).ok()?;
        (total < crate::MAX_SEGMENT_SIZE).then_some(total)
    }

    fn max_keys(&self) -> usize {
        self.buckets / 4 * 3
    }
}

/// The offsets of one copy's meta line, buckets and heap in the segment.
#[derive(Clone, Copy, Debug)]
struct CopyAt {
    meta: usize,
    buckets: usize,
    heap: usize,
}

/// Where every part of a map segment lies, derived from its [`Layout`] alone (never from the
/// segment): the control line, each copy's meta line, buckets and heap, as the [`Parts`] that a
/// reader's pass checks against the mapping with one comparison ([`Whole`]). Built only by
/// [`Geometry::of`].
#[derive(Clone, Copy, Debug)]
struct Geometry {
    /// Lines: the control line, copy 0's meta, copy 1's meta. Words: copy 0's buckets and
    /// heap, copy 1's buckets and heap.
    parts: Parts<3, 4>,
}

impl Geometry {
    fn of(layout: Layout) -> Option<Geometry> {
        layout.file_size()?; // no overflow anywhere in the layout
        let copies = [layout.copy_at(0), layout.copy_at(1)];
        let words = |c: &CopyAt| [(c.buckets, layout.buckets), (c.heap, layout.heap / 8)];
        let [b0, h0] = words(&copies[0]);
        let [b1, h1] = words(&copies[1]);
        let parts = Parts::new(
            [CTRL_OFFSET, copies[0].meta, copies[1].meta],
            [b0, h0, b1, h1],
        )?;
        // The copies end where the platform's trailer (Windows' waiters' table) starts.
        (parts.end() == layout.trailer_offset()).then_some(Geometry { parts })
    }
}

/// The mapping, checked once to hold a whole [`Geometry`]: the control line, the meta lines and
/// a copy's bucket and heap words are then handed out without checking each again. Offsets
/// *inside* the heap, read from the segment, are still checked by [`View`] against the heap's
/// words.
#[derive(Clone, Copy, Debug)]
struct Whole<'a> {
    parts: PartsIn<'a, 3, 4>,
}

impl<'a> Whole<'a> {
    /// `mem` as a whole map of geometry `geo`; `None` if the mapping is shorter (never, once
    /// the map is open: `finish` checked it, and a mapping does not shrink).
    #[inline]
    fn new(mem: Shared<'a>, geo: &'a Geometry) -> Option<Whole<'a>> {
        Some(Whole {
            parts: mem.parts(&geo.parts)?,
        })
    }

    #[inline]
    fn ctrl(&self) -> &'a Control {
        self.parts.line(0)
    }

    #[inline]
    fn metas(&self) -> [&'a CopyMeta; 2] {
        [self.meta(0), self.meta(1)]
    }

    /// Copy `c`'s meta line (`c` is 0 or 1).
    #[inline]
    fn meta(&self, c: usize) -> &'a CopyMeta {
        self.parts.line(1 + (c & 1))
    }

    /// Copy `copy`'s view, whose meta line is `meta`.
    #[inline]
    fn view(&self, copy: usize, meta: &'a CopyMeta) -> View<'a> {
        let c = 2 * (copy & 1);
        View {
            meta,
            buckets: self.parts.words(c),
            heap_words: self.parts.words(c + 1),
        }
    }
}

/// A record header, parsed and checked against its copy's heap.
#[derive(Clone, Copy, Debug)]
struct Rec {
    /// Offset in the heap.
    off: usize,
    key_len: usize,
    val_len: usize,
    version: u64,
}

impl Rec {
    fn size(&self) -> usize {
        record_size(self.key_len, self.val_len).unwrap_or(usize::MAX)
    }
}

/// Whether the record a bucket word points to holds the key a probe looks for.
#[derive(Clone, Copy, Debug)]
enum Match {
    /// It does (or, from [`View::header_for`], its key has the length looked for).
    Ours(Rec),
    /// It holds another key.
    Other,
    /// Its bytes are inconsistent.
    Bad,
}

impl Match {
    #[inline(always)]
    fn ours_if(same: bool, rec: Rec) -> Match {
        if same {
            Match::Ours(rec)
        } else {
            Match::Other
        }
    }
}

/// What a probe found.
#[derive(Clone, Copy, Debug)]
enum Find {
    Present {
        at: usize,
        rec: Rec,
    },
    Absent {
        at: usize,
    },
    /// Inconsistent bytes: a bad record, or no empty bucket within `B` probes.
    Bad,
}

/// A reader's view of one copy of the table: its meta line, bucket words and heap words,
/// nothing else, so that a pass keeps it in registers.
#[derive(Clone, Copy, Debug)]
struct View<'a> {
    meta: &'a CopyMeta,
    /// The copy's `B` bucket words.
    buckets: &'a [AtomicU64],
    /// The copy's heap as atomic words (records are 8-aligned): record headers and keys are
    /// read and compared a word at a time, in place.
    heap_words: &'a [AtomicU64],
}

impl<'a> View<'a> {
    #[inline]
    fn mask(&self) -> usize {
        self.buckets.len() - 1
    }

    #[inline]
    fn home(&self, tag: u32) -> usize {
        home_of(tag, self.buckets.len().trailing_zeros())
    }

    #[inline]
    fn bucket(&self, i: usize) -> &'a AtomicU64 {
        &self.buckets[i & self.mask()]
    }

    /// The record a bucket word points to, checked against the heap: its header's two words
    /// loaded in place. `None` for slot 0, a header past the heap, a key length of 0 or over
    /// [`MAX_KEY_LEN`], or a key and value that run past the heap.
    #[inline]
    fn record(&self, word: u64) -> Option<Rec> {
        let slot = ((word & 0xffff_ffff) as usize).checked_sub(1)?;
        let h0 = u64::from_le(self.heap_words.get(slot)?.load(Ordering::Relaxed));
        let version = u64::from_le(self.heap_words.get(slot + 1)?.load(Ordering::Relaxed));
        let key_len = (h0 & 0xffff) as usize;
        let val_len = (h0 >> 32) as usize;
        let off = slot * 8;
        let room = 8 * self.heap_words.len() - off; // `slot + 1` is a heap word: `off < heap`
        if key_len == 0
            || key_len > MAX_KEY_LEN
            || RECORD_HEADER + key_span(key_len) + val_len > room
        {
            return None;
        }
        Some(Rec {
            off,
            key_len,
            val_len,
            version,
        })
    }

    #[inline]
    fn read_value(&self, rec: &Rec, dst: &mut [u8]) -> Option<()> {
        debug_assert_eq!(dst.len(), rec.val_len);
        // `record` checked that the value lies inside this copy's heap; `read_words` checks
        // it once more.
        read_words(
            self.heap_words,
            rec.off + RECORD_HEADER + key_span(rec.key_len),
            dst,
        )
    }

    /// Probes for `key`: at most `B` buckets; most are passed on their tag (8 bytes compared,
    /// no record read); a record whose tag matches is checked against the heap. A key of up to
    /// 16 bytes (most) takes [`View::find_short`], which needs only its tag, length and words.
    #[inline(always)]
    fn find(&self, key: &Key<'_>) -> Find {
        let n = key.bytes.len();
        if n <= 16 {
            self.find_short(key.tag(), n, key.words)
        } else {
            self.find_long(key)
        }
    }

    /// [`View::find`] of a checked key of 1 to 16 bytes, given as its tag, length and two
    /// zero-padded words (`Key::words`): scalars only, so that a lookup keeps few values live (no slice of
    /// the key, no path for long keys) and stays in registers.
    #[inline(always)]
    fn find_short(&self, tag: u32, n: usize, words: [u64; 2]) -> Find {
        self.probe(tag, |w| self.matches_short(w, n, words))
    }

    /// [`View::find`] of a key of more than 16 bytes (out of line).
    #[inline(never)]
    fn find_long(&self, key: &Key<'_>) -> Find {
        self.probe(key.tag(), |w| self.matches_long(w, key))
    }

    /// The probe: from `tag`'s home bucket, at most `B` buckets, until an empty one or one
    /// whose tag is `tag` and whose record `matches` the key.
    #[inline(always)]
    fn probe(&self, tag: u32, matches: impl Fn(u64) -> Match) -> Find {
        let mask = self.mask();
        let mut i = self.home(tag);
        for _ in 0..self.buckets.len() {
            let w = self.bucket(i).load(Ordering::Relaxed);
            if w == 0 {
                return Find::Absent { at: i };
            }
            if (w >> 32) as u32 == tag {
                match matches(w) {
                    Match::Ours(rec) => return Find::Present { at: i, rec },
                    Match::Other => {}
                    Match::Bad => return Find::Bad,
                }
            }
            i = (i + 1) & mask;
        }
        Find::Bad
    }

    /// The record of bucket word `w`, its header loaded in place, if its key is `n` bytes
    /// long (`Ours`, its key not compared yet); `Other` if it holds a key of another length;
    /// `Bad` if it is inconsistent (the checks of [`View::record`], in the order that costs a
    /// probe least: the key's length first, and being 1 to 255 (a checked key's) it needs no
    /// check of its own).
    #[inline(always)]
    fn header_for(&self, w: u64, n: usize) -> Match {
        let Some(slot) = ((w & 0xffff_ffff) as usize).checked_sub(1) else {
            return Match::Bad;
        };
        let Some(header) = self.heap_words.get(slot..slot + 2) else {
            return Match::Bad;
        };
        let h0 = u64::from_le(header[0].load(Ordering::Relaxed));
        let key_len = (h0 & 0xffff) as usize;
        if key_len != n {
            // Rare (the tags matched): tell a bad length from another key's.
            return if key_len != 0 && key_len <= MAX_KEY_LEN {
                Match::Other
            } else {
                Match::Bad
            };
        }
        let val_len = (h0 >> 32) as usize;
        let off = slot * 8;
        if RECORD_HEADER + key_span(n) + val_len > 8 * self.heap_words.len() - off {
            return Match::Bad;
        }
        Match::Ours(Rec {
            off,
            key_len: n,
            val_len,
            version: u64::from_le(header[1].load(Ordering::Relaxed)),
        })
    }

    /// Whether the record of bucket word `w` holds the key of 1 to 16 bytes of length `n`
    /// and zero-padded words `words` ([`View::header_for`], then the key). The key is compared
    /// a whole word at a time in place (the record's key is zero-padded to a word, as the
    /// key's words are), no copy, no mask.
    #[inline(always)]
    fn matches_short(&self, w: u64, n: usize, words: [u64; 2]) -> Match {
        let rec = match self.header_for(w, n) {
            Match::Ours(rec) => rec,
            other => return other,
        };
        let first = rec.off / 8 + 2;
        let Some(kw) = self.heap_words.get(first..first + 1 + usize::from(n > 8)) else {
            return Match::Bad;
        };
        let load = |i: usize| u64::from_le(kw[i].load(Ordering::Relaxed));
        Match::ours_if(load(0) == words[0] && (n <= 8 || load(1) == words[1]), rec)
    }

    /// [`View::matches_short`] for a key of more than 16 bytes.
    #[inline(always)]
    fn matches_long(&self, w: u64, key: &Key<'_>) -> Match {
        let rec = match self.header_for(w, key.bytes.len()) {
            Match::Ours(rec) => rec,
            other => return other,
        };
        match long_key_matches(self.heap_words, rec.off / 8 + 2, key.bytes) {
            Some(same) => Match::ours_if(same, rec),
            None => Match::Bad,
        }
    }
}

/// The comparison of a key of more than 16 bytes with the record's key words at heap word
/// `first` (out of line: it keeps the view in registers on the common path).
fn long_key_matches(heap_words: &[AtomicU64], first: usize, key: &[u8]) -> Option<bool> {
    let words = heap_words.get(first..first + key.len().div_ceil(8))?;
    let mut chunks = key.chunks_exact(8);
    for (c, sw) in (&mut chunks).zip(words) {
        let k = u64::from_le_bytes(c.try_into().expect("8 bytes"));
        if u64::from_le(sw.load(Ordering::Relaxed)) != k {
            return Some(false);
        }
    }
    let rest = key.len() % 8;
    if rest != 0 {
        // Zero-padded in the record, as `tail_word` pads it.
        let sw = u64::from_le(words.last()?.load(Ordering::Relaxed));
        if sw != tail_word(key, key.len() - rest) {
            return Some(false);
        }
    }
    Some(true)
}

/// One copy of the table over the mapping, for a writer: the view, and where its parts lie.
#[derive(Clone, Copy, Debug)]
struct Table<'a> {
    /// The reader's view of the copy; its meta line is the writer's too.
    view: View<'a>,
    mem: Shared<'a>,
    buckets_off: usize,
    heap_off: usize,
    layout: Layout,
}

impl<'a> Table<'a> {
    fn new(mem: Shared<'a>, layout: Layout, copy: usize) -> Table<'a> {
        let at = layout.copy_at(copy);
        let inside = "copy inside the layout checked at open";
        let meta = mem.line(at.meta).expect(inside);
        Table {
            view: View {
                meta,
                buckets: mem.words(at.buckets, layout.buckets).expect(inside),
                heap_words: mem.words(at.heap, layout.heap / 8).expect(inside),
            },
            mem,
            buckets_off: at.buckets,
            heap_off: at.heap,
            layout,
        }
    }

    #[inline]
    fn mask(&self) -> usize {
        self.view.mask()
    }

    #[inline]
    fn home(&self, tag: u32) -> usize {
        self.view.home(tag)
    }

    #[inline]
    fn bucket(&self, i: usize) -> &'a AtomicU64 {
        self.view.bucket(i)
    }

    fn record(&self, word: u64) -> Option<Rec> {
        self.view.record(word)
    }

    fn read_value(&self, rec: &Rec, dst: &mut [u8]) -> Option<()> {
        self.view.read_value(rec, dst)
    }

    fn find(&self, key: &Key<'_>) -> Find {
        self.view.find(key)
    }

    // ---- writer side: only on the unpublished copy, with the lock held and its seq odd ----

    /// Bump-allocates `size` heap bytes.
    fn alloc(&self, size: usize) -> Option<usize> {
        let bump = usize::try_from(self.view.meta.bump.load(Ordering::Relaxed)).ok()?;
        if bump % 8 != 0 || bump > self.layout.heap || self.layout.heap - bump < size {
            return None;
        }
        self.view
            .meta
            .bump
            .store((bump + size) as u64, Ordering::Relaxed);
        Some(bump)
    }

    fn write_record(&self, off: usize, key: &[u8], value: &[u8], version: u64) -> Option<()> {
        let mut h = [0u8; RECORD_HEADER];
        h[0..2].copy_from_slice(&(key.len() as u16).to_le_bytes());
        h[4..8].copy_from_slice(&(value.len() as u32).to_le_bytes());
        h[8..16].copy_from_slice(&version.to_le_bytes());
        let at = self.heap_off + off;
        self.mem.write(at, &h)?;
        self.mem.write(at + RECORD_HEADER, key)?;
        let pad = [0u8; 8];
        self.mem.write(
            at + RECORD_HEADER + key.len(),
            &pad[..key_span(key.len()) - key.len()],
        )?;
        self.mem
            .write(at + RECORD_HEADER + key_span(key.len()), value)
    }

    /// Overwrites an existing record's value in place (it fits the old record's space).
    fn rewrite_value(&self, rec: &Rec, value: &[u8], version: u64) -> Option<()> {
        let mut h = [0u8; RECORD_HEADER];
        h[0..2].copy_from_slice(&(rec.key_len as u16).to_le_bytes());
        h[4..8].copy_from_slice(&(value.len() as u32).to_le_bytes());
        h[8..16].copy_from_slice(&version.to_le_bytes());
        let at = self.heap_off + rec.off;
        self.mem
            .write(at + RECORD_HEADER + key_span(rec.key_len), value)?;
        self.mem.write(at, &h)
    }

    fn slot_word(tag: u32, off: usize) -> u64 {
        (u64::from(tag) << 32) | (off / 8 + 1) as u64
    }

    /// Sets `key` to `value` at `version`; `Full` when it does not fit as things are.
    fn try_set(&self, key: &Key<'_>, value: &[u8], version: u64) -> Did {
        let Some(size) = record_size(key.bytes.len(), value.len()) else {
            return Did::Full(Space::Heap);
        };
        let tag = key.tag();
        match self.find(key) {
            Find::Bad => Did::Bad,
            Find::Present { at, rec } => {
                if rec.size() >= size {
                    return match self.rewrite_value(&rec, value, version) {
                        Some(()) => Did::Set,
                        None => Did::Bad,
                    };
                }
                let Some(off) = self.alloc(size) else {
                    return Did::Full(Space::Heap);
                };
                if self.write_record(off, key.bytes, value, version).is_none() {
                    return Did::Bad;
                }
                self.bucket(at)
                    .store(Table::slot_word(tag, off), Ordering::Relaxed);
                Did::Set
            }
            Find::Absent { at } => {
                let count = self.view.meta.count.load(Ordering::Relaxed);
                if count >= self.layout.max_keys() as u64 {
                    return Did::Full(Space::Keys);
                }
                let Some(off) = self.alloc(size) else {
                    return Did::Full(Space::Heap);
                };
                if self.write_record(off, key.bytes, value, version).is_none() {
                    return Did::Bad;
                }
                crash_point(Phase::MidInsert);
                self.bucket(at)
                    .store(Table::slot_word(tag, off), Ordering::Relaxed);
                self.view.meta.count.store(count + 1, Ordering::Relaxed);
                Did::Set
            }
        }
    }

    /// Deletes `key`, shifting the entries after it back (no tombstones).
    fn delete(&self, key: &Key<'_>) -> Did {
        let at = match self.find(key) {
            Find::Bad => return Did::Bad,
            Find::Absent { .. } => return Did::Missing,
            Find::Present { at, .. } => at,
        };
        let mask = self.mask();
        let mut hole = at;
        let mut j = at;
        for _ in 0..self.layout.buckets {
            j = (j + 1) & mask;
            let w = self.bucket(j).load(Ordering::Relaxed);
            if w == 0 {
                break;
            }
            let home = self.home((w >> 32) as u32);
            // `w` may fill the hole unless its home lies cyclically in (hole, j].
            if (j.wrapping_sub(home) & mask) >= (j.wrapping_sub(hole) & mask) {
                self.bucket(hole).store(w, Ordering::Relaxed);
                crash_point(Phase::MidDelete);
                hole = j;
            }
        }
        self.bucket(hole).store(0, Ordering::Relaxed);
        let count = self.view.meta.count.load(Ordering::Relaxed);
        self.view
            .meta
            .count
            .store(count.saturating_sub(1), Ordering::Relaxed);
        Did::Deleted
    }

    /// Makes this copy a byte copy of `src` (buckets, the whole heap, bump, count). The whole
    /// heap, not only `bump` bytes: `bump` is read from the segment, and a copy that differs
    /// from the published one anywhere a bucket may point would break the invariant.
    fn rebuild_from(&self, src: &Table<'_>) -> Option<()> {
        let bump = src.view.meta.bump.load(Ordering::Relaxed);
        let mut buf = vec![0u8; 64 * 1024];
        let mut copy_range = |from: usize, to: usize, len: usize| -> Option<()> {
            let mut done = 0;
            while done < len {
                let n = buf.len().min(len - done);
                self.mem.read(from + done, &mut buf[..n])?;
                self.mem.write(to + done, &buf[..n])?;
                done += n;
            }
            Some(())
        };
        copy_range(src.buckets_off, self.buckets_off, 8 * self.layout.buckets)?;
        crash_point(Phase::MidRebuild);
        copy_range(src.heap_off, self.heap_off, self.layout.heap)?;
        self.view.meta.bump.store(bump, Ordering::Relaxed);
        self.view.meta.count.store(
            src.view.meta.count.load(Ordering::Relaxed),
            Ordering::Relaxed,
        );
        Some(())
    }

    /// Makes this copy hold `src`'s live entries, packed at the start of the heap, in the
    /// same buckets. `None` if `src` is inconsistent.
    fn compact_from(&self, src: &Table<'_>) -> Option<()> {
        let mut bump = 0usize;
        let mut count = 0u64;
        let mut buf = Vec::new();
        for i in 0..self.layout.buckets {
            let w = src.bucket(i).load(Ordering::Relaxed);
            if w == 0 {
                self.bucket(i).store(0, Ordering::Relaxed);
                continue;
            }
            let rec = src.record(w)?;
            let size = rec.size();
            if self.layout.heap - bump < size {
                return None; // more live bytes than the heap: not a state a writer makes
            }
            buf.resize(
                size.min(RECORD_HEADER + key_span(rec.key_len) + rec.val_len),
                0,
            );
            self.mem.read(src.heap_off + rec.off, &mut buf)?;
            self.mem.write(self.heap_off + bump, &buf)?;
            self.bucket(i).store(
                (w & !0xffff_ffff) | (bump / 8 + 1) as u64,
                Ordering::Relaxed,
            );
            bump += size;
            count += 1;
            if count == 2 {
                crash_point(Phase::MidCompaction);
            }
        }
        self.view.meta.bump.store(bump as u64, Ordering::Relaxed);
        self.view.meta.count.store(count, Ordering::Relaxed);
        Some(())
    }
}

/// What a reader's pass does on the published copy ([`Map::look`]): `None` when what it read
/// is inconsistent (the pass is then retried).
trait Look {
    type Out;
    fn look(&mut self, t: &View<'_>) -> Option<Self::Out>;
}

impl<L: Look> Look for &mut L {
    type Out = L::Out;
    #[inline(always)]
    fn look(&mut self, t: &View<'_>) -> Option<L::Out> {
        (**self).look(t)
    }
}

/// Any closure is a [`Look`] (inlined as the compiler sees fit).
struct ByClosure<F>(F);

impl<T, F: FnMut(&View<'_>) -> Option<T>> Look for ByClosure<F> {
    type Out = T;
    #[inline]
    fn look(&mut self, t: &View<'_>) -> Option<T> {
        (self.0)(t)
    }
}

/// The lookup of one key whose record, when present, `Read` copies out: always inlined,
/// into the undisturbed pass and into the retries alike, so that each is one straight run.
/// What `get`, `key_version` and `get_into` of a key of more than 16 bytes use; `get_into`
/// of a shorter key uses [`ShortLook`].
struct KeyLook<'k, R> {
    key: Key<'k>,
    read: R,
}

/// What a [`KeyLook`] does with the record it found, inside the pass.
trait Read {
    type Out;
    fn read(&mut self, t: &View<'_>, rec: &Rec) -> Option<Self::Out>;
}

impl<R: Read> Look for KeyLook<'_, R> {
    type Out = Option<R::Out>;
    #[inline(always)]
    fn look(&mut self, t: &View<'_>) -> Option<Option<R::Out>> {
        match t.find(&self.key) {
            Find::Bad => None,
            Find::Absent { .. } => Some(None),
            Find::Present { rec, .. } => self.read.read(t, &rec).map(Some),
        }
    }
}

/// What `get_into`'s pass found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Got {
    /// The value was copied: its length, and the version of its `set`.
    Value {
        len: usize,
        version: u64,
    },
    Absent,
    /// The buffer is shorter than the value, of this length; nothing was copied.
    Short(usize),
}

/// `get_into`'s lookup of a key of 1 to 16 bytes.
struct ShortLook<'b> {
    tag: u32,
    n: usize,
    words: [u64; 2],
    buf: &'b mut [u8],
}

impl<'b> ShortLook<'b> {
    /// The lookup of `key`, of 1 to 16 bytes: its words and tag, as [`Key::new`] makes them.
    #[inline(always)]
    fn new(key: &[u8], buf: &'b mut [u8]) -> ShortLook<'b> {
        let n = key.len();
        let words = short_words(key);
        ShortLook {
            tag: hash_tag(short_hash(words, n)),
            n,
            words,
            buf,
        }
    }
}

impl Look for ShortLook<'_> {
    type Out = Got;
    #[inline(always)]
    fn look(&mut self, t: &View<'_>) -> Option<Got> {
        match t.find_short(self.tag, self.n, self.words) {
            Find::Bad => None,
            Find::Absent { .. } => Some(Got::Absent),
            Find::Present { rec, .. } => Some(match IntoBuf(self.buf).read(t, &rec)? {
                Ok((len, version)) => Got::Value { len, version },
                Err(needed) => Got::Short(needed),
            }),
        }
    }
}

/// `get_into`'s read: the value into the caller's buffer, or the length it needs.
struct IntoBuf<'b>(&'b mut [u8]);

impl Read for IntoBuf<'_> {
    type Out = std::result::Result<(usize, u64), usize>;
    #[inline(always)]
    fn read(&mut self, t: &View<'_>, rec: &Rec) -> Option<Self::Out> {
        let Some(dst) = self.0.get_mut(..rec.val_len) else {
            return Some(Err(rec.val_len));
        };
        t.read_value(rec, dst)?;
        Some(Ok((rec.val_len, rec.version)))
    }
}

/// `get`'s read: the value into a vector.
struct IntoVec(Vec<u8>);

impl Read for IntoVec {
    type Out = u64;
    #[inline(always)]
    fn read(&mut self, t: &View<'_>, rec: &Rec) -> Option<u64> {
        self.0.resize(rec.val_len, 0);
        t.read_value(rec, &mut self.0)?;
        Some(rec.version)
    }
}

/// `key_version`'s read: the version only.
struct VersionOnly;

impl Read for VersionOnly {
    type Out = u64;
    #[inline(always)]
    fn read(&mut self, _: &View<'_>, rec: &Rec) -> Option<u64> {
        Some(rec.version)
    }
}

/// Which space of a map is exhausted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Space {
    Keys,
    Heap,
}

/// What a table operation did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Did {
    Set,
    Deleted,
    Missing,
    Full(Space),
    Bad,
}

/// An operation on the map, its key hashed once for the whole write (the probes of both
/// copies, the wait bucket, the channel woken).
#[derive(Clone, Copy, Debug)]
enum Op<'k> {
    Set { key: Key<'k>, value: &'k [u8] },
    Delete { key: Key<'k> },
}

impl<'k> Op<'k> {
    fn key(&self) -> Key<'k> {
        match *self {
            Op::Set { key, .. } | Op::Delete { key } => key,
        }
    }
}

/// What [`Map::delete`] did.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Delete {
    /// The key was removed; the map is now at this version.
    Removed {
        /// The map version of the delete.
        version: u64,
    },
    /// The key was not in the map: nothing changed, no version was used.
    NotFound,
}

/// One entry of a [`Snapshot`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    /// The key.
    pub key: Vec<u8>,
    /// The value.
    pub value: Vec<u8>,
    /// The map version of the key's last `set`.
    pub version: u64,
}

/// Every entry of a map at one version, copied out whole and parsed locally; sorted by key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Snapshot {
    version: u64,
    entries: Vec<Entry>,
}

impl Snapshot {
    /// The map version this snapshot shows.
    pub fn version(&self) -> u64 {
        self.version
    }

    /// The number of keys.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether the map was empty.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The entries, sorted by key.
    pub fn iter(&self) -> std::slice::Iter<'_, Entry> {
        self.entries.iter()
    }

    /// The entry of `key`, if it was present.
    pub fn get(&self, key: impl AsRef<[u8]>) -> Option<&Entry> {
        let key = key.as_ref();
        self.entries
            .binary_search_by(|e| e.key.as_slice().cmp(key))
            .ok()
            .map(|i| &self.entries[i])
    }

    /// The entries, sorted by key.
    pub fn into_entries(self) -> Vec<Entry> {
        self.entries
    }
}

impl<'s> IntoIterator for &'s Snapshot {
    type Item = &'s Entry;
    type IntoIter = std::slice::Iter<'s, Entry>;
    fn into_iter(self) -> Self::IntoIter {
        self.entries.iter()
    }
}

impl IntoIterator for Snapshot {
    type Item = Entry;
    type IntoIter = std::vec::IntoIter<Entry>;
    fn into_iter(self) -> Self::IntoIter {
        self.entries.into_iter()
    }
}

/// How full a map is: see [`Map::usage`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Usage {
    /// The map version these figures are for.
    pub version: u64,
    /// Live keys.
    pub keys: usize,
    /// The most keys the table holds.
    pub max_keys: usize,
    /// Heap bytes the live records take (each 16 + its key rounded up to 8 + its value, rounded
    /// up to 8).
    pub live_bytes: usize,
    /// Heap bytes in all.
    pub heap_bytes: usize,
}

/// Options for opening a map; start with [`Map::builder`].
#[derive(Clone, Debug)]
pub struct MapBuilder {
    seg: Builder,
    capacity: usize,
    lock_timeout: Duration,
    wait_spin: Duration,
}

impl MapBuilder {
    /// The directory (see [`Builder::dir`]).
    pub fn dir(mut self, dir: impl Into<std::path::PathBuf>) -> MapBuilder {
        self.seg = self.seg.dir(dir);
        self
    }

    /// The heap bytes the map's records may use, rounded up to 64; a record takes 16 bytes
    /// plus its key rounded up to 8 plus its value, rounded up to 8. The table gets one bucket
    /// per 48 heap bytes (at least 16, a power of two) and holds keys in up to 3/4 of them.
    /// Needed to create; when opening an existing map, it must hold at least this much (0
    /// accepts any).
    pub fn capacity(mut self, bytes: usize) -> MapBuilder {
        self.capacity = bytes;
        self
    }

    /// The lifetime of a newly created map (see [`Lifetime`]).
    pub fn lifetime(mut self, lifetime: Lifetime) -> MapBuilder {
        self.seg = self.seg.lifetime(lifetime);
        self
    }

    /// The file mode of a newly created map (see [`Builder::mode`]). A mode that lets group
    /// or others read without writing (0644, 0640) makes every `set` and `delete` wake
    /// waiters, so that read-only handles can wait ([`crate::WakePolicy`]).
    pub fn mode(mut self, mode: u32) -> MapBuilder {
        self.seg = self.seg.mode(mode);
        self
    }

    /// Read-write (the default) or read-only access (see [`crate::Access`]). A read-only map
    /// needs only read permission and never writes the segment: `get`, `get_into`, `len`,
    /// `snapshot`, `iter` and `version` work, `set` and `delete` fail with
    /// [`Error::PermissionDenied`]. Its readers cannot ask writers to hold off, so under a
    /// writer that never pauses a read is bounded only by its deadline ([`Error::Corrupt`]
    /// after 2 s of disturbed passes). `wait_any` and `wait_changed` work on maps whose
    /// writers wake at every publish ([`crate::WakePolicy::EveryPublish`]) and are refused on
    /// the others; a read-only `wait_changed(key)` is woken by every change of the map and
    /// re-checks its key (the module docs say why).
    #[cfg(target_os = "linux")]
    pub fn access(mut self, access: crate::Access) -> MapBuilder {
        self.seg = self.seg.access(access);
        self
    }

    /// How long opening waits for a process that holds the segment's exclusive lock (see
    /// [`Builder::attach_timeout`]).
    pub fn attach_timeout(mut self, timeout: Duration) -> MapBuilder {
        self.seg = self.seg.attach_timeout(timeout);
        self
    }

    /// How long `set`/`delete` wait for another live writer before [`Error::Timeout`] (5 s by
    /// default). A dead writer never makes them wait: the kernel hands the lock over.
    pub fn lock_timeout(mut self, timeout: Duration) -> MapBuilder {
        self.lock_timeout = timeout;
        self
    }

    /// How long a wait watches the version before it sleeps in the kernel (20 us by default;
    /// see [`crate::ValueBuilder::wait_spin`]).
    pub fn wait_spin(mut self, spin: Duration) -> MapBuilder {
        self.wait_spin = spin;
        self
    }

    /// Opens the map, creating it (empty, version 0) if nobody holds it.
    ///
    /// # Errors
    /// As [`crate::ValueBuilder::open`].
    pub fn open(&self) -> Result<Map> {
        self.finish(self.sized()?.open_map(true)?)
    }

    /// Creates the map; fails with [`Error::Exists`] if a live one has the name.
    ///
    /// # Errors
    /// As [`crate::ValueBuilder::create_new`].
    pub fn create_new(&self) -> Result<Map> {
        self.finish(self.sized()?.create_map()?)
    }

    /// Opens a live map; fails with [`Error::NotFound`] if there is none.
    ///
    /// # Errors
    /// As [`crate::ValueBuilder::open_existing`].
    pub fn open_existing(&self) -> Result<Map> {
        self.finish(self.sized()?.open_map(false)?)
    }

    fn sized(&self) -> Result<Builder> {
        if self.capacity == 0 {
            return Ok(self.seg.clone().with_data_len(0));
        }
        let size = Layout::for_capacity(self.capacity)
            .and_then(|l| l.file_size())
            .ok_or_else(|| Error::InvalidSize {
                name: self.seg.name().to_owned(),
                reason: format!("a map capacity of {} bytes is too large", self.capacity),
            })?;
        Ok(self.seg.clone().with_data_len(size - HEADER_LEN as u64))
    }

    fn finish(&self, seg: Segment) -> Result<Map> {
        let size = seg.data_len() as u64 + HEADER_LEN as u64;
        let Some(layout) = Layout::from_size(size) else {
            return Err(Error::Corrupt {
                name: seg.name().to_owned(),
                reason: format!("{size} bytes is not a valid map layout"),
            });
        };
        if seg.mapping().len() < layout.file_size().unwrap_or(u64::MAX) as usize {
            return Err(Error::Corrupt {
                name: seg.name().to_owned(),
                reason: format!("the mapping is shorter than the {size} bytes of its layout"),
            });
        }
        let Some(geo) = Geometry::of(layout) else {
            return Err(Error::Corrupt {
                name: seg.name().to_owned(),
                reason: format!("{size} bytes is not a valid map layout"),
            });
        };
        if !seg.created() && layout.heap < self.capacity {
            return Err(Error::InvalidSize {
                name: seg.name().to_owned(),
                reason: format!(
                    "the existing map holds {} heap bytes, less than the {} asked for",
                    layout.heap, self.capacity
                ),
            });
        }
        Ok(Map {
            writer: Writer::new(&seg, self.lock_timeout, self.wait_spin)?,
            seg,
            layout,
            geo,
        })
    }
}

/// The heap bytes of a map whose segment is `size` bytes, header included (what `admin` shows
/// without attaching); `None` if no map layout has that size.
#[cfg(target_os = "linux")]
pub(crate) fn capacity_for_size(size: u64) -> Option<usize> {
    Layout::from_size(size).map(|l| l.heap)
}

/// Keys and values shared between processes in one segment.
///
/// Keys are non-empty byte strings of up to [`MAX_KEY_LEN`] bytes (`&str` works too); values
/// are byte strings. Every `set` and every `delete` that removes a key gets the next map
/// version, larger than any before; each entry carries the version of its last `set`.
/// Readers never block and never see a torn entry; a writer that crashes at any point never
/// damages what readers see and never wedges the next writer.
///
/// Thread-safe: share it with `Arc` or scoped threads.
#[derive(Debug)]
pub struct Map {
    seg: Segment,
    layout: Layout,
    /// The writer's token, lock and waits (`writer.rs`).
    writer: Writer,
    /// Where each part lies, from `layout` (so that a read does not recompute it).
    geo: Geometry,
}

impl Map {
    /// Starts the options for map `name` (transient, owner-only, in `/dev/shm`).
    pub fn builder(name: &str) -> MapBuilder {
        MapBuilder {
            seg: Segment::builder(name),
            capacity: 0,
            lock_timeout: writer::DEFAULT_LOCK_TIMEOUT,
            wait_spin: writer::DEFAULT_WAIT_SPIN,
        }
    }

    /// Opens or creates transient map `name` in `/dev/shm` with `capacity` heap bytes (see
    /// [`MapBuilder::capacity`]).
    ///
    /// # Errors
    /// As [`MapBuilder::open`].
    pub fn open(name: &str, capacity: usize) -> Result<Map> {
        Map::builder(name).capacity(capacity).open()
    }

    /// The segment's name.
    pub fn name(&self) -> &str {
        self.seg.name()
    }

    /// Whether this handle created the map (it was then empty, at version 0).
    pub fn created(&self) -> bool {
        self.seg.created()
    }

    /// The underlying segment.
    pub fn segment(&self) -> &Segment {
        &self.seg
    }

    /// The heap bytes records may use.
    pub fn capacity(&self) -> usize {
        self.layout.heap
    }

    /// The most keys the map holds at once.
    pub fn max_keys(&self) -> usize {
        self.layout.max_keys()
    }

    /// The latest published map version (0 before the first change).
    pub fn version(&self) -> u64 {
        self.ctrl().version.load_acquire()
    }

    /// Sets `key` to `value` and returns the new map version (also the entry's version).
    ///
    /// # Errors
    /// [`Error::InvalidKey`]; [`Error::TooLarge`] for a record larger than the whole heap;
    /// [`Error::MapFull`] when the live records and this one do not fit, or the table holds
    /// its most keys (nothing changes); [`Error::Timeout`] when another live writer holds the
    /// lock for longer than the lock timeout; [`Error::Corrupt`] when the published copy is
    /// unusable (a peer scribbled on it); [`Error::Io`] when this handle cannot claim its
    /// liveness witness (first write only); [`Error::PermissionDenied`] on a read-only handle.
    pub fn set(&self, key: impl AsRef<[u8]>, value: &[u8]) -> Result<u64> {
        self.writable("set")?;
        let key = self.check_key(key.as_ref())?;
        let size = record_size(key.len(), value.len()).unwrap_or(usize::MAX);
        // A record's length field is 32 bits.
        if size > self.layout.heap || u32::try_from(value.len()).is_err() {
            return Err(Error::TooLarge {
                name: self.name().to_owned(),
                len: value.len(),
                capacity: self.layout.heap - record_size(key.len(), 0).unwrap_or(0),
            });
        }
        match self.write(Op::Set {
            key: Key::new(key),
            value,
        })? {
            Delete::Removed { version } => Ok(version),
            Delete::NotFound => unreachable!("a set always changes the map"),
        }
    }

    /// Removes `key`: [`Delete::Removed`] with the new map version, or [`Delete::NotFound`]
    /// (not an error: nothing changes, no version is used).
    ///
    /// # Errors
    /// As [`Map::set`], except `TooLarge` and `MapFull`.
    pub fn delete(&self, key: impl AsRef<[u8]>) -> Result<Delete> {
        self.writable("delete")?;
        let key = self.check_key(key.as_ref())?;
        self.write(Op::Delete { key: Key::new(key) })
    }

    /// `get_into` of a key of 1 to 16 bytes after a disturbed first pass: the retries of
    /// [`Map::look_disturbed`], out of line and handed only the key and the buffer, so that
    /// the first pass keeps no lookup state in memory for them.
    #[cold]
    #[inline(never)]
    fn get_into_disturbed(&self, key: &[u8], buf: &mut [u8]) -> Result<Got> {
        let mut look = ShortLook::new(key, buf);
        Ok(self.look_disturbed(&self.whole(), &mut look)?.0)
    }

    /// `get_into` of a key of 17 to [`MAX_KEY_LEN`] bytes: [`View::find`] and [`IntoBuf`].
    #[inline(never)]
    fn get_into_long(&self, key: &[u8], buf: &mut [u8]) -> Result<Got> {
        let (found, _) = self.look(&mut KeyLook {
            key: Key::new(key),
            read: IntoBuf(buf),
        })?;
        Ok(match found {
            None => Got::Absent,
            Some(Ok((len, version))) => Got::Value { len, version },
            Some(Err(needed)) => Got::Short(needed),
        })
    }

    /// The value of `key` and the version of its last `set`, or `None` when absent.
    ///
    /// # Errors
    /// [`Error::InvalidKey`]; [`Error::Corrupt`] when the map holds no consistent state for a
    /// long time (a peer wrote garbage).
    pub fn get(&self, key: impl AsRef<[u8]>) -> Result<Option<(Vec<u8>, u64)>> {
        let key = self.check_key(key.as_ref())?;
        let mut look = KeyLook {
            key: Key::new(key),
            read: IntoVec(Vec::new()),
        };
        let (found, _) = self.look(&mut look)?;
        Ok(found.map(|version| (look.read.0, version)))
    }

    /// Copies the value of `key` into `buf`: its length and version, or `None` when absent.
    /// If `buf` is too small, returns [`Error::BufferTooSmall`] with the length needed and
    /// copies nothing.
    ///
    /// # Errors
    /// [`Error::BufferTooSmall`]; as [`Map::get`].
    pub fn get_into(&self, key: impl AsRef<[u8]>, buf: &mut [u8]) -> Result<Option<(usize, u64)>> {
        let key = key.as_ref();
        let capacity = buf.len();
        let n = key.len();
        let found = if (1..=16).contains(&n) {
            match self.look_once(|| ShortLook::new(key, &mut *buf)) {
                Some((found, _)) => found,
                None => self.get_into_disturbed(key, buf)?,
            }
        } else {
            self.get_into_long(self.check_key(key)?, buf)?
        };
        match found {
            Got::Value { len, version } => Ok(Some((len, version))),
            Got::Absent => Ok(None),
            Got::Short(needed) => Err(Error::BufferTooSmall {
                name: self.name().to_owned(),
                needed,
                capacity,
            }),
        }
    }

    /// Whether `key` is present.
    ///
    /// # Errors
    /// As [`Map::get`].
    pub fn contains_key(&self, key: impl AsRef<[u8]>) -> Result<bool> {
        Ok(self.key_version(self.check_key(key.as_ref())?)?.0 != 0)
    }

    /// The number of keys.
    ///
    /// # Errors
    /// [`Error::Corrupt`] as for [`Map::get`].
    pub fn len(&self) -> Result<usize> {
        let max = self.layout.max_keys() as u64;
        let (n, _) = self.pass(|t| {
            let n = t.meta.count.load(Ordering::Relaxed);
            (n <= max).then_some(n as usize)
        })?;
        Ok(n)
    }

    /// Whether the map has no keys.
    ///
    /// # Errors
    /// As [`Map::len`].
    pub fn is_empty(&self) -> Result<bool> {
        Ok(self.len()? == 0)
    }

    /// Every entry at one map version: the published copy is copied out whole under the
    /// seqlock, then parsed (bounds-checked) in private memory.
    ///
    /// # Errors
    /// [`Error::Corrupt`] as for [`Map::get`].
    pub fn snapshot(&self) -> Result<Snapshot> {
        let layout = self.layout;
        let mut raw = vec![0u8; 8 * layout.buckets + layout.heap];
        let (entries, version) = self.pass(|t| {
            let count = t.meta.count.load(Ordering::Relaxed);
            let (buckets, heap) = raw.split_at_mut(8 * layout.buckets);
            read_words(t.buckets, 0, buckets)?;
            read_words(t.heap_words, 0, heap)?;
            parse_copy(&raw, layout, count)
        })?;
        Ok(Snapshot { version, entries })
    }

    /// Keys and heap bytes in use at one map version (from a [`Map::snapshot`]): a `set` of a
    /// new record fits while `live_bytes` plus its size is at most `heap_bytes` and `keys` is
    /// below `max_keys`.
    ///
    /// # Errors
    /// As [`Map::snapshot`].
    pub fn usage(&self) -> Result<Usage> {
        let snap = self.snapshot()?;
        Ok(Usage {
            version: snap.version(),
            keys: snap.len(),
            max_keys: self.layout.max_keys(),
            live_bytes: snap
                .iter()
                .map(|e| record_size(e.key.len(), e.value.len()).unwrap_or(usize::MAX))
                .sum(),
            heap_bytes: self.layout.heap,
        })
    }

    /// The entries at one map version, sorted by key: [`Map::snapshot`]'s.
    ///
    /// # Errors
    /// As [`Map::snapshot`].
    pub fn iter(&self) -> Result<std::vec::IntoIter<Entry>> {
        Ok(self.snapshot()?.into_iter())
    }

    /// Sleeps until the version of `key` (of its last `set`; 0 when absent) differs from
    /// `since`, then returns it. Returns at once if it already differs. `None` waits forever;
    /// otherwise [`Error::Timeout`] when `timeout` passes first. After watching the key for
    /// the spin window, sleeps on the key's wait bucket (one of 64): a change of a key in
    /// another bucket does not wake it; one in the same bucket costs a wake-up and a re-check.
    /// On Windows the waits of one map share 64 waiter slots, as a value's do (a 65th
    /// simultaneous sleeper polls every millisecond; see [`crate::Value::wait_changed`]).
    ///
    /// It compares versions, not events: an absent key that is set and deleted again between
    /// two looks reads 0 both times, so a waiter with `since = 0` sleeps on (use
    /// [`Map::wait_any`] to see every change of the map).
    ///
    /// On a read-only handle (Linux) it sleeps on the map's control line instead, unannounced,
    /// so every change of the map wakes it and it re-checks its key's version each time (its
    /// writers then make one wake call per publish, not one per bucket); only a map whose
    /// writers wake at every publish allows it ([`crate::WakePolicy::EveryPublish`]).
    ///
    /// # Errors
    /// [`Error::InvalidKey`]; [`Error::Timeout`]; as [`Map::get`]; on a read-only handle,
    /// [`Error::PermissionDenied`] when the map's writers wake only announced waiters and the
    /// key has not changed yet.
    pub fn wait_changed(
        &self,
        key: impl AsRef<[u8]>,
        since: u64,
        timeout: Option<Duration>,
    ) -> Result<u64> {
        self.wait_changed_unless(key, since, timeout, || false)
            .map(|v| v.expect("never cancelled"))
    }

    /// Like [`Map::wait_changed`], but returns `Ok(None)` as soon as `cancelled()` is true
    /// (checked before each sleep; make it true, then call [`Map::wake_waiters`]).
    ///
    /// # Errors
    /// As [`Map::wait_changed`].
    pub fn wait_changed_unless(
        &self,
        key: impl AsRef<[u8]>,
        since: u64,
        timeout: Option<Duration>,
        cancelled: impl Fn() -> bool,
    ) -> Result<Option<u64>> {
        let key = self.check_key(key.as_ref())?;
        let deadline = timeout.and_then(|t| Instant::now().checked_add(t));
        let w = WaitFor {
            what: "a change of the key",
            timeout,
        };
        let changed = || {
            let (kv, _) = self.key_version(key)?;
            Ok((kv != since).then_some(kv))
        };
        #[cfg(target_os = "linux")]
        if self.read_only() {
            return self.wait_read_only(deadline, w, changed, &cancelled);
        }
        let ch = self.channel(tag_of(key));
        self.writer
            .wait(self.site(), ch, deadline, w, changed, &cancelled)
    }

    /// Sleeps until the map version differs from `since` (any key set or deleted), then
    /// returns it; as [`Map::wait_changed`] otherwise. A read-only handle (Linux) may wait
    /// only on a map whose writers wake at every publish ([`crate::WakePolicy::EveryPublish`]).
    ///
    /// # Errors
    /// [`Error::Timeout`]; [`Error::Io`] if the sleep in the kernel fails; on a read-only
    /// handle, [`Error::PermissionDenied`] as for [`Map::wait_changed`].
    pub fn wait_any(&self, since: u64, timeout: Option<Duration>) -> Result<u64> {
        self.wait_any_unless(since, timeout, || false)
            .map(|v| v.expect("never cancelled"))
    }

    /// Like [`Map::wait_any`], but returns `Ok(None)` as soon as `cancelled()` is true.
    ///
    /// # Errors
    /// As [`Map::wait_any`].
    pub fn wait_any_unless(
        &self,
        since: u64,
        timeout: Option<Duration>,
        cancelled: impl Fn() -> bool,
    ) -> Result<Option<u64>> {
        let v = self.version();
        if v != since {
            return Ok(Some(v));
        }
        let deadline = timeout.and_then(|t| Instant::now().checked_add(t));
        let w = WaitFor {
            what: "a change of the map",
            timeout,
        };
        let ctrl = self.ctrl();
        let changed = || {
            let v = ctrl.version.load_acquire();
            Ok((v != since).then_some(v))
        };
        #[cfg(target_os = "linux")]
        if self.read_only() {
            return self.wait_read_only(deadline, w, changed, &cancelled);
        }
        self.writer.wait(
            self.site(),
            Channel::control(ctrl),
            deadline,
            w,
            changed,
            &cancelled,
        )
    }

    /// Wakes every thread, in every process, that sleeps in a wait on this map.
    ///
    /// On a read-only handle, which may not write the segment's wake-up words, it wakes this
    /// handle's own waiters only (how a wait is cancelled from another thread), and waiters
    /// elsewhere sleep on.
    pub fn wake_waiters(&self) {
        #[cfg(target_os = "linux")]
        if self.read_only() {
            self.writer.wake_local();
            return;
        }
        let mut words = vec![&self.ctrl().wake];
        words.extend(self.wait_buckets().iter().map(|b| &b.wake));
        self.writer.wake_waiters(self.site(), &words);
    }

    // ---- internals ----

    /// A wait on a read-only handle: no `sleepers` flag (that would be a write), so it sleeps
    /// unannounced on channel 0 and this handle's cancel word (`Writer::wait_unannounced`),
    /// for one key as for any (`changed` is the map version's or the key's).
    #[cfg(target_os = "linux")]
    fn wait_read_only(
        &self,
        deadline: Option<Instant>,
        w: WaitFor,
        changed: impl FnMut() -> Result<Option<u64>>,
        cancelled: &impl Fn() -> bool,
    ) -> Result<Option<u64>> {
        self.writer
            .wait_unannounced(self.site(), "map", deadline, w, changed, cancelled)
    }

    /// Whether this handle is read-only (Linux only; Windows handles always write).
    #[inline]
    fn read_only(&self) -> bool {
        self.seg.read_only()
    }

    /// `Ok` when this handle may write; the permission error for `op` on a read-only one.
    fn writable(&self, op: &str) -> Result<()> {
        self.seg.writable(op)
    }

    #[inline]
    fn check_key<'k>(&self, key: &'k [u8]) -> Result<&'k [u8]> {
        if key.is_empty() || key.len() > MAX_KEY_LEN {
            return Err(self.bad_key(key.len()));
        }
        Ok(key)
    }

    #[cold]
    fn bad_key(&self, len: usize) -> Error {
        Error::InvalidKey {
            name: self.name().to_owned(),
            len,
            reason: if len == 0 {
                "keys must not be empty"
            } else {
                "keys are at most 255 bytes"
            },
        }
    }

    /// The version of `key`'s last set (0 when absent) and the map version it was read at.
    fn key_version(&self, key: &[u8]) -> Result<(u64, u64)> {
        let (found, version) = self.look(&mut KeyLook {
            key: Key::new(key),
            read: VersionOnly,
        })?;
        Ok((found.unwrap_or(0), version))
    }

    /// Reader passes until one succeeds: `look` on the published copy, validated by its
    /// sequence. See [`Map::look`].
    #[inline]
    fn pass<T>(&self, look: impl FnMut(&View<'_>) -> Option<T>) -> Result<(T, u64)> {
        self.look(&mut ByClosure(look))
    }

    /// Reader passes until one succeeds, as [`Map::pass`]. The undisturbed pass is one
    /// straight run (no loop, so no loop-invariant work hoisted in front of it and spilled),
    /// with `look` inlined (`Look::look` is `inline(always)` where it matters); after a
    /// disturbed pass the cold [`Map::look_disturbed`] asks writers to hold off
    /// (`seqlock.rs`), backs off and passes again.
    #[inline]
    fn look<L: Look>(&self, look: &mut L) -> Result<(L::Out, u64)> {
        match self.look_once(|| &mut *look) {
            Some(done) => Ok(done),
            None => self.look_disturbed(&self.whole(), look),
        }
    }

    /// One reader pass of the lookup `make` builds, inside the pass: `None` if it was
    /// disturbed. What `get_into` runs first, so that what the lookup needs lives in
    /// registers only (a lookup handed to [`Map::look_disturbed`] lives in memory from the
    /// start: seven stores, nine instructions a call).
    #[inline(always)]
    fn look_once<L: Look>(&self, make: impl FnOnce() -> L) -> Option<(L::Out, u64)> {
        let whole = self.whole();
        match protocol::read(
            whole.ctrl(),
            |c| whole.meta(c),
            |c, meta| make().look(&whole.view(c, meta)),
        ) {
            Pass::Done { found, version } => Some((found, version)),
            Pass::Retry { .. } => None,
        }
    }

    /// The passes after a disturbed one: each asks writers to hold off; from the second on
    /// the reader also backs off, until the stuck deadline ([`Error::Corrupt`]). The hold-off
    /// requests are withdrawn either way. A read-only handle never asks (that is a write):
    /// its deadline alone bounds it, and its `Corrupt` says so (`retry.rs`).
    #[cold]
    #[inline(never)]
    fn look_disturbed<L: Look>(&self, whole: &Whole<'_>, look: &mut L) -> Result<(L::Out, u64)> {
        let ctrl = whole.ctrl();
        let metas = whole.metas();
        let mut asked = 0;
        let may_ask = !self.read_only();
        let mut backoff = if may_ask {
            Backoff::default()
        } else {
            Backoff::without_hold_off()
        };
        if may_ask {
            ask_hold_off(ctrl, &mut asked);
        }
        let r = loop {
            let seen = match protocol::read(
                ctrl,
                |c| metas[c],
                |c, meta| look.look(&whole.view(c, meta)),
            ) {
                Pass::Done { found, version } => break Ok((found, version)),
                Pass::Retry { seen } => seen,
            };
            if may_ask {
                ask_hold_off(ctrl, &mut asked);
            }
            if let Err(e) = backoff.retry(self.name(), "map", seen) {
                break Err(e);
            }
        };
        seqlock::end_hold_off(ctrl, asked);
        r
    }

    /// The writer: lock, catch the other copy up, apply `op` to it, publish, unlock, wake.
    fn write(&self, op: Op<'_>) -> Result<Delete> {
        let guard = self.writer.lock(&self.seg, self.ctrl())?;
        let r = self.write_locked(op);
        drop(guard);
        if let Ok(Delete::Removed { .. }) = r {
            let ch = self.channel(op.key().tag());
            self.writer.wake_after_publish(self.site(), &[ch]);
        }
        r
    }

    fn write_locked(&self, op: Op<'_>) -> Result<Delete> {
        let ctrl = self.ctrl();
        let metas = self.metas();
        let mem = self.mem();
        writer::honour_hold_off(ctrl, self.layout.copy_len());
        let (last_version, last_key) = self.last_op();
        let plan = protocol::plan(ctrl, metas, last_version);
        let t = protocol::begin(ctrl, metas);
        crash_point(Phase::AfterBegin);
        let dst = Table::new(mem, self.layout, t.copy);
        let src = Table::new(mem, self.layout, t.copy ^ 1);
        let caught_up = match plan {
            CatchUp::Current => Some(()),
            CatchUp::Replay => self
                .replay(&dst, &src, &last_key)
                .or_else(|| dst.rebuild_from(&src)),
            CatchUp::Rebuild => dst.rebuild_from(&src),
        };
        crash_point(Phase::AfterCatchUp);
        let did = match caught_up {
            None => Did::Bad,
            Some(()) => self.apply(&dst, &src, op, t.next),
        };
        let applied = match did {
            Did::Set | Did::Deleted => Applied::Changed,
            _ => Applied::Unchanged,
        };
        // A bad table may have been left half-changed: restore the published state. (A full
        // map or a missing key changed nothing, or only compacted it.)
        if did == Did::Bad && dst.rebuild_from(&src).is_none() {
            return Err(self.corrupt_published()); // the copy stays odd: the next writer rebuilds
        }
        let published = protocol::finish(metas, t, applied);
        crash_point(Phase::AfterFinish);
        match (did, published) {
            (Did::Set | Did::Deleted, Some(next)) => {
                let (kind, key) = match op {
                    Op::Set { key, .. } => (OP_SET, key),
                    Op::Delete { key } => (OP_DELETE, key),
                };
                self.write_last_op(next, kind, key.bytes);
                crash_point(Phase::AfterLastOp);
                let bucket = &self.wait_buckets()[protocol::wait_bucket(key.tag())];
                protocol::publish_op(ctrl, bucket, next);
                crash_point(Phase::AfterPublish);
                Ok(Delete::Removed { version: next })
            }
            (Did::Missing, _) => Ok(Delete::NotFound),
            (Did::Full(space), _) => Err(self.full(space, op)),
            _ => Err(self.corrupt_published()),
        }
    }

    /// Applies `op` at `version` to `dst` (state = `src`'s); compacts from `src` and retries
    /// once when it does not fit.
    fn apply(&self, dst: &Table<'_>, src: &Table<'_>, op: Op<'_>, version: u64) -> Did {
        match op {
            Op::Delete { key } => {
                let did = dst.delete(&key);
                if did == Did::Bad && dst.rebuild_from(src).is_some() {
                    return dst.delete(&key);
                }
                did
            }
            Op::Set { key, value } => match dst.try_set(&key, value, version) {
                Did::Full(_) | Did::Bad => {
                    if dst.compact_from(src).is_none() {
                        return Did::Bad;
                    }
                    dst.try_set(&key, value, version)
                }
                did => did,
            },
        }
    }

    /// Replays op `v` (the last-op record's key) from the published copy `src` into `dst`,
    /// which is at `v - 1`. `None` when that fails; the caller then rebuilds.
    fn replay(&self, dst: &Table<'_>, src: &Table<'_>, key: &[u8]) -> Option<()> {
        let key = Key::new(key);
        match src.find(&key) {
            Find::Bad => None,
            Find::Absent { .. } => match dst.delete(&key) {
                Did::Deleted | Did::Missing => Some(()),
                _ => None,
            },
            Find::Present { rec, .. } => {
                let mut value = vec![0u8; rec.val_len];
                src.read_value(&rec, &mut value)?;
                match self.apply(dst, src, Op::Set { key, value: &value }, rec.version) {
                    Did::Set => Some(()),
                    _ => None,
                }
            }
        }
    }

    /// The last-op record: its version (0 when torn or unset) and key.
    fn last_op(&self) -> (u64, Vec<u8>) {
        let mem = self.mem();
        let version = mem
            .word(LAST_OP_OFFSET)
            .map_or(0, |w| w.load(Ordering::Relaxed));
        let mut head = [0u8; 8];
        if mem.read(LAST_OP_OFFSET + 8, &mut head).is_none() {
            return (0, Vec::new());
        }
        let key_len = u32::from_le_bytes([head[4], head[5], head[6], head[7]]) as usize;
        if key_len == 0 || key_len > MAX_KEY_LEN {
            return (0, Vec::new());
        }
        let mut key = vec![0u8; key_len];
        if mem.read(LAST_OP_OFFSET + 16, &mut key).is_none() {
            return (0, Vec::new());
        }
        (version, key)
    }

    /// Writes the last-op record: version 0 first, so that a writer killed part-way leaves a
    /// record that forces a rebuild, never a wrong replay.
    fn write_last_op(&self, version: u64, kind: u32, key: &[u8]) {
        let mem = self.mem();
        let Some(word) = mem.word(LAST_OP_OFFSET) else {
            return;
        };
        word.store(0, Ordering::Relaxed);
        let mut head = [0u8; 8];
        head[0..4].copy_from_slice(&kind.to_le_bytes());
        head[4..8].copy_from_slice(&(key.len() as u32).to_le_bytes());
        let _ = mem.write(LAST_OP_OFFSET + 8, &head);
        let _ = mem.write(LAST_OP_OFFSET + 16, key);
        crash_point(Phase::MidLastOp);
        word.store(version, Ordering::Relaxed);
    }

    fn full(&self, space: Space, op: Op<'_>) -> Error {
        let reason = match (space, op) {
            (Space::Keys, _) => format!(
                "it holds {} keys, the most its {} buckets take",
                self.layout.max_keys(),
                self.layout.buckets
            ),
            (Space::Heap, Op::Set { key, value }) => format!(
                "a record of {} bytes (key {} B, value {} B) does not fit beside the live \
                 records in its {}-byte heap",
                record_size(key.bytes.len(), value.len()).unwrap_or(usize::MAX),
                key.bytes.len(),
                value.len(),
                self.layout.heap
            ),
            (Space::Heap, Op::Delete { .. }) => "its heap is full".to_owned(),
        };
        Error::MapFull {
            name: self.name().to_owned(),
            reason,
        }
    }

    fn corrupt_published(&self) -> Error {
        Error::Corrupt {
            name: self.name().to_owned(),
            reason: "the published copy of the map is inconsistent (bad record, bucket or \
                     length)"
                .into(),
        }
    }

    fn site(&self) -> Site<'_> {
        Site {
            seg: &self.seg,
            ctrl: self.ctrl(),
            trailer: self.layout.trailer_offset(),
        }
    }

    #[inline]
    fn mem(&self) -> Shared<'_> {
        Shared::of(self.seg.mapping())
    }

    /// The whole map in the mapping (`finish` checked its geometry against it at open).
    #[inline]
    fn whole(&self) -> Whole<'_> {
        Whole::new(self.mem(), &self.geo).expect("map layout checked at open")
    }

    #[inline]
    fn ctrl(&self) -> &Control {
        self.whole().ctrl()
    }

    fn wait_buckets(&self) -> &[WaitBucket; WAIT_BUCKETS] {
        self.mem()
            .line(WAIT_OFFSET)
            .expect("map layout checked at open")
    }

    /// The channel `wait_changed` of a key with this tag sleeps on: its wait bucket `b`,
    /// channel `b + 1` (0 is the control line's, `wait_any`'s).
    fn channel(&self, tag: u32) -> Channel<'_> {
        let b = protocol::wait_bucket(tag);
        let bucket = &self.wait_buckets()[b];
        Channel {
            wake: &bucket.wake,
            sleepers: &bucket.sleepers,
            id: b as u32 + 1,
        }
    }

    #[inline]
    fn metas(&self) -> [&CopyMeta; 2] {
        self.whole().metas()
    }
}

/// Points of the writer where the unit tests make it "die" (panic, with the lock released on
/// unwind, as the kernel hands a dead writer's lock over): what each leaves is what a writer
/// killed there leaves. Compiled to nothing outside tests.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(not(test), allow(dead_code))]
enum Phase {
    AfterBegin,
    MidRebuild,
    AfterCatchUp,
    MidInsert,
    MidDelete,
    MidCompaction,
    AfterFinish,
    MidLastOp,
    AfterLastOp,
    AfterPublish,
}

#[cfg(test)]
thread_local! {
    static CRASH_AT: std::cell::Cell<Option<Phase>> = const { std::cell::Cell::new(None) };
}

#[cfg(test)]
fn crash_point(p: Phase) {
    if CRASH_AT.with(|c| c.get()) == Some(p) {
        CRASH_AT.with(|c| c.set(None));
        panic!("injected crash at {p:?}");
    }
}

#[cfg(not(test))]
#[inline(always)]
fn crash_point(_: Phase) {}

/// Parses a private copy of a table (buckets then heap) into sorted entries. `None` when it
/// is inconsistent: a bad record, non-zero key padding, a key whose tag is not its bucket
/// word's, a duplicate, a count that differs.
fn parse_copy(raw: &[u8], layout: Layout, count: u64) -> Option<Vec<Entry>> {
    let (buckets, heap) = raw.split_at(8 * layout.buckets);
    let mut entries = Vec::new();
    for b in buckets.chunks_exact(8) {
        let w = u64::from_le_bytes(b.try_into().ok()?);
        if w == 0 {
            continue;
        }
        let off = ((w & 0xffff_ffff) as usize)
            .checked_sub(1)?
            .checked_mul(8)?;
        let h = heap.get(off..off.checked_add(RECORD_HEADER)?)?;
        let key_len = usize::from(u16::from_le_bytes([h[0], h[1]]));
        let val_len = u32::from_le_bytes([h[4], h[5], h[6], h[7]]) as usize;
        let version = u64::from_le_bytes(h[8..16].try_into().ok()?);
        if key_len == 0 || key_len > MAX_KEY_LEN {
            return None;
        }
        let k0 = off + RECORD_HEADER;
        let key = heap.get(k0..k0 + key_len)?;
        let v0 = k0 + key_span(key_len);
        // The padding is zero, as writers leave it (a probe compares whole words).
        if heap.get(k0 + key_len..v0)?.iter().any(|&b| b != 0) {
            return None;
        }
        let value = heap.get(v0..v0.checked_add(val_len)?)?;
        if tag_of(key) != (w >> 32) as u32 {
            return None;
        }
        entries.push(Entry {
            key: key.to_vec(),
            value: value.to_vec(),
            version,
        });
    }
    entries.sort_by(|a, b| a.key.cmp(&b.key));
    if entries.windows(2).any(|w| w[0].key == w[1].key) || entries.len() as u64 != count {
        return None;
    }
    Some(entries)
}

#[cfg(test)]
mod tests {
    use super::*;

    const PINNED: [u64; 3] = [
        0x3904_f4d1_f4b0_04e2,
        0xfad7_7844_5d74_9ccc,
        0x01a1_25fc_965a_e516,
    ];

    #[test]
    fn layouts_round_trip_through_the_file_size() {
        for cap in [1, 64, 65, 767, 768, 1536, 4096, 100_000, 1 << 20, 3 << 20] {
            let l = Layout::for_capacity(cap).unwrap();
            assert!(l.heap >= cap && l.heap % 64 == 0);
            assert!(l.buckets.is_power_of_two() && l.buckets >= 16);
            assert_eq!(
                Layout::from_size(l.file_size().unwrap()),
                Some(l),
                "cap {cap}"
            );
        }
        for size in [0, 448, 449, 1000, 4096] {
            assert!(Layout::from_size(size).is_none() || size > 1000);
        }
    }

    /// The hash is part of the layout: processes of two builds must agree on it, so its
    /// values are pinned (a change needs a new `LAYOUT_VERSION`).
    #[test]
    fn the_hash_is_pinned_and_spreads_sequential_keys() {
        let pinned: Vec<u64> = [&b"a"[..], b"key-00077", b"a-key-of-exactly-24-byte"]
            .iter()
            .map(|k| hash(k))
            .collect();
        assert_eq!(pinned, PINNED);
        // Sequential keys at 30 % load: short probe sequences from the home buckets.
        let bits = 15;
        let mut used = vec![0usize; 1 << bits];
        let mut probes = 0;
        for i in 0..10_000 {
            let mut b = home_of(tag_of(format!("key-{i:05}").as_bytes()), bits);
            probes += 1;
            while used[b] != 0 {
                b = (b + 1) & ((1 << bits) - 1);
                probes += 1;
            }
            used[b] = 1;
        }
        assert!(
            probes < 13_000,
            "{probes} probes to insert 10,000 sequential keys"
        );
        // And the tag's low bits (the wait bucket) spread them too: 156 a bucket on average,
        // a standard deviation of 12.4.
        let mut waits = [0usize; WAIT_BUCKETS];
        for i in 0..10_000 {
            waits[protocol::wait_bucket(tag_of(format!("key-{i:05}").as_bytes()))] += 1;
        }
        let (lo, hi) = (waits.iter().min().unwrap(), waits.iter().max().unwrap());
        assert!(
            *lo > 100 && *hi < 215,
            "wait buckets hold {lo} to {hi} keys"
        );
    }

    /// The hash in its plainest form (every word zero-padded byte by byte, pairs folded in a
    /// loop): the straight-line forms for short keys and the overlapping loads of the tail
    /// must give the same values, or processes of two builds would disagree.
    fn reference_hash(key: &[u8]) -> u64 {
        let mut words: Vec<u64> = key
            .chunks(8)
            .map(|c| {
                c.iter()
                    .enumerate()
                    .fold(0u64, |w, (i, &b)| w | u64::from(b) << (8 * i))
            })
            .collect();
        if words.len() % 2 == 1 {
            words.push(0);
        }
        let acc = words.chunks(2).fold(0, |acc, p| hash_pair(acc, p[0], p[1]));
        hash_finish(acc, key.len())
    }

    #[test]
    fn the_hash_of_every_key_length_is_the_reference_hash() {
        let key: Vec<u8> = (0..=255u8).map(|i| i.wrapping_mul(37) ^ 0xa5).collect();
        for n in 1..=MAX_KEY_LEN {
            assert_eq!(hash(&key[..n]), reference_hash(&key[..n]), "{n} bytes");
        }
    }

    /// The two-load remainder word is the byte-by-byte zero-padded word, for every length.
    #[test]
    fn the_padded_word_is_the_bytes_folded_in_one_by_one() {
        let bytes: Vec<u8> = (1..=7).map(|i| 0x90 + i).collect();
        for n in 1..8 {
            let rest = &bytes[..n];
            let folded = rest
                .iter()
                .enumerate()
                .fold(0u64, |w, (i, &b)| w | u64::from(b) << (8 * i));
            assert_eq!(padded_word(rest), folded, "{n} bytes");
        }
    }

    /// The tail word of every key length and start is the zero-padded word of those bytes.
    #[test]
    fn the_tail_word_is_the_padded_word_of_the_last_bytes() {
        let key: Vec<u8> = (0..=40u8).map(|i| i.wrapping_mul(29) ^ 0x3c).collect();
        for n in 1..=40usize {
            for start in (n.saturating_sub(7)..n).filter(|s| (n - s) % 8 != 0) {
                let folded = key[start..n]
                    .iter()
                    .enumerate()
                    .fold(0u64, |w, (i, &b)| w | u64::from(b) << (8 * i));
                assert_eq!(
                    tail_word(&key[..n], start),
                    folded,
                    "{n} bytes from {start}"
                );
            }
        }
    }

    /// A private directory on `/dev/shm`, removed on drop.
    #[cfg(target_os = "linux")]
    struct Dir(std::path::PathBuf);

    #[cfg(target_os = "linux")]
    impl Dir {
        fn new() -> Dir {
            static N: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
            let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let p = std::path::PathBuf::from(format!(
                "/dev/shm/shmem-unit-map-{}-{n}",
                std::process::id()
            ));
            std::fs::create_dir(&p).unwrap();
            Dir(p)
        }
    }

    #[cfg(target_os = "linux")]
    impl Drop for Dir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    type Model = std::collections::BTreeMap<Vec<u8>, (Vec<u8>, u64)>;

    fn check(m: &Map, model: &Model, version: u64, when: &str) {
        let snap = m.snapshot().unwrap();
        let got: Model = snap
            .iter()
            .map(|e| (e.key.clone(), (e.value.clone(), e.version)))
            .collect();
        assert_eq!(&got, model, "{when}");
        assert_eq!(snap.version(), version, "{when}");
        assert_eq!(m.version(), version, "{when}");
        assert_eq!(m.len().unwrap(), model.len(), "{when}");
        for (k, (v, ver)) in model {
            assert_eq!(m.get(k).unwrap(), Some((v.clone(), *ver)), "{when}");
        }
    }

    /// Runs 600 seeded operations (sets of changing sizes over 12 keys in a 16-bucket table,
    /// so overwrites in place, bump allocations and compactions; deletes that shift probe
    /// chains) and arms
    /// `phases` one after the other: each makes the next writer that reaches it "die" there.
    /// After every operation the map must equal the model: the dead writer's operation is
    /// visible exactly when it died after publishing, and the next writers repair the rest.
    fn die_at(phases: &[Phase]) {
        #[cfg(target_os = "linux")]
        let (_d, builder) = {
            let d = Dir::new();
            let b = Map::builder("crash").dir(&d.0);
            (d, b)
        };
        // Windows: no directory; a name of this process's own.
        #[cfg(windows)]
        let builder = {
            static N: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
            let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            Map::builder(&format!("unit-map-crash-{}-{n}", std::process::id()))
        };
        let m = builder.capacity(768).open().unwrap();
        assert_eq!((m.layout.buckets, m.max_keys()), (16, 12));
        let mut model = Model::new();
        let mut version = 0u64;
        let mut armed = phases.iter();
        let mut fired = Vec::new();
        let mut x = 0x2545_f491_4f6c_dd1du64;
        let mut next = move |n: u64| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x % n
        };
        let mut current = None;
        for i in 0..600 {
            if current.is_none() {
                current = armed.next().copied();
                CRASH_AT.with(|c| c.set(current));
            }
            let key = format!("key-{}", next(12)).into_bytes();
            let delete = next(4) == 0;
            let value = vec![i as u8; next(34) as usize];
            let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                if delete {
                    m.delete(&key).map(|d| match d {
                        Delete::Removed { version } => Some(version),
                        Delete::NotFound => None,
                    })
                } else {
                    m.set(&key, &value).map(Some)
                }
            }));
            let published = match r {
                Ok(r) => r.unwrap(),
                Err(_) => {
                    let p = current.take().unwrap();
                    fired.push(p);
                    if p != Phase::AfterPublish {
                        check(&m, &model, version, &format!("op {i}: died at {p:?}"));
                        continue;
                    }
                    if delete && !model.contains_key(&key) {
                        None
                    } else {
                        Some(version + 1)
                    }
                }
            };
            if let Some(v) = published {
                version += 1;
                assert_eq!(v, version);
                if delete {
                    model.remove(&key);
                } else {
                    model.insert(key, (value, v));
                }
            } else {
                assert!(delete && !model.contains_key(&key));
            }
            check(&m, &model, version, &format!("op {i}"));
        }
        CRASH_AT.with(|c| c.set(None));
        assert_eq!(fired, phases, "every armed phase was reached");
    }

    /// A map of this process's own (Linux: in a private directory).
    fn private_map(tag: &str) -> (Map, impl Drop) {
        #[cfg(target_os = "linux")]
        {
            let d = Dir::new();
            let m = Map::builder(tag).dir(&d.0).capacity(4096).open().unwrap();
            (m, d)
        }
        #[cfg(windows)]
        {
            struct Nothing;
            impl Drop for Nothing {
                fn drop(&mut self) {}
            }
            let name = format!("unit-map-{tag}-{}", std::process::id());
            (Map::open(&name, 4096).unwrap(), Nothing)
        }
    }

    /// Persistent map files of map layouts 1 and 2 (header kinds 3 and 4) are refused by name,
    /// untouched.
    #[cfg(target_os = "linux")]
    #[test]
    fn maps_of_layouts_1_and_2_are_refused_at_open() {
        let d = Dir::new();
        let b = Map::builder("old").dir(&d.0).lifetime(Lifetime::Persistent);
        b.clone()
            .capacity(4096)
            .open()
            .unwrap()
            .set("k", b"v")
            .unwrap();
        let path = d.0.join(crate::FILE_PREFIX.to_owned() + "old");
        for (kind, layout) in [(3u32, 1), (4, 2)] {
            let mut bytes = std::fs::read(&path).unwrap();
            bytes[12..16].copy_from_slice(&kind.to_le_bytes());
            std::fs::write(&path, &bytes).unwrap();
            match b.open_existing() {
                Err(e @ Error::Incompatible { .. }) => {
                    let msg = e.to_string();
                    let named = format!("map layout {layout}");
                    assert!(msg.contains("old") && msg.contains(&named), "{msg}");
                }
                other => panic!("a layout {layout} map opened as {other:?}"),
            }
            assert_eq!(
                std::fs::read(&path).unwrap(),
                bytes,
                "the old map was modified"
            );
        }
    }

    /// A read-only handle's retry path, called directly as after a disturbed pass, never asks
    /// writers to hold off: its mapping is read-only, so the request (a write of `hold_off`)
    /// would fault and kill the test. It still finds what the fast pass finds.
    #[cfg(target_os = "linux")]
    #[test]
    fn a_read_only_handles_retries_never_ask_writers_to_hold_off() {
        let d = Dir::new();
        let b = Map::builder("ro-retry").dir(&d.0).mode(0o644);
        let rw = b.clone().capacity(4096).open().unwrap();
        rw.set("k", b"v").unwrap();
        let ro = b.access(crate::Access::ReadOnly).open_existing().unwrap();
        let whole = Whole::new(ro.mem(), &ro.geo).unwrap();
        let mut look = KeyLook {
            key: Key::new(b"k"),
            read: IntoVec(Vec::new()),
        };
        let (found, version) = ro.look_disturbed(&whole, &mut look).unwrap();
        assert_eq!((found, version), (Some(1), 1));
        assert_eq!(look.read.0, b"v");
        assert_eq!(ro.ctrl().hold_off.load(Ordering::Relaxed), 0);
        assert!(matches!(
            ro.set("k", b"w"),
            Err(Error::PermissionDenied { .. })
        ));
    }

    /// The keys the cross-process wait tests use lie in two different wait buckets.
    #[test]
    fn the_wait_test_keys_lie_in_different_buckets() {
        let (a, b) = (tag_of(b"key-a"), tag_of(b"key-b"));
        assert_ne!(protocol::wait_bucket(a), protocol::wait_bucket(b));
    }

    /// A waiter that announced itself on a bucket and died: sets of keys in other buckets
    /// leave its flag alone (no wake-up for them), the first set in its bucket clears it (one
    /// wake-up), and later sets find it clear (none).
    #[test]
    fn a_dead_bucket_waiter_costs_one_wake_up_and_other_buckets_none() {
        let (m, _d) = private_map("dead-waiter");
        let ba = &m.wait_buckets()[protocol::wait_bucket(tag_of(b"key-a"))];
        let w = seqlock::announce(&ba.sleepers, &ba.wake); // and then it is killed
        for i in 0..3 {
            m.set("key-b", &[i]).unwrap();
            assert_eq!(
                ba.sleepers.load(Ordering::Relaxed),
                1,
                "key-b woke key-a's bucket"
            );
            assert_eq!(
                ba.wake.load(Ordering::Relaxed),
                w,
                "key-b bumped key-a's bucket"
            );
        }
        m.set("key-a", b"x").unwrap();
        assert_eq!(
            ba.sleepers.load(Ordering::Relaxed),
            0,
            "one wake-up clears the flag"
        );
        assert_eq!(ba.wake.load(Ordering::Relaxed), w + 1);
        m.delete("key-a").unwrap();
        assert_eq!(
            ba.wake.load(Ordering::Relaxed),
            w + 2,
            "a delete bumps the bucket too"
        );
        assert_eq!(
            m.ctrl().sleepers.load(Ordering::Relaxed),
            0,
            "no wait_any sleeper"
        );
    }

    #[test]
    fn a_writer_dying_at_any_phase_never_shows_half_an_operation() {
        use Phase::*;
        for p in [
            AfterBegin,
            AfterCatchUp,
            MidInsert,
            MidDelete,
            MidCompaction,
            AfterFinish,
            MidLastOp,
            AfterLastOp,
            AfterPublish,
        ] {
            die_at(&[p, p, p]);
        }
    }

    #[test]
    fn a_writer_dying_while_rebuilding_after_another_death_is_repaired_too() {
        use Phase::*;
        die_at(&[
            AfterBegin,
            MidRebuild,
            AfterFinish,
            MidRebuild,
            MidLastOp,
            MidRebuild,
            MidCompaction,
            AfterCatchUp,
        ]);
    }

    /// The probe's key comparison (whole words against the record's zero-padded key: two for
    /// keys of up to 16 bytes, a loop for longer ones): keys of every length are found, and a
    /// key with the same tag (forced) is not when its bytes differ in one byte, when it is one
    /// byte shorter, or when it is the key with zero bytes added or removed at its end (the
    /// padding holds zeros, so only the length check tells `k` from `k\0`).
    /// `get_into`'s short-key path (`ShortLook`, `find_short`) and its cold retry function
    /// give what `get` (the generic `KeyLook` path) and a parsed snapshot give, for keys of
    /// every length from 1 to 20 bytes, keys that end in zero bytes, all-zero and all-0xff
    /// keys, in maps of 16, 32 and 2048 buckets (probes that wrap past the table's end, and
    /// a full small map whose later keys are absent): the same value and version, a
    /// `BufferTooSmall` naming the length needed, and `InvalidKey` for 0 and 256 bytes.
    #[test]
    #[cfg(target_os = "linux")]
    fn get_into_agrees_with_get_and_the_snapshot_for_every_short_key_length() {
        for cap in [256usize, 1024, 64 * 1024] {
            let d = Dir::new();
            let m = Map::builder("short-keys")
                .dir(&d.0)
                .capacity(cap)
                .open()
                .unwrap();
            let base: Vec<u8> = (0..40u8).map(|i| i.wrapping_mul(91) ^ 0x3c).collect();
            let mut keys: Vec<Vec<u8>> = Vec::new();
            for n in 1..=20 {
                keys.push(base[..n].to_vec());
                let mut zero_tail = base[..n].to_vec();
                zero_tail[n - 1] = 0;
                keys.push(zero_tail.clone());
                zero_tail.push(0);
                keys.push(zero_tail);
            }
            keys.extend([
                vec![0u8; 1],
                vec![0; 8],
                vec![0; 16],
                vec![0xff; 16],
                vec![0; 17],
            ]);
            let mut stored = 0;
            for (i, k) in keys.iter().enumerate() {
                match m.set(k, &vec![i as u8; i % 13]) {
                    Ok(_) => stored += 1,
                    Err(Error::MapFull { .. }) => {}
                    Err(e) => panic!("set {k:?}: {e}"),
                }
            }
            assert!(stored > 8, "{cap}: only {stored} keys stored");
            let snap = m.snapshot().unwrap();
            for k in &keys {
                let got = m.get(k).unwrap();
                let in_snap = snap.get(k).map(|e| (e.value.clone(), e.version));
                assert_eq!(got, in_snap, "{cap}: {k:?}, get against the snapshot");
                let mut buf = [0u8; 64];
                let into = m.get_into(k, &mut buf).unwrap();
                match (&got, into) {
                    (None, None) => {}
                    (Some((value, version)), Some((len, v))) => {
                        assert_eq!((len, v), (value.len(), *version), "{cap}: {k:?}");
                        assert_eq!(&buf[..len], &value[..], "{cap}: {k:?}");
                        if !value.is_empty() {
                            let mut small = vec![0u8; value.len() - 1];
                            match m.get_into(k, &mut small) {
                                Err(Error::BufferTooSmall {
                                    needed, capacity, ..
                                }) => assert_eq!((needed, capacity), (value.len(), small.len())),
                                other => panic!("{cap}: {k:?}: {other:?}"),
                            }
                        }
                    }
                    _ => panic!("{cap}: {k:?}: get {got:?}, get_into {into:?}"),
                }
                if k.len() <= 16 {
                    let mut again = [0u8; 64];
                    let retried = m.get_into_disturbed(k, &mut again).unwrap();
                    let expected = match into {
                        Some((len, version)) => Got::Value { len, version },
                        None => Got::Absent,
                    };
                    assert_eq!(retried, expected, "{cap}: {k:?}, the retry path");
                    assert_eq!(again, buf, "{cap}: {k:?}, the retry path's bytes");
                }
            }
            for bad in [Vec::new(), vec![1u8; MAX_KEY_LEN + 1]] {
                assert!(matches!(
                    m.get_into(&bad, &mut [0u8; 4]),
                    Err(Error::InvalidKey { len, .. }) if len == bad.len()
                ));
            }
        }
    }

    #[test]
    #[cfg(target_os = "linux")]
    fn keys_that_differ_in_one_byte_or_in_length_are_told_apart() {
        let d = Dir::new();
        let m = Map::builder("twins")
            .dir(&d.0)
            .capacity(256 * 1024)
            .open()
            .unwrap();
        let base: Vec<u8> = (0..MAX_KEY_LEN).map(|i| b'a' + (i % 26) as u8).collect();
        let lens: Vec<usize> = (1..=40).chain([63, 64, 65, 254, 255]).collect();
        for &n in &lens {
            m.set(&base[..n], format!("value of {n}").as_bytes())
                .unwrap();
        }
        let copy = (m.version() & 1) as usize;
        let t = Table::new(m.mem(), m.layout, copy);
        for &n in &lens {
            let key = &base[..n];
            let real = Key::new(key);
            let Find::Present { rec, .. } = t.find(&real) else {
                panic!("{n} bytes: not found");
            };
            let mut buf = vec![0u8; rec.val_len];
            t.read_value(&rec, &mut buf).unwrap();
            assert_eq!(buf, format!("value of {n}").as_bytes(), "{n} bytes");
            let same_tag = |bytes: &[u8]| {
                let k = Key {
                    hash: real.hash,
                    ..Key::new(bytes)
                };
                matches!(t.find(&k), Find::Absent { .. })
            };
            for at in (0..n).filter(|i| n <= 20 || [0, 7, 8, 15, 16, n - 1].contains(i)) {
                let mut twin = key.to_vec();
                twin[at] ^= 0x20;
                assert!(same_tag(&twin), "{n} bytes, byte {at} changed");
            }
            if n > 1 {
                assert!(same_tag(&key[..n - 1]), "{n} bytes less one");
            }
            for extra in 1..=8 {
                let mut longer = key.to_vec();
                longer.resize((n + extra).min(MAX_KEY_LEN), 0);
                if longer.len() > n {
                    assert!(same_tag(&longer), "{n} bytes and {extra} zero bytes");
                }
            }
        }
        // And keys that end in zero bytes, against the same keys without them.
        for (stored, probe) in [
            (&b"k\0"[..], &b"k"[..]),
            (b"abcdefg\0", b"abcdefg"),
            (b"abcdefgh\0", b"abcdefgh"),
            (b"abcdefghijklmno\0", b"abcdefghijklmno"),
            (b"abcdefghijklmnop", b"abcdefghijklmnop\0"),
        ] {
            m.set(stored, b"zero-tailed").unwrap();
            let copy = (m.version() & 1) as usize;
            let t = Table::new(m.mem(), m.layout, copy);
            let k = Key {
                hash: Key::new(stored).hash,
                ..Key::new(probe)
            };
            assert!(matches!(t.find(&Key::new(stored)), Find::Present { .. }));
            assert!(
                matches!(t.find(&k), Find::Absent { .. }),
                "{probe:?} found as {stored:?}"
            );
        }
    }

    /// The in-place probe against hostile words in the unpublished copy (which no reader uses,
    /// so the test may write it): slots at and past the heap's end, key and value lengths that
    /// run past it, a key length of 0 or over 255, a matching tag on another key. Each is
    /// `Bad` or a miss, never an access outside the heap; the intact entry is still found.
    #[test]
    #[cfg(target_os = "linux")] // (a private directory; the probe itself is platform-free)
    fn the_probe_refuses_records_that_leave_the_heap() {
        let d = Dir::new();
        let m = Map::builder("probe")
            .dir(&d.0)
            .capacity(768)
            .open()
            .unwrap();
        m.set("k", b"v").unwrap();
        m.set("k", b"w").unwrap(); // both copies now hold "k"
        let mem = m.mem();
        let copy = ((m.version() + 1) & 1) as usize;
        let t = Table::new(mem, m.layout, copy);
        let tag = tag_of(b"k");
        assert!(matches!(t.find(&Key::new(b"k")), Find::Present { .. }));
        let at = match t.find(&Key::new(b"k")) {
            Find::Present { at, .. } => at,
            _ => unreachable!(),
        };
        let words = m.layout.heap / 8;
        let bucket = |slot: usize| (u64::from(tag) << 32) | slot as u64;
        let header = |key_len: u64, val_len: u64| key_len | val_len << 32;
        // A record at heap word `slot - 1`; its header is written there when it fits.
        let cases: [(usize, Option<u64>); 7] = [
            (words + 1, None),                         // past the heap
            (words, None),                             // version word past the heap
            (words - 1, Some(header(1, 0))),           // key past the heap
            (1, Some(header(0, 1))),                   // empty key
            (1, Some(header(256, 1))),                 // key over 255 bytes
            (1, Some(header(1, u64::from(u32::MAX)))), // value past the heap
            (usize::MAX as u32 as usize, None),        // the largest slot
        ];
        for (slot, head) in cases {
            if let Some(h) = head {
                let off = t.heap_off + (slot - 1) * 8;
                mem.write(off, &h.to_le_bytes()).unwrap();
            }
            t.bucket(at).store(bucket(slot), Ordering::Relaxed);
            assert!(
                matches!(t.find(&Key::new(b"k")), Find::Bad),
                "slot {slot}, header {head:?}"
            );
        }
        // Another key under the same tag: a miss, then the probe goes on to an empty bucket.
        t.rebuild_from(&Table::new(mem, m.layout, copy ^ 1))
            .unwrap();
        assert!(matches!(t.find(&Key::new(b"k")), Find::Present { .. }));
        // A key whose tag matches but whose bytes differ is absent.
        let j = Key {
            hash: Key::new(b"k").hash,
            ..Key::new(b"j")
        };
        assert!(matches!(t.find(&j), Find::Absent { .. }));
        assert_eq!(m.get("k").unwrap().map(|(v, _)| v), Some(b"w".to_vec()));
    }

    #[test]
    fn garbage_copies_do_not_parse() {
        let l = Layout::for_capacity(4096).unwrap();
        let mut raw = vec![0u8; 8 * l.buckets + l.heap];
        assert_eq!(parse_copy(&raw, l, 0), Some(vec![]));
        assert_eq!(parse_copy(&raw, l, 1), None);
        raw[0..8].copy_from_slice(&u64::MAX.to_le_bytes());
        assert_eq!(parse_copy(&raw, l, 1), None);
    }
}
