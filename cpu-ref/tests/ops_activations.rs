//! Activations, reductions, normalizations and RoPE: hand-computed values and error paths.

use bitnet_cpu_ref::Error::*;
use bitnet_cpu_ref::Tensor;
use bitnet_cpu_ref::ops::*;

fn t(data: &[f32], shape: &[usize]) -> Tensor<f32> {
    Tensor::new(data.to_vec(), shape).unwrap()
}

fn close(got: &[f32], want: &[f64], tol: f64) {
    assert_eq!(got.len(), want.len());
    for (i, (&g, &w)) in got.iter().zip(want).enumerate() {
        assert!((f64::from(g) - w).abs() <= tol, "[{i}]: {g} vs {w}");
    }
}

/// erf in f64 to ~1e-15: Taylor series below 3, the asymptotic erfc expansion above.
fn erf64(x: f64) -> f64 {
    let z = x.abs();
    let y = if z < 3.0 {
        let (mut term, mut sum, mut n) = (z, z, 0.0);
        while term.abs() > 1e-17 * sum.abs() {
            n += 1.0;
            term *= -z * z / n;
            sum += term / (2.0 * n + 1.0);
        }
        sum * 2.0 / std::f64::consts::PI.sqrt()
    } else {
        let (mut term, mut series) = (1.0, 1.0);
        for n in 1..12 {
            term *= -(2.0 * n as f64 - 1.0) / (2.0 * z * z);
            series += term;
        }
        1.0 - (-z * z).exp() / (z * std::f64::consts::PI.sqrt()) * series
    };
    y.copysign(x)
}

#[test]
fn erf_within_1e_7() {
    let mut worst = 0.0f64;
    for i in -60_000..=60_000 {
        let x = i as f32 * 1e-4; // -6 .. 6
        worst = worst.max((f64::from(erf(x)) - erf64(f64::from(x))).abs());
    }
    assert!(worst <= 1e-7, "max |erf error| = {worst}");
}

#[test]
fn unary_hand_computed() {
    let x = t(&[-1.0, 0.0, 2.0, 3.0], &[2, 2]);
    assert_eq!(
        unary(UnaryOp::Relu, &x).unwrap().data(),
        &[0.0, 0.0, 2.0, 3.0]
    );
    assert_eq!(
        unary(UnaryOp::Relu2, &x).unwrap().data(),
        &[0.0, 0.0, 4.0, 9.0]
    );
    assert_eq!(unary(UnaryOp::Relu, &x).unwrap().shape(), &[2, 2]);
    // exp: e^-1 = 0.36787944117, e^0 = 1, e^2 = 7.38905609893, e^3 = 20.0855369232.
    let e = unary(UnaryOp::Exp, &x).unwrap();
    close(
        e.data(),
        &[0.367_879_441_17, 1.0, 7.389_056_098_93, 20.085_536_923_2],
        4e-6,
    );
    // silu(x) = x / (1 + e^-x): -1 / (1 + e) = -0.26894142137, 0, 2 / (1 + e^-2) = 1.76159415596,
    // 3 / (1 + e^-3) = 2.85772238047.
    let s = unary(UnaryOp::Silu, &x).unwrap();
    close(
        s.data(),
        &[-0.268_941_421_37, 0.0, 1.761_594_155_96, 2.857_722_380_47],
        3e-7,
    );
    // gelu(x) = x · Φ(x): Φ(-1) = 0.15865525393 → -0.15865525393, 0, 2 · 0.97724986805 =
    // 1.9544997361, 3 · 0.99865010197 = 2.99595030592.
    let g = unary(UnaryOp::Gelu, &x).unwrap();
    close(
        g.data(),
        &[-0.158_655_253_93, 0.0, 1.954_499_736_1, 2.995_950_305_92],
        1e-6,
    );
    // Large negative inputs stay finite: silu(-100) ≈ -3.7e-42 (tiny, not NaN), gelu(-10) = -0.
    let s = unary(UnaryOp::Silu, &t(&[-100.0, -10.0], &[2])).unwrap();
    assert!(s.data().iter().all(|v| v.is_finite() && v.abs() < 1e-3));
    assert_eq!(
        unary(UnaryOp::Gelu, &t(&[-10.0], &[1])).unwrap().data()[0],
        0.0
    );
}

#[test]
fn unary_errors() {
    // e^100 overflows f32 (max ~e^88.72): output error at index 1.
    let e = unary(UnaryOp::Exp, &t(&[0.0, 100.0], &[2])).unwrap_err();
    assert_eq!(
        e,
        NonFinite {
            op: "unary",
            tensor: "output",
            index: 1
        }
    );
    // (1e20)² = 1e40 > f32::MAX.
    let e = unary(UnaryOp::Relu2, &t(&[1e20], &[1])).unwrap_err();
    assert_eq!(
        e,
        NonFinite {
            op: "unary",
            tensor: "output",
            index: 0
        }
    );
    let e = unary(UnaryOp::Relu, &t(&[1.0, f32::NAN], &[2])).unwrap_err();
    assert_eq!(
        e,
        NonFinite {
            op: "unary",
            tensor: "a",
            index: 1
        }
    );
}

#[test]
fn reductions_over_last_axis() {
    let a = t(&[1.0, -5.0, 3.0, 2.0, 2.0, 2.0], &[2, 3]);
    let r = |op| reduce_last(op, &a).unwrap();
    // Sums: 1 - 5 + 3 = -1, 2 + 2 + 2 = 6; means -1/3, 2; max 3, 2; absmax 5, 2.
    assert_eq!(
        (r(ReduceOp::Sum).shape(), r(ReduceOp::Sum).data()),
        (&[2usize][..], &[-1.0, 6.0][..])
    );
    assert_eq!(r(ReduceOp::Mean).data(), &[-1.0 / 3.0, 2.0]);
    assert_eq!(r(ReduceOp::Max).data(), &[3.0, 2.0]);
    assert_eq!(r(ReduceOp::AbsMax).data(), &[5.0, 2.0]);
    // Rank 1 → rank 0; rank 3 [2, 1, 2] → [2, 1].
    let s = reduce_last(ReduceOp::Sum, &t(&[1.0, 2.0, 3.0], &[3])).unwrap();
    assert_eq!((s.shape(), s.data()), (&[][..], &[6.0][..]));
    let s = reduce_last(ReduceOp::Max, &t(&[-1.0, -2.0, -4.0, -3.0], &[2, 1, 2])).unwrap();
    assert_eq!((s.shape(), s.data()), (&[2usize, 1][..], &[-1.0, -3.0][..]));
    // Lane order over a long row: 1000 ones sum to exactly 1000.
    let s = reduce_last(ReduceOp::Mean, &t(&[1.0; 1000], &[1000])).unwrap();
    assert_eq!(s.data(), &[1.0]);
    let e = reduce_last(ReduceOp::Sum, &t(&[3e38, 3e38], &[2])).unwrap_err();
    assert_eq!(
        e,
        NonFinite {
            op: "reduce_last",
            tensor: "output",
            index: 0
        }
    );
    let e = reduce_last(ReduceOp::Max, &t(&[0.0, f32::NAN], &[2])).unwrap_err();
    assert_eq!(
        e,
        NonFinite {
            op: "reduce_last",
            tensor: "a",
            index: 1
        }
    );
}

/// `Max` orders -0 below +0 (IEEE 754-2019 `maximum`): Rust's `f32::max` leaves the sign of
/// a zero result unspecified (x86's `maxss` returns its second operand when the two compare
/// equal), so a row holding both zeros gave whichever came last.
#[test]
fn max_orders_negative_zero_below_positive_zero() {
    let bits = |v: &[f32]| {
        let y = reduce_last(ReduceOp::Max, &t(v, &[v.len()])).unwrap();
        y.data()[0].to_bits()
    };
    assert_eq!(bits(&[0.0, -0.0]), 0);
    assert_eq!(bits(&[-0.0, 0.0]), 0);
    assert_eq!(bits(&[-1.0, 0.0, -0.0, -2.0]), 0);
    assert_eq!(bits(&[-0.0, -0.0]), 0x8000_0000);
    assert_eq!(bits(&[-3.0, -0.0, -1.0]), 0x8000_0000);
    assert_eq!(bits(&[-0.0]), 0x8000_0000);
}

#[test]
fn rms_norm_hand_computed() {
    // x = [3, 4], w = [1, 2], eps = 0: Σx² = 25, 25 / 2 = 12.5, 1 / √12.5 = 0.28284271247:
    // y = [3 · 0.28284271247 · 1, 4 · 0.28284271247 · 2] = [0.84852813742, 2.26274169980].
    let y = rms_norm(&t(&[3.0, 4.0, 0.0, 0.0], &[2, 2]), &[1.0, 2.0], 0.0);
    assert!(matches!(
        y,
        Err(NonFinite {
            op: "rms_norm",
            tensor: "output",
            index: 2
        })
    ));
    let y = rms_norm(&t(&[3.0, 4.0], &[1, 2]), &[1.0, 2.0], 0.0).unwrap();
    close(y.data(), &[0.848_528_137_42, 2.262_741_699_80], 3e-7);
    // An all-zero row with eps = 1e-5 gives zeros: inv = 1 / √1e-5, 0 · inv = 0.
    let y = rms_norm(&t(&[0.0, 0.0], &[2]), &[1.0, 1.0], 1e-5).unwrap();
    assert_eq!(y.data(), &[0.0, 0.0]);
    let x = t(&[1.0, 2.0], &[1, 2]);
    assert!(matches!(
        rms_norm(&x, &[1.0], 1e-5),
        Err(LengthMismatch {
            expected: 2,
            got: 1,
            ..
        })
    ));
    assert!(matches!(
        rms_norm(&x, &[1.0, 1.0], -1.0),
        Err(InvalidArgument { what: "eps", .. })
    ));
    let e = rms_norm(&x, &[1.0, f32::NAN], 1e-5).unwrap_err();
    assert_eq!(
        e,
        NonFinite {
            op: "rms_norm",
            tensor: "weight",
            index: 1
        }
    );
    // (1e20)² overflows the sum of squares of row 1.
    let e = rms_norm(&t(&[1.0, 1.0, 1e20, 0.0], &[2, 2]), &[1.0, 1.0], 1e-5).unwrap_err();
    assert!(
        matches!(
            e,
            NonFinite {
                op: "rms_norm",
                index: 1,
                ..
            }
        ),
        "{e}"
    );
}

#[test]
fn softmax_hand_computed() {
    // [1, 2, 3]: m = 3, e = [e^-2, e^-1, 1] = [0.13533528, 0.36787944, 1], Σ = 1.50321472:
    // y = [0.09003057, 0.24472847, 0.66524096].
    let y = softmax_last(&t(&[1.0, 2.0, 3.0, 1000.0, 1000.0, -1000.0], &[2, 3])).unwrap();
    // Row 2 is max-subtracted: e = [1, 1, e^-2000 = 0] → [0.5, 0.5, 0].
    close(
        y.data(),
        &[
            0.090_030_573_17,
            0.244_728_471_05,
            0.665_240_955_77,
            0.5,
            0.5,
            0.0,
        ],
        2e-7,
    );
    let e = softmax_last(&t(&[f32::INFINITY], &[1])).unwrap_err();
    assert_eq!(
        e,
        NonFinite {
            op: "softmax_last",
            tensor: "x",
            index: 0
        }
    );
}

#[test]
fn rope_hand_computed() {
    // D = 4, theta = 10000: freq = [10000^0, 10000^(-2/4)] = [1, 0.01].
    assert_eq!(rope_freqs(4, 10000.0).unwrap(), vec![1.0, 0.01]);
    // S = 2 (positions 0, 1), H = 1, x = [1, 2, 3, 4] at both positions.
    let x = t(&[1.0, 2.0, 3.0, 4.0, 1.0, 2.0, 3.0, 4.0], &[2, 1, 4]);
    let y = rope(&x, &[0, 1], 10000.0).unwrap();
    // Position 0: angle 0, identity. Position 1: pairs (x0, x2) = (1, 3) at angle 1 and
    // (x1, x3) = (2, 4) at angle 0.01:
    // y0 = 1·cos1 − 3·sin1, y2 = 3·cos1 + 1·sin1, y1 = 2·cos.01 − 4·sin.01, y3 = 4·cos.01 + 2·sin.01.
    let (c1, s1, c2, s2) = (1f64.cos(), 1f64.sin(), 0.01f64.cos(), 0.01f64.sin());
    let want = [
        1.0,
        2.0,
        3.0,
        4.0,
        c1 - 3.0 * s1,
        2.0 * c2 - 4.0 * s2,
        3.0 * c1 + s1,
        4.0 * c2 + 2.0 * s2,
    ];
    close(y.data(), &want, 1e-6);
    assert!(matches!(
        rope(&t(&[1.0; 4], &[1, 4]), &[0], 1e4),
        Err(RankMismatch { op: "rope", tensor: "x", expected: 3, got }) if got == [1, 4]
    ));
    assert!(matches!(
        rope(&t(&[1.0; 3], &[1, 1, 3]), &[0], 1e4),
        Err(InvalidArgument { what: "D", .. })
    ));
    assert!(matches!(
        rope(&x, &[0], 1e4),
        Err(LengthMismatch {
            expected: 2,
            got: 1,
            ..
        })
    ));
    assert!(matches!(
        rope(&x, &[0, 1], 0.0),
        Err(InvalidArgument { what: "theta", .. })
    ));
    assert!(matches!(
        rope(&x, &[0, 1], f32::NAN),
        Err(NonFinite {
            tensor: "theta",
            ..
        })
    ));
}
