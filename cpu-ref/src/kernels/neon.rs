//! NEON BitLinear kernel: widening multiply-accumulate (`vmlal_s8`) on 64 weights per 128-bit load.

use std::arch::aarch64::*;

/// Blocks of 4 words whose i16 partial sums may be added before widening: each lane receives
/// 8 products of magnitude at most `2·128 = 256` per block (2048), and `15 · 2048 = 30720`
/// stays below `i16::MAX`.
const I16_BLOCKS: usize = 15;

/// `Σ x · code` for one packed row `w` against activations regrouped by `Prepared` for blocks of 4
/// words (`x` has at least `ceil(w.len() / 4) · 64` bytes).
///
/// # Safety
/// The CPU must support NEON and `x` must be at least that long.
#[target_feature(enable = "neon")]
pub(crate) unsafe fn dot_codes(w: &[u32], x: &[i8]) -> i32 {
    debug_assert!(x.len() >= w.len().div_ceil(4) * 64);
    let full = w.len() / 4;
    let mut acc32 = vdupq_n_s32(0);
    let mut b = 0;
    while b < full {
        let end = (b + I16_BLOCKS).min(full);
        let mut acc16 = vdupq_n_s16(0);
        while b < end {
            // SAFETY: block `b < full` covers words `4b..4b+4` of `w` and bytes `64b..64b+64`
            // of `x`, both in bounds.
            let words = unsafe { vld1q_u32(w.as_ptr().add(4 * b)) };
            acc16 = unsafe { block(acc16, words, x.as_ptr().add(64 * b)) };
            b += 1;
        }
        acc32 = vpadalq_s16(acc32, acc16);
    }
    if full * 4 < w.len() {
        // The last partial block, zero-extended (missing words meet zero activation padding).
        let mut tail = [0u32; 4];
        tail[..w.len() - full * 4].copy_from_slice(&w[full * 4..]);
        // SAFETY: `tail` is 16 bytes; `x` holds a full final block.
        let words = unsafe { vld1q_u32(tail.as_ptr()) };
        let part = unsafe { block(vdupq_n_s16(0), words, x.as_ptr().add(64 * full)) };
        acc32 = vpadalq_s16(acc32, part);
    }
    vaddvq_s32(acc32)
}

/// Adds one block's products to `acc`: for each group `g`, `(words >> 2g) & 0x03..03` (codes
/// `0..=2`, exact as `i8`) times the 16 activation bytes of group `g`.
///
/// # Safety
/// NEON, and `x` points at 64 readable bytes.
#[target_feature(enable = "neon")]
#[inline]
unsafe fn block(mut acc: int16x8_t, words: uint32x4_t, x: *const i8) -> int16x8_t {
    let mask = vdupq_n_u8(3);
    let groups = [
        words,
        vshrq_n_u32::<2>(words),
        vshrq_n_u32::<4>(words),
        vshrq_n_u32::<6>(words),
    ];
    for (g, shifted) in groups.into_iter().enumerate() {
        let codes = vreinterpretq_s8_u8(vandq_u8(vreinterpretq_u8_u32(shifted), mask));
        // SAFETY: the caller guarantees 64 readable bytes at `x`.
        let xs = unsafe { vld1q_s8(x.add(16 * g)) };
        acc = vmlal_s8(acc, vget_low_s8(codes), vget_low_s8(xs));
        acc = vmlal_high_s8(acc, codes, xs);
    }
    acc
}
