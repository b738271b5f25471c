//! AVX-512 VNNI BitLinear kernel: `_mm512_dpbusd_epi32(codes, x)` on 256 weights per 512-bit
//! load, accumulating straight into `i32` lanes.
//!
//! Against the AVX2 kernel (`avx2.rs`), one `vpdpbusd` replaces a `maddubs`, its `i16` adds and
//! the periodic widening, on twice the lanes: about 12 instructions per 256 weights and row
//! against about 30. The activations are regrouped by `Prepared` for blocks of 16 words (group
//! vector `g` of a block is 64 bytes); everything else — the codes `0..=2`, the row sums
//! subtracted by the caller, exactness modulo 2^32 — is as in `dot.rs`.
//!
//! Each kernel keeps one accumulator per output and shift group, so consecutive `vpdpbusd`
//! never wait on each other (their latency is several cycles; a single accumulator per output
//! would serialize them).

use std::arch::x86_64::*;

/// Whether this CPU runs these kernels (AVX-512 F and BW for the vectors, VNNI for `vpdpbusd`).
pub(crate) fn available() -> bool {
    std::arch::is_x86_feature_detected!("avx512f")
        && std::arch::is_x86_feature_detected!("avx512bw")
        && std::arch::is_x86_feature_detected!("avx512vnni")
}

/// Weight words per block (one 512-bit load).
const BLOCK: usize = 16;

/// Prepared activation bytes per block.
const BLOCK_BYTES: usize = 256;

/// The codes of shift group `g` of `words`: `(words >> 2g) & 0x03..03`, as unsigned bytes.
#[target_feature(enable = "avx512f,avx512bw")]
#[inline]
fn codes<const G: u32>(words: __m512i) -> __m512i {
    _mm512_and_si512(_mm512_srli_epi32::<G>(words), _mm512_set1_epi8(3))
}

/// The four group vectors of a prepared block at `x`.
///
/// # Safety
/// AVX-512 F, and `x` points at [`BLOCK_BYTES`] readable bytes.
#[target_feature(enable = "avx512f")]
#[inline]
unsafe fn activations(x: *const i8) -> [__m512i; 4] {
    // SAFETY: the caller guarantees BLOCK_BYTES readable bytes at `x`.
    unsafe {
        [
            _mm512_loadu_si512(x.cast()),
            _mm512_loadu_si512(x.add(64).cast()),
            _mm512_loadu_si512(x.add(128).cast()),
            _mm512_loadu_si512(x.add(192).cast()),
        ]
    }
}

/// Block `b` of row `w` (16 words), or its zero-extended tail when the row ends inside it:
/// missing words decode to code 0 and meet zero activation padding, so they add nothing.
///
/// # Safety
/// AVX-512 F, and `16 b < w.len()`.
#[target_feature(enable = "avx512f")]
#[inline]
unsafe fn weights(w: &[u32], b: usize) -> __m512i {
    let start = BLOCK * b;
    if start + BLOCK <= w.len() {
        // SAFETY: words `start..start + 16` are in bounds.
        unsafe { _mm512_loadu_si512(w.as_ptr().add(start).cast()) }
    } else {
        let mut tail = [0u32; BLOCK];
        tail[..w.len() - start].copy_from_slice(&w[start..]);
        // SAFETY: `tail` is 64 bytes.
        unsafe { _mm512_loadu_si512(tail.as_ptr().cast()) }
    }
}

/// The codes of the four shift groups of `words`.
#[target_feature(enable = "avx512f,avx512bw")]
#[inline]
fn all_codes(words: __m512i) -> [__m512i; 4] {
    [
        codes::<0>(words),
        codes::<2>(words),
        codes::<4>(words),
        codes::<6>(words),
    ]
}

/// `acc[g] += codes_g(words) · x[g]` for the four shift groups.
#[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
#[inline]
fn block(acc: &mut [__m512i; 4], words: __m512i, x: &[__m512i; 4]) {
    let c = all_codes(words);
    for g in 0..4 {
        acc[g] = _mm512_dpbusd_epi32(acc[g], c[g], x[g]);
    }
}

/// The sum of every lane of four accumulators (modulo 2^32, as the AVX2 kernel's).
#[target_feature(enable = "avx512f")]
#[inline]
fn total(acc: &[__m512i; 4]) -> i32 {
    let s = _mm512_add_epi32(
        _mm512_add_epi32(acc[0], acc[1]),
        _mm512_add_epi32(acc[2], acc[3]),
    );
    _mm512_reduce_add_epi32(s)
}

/// `Σ x · code` for one packed row `w` against activations prepared for blocks of 16 words
/// (`x` has at least `ceil(w.len() / 16) · 256` bytes).
///
/// # Safety
/// The CPU must pass [`available`], and `x` must be at least that long.
#[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
pub(crate) unsafe fn dot_codes(w: &[u32], x: &[i8]) -> i32 {
    debug_assert!(x.len() >= w.len().div_ceil(BLOCK) * BLOCK_BYTES);
    let mut acc = [_mm512_setzero_si512(); 4];
    for b in 0..w.len().div_ceil(BLOCK) {
        // SAFETY: block `b` starts inside `w`, and `x` holds its BLOCK_BYTES.
        let (words, xs) = unsafe { (weights(w, b), activations(x.as_ptr().add(BLOCK_BYTES * b))) };
        block(&mut acc, words, &xs);
    }
    total(&acc)
}

/// [`dot_codes`] of two rows `w0`, `w1` (same length) against the same activations, which are
/// loaded once for both.
///
/// # Safety
/// As for [`dot_codes`], and `w0.len() == w1.len()`.
#[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
pub(crate) unsafe fn dot_codes2(w0: &[u32], w1: &[u32], x: &[i8]) -> (i32, i32) {
    debug_assert_eq!(w0.len(), w1.len());
    debug_assert!(x.len() >= w0.len().div_ceil(BLOCK) * BLOCK_BYTES);
    let (mut a0, mut a1) = ([_mm512_setzero_si512(); 4], [_mm512_setzero_si512(); 4]);
    for b in 0..w0.len().div_ceil(BLOCK) {
        // SAFETY: block `b` starts inside both rows, and `x` holds its BLOCK_BYTES.
        let (v0, v1, xs) = unsafe {
            (
                weights(w0, b),
                weights(w1, b),
                activations(x.as_ptr().add(BLOCK_BYTES * b)),
            )
        };
        block(&mut a0, v0, &xs);
        block(&mut a1, v1, &xs);
    }
    (total(&a0), total(&a1))
}

/// Two weight rows against two activation rows (`x0`, `x1`, both prepared, same length): each
/// code vector is decoded once and each activation vector loaded once for two products.
/// Returns `[w0·x0, w1·x0, w0·x1, w1·x1]` (raw `Σ x · code`).
///
/// # Safety
/// As for [`dot_codes2`], for both activation rows.
#[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
pub(crate) unsafe fn dot_codes_2x2(w0: &[u32], w1: &[u32], x0: &[i8], x1: &[i8]) -> [i32; 4] {
    debug_assert_eq!(w0.len(), w1.len());
    debug_assert!(x0.len().min(x1.len()) >= w0.len().div_ceil(BLOCK) * BLOCK_BYTES);
    // Two accumulators per output (even and odd shift groups): 8 registers, and no
    // `vpdpbusd` waits on the one before it.
    let mut acc = [_mm512_setzero_si512(); 8];
    for b in 0..w0.len().div_ceil(BLOCK) {
        // SAFETY: block `b` starts inside both weight rows, and both activation rows hold
        // its BLOCK_BYTES.
        let (v0, v1, p0, p1) = unsafe {
            (
                weights(w0, b),
                weights(w1, b),
                activations(x0.as_ptr().add(BLOCK_BYTES * b)),
                activations(x1.as_ptr().add(BLOCK_BYTES * b)),
            )
        };
        let (c0, c1) = (all_codes(v0), all_codes(v1));
        for g in 0..4 {
            let parity = g % 2;
            acc[parity] = _mm512_dpbusd_epi32(acc[parity], c0[g], p0[g]);
            acc[2 + parity] = _mm512_dpbusd_epi32(acc[2 + parity], c1[g], p0[g]);
            acc[4 + parity] = _mm512_dpbusd_epi32(acc[4 + parity], c0[g], p1[g]);
            acc[6 + parity] = _mm512_dpbusd_epi32(acc[6 + parity], c1[g], p1[g]);
        }
    }
    [
        pair(acc[0], acc[1]),
        pair(acc[2], acc[3]),
        pair(acc[4], acc[5]),
        pair(acc[6], acc[7]),
    ]
}

/// The sum of every lane of two accumulators.
#[target_feature(enable = "avx512f")]
#[inline]
fn pair(a: __m512i, b: __m512i) -> i32 {
    _mm512_reduce_add_epi32(_mm512_add_epi32(a, b))
}
