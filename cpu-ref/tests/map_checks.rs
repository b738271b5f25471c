//! The elementwise ops check their values in the same pass as the map (`ops/elementwise.rs`):
//! the errors must be those of checking every input before the map and the output after it —
//! the first non-finite value of the first bad input in argument order, else the first
//! non-finite output — on the calling thread alone and split into tasks alike.

use bitnet_cpu_ref::Error::{self, NonFinite};
use bitnet_cpu_ref::Tensor;
use bitnet_cpu_ref::ops::{BinaryOp, UnaryOp, binary, binary_scalar, gated, unary};

/// Sizes below and above every map's split threshold (64K values for plain arithmetic, 4K for
/// exp and erf), each with a remainder past its last whole task.
const SIZES: [usize; 3] = [300, 5_000, 70_001];

fn tensor(len: usize, bad: &[(usize, f32)]) -> Tensor<f32> {
    let mut v: Vec<f32> = (0..len).map(|i| 0.5 + (i % 7) as f32 * 0.25).collect();
    for &(i, x) in bad {
        v[i] = x;
    }
    Tensor::new(v, &[len]).unwrap()
}

fn nonfinite(op: &'static str, tensor: &'static str, index: usize) -> Error {
    NonFinite { op, tensor, index }
}

#[test]
fn unary_reports_the_first_bad_input_then_the_first_bad_output() {
    for len in SIZES {
        let late = len - 1;
        // NaN maps to 0 under ReLU: only the input check can see it.
        let a = tensor(len, &[(late, f32::NAN), (len / 2, f32::NEG_INFINITY)]);
        assert_eq!(
            unary(UnaryOp::Relu, &a).unwrap_err(),
            nonfinite("unary", "a", len / 2)
        );
        // exp(89) overflows; the first overflow is reported.
        let big = tensor(len, &[(late, 89.0), (len / 3, 100.0)]);
        assert_eq!(
            unary(UnaryOp::Exp, &big).unwrap_err(),
            nonfinite("unary", "output", len / 3)
        );
        assert_eq!(
            unary(UnaryOp::Silu, &tensor(len, &[(late, f32::INFINITY)])).unwrap_err(),
            nonfinite("unary", "a", late)
        );
        assert!(unary(UnaryOp::Gelu, &tensor(len, &[])).is_ok());
    }
}

#[test]
fn binary_and_gated_report_a_before_b_whatever_their_indices() {
    for len in SIZES {
        let late = len - 1;
        let a = tensor(len, &[(late, f32::NAN)]);
        let b = tensor(len, &[(0, f32::NAN)]);
        assert_eq!(
            binary(BinaryOp::Add, &a, &b).unwrap_err(),
            nonfinite("binary", "a", late)
        );
        assert_eq!(
            binary(BinaryOp::Mul, &tensor(len, &[]), &b).unwrap_err(),
            nonfinite("binary", "b", 0)
        );
        // x / inf is 0: only the input check sees an infinite divisor.
        assert_eq!(
            binary(
                BinaryOp::Div,
                &tensor(len, &[]),
                &tensor(len, &[(late, f32::INFINITY)])
            )
            .unwrap_err(),
            nonfinite("binary", "b", late)
        );
        // Division by zero: an output error at the first zero divisor.
        let zeros = tensor(len, &[(late, 0.0), (len / 4, 0.0)]);
        assert_eq!(
            binary(BinaryOp::Div, &tensor(len, &[]), &zeros).unwrap_err(),
            nonfinite("binary", "output", len / 4)
        );
        assert_eq!(
            gated(UnaryOp::Relu2, &a, &b).unwrap_err(),
            nonfinite("gated", "gate", late)
        );
        let huge = tensor(len, &[(len / 5, 1e20)]);
        assert_eq!(
            gated(UnaryOp::Relu2, &huge, &tensor(len, &[])).unwrap_err(),
            nonfinite("gated", "output", len / 5)
        );
    }
}

#[test]
fn binary_scalar_reports_a_before_the_scalar_then_the_output() {
    for len in SIZES {
        let late = len - 1;
        let a = tensor(len, &[(late, f32::INFINITY)]);
        assert_eq!(
            binary_scalar(BinaryOp::Sub, &a, f32::NAN).unwrap_err(),
            nonfinite("binary_scalar", "a", late)
        );
        assert_eq!(
            binary_scalar(BinaryOp::Sub, &tensor(len, &[]), f32::NAN).unwrap_err(),
            nonfinite("binary_scalar", "s", 0)
        );
        assert_eq!(
            binary_scalar(BinaryOp::Mul, &tensor(len, &[(len / 6, 3e38)]), 10.0).unwrap_err(),
            nonfinite("binary_scalar", "output", len / 6)
        );
        let ok = binary_scalar(BinaryOp::Mul, &tensor(len, &[]), 2.0).unwrap();
        assert_eq!(ok.data()[late], tensor(len, &[]).data()[late] * 2.0);
    }
}
