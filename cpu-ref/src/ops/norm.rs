//! RMSNorm over the last axis (softmax, the other row normalization, is `softmax.rs`).

use rayon::prelude::*;

use super::elementwise::{ALONE_BELOW_ROW_VALUES, min_items};
use super::{lane_sum, rows_of, scalar};
use crate::alloc;
use crate::check;
use crate::error::{Error, Result};
use crate::kernels::Isa;
use crate::kernels::multiversion::multiversion;
use crate::tensor::{Tensor, TensorRef};

/// RMSNorm over the last axis (length `L`), per row:
/// `ss = Σ x²` (256-lane workgroup order, `x·x` rounded then added, no FMA),
/// `inv = 1 / sqrt(ss / L + eps)`, `y = (x · inv) · weight[i]`.
///
/// This is the RMSNorm of HF transformers' `LlamaRMSNorm` / `BitNetRMSNorm` (`eps` added to the
/// mean square inside the square root, not `x / (rms + eps)`; `weight` multiplies as is, not
/// `1 + weight` as in Gemma; no mean subtraction and no bias, unlike LayerNorm).
/// `Σ x²` is an f32 sum: with `eps = 0` a row whose squares underflow (every `|x|` below about
/// 1e-19) loses precision or, all squares flushing to 0, becomes a non-finite-output error; any
/// realistic `eps` (1e-6, 1e-5) dominates such a mean square, so the output is then correct.
///
/// Errors: `weight.len() != L`, non-finite `x`, `weight` or `eps`, negative `eps`, a sum of
/// squares that overflows f32 (reported with `index` = the row), non-finite output (e.g. an
/// all-zero row with `eps = 0`).
pub fn rms_norm<'a>(
    x: impl Into<TensorRef<'a, f32>>,
    weight: &[f32],
    eps: f32,
) -> Result<Tensor<f32>> {
    rms_norm_ref(x.into(), weight, eps)
}

/// [`rms_norm`] on borrowed operands: its body, compiled in this crate (not per caller).
fn rms_norm_ref(x: TensorRef<'_, f32>, weight: &[f32], eps: f32) -> Result<Tensor<f32>> {
    let (_, len) = rows_of(x);
    let out = rms_norm_values::<Error>(x.data(), len, weight, eps)?;
    Ok(Tensor::from_valid(out, x.shape().to_vec()))
}

/// [`rms_norm`]'s values alone: `x` flat in rows of `len` values (its shape the caller's), with
/// the same checks and errors, in the caller's error type — for an engine that wraps the values
/// in a tensor of its own. It allocates no shape, and its result is built in the caller's
/// `Result` rather than converted from this crate's. Errors also when `len` is 0 or does not
/// divide `x.len()`.
pub fn rms_norm_values_as<E: From<Error>>(
    x: &[f32],
    len: usize,
    weight: &[f32],
    eps: f32,
) -> std::result::Result<Vec<f32>, E> {
    if len == 0 || !x.len().is_multiple_of(len) {
        return Err(E::from(Error::ShapeMismatch {
            op: "rms_norm",
            what: "x in whole rows of the last axis",
            expected: vec![len],
            got: vec![x.len()],
        }));
    }
    rms_norm_values(x, len, weight, eps)
}

/// RMSNorm of `x` in rows of `len` (`len` ≥ 1 dividing `x.len()`), checked as [`rms_norm`], in
/// the caller's error type. The work is [`rms_norm_into`], compiled once in this crate: built
/// per caller, the engine's copy of it ran its rows about 10 % slower than this crate's.
fn rms_norm_values<E: From<Error>>(
    x: &[f32],
    len: usize,
    weight: &[f32],
    eps: f32,
) -> std::result::Result<Vec<f32>, E> {
    let mut out = alloc::zeros::<f32>(x.len());
    match rms_norm_into(x, len, weight, eps, &mut out) {
        Ok(()) => Ok(out),
        Err(e) => Err(E::from(e)),
    }
}

/// [`rms_norm_values`]' checks and rows, into `out` (`x.len()` values).
fn rms_norm_into(x: &[f32], len: usize, weight: &[f32], eps: f32, out: &mut [f32]) -> Result<()> {
    const OP: &str = "rms_norm";
    check::len(OP, "weight (last axis of x)", len, weight.len())?;
    check::finite(OP, "x", x)?;
    check::finite(OP, "weight", weight)?;
    eps_arg(OP, eps)?;
    let overflows =
        |(o, row): (&mut [f32], &[f32])| !normalize_row(row, weight, eps, o).is_finite();
    // Below a task's worth (a decode token's rows) the rows run here without rayon: its
    // bridge cost about a quarter of a 256-value row's norm.
    let overflow_row = if x.len() < ALONE_BELOW_ROW_VALUES {
        out.chunks_mut(len).zip(x.chunks(len)).position(overflows)
    } else {
        out.par_chunks_mut(len)
            .zip(x.par_chunks(len))
            .enumerate()
            .with_min_len(min_items(x.len(), len, ALONE_BELOW_ROW_VALUES))
            .filter_map(|(r, rows)| overflows(rows).then_some(r))
            .min()
    };
    if let Some(index) = overflow_row {
        return Err(Error::NonFinite {
            op: OP,
            tensor: "sum of squares of a row (overflows f32)",
            index,
        });
    }
    check::finite(OP, "output", out)
}

/// Rejects a non-finite or negative RMSNorm `eps` (the norms' argument check).
pub(super) fn eps_arg(op: &'static str, eps: f32) -> Result<()> {
    scalar(op, "eps", eps)?;
    if eps < 0.0 {
        return Err(Error::InvalidArgument {
            op,
            what: "eps",
            reason: "must be >= 0",
        });
    }
    Ok(())
}

/// One row's RMSNorm into `o`: `ss = Σ x²` in the lane order, `inv = 1 / sqrt(ss / L + eps)`,
/// `o[i] = x[i] · inv · weight[i]`. Returns `ss` (the caller decides what its overflow means).
pub(super) fn normalize_row(row: &[f32], weight: &[f32], eps: f32, o: &mut [f32]) -> f32 {
    let ss = lane_sum(row, |v| v * v);
    let inv = 1.0 / (ss / row.len() as f32 + eps).sqrt();
    scale_row(o, row, weight, inv, Isa::best());
    ss
}

multiversion! {
    /// `o[i] = row[i] · inv · weight[i]`, compiled for the baseline and with AVX2 (the same two
    /// roundings per value either way).
    fn scale_row(o: &mut [f32], row: &[f32], weight: &[f32], inv: f32) {
        for ((y, &v), &w) in o.iter_mut().zip(row).zip(weight) {
            *y = v * inv * w;
        }
    }
}
