//! Gated activation: the feed-forward block's `act(gate) · up` (GLU family) as one op.

use super::elementwise::{map2, with_unary};
use super::{BinaryOp, UnaryOp};
use crate::error::{Error, Result};
use crate::tensor::{Tensor, TensorRef};

/// `act(gate) · up` elementwise, same shape: the gated linear unit of a transformer's
/// feed-forward block (`Relu2` for BitNet b1.58, `Silu` for SwiGLU, `Gelu` for GeGLU; any
/// [`UnaryOp`]). Each value is exactly [`binary`](super::binary)'s `Mul` of
/// [`unary`](super::unary)'s `act(gate)` and `up` — the same two f32 results in the same order —
/// so the GPU engine can fuse the two ops into one dispatch and match them bit for bit.
///
/// Errors, in this order: shapes that differ ([`Error::ShapeMismatch`]: no broadcasting, the
/// operands of a GLU always match), a non-finite `gate` or `up` element (by name, first flat
/// index), then `"output"` at the first flat index whose product is not finite. An activation
/// that overflows (`Relu2` above ~1.8e19, `Exp` above ~88.72) makes a non-finite product
/// whatever `up` is (`inf · 0` is NaN), so it is an `"output"` error too: the two ops in sequence
/// would name `unary`'s output, one fused launch has four status words (gate, up, output).
pub fn gated<'a>(
    act: UnaryOp,
    gate: impl Into<TensorRef<'a, f32>>,
    up: impl Into<TensorRef<'a, f32>>,
) -> Result<Tensor<f32>> {
    gated_ref(act, gate.into(), up.into())
}

/// [`gated`] on borrowed operands: its body, compiled in this crate (not per caller).
fn gated_ref(
    act: UnaryOp,
    gate: TensorRef<'_, f32>,
    up: TensorRef<'_, f32>,
) -> Result<Tensor<f32>> {
    const OP: &str = "gated";
    if gate.shape() != up.shape() {
        return Err(Error::ShapeMismatch {
            op: OP,
            what: "up (must have gate's shape)",
            expected: gate.shape().to_vec(),
            got: up.shape().to_vec(),
        });
    }
    // The map checks `gate`, `up` and the output (`input` and `output` in one pass).
    let (g, u, alone) = (gate.data(), up.data(), act.alone_below());
    let mul = |a: f32, b: f32| BinaryOp::Mul.apply(a, b);
    let names = ["gate", "up"];
    let out = with_unary!(act, |f| map2(OP, names, g, u, alone, |g, u| mul(f(g), u)))?;
    Ok(Tensor::from_valid(out, gate.shape().to_vec()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::{binary, unary};

    fn t(v: &[f32], shape: &[usize]) -> Tensor<f32> {
        Tensor::new(v.to_vec(), shape).unwrap()
    }

    const ACTS: [UnaryOp; 5] = [
        UnaryOp::Relu,
        UnaryOp::Relu2,
        UnaryOp::Silu,
        UnaryOp::Gelu,
        UnaryOp::Exp,
    ];

    #[test]
    fn equals_unary_then_mul_bit_for_bit() {
        let g: Vec<f32> = (0..600)
            .map(|i| ((i * 37 % 101) as f32 - 50.0) / 7.0)
            .collect();
        let u: Vec<f32> = (0..600)
            .map(|i| ((i * 53 % 97) as f32 - 48.0) / 3.0)
            .collect();
        let (g, u) = (t(&g, &[2, 300]), t(&u, &[2, 300]));
        for act in ACTS {
            let got = gated(act, &g, &u).unwrap();
            let want = binary(BinaryOp::Mul, &unary(act, &g).unwrap(), &u).unwrap();
            let bits = |x: &Tensor<f32>| x.data().iter().map(|v| v.to_bits()).collect::<Vec<_>>();
            assert_eq!(bits(&got), bits(&want), "{act:?}");
            assert_eq!(got.shape(), &[2, 300]);
        }
    }

    #[test]
    fn errors_name_the_input_or_the_first_bad_product() {
        let ok = t(&[1.0; 6], &[2, 3]);
        let err = |act, g: &Tensor<f32>, u: &Tensor<f32>| gated(act, g, u).unwrap_err();
        let nonfinite = |tensor, index| Error::NonFinite {
            op: "gated",
            tensor,
            index,
        };
        let nan_at = |i: usize| {
            let mut v = [1.0f32; 6];
            v[i] = f32::NAN;
            t(&v, &[2, 3])
        };
        assert_eq!(err(UnaryOp::Silu, &nan_at(4), &ok), nonfinite("gate", 4));
        assert_eq!(err(UnaryOp::Silu, &ok, &nan_at(2)), nonfinite("up", 2));
        // Gate before up, whatever their indices.
        assert_eq!(
            err(UnaryOp::Relu, &nan_at(5), &nan_at(0)),
            nonfinite("gate", 5)
        );
        // ReLU² of 1e20 overflows: an output error even where up is 0 (inf · 0 = NaN).
        let big = t(&[1.0, 1.0, 1.0, 1.0, 1e20, 1.0], &[2, 3]);
        let zeros = t(&[0.0; 6], &[2, 3]);
        assert_eq!(err(UnaryOp::Relu2, &big, &zeros), nonfinite("output", 4));
        assert_eq!(
            err(UnaryOp::Exp, &t(&[89.0; 6], &[2, 3]), &ok),
            nonfinite("output", 0)
        );
        // A finite activation times a large up overflows.
        let huge = t(&[1.0, 1.0, 3e38, 1.0, 1.0, 1.0], &[2, 3]);
        let two = t(&[2.0; 6], &[2, 3]);
        assert_eq!(err(UnaryOp::Relu, &two, &huge), nonfinite("output", 2));
        assert!(matches!(
            err(UnaryOp::Relu, &ok, &t(&[1.0; 6], &[3, 2])),
            Error::ShapeMismatch { .. }
        ));
    }
}
