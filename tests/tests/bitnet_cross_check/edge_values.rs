//! Edge values: zeros, all-equal, huge magnitudes, exact half-way rounding cases, subnormals.

use bitnet_tests::random_normal;

use crate::support::{check_acts, check_linear, check_weights, engine, plain_engine};

/// Runs weight quant, activation quant and BitLinear on hand-made values (M = rows of `x`).
fn check_values(w: &[f32], n: usize, x: &[f32], m: usize, k: usize, ctx: &str) {
    for (name, e) in [("default", engine()), ("plain", plain_engine())] {
        let ctx = format!("{name}: {ctx}");
        let wq = check_weights(e, w, n, k, &ctx);
        check_acts(e, x, m, k, &ctx);
        check_linear(e, x, m, &wq, &ctx);
    }
}

#[test]
fn edge_values_zeros_equal_huge() {
    let (n, m, k) = (5, 3, 37);
    let zeros = vec![0.0f32; n.max(m) * k];
    check_values(&zeros[..n * k], n, &zeros[..m * k], m, k, "all zeros");
    let neg_zero = vec![-0.0f32; n.max(m) * k];
    check_values(&neg_zero[..n * k], n, &neg_zero[..m * k], m, k, "all -0.0");
    let equal = vec![0.37f32; n.max(m) * k];
    check_values(&equal[..n * k], n, &equal[..m * k], m, k, "all equal");
    let minus = vec![-1e-3f32; n.max(m) * k];
    check_values(
        &minus[..n * k],
        n,
        &minus[..m * k],
        m,
        k,
        "all equal negative",
    );
    // Huge magnitudes next to ordinary ones (sums stay finite).
    let mut huge = random_normal(3, n.max(m) * k, 1.0);
    for i in (0..huge.len()).step_by(7) {
        huge[i] = if i % 2 == 0 { 1e30 } else { -3e36 };
    }
    check_values(&huge[..n * k], n, &huge[..m * k], m, k, "huge magnitudes");
    // Near f32::MAX: one weight (a 1 x 1 matrix), and activations at f32::MAX.
    check_values(&[3.0e38], 1, &[f32::MAX], 1, 1, "near f32::MAX");
    check_values(
        &[1.0e38, -2.0e37],
        1,
        &[-f32::MAX, 1.0],
        1,
        2,
        "near f32::MAX, K = 2",
    );
    // s = 1.5e38 > 2^126: inv_s = 1 / s is subnormal (the pack kernel's normal stand-ins).
    check_values(
        &[2.0e38, -1.0e38, 1.0e30],
        1,
        &[1.0, 2.0, 3.0],
        1,
        3,
        "subnormal inv_s",
    );
}

#[test]
fn edge_values_half_way_rounding() {
    // Activations: absmax 127 makes inv = 1 exactly, so x = j + 0.5 sits on a tie (to even).
    let x: Vec<f32> = [
        127.0f32, 0.5, 1.5, 2.5, -0.5, -1.5, -2.5, 126.5, -126.5, 3.5, 4.5, -127.0,
    ]
    .to_vec();
    // Weights: |w| sums to 12 over 12 values, so s = 1 and w = ±0.5 / ±1.5 are ties.
    let w: Vec<f32> = [
        0.5f32, -0.5, 1.5, -1.5, 2.5, -2.5, 0.5, 0.5, 1.0, 1.0, 0.5, 1.5,
    ]
    .to_vec();
    check_values(&w, 1, &x, 1, 12, "ties, K = 12");
    // Ties at other scales: absmax 254 gives inv = 0.5, so x = 2j + 1 is a tie.
    let x2: Vec<f32> = (0..64i32)
        .map(|j| {
            if j % 32 == 0 {
                254.0
            } else {
                (2 * (j % 32) - 31) as f32
            }
        })
        .collect();
    let w2: Vec<f32> = (0..64).map(|j| [0.25f32, 0.75, 1.0, 2.0][j % 4]).collect();
    check_values(&w2, 2, &x2, 2, 32, "ties, absmax 254");
    let x3: Vec<f32> = x2.iter().map(|v| v * 0.25).collect();
    check_values(&w2, 2, &x3, 2, 32, "ties scaled by 1/4");
}

#[test]
fn edge_values_subnormals() {
    let sub = [1e-45f32, -1e-42, 3e-40, -1.1754942e-38, 5e-39, 0.0, -2e-41];
    let all_sub: Vec<f32> = (0..63).map(|i| sub[i % sub.len()]).collect();
    check_values(&all_sub, 3, &all_sub, 3, 21, "all subnormal");
    let mut mixed = random_normal(11, 120, 0.5);
    for i in (0..mixed.len()).step_by(3) {
        mixed[i] = sub[i % sub.len()];
    }
    check_values(
        &mixed,
        4,
        &mixed,
        4,
        30,
        "subnormals mixed with normal values",
    );
    // Tiny normal values whose scale clamps to 1e-5.
    let tiny: Vec<f32> = random_normal(12, 96, 1e-7);
    check_values(&tiny, 3, &tiny, 3, 32, "tiny values (scales clamp to 1e-5)");
}

/// The smallest scales the types accept (the quantizers' floor, 1e-5, for both the weight
/// scale and the activation absmax) give the smallest output scale, s · a / 127 ≈ 7.9e-13:
/// normal, so a GPU that flushes subnormals agrees with cpu-ref bit for bit. Below the floor
/// the types refuse the scale (their product could be subnormal: 0 on such a GPU).
#[test]
fn floor_scales_agree_and_smaller_ones_are_refused() {
    use bitnet_wgpu::cpu_ref::{QuantizedActivations, TernaryMatrix};
    let (m, n, k) = (3, 8, 40);
    let x: Vec<i8> = (0..m * k).map(|i| ((i * 37) % 255) as u8 as i8).collect();
    let w: Vec<i8> = (0..n * k).map(|i| ((i * 5) % 3) as i8 - 1).collect();
    let absmax = vec![1e-5, 2e-5, 1e-5];
    let xq = QuantizedActivations::from_parts(x.clone(), absmax, m, k).unwrap();
    let wq = TernaryMatrix::from_i8(&w, n, k, 1e-5).unwrap();
    let want = bitnet_wgpu::cpu_ref::bitlinear_quantized(&xq, &wq).unwrap();
    assert!(want.iter().all(|v| *v == 0.0 || v.is_normal()));
    for (name, e) in crate::support::engines() {
        let got = e.bitlinear_quantized(&xq, &wq).unwrap();
        crate::support::assert_bits_eq(&got, &want, name);
    }
    assert!(QuantizedActivations::from_parts(x, vec![1e-5, 1e-30, 1e-5], m, k).is_err());
    assert!(TernaryMatrix::from_i8(&w, n, k, 9.99e-6).is_err());
}
