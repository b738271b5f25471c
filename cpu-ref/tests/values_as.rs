//! The `_values_as` twins of the float ops (what an engine with tensors of its own calls): the
//! same values as the tensor ops, bit for bit, on both sides of the size where the work moves to
//! rayon, and every error the tensor op returns, converted to the caller's type through `From`.

use bitnet_cpu_ref::ops::{
    BinaryOp, UnaryOp, binary, binary_values_as, rms_norm, rms_norm_values_as, unary,
    unary_values_as,
};
use bitnet_cpu_ref::{Error, Tensor};
use common::rnd;

mod common;

/// A caller's own error type, wrapping cpu-ref's.
#[derive(Debug, PartialEq)]
struct Wrapped(Error);

impl From<Error> for Wrapped {
    fn from(e: Error) -> Self {
        Wrapped(e)
    }
}

fn bits(v: &[f32]) -> Vec<u32> {
    v.iter().map(|x| x.to_bits()).collect()
}

/// The tensor op's values (or its error, wrapped), for comparison with a `_values_as` result.
fn plain(r: Result<Tensor<f32>, Error>) -> Result<Vec<u32>, Wrapped> {
    r.map(|t| bits(t.data())).map_err(Wrapped)
}

/// Row counts of 256-value rows on both sides of the serial / rayon boundaries (4096 values
/// for the maps, 2^20 for RMSNorm).
const ROWS: [usize; 4] = [1, 3, 17, 4097];

#[test]
fn unary_values_match_the_tensor_op() {
    for rows in ROWS {
        let x = rnd(rows * 256, 3, 2.0);
        let t = Tensor::new(x.clone(), &[rows, 256]).unwrap();
        for op in [UnaryOp::Relu, UnaryOp::Silu, UnaryOp::Gelu] {
            let got = unary_values_as::<Wrapped>(op, &x).map(|v| bits(&v));
            assert_eq!(got, plain(unary(op, &t)), "{op:?}, {rows} rows");
        }
    }
}

#[test]
fn unary_values_wrap_the_tensor_ops_errors() {
    let mut x = rnd(300, 4, 2.0);
    x[123] = f32::INFINITY;
    let t = Tensor::new(x.clone(), &[300]).unwrap();
    let e = unary_values_as::<Wrapped>(UnaryOp::Relu, &x).unwrap_err();
    assert_eq!(Err(e), plain(unary(UnaryOp::Relu, &t)));
    // A finite input whose output overflows.
    let big = vec![100.0f32; 8];
    let t = Tensor::new(big.clone(), &[8]).unwrap();
    let e = unary_values_as::<Wrapped>(UnaryOp::Exp, &big).unwrap_err();
    assert_eq!(Err(e), plain(unary(UnaryOp::Exp, &t)));
}

#[test]
fn binary_values_match_the_tensor_op() {
    for rows in ROWS {
        let (a, b) = (rnd(rows * 256, 5, 2.0), rnd(rows * 256, 6, 2.0));
        let ta = Tensor::new(a.clone(), &[rows, 256]).unwrap();
        let tb = Tensor::new(b.clone(), &[rows, 256]).unwrap();
        for op in [BinaryOp::Add, BinaryOp::Mul, BinaryOp::Sub] {
            let got = binary_values_as::<Wrapped>(op, &a, &b).map(|v| bits(&v));
            assert_eq!(got, plain(binary(op, &ta, &tb)), "{op:?}, {rows} rows");
        }
    }
}

#[test]
fn binary_values_wrap_errors_and_reject_unequal_lengths() {
    let (mut a, b) = (rnd(64, 7, 2.0), rnd(64, 8, 2.0));
    a[9] = f32::NAN;
    let (ta, tb) = (
        Tensor::new(a.clone(), &[64]).unwrap(),
        Tensor::new(b.clone(), &[64]).unwrap(),
    );
    let e = binary_values_as::<Wrapped>(BinaryOp::Add, &a, &b).unwrap_err();
    assert_eq!(Err(e), plain(binary(BinaryOp::Add, &ta, &tb)));
    // Division by zero: a non-finite output.
    let zeros = vec![0.0f32; 64];
    let tz = Tensor::new(zeros.clone(), &[64]).unwrap();
    let e = binary_values_as::<Wrapped>(BinaryOp::Div, &b, &zeros).unwrap_err();
    assert_eq!(Err(e), plain(binary(BinaryOp::Div, &tb, &tz)));
    let e = binary_values_as::<Wrapped>(BinaryOp::Add, &b, &b[..63]).unwrap_err();
    assert!(
        matches!(e.0, Error::ShapeMismatch { op: "binary", .. }),
        "{e:?}"
    );
}

#[test]
fn rms_norm_values_match_the_tensor_op() {
    let w = rnd(256, 9, 2.0);
    for rows in ROWS {
        let x = rnd(rows * 256, 10, 2.0);
        let t = Tensor::new(x.clone(), &[rows, 256]).unwrap();
        for eps in [0.0, 1e-5] {
            let got = rms_norm_values_as::<Wrapped>(&x, 256, &w, eps).map(|v| bits(&v));
            assert_eq!(got, plain(rms_norm(&t, &w, eps)), "{rows} rows, eps {eps}");
        }
    }
}

#[test]
fn rms_norm_values_wrap_the_tensor_ops_errors() {
    let w = rnd(16, 11, 2.0);
    let x = rnd(4 * 16, 12, 2.0);
    let t = Tensor::new(x.clone(), &[4, 16]).unwrap();
    // Weight length, negative and non-finite eps.
    let cases: [(&[f32], f32); 3] = [(&w[..15], 1e-5), (&w, -1.0), (&w, f32::NAN)];
    for (w, eps) in cases {
        let e = rms_norm_values_as::<Wrapped>(&x, 16, w, eps).unwrap_err();
        assert_eq!(Err(e), plain(rms_norm(&t, w, eps)), "eps {eps}");
    }
    // A row whose sum of squares overflows (row 2, on the serial and the rayon side), and an
    // all-zero row with eps 0 (a non-finite output).
    for rows in [4, (1 << 20) / 16 + 1] {
        let mut big = rnd(rows * 16, 13, 2.0);
        big[2 * 16..3 * 16].fill(3e19);
        let t = Tensor::new(big.clone(), &[rows, 16]).unwrap();
        let e = rms_norm_values_as::<Wrapped>(&big, 16, &w, 1e-5).unwrap_err();
        assert!(matches!(e.0, Error::NonFinite { index: 2, .. }), "{e:?}");
        assert_eq!(Err(e), plain(rms_norm(&t, &w, 1e-5)));
    }
    let zero = vec![0.0f32; 32];
    let t = Tensor::new(zero.clone(), &[2, 16]).unwrap();
    let e = rms_norm_values_as::<Wrapped>(&zero, 16, &w, 0.0).unwrap_err();
    assert_eq!(Err(e), plain(rms_norm(&t, &w, 0.0)));
    // Rows that do not divide the values.
    for len in [0, 5] {
        let e = rms_norm_values_as::<Wrapped>(&x, len, &w, 1e-5).unwrap_err();
        assert!(
            matches!(e.0, Error::ShapeMismatch { op: "rms_norm", .. }),
            "{e:?}"
        );
    }
}
