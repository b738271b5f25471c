//! binary (with broadcasting), binary_scalar and unary against cpu-ref.

use bitnet_wgpu::cpu_ref::ops as cpu;
use bitnet_wgpu::{BinaryOp, UnaryOp};

use super::common::{assert_f32, bits, engine, host, numel, up, values};

const BINARY_OPS: [BinaryOp; 4] = [BinaryOp::Add, BinaryOp::Sub, BinaryOp::Mul, BinaryOp::Div];

/// Operand shapes: equal, middle-axis broadcast, scalar-like either side, outer product, rank
/// mismatch, alternating broadcast axes, rank 7 that merges, and one long vector.
const PAIRS: &[(&[usize], &[usize])] = &[
    (&[5, 7], &[5, 7]),
    (&[3, 1, 5], &[3, 4, 5]),
    (&[2, 3, 4], &[1]),
    (&[1], &[2, 3, 4]),
    (&[], &[3, 2]),
    (&[4, 1], &[1, 6]),
    (&[7, 33], &[33]),
    (&[2, 1, 3, 1, 2], &[1, 4, 1, 5, 1]),
    // Six axes none of which merge: the kernel's outermost index axis (a mutant that skipped it
    // survived every other pair).
    (&[2, 1, 3, 1, 2, 1], &[1, 4, 1, 5, 1, 3]),
    (&[2, 2, 2, 3, 1, 1, 5], &[2, 2, 2, 3, 4, 1, 5]),
    (&[300_007], &[300_007]),
];

/// Nonzero values of either sign with magnitudes in [0.25, 4), safe divisors.
fn signed(seed: u64, n: usize) -> Vec<f32> {
    let m = values(seed, n, 0.25, 4.0);
    let s = values(seed ^ 0xABCD, n, -1.0, 1.0);
    m.iter()
        .zip(&s)
        .map(|(&m, &s)| if s < 0.0 { -m } else { m })
        .collect()
}

#[test]
fn binary_broadcasts_like_cpu_ref() {
    let e = engine();
    for (i, &(sa, sb)) in PAIRS.iter().enumerate() {
        let a = signed(10 + i as u64, numel(sa));
        let b = signed(40 + i as u64, numel(sb));
        let (ga, gb) = (up(e, &a, sa), up(e, &b, sb));
        for op in BINARY_OPS {
            let want = cpu::binary(op, &host(&a, sa), &host(&b, sb)).unwrap();
            let got = e.binary(op, &ga, &gb).unwrap();
            assert_f32("elementwise", &format!("{op:?} {sa:?} {sb:?}"), &got, &want);
        }
    }
}

#[test]
fn binary_edge_values_are_bit_exact() {
    let e = engine();
    // Zeros of both signs, large magnitudes, negative values, exact and inexact quotients.
    // Every combination stays finite and normal (subnormal results are not compared: a GPU may
    // flush them to zero).
    let a = [
        0.0, -0.0, 3.0e38, -3.0e38, 1.0, -7.0, 1e-30, 123_456.79, 1.0, 2.0,
    ];
    let b = [5.0, -2.0, 1.0, -1.0, 3.0, 1e30, 1e4, -0.1, 1.0e30, 3.0];
    for op in BINARY_OPS {
        let want = cpu::binary(op, &host(&a, &[10]), &host(&b, &[10])).unwrap();
        let got = e.binary(op, &up(e, &a, &[10]), &up(e, &b, &[10])).unwrap();
        assert_f32("elementwise", &format!("{op:?} edge"), &got, &want);
    }
}

#[test]
fn binary_scalar_matches_cpu_ref() {
    let e = engine();
    let a = signed(77, 1003);
    let ga = up(e, &a, &[17, 59]);
    for s in [0.5f32, -3.25, 1e-3, 7.0e3, -0.0, 1.0 / 3.0] {
        for op in BINARY_OPS {
            if op == BinaryOp::Div && s == 0.0 {
                continue;
            }
            let want = cpu::binary_scalar(op, &host(&a, &[17, 59]), s).unwrap();
            let got = e.binary_scalar(op, &ga, s).unwrap();
            assert_f32("elementwise", &format!("{op:?} scalar {s}"), &got, &want);
        }
    }
}

#[test]
fn unary_matches_cpu_ref() {
    let e = engine();
    let ops = [
        UnaryOp::Relu,
        UnaryOp::Relu2,
        UnaryOp::Silu,
        UnaryOp::Gelu,
        UnaryOp::Exp,
    ];
    let mut a = values(5, 4099, -12.0, 12.0);
    // Edge values: zeros, tiny, the erf/sigmoid branch points, large negative and positive.
    a.extend([
        0.0, -0.0, 1e-7, -1e-7, 1.0, -1.0, 3.9, -3.9, 60.0, -60.0, 88.0, -87.0, -103.0, -200.0,
    ]);
    let n = a.len();
    let ga = up(e, &a, &[n]);
    for op in ops {
        let want = cpu::unary(op, &host(&a, &[n])).unwrap();
        assert_f32(
            "unary",
            &format!("{op:?}"),
            &e.unary(op, &ga).unwrap(),
            &want,
        );
    }
}

/// ReLU of -0 is +0 (and ReLU² of it +0) on both sides, bit for bit: `max(x, 0)` leaves a zero
/// result's sign to the platform, so both select explicitly. Also through the gated op, whose
/// kernel shares the activation.
#[test]
fn relu_of_negative_zero_is_positive_zero() {
    let e = engine();
    let x = [-0.0, 0.0, -1.0, 2.0, -0.0, -3.5, 0.5, -0.0];
    for op in [UnaryOp::Relu, UnaryOp::Relu2] {
        let want = cpu::unary(op, &host(&x, &[2, 4])).unwrap().into_data();
        assert_eq!(want[0].to_bits(), 0, "cpu-ref {op:?}(-0)");
        let got = e
            .unary(op, &up(e, &x, &[2, 4]))
            .unwrap()
            .read_f32()
            .unwrap();
        assert_eq!(bits(&got), bits(&want), "{op:?}");
        let ones = [1.0; 8];
        let want = cpu::gated(op, &host(&x, &[2, 4]), &host(&ones, &[2, 4])).unwrap();
        let got = e
            .gated(op, &up(e, &x, &[2, 4]), &up(e, &ones, &[2, 4]))
            .unwrap();
        assert_eq!(
            bits(&got.read_f32().unwrap()),
            bits(want.data()),
            "gated {op:?}"
        );
    }
}
