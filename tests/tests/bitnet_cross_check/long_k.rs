//! BitNet ops whose invocations loop tens of thousands of times over K. lavapipe (llvmpipe)
//! silently ends a shader's loops after 65 535 iterations in all (every traversal of every loop,
//! a WGSL loop's exit test included), so these sizes returned truncated results as `Ok` there
//! until the engine ran them another way on CPU adapters (a plan whose loops fit, else cpu-ref);
//! on other adapters they run as planned. Either way they must match cpu-ref bit for bit.
//! Activations are built quantized where the op takes them so, to keep the inputs small.

use bitnet_tests::{random_i8, random_normal, random_ternary};
use bitnet_wgpu::cpu_ref::{self, QuantizedActivations, TernaryMatrix};
use bitnet_wgpu::{BackendKind, BitnetTuning, Engine, LinearPlan};

use crate::support::{assert_acts_eq, assert_bits_eq, engine};
use crate::variants::tuned_engine;

/// Random quantized activations `[m, k]` (any i8, absmax in 0.5..4.5).
fn acts(seed: u64, m: usize, k: usize) -> QuantizedActivations {
    let absmax = (0..m).map(|r| 0.5 + r as f32 * 0.5).collect();
    QuantizedActivations::from_parts(random_i8(seed, m * k), absmax, m, k).unwrap()
}

/// Random ternary weights `[n, k]`.
fn weights(seed: u64, n: usize, k: usize) -> TernaryMatrix {
    TernaryMatrix::from_i8(&random_ternary(seed, n * k), n, k, 0.0125).unwrap()
}

/// Accumulators and outputs of `e` on `xq` and `w` against cpu-ref.
fn check_quantized(e: &Engine, xq: &QuantizedActivations, w: &TernaryMatrix, ctx: &str) {
    let want = cpu_ref::bitlinear_accumulate(xq, w).unwrap();
    let got = e.bitlinear_accumulate(xq, w).unwrap();
    if let Some(i) = (0..want.len()).find(|&i| got[i] != want[i]) {
        panic!(
            "{ctx}: accumulator {i} is {} vs cpu-ref {}",
            got[i], want[i]
        );
    }
    let want = cpu_ref::bitlinear_quantized(xq, w).unwrap();
    assert_bits_eq(&e.bitlinear_quantized(xq, w).unwrap(), &want, ctx);
}

/// `act_quant.wgsl` (K % 4 != 0): one workgroup per row, whose threads take K / 256 values for
/// the absmax and K / 1024 words to pack — past 65 535 from K of about 13.4M.
#[test]
fn activation_quantization_of_a_very_long_row_matches_cpu_ref() {
    let (m, k) = (1, 14_000_001);
    let x = random_normal(61, m * k, 1.0);
    let want = cpu_ref::quantize_activations(&x, m, k).unwrap();
    let got = engine().quantize_activations(&x, m, k).unwrap();
    assert_acts_eq(&got, &want, "activations [1, 14 000 001]");
}

/// The generic GEMV (K % 64 != 0): each thread walks K / 2048 weight words and, per word, a
/// loop over the M rows — past 65 535 from about K = 13.4M at M = 8.
#[test]
fn generic_gemv_over_a_very_long_k_matches_cpu_ref() {
    let (m, n, k) = (8, 4, 15_000_016);
    check_quantized(
        engine(),
        &acts(62, m, k),
        &weights(63, n, k),
        "generic GEMV K 15 000 016",
    );
}

/// The tiled GEMM (M > 8): per K step of 64 an inner loop over 16 words — past 65 535 from
/// about K = 233 000, per K slice when K is split.
#[test]
fn tiled_gemm_over_a_long_k_matches_cpu_ref() {
    let (m, n, k) = (9, 4, 1 << 18);
    let (xq, w) = (acts(64, m, k), weights(65, n, k));
    check_quantized(engine(), &xq, &w, "GEMM K 262 144 (default plan)");
    let info = engine().info();
    if info.backend_kind == BackendKind::Gpu && info.device_type == "Cpu" {
        // The heuristic's unsplit GEMM would loop past the limit: the plan taken splits K into
        // slices that fit (it ran on cpu-ref before, a plan that fits being at hand).
        let plan = engine().bitlinear_plan(m, n, k, false);
        assert!(
            matches!(plan, Some(LinearPlan::Gemm { splits, .. }) if splits > 1),
            "default plan of a GEMM over K 262 144 on a CPU adapter: {plan:?}"
        );
    }
    let e = tuned_engine();
    for t in [4, 8] {
        e.set_bitnet_tuning(BitnetTuning {
            autotune: Some(false),
            gemm_block: Some(t),
            gemm_splits: Some(1),
            ..Default::default()
        });
        check_quantized(&e, &xq, &w, &format!("GEMM {t}x{t} K 262 144"));
    }
    e.set_bitnet_tuning(BitnetTuning::default());
}

/// The staged and lean GEMVs on quantized rows loop over the M rows inside their K loops; at
/// M = 8 lavapipe truncated the staged one from about K = 7.8M (128 lanes) and the lean one from
/// K = 3.36M (8 lanes).
#[test]
fn staged_and_lean_q_gemvs_over_a_long_k_match_cpu_ref() {
    let e = tuned_engine();
    let (m, n) = (8, 4);
    let cases = [
        (
            "staged GEMV K 8 388 608",
            1 << 23,
            BitnetTuning {
                staged_gemv: Some(true),
                ..Default::default()
            },
        ),
        (
            "lean GEMV (8 lanes) K 3 407 872",
            52 << 16,
            BitnetTuning {
                lean_q_gemv: Some(true),
                gemv_lanes: Some(8),
                ..Default::default()
            },
        ),
    ];
    for (ctx, k, tuning) in cases {
        e.set_bitnet_tuning(BitnetTuning {
            autotune: Some(false),
            ..tuning
        });
        check_quantized(&e, &acts(66, m, k), &weights(67, n, k), ctx);
    }
    e.set_bitnet_tuning(BitnetTuning::default());
}

/// Accumulators past 2^24 (K above 131 072 at |x| = 127): their f32 is rounded to nearest even
/// as cpu-ref's `acc as f32` does, ties included — Vulkan leaves an integer-to-float
/// conversion's rounding to the driver, so the kernels convert in two exact halves
/// (`i32_to_f32`). Rows of 127 with one varied entry and weights of ±1 with some zeros make
/// odd and even accumulators of both signs between 2^24 and 2^25 (odd = a tie).
#[test]
fn accumulators_past_2_pow_24_round_to_nearest_even() {
    for (k, m) in [(132_160, 2), (132_161, 2), (132_160, 9)] {
        let mut x = vec![127i8; m * k];
        for r in 0..m {
            x[r * k] = 127 - r as i8;
        }
        let xq = QuantizedActivations::from_parts(x, vec![1.0; m], m, k).unwrap();
        let n = 4;
        let mut w = vec![1i8; n * k];
        for j in 0..n {
            w[j * k + 1..j * k + 1 + j].fill(0);
        }
        w[3 * k..4 * k].iter_mut().for_each(|v| *v = -*v);
        let w = TernaryMatrix::from_i8(&w, n, k, 1.0).unwrap();
        let acc = cpu_ref::bitlinear_accumulate(&xq, &w).unwrap();
        assert!(acc.iter().all(|a| a.unsigned_abs() > 1 << 24));
        assert!(acc.iter().any(|a| a % 2 != 0) && acc.iter().any(|a| a % 2 == 0));
        // Not the 64 KiB-binding engine: one 132 KB row does not fit its bindings (a typed
        // LimitExceeded, tested elsewhere).
        for (name, e) in crate::support::engines()
            .into_iter()
            .filter(|(n, _)| *n != "chunked")
        {
            check_quantized(e, &xq, &w, &format!("{name}: K {k}, M {m}"));
        }
    }
}
