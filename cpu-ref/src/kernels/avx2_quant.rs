//! AVX2 quantizer loops: 32 values per iteration through `vroundps` (round half to even),
//! clamp, `vcvtps2dq` and saturating packs, and the activation row's absmax. Each produces
//! exactly what the scalar formulas of `float.rs` produce (same IEEE product, same rounding mode,
//! same clamp; a maximum is exact in any order).

use std::arch::x86_64::*;

/// Round to nearest, ties to even, without raising exceptions.
const RNE: i32 = _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC;

/// Rounds `v · inv` half-to-even and clamps to `[lo, hi]`, as i32 lanes.
#[target_feature(enable = "avx2")]
#[inline]
fn round_clamp(v: __m256, inv: __m256, lo: __m256, hi: __m256) -> __m256i {
    let r = _mm256_round_ps::<RNE>(_mm256_mul_ps(v, inv));
    _mm256_cvtps_epi32(_mm256_min_ps(_mm256_max_ps(r, lo), hi))
}

/// 32 values from `p` → 32 bytes in order, each `clamp(round(v · inv), lo, hi)` (`lo, hi` within
/// the i8 range, so the saturating packs never saturate).
///
/// # Safety
/// AVX2, and 32 readable `f32` at `p`.
#[target_feature(enable = "avx2")]
#[inline]
unsafe fn bytes32(p: *const f32, inv: __m256, lo: __m256, hi: __m256) -> __m256i {
    // SAFETY: the caller guarantees 32 readable values at `p`.
    let (v0, v1, v2, v3) = unsafe {
        (
            _mm256_loadu_ps(p),
            _mm256_loadu_ps(p.add(8)),
            _mm256_loadu_ps(p.add(16)),
            _mm256_loadu_ps(p.add(24)),
        )
    };
    let a = _mm256_packs_epi32(round_clamp(v0, inv, lo, hi), round_clamp(v1, inv, lo, hi));
    let b = _mm256_packs_epi32(round_clamp(v2, inv, lo, hi), round_clamp(v3, inv, lo, hi));
    // The packs interleave 128-bit lanes; this dword permutation restores element order.
    let bytes = _mm256_packs_epi16(a, b);
    _mm256_permutevar8x32_epi32(bytes, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7))
}

/// Activation quantization of `x[..n]` with `n = x.len() / 32 · 32` (the caller finishes the
/// tail): `out[k] = clamp(round(x[k] · inv), -128, 127)`. Returns `n`.
///
/// # Safety
/// AVX2, and `out.len() >= x.len()`.
#[target_feature(enable = "avx2")]
pub(crate) unsafe fn quantize_row(x: &[f32], inv: f32, out: &mut [i8]) -> usize {
    debug_assert!(out.len() >= x.len());
    let (vinv, lo, hi) = (
        _mm256_set1_ps(inv),
        _mm256_set1_ps(-128.0),
        _mm256_set1_ps(127.0),
    );
    let n = x.len() / 32 * 32;
    for i in (0..n).step_by(32) {
        // SAFETY: `i + 32 <= n <= x.len() <= out.len()`.
        unsafe {
            let b = bytes32(x.as_ptr().add(i), vinv, lo, hi);
            _mm256_storeu_si256(out.as_mut_ptr().add(i).cast(), b);
        }
    }
    n
}

/// Weight quantization and packing of the first `w.len() / 32 · 2` words of a row (32 weights,
/// two words per iteration; the caller finishes the tail). Codes are
/// `clamp(round(w · inv_s), -1, 1) + 1`; word `j` is `Σ_g dword_g << 2g`, where `dword_g` is the
/// 4 code bytes of weights `16 j + 4 g ..` — exactly the interleaved layout. Returns the number
/// of words written.
///
/// # Safety
/// AVX2, and `out.len() >= w.len() / 16`.
#[target_feature(enable = "avx2")]
pub(crate) unsafe fn pack_weight_row(w: &[f32], inv_s: f32, out: &mut [u32]) -> usize {
    let (vinv, lo, hi) = (
        _mm256_set1_ps(inv_s),
        _mm256_set1_ps(-1.0),
        _mm256_set1_ps(1.0),
    );
    let one = _mm256_set1_epi8(1);
    let shifts = _mm256_setr_epi32(0, 2, 4, 6, 0, 2, 4, 6);
    let pairs = w.len() / 32;
    debug_assert!(out.len() >= 2 * pairs);
    for p in 0..pairs {
        // SAFETY: weights `32 p .. 32 p + 32` are in bounds.
        let codes = _mm256_add_epi8(
            unsafe { bytes32(w.as_ptr().add(32 * p), vinv, lo, hi) },
            one,
        );
        // Each 128-bit lane holds one word's 16 code bytes, dword g = group g: shift and OR.
        let s = _mm256_sllv_epi32(codes, shifts);
        let s = _mm256_or_si256(s, _mm256_shuffle_epi32::<0b01_00_11_10>(s));
        let s = _mm256_or_si256(s, _mm256_shuffle_epi32::<0b10_11_00_01>(s));
        out[2 * p] = _mm256_extract_epi32::<0>(s) as u32;
        out[2 * p + 1] = _mm256_extract_epi32::<4>(s) as u32;
    }
    2 * pairs
}

/// `max_k |x[k]|` over `x[..n]` with `n = x.len() / 8 · 8` (NaN ignored; the caller folds the
/// tail), and whether any of those values is NaN or infinite: `(max, non_finite, n)`. The same
/// value as the portable `row_absmax`: a maximum is exact in any order, `vmaxps` returns its
/// second operand when either is NaN (so a NaN leaves the running maximum as it was, as the
/// portable select does), and `|v| <= f32::MAX` is false exactly for NaN and ±inf.
///
/// # Safety
/// AVX2.
#[target_feature(enable = "avx2")]
pub(crate) unsafe fn row_absmax(x: &[f32]) -> (f32, bool, usize) {
    let abs = _mm256_castsi256_ps(_mm256_set1_epi32(0x7fff_ffff));
    let big = _mm256_set1_ps(f32::MAX);
    let p = x.as_ptr();
    // |x[at..at + 8]|; SAFETY (of every call below): `at + 8 <= x.len()`.
    let load = |at: usize| _mm256_and_ps(unsafe { _mm256_loadu_ps(p.add(at)) }, abs);
    // Four running maxima and finiteness masks, so consecutive `vmaxps` do not wait on each
    // other.
    let zero = _mm256_setzero_ps();
    let (mut m0, mut m1, mut m2, mut m3) = (zero, zero, zero, zero);
    let ones = _mm256_castsi256_ps(_mm256_set1_epi32(-1));
    let (mut f0, mut f1, mut f2, mut f3) = (ones, ones, ones, ones);
    let n32 = x.len() / 32 * 32;
    let mut at = 0;
    while at < n32 {
        let (a0, a1, a2, a3) = (load(at), load(at + 8), load(at + 16), load(at + 24));
        m0 = _mm256_max_ps(a0, m0);
        m1 = _mm256_max_ps(a1, m1);
        m2 = _mm256_max_ps(a2, m2);
        m3 = _mm256_max_ps(a3, m3);
        f0 = _mm256_and_ps(f0, _mm256_cmp_ps::<_CMP_LE_OQ>(a0, big));
        f1 = _mm256_and_ps(f1, _mm256_cmp_ps::<_CMP_LE_OQ>(a1, big));
        f2 = _mm256_and_ps(f2, _mm256_cmp_ps::<_CMP_LE_OQ>(a2, big));
        f3 = _mm256_and_ps(f3, _mm256_cmp_ps::<_CMP_LE_OQ>(a3, big));
        at += 32;
    }
    let n = x.len() / 8 * 8;
    while at < n {
        let a = load(at);
        m0 = _mm256_max_ps(a, m0);
        f0 = _mm256_and_ps(f0, _mm256_cmp_ps::<_CMP_LE_OQ>(a, big));
        at += 8;
    }
    let m = _mm256_max_ps(_mm256_max_ps(m0, m1), _mm256_max_ps(m2, m3));
    let f = _mm256_and_ps(_mm256_and_ps(f0, f1), _mm256_and_ps(f2, f3));
    let mut lanes = [0.0f32; 8];
    // SAFETY: eight writable values.
    unsafe { _mm256_storeu_ps(lanes.as_mut_ptr(), m) };
    let m = lanes.iter().fold(0.0f32, |m, &a| if a > m { a } else { m });
    (m, _mm256_movemask_ps(f) != 0xff, n)
}
