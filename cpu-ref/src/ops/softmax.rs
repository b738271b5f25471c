//! Softmax over the last axis, with `-inf` entries as attention masks.

use rayon::prelude::*;

use super::elementwise::{ALONE_BELOW_TRANSCENDENTAL_VALUES, min_items};
use super::{lane_sum, output, rows_of};
use crate::alloc;
use crate::check;
use crate::error::{Error, Result};
use crate::tensor::{Tensor, TensorRef};

/// The `tensor` that [`softmax_last`] names in its [`Error::NonFinite`] for a row whose every
/// entry is `-inf` (a row masked entirely has no distribution); the error's `index` is the flat
/// index of that row's first element. The GPU engine's softmax reports the same error, so a
/// caller can tell this case from a NaN or `+inf` input (tensor `"x"`) by comparing with it.
pub const SOFTMAX_MASKED_ROW: &str = "x (every entry of the row is -inf)";

/// Softmax over the last axis, max-subtracted, per row:
/// `m = max x`, `e_i = exp(x_i - m)`, `s = Σ e_i` (256-lane workgroup order), `y_i = e_i / s`.
/// Every `e_i <= 1` and the maximum's is exactly 1, so nothing overflows and `s >= 1`.
///
/// Masking: `-inf` is a mask, as in PyTorch (`scores + mask`, `mask` holding `-inf` where masked):
/// a `-inf` entry takes no part in `m`, its `e_i` is 0, and its output is exactly `0.0`; the other
/// entries get the softmax of the unmasked ones alone. The result is bit for bit that of masking
/// with `f32::MIN` instead (`x_i - m` then rounds to a huge negative or `-inf` and `e_i` is 0 as
/// well), except for a row masked entirely: with `f32::MIN` it gives the uniform distribution
/// `1 / L`, with `-inf` it has no distribution and is an error (where PyTorch gives NaN).
///
/// Errors: [`Error::NonFinite`] with tensor `"x"` and the first flat index for a NaN or `+inf`
/// input (checked over the whole tensor first); then, for the first row whose every entry is
/// `-inf`, [`Error::NonFinite`] with tensor [`SOFTMAX_MASKED_ROW`] and the flat index of that
/// row's first element — the same variant as every other value the op cannot take, named so
/// that it says what is wrong. The output is always finite.
pub fn softmax_last<'a>(x: impl Into<TensorRef<'a, f32>>) -> Result<Tensor<f32>> {
    softmax_last_ref(x.into())
}

/// [`softmax_last`] on borrowed operands: its body, compiled in this crate (not per caller).
fn softmax_last_ref(x: TensorRef<'_, f32>) -> Result<Tensor<f32>> {
    const OP: &str = "softmax_last";
    check::finite_or_neg_inf(OP, "x", x.data())?;
    let (_, len) = rows_of(x);
    let mut out = alloc::zeros::<f32>(x.numel());
    let masked_row = out
        .par_chunks_mut(len)
        .zip(x.data().par_chunks(len))
        .enumerate()
        .with_min_len(min_items(x.numel(), len, ALONE_BELOW_TRANSCENDENTAL_VALUES))
        .filter_map(|(r, (o, row))| {
            // `-inf` never wins a max, so `m` is over the unmasked entries; it stays `-inf` only
            // when every entry is masked.
            let m = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
            if m == f32::NEG_INFINITY {
                return Some(r);
            }
            for (e, &v) in o.iter_mut().zip(row) {
                // Stated rather than left to `exp(-inf - m) = 0`: the GPU kernel skips masked
                // entries the same way, without arithmetic on infinities.
                *e = if v == f32::NEG_INFINITY {
                    0.0
                } else {
                    (v - m).exp()
                };
            }
            // A masked entry adds 0.0 to its lane: the sum is that of the unmasked terms alone.
            let s = lane_sum(o, |v| v);
            for e in o.iter_mut() {
                *e /= s;
            }
            None
        })
        .min();
    if let Some(r) = masked_row {
        return Err(Error::NonFinite {
            op: OP,
            tensor: SOFTMAX_MASKED_ROW,
            index: r * len,
        });
    }
    output(OP, out, x.shape().to_vec())
}
