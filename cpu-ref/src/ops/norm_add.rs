//! Residual add fused with RMSNorm: the step between a transformer block's sublayers.

use rayon::prelude::*;

use super::elementwise::{ALONE_BELOW_ROW_VALUES, min_items};
use super::norm::normalize_row;
use super::{input, rows_of};
use crate::alloc;
use crate::check;
use crate::error::{Error, Result};
use crate::tensor::{Tensor, TensorRef};

/// `h = x + residual` (elementwise, same shape) and `rms_norm(h, weight, eps)` over the last
/// axis, both returned: a pre-norm transformer adds each sublayer's output to the residual stream
/// and normalizes the sum for the next sublayer, and one pass does both (the GPU engine's one
/// dispatch instead of two). `h` is exactly [`binary`](super::binary)'s `Add`; the norm is
/// exactly [`rms_norm`](super::rms_norm) of `h`.
///
/// Errors, in this order: shapes that differ, `weight.len()` not the last axis, a non-finite
/// `x`, `residual` or `weight` element (by name), non-finite or negative `eps`; then
/// `"output"`: the lowest flat index of a row whose sum `h` or its sum of squares overflowed
/// f32 (reported at the row's first element: the row has no finite norm), or of a non-finite
/// normalized element — whichever comes first in flat order. Fused into one kernel, the checks
/// fit the four status words of a GPU launch; [`rms_norm`](super::rms_norm) reports the sum of
/// squares under its own name.
pub fn add_rms_norm<'a>(
    x: impl Into<TensorRef<'a, f32>>,
    residual: impl Into<TensorRef<'a, f32>>,
    weight: &[f32],
    eps: f32,
) -> Result<(Tensor<f32>, Tensor<f32>)> {
    add_rms_norm_ref(x.into(), residual.into(), weight, eps)
}

/// [`add_rms_norm`] on borrowed operands: its body, compiled in this crate (not per caller).
fn add_rms_norm_ref(
    x: TensorRef<'_, f32>,
    residual: TensorRef<'_, f32>,
    weight: &[f32],
    eps: f32,
) -> Result<(Tensor<f32>, Tensor<f32>)> {
    const OP: &str = "add_rms_norm";
    if x.shape() != residual.shape() {
        return Err(Error::ShapeMismatch {
            op: OP,
            what: "residual (must have x's shape)",
            expected: x.shape().to_vec(),
            got: residual.shape().to_vec(),
        });
    }
    let (_, len) = rows_of(x);
    check::len(OP, "weight (last axis of x)", len, weight.len())?;
    input(OP, "x", x)?;
    input(OP, "residual", residual)?;
    check::finite(OP, "weight", weight)?;
    super::norm::eps_arg(OP, eps)?;
    let sum: Vec<f32> = x
        .data()
        .iter()
        .zip(residual.data())
        .map(|(a, b)| a + b)
        .collect();
    let mut out = alloc::zeros::<f32>(sum.len());
    let bad = out
        .par_chunks_mut(len)
        .zip(sum.par_chunks(len))
        .enumerate()
        .with_min_len(min_items(x.numel(), len, ALONE_BELOW_ROW_VALUES))
        .filter_map(|(r, (o, row))| {
            if !normalize_row(row, weight, eps, o).is_finite() {
                return Some(r * len);
            }
            o.iter().position(|y| !y.is_finite()).map(|i| r * len + i)
        })
        .min();
    if let Some(index) = bad {
        return Err(Error::NonFinite {
            op: OP,
            tensor: "output",
            index,
        });
    }
    let shape = x.shape().to_vec();
    Ok((
        Tensor::from_valid(sum, shape.clone()),
        Tensor::from_valid(out, shape),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::{BinaryOp, binary, rms_norm};

    fn t(v: &[f32], shape: &[usize]) -> Tensor<f32> {
        Tensor::new(v.to_vec(), shape).unwrap()
    }

    #[test]
    fn equals_add_then_rms_norm_bit_for_bit() {
        let x: Vec<f32> = (0..600)
            .map(|i| ((i * 37 % 101) as f32 - 50.0) / 7.0)
            .collect();
        let r: Vec<f32> = (0..600)
            .map(|i| ((i * 53 % 97) as f32 - 48.0) / 3.0)
            .collect();
        let w: Vec<f32> = (0..300).map(|i| 0.5 + (i % 7) as f32 / 7.0).collect();
        let (x, r) = (t(&x, &[2, 300]), t(&r, &[2, 300]));
        let (h, y) = add_rms_norm(&x, &r, &w, 1e-5).unwrap();
        let want_h = binary(BinaryOp::Add, &x, &r).unwrap();
        assert_eq!(h.data(), want_h.data());
        assert_eq!(y.data(), rms_norm(&want_h, &w, 1e-5).unwrap().data());
        assert_eq!(y.shape(), &[2, 300]);
    }

    #[test]
    fn errors_name_the_input_or_the_first_bad_row() {
        let w = [1.0f32; 3];
        let ok = t(&[1.0; 6], &[2, 3]);
        let err = |x: &Tensor<f32>, r: &Tensor<f32>, w: &[f32], eps| {
            add_rms_norm(x, r, w, eps).map(drop).unwrap_err()
        };
        let nonfinite = |tensor, index| Error::NonFinite {
            op: "add_rms_norm",
            tensor,
            index,
        };
        let bad_r = t(&[1.0, 1.0, 1.0, 1.0, f32::NAN, 1.0], &[2, 3]);
        assert_eq!(err(&ok, &bad_r, &w, 1e-5), nonfinite("residual", 4));
        assert_eq!(
            err(&ok, &ok, &[1.0, f32::INFINITY, 1.0], 1e-5),
            nonfinite("weight", 1)
        );
        // Row 1's sum overflows (3e38 + 3e38): reported at its first element.
        let big = t(&[1.0, 1.0, 1.0, 1.0, 3e38, 1.0], &[2, 3]);
        assert_eq!(err(&big, &big, &w, 1e-5), nonfinite("output", 3));
        // Row 0's squares overflow with a finite sum.
        let large = t(&[2e19, 1.0, 1.0, 1.0, 1.0, 1.0], &[2, 3]);
        assert_eq!(err(&large, &ok, &w, 1e-5), nonfinite("output", 0));
        // A zero row with eps = 0: 0 · inf in row 1.
        let zero = t(&[1.0, 1.0, 1.0, 0.0, 0.0, 0.0], &[2, 3]);
        let minus = t(&[0.0, 0.0, 0.0, 0.0, 0.0, 0.0], &[2, 3]);
        assert_eq!(err(&zero, &minus, &w, 0.0), nonfinite("output", 3));
        assert!(matches!(
            err(&ok, &t(&[1.0; 6], &[3, 2]), &w, 1e-5),
            Error::ShapeMismatch { .. }
        ));
        assert!(matches!(
            err(&ok, &ok, &w, -1.0),
            Error::InvalidArgument { .. }
        ));
    }
}
