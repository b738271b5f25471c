//! Row ops against cpu-ref: reduce_last (every op, rows shorter and far longer than a workgroup,
//! rank 0 and 1), rms_norm, softmax_last, rope.

use bitnet_wgpu::ReduceOp;
use bitnet_wgpu::cpu_ref::ops as cpu;

use super::common::{assert_f32, bits, engine, host, numel, up, values};

/// Shapes whose last axis is the row: scalar, single element, short, odd, and rows of 257,
/// 1000 and 70 000 elements (one workgroup folds many elements per invocation).
const ROW_SHAPES: &[&[usize]] = &[
    &[],
    &[1],
    &[7],
    &[3, 5],
    &[2, 3, 257],
    &[4, 1000],
    &[2, 70_000],
];

/// `Max` of rows whose largest value is a zero: the sign of the result is cpu-ref's (-0 only
/// when no +0 is in the row), bit for bit, whichever invocation, subgroup or fold order meets
/// the zeros (the suite's float comparison takes -0 == +0, so bits are compared here).
#[test]
fn reduce_max_keeps_the_sign_of_zero() {
    let e = engine();
    for len in [1, 2, 7, 33, 256, 257, 1000, 4099] {
        // Per row: all -0; -0 among negatives; one +0 among -0 at the start, middle or end;
        // +0 and -0 alternating; one -0 among +0.
        let rows: Vec<Vec<f32>> = vec![
            vec![-0.0; len],
            (0..len)
                .map(|i| if i == len / 2 { -0.0 } else { -1.0 - i as f32 })
                .collect(),
            (0..len).map(|i| if i == 0 { 0.0 } else { -0.0 }).collect(),
            (0..len)
                .map(|i| if i == len / 2 { 0.0 } else { -0.0 })
                .collect(),
            (0..len)
                .map(|i| if i == len - 1 { 0.0 } else { -0.0 })
                .collect(),
            (0..len)
                .map(|i| if i % 2 == 0 { 0.0 } else { -0.0 })
                .collect(),
            (0..len)
                .map(|i| if i == len - 1 { -0.0 } else { 0.0 })
                .collect(),
        ];
        let flat = rows.concat();
        let shape = [rows.len(), len];
        let want = cpu::reduce_last(ReduceOp::Max, &host(&flat, &shape)).unwrap();
        let got = e.reduce_last(ReduceOp::Max, &up(e, &flat, &shape)).unwrap();
        assert_eq!(
            bits(&got.read_f32().unwrap()),
            bits(want.data()),
            "Max over rows of {len}"
        );
    }
}

#[test]
fn reduce_last_matches_cpu_ref() {
    let e = engine();
    for (i, &shape) in ROW_SHAPES.iter().enumerate() {
        let a = values(20 + i as u64, numel(shape), -100.0, 100.0);
        let ga = up(e, &a, shape);
        for op in [
            ReduceOp::Sum,
            ReduceOp::Mean,
            ReduceOp::Max,
            ReduceOp::AbsMax,
        ] {
            let tol = if matches!(op, ReduceOp::Max | ReduceOp::AbsMax) {
                "reduce_max"
            } else {
                "reduce_sum"
            };
            let want = cpu::reduce_last(op, &host(&a, shape)).unwrap();
            let got = e.reduce_last(op, &ga).unwrap();
            assert_f32(tol, &format!("{op:?} {shape:?}"), &got, &want);
        }
    }
    // All-negative rows (max must not be clamped at 0) and large magnitudes that stay finite.
    let a = [-5.0, -3.0, -9.0, -1e30, -2e30, -1.5e30];
    for op in [
        ReduceOp::Sum,
        ReduceOp::Max,
        ReduceOp::AbsMax,
        ReduceOp::Mean,
    ] {
        let want = cpu::reduce_last(op, &host(&a, &[2, 3])).unwrap();
        let got = e.reduce_last(op, &up(e, &a, &[2, 3])).unwrap();
        let tol = if matches!(op, ReduceOp::Max | ReduceOp::AbsMax) {
            "reduce_max"
        } else {
            "reduce_sum"
        };
        assert_f32(tol, &format!("{op:?} negative rows"), &got, &want);
    }
}

#[test]
fn rms_norm_matches_cpu_ref() {
    let e = engine();
    // 800 and 6912 (2B4T's FFN width): a last partial block of 768-1023 values, whose fourth
    // lane is past the row (a mutant counting it twice survived the others).
    let shapes: &[&[usize]] = &[
        &[1],
        &[3, 7],
        &[5, 300],
        &[2, 4096],
        &[2, 3, 64],
        &[2, 800],
        &[1, 6912],
    ];
    for (i, &shape) in shapes.iter().enumerate() {
        let len = *shape.last().unwrap();
        let x = values(60 + i as u64, numel(shape), -3.0, 3.0);
        let w = values(90 + i as u64, len, 0.5, 1.5);
        for eps in [1e-5f32, 1e-6, 0.0] {
            let want = cpu::rms_norm(&host(&x, shape), &w, eps).unwrap();
            let got = e
                .rms_norm(&up(e, &x, shape), &up(e, &w, &[len]), eps)
                .unwrap();
            assert_f32(
                "rms_norm",
                &format!("rms_norm {shape:?} eps {eps}"),
                &got,
                &want,
            );
        }
    }
    // A zero row with eps > 0, and rows of large magnitude (the sum of squares stays finite).
    let x = [0.0, 0.0, 0.0, 1e18, -2e18, 3e18];
    let w = [1.0, -2.0, 0.5];
    let want = cpu::rms_norm(&host(&x, &[2, 3]), &w, 1e-6).unwrap();
    let got = e
        .rms_norm(&up(e, &x, &[2, 3]), &up(e, &w, &[3]), 1e-6)
        .unwrap();
    assert_f32("rms_norm", "rms_norm edge rows", &got, &want);
}

#[test]
fn softmax_last_matches_cpu_ref() {
    let e = engine();
    let shapes: &[&[usize]] = &[&[1], &[3, 7], &[4, 1000], &[2, 5000]];
    for (i, &shape) in shapes.iter().enumerate() {
        let x = values(110 + i as u64, numel(shape), -30.0, 30.0);
        let want = cpu::softmax_last(&host(&x, shape)).unwrap();
        assert_f32(
            "softmax",
            &format!("softmax {shape:?}"),
            &e.softmax_last(&up(e, &x, shape)).unwrap(),
            &want,
        );
    }
    // Equal values, a huge spread (exp underflows to 0), large magnitudes, negatives only, and
    // negatives far below 0 (a running max started at 0 instead of the lowest float survived
    // the other rows; with these every exp underflowed and the row read as non-finite).
    let x = [
        2.0, 2.0, 2.0, 2.0, 1e30, -1e30, 0.0, 5.0, -7.0, -8.0, -9.0, -300.0, -1000.0, -1001.0,
        -1002.0, -1003.0,
    ];
    let want = cpu::softmax_last(&host(&x, &[4, 4])).unwrap();
    assert_f32(
        "softmax",
        "softmax edge rows",
        &e.softmax_last(&up(e, &x, &[4, 4])).unwrap(),
        &want,
    );
}

#[test]
fn rope_matches_cpu_ref() {
    let e = engine();
    // (S, H, D, theta, largest position)
    let cases = [
        (1, 1, 2, 10_000.0f32, 0u32),
        (3, 2, 8, 10_000.0, 10),
        (5, 4, 64, 500_000.0, 4095),
        (17, 3, 128, 10_000.0, 100_000),
    ];
    for (i, &(s, h, d, theta, max_pos)) in cases.iter().enumerate() {
        let shape = [s, h, d];
        let x = values(130 + i as u64, s * h * d, -4.0, 4.0);
        let mut rng = bitnet_tests::Rng::new(150 + i as u64);
        let mut pos: Vec<u32> = (0..s)
            .map(|_| rng.below(u64::from(max_pos) + 1) as u32)
            .collect();
        pos[0] = max_pos;
        let want = cpu::rope(&host(&x, &shape), &pos, theta).unwrap();
        let gp = e.upload_u32(&pos, &[s]).unwrap();
        let got = e.rope(&up(e, &x, &shape), &gp, theta).unwrap();
        assert_f32(
            "rope",
            &format!("rope {shape:?} theta {theta} max pos {max_pos}"),
            &got,
            &want,
        );
    }
}

/// Positions far beyond any context length seen in the other cases (angles up to 2^32 rad):
/// the angle is reduced modulo 2π exactly enough that the rope tolerance still holds.
#[test]
fn rope_matches_cpu_ref_at_large_positions() {
    let e = engine();
    let pos = [
        823_550u32, // 2^17 · 2π: where a one-level reduction stops being exact
        1_048_575,
        4_000_037,
        16_777_217,
        123_456_789,
        u32::MAX,
    ];
    let (s, h, d) = (pos.len(), 2, 64);
    let x = values(170, s * h * d, -4.0, 4.0);
    let want = cpu::rope(&host(&x, &[s, h, d]), &pos, 10_000.0).unwrap();
    let gp = e.upload_u32(&pos, &[s]).unwrap();
    let got = e.rope(&up(e, &x, &[s, h, d]), &gp, 10_000.0).unwrap();
    assert_f32("rope", "rope at large positions", &got, &want);
}
