//! matmul / matmul_bt in f32 and f16 against cpu-ref: odd sizes, M ∈ {1, 2, 3, 7, 64}, K not a
//! multiple of 4 or 16, a BitNet-sized M = 1 product, edge values.

use bitnet_wgpu::cpu_ref::ops as cpu;
use bitnet_wgpu::wgpu::Features;

use super::common::{assert_f16, assert_f32, engine, halves, host, up, values};

/// (M, K, N): every M of the issue, K ∈ {1, 5, 17, 37, 100, 129, 200}, odd and tile-crossing N.
const SHAPES: &[(usize, usize, usize)] = &[
    (1, 1, 1),
    (1, 37, 19),
    (2, 5, 3),
    (3, 17, 65),
    (7, 129, 31),
    (64, 100, 64),
    (65, 200, 130),
];

#[test]
fn matmul_f32_matches_cpu_ref() {
    let e = engine();
    for (i, &(m, k, n)) in SHAPES.iter().enumerate() {
        let seed = 100 + i as u64;
        let a = values(seed, m * k, -1.0, 1.0);
        let b = values(seed + 50, k * n, -1.0, 1.0);
        let (ga, gb) = (up(e, &a, &[m, k]), up(e, &b, &[k, n]));
        let want = cpu::matmul(&host(&a, &[m, k]), &host(&b, &[k, n])).unwrap();
        assert_f32(
            "matmul_f32",
            &format!("matmul {m}x{k}x{n}"),
            &e.matmul(&ga, &gb).unwrap(),
            &want,
        );
        // The same product through matmul_bt, B stored [N, K].
        let bt: Vec<f32> = (0..n * k).map(|j| b[(j % k) * n + j / k]).collect();
        let gbt = up(e, &bt, &[n, k]);
        let want = cpu::matmul_bt(&host(&a, &[m, k]), &host(&bt, &[n, k])).unwrap();
        assert_f32(
            "matmul_f32",
            &format!("matmul_bt {m}x{k}x{n}"),
            &e.matmul_bt(&ga, &gbt).unwrap(),
            &want,
        );
    }
}

#[test]
fn matmul_f32_bitnet_shape_and_edge_values() {
    let e = engine();
    // x · Wᵀ with the 2B4T attention-output shape at M = 1.
    let (m, k, n) = (1, 2560, 640);
    let a = values(7, m * k, -2.0, 2.0);
    let w = values(8, n * k, -0.05, 0.05);
    let want = cpu::matmul_bt(&host(&a, &[m, k]), &host(&w, &[n, k])).unwrap();
    let got = e
        .matmul_bt(&up(e, &a, &[m, k]), &up(e, &w, &[n, k]))
        .unwrap();
    assert_f32("matmul_f32", "matmul_bt 1x2560x640", &got, &want);
    // Zeros, negatives and large magnitudes that stay finite.
    let a = vec![0.0, -0.0, 1e18, -3e17, 2.5, -1e-20];
    let b = vec![
        1e19, 0.0, -1e-18, 4.0, 0.0, -2.0, 1e-3, 7.0, -0.5, 1e18, 0.0, 1.0,
    ];
    let want = cpu::matmul(&host(&a, &[2, 3]), &host(&b, &[3, 4])).unwrap();
    let got = e.matmul(&up(e, &a, &[2, 3]), &up(e, &b, &[3, 4])).unwrap();
    assert_f32("matmul_f32", "matmul edge values", &got, &want);
}

#[test]
fn matmul_f16_matches_cpu_ref_or_names_the_missing_feature() {
    let e = engine();
    let has_f16 = e.info().features.contains(Features::SHADER_F16);
    for (i, &(m, k, n)) in SHAPES.iter().enumerate() {
        let seed = 300 + i as u64;
        let (a, b) = (
            halves(&values(seed, m * k, -2.0, 2.0)),
            halves(&values(seed + 1, k * n, -2.0, 2.0)),
        );
        let ga = e.upload_f16(&a, &[m, k]).unwrap();
        let gb = e.upload_f16(&b, &[k, n]).unwrap();
        let gbt = e.upload_f16(&b, &[n, k]).unwrap();
        let ha = bitnet_wgpu::CpuTensor::new(a.clone(), &[m, k]).unwrap();
        let got = e.matmul_f16(&ga, &gb);
        if !has_f16 {
            let err = got
                .expect_err("matmul_f16 without SHADER_F16 must fail")
                .to_string();
            assert!(err.contains("SHADER_F16"), "{err}");
            return;
        }
        let want = cpu::matmul_f16(
            &ha,
            &bitnet_wgpu::CpuTensor::new(b.clone(), &[k, n]).unwrap(),
        )
        .unwrap();
        assert_f16(
            "matmul_f16",
            &format!("matmul_f16 {m}x{k}x{n}"),
            &got.unwrap(),
            &want,
        );
        let want = cpu::matmul_bt_f16(
            &ha,
            &bitnet_wgpu::CpuTensor::new(b.clone(), &[n, k]).unwrap(),
        )
        .unwrap();
        let got = e.matmul_bt_f16(&ga, &gbt).unwrap();
        assert_f16(
            "matmul_f16",
            &format!("matmul_bt_f16 {m}x{k}x{n}"),
            &got,
            &want,
        );
    }
}

/// N wider than `max_compute_workgroups_per_dimension` column tiles (64 columns each): the
/// tiles fold into the grid's x and z, and every column is computed once.
#[test]
fn matmul_wider_than_the_grid_limit() {
    let e = engine();
    let max = e
        .info()
        .limits
        .unwrap()
        .max_compute_workgroups_per_dimension as usize;
    let (m, k, n) = (2, 3, 64 * max + 100);
    let a = values(700, m * k, -1.0, 1.0);
    let b = values(701, k * n, -1.0, 1.0);
    let want = cpu::matmul(&host(&a, &[m, k]), &host(&b, &[k, n])).unwrap();
    let got = e.matmul(&up(e, &a, &[m, k]), &up(e, &b, &[k, n])).unwrap();
    assert_f32("matmul_f32", &format!("matmul {m}x{k}x{n}"), &got, &want);
}
