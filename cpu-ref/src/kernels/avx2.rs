//! AVX2 BitLinear kernel: `_mm256_maddubs_epi16(codes, x)` on 128 weights per 256-bit load.

use std::arch::x86_64::*;

/// Blocks of 8 words whose i16 partial sums may be added before widening: each `maddubs` lane is
/// at most `2·2·128 = 512` in magnitude, four groups per block make 2048, and `15 · 2048 = 30720`
/// stays below `i16::MAX`.
const I16_BLOCKS: usize = 15;

/// `Σ x · code` for one packed row `w` against activations regrouped by `Prepared` for blocks of 8
/// words (`x` has at least `ceil(w.len() / 8) · 128` bytes).
///
/// # Safety
/// The CPU must support AVX2 and `x` must be at least that long.
#[target_feature(enable = "avx2")]
pub(crate) unsafe fn dot_codes(w: &[u32], x: &[i8]) -> i32 {
    debug_assert!(x.len() >= w.len().div_ceil(8) * 128);
    let full = w.len() / 8;
    let mut acc32 = _mm256_setzero_si256();
    let mut b = 0;
    while b < full {
        let end = (b + I16_BLOCKS).min(full);
        let mut acc16 = _mm256_setzero_si256();
        while b < end {
            // SAFETY: block `b < full` covers words `8b..8b+8` of `w` and bytes
            // `128b..128b+128` of `x`, both in bounds.
            let words = unsafe { _mm256_loadu_si256(w.as_ptr().add(8 * b).cast()) };
            let xp = unsafe { x.as_ptr().add(128 * b) };
            acc16 = _mm256_add_epi16(acc16, unsafe { block(words, xp) });
            b += 1;
        }
        acc32 = _mm256_add_epi32(acc32, _mm256_madd_epi16(acc16, _mm256_set1_epi16(1)));
    }
    if full * 8 < w.len() {
        // The last partial block: copy its words into a zeroed block. Missing words decode to
        // code 0 but meet zero activation padding, so they add nothing.
        let mut tail = [0u32; 8];
        tail[..w.len() - full * 8].copy_from_slice(&w[full * 8..]);
        // SAFETY: `tail` is 32 bytes; `x` holds a full final block (see the length requirement).
        let words = unsafe { _mm256_loadu_si256(tail.as_ptr().cast()) };
        let part = unsafe { block(words, x.as_ptr().add(128 * full)) };
        acc32 = _mm256_add_epi32(acc32, _mm256_madd_epi16(part, _mm256_set1_epi16(1)));
    }
    hsum(acc32)
}

/// i16 partial sums of one block: for each group `g`, `(words >> 2g) & 0x03..03` (codes as
/// unsigned bytes) times the 32 activation bytes of group `g`, adjacent pairs summed.
///
/// # Safety
/// AVX2, and `x` points at 128 readable bytes.
#[target_feature(enable = "avx2")]
#[inline]
unsafe fn block(words: __m256i, x: *const i8) -> __m256i {
    let mask = _mm256_set1_epi8(3);
    // SAFETY: the caller guarantees 128 readable bytes at `x`.
    let (x0, x1, x2, x3) = unsafe {
        (
            _mm256_loadu_si256(x.cast()),
            _mm256_loadu_si256(x.add(32).cast()),
            _mm256_loadu_si256(x.add(64).cast()),
            _mm256_loadu_si256(x.add(96).cast()),
        )
    };
    let p0 = _mm256_maddubs_epi16(_mm256_and_si256(words, mask), x0);
    let p1 = _mm256_maddubs_epi16(_mm256_and_si256(_mm256_srli_epi32::<2>(words), mask), x1);
    let p2 = _mm256_maddubs_epi16(_mm256_and_si256(_mm256_srli_epi32::<4>(words), mask), x2);
    let p3 = _mm256_maddubs_epi16(_mm256_and_si256(_mm256_srli_epi32::<6>(words), mask), x3);
    _mm256_add_epi16(_mm256_add_epi16(p0, p1), _mm256_add_epi16(p2, p3))
}

/// Sum of the eight i32 lanes.
#[target_feature(enable = "avx2")]
#[inline]
fn hsum(v: __m256i) -> i32 {
    let s = _mm_add_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256::<1>(v));
    let s = _mm_add_epi32(s, _mm_shuffle_epi32::<0b01_00_11_10>(s));
    let s = _mm_add_epi32(s, _mm_shuffle_epi32::<0b10_11_00_01>(s));
    _mm_cvtsi128_si32(s)
}
