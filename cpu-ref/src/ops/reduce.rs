//! Reductions over the last axis.

use rayon::prelude::*;

use super::elementwise::{ALONE_BELOW_ROW_VALUES, min_items};
use super::{input, lane_sum, output, rows_of};
use crate::error::Result;
use crate::tensor::{Tensor, TensorRef};

/// Which reduction.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ReduceOp {
    /// `Σ x`, summed in the 256-lane workgroup order (lane `t` folds `t, t + 256, …`, then a
    /// pairwise tree over the lanes).
    Sum,
    /// `(Σ x) / len`: the `Sum` above, then one f32 division.
    Mean,
    /// `max x`.
    Max,
    /// `max |x|`.
    AbsMax,
}

/// `max(a, b)` of finite values with -0 below +0 (IEEE 754-2019 `maximum`), so `Max`'s result
/// has one sign whatever the row's order and the platform: `f32::max` leaves a zero result's
/// sign unspecified (x86's `maxss` returns its second operand when the two compare equal).
/// Equal values have equal bits but for the two zeros, whose AND is +0 when either is.
fn max_ordered(a: f32, b: f32) -> f32 {
    if a == b {
        f32::from_bits(a.to_bits() & b.to_bits())
    } else if a > b {
        a
    } else {
        b
    }
}

/// Reduces the last axis: output shape is the input shape without its last axis (a rank-1 input
/// gives a rank-0 scalar; a rank-0 input is treated as one row of one element), as PyTorch's
/// `x.sum(dim=-1)` / `mean` / `amax` / `abs().amax` without `keepdim`. Rows are never empty (a
/// [`Tensor`] has no zero dimension), so `Mean` never divides by 0 and `Max` never returns its
/// `-inf` start. Errors: non-finite input, non-finite output (a `Sum` or `Mean` whose f32 sum
/// overflows, even where the mean itself would fit).
pub fn reduce_last<'a>(op: ReduceOp, a: impl Into<TensorRef<'a, f32>>) -> Result<Tensor<f32>> {
    reduce_last_ref(op, a.into())
}

/// [`reduce_last`] on borrowed operands: its body, compiled in this crate (not per caller).
fn reduce_last_ref(op: ReduceOp, a: TensorRef<'_, f32>) -> Result<Tensor<f32>> {
    const OP: &str = "reduce_last";
    input(OP, "a", a)?;
    let (_, len) = rows_of(a);
    let out = a
        .data()
        .par_chunks(len)
        .with_min_len(min_items(a.numel(), len, ALONE_BELOW_ROW_VALUES))
        .map(|row| match op {
            ReduceOp::Sum => lane_sum(row, |v| v),
            ReduceOp::Mean => lane_sum(row, |v| v) / len as f32,
            ReduceOp::Max => row.iter().copied().fold(f32::NEG_INFINITY, max_ordered),
            ReduceOp::AbsMax => row.iter().fold(0.0f32, |m, v| m.max(v.abs())),
        })
        .collect();
    let shape = a.shape()[..a.shape().len().saturating_sub(1)].to_vec();
    output(OP, out, shape)
}
