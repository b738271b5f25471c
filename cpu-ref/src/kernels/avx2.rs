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

/// [`dot_codes`] of two rows `w0`, `w1` (same length) against the same activations: each
/// activation vector is loaded once for both rows, which halves the loads per weight.
///
/// # Safety
/// As for [`dot_codes`], and `w0.len() == w1.len()`.
#[target_feature(enable = "avx2")]
pub(crate) unsafe fn dot_codes2(w0: &[u32], w1: &[u32], x: &[i8]) -> (i32, i32) {
    debug_assert_eq!(w0.len(), w1.len());
    debug_assert!(x.len() >= w0.len().div_ceil(8) * 128);
    let full = w0.len() / 8;
    let ones = _mm256_set1_epi16(1);
    let (mut acc0, mut acc1) = (_mm256_setzero_si256(), _mm256_setzero_si256());
    let mut b = 0;
    while b < full {
        let end = (b + I16_BLOCKS).min(full);
        let (mut s0, mut s1) = (_mm256_setzero_si256(), _mm256_setzero_si256());
        while b < end {
            // SAFETY: block `b < full` is in bounds of both rows and of `x`.
            let (p0, p1) = unsafe {
                let v0 = _mm256_loadu_si256(w0.as_ptr().add(8 * b).cast());
                let v1 = _mm256_loadu_si256(w1.as_ptr().add(8 * b).cast());
                block2(v0, v1, x.as_ptr().add(128 * b))
            };
            s0 = _mm256_add_epi16(s0, p0);
            s1 = _mm256_add_epi16(s1, p1);
            b += 1;
        }
        acc0 = _mm256_add_epi32(acc0, _mm256_madd_epi16(s0, ones));
        acc1 = _mm256_add_epi32(acc1, _mm256_madd_epi16(s1, ones));
    }
    let mut out = (hsum(acc0), hsum(acc1));
    if full * 8 < w0.len() {
        // SAFETY: the tails are shorter than one block; `dot_codes` zero-extends them.
        unsafe {
            out.0 = out
                .0
                .wrapping_add(dot_codes(&w0[full * 8..], &x[128 * full..]));
            out.1 = out
                .1
                .wrapping_add(dot_codes(&w1[full * 8..], &x[128 * full..]));
        }
    }
    out
}

/// Two weight rows against two activation rows (`x0`, `x1`, both prepared, same length): each
/// code vector is decoded once and each activation vector loaded once for two products.
/// Returns `[w0·x0, w1·x0, w0·x1, w1·x1]` (raw `Σ x · code`).
///
/// # Safety
/// As for [`dot_codes2`], for both activation rows.
#[target_feature(enable = "avx2")]
pub(crate) unsafe fn dot_codes_2x2(w0: &[u32], w1: &[u32], x0: &[i8], x1: &[i8]) -> [i32; 4] {
    debug_assert_eq!(w0.len(), w1.len());
    debug_assert!(x0.len().min(x1.len()) >= w0.len().div_ceil(8) * 128);
    let full = w0.len() / 8;
    let ones = _mm256_set1_epi16(1);
    let mask = _mm256_set1_epi8(3);
    let mut acc = [_mm256_setzero_si256(); 4];
    let mut b = 0;
    while b < full {
        let end = (b + I16_BLOCKS).min(full);
        let mut s = [_mm256_setzero_si256(); 4];
        while b < end {
            // SAFETY: block `b < full` is in bounds of both weight rows and both activation rows.
            let (mut v0, mut v1) = unsafe {
                (
                    _mm256_loadu_si256(w0.as_ptr().add(8 * b).cast()),
                    _mm256_loadu_si256(w1.as_ptr().add(8 * b).cast()),
                )
            };
            for g in 0..4 {
                let (c0, c1) = (_mm256_and_si256(v0, mask), _mm256_and_si256(v1, mask));
                // SAFETY: as above; group `g` spans bytes `128 b + 32 g .. + 32`.
                let (a0, a1) = unsafe {
                    (
                        _mm256_loadu_si256(x0.as_ptr().add(128 * b + 32 * g).cast()),
                        _mm256_loadu_si256(x1.as_ptr().add(128 * b + 32 * g).cast()),
                    )
                };
                s[0] = _mm256_add_epi16(s[0], _mm256_maddubs_epi16(c0, a0));
                s[1] = _mm256_add_epi16(s[1], _mm256_maddubs_epi16(c1, a0));
                s[2] = _mm256_add_epi16(s[2], _mm256_maddubs_epi16(c0, a1));
                s[3] = _mm256_add_epi16(s[3], _mm256_maddubs_epi16(c1, a1));
                // Next group: the codes two bits higher in every byte.
                v0 = _mm256_srli_epi32::<2>(v0);
                v1 = _mm256_srli_epi32::<2>(v1);
            }
            b += 1;
        }
        for (a, s) in acc.iter_mut().zip(s) {
            *a = _mm256_add_epi32(*a, _mm256_madd_epi16(s, ones));
        }
    }
    let mut out = [hsum(acc[0]), hsum(acc[1]), hsum(acc[2]), hsum(acc[3])];
    if full * 8 < w0.len() {
        let (t0, t1) = (&w0[full * 8..], &w1[full * 8..]);
        let (y0, y1) = (&x0[128 * full..], &x1[128 * full..]);
        // SAFETY: tails shorter than one block; `dot_codes` zero-extends them.
        unsafe {
            out[0] = out[0].wrapping_add(dot_codes(t0, y0));
            out[1] = out[1].wrapping_add(dot_codes(t1, y0));
            out[2] = out[2].wrapping_add(dot_codes(t0, y1));
            out[3] = out[3].wrapping_add(dot_codes(t1, y1));
        }
    }
    out
}

/// [`block`] for two weight vectors sharing the activation loads.
///
/// # Safety
/// AVX2, and `x` points at 128 readable bytes.
#[target_feature(enable = "avx2")]
#[inline]
unsafe fn block2(w0: __m256i, w1: __m256i, x: *const i8) -> (__m256i, __m256i) {
    let mask = _mm256_set1_epi8(3);
    let codes = |w: __m256i, g: i32| match g {
        0 => _mm256_and_si256(w, mask),
        1 => _mm256_and_si256(_mm256_srli_epi32::<2>(w), mask),
        2 => _mm256_and_si256(_mm256_srli_epi32::<4>(w), mask),
        _ => _mm256_and_si256(_mm256_srli_epi32::<6>(w), mask),
    };
    let (mut s0, mut s1) = (_mm256_setzero_si256(), _mm256_setzero_si256());
    for g in 0..4 {
        // SAFETY: the caller guarantees 128 readable bytes at `x`.
        let xg = unsafe { _mm256_loadu_si256(x.add(32 * g as usize).cast()) };
        s0 = _mm256_add_epi16(s0, _mm256_maddubs_epi16(codes(w0, g), xg));
        s1 = _mm256_add_epi16(s1, _mm256_maddubs_epi16(codes(w1, g), xg));
    }
    (s0, s1)
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
