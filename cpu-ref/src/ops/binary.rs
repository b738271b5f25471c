//! Elementwise binary ops with NumPy broadcasting, and their tensor-scalar forms.

use rayon::prelude::*;

use super::elementwise::{ALONE_BELOW_VALUES, map1, map2, min_items, with_binary};
use super::{input, output, scalar};
use crate::alloc;
use crate::check;
use crate::error::{Error, Result};
use crate::tensor::{Tensor, TensorRef};

/// Which elementwise operation: `a + b`, `a - b`, `a * b`, `a / b` (one IEEE f32 operation).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum BinaryOp {
    /// `a + b`
    Add,
    /// `a - b`
    Sub,
    /// `a * b`
    Mul,
    /// `a / b` (division by zero makes a non-finite output, hence an error)
    Div,
}

impl BinaryOp {
    /// Applies the operation to one pair.
    #[inline]
    pub fn apply(self, a: f32, b: f32) -> f32 {
        match self {
            BinaryOp::Add => a + b,
            BinaryOp::Sub => a - b,
            BinaryOp::Mul => a * b,
            BinaryOp::Div => a / b,
        }
    }
}

/// The NumPy broadcast of two shapes: align them on the right, each pair of dimensions must be
/// equal or one of them 1, and the result takes the larger; missing leading dimensions count as 1.
/// `None` if the shapes are incompatible.
pub fn broadcast_shape(a: &[usize], b: &[usize]) -> Option<Vec<usize>> {
    let rank = a.len().max(b.len());
    let dim = |s: &[usize], i: usize| (i + s.len()).checked_sub(rank).map_or(1, |j| s[j]);
    (0..rank)
        .map(|i| match (dim(a, i), dim(b, i)) {
            (x, y) if x == y => Some(x),
            (1, y) => Some(y),
            (x, 1) => Some(x),
            _ => None,
        })
        .collect()
}

/// Row-major strides of `shape` seen through the broadcast `out` shape (0 on broadcast axes).
fn broadcast_strides(shape: &[usize], out: &[usize]) -> Vec<usize> {
    let mut strides = vec![0; out.len()];
    let offset = out.len() - shape.len();
    let mut stride = 1;
    for (i, &d) in shape.iter().enumerate().rev() {
        strides[offset + i] = if d == 1 { 0 } else { stride };
        stride *= d;
    }
    strides
}

/// `op(a, b)` elementwise with NumPy broadcasting (see [`broadcast_shape`]); the output has the
/// broadcast shape. Errors: incompatible shapes ([`Error::ShapeMismatch`] with `a`'s shape as
/// `expected` and `b`'s as `got`), non-finite inputs, non-finite outputs (overflow, `x / 0`), an
/// output too large to count or allocate ([`Error::SizeOverflow`], [`Error::OutOfMemory`]).
pub fn binary<'a>(
    op: BinaryOp,
    a: impl Into<TensorRef<'a, f32>>,
    b: impl Into<TensorRef<'a, f32>>,
) -> Result<Tensor<f32>> {
    binary_ref(op, a.into(), b.into())
}

/// [`binary`] on borrowed operands: its body, compiled in this crate (not per caller).
fn binary_ref(op: BinaryOp, a: TensorRef<'_, f32>, b: TensorRef<'_, f32>) -> Result<Tensor<f32>> {
    const OP: &str = "binary";
    let shape = broadcast_shape(a.shape(), b.shape()).ok_or_else(|| Error::ShapeMismatch {
        op: OP,
        what: "operands do not broadcast",
        expected: a.shape().to_vec(),
        got: b.shape().to_vec(),
    })?;
    if a.shape() == b.shape() {
        return Ok(Tensor::from_valid(
            same_shape::<Error>(op, a.data(), b.data())?,
            shape,
        ));
    }
    input(OP, "a", a)?;
    input(OP, "b", b)?;
    let out = with_binary!(op, |f| broadcast_rows(a, b, &shape, f))?;
    output(OP, out, shape)
}

/// [`binary`] of two operands of one shape, its values alone (`a` and `b` flat, their shape the
/// caller's), with the same checks and errors, in the caller's error type: for an engine that
/// wraps the values in a tensor of its own. It allocates no shape, and its result is built in
/// the caller's `Result` rather than converted from this crate's. Errors also when `a` and `b`
/// differ in length.
pub fn binary_values_as<E: From<Error>>(
    op: BinaryOp,
    a: &[f32],
    b: &[f32],
) -> std::result::Result<Vec<f32>, E> {
    if a.len() != b.len() {
        return Err(E::from(Error::ShapeMismatch {
            op: "binary",
            what: "operands of one shape",
            expected: vec![a.len()],
            got: vec![b.len()],
        }));
    }
    same_shape(op, a, b)
}

/// `op` over operands of one shape: the map checks `a`, `b` and the output (`input` and
/// `output`) in one pass.
fn same_shape<E: From<Error>>(
    op: BinaryOp,
    a: &[f32],
    b: &[f32],
) -> std::result::Result<Vec<f32>, E> {
    with_binary!(op, |f| map2(
        "binary",
        ["a", "b"],
        a,
        b,
        ALONE_BELOW_VALUES,
        f
    ))
}

/// `f(a, b)` over the broadcast `shape` of `a` and `b` (compatible, checked by the caller).
fn broadcast_rows(
    a: TensorRef<'_, f32>,
    b: TensorRef<'_, f32>,
    shape: &[usize],
    f: impl Fn(f32, f32) -> f32 + Sync,
) -> Result<Vec<f32>> {
    const OP: &str = "binary";
    let sa = broadcast_strides(a.shape(), shape);
    let sb = broadcast_strides(b.shape(), shape);
    let len = shape.last().copied().unwrap_or(1);
    let numel = shape
        .iter()
        .try_fold(1usize, |n, &d| check::mul(OP, "output elements", n, d))?;
    let (ad, bd) = (a.data(), b.data());
    let (la, lb) = (
        sa.last().copied().unwrap_or(0),
        sb.last().copied().unwrap_or(0),
    );
    let mut out = alloc::zeroed::<f32>(OP, "output", numel)?;
    // One output row (last axis) at a time: decompose the row index over the leading axes once,
    // then walk the row with the last-axis strides (0 or 1).
    out.par_chunks_mut(len)
        .with_min_len(min_items(numel, len, ALONE_BELOW_VALUES))
        .enumerate()
        .for_each(|(row, o)| {
            let (mut ia, mut ib, mut rest) = (0, 0, row);
            for axis in (0..shape.len().saturating_sub(1)).rev() {
                let idx = rest % shape[axis];
                rest /= shape[axis];
                ia += idx * sa[axis];
                ib += idx * sb[axis];
            }
            for (i, v) in o.iter_mut().enumerate() {
                *v = f(ad[ia + i * la], bd[ib + i * lb]);
            }
        });
    Ok(out)
}

/// `op(a, s)` for every element (the scalar is the right operand: `Sub` is `a - s`, `Div` is
/// `a / s`). Errors: non-finite `a` or `s`, non-finite outputs.
pub fn binary_scalar<'a>(
    op: BinaryOp,
    a: impl Into<TensorRef<'a, f32>>,
    s: f32,
) -> Result<Tensor<f32>> {
    binary_scalar_ref(op, a.into(), s)
}

/// [`binary_scalar`] on borrowed operands: its body, compiled in this crate (not per caller).
fn binary_scalar_ref(op: BinaryOp, a: TensorRef<'_, f32>, s: f32) -> Result<Tensor<f32>> {
    const OP: &str = "binary_scalar";
    if !s.is_finite() {
        input(OP, "a", a)?;
        scalar(OP, "s", s)?;
    }
    // The map checks `a` and the output (`input` and `output` in one pass).
    let (values, alone) = (a.data(), ALONE_BELOW_VALUES);
    let out = with_binary!(op, |f| map1(OP, "a", values, alone, |v| f(v, s)))?;
    Ok(Tensor::from_valid(out, a.shape().to_vec()))
}
