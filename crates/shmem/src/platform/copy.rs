//! Copies between private memory and memory that other processes write at the same time.
//!
//! A plain `memcpy` from bytes that another thread or process may be writing is a data race,
//! which is undefined behaviour in Rust's memory model even when the caller later throws the
//! bytes away (the seqlock pattern). We avoid it in one of two sound ways:
//!
//! - on x86-64, inline assembly: `rep movsb` from 512 bytes up (at `memcpy` speed on CPUs with
//!   ERMS/FSRM), SSE2 `movdqu` and word moves below (where `rep movsb` starts slowly). The
//!   compiler cannot see into assembly and treats the shared bytes as opaque external memory,
//!   like a device or another process writing them;
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
    use std::arch::asm;

    /// Below this many bytes, explicit 16/8/4/1-byte moves beat `rep movsb`, whose start-up
    /// costs several nanoseconds and depends on alignment (measured in docs/BENCHMARKS.md).
    const REP_MOVSB_FROM: usize = 512;

    /// Copies `len` bytes from `src` to `dst`: `rep movsb` for long copies, SSE2 `movdqu`
    /// chunks (the last one overlapping) and word moves for short ones. All in assembly, so the
    /// compiler never sees a racy Rust access.
    ///
    /// # Safety
    /// Both ranges are valid for `len` bytes and do not overlap.
    #[inline]
    pub(super) unsafe fn copy(dst: *mut u8, src: *const u8, len: usize) {
        // SAFETY: each move below reads `src + off .. src + off + width` and writes
        // `dst + off .. dst + off + width` with `off + width <= len`, inside the ranges the
        // caller guarantees; the moves need no alignment (movdqu, mov).
        unsafe {
            if len >= REP_MOVSB_FROM {
                // The System V ABI guarantees DF = 0; the instruction leaves the flags alone.
                asm!(
                    "rep movsb",
                    inout("rcx") len => _,
                    inout("rdi") dst => _,
                    inout("rsi") src => _,
                    options(nostack, preserves_flags)
                );
            } else if len >= 16 {
                // 16-byte moves up to the last one, which ends at `len` (and may overlap the
                // one before). Both pointers are bumped in step: indexed by an offset, the loop
                // compiled to two more instructions per move in some callers (`Value::get`).
                let (last_d, last_s) = (dst.add(len - 16), src.add(len - 16));
                let (mut d, mut s) = (dst, src);
                while d < last_d {
                    move16(d, s);
                    d = d.add(16);
                    s = s.add(16);
                }
                move16(last_d, last_s);
            } else if len >= 8 {
                move8(dst, src);
                move8(dst.add(len - 8), src.add(len - 8));
            } else if len >= 4 {
                move4(dst, src);
                move4(dst.add(len - 4), src.add(len - 4));
            } else {
                for off in 0..len {
                    move1(dst.add(off), src.add(off));
                }
            }
        }
    }

    /// # Safety
    /// 16 bytes are valid at both pointers.
    #[inline(always)]
    unsafe fn move16(dst: *mut u8, src: *const u8) {
        // SAFETY: forwarded from the caller.
        unsafe {
            asm!(
                "movdqu {x}, xmmword ptr [{s}]",
                "movdqu xmmword ptr [{d}], {x}",
                s = in(reg) src, d = in(reg) dst, x = out(xmm_reg) _,
                options(nostack, preserves_flags)
            );
        }
    }

    /// # Safety
    /// 8 bytes are valid at both pointers.
    #[inline(always)]
    unsafe fn move8(dst: *mut u8, src: *const u8) {
        // SAFETY: forwarded from the caller.
        unsafe {
            asm!(
                "mov {t}, qword ptr [{s}]",
                "mov qword ptr [{d}], {t}",
                s = in(reg) src, d = in(reg) dst, t = out(reg) _,
                options(nostack, preserves_flags)
            );
        }
    }

    /// # Safety
    /// 4 bytes are valid at both pointers.
    #[inline(always)]
    unsafe fn move4(dst: *mut u8, src: *const u8) {
        // SAFETY: forwarded from the caller.
        unsafe {
            asm!(
                "mov {t:e}, dword ptr [{s}]",
                "mov dword ptr [{d}], {t:e}",
                s = in(reg) src, d = in(reg) dst, t = out(reg) _,
                options(nostack, preserves_flags)
            );
        }
    }

    /// # Safety
    /// 1 byte is valid at both pointers.
    #[inline(always)]
    unsafe fn move1(dst: *mut u8, src: *const u8) {
        // SAFETY: forwarded from the caller.
        unsafe {
            asm!(
                "movzx {t:e}, byte ptr [{s}]",
                "mov byte ptr [{d}], {t:l}",
                s = in(reg) src, d = in(reg) dst, t = out(reg) _,
                options(nostack, preserves_flags)
            );
        }
    }
}

/// The word-wise atomic copy used where there is no assembly copy. Compiled (and tested) on
/// every target, so that it is not code that only other machines ever build.
#[cfg(not(target_arch = "x86_64"))]
use portable as imp;

#[cfg_attr(target_arch = "x86_64", allow(dead_code))]
mod portable {
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

    /// Runs `copy` (either implementation) over every short length and misalignment.
    fn check(copy: unsafe fn(*mut u8, *const u8, usize)) {
        let src: Vec<u8> = (0..1200u32).map(|i| (i * 7 + 3) as u8).collect();
        for off in 0..9 {
            for dst_off in [0usize, 3] {
                for len in (0..70).chain([127, 128, 129, 200, 511, 512, 513, 1000]) {
                    let mut out = vec![0xAAu8; 1200];
                    // SAFETY: `off + len <= 1200` and `dst_off + len <= 1200`: both in range,
                    // and the two vectors do not overlap.
                    unsafe { copy(out.as_mut_ptr().add(dst_off), src.as_ptr().add(off), len) };
                    assert_eq!(&out[dst_off..dst_off + len], &src[off..off + len]);
                    assert!(out[..dst_off].iter().all(|&b| b == 0xAA));
                    assert!(out[dst_off + len..].iter().all(|&b| b == 0xAA));
                }
            }
        }
    }

    #[test]
    fn both_implementations_copy_every_length_and_alignment() {
        check(imp::copy);
        check(portable::copy);
    }

    #[test]
    fn copies_every_length_and_offset() {
        let src: Vec<u8> = (0..1200u32).map(|i| (i * 7 + 3) as u8).collect();
        for off in 0..9 {
            for len in (0..70).chain([127, 128, 129, 200, 511, 512, 513, 1000]) {
                let mut dst = vec![0u8; len];
                // SAFETY: `off + len <= 1200`, inside `src`.
                unsafe { copy_from_shared(&mut dst, src.as_ptr().add(off)) };
                assert_eq!(dst, &src[off..off + len]);
                let mut out = vec![0xAAu8; 1200];
                // SAFETY: `off + len <= 1200`, inside `out`.
                unsafe { copy_to_shared(out.as_mut_ptr().add(off), &dst) };
                assert_eq!(&out[off..off + len], &src[off..off + len]);
                assert!(out[..off].iter().all(|&b| b == 0xAA));
                assert!(out[off + len..].iter().all(|&b| b == 0xAA));
            }
        }
    }
}
