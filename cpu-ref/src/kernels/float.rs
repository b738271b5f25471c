//! Float loops of the quantizers and of the canonical sum, compiled twice: for the baseline target
//! (the scalar path) and with AVX2 enabled (8-lane `vroundps`, `vmaxps`, ...). Both versions run
//! the same IEEE operations on the same values in the same order per element — only the lane width
//! differs — so they return identical bits. On aarch64 the baseline already has NEON.

use super::Isa;
use super::multiversion::multiversion;
use crate::layout::{SUM_BLOCK, SUM_LANES, WEIGHTS_PER_WORD, code_shift};

multiversion! {
    /// Step 2 of the canonical sum: `lanes[t] = Σ_r |block[t + 256 r]|`, sequentially in `r`
    /// from `0.0`. `block` has exactly 4096 values.
    fn lane_abs_sums(block: &[f32], lanes: &mut [f32; SUM_LANES]) {
        for row in block[..SUM_BLOCK].chunks_exact(SUM_LANES) {
            for (lane, v) in lanes.iter_mut().zip(row) {
                *lane += v.abs();
            }
        }
    }
}

multiversion! {
    /// Step 3 of the canonical sum: the pairwise tree over the 256 lanes; returns lane 0.
    fn lane_tree(lanes: &mut [f32; SUM_LANES]) -> f32 {
        let mut stride = SUM_LANES / 2;
        while stride >= 1 {
            let (lo, hi) = lanes.split_at_mut(stride);
            for (a, b) in lo.iter_mut().zip(&hi[..stride]) {
                *a += *b;
            }
            stride /= 2;
        }
        lanes[0]
    }
}

multiversion! {
    /// `max_k |x[k]|` (ignoring NaN) and whether any value is NaN or infinite.
    fn row_absmax_portable(x: &[f32]) -> (f32, bool) {
        // Eight independent lanes so the loop vectorizes; `v * 0` is NaN exactly when `v` is NaN
        // or infinite, so `check` ends up NaN iff the row holds a non-finite value.
        let mut max = [0.0f32; 8];
        let mut check = [0.0f32; 8];
        let chunks = x.chunks_exact(8);
        let tail = chunks.remainder();
        for c in chunks {
            for i in 0..8 {
                let a = c[i].abs();
                max[i] = if a > max[i] { a } else { max[i] };
                check[i] += c[i] * 0.0;
            }
        }
        for (i, v) in tail.iter().enumerate() {
            let a = v.abs();
            max[i] = if a > max[i] { a } else { max[i] };
            check[i] += v * 0.0;
        }
        let m = max.iter().fold(0.0f32, |m, &a| if a > m { a } else { m });
        (m, check.iter().any(|c| c.is_nan()))
    }
}

multiversion! {
    /// `out[k] = clamp(round_half_even(x[k] * inv), -128, 127)` (activation quantization).
    fn quantize_row_portable(x: &[f32], inv: f32, out: &mut [i8]) {
        for (o, v) in out.iter_mut().zip(x) {
            *o = (v * inv).round_ties_even().clamp(-128.0, 127.0) as i8;
        }
    }
}

multiversion! {
    /// Quantizes and packs one weight row: `code = clamp(round_half_even(w * inv_s), -1, 1) + 1`,
    /// interleaved into `out` (`words_per_row(w.len())` words) with padding code 1.
    fn pack_weight_row_portable(w: &[f32], inv_s: f32, out: &mut [u32]) {
        let shifts: [u32; WEIGHTS_PER_WORD] = std::array::from_fn(code_shift);
        let code = |v: f32| ((v * inv_s).round_ties_even().clamp(-1.0, 1.0) + 1.0) as u32;
        let chunks = w.chunks_exact(WEIGHTS_PER_WORD);
        let tail = chunks.remainder();
        let full = chunks.len();
        for (word, c) in out.iter_mut().zip(chunks) {
            let mut acc = 0u32;
            for (&v, &shift) in c.iter().zip(&shifts) {
                acc |= code(v) << shift;
            }
            *word = acc;
        }
        if !tail.is_empty() {
            let mut acc = 0u32;
            for (i, &shift) in shifts.iter().enumerate() {
                acc |= tail.get(i).map_or(1, |&v| code(v)) << shift;
            }
            out[full] = acc;
        }
    }
}

multiversion! {
    /// BitLinear rescale of one output row: `y[n] = (acc[n] as f32) * scale` with
    /// `scale = (s * a_m) * INV_127` computed by the caller.
    fn rescale_row(acc: &[i32], scale: f32, out: &mut [f32]) {
        for (y, &a) in out.iter_mut().zip(acc) {
            *y = a as f32 * scale;
        }
    }
}

/// Activation quantization of one row (see `quantize_row_portable`): AVX2 intrinsics for every
/// full 32-value chunk, the portable loop for the rest; identical bytes either way.
pub(crate) fn quantize_row(x: &[f32], inv: f32, out: &mut [i8], isa: Isa) {
    #[cfg(target_arch = "x86_64")]
    if isa.runs_avx2() {
        // SAFETY: AVX2 checked; `out` has one byte per value.
        let done = unsafe { super::avx2_quant::quantize_row(x, inv, out) };
        return quantize_row_portable(&x[done..], inv, &mut out[done..], Isa::Scalar);
    }
    quantize_row_portable(x, inv, out, isa)
}

/// `max_k |x[k]|` (ignoring NaN) and whether any value is NaN or infinite (see
/// `row_absmax_portable`): AVX2 intrinsics for every full 8-value chunk, the portable loop for
/// the rest; the same value either way. (The portable loop compiled with AVX2 stayed partly
/// scalar: about 600 instructions for a 256-value row, against about 60 this way.)
pub(crate) fn row_absmax(x: &[f32], isa: Isa) -> (f32, bool) {
    #[cfg(target_arch = "x86_64")]
    if isa.runs_avx2() {
        // SAFETY: AVX2 checked.
        let (m, bad, done) = unsafe { super::avx2_quant::row_absmax(x) };
        if done == x.len() {
            return (m, bad);
        }
        let (t, tail_bad) = row_absmax_portable(&x[done..], Isa::Scalar);
        return (if t > m { t } else { m }, bad || tail_bad);
    }
    row_absmax_portable(x, isa)
}

/// Weight quantization and packing of one row (see `pack_weight_row_portable`): AVX2 intrinsics
/// two words at a time, the portable loop for the rest; identical words either way.
pub(crate) fn pack_weight_row(w: &[f32], inv_s: f32, out: &mut [u32], isa: Isa) {
    #[cfg(target_arch = "x86_64")]
    if isa.runs_avx2() {
        // SAFETY: AVX2 checked; `out` holds `ceil(w.len() / 16)` words.
        let words = unsafe { super::avx2_quant::pack_weight_row(w, inv_s, out) };
        let rest = &w[words * WEIGHTS_PER_WORD..];
        return pack_weight_row_portable(rest, inv_s, &mut out[words..], Isa::Scalar);
    }
    pack_weight_row_portable(w, inv_s, out, isa)
}

/// The sign-cleared bits of `v`: at least those of `+inf` exactly when `v` is NaN or infinite.
fn magnitude_bits(v: f32) -> u32 {
    v.to_bits() & 0x7fff_ffff
}

multiversion! {
    /// Whether any of `values` is NaN or infinite: the largest sign-cleared bit pattern decides
    /// (an unsigned maximum, which vectorizes as a reduction; one compare at the end), so the
    /// all-finite case — every valid input — takes two vector instructions per 8 values with
    /// AVX2.
    fn any_non_finite(values: &[f32]) -> bool {
        let most = values.iter().fold(0, |m, &v| u32::max(m, magnitude_bits(v)));
        most >= f32::INFINITY.to_bits()
    }
}

multiversion! {
    /// Whether any of `values` is NaN or `+inf` (`-inf` allowed: softmax's mask), scanned as
    /// [`any_non_finite`] with `-inf` counted as zero.
    fn any_nan_or_pos_inf(values: &[f32]) -> bool {
        let key = |v: f32| if v == f32::NEG_INFINITY { 0 } else { magnitude_bits(v) };
        let most = values.iter().fold(0, |m, &v| u32::max(m, key(v)));
        most >= f32::INFINITY.to_bits()
    }
}
