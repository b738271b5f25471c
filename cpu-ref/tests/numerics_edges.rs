//! Hand-computed edge cases of the BitNet b1.58 arithmetic (`layout.rs`), every expected value
//! worked out independently in f64 (products of two f32 are exact in f64, then rounded once):
//! ties after scaling, `w · (1 / s)` versus `w / s`, the 1e-5 floors, -0.0, subnormals, values
//! near `f32::MAX`, K = 1 and the largest K, the f32 rounding of the weight count N·K, the
//! association of the rescale, and the first index of a non-finite value. Every SIMD level must
//! give the same bits.

use bitnet_cpu_ref::{
    Error, Isa, QuantizedActivations, TernaryMatrix, bitlinear_accumulate_with_isa,
    bitlinear_quantized_with_isa, layout::INV_127, quantize_activations_with_isa,
    quantize_weights_with_isa,
};

fn qw(w: &[f32], n: usize, k: usize) -> Result<TernaryMatrix, Error> {
    let r = quantize_weights_with_isa(w, n, k, Isa::Scalar);
    for isa in Isa::available() {
        assert_eq!(quantize_weights_with_isa(w, n, k, isa), r, "{isa:?}");
    }
    r
}

fn qa(x: &[f32], m: usize, k: usize) -> Result<QuantizedActivations, Error> {
    let r = quantize_activations_with_isa(x, m, k, Isa::Scalar);
    for isa in Isa::available() {
        assert_eq!(quantize_activations_with_isa(x, m, k, isa), r, "{isa:?}");
    }
    r
}

fn bl(xq: &QuantizedActivations, w: &TernaryMatrix) -> Result<Vec<u32>, Error> {
    let r = bitlinear_quantized_with_isa(xq, w, Isa::Scalar);
    for isa in Isa::available() {
        assert_eq!(bitlinear_quantized_with_isa(xq, w, isa), r, "{isa:?}");
    }
    r.map(|y| y.iter().map(|v| v.to_bits()).collect())
}

#[test]
fn inv_127_is_one_over_127_rounded_once() {
    // 1/127 = 2^-7 · 1.00787401..., mantissa 0.00787401 · 2^23 = 66052.03 → 0x10204.
    assert_eq!(INV_127.to_bits(), 0x3c01_0204);
}

/// `w · (1 / s)` (the BitNet reference code) and `w / s` differ: here `w / s` is just above the
/// 0.5 tie (rounds to 1) while `w · fl(1 / s)` is exactly 0.5 (rounds to even, 0).
#[test]
fn weights_use_the_reciprocal_not_a_division() {
    // s = 0.09765625 = 25 / 256, fl(1 / s) = 10.239999771118164.
    // w0 = nextup(s / 2) = 0x3d480001, w0 / s = 0.50000004, w0 · fl(1/s) = 0.5 exactly → 0.
    // w2 = -nextdown(s / 2) = -0x3d47ffff, · fl(1/s) = -0.49999994 → 0.
    // ±1.5 s = ±0.146484375, · fl(1/s) = ±1.5 exactly → ±2 (even) → clamped to ±1.
    // Canonical sum: lanes (w0 + |w2|) = s exactly, (1.5 s + 1.5 s) = 3 s, then 4 s; / 4 = s.
    let w0 = f32::from_bits(0x3d48_0001);
    let w2 = -f32::from_bits(0x3d47_ffff);
    let h = 1.5 * 0.097_656_25f32; // 0.146484375, exact
    let w = [w0, h, w2, -h];
    let q = qw(&w, 1, 4).unwrap();
    assert_eq!(q.scale(), 0.097_656_25);
    assert_eq!(q.to_i8(), vec![0, 1, 0, -1]);
    // The division would have given 1 for w0.
    assert_eq!((w0 / 0.097_656_25).round_ties_even(), 1.0);
}

/// Activations: `x · (127 / a)` (one rounded quotient) and `(x · 127) / a` differ.
#[test]
fn activations_use_the_rounded_quotient() {
    // a = 1.0009765625 (0x3f802000), inv = fl(127 / a) = 126.8760986328125.
    // x = 0x3b812245 = 0.0039408528: x · inv = 0.50000006 → 1; (x · 127) / a = 0.5 → 0.
    let x = [1.000_976_6, f32::from_bits(0x3b81_2245)];
    assert_eq!(x[0].to_bits(), 0x3f80_2000);
    let q = qa(&x, 1, 2).unwrap();
    assert_eq!(q.values(), &[127, 1]);
}

#[test]
fn activation_ties_with_absmax_one() {
    // a = 1, inv = 127 exactly; x_k = fl((k + 0.5) / 127) gives x_k · 127 = k + 0.5 exactly for
    // these k: 0.5 → 0, 1.5 → 2, 2.5 → 2, 3.5 → 4, 4.5 → 4, 5.5 → 6, and the negatives mirror.
    let bits = [
        0x3b81_0204u32,
        0x3c41_8306,
        0x3ca1_4285,
        0x3ce1_c387,
        0x3d11_2245,
        0x3d31_62c6,
    ];
    let mut x = vec![1.0f32];
    x.extend(bits.iter().map(|&b| f32::from_bits(b)));
    x.extend(bits.iter().map(|&b| -f32::from_bits(b)));
    let q = qa(&x, 1, x.len()).unwrap();
    assert_eq!(q.values(), &[127, 0, 2, 2, 4, 4, 6, 0, -2, -2, -4, -4, -6]);
}

#[test]
fn floors_negative_zero_and_subnormals() {
    let tiny = f32::from_bits(1); // 1.4e-45, the smallest subnormal
    // Weights of -0.0 and subnormals: Σ|w| is subnormal, s = 1e-5 (the floor), codes 0.
    let q = qw(&[-0.0, tiny, -tiny, f32::MIN_POSITIVE / 2.0], 2, 2).unwrap();
    assert_eq!((q.scale(), q.to_i8()), (1e-5, vec![0; 4]));
    // Activations: a = 1e-5, inv = 1.27e7; subnormal · 1.27e7 ≤ 1.5e-31 → 0; -0.0 → 0.
    let q = qa(&[-0.0, tiny, -f32::MIN_POSITIVE, 0.0], 2, 2).unwrap();
    assert_eq!(q.values(), &[0; 4]);
    assert_eq!(q.absmax(), &[1e-5, 1e-5]);
    // At the floor exactly: x = 1e-5 → 1e-5 · fl(127 / 1e-5) = 127 after rounding.
    let q = qa(&[1e-5, -5e-6], 1, 2).unwrap();
    assert_eq!(
        (q.values(), q.absmax()),
        (&[127i8, -64][..], &[1e-5f32][..])
    );
    // An all-zero BitLinear row is +0.0, not -0.0 (0 as f32 times a positive scale).
    let w = TernaryMatrix::from_i8(&[-1, 1], 1, 2, 0.5).unwrap();
    let xq = qa(&[-0.0, -0.0], 1, 2).unwrap();
    assert_eq!(bl(&xq, &w).unwrap(), vec![0u32]);
}

#[test]
fn values_near_f32_max() {
    let max = f32::MAX;
    // One weight: s = MAX, fl(1 / MAX) = 2^-128 (subnormal), MAX · 2^-128 = 1 - 2^-24 → 1.
    let q = qw(&[-max], 1, 1).unwrap();
    assert_eq!((q.scale(), q.to_i8()), (max, vec![-1]));
    // [MAX, 0]: s = MAX / 2, codes [1, 0].
    let q = qw(&[max, 0.0], 1, 2).unwrap();
    assert_eq!((q.scale(), q.to_i8()), (max / 2.0, vec![1, 0]));
    // [MAX, MAX]: the mean fits but Σ|w| overflows f32: reported, not a NaN.
    assert_eq!(
        qw(&[max, max], 1, 2).unwrap_err(),
        Error::NonFinite {
            op: "quantize_weights",
            tensor: "sum of |w| (overflows f32)",
            index: 0
        }
    );
    // Activations with a = MAX: inv = fl(127 / MAX) = 0x02fe0001 (normal).
    // MAX → 127, -MAX → -127, MAX / 2 → 63.5 exactly → 64, 1.0 → 3.7e-37 → 0,
    // 0.996 MAX (0x7f7f0a3d) → 126.492 → 126.
    let x = [max, -max, max / 2.0, 1.0, max * 0.996];
    let q = qa(&x, 1, 5).unwrap();
    assert_eq!(q.values(), &[127, -127, 64, 0, 126]);
    // BitLinear where s · a passes f32::MAX: documented as an overflowed output.
    let w = TernaryMatrix::from_i8(&[1, 0], 2, 1, 1e20).unwrap();
    let xq = QuantizedActivations::from_parts(vec![1], vec![1e20], 1, 1).unwrap();
    assert_eq!(
        bl(&xq, &w).unwrap_err(),
        Error::NonFinite {
            op: "bitlinear",
            tensor: "output (rescale overflowed f32)",
            index: 0
        }
    );
}

#[test]
fn k_equals_one() {
    // w = [-3]: s = 3, code -1. x = [0.7]: a = 0.7, x · fl(127 / 0.7) = 127 → xq 127.
    // acc = -127, y = -127 · ((3 · 0.7) · INV_127) = -2.0999999 (0xc0066666).
    let w = qw(&[-3.0], 1, 1).unwrap();
    let xq = qa(&[0.7], 1, 1).unwrap();
    assert_eq!((w.to_i8(), xq.values()), (vec![-1], &[127i8][..]));
    assert_eq!(bl(&xq, &w).unwrap(), vec![0xc006_6666]);
}

/// `count = (N·K) as f32` is rounded: N·K = 3 · 5592407 = 16777221 is a tie between 16777220
/// (even) and 16777222, so count = 16777220 and one weight 16777220 gives s = 1 exactly; the
/// exact mean 16777220 / 16777221 would round to 1 - 2^-24.
#[test]
fn weight_count_is_rounded_to_f32() {
    let (n, k) = (3, 5_592_407);
    let mut w = vec![0.0f32; n * k];
    w[k + 1] = -16_777_220.0;
    let q = qw(&w, n, k).unwrap();
    assert_eq!(q.scale(), 1.0);
    assert_eq!(
        (16_777_220.0f64 / 16_777_221.0) as f32,
        1.0 - f32::EPSILON / 2.0
    );
    let codes = q.to_i8();
    assert_eq!(
        (codes[k + 1], codes.iter().filter(|&&c| c != 0).count()),
        (-1, 1)
    );
}

/// `y = acc · ((s · a) · INV_127)`: the three natural associations give three different results
/// here; the documented one (and WGSL's `bitlinear_scale`) is the first.
#[test]
fn rescale_association() {
    // s = 0x3ce7faca, a = 0x410d0434, acc = 12 · (-121) = -1452:
    // acc · ((s · a) · INV_127) = 0xc0369f2c; ((acc · s) · a) / 127 = 0xc0369f2a;
    // acc · (s · (a · INV_127)) = 0xc0369f2b.
    let s = f32::from_bits(0x3ce7_faca);
    let a = f32::from_bits(0x410d_0434);
    let w = TernaryMatrix::from_i8(&[1; 12], 1, 12, s).unwrap();
    let xq = QuantizedActivations::from_parts(vec![-121; 12], vec![a], 1, 12).unwrap();
    assert_eq!(bl(&xq, &w).unwrap(), vec![0xc036_9f2c]);
}

/// The largest K (2^24 - 1): |acc| = 128 · K = 2^31 - 128 still fits i32, on every level and
/// through the 2x2, 2x1 and single-row kernels; K = 2^24 is rejected by every constructor.
#[test]
fn largest_k_accumulates_exactly() {
    let k = (1usize << 24) - 1;
    let mut x = vec![-128i8; k];
    x.extend(vec![127i8; k]);
    x.extend(vec![-128i8; k]);
    let xq = QuantizedActivations::from_parts(x, vec![1.0; 3], 3, k).unwrap();
    let mut wv = vec![1i8; k];
    wv.extend(vec![-1i8; k]);
    wv.extend(vec![-1i8; k]);
    let w = TernaryMatrix::from_i8(&wv, 3, k, 1.0).unwrap();
    let (p, q) = (128 * k as i64, 127 * k as i64);
    assert_eq!(p, (1i64 << 31) - 128);
    let want: Vec<i32> = [-p, p, p, q, -q, -q, -p, p, p]
        .iter()
        .map(|&v| v as i32)
        .collect();
    for isa in Isa::available() {
        assert_eq!(
            bitlinear_accumulate_with_isa(&xq, &w, isa).unwrap(),
            want,
            "{isa:?}"
        );
    }
    drop((xq, w));
    let big = 1usize << 24;
    assert!(matches!(
        QuantizedActivations::from_parts(vec![0; big], vec![1.0], 1, big),
        Err(Error::SizeOverflow { .. })
    ));
    assert!(matches!(
        TernaryMatrix::from_packed(vec![0x5555_5555; big / 16], 1, big, 1.0),
        Err(Error::SizeOverflow { .. })
    ));
    assert!(matches!(
        quantize_activations_with_isa(&vec![0.0; big], 1, big, Isa::Scalar),
        Err(Error::SizeOverflow { .. })
    ));
}

#[test]
fn first_non_finite_index() {
    // Weights: the first of an infinity (5000) and a NaN (6000), across canonical-sum blocks.
    let mut w = vec![0.5f32; 8192];
    w[6000] = f32::NAN;
    w[5000] = f32::NEG_INFINITY;
    let e = qw(&w, 2, 4096).unwrap_err();
    assert_eq!(
        e,
        Error::NonFinite {
            op: "quantize_weights",
            tensor: "w",
            index: 5000
        }
    );
    // Weights whose |w| sum overflows and that also hold a NaN: the NaN's index wins.
    let e = qw(&[f32::MAX, f32::MAX, f32::NAN, 1.0], 2, 2).unwrap_err();
    assert_eq!(
        e,
        Error::NonFinite {
            op: "quantize_weights",
            tensor: "w",
            index: 2
        }
    );
    // Activations, many rows (several rayon tasks): the first flat index, not the first task's.
    let (m, k) = (64, 1024);
    let mut x = vec![1.0f32; m * k];
    x[40 * k + 7] = f32::INFINITY;
    x[3 * k + 1000] = f32::NAN;
    x[63 * k] = f32::NAN;
    let e = qa(&x, m, k).unwrap_err();
    assert_eq!(
        e,
        Error::NonFinite {
            op: "quantize_activations",
            tensor: "x",
            index: 3 * k + 1000
        }
    );
}

mod ops {
    use bitnet_cpu_ref::Error;
    use bitnet_cpu_ref::Tensor;
    use bitnet_cpu_ref::ops::*;

    fn t(v: &[f32], shape: &[usize]) -> Tensor<f32> {
        Tensor::new(v.to_vec(), shape).unwrap()
    }

    fn bits(t: &Tensor<f32>) -> Vec<u32> {
        t.data().iter().map(|v| v.to_bits()).collect()
    }

    #[test]
    fn softmax_at_the_range_ends() {
        // -MAX - MAX = -inf, e^-inf = 0: [0, 1]. Equal maxima: [0.5, 0.5]. e^-200 = 0 in f32.
        let max = f32::MAX;
        let y = softmax_last(&t(&[-max, max, max, max, 0.0, -200.0], &[3, 2])).unwrap();
        assert_eq!(y.data(), &[0.0, 1.0, 0.5, 0.5, 1.0, 0.0]);
    }

    #[test]
    fn rms_norm_hand_computed() {
        // ss = 25, ss / 2 = 12.5, sqrt = 3.5355339 (rounded), inv = 0.28284270 (rounded):
        // y = [(3 · inv) · 1, (4 · inv) · 2] = [0x3f593924, 0x4010d0c3].
        let y = rms_norm(&t(&[3.0, 4.0], &[1, 2]), &[1.0, 2.0], 0.0).unwrap();
        assert_eq!(bits(&y), vec![0x3f59_3924, 0x4010_d0c3]);
        // Σ x² overflows in row 1: reported with the row as index.
        let e = rms_norm(&t(&[1.0, 1.0, 2e19, 2e19], &[2, 2]), &[1.0, 1.0], 0.0).unwrap_err();
        assert!(matches!(e, Error::NonFinite { index: 1, .. }), "{e:?}");
    }

    #[test]
    fn rope_hand_computed() {
        // D = 2: freq_0 = theta^0 = 1, position 1 → angle 1, c = fl(cos 1), s = fl(sin 1):
        // (1, 2) → (1·c − 2·s, 2·c + 1·s) = (0xbf924204, 0x3ff60692). Position 0 is the identity.
        let y = rope(&t(&[1.0, 2.0, 1.0, 2.0], &[2, 1, 2]), &[1, 0], 10000.0).unwrap();
        assert_eq!(
            bits(&y),
            vec![0xbf92_4204, 0x3ff6_0692, 1.0f32.to_bits(), 2.0f32.to_bits()]
        );
    }

    #[test]
    fn sum_follows_the_lane_order() {
        // Lane 0 holds 1e8 (v[256] = 0), lanes 1..255 hold 1 (f32 spacing at 1e8 is 8). Tree:
        // stride 128: p0 = 1e8 + 1 → 1e8, lanes 1..127 = 2; stride 64: 1e8 + 2 → 1e8, lanes = 4;
        // stride 32: 1e8 + 4 (tie, 1e8 is even) → 1e8, lanes = 8; then +8, +16, +32, +64, +128
        // are exact: 1e8 + 248 = 100000248. (A sequential sum would stay at 1e8.)
        let mut v = vec![1.0f32; 257];
        v[0] = 1e8;
        v[256] = 0.0;
        let y = reduce_last(ReduceOp::Sum, &t(&v, &[257])).unwrap();
        assert_eq!(y.data(), &[100_000_248.0]);
    }

    #[test]
    fn activations_at_zero_and_far_out() {
        let x = t(&[-0.0, 0.0, -1000.0, 1000.0], &[4]);
        // gelu(-0.0) = (0.5 · -0) · (1 + erf(-0)) = -0.0; gelu(±1000) = 0 · -500 = -0.0 and 1000.
        let y = unary(UnaryOp::Gelu, &x).unwrap();
        assert_eq!(
            bits(&y),
            vec![0x8000_0000, 0, 0x8000_0000, 1000.0f32.to_bits()]
        );
        // silu(-0.0) = -0 · 0.5 = -0.0; silu(-1000) = -1000 · (e^-1000 / 1) = -1000 · 0 = -0.0.
        let y = unary(UnaryOp::Silu, &x).unwrap();
        assert_eq!(
            bits(&y),
            vec![0x8000_0000, 0, 0x8000_0000, 1000.0f32.to_bits()]
        );
    }
}
