//! BitLinear tuning sweep — ignored by default, meant for a real GPU:
//! `cargo test --release -p bitnet-tests --test bitnet_cross_check_sweep -- --ignored --nocapture`.
//!
//! For the benchmark's shapes it prints the GPU time (engine profiler: timestamp queries around
//! every dispatch, summed over the op's kernels, median of repeats) of every BitLinear plan forced
//! one at a time, with weights rotating through copies larger than the GPU's L2 (cold, as in a
//! model), then the autotuned plan and the 210-matrix BitNet-2B4T decode stack (profiler time and
//! one-submission wall time). Every plan's output is also compared with the autotuned plan's, so
//! the sweep doubles as a bit-exactness check across variants on the device. `BITNET_SWEEP_QUICK=1`
//! keeps two shapes and M ∈ {1, 512}; `=3` the four 2B4T shapes at M ∈ {1, 8} (batched decode:
//! fused decode, batched, quant + vec4 and quant + staged GEMVs at every lane count).

use std::time::Instant;

use bitnet_tests::{Rng, random_normal};
use bitnet_wgpu::{BitnetTuning, Engine, EngineOptions, Tensor, cpu_ref};

/// Weight bytes each shape rotates through (the H200's L2 is 60 MB).
const COLD_BYTES: usize = 256 << 20;
const REPEATS: usize = 9;
const SHAPES: [(usize, usize); 6] = [
    (2560, 2560),
    (640, 2560),
    (6912, 2560),
    (2560, 6912),
    (14336, 4096),
    (4096, 14336),
];
const TOKENS: [usize; 4] = [1, 8, 64, 512];
const LANES: [u32; 6] = [8, 16, 32, 64, 128, 256];
const BLOCKS: [u32; 2] = [4, 8];

/// Random ternary weights made directly (quantizing f32 would need 4x the memory).
fn ternary(n: usize, k: usize, seed: u64) -> cpu_ref::TernaryMatrix {
    let mut r = Rng::new(seed);
    let w: Vec<i8> = (0..n * k).map(|_| r.below(3) as i8 - 1).collect();
    cpu_ref::TernaryMatrix::from_i8(&w, n, k, 0.0125).unwrap()
}

/// Median GPU milliseconds of `f(i)` (profiler time of everything it records), after a warm-up.
fn gpu_ms(e: &Engine, mut f: impl FnMut(usize) -> Tensor) -> (f64, Tensor) {
    let mut last = f(0);
    e.sync().unwrap();
    let mut t = Vec::new();
    for i in 1..=REPEATS {
        e.reset_profile();
        last = f(i);
        e.sync().unwrap();
        t.push(e.profile_report().unwrap().total_ns() as f64 * 1e-6);
    }
    t.sort_by(f64::total_cmp);
    (t[t.len() / 2], last)
}

/// Every plan worth timing for `m` rows of length `k` (activations given as f32).
fn plans(m: usize, k: usize) -> Vec<(String, BitnetTuning)> {
    let off = BitnetTuning {
        autotune: Some(false),
        ..Default::default()
    };
    let mut out = vec![(
        "generic".to_string(),
        BitnetTuning {
            generic_gemv: true,
            ..off
        },
    )];
    if m > 8 {
        out.clear();
        for b in BLOCKS {
            out.push((
                format!("gemm {b}x{b}"),
                BitnetTuning {
                    gemm_block: Some(b),
                    ..off
                },
            ));
        }
        out.push((
            "coop gemm".to_string(),
            BitnetTuning {
                gemm_coop: Some(true),
                ..off
            },
        ));
        return out;
    }
    for l in LANES
        .into_iter()
        .filter(|&l| l as usize <= 2 * (k / 64).max(8))
    {
        if m == 1 {
            let fused = BitnetTuning {
                gemv_lanes: Some(l),
                fuse_decode: Some(true),
                ..off
            };
            out.push((format!("fused {l}"), fused));
        }
        let split = BitnetTuning {
            gemv_lanes: Some(l),
            fuse_decode: Some(false),
            ..off
        };
        out.push((format!("quant+vec4 {l}"), split));
        let staged = BitnetTuning {
            staged_gemv: Some(true),
            ..split
        };
        out.push((format!("quant+staged {l}"), staged));
        let batch = BitnetTuning {
            gemv_lanes: Some(l),
            batch_gemv: Some(true),
            ..off
        };
        out.push((format!("batch {l}"), batch));
    }
    out
}

fn gb_per_s(bytes: usize, ms: f64) -> f64 {
    bytes as f64 / ms / 1e6
}

#[test]
#[ignore = "a tuning sweep for real GPUs (minutes on lavapipe)"]
fn bitlinear_plan_sweep() {
    let quick = std::env::var("BITNET_SWEEP_QUICK").unwrap_or_default();
    let e = Engine::gpu_with(EngineOptions {
        batch_dispatches: 4096,
        ..Default::default()
    })
    .unwrap();
    e.set_profiling(true)
        .expect("the sweep needs TIMESTAMP_QUERY");
    let info = e.info();
    println!(
        "adapter: {} ({}), subgroups {}..={}",
        info.adapter_name, info.backend, info.subgroup_min_size, info.subgroup_max_size
    );
    let (shapes, tokens, layers): (&[(usize, usize)], &[usize], usize) = match quick.as_str() {
        "1" => (&SHAPES[2..4], &[1, 512], 30),
        "2" => (&SHAPES[1..2], &[1, 64], 1),
        // Issue 4's batching: the 2B4T decode shapes at B = 1 and 8.
        "3" => (&SHAPES[..4], &[1, 8], 30),
        _ => (&SHAPES, &TOKENS, 30),
    };
    for &(n, k) in shapes {
        let bytes = n * k / 4;
        let copies = COLD_BYTES.div_ceil(bytes).clamp(1, 64);
        let host = ternary(n, k, (n * 31 + k) as u64);
        let ws: Vec<Tensor> = (0..copies)
            .map(|_| e.upload_ternary(&host).unwrap())
            .collect();
        for &m in tokens {
            let x = e
                .upload_f32(&random_normal((m * k) as u64, m * k, 1.0), &[m, k])
                .unwrap();
            e.set_bitnet_tuning(BitnetTuning::default());
            let t0 = Instant::now();
            let tuned = e.autotune_bitlinear(m, n, k, true).unwrap().unwrap();
            let tune_s = t0.elapsed().as_secs_f64();
            let (tuned_ms, want) = gpu_ms(&e, |i| e.bitlinear_tensor(&x, &ws[i % copies]).unwrap());
            let want = want.read_f32().unwrap();
            let traffic = bytes + 4 * m * (n + k);
            println!(
                "[{n}x{k}] M={m}: autotuned {tuned} in {tune_s:.2} s: {:.1} µs ({:.0} GB/s)",
                tuned_ms * 1e3,
                gb_per_s(traffic, tuned_ms)
            );
            for (name, tuning) in plans(m, k) {
                e.set_bitnet_tuning(tuning);
                let (ms, y) = gpu_ms(&e, |i| e.bitlinear_tensor(&x, &ws[i % copies]).unwrap());
                let same = y
                    .read_f32()
                    .unwrap()
                    .iter()
                    .zip(&want)
                    .all(|(a, b)| a.to_bits() == b.to_bits());
                if !same {
                    println!(
                        "    {name}: OUTPUT DIFFERS from the autotuned plan's (not bit-exact)"
                    );
                }
                println!(
                    "    {name:<16} {:>9.1} µs {:>7.0} GB/s {:>8.2} TOP/s",
                    ms * 1e3,
                    gb_per_s(traffic, ms),
                    (2 * m * n * k) as f64 / ms / 1e9
                );
            }
        }
    }
    decode_stack(&e, layers);
    quantization(&e, shapes);
    // The floor under every figure above: one dispatch that does (almost) nothing.
    let (floor, _) = gpu_ms(&e, |_| e.fill(&[1], 0.0).unwrap());
    println!("empty dispatch (fill of one value): {:.1} µs", floor * 1e3);
}

/// Weight and activation quantization on the sweep's shapes: GPU time per kernel (profiler).
fn quantization(e: &Engine, shapes: &[(usize, usize)]) {
    e.set_bitnet_tuning(BitnetTuning::default());
    e.set_profiling(true).unwrap();
    for &(n, k) in shapes {
        let copies = COLD_BYTES.div_ceil(4 * n * k).clamp(1, 8);
        let w = random_normal((n + k) as u64, n * k, 0.02);
        let ws: Vec<Tensor> = (0..copies)
            .map(|_| e.upload_f32(&w, &[n, k]).unwrap())
            .collect();
        let (ms, _) = gpu_ms(e, |i| e.quantize_weights_tensor(&ws[i % copies]).unwrap());
        let bytes = 8 * n * k + n * k / 4;
        println!(
            "weight_quant [{n}x{k}]: {:.1} µs ({:.0} GB/s); last repeat per kernel:\n{}",
            ms * 1e3,
            gb_per_s(bytes, ms),
            e.profile_report().unwrap()
        );
        for m in [1, 512] {
            let x = e
                .upload_f32(&random_normal(m as u64, m * k, 1.0), &[m, k])
                .unwrap();
            let (ms, _) = gpu_ms(e, |_| e.quantize_activations_tensor(&x).unwrap());
            println!(
                "act_quant M={m} K={k}: {:.1} µs ({:.0} GB/s)",
                ms * 1e3,
                gb_per_s(5 * m * k, ms)
            );
        }
    }
}

/// The 210-matrix BitNet-2B4T decode stack: per-dispatch profiler time and one-submission wall
/// time, autotuned and with fusion off.
fn decode_stack(e: &Engine, layers: usize) {
    let layer = [
        (2560, 2560),
        (640, 2560),
        (640, 2560),
        (2560, 2560),
        (6912, 2560),
        (6912, 2560),
        (2560, 6912),
    ];
    // One host matrix per distinct shape (contents do not matter for timing), 7 * layers
    // distinct device copies.
    let hosts: Vec<_> = layer
        .iter()
        .map(|&(n, k)| ternary(n, k, (n + k) as u64))
        .collect();
    let ws: Vec<Tensor> = (0..layers * layer.len())
        .map(|i| e.upload_ternary(&hosts[i % layer.len()]).unwrap())
        .collect();
    let xh = e
        .upload_f32(&random_normal(1, 2560, 1.0), &[1, 2560])
        .unwrap();
    let xf = e
        .upload_f32(&random_normal(2, 6912, 1.0), &[1, 6912])
        .unwrap();
    let step = || {
        for w in &ws {
            let x = if w.shape()[1] == 6912 { &xf } else { &xh };
            drop(e.bitlinear_tensor(x, w).unwrap());
        }
    };
    for (name, tuning) in [
        ("autotuned", BitnetTuning::default()),
        (
            "no fusion",
            BitnetTuning {
                fuse_decode: Some(false),
                ..Default::default()
            },
        ),
    ] {
        e.set_bitnet_tuning(tuning);
        e.set_profiling(true).unwrap();
        step();
        e.sync().unwrap();
        let mut prof = Vec::new();
        for _ in 0..5 {
            e.reset_profile();
            step();
            e.sync().unwrap();
            prof.push(e.profile_report().unwrap().total_ns() as f64 * 1e-6);
        }
        e.set_profiling(false).unwrap();
        let mut wall = Vec::new();
        for _ in 0..10 {
            let t = Instant::now();
            step();
            e.sync().unwrap();
            wall.push(t.elapsed().as_secs_f64() * 1e3);
        }
        prof.sort_by(f64::total_cmp);
        wall.sort_by(f64::total_cmp);
        let plans: Vec<String> = [(2560, 2560), (640, 2560), (6912, 2560), (2560, 6912)]
            .iter()
            .filter_map(|&(n, k)| {
                e.bitlinear_plan(1, n, k, true)
                    .or(e.bitlinear_plan(1, n, k, false))
                    .map(|p| format!("{n}x{k}: {p}"))
            })
            .collect();
        println!(
            "decode stack ({} matrices, {name}): profiler {:.3} ms, one-submission wall {:.3} ms (median); plans {}",
            ws.len(),
            prof[prof.len() / 2],
            wall[wall.len() / 2],
            plans.join(", ")
        );
    }
}
