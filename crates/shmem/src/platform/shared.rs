//! The one door to a mapping's shared bytes: bounds-checked views and copies, no system calls.
//!
//! Every protocol module (`value.rs`, `map.rs`, the segments' header views) reaches the memory that
//! other processes write through [`Shared`], never through raw pointers, so that the argument
//! for why each access is sound is made once, here:
//!
//! - *Inside.* Every method checks its offset and length against the bytes this process mapped
//!   (`Mapping::len`), so no value read from the segment can lead outside the mapping. A
//!   failed check is `None`: the caller turns it into an error, or, for a layout it checked
//!   when it opened the segment, into a panic that names the broken invariant.
//! - *Aligned.* A mapping starts on a page (`mmap`, `shmat` and `MapViewOfFile` return one,
//!   and the backends' `Mapping` constructors refuse anything else), so an offset that is a
//!   multiple of a type's alignment (at most a page, checked at compile time) gives an aligned
//!   address.
//! - *Atomics only.* Other processes write these bytes at any time, so the only Rust references
//!   to them are shared references to atomics: [`Shared::word`], [`Shared::words`] and
//!   [`Shared::line`], the last only for types that promise to be made of atomics, padding
//!   included ([`AtomicView`]). A shared reference to an atomic is sound while others write the
//!   same bytes, by definition. Plain bytes are only copied in and out by `copy.rs`, whose copy
//!   the compiler cannot see into (assembly) or makes of atomics ([`Shared::read`],
//!   [`Shared::write`]).
//! - *One writer's slice.* The one exception is [`Shared::bytes_mut`], a `&mut [u8]` over a
//!   slot that `Value::set_with` hands to its caller's closure: it needs the writers' lock of
//!   this very mapping, borrowed mutably for as long as the slice lives, so no cooperating
//!   writer in any process touches those bytes meanwhile, and no second slice exists in this
//!   process; readers only copy them out with `copy.rs`.
//! - *Checked once.* A value's layout (its lines below the slots, and its two slots) is
//!   laid out when it is opened ([`SlotsLayout`]); each use then checks it against the
//!   mapping with one comparison ([`Shared::slots`]), its lines need none (constant offsets,
//!   checked at compile time) and a copy needs only `len <= cap`, the seqlock's own bound.
//! - *Lifetime.* A `Shared<'a>` borrows the mapping for `'a`, and so does every view it hands
//!   out: none outlives the `munmap`/`shmdt`/`UnmapViewOfFile` of its mapping.
//! - *Read-only mappings* (`Access::ReadOnly`): [`Shared::write`] and [`Shared::bytes_mut`]
//!   refuse them (`None`). The atomic views are handed out for loads; the layers above refuse
//!   every write on a read-only handle before they reach an atomic store (`value.rs`), and a
//!   store that got through would fault (the page is mapped without write permission), never
//!   write.
//!
//! Under `--cfg loom` the protocol types hold loom's atomics, which are not plain atomics in
//! memory: the library is compiled then, but [`Shared::of`] refuses to run (the model checks
//! never map a segment).

use std::marker::PhantomData;
use std::mem::{align_of, size_of};

use super::copy;
use super::Mapping;
use crate::header::RawHeader;
use crate::map::protocol::{CopyMeta, WaitBucket};
use crate::seqlock::{Control, SlotMeta};
use crate::sync::{AtomicU32, AtomicU64};
use crate::wlock::{Guard, Park};

/// The alignment every mapping's first byte has at least: a page, 4 KiB or more on every
/// platform we build for.
pub(crate) const BASE_ALIGN: usize = 4096;

/// Types made of atomics only, padding included, which may be viewed in shared memory with a
/// shared reference ([`Shared::line`]) while other processes write the same bytes.
///
/// # Safety
/// Every byte of the type belongs to an atomic (`AtomicU32`, `AtomicU64`, arrays or `repr(C)`
/// structs of them without padding), every byte pattern is a valid value, and its alignment
/// is at most [`BASE_ALIGN`].
pub(crate) unsafe trait AtomicView {}

// SAFETY: an atomic is atomics only, 8 bytes aligned to 8 (asserted below).
unsafe impl AtomicView for AtomicU64 {}
// SAFETY: as `AtomicU64`: 4 bytes aligned to 4.
unsafe impl AtomicView for AtomicU32 {}
// SAFETY: `repr(C)`: `version: AtomicU64`, five `AtomicU32` and `_pad: [AtomicU32; 9]`, 64 bytes
// with no padding (asserted below); any bit pattern is valid for atomics.
unsafe impl AtomicView for Control {}
// SAFETY: `repr(C)`: three `AtomicU64` and `_pad: [AtomicU64; 5]`, 64 bytes, no padding
// (asserted below).
unsafe impl AtomicView for SlotMeta {}
// SAFETY: `repr(C)`: `AtomicU64`/`AtomicU32` fields in an order that leaves no gap, 64 bytes
// (asserted below and in header.rs).
unsafe impl AtomicView for RawHeader {}
// SAFETY: `repr(C)`: four `AtomicU64` and `_pad: [AtomicU64; 4]`, 64 bytes, no padding
// (asserted below).
unsafe impl AtomicView for CopyMeta {}
// SAFETY: `repr(C)`: two `AtomicU32`, 8 bytes, no padding (asserted below).
unsafe impl AtomicView for WaitBucket {}
// SAFETY: an array has no padding between its elements (its size is `N` times the element's,
// which is a multiple of its alignment), so an array of atomics-only types is atomics only,
// with the element's alignment. This covers `[SlotMeta; 2]` and `[WaitBucket; WAIT_BUCKETS]`.
unsafe impl<T: AtomicView, const N: usize> AtomicView for [T; N] {}

/// The layouts the `AtomicView` implementations above rely on: the sum of the fields' sizes is
/// the type's size (no padding), and the alignment is the widest atomic's.
#[cfg(not(loom))]
const _: () = {
    assert!(size_of::<AtomicU64>() == 8 && align_of::<AtomicU64>() == 8);
    assert!(size_of::<AtomicU32>() == 4 && align_of::<AtomicU32>() == 4);
    assert!(size_of::<Control>() == 8 + 14 * 4 && align_of::<Control>() == 8);
    assert!(size_of::<SlotMeta>() == 8 * 8 && align_of::<SlotMeta>() == 8);
    assert!(size_of::<RawHeader>() == 4 * 8 + 8 * 4 && align_of::<RawHeader>() == 8);
    assert!(size_of::<CopyMeta>() == 8 * 8 && align_of::<CopyMeta>() == 8);
    assert!(size_of::<WaitBucket>() == 2 * 4 && align_of::<WaitBucket>() == 4);
};

/// A mapping's bytes, from its first byte (the segment header) to `len`; see the module
/// documentation for why each access is sound. `Copy`: make one wherever it is needed
/// ([`Shared::of`] only copies the `Mapping`'s pointer, length and access).
#[derive(Clone, Copy, Debug)]
pub(crate) struct Shared<'a> {
    ptr: *mut u8,
    len: usize,
    writable: bool,
    _mapping: PhantomData<&'a Mapping>,
}

impl<'a> Shared<'a> {
    /// The bytes of `m`, for as long as `m` is borrowed.
    ///
    /// Under loom the protocol types hold loom's atomics, so no view of mapped memory would be
    /// sound: it panics (the model checks never map a segment).
    #[inline]
    pub(crate) fn of(m: &'a Mapping) -> Shared<'a> {
        if cfg!(loom) {
            panic!("a loom build never views mapped memory (its atomics are loom's)");
        }
        Shared {
            ptr: m.ptr(),
            len: m.len(),
            writable: m.writable(),
            _mapping: PhantomData,
        }
    }

    /// The number of bytes (the Linux unit tests check what `of` takes from the mapping).
    #[inline]
    #[cfg_attr(not(all(test, target_os = "linux")), allow(dead_code))]
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    /// Whether `off..off + size` lies inside, with `off` a multiple of `align`.
    #[inline]
    fn fits(&self, off: usize, size: usize, align: usize) -> bool {
        off % align == 0 && matches!(off.checked_add(size), Some(end) if end <= self.len)
    }

    /// The atomic word at `off`, if it is 8-aligned and inside.
    #[inline]
    pub(crate) fn word(&self, off: usize) -> Option<&'a AtomicU64> {
        self.line::<AtomicU64>(off)
    }

    /// The `n` atomic words at `off`, if they are 8-aligned and inside.
    #[inline]
    pub(crate) fn words(&self, off: usize, n: usize) -> Option<&'a [AtomicU64]> {
        if !self.fits(off, n.checked_mul(8)?, align_of::<AtomicU64>()) {
            return None;
        }
        // SAFETY: `off..off + 8n` lies inside the mapping (checked above), which lives for `'a`;
        // `off` is 8-aligned from a page-aligned base, so every word is aligned; a shared
        // reference to atomics is sound while other processes write them (module docs).
        Some(unsafe { std::slice::from_raw_parts(self.ptr.add(off).cast::<AtomicU64>(), n) })
    }

    /// The `T` at `off`, if it is aligned to `align_of::<T>()` and inside.
    #[inline]
    pub(crate) fn line<T: AtomicView>(&self, off: usize) -> Option<&'a T> {
        const { assert!(align_of::<T>() <= BASE_ALIGN) };
        if !self.fits(off, size_of::<T>(), align_of::<T>()) {
            return None;
        }
        // SAFETY: `off..off + size_of::<T>()` lies inside the mapping (checked above), which
        // lives for `'a`; `off` is a multiple of `T`'s alignment, which divides the base's
        // (asserted at compile time), so the address is aligned; `T` is made of atomics only
        // (`AtomicView`), so a shared reference is sound while other processes write it.
        Some(unsafe { &*self.ptr.add(off).cast::<T>() })
    }

    /// Copies `dst.len()` bytes at `off` out, if they lie inside.
    #[inline]
    pub(crate) fn read(&self, off: usize, dst: &mut [u8]) -> Option<()> {
        if !self.fits(off, dst.len(), 1) {
            return None;
        }
        // SAFETY: `off..off + dst.len()` lies inside the live mapping (checked above).
        unsafe { copy::copy_from_shared(dst, self.ptr.add(off)) };
        Some(())
    }

    /// Copies `src` in at `off`, if it lies inside and the mapping is writable.
    #[inline]
    pub(crate) fn write(&self, off: usize, src: &[u8]) -> Option<()> {
        if !self.writable || !self.fits(off, src.len(), 1) {
            return None;
        }
        // SAFETY: `off..off + src.len()` lies inside the live, writable mapping (checked above).
        unsafe { copy::copy_to_shared(self.ptr.add(off), src) };
        Some(())
    }

    /// The `len` bytes at `off` as a slice to write in place, for as long as `held`, a guard of
    /// the writers' lock whose lock word lies in this mapping, stays borrowed; `None` if the
    /// range is not inside, the mapping is read-only, or the lock is another mapping's.
    ///
    /// Sound because: holding the lock of this mapping's segment, no cooperating writer in any
    /// process writes the bytes of the slot the value protocol hands the lock holder
    /// (`seqlock::write`) until the guard is dropped; borrowing the guard mutably for the
    /// slice's life means this process has no second slice at a time; readers only copy the
    /// bytes out with `copy.rs`, which the compiler cannot see into, so no Rust access races
    /// with the slice. A peer that ignores the protocol can change the bytes under it (the
    /// caller's documentation says to write them, not to trust what it reads back). Private:
    /// only [`Slots::bytes_mut`] reaches it, with the offset of a slot, never of a line that
    /// shared references view.
    #[inline]
    fn bytes_mut<'g, P: Park>(
        &self,
        off: usize,
        len: usize,
        held: &'g mut Guard<'_, P>,
    ) -> Option<&'g mut [u8]>
    where
        'a: 'g,
    {
        let word = held.word() as *const AtomicU32 as usize;
        let ours = word >= self.ptr as usize
            && word - self.ptr as usize + size_of::<AtomicU32>() <= self.len;
        if !self.writable || !ours || !self.fits(off, len, 1) {
            return None;
        }
        // SAFETY: `off..off + len` lies inside the live, writable mapping (checked above), which
        // outlives `'g`; the exclusivity argument is in this method's documentation: the lock of
        // this mapping is held and its guard mutably borrowed for `'g`.
        Some(unsafe { std::slice::from_raw_parts_mut(self.ptr.add(off), len) })
    }
}

/// The layout of a value (`value.rs`): lines of its own below the compile-time offset `OFF`,
/// then two slots of `cap` bytes each from `OFF`, ending at `end`. Made once, when the value is
/// opened (`new` checks the arithmetic), so that each use checks the whole layout against the
/// mapping with one comparison ([`Shared::slots`]): the lines then need no check at all (their
/// offsets are constants below `OFF`, checked at compile time), and a copy into a slot needs
/// only `len <= cap`, which the compiler merges with the seqlock's own check of that bound.
#[derive(Clone, Copy, Debug)]
pub(crate) struct SlotsLayout<const OFF: usize> {
    cap: usize,
    /// `OFF + 2 * cap`, without overflow (`new` is the only constructor).
    end: usize,
}

impl<const OFF: usize> SlotsLayout<OFF> {
    /// Two slots of `cap` bytes from `OFF`; `None` if their end overflows.
    pub(crate) fn new(cap: usize) -> Option<SlotsLayout<OFF>> {
        let end = cap.checked_mul(2)?.checked_add(OFF)?;
        Some(SlotsLayout { cap, end })
    }

    /// The offset just past the second slot.
    pub(crate) fn end(&self) -> usize {
        self.end
    }
}

/// A [`SlotsLayout`] checked to lie inside one mapping: `OFF + 2 * cap <= len`.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Slots<'a, const OFF: usize> {
    shared: Shared<'a>,
    cap: usize,
}

impl<'a> Shared<'a> {
    /// The lines and slots of `layout`, if its slots end inside.
    #[inline]
    pub(crate) fn slots<const OFF: usize>(
        &self,
        layout: SlotsLayout<OFF>,
    ) -> Option<Slots<'a, OFF>> {
        (layout.end <= self.len).then_some(Slots {
            shared: *self,
            cap: layout.cap,
        })
    }
}

impl<'a, const OFF: usize> Slots<'a, OFF> {
    /// The `T` at the constant offset `AT`, which lies below the slots (checked at compile time
    /// with its alignment), so inside.
    #[inline]
    pub(crate) fn line<T: AtomicView, const AT: usize>(&self) -> &'a T {
        const {
            assert!(AT % align_of::<T>() == 0 && AT + size_of::<T>() <= OFF);
            assert!(align_of::<T>() <= BASE_ALIGN);
        };
        // SAFETY: `AT + size_of::<T>() <= OFF <= OFF + 2 * cap <= len` (the first at compile
        // time, the last when these slots were made), so the line lies inside the mapping,
        // which lives for `'a`; `AT` is a multiple of `T`'s alignment, which divides the base's;
        // `T` is made of atomics only (`AtomicView`).
        unsafe { &*self.shared.ptr.add(AT).cast::<T>() }
    }

    /// The bytes of each slot.
    #[inline]
    pub(crate) fn cap(&self) -> usize {
        self.cap
    }

    /// The offset of slot `i & 1`: at most `OFF + cap`, so adding at most `cap` stays at or
    /// below `OFF + 2 * cap`, which does not overflow.
    #[inline]
    fn offset(&self, i: usize) -> usize {
        OFF + self.cap * (i & 1)
    }

    /// Copies the first `dst.len()` bytes of slot `i & 1` out, if `dst.len() <= cap`.
    #[inline]
    pub(crate) fn read(&self, i: usize, dst: &mut [u8]) -> Option<()> {
        if dst.len() > self.cap {
            return None;
        }
        // SAFETY: `offset(i) + dst.len() <= OFF + 2 * cap <= len` (no overflow:
        // `SlotsLayout::new`; `<= len`: `Shared::slots`), so the range lies inside the live
        // mapping.
        unsafe { copy::copy_from_shared(dst, self.shared.ptr.add(self.offset(i))) };
        Some(())
    }

    /// Copies `src` into slot `i & 1`, if it fits and the mapping is writable.
    #[inline]
    pub(crate) fn write(&self, i: usize, src: &[u8]) -> Option<()> {
        if src.len() > self.cap {
            return None;
        }
        self.shared.write(self.offset(i), src)
    }

    /// The first `len` bytes of slot `i & 1` to write in place (see [`Shared::bytes_mut`]), if
    /// `len <= cap`.
    #[inline]
    pub(crate) fn bytes_mut<'g, P: Park>(
        &self,
        i: usize,
        len: usize,
        held: &'g mut Guard<'_, P>,
    ) -> Option<&'g mut [u8]>
    where
        'a: 'g,
    {
        if len > self.cap {
            return None;
        }
        self.shared.bytes_mut(self.offset(i), len, held)
    }
}

/// Copies `dst.len()` bytes at byte `off` of `words` out, if they lie inside those words: the
/// way a reader copies a record's value out of a heap it holds as a slice of atomic words
/// (`map.rs`), with one check against the slice, none against the mapping.
#[inline(always)]
pub(crate) fn read_words(words: &[AtomicU64], off: usize, dst: &mut [u8]) -> Option<()> {
    if off.checked_add(dst.len())? > 8 * words.len() {
        return None;
    }
    // SAFETY: `off..off + dst.len()` lies inside the `8 * words.len()` bytes of `words`
    // (checked above), live for the borrow; they may be written by others at any time, and
    // `copy.rs` copies racy bytes soundly.
    unsafe { copy::copy_from_shared(dst, words.as_ptr().cast::<u8>().add(off)) };
    Some(())
}

/// The bytes of one line ([`Parts`]): a cache line, the most an [`AtomicView`] handed out as a
/// line of `Parts` may take.
pub(crate) const LINE: usize = 64;

/// The fixed parts of a layout (`map.rs`'s control and meta lines, and its copies' bucket and
/// heap words), laid out once when the segment is opened, from its size alone (never from its
/// bytes): `L` lines of [`LINE`] bytes at 64-aligned offsets and `W` runs of words at 8-aligned
/// offsets, all ending at or before `end`. Each use checks the whole against a mapping with one
/// comparison ([`Shared::parts`]), and hands the parts out with no further check: what a
/// reader's pass needs, in the fewest instructions.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Parts<const L: usize, const W: usize> {
    lines: [usize; L],
    /// (offset, length in words).
    words: [(usize, usize); W],
    /// The end of the last part, without overflow (`new` is the only constructor).
    end: usize,
}

impl<const L: usize, const W: usize> Parts<L, W> {
    /// The parts at these offsets; `None` if one is misaligned or its end overflows.
    pub(crate) fn new(lines: [usize; L], words: [(usize, usize); W]) -> Option<Parts<L, W>> {
        let mut end = 0usize;
        for &off in &lines {
            if off % LINE != 0 {
                return None;
            }
            end = end.max(off.checked_add(LINE)?);
        }
        for &(off, n) in &words {
            if off % 8 != 0 {
                return None;
            }
            end = end.max(off.checked_add(n.checked_mul(8)?)?);
        }
        Some(Parts { lines, words, end })
    }

    /// Where the last part ends.
    #[cfg_attr(not(test), allow(dead_code))]
    pub(crate) fn end(&self) -> usize {
        self.end
    }
}

/// The compile-time check that a `T` fits a line of [`Parts`]: its size and alignment.
#[cfg_attr(loom, allow(dead_code))]
struct FitsLine<T>(PhantomData<T>);

impl<T> FitsLine<T> {
    #[cfg(not(loom))]
    const OK: () = assert!(size_of::<T>() <= LINE && align_of::<T>() <= LINE);
}

/// [`Parts`] checked to lie inside one mapping: every part ends at or before `len`.
#[derive(Clone, Copy, Debug)]
pub(crate) struct PartsIn<'a, const L: usize, const W: usize> {
    ptr: *mut u8,
    parts: &'a Parts<L, W>,
    _mapping: PhantomData<&'a Mapping>,
}

impl<'a> Shared<'a> {
    /// `parts` in this mapping, if they all end inside.
    #[inline]
    pub(crate) fn parts<'p, const L: usize, const W: usize>(
        &self,
        parts: &'p Parts<L, W>,
    ) -> Option<PartsIn<'p, L, W>>
    where
        'a: 'p,
    {
        (parts.end <= self.len).then_some(PartsIn {
            ptr: self.ptr,
            parts,
            _mapping: PhantomData,
        })
    }
}

impl<'a, const L: usize, const W: usize> PartsIn<'a, L, W> {
    /// Line `i` as a `T` (at most a line, aligned to at most a line: checked at compile time).
    /// Panics if `i >= L` (a constant index after inlining).
    #[inline]
    pub(crate) fn line<T: AtomicView>(&self, i: usize) -> &'a T {
        // Not under loom, whose atomics are larger (and whose builds never view a mapping).
        #[cfg(not(loom))]
        let () = FitsLine::<T>::OK;
        let off = self.parts.lines[i];
        // SAFETY: `off + LINE <= end <= len` (`Parts::new`, `Shared::parts`), so the line lies
        // inside the mapping, which lives for `'a`; `off` is 64-aligned from a page-aligned
        // base and `T`'s alignment divides 64 (asserted), so the address is aligned; `T` is
        // made of atomics only (`AtomicView`) and no larger than the line.
        unsafe { &*self.ptr.add(off).cast::<T>() }
    }

    /// Run of words `i`. Panics if `i >= W`.
    #[inline]
    pub(crate) fn words(&self, i: usize) -> &'a [AtomicU64] {
        let (off, n) = self.parts.words[i];
        // SAFETY: `off + 8 n <= end <= len` (`Parts::new`, `Shared::parts`), so the words lie
        // inside the mapping, which lives for `'a`; `off` is 8-aligned from a page-aligned
        // base; shared references to atomics are sound while other processes write them.
        unsafe { std::slice::from_raw_parts(self.ptr.add(off).cast::<AtomicU64>(), n) }
    }
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use std::sync::atomic::Ordering;

    use super::*;
    use crate::segment::Segment;

    fn segment(tag: &str, size: usize) -> Segment {
        let name = format!("shared-{tag}-{}", std::process::id());
        let seg = Segment::open(&name, size).unwrap();
        assert!(seg.created());
        seg
    }

    #[test]
    fn views_and_copies_stay_inside_and_aligned() {
        let seg = segment("bounds", 4096 - 64);
        let sh = Shared::of(seg.mapping());
        assert_eq!(sh.len(), 4096);
        // Words: aligned and inside only.
        assert!(sh.word(4088).is_some());
        assert!(sh.word(4092).is_none() && sh.word(4096).is_none() && sh.word(12).is_none());
        assert!(sh.word(usize::MAX - 7).is_none());
        assert!(sh.words(64, 504).is_some());
        assert!(sh.words(64, 505).is_none() && sh.words(68, 1).is_none());
        assert!(sh.words(8, usize::MAX / 4).is_none());
        assert_eq!(sh.words(4096, 0).map(<[AtomicU64]>::len), Some(0));
        // Lines: their own alignment.
        assert!(sh.line::<Control>(4096 - 64).is_some());
        assert!(sh.line::<Control>(4096 - 56).is_none() && sh.line::<Control>(4096).is_none());
        assert!(sh.line::<WaitBucket>(4).is_some() && sh.line::<WaitBucket>(2).is_none());
        assert!(sh.line::<[SlotMeta; 2]>(4096 - 128).is_some());
        assert!(sh.line::<[SlotMeta; 2]>(4096 - 64).is_none());
        // Copies: any offset, inside only.
        let mut buf = [0u8; 16];
        assert!(sh.write(4080, &[7; 16]).is_some());
        assert!(sh.write(4081, &[7; 16]).is_none() && sh.write(usize::MAX, &[7]).is_none());
        assert!(sh.read(4081, &mut buf).is_none() && sh.read(usize::MAX, &mut buf).is_none());
        assert!(sh.read(4080, &mut buf).is_some());
        assert_eq!(buf, [7; 16]);
        // The views see what the copies wrote, and the segment's own reads see the views.
        sh.word(64)
            .unwrap()
            .store(u64::from_ne_bytes(*b"abcdefgh"), Ordering::Relaxed);
        let mut head = [0u8; 8];
        seg.read(0, &mut head).unwrap();
        assert_eq!(&head, b"abcdefgh");
        // The header is where the header's view says.
        let raw = sh.line::<RawHeader>(0).unwrap();
        assert!(raw.is_initialised());
    }

    /// A lock whose holder is never asked about and never slept on: every lock below is free.
    #[derive(Debug)]
    struct Free;

    impl Park for Free {
        fn holder(&self, _token: u32) -> crate::wlock::Holder {
            crate::wlock::Holder::Alive
        }
        fn sleep(&self, _word: &AtomicU32, _expected: u32, _timeout: std::time::Duration) {}
        fn wake_one(&self, _word: &AtomicU32) {}
    }

    #[test]
    fn slots_are_checked_once_and_each_copy_against_its_slot() {
        let seg = segment("slots", 4096 - 64);
        let sh = Shared::of(seg.mapping());
        assert!(
            SlotsLayout::<256>::new(usize::MAX / 2).is_none(),
            "overflow"
        );
        assert!(
            SlotsLayout::<256>::new(usize::MAX / 2 - 127).is_none(),
            "overflow"
        );
        let over = SlotsLayout::<256>::new(1921).unwrap();
        assert!(sh.slots(over).is_none(), "ends past 4096");
        let layout = SlotsLayout::<256>::new(1920).unwrap();
        assert_eq!(layout.end(), 4096);
        let slots = sh.slots(layout).unwrap();
        assert_eq!(slots.cap(), 1920);
        // The lines below the slots are the mapping's own bytes.
        slots
            .line::<Control, 64>()
            .version
            .store(7, Ordering::Relaxed);
        assert_eq!(sh.word(64).unwrap().load(Ordering::Relaxed), 7);
        let metas = slots.line::<[SlotMeta; 2], 128>();
        assert!(std::ptr::eq(&metas[1], sh.line::<SlotMeta>(192).unwrap()));
        // Copies: at most `cap` bytes, into slot `i & 1`.
        assert!(slots.write(0, &[1; 1921]).is_none() && slots.write(1, &[1; 1921]).is_none());
        assert!(slots.write(0, &[1; 1920]).is_some());
        assert!(slots.write(3, &[2; 1920]).is_some(), "slot 3 & 1 = 1");
        let mut out = vec![0u8; 1921];
        assert!(slots.read(1, &mut out).is_none());
        slots.read(0, &mut out[..1920]).unwrap();
        assert!(out[..1920].iter().all(|&b| b == 1));
        slots.read(1, &mut out[..1920]).unwrap();
        assert!(out[..1920].iter().all(|&b| b == 2));
        // Where the slots lie, seen through plain offsets.
        let mut edge = [0u8; 2];
        sh.read(256 + 1919, &mut edge).unwrap();
        assert_eq!(edge, [1, 2]);
        sh.read(4094, &mut edge).unwrap();
        assert_eq!(edge, [2, 2]);
    }

    fn ctrl(s: &Segment) -> &Control {
        Shared::of(s.mapping()).line::<Control>(64).unwrap()
    }

    #[test]
    fn bytes_mut_needs_this_mappings_lock_and_write_needs_a_writable_mapping() {
        let seg = segment("lock", 4096 - 64);
        let other = segment("other", 4096 - 64);
        let sh = Shared::of(seg.mapping());
        let t = std::time::Duration::from_secs(5);
        {
            let mut held = crate::wlock::lock(&ctrl(&other).lock, 1, t, 0, Free).unwrap();
            assert!(
                sh.bytes_mut(256, 64, &mut held).is_none(),
                "another mapping's lock"
            );
        }
        let mut held = crate::wlock::lock(&ctrl(&seg).lock, 1, t, 0, Free).unwrap();
        assert!(sh.bytes_mut(4096 - 63, 64, &mut held).is_none(), "outside");
        let slots = sh.slots(SlotsLayout::<256>::new(1920).unwrap()).unwrap();
        assert!(
            slots.bytes_mut(1, 1921, &mut held).is_none(),
            "longer than a slot"
        );
        assert_eq!(
            slots.bytes_mut(1, 1920, &mut held).map(|b| b.len()),
            Some(1920)
        );
        let buf = sh.bytes_mut(4096 - 64, 64, &mut held).unwrap();
        buf.fill(9);
        let mut out = [0u8; 64];
        sh.read(4096 - 64, &mut out).unwrap();
        assert_eq!(out, [9; 64]);

        let ro = Segment::builder(seg.name())
            .access(crate::Access::ReadOnly)
            .open_existing()
            .unwrap();
        let shr = Shared::of(ro.mapping());
        assert!(shr.write(256, &[1]).is_none(), "read-only mapping");
        // The read-write mapping's lock word does not lie in the read-only mapping.
        assert!(shr.bytes_mut(256, 64, &mut held).is_none());
        assert_eq!(shr.read(4096 - 64, &mut out), Some(()));
        assert_eq!(out, [9; 64]);
    }
}
