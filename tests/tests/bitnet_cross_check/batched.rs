//! The tiled GEMVs for M ≤ 8 against cpu-ref, forced through `BitnetTuning`: the fused batched
//! GEMV (f32 rows quantized in the kernel) and the staged GEMV (quantized rows), for M = 1..8,
//! K at and across the K-tile edges (one weight step, one tile of 28 steps at M = 8, a tile and a
//! partial one, several tiles), N not a multiple of any block, every lane count; the batched
//! GEMV's error reporting (NaN/Inf in one row, rescale overflow in one row) and default plans
//! (the fused GEMV for M ≤ 8, the batched one past the fused kernel's K limit).

use bitnet_tests::random_normal;
use bitnet_wgpu::cpu_ref::{self, TernaryMatrix};
use bitnet_wgpu::{BitnetTuning, Error, LinearPlan};

use crate::support::{assert_same_result, check_linear};
use crate::variants::{check_with, tuned_engine, weights};

#[test]
fn batched_gemv_for_every_m_and_tile_edge() {
    // M = 1..8 f32 rows through the fused batched GEMV, forced at several lane counts. K covers
    // one weight step, one tile exactly (M = 8: 28 steps = 1792), a tile and a partial one, and
    // several tiles (6912); N is not a multiple of any block.
    let e = tuned_engine();
    let subgroups = e
        .info()
        .features
        .contains(bitnet_wgpu::wgpu::Features::SUBGROUP);
    let ks = [64, 1792, 1856, 6912];
    for m in 1..=8 {
        for (i, &k) in ks.iter().enumerate() {
            let n = [5, 67, 130, 33][(m + i) % 4];
            let lanes = [8, 16, 32, 64, 256][(m + i) % 5];
            let tuning = BitnetTuning {
                autotune: Some(false),
                batch_gemv: Some(true),
                gemv_lanes: Some(lanes),
                ..Default::default()
            };
            let (f32_plan, _) = check_with(&e, tuning, m, n, k, "batch");
            if subgroups {
                assert_eq!(f32_plan, LinearPlan::Batch { lanes }, "M {m} K {k}");
            }
        }
    }
    // The default plan for M = 2..8: the fused GEMV (one workgroup per row block and row), and a
    // K % 64 != 0 shape (vec4-less).
    let default = BitnetTuning {
        autotune: Some(false),
        ..Default::default()
    };
    for m in [2, 5, 8] {
        let (f32_plan, _) = check_with(&e, default, m, 300, 2560, "batch default");
        if subgroups {
            assert!(matches!(f32_plan, LinearPlan::Fused { .. }), "M {m}");
        }
    }
    // M = 1 past the decode kernel's K limit: the batched GEMV, still one dispatch.
    let (f32_plan, _) = check_with(&e, default, 1, 7, 15424, "M = 1 past the fused limit");
    if subgroups {
        assert!(matches!(f32_plan, LinearPlan::Batch { .. }));
    }
    let (f32_plan, _) = check_with(&e, default, 4, 9, 1000, "K % 64 != 0");
    assert!(!matches!(f32_plan, LinearPlan::Batch { .. }));
    // Forbidden: quantization + vec4 GEMV.
    let off = BitnetTuning {
        batch_gemv: Some(false),
        ..default
    };
    let (f32_plan, _) = check_with(&e, off, 4, 70, 640, "batch forbidden");
    assert!(!matches!(f32_plan, LinearPlan::Batch { .. }));
}

#[test]
fn batched_gemv_reports_errors_like_cpu_ref() {
    let e = tuned_engine();
    e.set_bitnet_tuning(BitnetTuning {
        autotune: Some(false),
        batch_gemv: Some(true),
        ..Default::default()
    });
    let (m, k) = (5, 1920);
    let w = weights(15, 9, k);
    for bad in [f32::NAN, f32::INFINITY, f32::NEG_INFINITY] {
        let mut x = random_normal(16, m * k, 1.0);
        x[3 * k + 517] = bad;
        x[4 * k + 3] = bad;
        let want = cpu_ref::bitlinear(&x, m, &w)
            .map_err(Error::from)
            .unwrap_err();
        assert_eq!(e.bitlinear(&x, m, &w).unwrap_err(), want, "{bad}");
    }
    // Finite x, rescale overflow in row 2 only: the output error (status word 1).
    let big = TernaryMatrix::from_i8(&vec![1; 3 * k], 3, k, 3.0e38).unwrap();
    let mut x = random_normal(17, m * k, 1.0);
    x[2 * k..3 * k].fill(3.0e38);
    assert_same_result(
        e.bitlinear(&x, m, &big),
        cpu_ref::bitlinear(&x, m, &big),
        "batch overflow",
    );
    let x = random_normal(18, m * k, 1.0);
    check_linear(&e, &x, m, &w, "after the errors");
}

#[test]
fn staged_gemv_for_every_m_and_tile_edge() {
    // The staged GEMV (quantized rows copied to workgroup memory), forced for quantized and f32
    // input (then after act_quant), M = 1..8, K across tile edges, odd N.
    let e = tuned_engine();
    let subgroups = e
        .info()
        .features
        .contains(bitnet_wgpu::wgpu::Features::SUBGROUP);
    let ks = [64, 1792, 1856, 6912];
    for m in 1..=8 {
        for (i, &k) in ks.iter().enumerate() {
            let n = [5, 67, 130, 33][(m + i) % 4];
            let lanes = [8, 16, 32, 64, 256][(m + i) % 5];
            let tuning = BitnetTuning {
                autotune: Some(false),
                fuse_decode: Some(false),
                staged_gemv: Some(true),
                gemv_lanes: Some(lanes),
                ..Default::default()
            };
            let plans = check_with(&e, tuning, m, n, k, "staged");
            if subgroups {
                let want = LinearPlan::Staged { lanes };
                assert_eq!(plans, (want, want), "M {m} K {k}");
            }
        }
    }
}
