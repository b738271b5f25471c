//! BitLinear: `y[M, N] = x[M, K] · W[N, K]^T` with int8 activations and ternary weights, exact
//! `i32` accumulation and the rescale of `layout.rs`.

use rayon::prelude::*;

use crate::activations::QuantizedActivations;
use crate::alloc;
use crate::check;
use crate::error::{Error, Result};
use crate::kernels::{Isa, dot::Prepared, float};
use crate::layout::INV_127;
use crate::quantize::quantize_activations_impl;
use crate::ternary::TernaryMatrix;

/// Weight rows per rayon task: enough work (`ROWS · K` MACs per activation row) to amortize the
/// scheduling, small enough that every core gets several tasks.
const ROWS_PER_TASK: usize = 32;

/// Multiply-accumulates (`M · N · K`) below which BitLinear runs on the calling thread alone;
/// from this size on it is split into rayon tasks. Handing tasks to rayon's pool costs the
/// caller microseconds (waking workers, blocking on the result): 1 × 256 × 256 took 8-10 µs on 2
/// cores and 18-20 µs on 16 (about 1 µs of work), 1 × 512 × 512 11 and 20 µs against 5.6 and
/// 9-15 alone (2026-12-01). Public so that a caller running many BitLinears in a row can tell
/// whether entering the pool once for all of them pays.
pub const BITLINEAR_SPLIT_MACS: usize = 512 * 1024;

/// BitLinear on f32 activations: quantizes `x` (`[M, K]`, `K = w.k()`) per row, then
/// [`bitlinear_quantized`]. Returns `y`, `M · N` f32 row-major.
///
/// Errors: `M` zero, `x.len() != M · K`, a NaN/infinity in `x`, an output that overflows, or an
/// output the host cannot allocate ([`Error::OutOfMemory`]).
pub fn bitlinear(x: &[f32], m: usize, w: &TernaryMatrix) -> Result<Vec<f32>> {
    let xq = quantize_activations_impl("bitlinear", x, m, w.k(), Isa::best())?;
    bitlinear_quantized(&xq, w)
}

/// [`bitlinear`] returning its error as the caller's error type `E` (see the crate docs,
/// "Results in your own error type").
pub fn bitlinear_as<E: From<Error>>(
    x: &[f32],
    m: usize,
    w: &TernaryMatrix,
) -> std::result::Result<Vec<f32>, E> {
    bitlinear(x, m, w).map_err(E::from)
}

/// BitLinear on already-quantized activations:
/// `y[m, n] = (acc[m, n] as f32) * ((s * a_m) * INV_127)` in exactly that order.
///
/// Errors: `xq.k() != w.k()`, an output the host cannot allocate ([`Error::OutOfMemory`]), or an
/// output that is not finite. That takes huge scales: when
/// `s · a_m` itself passes `f32::MAX` (weights and activations both around 1e19 or more) the row
/// is reported as overflowed even where the exact `acc · s · a_m / 127` would fit, zero
/// accumulators included — the order above, which every backend shares, fixes the bits.
pub fn bitlinear_quantized(xq: &QuantizedActivations, w: &TernaryMatrix) -> Result<Vec<f32>> {
    bitlinear_quantized_with_isa(xq, w, Isa::best())
}

/// [`bitlinear_quantized`] returning its error as the caller's error type `E` (see the crate
/// docs, "Results in your own error type").
pub fn bitlinear_quantized_as<E: From<Error>>(
    xq: &QuantizedActivations,
    w: &TernaryMatrix,
) -> std::result::Result<Vec<f32>, E> {
    bitlinear_quantized(xq, w).map_err(E::from)
}

/// [`bitlinear_quantized`] on a chosen SIMD level (identical output on every level).
pub fn bitlinear_quantized_with_isa(
    xq: &QuantizedActivations,
    w: &TernaryMatrix,
    isa: Isa,
) -> Result<Vec<f32>> {
    const OP: &str = "bitlinear";
    let acc = accumulate(OP, xq, w, isa)?;
    let n = w.n();
    let mut y = alloc::zeroed::<f32>(OP, "output", acc.len())?;
    for ((out, a), &amax) in y
        .chunks_exact_mut(n)
        .zip(acc.chunks_exact(n))
        .zip(xq.absmax())
    {
        float::rescale_row(a, (w.scale() * amax) * INV_127, out, isa);
    }
    check::finite(OP, "output", &y).map_err(|e| match e {
        Error::NonFinite { index, .. } => Error::NonFinite {
            op: OP,
            tensor: "output (rescale overflowed f32)",
            index,
        },
        other => other,
    })?;
    Ok(y)
}

/// The exact integer accumulators `acc[m, n] = Σ_k xq[m, k] · wq[n, k]`, `M · N` `i32` row-major —
/// what bit-exact cross-checks of GPU kernels compare.
///
/// Errors: `xq.k() != w.k()`, or an output the host cannot allocate ([`Error::OutOfMemory`]).
pub fn bitlinear_accumulate(xq: &QuantizedActivations, w: &TernaryMatrix) -> Result<Vec<i32>> {
    accumulate("bitlinear_accumulate", xq, w, Isa::best())
}

/// [`bitlinear_accumulate`] returning its error as the caller's error type `E` (see the crate
/// docs, "Results in your own error type").
pub fn bitlinear_accumulate_as<E: From<Error>>(
    xq: &QuantizedActivations,
    w: &TernaryMatrix,
) -> std::result::Result<Vec<i32>, E> {
    bitlinear_accumulate(xq, w).map_err(E::from)
}

/// [`bitlinear_accumulate`] on a chosen SIMD level (identical output on every level).
pub fn bitlinear_accumulate_with_isa(
    xq: &QuantizedActivations,
    w: &TernaryMatrix,
    isa: Isa,
) -> Result<Vec<i32>> {
    accumulate("bitlinear_accumulate", xq, w, isa)
}

/// Shared body: computes `acc` transposed (`[N, M]`, parallel over weight rows so each packed row
/// is read once and stays in L1 across the `M` activation rows), then transposes if `M > 1`.
fn accumulate(
    op: &'static str,
    xq: &QuantizedActivations,
    w: &TernaryMatrix,
    isa: Isa,
) -> Result<Vec<i32>> {
    let isa = isa.require(op)?;
    check::len(
        op,
        "activation K (must equal the weights' K)",
        w.k(),
        xq.k(),
    )?;
    let (m, n) = (xq.m(), w.n());
    check::mul(op, "M * N", m, n)?;
    let prepared = Prepared::new(op, xq.values(), m, xq.k(), isa)?;
    let mut acc_t = alloc::zeroed::<i32>(op, "accumulators", n * m)?;
    let tasks = n.div_ceil(ROWS_PER_TASK);
    let alone = n.saturating_mul(m).saturating_mul(xq.k()) < BITLINEAR_SPLIT_MACS;
    let ahead = (PREFETCH_BYTES / (4 * w.words_per_row()).max(1)).max(2);
    acc_t
        .par_chunks_mut(m * ROWS_PER_TASK)
        .with_min_len(if alone { tasks } else { 1 })
        .enumerate()
        .for_each(|(task, out)| {
            // Weight rows in pairs (the kernel shares activation loads between them).
            let first = task * ROWS_PER_TASK;
            let rows = out.len() / m;
            for r in (0..rows).step_by(2) {
                prefetch_rows(w, first + r + ahead, 2);
                if r + 1 < rows {
                    let (w0, w1) = (w.row_words(first + r), w.row_words(first + r + 1));
                    // Activation rows in pairs too (codes decoded once per pair), then the odd one.
                    for row in (0..m - 1).step_by(2) {
                        let [a, b, c, d] = prepared.dot2x2(row, row + 1, w0, w1);
                        out[r * m + row] = a;
                        out[(r + 1) * m + row] = b;
                        out[r * m + row + 1] = c;
                        out[(r + 1) * m + row + 1] = d;
                    }
                    if m % 2 == 1 {
                        let (a, b) = prepared.dot2(m - 1, w0, w1);
                        out[r * m + m - 1] = a;
                        out[(r + 1) * m + m - 1] = b;
                    }
                } else {
                    let words = w.row_words(first + r);
                    for (row, o) in out[r * m..(r + 1) * m].iter_mut().enumerate() {
                        *o = prepared.dot(row, words);
                    }
                }
            }
        });
    if m == 1 {
        return Ok(acc_t);
    }
    let mut acc = alloc::zeroed::<i32>(op, "accumulators", m * n)?;
    for (nn, col) in acc_t.chunks_exact(m).enumerate() {
        for (mm, &v) in col.iter().enumerate() {
            acc[mm * n + nn] = v;
        }
    }
    Ok(acc)
}

/// How far ahead of the rows being multiplied their successors are prefetched (at least two
/// rows ahead): far enough to cover a DRAM round trip at the rate the kernels consume words.
const PREFETCH_BYTES: usize = 8192;

/// Asks the cache for rows `from .. from + count` of `w` (those that exist): a decode GEMV reads
/// each weight once, in short rows the hardware prefetcher does not run far enough ahead on.
#[inline]
fn prefetch_rows(w: &TernaryMatrix, from: usize, count: usize) {
    #[cfg(target_arch = "x86_64")]
    {
        let words = w.words();
        let wpr = w.words_per_row();
        let start = (from * wpr).min(words.len());
        let end = ((from + count) * wpr).min(words.len());
        for at in (start..end).step_by(16) {
            // SAFETY: `at < words.len()`, so the address lies inside the weights; a prefetch
            // reads nothing back and cannot fault.
            unsafe {
                std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_T0 }>(
                    words.as_ptr().add(at).cast(),
                )
            };
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = (w, from, count);
}
