//! The lean batched GEMV (f32 rows quantized in the kernel, short critical path) against
//! cpu-ref, forced through `BitnetTuning`: M = 1..8, K at and across its K-tile edges (one weight
//! step; one tile of 56 steps at M = 8 = 3584; a tile and one step; several tiles; at M = 2 one
//! tile of 224 steps and one step more), N not a multiple of any block, lane counts at, below and
//! above the subgroup size (the barrier-free and the workgroup-memory epilogue), and its error
//! reporting (NaN/Inf in one row, rescale overflow in one row); and the vec4 GEMV with the same
//! epilogue on quantized rows (`LinearPlan::LeanQ`).

use bitnet_tests::random_normal;
use bitnet_wgpu::cpu_ref::{self, TernaryMatrix};
use bitnet_wgpu::{BitnetTuning, Engine, Error, LinearPlan};

use crate::support::{assert_same_result, check_linear};
use crate::variants::{check_with, tuned_engine, weights};

/// Whether the engine's device can run the lean GEMV (subgroups of at least 8 lanes, 30 KiB of
/// workgroup memory); the plan must be chosen exactly then.
fn lean_possible(e: &Engine) -> bool {
    let info = e.info();
    info.features
        .contains(bitnet_wgpu::wgpu::Features::SUBGROUP)
        && info.subgroup_min_size >= 8
        && info.limits.is_some_and(|l| {
            l.max_compute_workgroup_storage_size
                >= bitnet_kernels_wgsl::bitnet::GEMV_LEAN_WORKGROUP_BYTES
        })
}

fn lean(lanes: Option<u32>) -> BitnetTuning {
    BitnetTuning {
        autotune: Some(false),
        lean_gemv: Some(true),
        gemv_lanes: lanes,
        ..Default::default()
    }
}

#[test]
fn lean_gemv_for_every_m_and_tile_edge() {
    let e = tuned_engine();
    let possible = lean_possible(&e);
    let ks = [64, 3584, 3648, 6912];
    for m in 1..=8 {
        for (i, &k) in ks.iter().enumerate() {
            let n = [5, 67, 130, 33][(m + i) % 4];
            let lanes = [8, 16, 32, 64, 128][(m + i) % 5];
            let (f32_plan, _) = check_with(&e, lean(Some(lanes)), m, n, k, "lean");
            if possible {
                assert_eq!(f32_plan, LinearPlan::Lean { lanes }, "M {m} K {k}");
            }
        }
    }
    // M = 2: one tile of 224 steps, then one step more; M = 4 past its tile of 112 steps; M = 3
    // (a tile of 149 steps: not a divisor of the tile); the default lanes.
    for (m, k) in [(2, 14336), (2, 14400), (4, 7232), (3, 9600)] {
        let (f32_plan, _) = check_with(&e, lean(None), m, 37, k, "lean default lanes");
        if possible {
            assert!(matches!(f32_plan, LinearPlan::Lean { .. }), "M {m} K {k}");
        }
    }
    // K % 64 != 0: not the lean GEMV.
    let (f32_plan, _) = check_with(&e, lean(None), 4, 9, 1000, "K % 64 != 0");
    assert!(!matches!(f32_plan, LinearPlan::Lean { .. }));
}

#[test]
fn lean_gemv_reports_errors_like_cpu_ref() {
    let e = tuned_engine();
    for lanes in [8, 32] {
        e.set_bitnet_tuning(lean(Some(lanes)));
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
            "lean overflow",
        );
        let x = random_normal(18, m * k, 1.0);
        check_linear(&e, &x, m, &w, "after the errors");
    }
}

#[test]
fn lean_q_gemv_for_every_m_and_lane_count() {
    // The vec4 GEMV with the barrier-free epilogue, forced for quantized and f32 input (then
    // after act_quant): M = 1..8, odd N, lanes below, at and above the subgroup size.
    let e = tuned_engine();
    let possible = lean_possible(&e);
    let ks = [64, 1792, 6912];
    for m in 1..=8 {
        for (i, &k) in ks.iter().enumerate() {
            let n = [5, 67, 130, 33][(m + i) % 4];
            let lanes = [8, 16, 32, 64, 128][(m + i) % 5];
            let tuning = BitnetTuning {
                autotune: Some(false),
                fuse_decode: Some(false),
                lean_q_gemv: Some(true),
                gemv_lanes: Some(lanes),
                ..Default::default()
            };
            let plans = check_with(&e, tuning, m, n, k, "lean q");
            if possible {
                let want = LinearPlan::LeanQ { lanes };
                assert_eq!(plans, (want, want), "M {m} K {k}");
            }
        }
    }
    // Rescale overflow in one row: the output error, through both epilogues.
    for lanes in [8, 32] {
        e.set_bitnet_tuning(BitnetTuning {
            autotune: Some(false),
            fuse_decode: Some(false),
            lean_q_gemv: Some(true),
            gemv_lanes: Some(lanes),
            ..Default::default()
        });
        let (m, k) = (5, 1920);
        let big = TernaryMatrix::from_i8(&vec![1; 3 * k], 3, k, 3.0e38).unwrap();
        let mut x = random_normal(17, m * k, 1.0);
        x[2 * k..3 * k].fill(3.0e38);
        let xq = cpu_ref::quantize_activations(&x, m, k).unwrap();
        assert_same_result(
            e.bitlinear_quantized(&xq, &big),
            cpu_ref::bitlinear_quantized(&xq, &big),
            "lean q overflow",
        );
    }
}
