//! The BitLinear GEMMs (M > 8) on shapes that are no multiple of any tile: every register block of
//! the tiled dot4 GEMM and, where the device offers them, the cooperative-matrix GEMMs (f16, and
//! int8 through SPIR-V passthrough), unsplit and
//! with K split into slices (summed by the split epilogue), each forced
//! through `BitnetTuning` and compared with cpu-ref bit for bit (exact accumulators over the full
//! int8 range, and outputs). Plus `time_prefill_plans` (ignored: run with `--ignored` on a real
//! GPU), which times every GEMM plan on the M = 512 prefill shapes with the engine profiler.

use std::time::Instant;

use bitnet_tests::{Rng, gpu_engine, has_coop, has_coop_i8};
use bitnet_wgpu::cpu_ref::{self, QuantizedActivations, TernaryMatrix};
use bitnet_wgpu::{BitnetTuning, CoopKind, Engine, LinearPlan};

/// (M, N, K): M, N and K straddle every tile edge (16 T, 128) and the K step (64 / 32 k), with odd
/// word counts and padded codes.
const SHAPES: [(usize, usize, usize); 7] = [
    (9, 1, 16),
    (17, 33, 17),
    (65, 70, 48),
    (129, 128, 32),
    (130, 257, 1000),
    (200, 300, 552),
    (255, 131, 2576),
];

/// Random int8 activations (the full range, -128 included) with absmax scales, and ternary
/// weights with scale 0.75.
fn problem(seed: u64, m: usize, n: usize, k: usize) -> (QuantizedActivations, TernaryMatrix) {
    let mut rng = Rng::new(seed);
    let x: Vec<i8> = (0..m * k).map(|_| rng.next_u64() as u8 as i8).collect();
    let w: Vec<i8> = (0..n * k).map(|_| rng.below(3) as i8 - 1).collect();
    let absmax: Vec<f32> = (0..m).map(|_| rng.range_f32(0.01, 8.0)).collect();
    let xq = QuantizedActivations::from_parts(x, absmax, m, k).unwrap();
    let wq = TernaryMatrix::from_i8(&w, n, k, 0.75).unwrap();
    (xq, wq)
}

/// The GEMM tunings to check: both register blocks, and the coop GEMM where available, each
/// unsplit and with K split in 2 and 8 slices (8 leaves slices empty on the short-K shapes).
fn tunings(e: &Engine) -> Vec<(BitnetTuning, Option<LinearPlan>)> {
    let base = BitnetTuning {
        autotune: Some(false),
        gemm_coop: Some(false),
        ..Default::default()
    };
    let mut out = Vec::new();
    for splits in [1, 2, 8] {
        for t in [4, 8] {
            let tuning = BitnetTuning {
                gemm_block: Some(t),
                gemm_splits: Some(splits),
                ..base
            };
            out.push((tuning, Some(LinearPlan::Gemm { t, splits })));
        }
        for kind in CoopKind::ALL {
            let available = match kind {
                CoopKind::F16 => has_coop(e),
                CoopKind::Int8 | CoopKind::Int8N96 => has_coop_i8(e),
            };
            if available {
                let coop = BitnetTuning {
                    gemm_coop: Some(true),
                    gemm_coop_kernel: Some(kind),
                    gemm_splits: Some(splits),
                    ..base
                };
                out.push((coop, Some(LinearPlan::Coop { splits, kind })));
            }
        }
    }
    out
}

#[test]
fn gemm_plans_match_cpu_ref_on_odd_shapes() {
    let e = gpu_engine();
    for (tuning, plan) in tunings(&e) {
        e.set_bitnet_tuning(tuning);
        for (i, &(m, n, k)) in SHAPES.iter().enumerate() {
            let ctx = format!("M {m} N {n} K {k} {plan:?}");
            let (xq, wq) = problem(700 + i as u64, m, n, k);
            let want_acc = cpu_ref::bitlinear_accumulate(&xq, &wq).unwrap();
            let want_y = cpu_ref::bitlinear_quantized(&xq, &wq).unwrap();
            let x = e.upload_activations(&xq).unwrap();
            let w = e.upload_ternary(&wq).unwrap();
            let acc = e.bitlinear_accumulate_tensor(&x, &w).unwrap();
            let got_acc: Vec<i32> = acc.read_u32().unwrap().iter().map(|&v| v as i32).collect();
            let y = e.bitlinear_tensor(&x, &w).unwrap().read_f32().unwrap();
            assert_eq!(e.bitlinear_plan(m, n, k, false), plan, "{ctx}: plan");
            let bad = got_acc.iter().zip(&want_acc).position(|(a, b)| a != b);
            assert!(bad.is_none(), "{ctx}: accumulator {bad:?} differs");
            let bad = y
                .iter()
                .zip(&want_y)
                .position(|(a, b)| a.to_bits() != b.to_bits());
            assert!(bad.is_none(), "{ctx}: output {bad:?} differs");
        }
    }
}

/// The M = 512 prefill shapes (N, K) of bench/RESULTS.md.
const PREFILL: [(usize, usize); 6] = [
    (2560, 2560),
    (640, 2560),
    (6912, 2560),
    (2560, 6912),
    (14336, 4096),
    (4096, 14336),
];

#[test]
#[ignore = "timing on a real GPU: cargo test --release ... -- --ignored --nocapture"]
fn time_prefill_plans() {
    const M: usize = 512;
    const CALLS: usize = 20;
    let e = gpu_engine();
    println!("adapter: {:?}", e.info());
    for (i, &(n, k)) in PREFILL.iter().enumerate() {
        let (xq, wq) = problem(900 + i as u64, M, n, k);
        let x = e.upload_activations(&xq).unwrap();
        let w = e.upload_ternary(&wq).unwrap();
        // The tuner's own verdict first (runs the coop self-test where available).
        e.set_bitnet_tuning(BitnetTuning::default());
        let tuned = e.autotune_bitlinear(M, n, k, false);
        println!("{M}x{n}x{k}: autotune -> {tuned:?}");
        let want = cpu_ref::bitlinear_accumulate(&xq, &wq).unwrap();
        for (tuning, plan) in tunings(&e) {
            e.set_bitnet_tuning(tuning);
            let acc = e.bitlinear_accumulate_tensor(&x, &w).unwrap();
            let got: Vec<i32> = acc.read_u32().unwrap().iter().map(|&v| v as i32).collect();
            let exact = got == want;
            e.set_profiling(true).unwrap();
            e.reset_profile();
            let start = Instant::now();
            for _ in 0..CALLS {
                drop(e.bitlinear_tensor(&x, &w).unwrap());
            }
            e.sync().unwrap();
            let wall = start.elapsed().as_secs_f64() * 1e6 / CALLS as f64;
            let report = e.profile_report().unwrap();
            e.set_profiling(false).unwrap();
            let kernel = report.total_ns() as f64 / 1e3 / CALLS as f64;
            let tops = 2.0 * (M * n * k) as f64 / (kernel * 1e-6) / 1e12;
            println!(
                "{M}x{n}x{k} {plan:?}: exact {exact}, kernel {kernel:.1} µs ({tops:.1} TOP/s), \
                 wall {wall:.1} µs/call"
            );
        }
    }
}
