//! Float tensor ops a BitNet decoder block needs, as free functions on [`Tensor`] (attention
//! included), and the shape ops [`slice()`] and [`concat()`] (any element type; they move values,
//! so the conventions below on non-finite values and arithmetic do not apply to them).
//!
//! Ops read their operands as `&Tensor` or as a borrowed [`TensorRef`] (values that live
//! elsewhere, read without a copy: the CPU engine's own storage).
//!
//! Common conventions (the WGSL kernels mirror them and are cross-checked within float
//! tolerances):
//! * Inputs are validated first: a NaN or infinity in any input tensor or scalar argument is
//!   [`Error::NonFinite`] naming the op, the tensor (`"a"`, `"b"`, `"x"`, `"weight"`, ...) and
//!   the first flat index. The one exception is [`softmax_last`], where `-inf` is a mask (its
//!   output is 0) and only NaN and `+inf` are rejected; a row entirely `-inf` is an error.
//! * An output that is not finite (exp or square overflow, division by zero, f16 overflow) is
//!   [`Error::NonFinite`] with tensor `"output"` and the first flat index: never a NaN result.
//! * An output whose size the input shapes imply (broadcast, matmul) is allocated fallibly: one
//!   the host cannot hold is [`Error::OutOfMemory`] (or [`Error::SizeOverflow`]), not an abort.
//! * Arithmetic is `f32` with IEEE rounding, no fused multiply-add; sums run in a stated order.

mod attention;
mod attention_chunks;
mod binary;
mod elementwise;
mod gated;
mod math;
mod matmul;
mod norm;
mod norm_add;
mod reduce;
mod rope;
mod shape;
mod softmax;
mod unary;

pub use attention::{ATTENTION_CHUNK, AttentionDims, attention, attention_dims};
pub use binary::{BinaryOp, binary, binary_scalar, binary_values_as, broadcast_shape};
pub use gated::gated;
pub use math::{erf, gelu, sigmoid, silu};
pub use matmul::{MATMUL_CHUNK, matmul, matmul_bt, matmul_bt_f16, matmul_f16};
pub use norm::{rms_norm, rms_norm_values_as};
pub use norm_add::add_rms_norm;
pub use reduce::{ReduceOp, reduce_last};
pub use rope::{rope, rope_freqs, rope_pair};
pub use shape::{concat, concat_shape, slice, slice_shape};
pub use softmax::{SOFTMAX_MASKED_ROW, softmax_last};
pub use unary::{UnaryOp, unary, unary_values_as};

use crate::check;
use crate::error::{Error, Result};
use crate::kernels::Isa;
use crate::kernels::multiversion::multiversion;
use crate::tensor::{Tensor, TensorRef};

/// Rejects a non-finite element of an input tensor.
fn input<'a>(op: &'static str, name: &'static str, t: impl Into<TensorRef<'a, f32>>) -> Result<()> {
    check::finite(op, name, t.into().data())
}

/// Wraps an op's result, rejecting the first non-finite element as an `"output"` error.
fn output(op: &'static str, data: Vec<f32>, shape: Vec<usize>) -> Result<Tensor<f32>> {
    check::finite(op, "output", &data)?;
    Ok(Tensor::from_valid(data, shape))
}

/// Rejects a non-finite scalar argument.
fn scalar(op: &'static str, name: &'static str, v: f32) -> Result<()> {
    if v.is_finite() {
        Ok(())
    } else {
        Err(Error::NonFinite {
            op,
            tensor: name,
            index: 0,
        })
    }
}

/// Rows of the last axis: `(rows, len)`; rank 0 is one row of one element.
fn rows_of<T>(t: TensorRef<'_, T>) -> (usize, usize) {
    let len = t.shape().last().copied().unwrap_or(1);
    (t.numel() / len, len)
}

/// Lanes of the fixed summation order used by reductions (that of a 256-thread workgroup; the
/// canonical sum's lane count, whose tree `lane_sum` shares).
const LANES: usize = crate::layout::SUM_LANES;

/// `Σ f(v)` over `values` in the workgroup order the GPU kernels use: lane `t < 256` folds
/// `f(v[t]), f(v[t + 256]), …` sequentially from `0.0`, then a pairwise tree over the lanes
/// (strides 128, …, 1) — like `layout.rs`'s canonical sum, but over one row of any length.
fn lane_sum(values: &[f32], f: impl Fn(f32) -> f32) -> f32 {
    let isa = Isa::best();
    let mut lanes = [0.0f32; LANES];
    lane_fold(values, &f, &mut lanes, isa);
    crate::kernels::float::lane_tree(&mut lanes, isa)
}

multiversion! {
    /// [`lane_sum`]'s per-lane folds, compiled for the baseline and with AVX2: the lanes are
    /// independent, so the 8-lane version adds the same values in the same order per lane (same
    /// bits). A 256-value RMSNorm row's sum of squares ran 4-wide before.
    fn lane_fold<F: Fn(f32) -> f32>(values: &[f32], f: &F, lanes: &mut [f32; LANES]) {
        for chunk in values.chunks(LANES) {
            for (l, &v) in lanes.iter_mut().zip(chunk) {
                *l += f(v);
            }
        }
    }
}
