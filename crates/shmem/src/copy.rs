//! Copies between private memory and memory that other processes write at the same time.
//!
//! A plain `memcpy` from bytes that another thread or process may be writing is a data race,
//! which is undefined behaviour in Rust's memory model even when the caller later throws the
//! bytes away (the seqlock pattern). We avoid it in one of two sound ways:
//!
//! - on x86-64, `rep movsb` in inline assembly: the compiler cannot see into it, treats the
//!   shared bytes as opaque external memory (like a device or another process writing them), and
//!   on CPUs with ERMS/FSRM it runs at `memcpy` speed;
//! - elsewhere, word-sized `Relaxed` atomic loads and stores (with single-byte atomics at the
//!   unaligned edges), which are never a data race by definition.
//!
//! Neither gives atomicity of the whole copy: the seqlock around the copy (in `value.rs`) is
//! what tells a consistent copy from a torn one. These functions only make the copy itself
//! defined behaviour.

/// Copies `dst.len()` bytes from shared memory at `src` into `dst`.
///
/// # Safety
/// `src..src + dst.len()` must lie inside a live mapping of this process. Other processes may
/// write those bytes concurrently; the copied bytes are then unspecified but the copy is sound.
#[inline]
pub(crate) unsafe fn copy_from_shared(dst: &mut [u8], src: *const u8) {
    // SAFETY: forwarded from the caller; `dst` is a valid private buffer of that length.
    unsafe { imp::copy(dst.as_mut_ptr(), src, dst.len()) }
}

/// Copies `src` into shared memory at `dst`.
///
/// # Safety
/// `dst..dst + src.len()` must lie inside a live writable mapping of this process. Other
/// processes may read those bytes concurrently (they must not rely on them until published).
#[inline]
pub(crate) unsafe fn copy_to_shared(dst: *mut u8, src: &[u8]) {
    // SAFETY: forwarded from the caller; `src` is a valid private buffer of that length.
    unsafe { imp::copy(dst, src.as_ptr(), src.len()) }
}

#[cfg(target_arch = "x86_64")]
mod imp {
    /// `rep movsb`: copies `len` bytes from `src` to `dst` (direction flag is clear by ABI).
    ///
    /// # Safety
    /// Both ranges are valid for `len` bytes and do not overlap.
    #[inline]
    pub(super) unsafe fn copy(dst: *mut u8, src: *const u8, len: usize) {
        // SAFETY: the caller guarantees both ranges; `rep movsb` reads exactly `src..src+len`
        // and writes exactly `dst..dst+len`; the System V ABI guarantees DF = 0 on entry, and
        // the instruction leaves the flags untouched otherwise.
        unsafe {
            std::arch::asm!(
                "rep movsb",
                inout("rcx") len => _,
                inout("rdi") dst => _,
                inout("rsi") src => _,
                options(nostack, preserves_flags)
            );
        }
    }
}

#[cfg(not(target_arch = "x86_64"))]
mod imp {
    use std::sync::atomic::{AtomicU8, AtomicUsize, Ordering::Relaxed};

    const W: usize = std::mem::size_of::<usize>();

    /// Word-wise atomic copy; which side is shared does not matter (both use atomics).
    ///
    /// # Safety
    /// Both ranges are valid for `len` bytes and do not overlap.
    #[inline]
    pub(super) unsafe fn copy(dst: *mut u8, src: *const u8, len: usize) {
        let mut i = 0;
        // Byte-wise until `src` is word aligned (or the end).
        while i < len && (src as usize + i) % W != 0 {
            // SAFETY: `i < len`, so both bytes are in range; AtomicU8 has alignment 1.
            unsafe { byte(dst.add(i), src.add(i)) };
            i += 1;
        }
        let dst_aligned = (dst as usize + i) % W == 0;
        while i + W <= len {
            // SAFETY: `src + i` is word aligned and `i + W <= len`.
            let v = unsafe { (*src.add(i).cast::<AtomicUsize>()).load(Relaxed) };
            if dst_aligned {
                // SAFETY: `dst + i` is word aligned (same misalignment as at the start of the
                // loop, advanced by whole words) and in range.
                unsafe { (*dst.add(i).cast::<AtomicUsize>()).store(v, Relaxed) };
            } else {
                for (k, b) in v.to_ne_bytes().into_iter().enumerate() {
                    // SAFETY: `i + k < len`.
                    unsafe { (*dst.add(i + k).cast::<AtomicU8>()).store(b, Relaxed) };
                }
            }
            i += W;
        }
        while i < len {
            // SAFETY: `i < len`.
            unsafe { byte(dst.add(i), src.add(i)) };
            i += 1;
        }
    }

    /// # Safety
    /// Both pointers are valid for one byte.
    #[inline]
    unsafe fn byte(dst: *mut u8, src: *const u8) {
        // SAFETY: forwarded; AtomicU8 has the size and alignment of u8.
        unsafe {
            let b = (*src.cast::<AtomicU8>()).load(Relaxed);
            (*dst.cast::<AtomicU8>()).store(b, Relaxed);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn copies_every_length_and_offset() {
        let src: Vec<u8> = (0..300u32).map(|i| (i * 7 + 3) as u8).collect();
        for off in 0..9 {
            for len in [0usize, 1, 7, 8, 9, 15, 16, 63, 64, 65, 200] {
                let mut dst = vec![0u8; len];
                // SAFETY: `off + len <= 300`, inside `src`.
                unsafe { copy_from_shared(&mut dst, src.as_ptr().add(off)) };
                assert_eq!(dst, &src[off..off + len]);
                let mut out = vec![0xAAu8; 300];
                // SAFETY: `off + len <= 300`, inside `out`.
                unsafe { copy_to_shared(out.as_mut_ptr().add(off), &dst) };
                assert_eq!(&out[off..off + len], &src[off..off + len]);
                assert!(out[..off].iter().all(|&b| b == 0xAA));
                assert!(out[off + len..].iter().all(|&b| b == 0xAA));
            }
        }
    }
}
