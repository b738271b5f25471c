//! Weight and activation quantization: hand-computed values, ties-to-even boundaries, the eps
//! clamp, and agreement of every SIMD level with the scalar path.

use bitnet_cpu_ref::{
    Error, Isa, TernaryMatrix, bitlinear, dequantize_weights, quantize_activations,
    quantize_activations_with_isa, quantize_weights, quantize_weights_with_isa,
};

/// Deterministic pseudo-random f32 in `[-amp, amp)` (xorshift).
fn rand_f32(n: usize, seed: u32, amp: f32) -> Vec<f32> {
    let mut s = seed.max(1);
    (0..n)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 17;
            s ^= s << 5;
            (s as f32 / u32::MAX as f32 * 2.0 - 1.0) * amp
        })
        .collect()
}

#[test]
fn activation_ties_round_to_even() {
    // absmax 127 → inv = 127 / 127 = 1 exactly, so x · inv = x and every .5 is an exact tie:
    // 2.5 → 2, 3.5 → 4, -2.5 → -2, 0.5 → 0, 1.5 → 2, -1.5 → -2, 126.5 → 126.
    let x = [127.0, 2.5, 3.5, -2.5, 0.5, 1.5, -1.5, 126.5];
    let xq = quantize_activations(&x, 1, 8).unwrap();
    assert_eq!(xq.values(), &[127, 2, 4, -2, 0, 2, -2, 126]);
    // absmax 254 → inv = 0.5: 5 · 0.5 = 2.5 → 2, 7 · 0.5 = 3.5 → 4, -254 · 0.5 = -127.
    let xq = quantize_activations(&[5.0, 7.0, -254.0], 1, 3).unwrap();
    assert_eq!(xq.values(), &[2, 4, -127]);
    assert_eq!(xq.absmax(), &[254.0]);
}

#[test]
fn weight_ties_round_to_even() {
    // Σ|w| = 0.5 + 0.5 + 1.5 + 1.5 = 4, s = 4 / 4 = 1, inv_s = 1:
    // 0.5 → 0 (tie to even), -0.5 → 0, 1.5 → 2 (tie to even) → clamped to 1.
    let w = quantize_weights(&[0.5, -0.5, 1.5, 1.5], 1, 4).unwrap();
    assert_eq!(w.scale(), 1.0);
    assert_eq!(w.to_i8(), vec![0, 0, 1, 1]);
    // Σ|w| = 1 + 1 + 3 + 3 = 8, s = 2, inv_s = 0.5: ±1 · 0.5 = ±0.5 → 0, 3 · 0.5 = 1.5 → 1.
    let w = quantize_weights(&[1.0, -1.0, 3.0, -3.0], 2, 2).unwrap();
    assert_eq!(w.scale(), 2.0);
    assert_eq!(w.to_i8(), vec![0, 0, 1, -1]);
    // Just above the tie: Σ = 0.5 + 0.75 + 2.75 + 0 = 4, s = 1: 0.75 → 1, 0.5 → 0.
    let w = quantize_weights(&[0.5, 0.75, -2.75, 0.0], 1, 4).unwrap();
    assert_eq!(w.to_i8(), vec![0, 1, -1, 0]);
}

#[test]
fn eps_cases_give_zeros_not_nan() {
    // All-zero weights: s = max(0 / 6, 1e-5) = 1e-5, every code 0.
    let w = quantize_weights(&[0.0; 6], 2, 3).unwrap();
    assert_eq!(w.scale(), 1e-5);
    assert_eq!(w.to_i8(), vec![0; 6]);
    assert_eq!(dequantize_weights(&w), vec![0.0; 6]);
    // Tiny weights: absmean 1e-7 < 1e-5 → s = 1e-5, w · inv_s = 1e-7 · 1e5 = 0.01 → 0.
    let w = quantize_weights(&[1e-7; 4], 1, 4).unwrap();
    assert_eq!((w.scale(), w.to_i8()), (1e-5, vec![0; 4]));
    // An all-zero activation row: a = 1e-5, values 0, outputs exactly 0 (0 · scale).
    let wq = quantize_weights(&[1.0, -1.0, 1.0, 1.0], 2, 2).unwrap();
    let y = bitlinear(&[0.0, 0.0, 3.0, -3.0], 2, &wq).unwrap();
    assert_eq!(&y[..2], &[0.0, 0.0]);
    // Row 2: x = [3, -3], a = 3 → xq = [127, -127]; W = [[1,-1],[1,1]], s = 1:
    // acc = [254, 0], y = acc · ((1 · 3) · INV_127).
    assert_eq!(&y[2..], &[254.0 * (3.0 * (1.0f32 / 127.0)), 0.0]);
    // Tiny activations: a = max(2e-6, 1e-5) = 1e-5, inv = 127 / 1e-5 ≈ 1.27e7:
    // 1e-6 · 1.27e7 = 12.7 → 13, -2e-6 · 1.27e7 = -25.4 → -25.
    let xq = quantize_activations(&[1e-6, -2e-6], 1, 2).unwrap();
    assert_eq!(
        (xq.values(), xq.absmax()),
        (&[13i8, -25][..], &[1e-5f32][..])
    );
}

#[test]
fn dequantize_is_code_times_scale() {
    // s = (2 + 0 + 1 + 1) / 4 = 1; codes [1, 0, -1, 1] → [1, 0, -1, 1] · 1.
    let w = quantize_weights(&[2.0, 0.0, -1.0, 1.0], 2, 2).unwrap();
    assert_eq!(dequantize_weights(&w), vec![1.0, 0.0, -1.0, 1.0]);
    let w = TernaryMatrix::from_i8(&[1, 0, -1], 1, 3, 0.25).unwrap();
    assert_eq!(dequantize_weights(&w), vec![0.25, 0.0, -0.25]);
}

#[test]
fn simd_levels_match_scalar() {
    // Odd shapes: partial words, partial 8-lane chunks, multi-task rows, values near ties.
    for (rows, k) in [(1, 1), (3, 7), (5, 33), (17, 255), (2, 5000), (70, 300)] {
        let x = rand_f32(rows * k, 3 + k as u32, 4.0);
        let w_ref = quantize_weights_with_isa(&x, rows, k, Isa::Scalar).unwrap();
        let a_ref = quantize_activations_with_isa(&x, rows, k, Isa::Scalar).unwrap();
        for isa in Isa::available() {
            let w = quantize_weights_with_isa(&x, rows, k, isa).unwrap();
            assert_eq!(w, w_ref, "{isa:?} {rows}x{k}");
            let a = quantize_activations_with_isa(&x, rows, k, isa).unwrap();
            assert_eq!(a, a_ref, "{isa:?} {rows}x{k}");
        }
        // And against a literal transcription of layout.rs.
        let s = (bitnet_cpu_ref::canonical_abs_sum(&x) / (rows * k) as f32).max(1e-5);
        let inv_s = 1.0 / s;
        let codes: Vec<i8> = x
            .iter()
            .map(|v| (v * inv_s).round_ties_even().clamp(-1.0, 1.0) as i8)
            .collect();
        assert_eq!((w_ref.scale(), w_ref.to_i8()), (s, codes));
        for (r, row) in x.chunks(k).enumerate() {
            let a = row.iter().fold(0.0f32, |m, v| m.max(v.abs())).max(1e-5);
            let inv = 127.0 / a;
            let want: Vec<i8> = row
                .iter()
                .map(|v| (v * inv).round_ties_even().clamp(-128.0, 127.0) as i8)
                .collect();
            assert_eq!(&a_ref.values()[r * k..(r + 1) * k], &want[..]);
            assert_eq!(a_ref.absmax()[r], a);
        }
    }
}

/// The activation absmax of every SIMD level (AVX2 folds 32 and 8 values at a time, then the
/// portable tail) against the scalar path: the largest magnitude, a NaN, +inf or -inf, and -0.0
/// rows, each placed at every position of rows whose lengths cross the 8- and 32-value steps.
#[test]
fn activation_absmax_at_every_position_matches_scalar() {
    for k in (1..=41).chain([63, 64, 65, 257]) {
        for at in 0..k {
            let mut row = rand_f32(k, 11 + k as u32, 1.0);
            for special in [-9.5f32, 9.5, f32::NAN, f32::INFINITY, f32::NEG_INFINITY] {
                row[at] = special;
                let want = quantize_activations_with_isa(&row, 1, k, Isa::Scalar);
                for isa in Isa::available() {
                    let got = quantize_activations_with_isa(&row, 1, k, isa);
                    assert_eq!(got, want, "{isa:?} K {k}, {special} at {at}");
                }
            }
        }
        let zeros = vec![-0.0f32; k];
        let want = quantize_activations_with_isa(&zeros, 1, k, Isa::Scalar).unwrap();
        assert_eq!(
            want.absmax(),
            [1e-5],
            "K {k}: an all -0.0 row floors at 1e-5"
        );
        for isa in Isa::available() {
            assert_eq!(
                quantize_activations_with_isa(&zeros, 1, k, isa).unwrap(),
                want
            );
        }
    }
}

/// A batch split into rayon tasks (more than 16 Ki values) quantizes each row as that row alone
/// does on the calling thread, and a non-finite value in a later task is reported at its own
/// index, as the serial path reports one.
#[test]
fn rows_in_rayon_tasks_match_rows_quantized_alone() {
    let (m, k) = (40, 2560);
    let x = rand_f32(m * k, 11, 3.0);
    let batch = quantize_activations(&x, m, k).unwrap();
    for (r, row) in x.chunks(k).enumerate() {
        let alone = quantize_activations(row, 1, k).unwrap();
        assert_eq!(
            &batch.values()[r * k..(r + 1) * k],
            alone.values(),
            "row {r}"
        );
        assert_eq!(
            batch.absmax()[r].to_bits(),
            alone.absmax()[0].to_bits(),
            "row {r}"
        );
    }
    let mut bad = x.clone();
    bad[37 * k + 5] = f32::NAN;
    let e = quantize_activations(&bad, m, k).unwrap_err();
    assert!(
        matches!(e, Error::NonFinite { tensor: "x", index, .. } if index == 37 * k + 5),
        "{e:?}"
    );
    let e = quantize_activations(&bad[37 * k..38 * k], 1, k).unwrap_err();
    assert!(
        matches!(
            e,
            Error::NonFinite {
                tensor: "x",
                index: 5,
                ..
            }
        ),
        "{e:?}"
    );
}
