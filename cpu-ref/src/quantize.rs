//! BitNet b1.58 quantizers: absmean ternary weights and absmax int8 activations (`layout.rs`).

use rayon::prelude::*;

use crate::activations::QuantizedActivations;
use crate::alloc;
use crate::canonical_sum::canonical_abs_sum_with_isa;
use crate::check;
use crate::error::{Error, Result};
use crate::kernels::{Isa, float};
use crate::layout::{SCALE_EPS, code_shift, decode_ternary, words_per_row};
use crate::ternary::{TernaryMatrix, check_dims, check_k};

/// Elements per rayon task (about 64 KiB of f32), so small inputs stay on the calling thread.
const PAR_MIN_ELEMS: usize = 16 * 1024;

/// Quantizes `w` (`[N, K]` row-major f32) to ternary: `s = max(canonical_abs_sum(w) / (N·K), 1e-5)`,
/// `wq = clamp(round_half_even(w · (1 / s)), -1, 1)`, packed per `layout.rs`.
///
/// Errors: `N` or `K` zero, `K >= 2^24`, `w.len() != N·K`, a NaN/infinity in `w` (index given),
/// or an `|w|` sum that overflows `f32`. All-zero weights give all-zero codes and `s = 1e-5`.
pub fn quantize_weights(w: &[f32], n: usize, k: usize) -> Result<TernaryMatrix> {
    quantize_weights_impl(w, n, k, Isa::best())
}

/// [`quantize_weights`] returning its error as the caller's error type `E` (see the crate docs,
/// "Results in your own error type").
pub fn quantize_weights_as<E: From<Error>>(
    w: &[f32],
    n: usize,
    k: usize,
) -> std::result::Result<TernaryMatrix, E> {
    quantize_weights_impl(w, n, k, Isa::best())
}

/// [`quantize_weights`] on a chosen SIMD level (identical output on every level).
pub fn quantize_weights_with_isa(w: &[f32], n: usize, k: usize, isa: Isa) -> Result<TernaryMatrix> {
    quantize_weights_impl(w, n, k, isa)
}

/// The weight quantizer, its result built straight into a `Result<_, E>`.
fn quantize_weights_impl<E: From<Error>>(
    w: &[f32],
    n: usize,
    k: usize,
    isa: Isa,
) -> std::result::Result<TernaryMatrix, E> {
    const OP: &str = "quantize_weights";
    let isa = isa.require(OP)?;
    check_dims(OP, n, k)?;
    let total = check::mul(OP, "N * K", n, k)?;
    check::len(OP, "w", total, w.len())?;
    let sum = canonical_abs_sum_with_isa(w, isa);
    if !sum.is_finite() {
        // Either an input value is non-finite, or finite values overflowed the sum.
        check::finite(OP, "w", w)?;
        return Err(Error::NonFinite {
            op: OP,
            tensor: "sum of |w| (overflows f32)",
            index: 0,
        }
        .into());
    }
    let scale = (sum / total as f32).max(SCALE_EPS);
    let inv_s = 1.0 / scale;
    let wpr = words_per_row(k);
    let mut words = alloc::zeros::<u32>(n * wpr);
    let rows_per_task = (PAR_MIN_ELEMS / k).max(1);
    words
        .par_chunks_mut(wpr * rows_per_task)
        .zip(w.par_chunks(k * rows_per_task))
        .for_each(|(out, rows)| {
            for (o, row) in out.chunks_exact_mut(wpr).zip(rows.chunks_exact(k)) {
                float::pack_weight_row(row, inv_s, o, isa);
            }
        });
    Ok(TernaryMatrix::from_valid(words, n, k, scale))
}

/// Quantizes activations `x` (`[M, K]` row-major f32) per row: `a = max(max_k |x|, 1e-5)`,
/// `inv = 127 / a`, `xq = clamp(round_half_even(x · inv), -128, 127)`.
///
/// Errors: `M` or `K` zero, `K >= 2^24`, `x.len() != M·K`, a NaN/infinity in `x` (first index).
/// An all-zero row gives zeros and `a = 1e-5`.
pub fn quantize_activations(x: &[f32], m: usize, k: usize) -> Result<QuantizedActivations> {
    quantize_activations_impl("quantize_activations", x, m, k, Isa::best())
}

/// [`quantize_activations`] on a chosen SIMD level (identical output on every level).
pub fn quantize_activations_with_isa(
    x: &[f32],
    m: usize,
    k: usize,
    isa: Isa,
) -> Result<QuantizedActivations> {
    quantize_activations_impl("quantize_activations", x, m, k, isa)
}

/// [`quantize_activations`] returning its error as the caller's error type `E` (see the crate
/// docs, "Results in your own error type").
pub fn quantize_activations_as<E: From<Error>>(
    x: &[f32],
    m: usize,
    k: usize,
) -> std::result::Result<QuantizedActivations, E> {
    quantize_activations_impl("quantize_activations", x, m, k, Isa::best())
}

/// The activation quantizer, reporting errors under `op` (BitLinear reuses it), its result built
/// straight into a `Result<_, E>`.
pub(crate) fn quantize_activations_impl<E: From<Error>>(
    op: &'static str,
    x: &[f32],
    m: usize,
    k: usize,
    isa: Isa,
) -> std::result::Result<QuantizedActivations, E> {
    let isa = isa.require(op)?;
    check::nonzero(op, "M", m)?;
    check::nonzero(op, "K", k)?;
    check_k(op, k)?;
    check::len(op, "x", check::mul(op, "M * K", m, k)?, x.len())?;
    let mut values = alloc::zeros::<i8>(m * k);
    let mut absmax = alloc::zeros::<f32>(m);
    let rows_per_task = (PAR_MIN_ELEMS / k).max(1);
    // One task's worth (a decode token) runs here without rayon: its bridge cost a 256-value
    // token a few percent, and how much depended on how the caller's crate inlined it.
    let any_bad = if m <= rows_per_task {
        quantize_rows(&mut values, &mut absmax, x, k, isa)
    } else {
        values
            .par_chunks_mut(k * rows_per_task)
            .zip(absmax.par_chunks_mut(rows_per_task))
            .zip(x.par_chunks(k * rows_per_task))
            .map(|((out, amax), rows)| quantize_rows(out, amax, rows, k, isa))
            .reduce(|| false, |a, b| a | b)
    };
    // Rows report only that they held a non-finite value; the first index is located here
    // (the error path only).
    if any_bad {
        check::finite(op, "x", x)?;
    }
    Ok(QuantizedActivations::from_valid(values, absmax, m, k))
}

/// Quantizes whole rows of `K` values into `out` and their scales into `amax`. Returns whether a
/// row held a non-finite value. Always inlined: as a closure the engine's instantiation of the
/// quantizer called it, and a 256-value token ran a few percent slower there than here.
#[inline(always)]
fn quantize_rows(out: &mut [i8], amax: &mut [f32], rows: &[f32], k: usize, isa: Isa) -> bool {
    let mut bad = false;
    for ((o, a), row) in out.chunks_exact_mut(k).zip(amax).zip(rows.chunks_exact(k)) {
        let (max, row_bad) = float::row_absmax(row, isa);
        bad |= row_bad;
        *a = max.max(crate::layout::SCALE_EPS);
        float::quantize_row(row, 127.0 / *a, o, isa);
    }
    bad
}

/// The dequantized weights `w · s`, `N · K` f32 row-major (each is `-s`, `0` or `+s`).
///
/// Quantizing them again reproduces the same codes (each nonzero `|w·s|` is at least the new
/// absmean `s · nnz / (N·K)`, so it rounds back to ±1), but not the same scale: the new scale is
/// `max(s · nnz / (N·K), 1e-5)` up to the rounding of the canonical sum.
pub fn dequantize_weights(w: &TernaryMatrix) -> Vec<f32> {
    let s = w.scale();
    let table = [-s, 0.0, s, 0.0];
    let mut out = alloc::zeros::<f32>(w.n() * w.k());
    out.par_chunks_mut(w.k())
        .zip(w.words().par_chunks(w.words_per_row()))
        .for_each(|(o, words)| {
            for (kk, v) in o.iter_mut().enumerate() {
                let code = (words[kk / 16] >> code_shift(kk % 16)) & 3;
                debug_assert!(decode_ternary(code).is_some());
                *v = table[code as usize];
            }
        });
    out
}
