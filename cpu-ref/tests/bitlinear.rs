//! BitLinear: hand-computed cases, the i32 range, SIMD-vs-scalar agreement and a naive f64 oracle.

use bitnet_cpu_ref::{
    Isa, QuantizedActivations, TernaryMatrix, bitlinear, bitlinear_accumulate,
    bitlinear_accumulate_with_isa, bitlinear_quantized, dequantize_weights, quantize_activations,
    quantize_weights,
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
fn hand_computed_bitlinear() {
    // W = [[0.5, -1, 0, 2], [1, 1, -1, -1]] (N = 2, K = 4):
    // Σ|w| = 3.5 + 4 = 7.5, s = 7.5 / 8 = 0.9375, inv_s = 1 / 0.9375 = 1.0666..
    // row 0: 0.533 → 1, -1.067 → -1, 0 → 0, 2.133 → 1 (clamped from 2)
    // row 1: 1.067 → 1, 1 , -1, -1
    let w = quantize_weights(&[0.5, -1.0, 0.0, 2.0, 1.0, 1.0, -1.0, -1.0], 2, 4).unwrap();
    assert_eq!(w.scale(), 0.9375);
    assert_eq!(w.to_i8(), vec![1, -1, 0, 1, 1, 1, -1, -1]);
    // x = [1, -2, 3, 4]: a = 4, inv = 127 / 4 = 31.75
    // xq = [31.75 → 32, -63.5 → -64 (tie, to even), 95.25 → 95, 127]
    let x = [1.0, -2.0, 3.0, 4.0];
    let xq = quantize_activations(&x, 1, 4).unwrap();
    assert_eq!(xq.values(), &[32, -64, 95, 127]);
    assert_eq!(xq.absmax(), &[4.0]);
    // acc0 = 32 + 64 + 0 + 127 = 223; acc1 = 32 - 64 - 95 - 127 = -254
    assert_eq!(bitlinear_accumulate(&xq, &w).unwrap(), vec![223, -254]);
    // y = acc * ((0.9375 * 4) * (1/127)) = acc * (3.75 * INV_127)
    let scale = (0.9375f32 * 4.0) * (1.0f32 / 127.0);
    let y = bitlinear(&x, 1, &w).unwrap();
    assert_eq!(y, vec![223.0 * scale, -254.0 * scale]);
    assert_eq!(bitlinear_quantized(&xq, &w).unwrap(), y);
}

#[test]
fn i32_range_at_k_16384() {
    // All-127 activations against all +1 / all -1 weights: acc = ±127 · 16384 = ±2 080 768.
    let k = 16384;
    let xq = QuantizedActivations::from_parts(vec![127; k], vec![1.0], 1, k).unwrap();
    let mut values = vec![1i8; k];
    values.extend(vec![-1i8; k]);
    let w = TernaryMatrix::from_i8(&values, 2, k, 1.0).unwrap();
    for isa in Isa::available() {
        let acc = bitlinear_accumulate_with_isa(&xq, &w, isa).unwrap();
        assert_eq!(acc, vec![2_080_768, -2_080_768], "{isa:?}");
    }
    // Two activation rows (the 2x2 kernel): all 127 and all -128 (allowed by from_parts):
    // acc = [127·16384, -127·16384; -128·16384, 128·16384] = ±2 080 768, ∓2 097 152.
    let mut two = vec![127i8; k];
    two.extend(vec![-128i8; k]);
    let xq2 = QuantizedActivations::from_parts(two, vec![1.0, 1.0], 2, k).unwrap();
    for isa in Isa::available() {
        let acc = bitlinear_accumulate_with_isa(&xq2, &w, isa).unwrap();
        assert_eq!(
            acc,
            vec![2_080_768, -2_080_768, -2_097_152, 2_097_152],
            "{isa:?}"
        );
    }
    // -128 activations (allowed by from_parts): acc = ∓128 · 16384 = ∓2 097 152.
    let xq = QuantizedActivations::from_parts(vec![-128; k], vec![1.0], 1, k).unwrap();
    for isa in Isa::available() {
        let acc = bitlinear_accumulate_with_isa(&xq, &w, isa).unwrap();
        assert_eq!(acc, vec![-2_097_152, 2_097_152], "{isa:?}");
    }
}

#[test]
fn simd_levels_agree_and_match_naive_f64() {
    // Shapes covering every K mod 16, partial SIMD blocks, and more rows than one rayon task.
    for (m, n, k) in [
        (1, 3, 1),
        (2, 5, 17),
        (3, 33, 100),
        (1, 70, 129),
        (4, 9, 1000),
        (2, 4, 4100),
        (5, 3, 4111),
        (1, 40, 2560),
    ] {
        let x = rand_f32(m * k, 7 + k as u32, 2.0);
        let wf = rand_f32(n * k, 11 + n as u32, 0.05);
        let w = quantize_weights(&wf, n, k).unwrap();
        let xq = quantize_activations(&x, m, k).unwrap();
        let (xv, wv) = (xq.values(), w.to_i8());
        let naive: Vec<i32> = (0..m * n)
            .map(|i| {
                let (r, c) = (i / n, i % n);
                (0..k)
                    .map(|kk| i32::from(xv[r * k + kk]) * i32::from(wv[c * k + kk]))
                    .sum()
            })
            .collect();
        for isa in Isa::available() {
            assert_eq!(
                bitlinear_accumulate_with_isa(&xq, &w, isa).unwrap(),
                naive,
                "{isa:?} {m}x{n}x{k}"
            );
        }
        // Against the f64 product of the dequantized operands: y is exact up to one f32 rounding
        // of acc and of the scale product (a few ulp), so 1e-5 relative to max |y| is ample.
        let wd = dequantize_weights(&w);
        let y = bitlinear(&x, m, &w).unwrap();
        let mut max_abs = 0.0f64;
        let mut max_err = 0.0f64;
        for r in 0..m {
            let a = f64::from(xq.absmax()[r]);
            for c in 0..n {
                let want: f64 = (0..k)
                    .map(|kk| f64::from(xv[r * k + kk]) * a / 127.0 * f64::from(wd[c * k + kk]))
                    .sum();
                max_abs = max_abs.max(want.abs());
                max_err = max_err.max((f64::from(y[r * n + c]) - want).abs());
            }
        }
        assert!(
            max_err <= 1e-5 * max_abs.max(1e-30),
            "{m}x{n}x{k}: err {max_err} vs {max_abs}"
        );
    }
}

/// K above 8.4M (allowed: K < 2^24): the code-domain sum Σ x·(w+1) passes i32 while the result
/// 127·K does not. The kernels' arithmetic is modular, so every ISA returns the exact result,
/// and builds with overflow checks (the dev profile) do not panic.
#[test]
fn accumulators_are_exact_when_the_code_domain_sum_passes_i32() {
    let k = 8_500_000;
    let xq = quantize_activations(&vec![1.0f32; k], 1, k).unwrap();
    let w = TernaryMatrix::from_i8(&vec![1i8; k], 1, k, 1.0).unwrap();
    for isa in Isa::available() {
        let acc = bitlinear_accumulate_with_isa(&xq, &w, isa).unwrap();
        assert_eq!(acc, vec![127 * k as i32], "{isa:?}");
    }
}
