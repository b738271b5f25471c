//! Every BitLinear kernel variant, forced one at a time through `BitnetTuning`, against cpu-ref:
//! the fused decode GEMV and the vec4 GEMV at every lane count, the generic GEMV, every GEMM
//! register block, plus the fused kernel's error reporting, autotune, and the fast quantization
//! variants on edge values (the tiled M ≤ 8 GEMVs: `batched.rs`). Shapes straddle every boundary
//! of the variants: K % 64 == 0 or not, K up to and past the fused kernel's limit, N not a
//! multiple of any block, M = 1..8 and > 8.

use std::sync::{Mutex, MutexGuard, OnceLock};

use bitnet_tests::{gpu_engine, has_coop, has_coop_i8, random_normal};
use bitnet_wgpu::cpu_ref::{self, TernaryMatrix};
use bitnet_wgpu::{BitnetTuning, CoopKind, Engine, Error, LinearPlan};

use crate::support::{assert_same_result, check_acts, check_linear, check_weights};

/// An engine of its own (tuning is per engine), one test at a time.
pub(crate) fn tuned_engine() -> MutexGuard<'static, Engine> {
    static E: OnceLock<Mutex<Engine>> = OnceLock::new();
    E.get_or_init(|| Mutex::new(gpu_engine()))
        .lock()
        .unwrap_or_else(|p| p.into_inner())
}

pub(crate) fn weights(seed: u64, n: usize, k: usize) -> TernaryMatrix {
    cpu_ref::quantize_weights(&random_normal(seed, n * k, 0.02), n, k).unwrap()
}

/// Runs check_linear under `tuning` and returns the plans used: for f32 input (the quantized
/// input's plan, unless the f32 shape had a plan of its own: M = 1 where fusion is possible) and
/// for quantized input.
pub(crate) fn check_with(
    e: &Engine,
    tuning: BitnetTuning,
    m: usize,
    n: usize,
    k: usize,
    ctx: &str,
) -> (LinearPlan, LinearPlan) {
    e.set_bitnet_tuning(tuning);
    let seed = (m * 1_000_003 + n * 1009 + k) as u64;
    let w = weights(seed, n, k);
    let x = random_normal(seed + 1, m * k, 1.5);
    check_linear(
        e,
        &x,
        m,
        &w,
        &format!("{ctx}: M {m} N {n} K {k} {tuning:?}"),
    );
    let quantized = e
        .bitlinear_plan(m, n, k, false)
        .expect("quantized plan cached");
    (
        e.bitlinear_plan(m, n, k, true).unwrap_or(quantized),
        quantized,
    )
}

#[test]
fn gemv_variants_at_every_lane_count() {
    let e = tuned_engine();
    let subgroups = e
        .info()
        .features
        .contains(bitnet_wgpu::wgpu::Features::SUBGROUP);
    let shapes = [
        (1, 37, 64),
        (1, 129, 2560),
        (1, 5, 15360),
        (2, 67, 128),
        (3, 300, 2560),
        (8, 9, 6912),
    ];
    for lanes in [8, 16, 32, 64, 128, 256] {
        for fuse in [true, false] {
            let tuning = BitnetTuning {
                autotune: Some(false),
                gemv_lanes: Some(lanes),
                fuse_decode: Some(fuse),
                ..Default::default()
            };
            for &(m, n, k) in &shapes {
                let (f32_plan, q_plan) = check_with(&e, tuning, m, n, k, "vec4");
                if !subgroups {
                    continue;
                }
                assert_eq!(q_plan, LinearPlan::Vec4 { lanes });
                // fuse_decode: the fused GEMV for every M ≤ 8 (one workgroup per row block and row).
                let want = match fuse {
                    true => LinearPlan::Fused { lanes },
                    false => LinearPlan::Vec4 { lanes },
                };
                assert_eq!(f32_plan, want, "M {m} K {k}");
            }
        }
    }
    // 4 lanes (256 rows per workgroup): the fused GEMV only (wide batches take it by default);
    // the other GEMVs keep their own choice.
    let four = BitnetTuning {
        autotune: Some(false),
        gemv_lanes: Some(4),
        fuse_decode: Some(true),
        ..Default::default()
    };
    for &(m, n, k) in &shapes {
        let (f32_plan, q_plan) = check_with(&e, four, m, n, k, "fused, 4 lanes");
        if subgroups {
            assert_eq!(f32_plan, LinearPlan::Fused { lanes: 4 }, "M {m} K {k}");
            assert_ne!(q_plan, LinearPlan::Vec4 { lanes: 4 }, "M {m} K {k}");
        }
    }
    // Past the fused limit, K % 64 != 0, and the generic variant forced.
    let forced = BitnetTuning {
        autotune: Some(false),
        fuse_decode: Some(true),
        ..Default::default()
    };
    let (f32_plan, _) = check_with(&e, forced, 1, 7, 15424, "past the fused limit");
    assert!(!matches!(f32_plan, LinearPlan::Fused { .. }));
    let (f32_plan, q_plan) = check_with(&e, forced, 1, 70, 1000, "K % 64 != 0");
    assert_eq!(
        (f32_plan, q_plan),
        (LinearPlan::Generic, LinearPlan::Generic)
    );
    let generic = BitnetTuning {
        autotune: Some(false),
        generic_gemv: true,
        ..Default::default()
    };
    for &(m, n, k) in &shapes[..4] {
        let plans = check_with(&e, generic, m, n, k, "generic");
        assert_eq!(plans, (LinearPlan::Generic, LinearPlan::Generic));
    }
}

#[test]
fn gemm_at_every_register_block() {
    let e = tuned_engine();
    let shapes = [
        (9, 1, 16),
        (33, 67, 100),
        (64, 130, 2560),
        (130, 200, 320),
        (257, 129, 64),
    ];
    for (t, splits) in [(4, 1), (8, 1), (4, 4), (8, 2)] {
        let tuning = BitnetTuning {
            autotune: Some(false),
            gemm_block: Some(t),
            gemm_splits: Some(splits),
            ..Default::default()
        };
        for &(m, n, k) in &shapes {
            let plans = check_with(&e, tuning, m, n, k, "gemm");
            assert_eq!(plans.1, LinearPlan::Gemm { t, splits });
        }
    }
}

#[test]
fn coop_matrix_gemm_where_the_device_has_it() {
    // Forced (no self-test): cpu-ref is the judge. Elsewhere (lavapipe) the tiled GEMM runs.
    let e = tuned_engine();
    let shapes = [
        (9, 1, 16),
        (64, 128, 64),
        (72, 200, 1000),
        (130, 257, 2560),
        (257, 129, 96),
    ];
    // The f16 kernel, then the int8 ones (SPIR-V passthrough; Vulkan only).
    for kind in CoopKind::ALL {
        let available = match kind {
            CoopKind::F16 => has_coop(&e),
            CoopKind::Int8 | CoopKind::Int8N96 => has_coop_i8(&e),
        };
        let tuning = BitnetTuning {
            autotune: Some(false),
            gemm_coop: Some(true),
            gemm_coop_kernel: Some(kind),
            gemm_splits: Some(4),
            ..Default::default()
        };
        for &(m, n, k) in &shapes {
            let plans = check_with(&e, tuning, m, n, k, "coop");
            if available {
                assert_eq!(plans.1, LinearPlan::Coop { splits: 4, kind });
            } else {
                assert!(matches!(plans.1, LinearPlan::Gemm { .. }));
            }
        }
    }
}

#[test]
fn fused_decode_reports_errors_like_cpu_ref() {
    let e = tuned_engine();
    e.set_bitnet_tuning(BitnetTuning {
        autotune: Some(false),
        fuse_decode: Some(true),
        ..Default::default()
    });
    let k = 640;
    let w = weights(5, 9, k);
    for bad in [f32::NAN, f32::INFINITY, f32::NEG_INFINITY] {
        let mut x = random_normal(6, k, 1.0);
        x[517] = bad;
        x[333] = bad;
        let want = cpu_ref::bitlinear(&x, 1, &w)
            .map_err(Error::from)
            .unwrap_err();
        assert_eq!(e.bitlinear(&x, 1, &w).unwrap_err(), want, "{bad}");
        // Through the resident API: reported at the read.
        let y = e
            .bitlinear_tensor(
                &e.upload_f32(&x, &[1, k]).unwrap(),
                &e.upload_ternary(&w).unwrap(),
            )
            .unwrap();
        assert_eq!(y.read_f32().unwrap_err(), want, "{bad}: resident");
    }
    // Finite x, rescale overflow: the output error (status word 1).
    let big = TernaryMatrix::from_i8(&vec![1; 3 * k], 3, k, 3.0e38).unwrap();
    let x = vec![3.0e38f32; k];
    assert_same_result(
        e.bitlinear(&x, 1, &big),
        cpu_ref::bitlinear(&x, 1, &big),
        "fused overflow",
    );
    assert!(matches!(
        e.bitlinear_plan(1, 3, k, true),
        Some(LinearPlan::Fused { .. })
    ));
    // The engine stays usable.
    let x = random_normal(7, k, 1.0);
    check_linear(&e, &x, 1, &w, "after the errors");
}

#[test]
fn autotune_caches_a_valid_plan() {
    let e = tuned_engine();
    e.set_bitnet_tuning(BitnetTuning::default());
    for (m, n, k, f32_input) in [
        (1, 300, 1024, true),
        (1, 300, 1024, false),
        (4, 64, 256, false),
        (20, 64, 128, false),
    ] {
        let plan = e
            .autotune_bitlinear(m, n, k, f32_input)
            .unwrap()
            .expect("GPU engine");
        assert_eq!(e.bitlinear_plan(m, n, k, f32_input), Some(plan));
        let w = weights(11, n, k);
        let x = random_normal(12, m * k, 1.0);
        check_linear(&e, &x, m, &w, &format!("autotuned {plan}"));
        assert_eq!(
            e.bitlinear_plan(m, n, k, f32_input),
            Some(plan),
            "the cached plan is kept"
        );
    }
    assert_eq!(
        Engine::cpu().autotune_bitlinear(1, 8, 64, true).unwrap(),
        None
    );
}

/// Automatic tuning measures a GEMM shape once per bucket of M (the next power of two): prompts
/// of 9 and 13 rows run the plan measured at 16, instead of a measurement (a sync point) and a
/// line of the plan cache file for every prompt length a server sees.
#[test]
fn automatic_tuning_measures_once_per_bucket_of_m() {
    let e = tuned_engine();
    e.set_bitnet_tuning(BitnetTuning {
        autotune: Some(true),
        ..Default::default()
    });
    // 256 KiB of packed weights: large enough to be tuned.
    let (n, k) = (256, 4096);
    let w = weights(16, n, k);
    for m in [9, 13] {
        let x = random_normal(17 + m as u64, m * k, 1.0);
        check_linear(&e, &x, m, &w, &format!("M {m}"));
    }
    let bucket = e.bitlinear_plan(16, n, k, false);
    assert!(bucket.is_some(), "the bucket M = 16 was measured");
    assert_eq!(e.bitlinear_plan(9, n, k, false), bucket);
    assert_eq!(e.bitlinear_plan(13, n, k, false), bucket);
    assert_eq!(e.bitlinear_plan(32, n, k, false), None, "no other bucket");
    e.set_bitnet_tuning(BitnetTuning::default());
}

#[test]
fn autotune_keeps_the_users_profiling_report() {
    // GEMM candidates are timed on the GPU clock by a profiler swapped in for the engine's own:
    // the user's report must neither gain the tuner's calls nor lose its own.
    let e = tuned_engine();
    e.set_bitnet_tuning(BitnetTuning {
        autotune: Some(false),
        ..Default::default()
    });
    let timestamps = e
        .info()
        .features
        .contains(bitnet_wgpu::wgpu::Features::TIMESTAMP_QUERY);
    assert_eq!(e.set_profiling(true).is_ok(), timestamps);
    if !timestamps {
        // Wall-clock tuning only; autotune_caches_a_valid_plan covers it.
        return;
    }
    e.reset_profile();
    let (m, n, k) = (24, 96, 256);
    check_linear(
        &e,
        &random_normal(14, m * k, 1.0),
        m,
        &weights(13, n, k),
        "profiled",
    );
    let before = e.profile_report().unwrap();
    assert!(before.dispatches > 0, "{before:?}");
    let plan = e.autotune_bitlinear(20, 64, 384, false).unwrap().unwrap();
    assert_eq!(e.profile_report().unwrap(), before, "after tuning ({plan})");
    // Still the user's per-dispatch profiler, still counting.
    check_linear(
        &e,
        &random_normal(15, m * k, 1.0),
        m,
        &weights(13, n, k),
        "again",
    );
    let after = e.profile_report().unwrap();
    assert_eq!(after.dispatches, 2 * before.dispatches, "{after:?}");
    e.set_profiling(false).unwrap();
    e.reset_profile();
}

#[test]
fn fast_quant_variants_on_edge_values() {
    let e = tuned_engine();
    e.set_bitnet_tuning(BitnetTuning {
        autotune: Some(false),
        ..Default::default()
    });
    let k = 64;
    // Exact ties of round-half-to-even after scaling by 127 / absmax = 1: x = i + 0.5.
    let mut ties: Vec<f32> = (0..k).map(|i| (i as f32 - 32.0) + 0.5).collect();
    ties[0] = 127.0;
    let sub: Vec<f32> = (0..k).map(|i| f32::from_bits(1 + i as u32 * 977)).collect();
    let huge: Vec<f32> = (0..k)
        .map(|i| if i % 3 == 0 { 3.0e38 } else { -1.0e38 })
        .collect();
    for (name, x) in [
        ("ties", ties),
        ("subnormal", sub),
        ("huge", huge),
        ("zeros", vec![0.0; k]),
    ] {
        for m in [1, 3, 9] {
            let xs: Vec<f32> = x.iter().cycle().take(m * k).copied().collect();
            check_acts(&e, &xs, m, k, name);
            // Scaled down so that the |w| sum of the huge case stays finite.
            let ws: Vec<f32> = xs.iter().map(|v| v * 1e-3).collect();
            let w = check_weights(&e, &ws, m, k, name);
            check_linear(&e, &xs, m, &w, name);
        }
    }
}

#[test]
fn weight_sum_finalizes_two_levels_at_once() {
    // 4352 x 4096 values: 4352 first-level blocks, so the finalizing workgroup sums two blocks of
    // block sums and then those two values (like BitNet-2B4T's 6912 x 2560 FFN weights).
    let (n, k) = (4352, 4096);
    let w = random_normal(99, n * k, 0.02);
    check_weights(&tuned_engine(), &w, n, k, "two-level finalize");
}

#[test]
fn coop_matrix_gemm_reports_non_finite_like_cpu_ref() {
    // Forced coop plans (each kernel where the device has it; elsewhere the tiled GEMM) must flag
    // an output that overflows f32 as cpu-ref does. The int8 GEMMs lost their flags on the H200
    // (immediates params mode: their status binding number was not Vulkan's; `spirv.rs`).
    let e = tuned_engine();
    let (m, n, k) = (16, 40, 256);
    let big: Vec<f32> = random_normal(21, n * k, 1.0)
        .iter()
        .map(|v| v * 1e31)
        .collect();
    let w = cpu_ref::quantize_weights(&big, n, k).unwrap();
    let mut x = random_normal(22, m * k, 1.0);
    x[6 * k + 1] = 1e10; // s · a overflows in row 6 only
    let want = cpu_ref::bitlinear(&x, m, &w);
    assert!(want.is_err(), "the case must overflow");
    for kind in CoopKind::ALL {
        e.set_bitnet_tuning(BitnetTuning {
            autotune: Some(false),
            gemm_coop: Some(true),
            gemm_coop_kernel: Some(kind),
            gemm_splits: Some(1),
            ..Default::default()
        });
        let got = e.bitlinear(&x, m, &w);
        let plan = e.bitlinear_plan(m, n, k, false);
        let available = match kind {
            CoopKind::F16 => has_coop(&e),
            CoopKind::Int8 | CoopKind::Int8N96 => has_coop_i8(&e),
        };
        if available {
            assert_eq!(plan, Some(LinearPlan::Coop { splits: 1, kind }));
        }
        assert_same_result(got, cpu_ref::bitlinear(&x, m, &w), &format!("{plan:?}"));
    }
}
