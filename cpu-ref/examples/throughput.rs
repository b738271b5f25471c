//! Throughput of the hot paths on this machine (not a test; run with
//! `cargo run --release -p bitnet-cpu-ref --example throughput`).
//!
//! Reports BitLinear GEMV (M = 1) in GB/s of packed weights, and weight / activation quantization
//! and the canonical sum in GB/s of f32 input, for every available SIMD level.

use std::hint::black_box;
use std::time::{Duration, Instant};

use bitnet_cpu_ref::{
    Isa, bitlinear_accumulate_with_isa, canonical_abs_sum_with_isa, quantize_activations,
    quantize_activations_with_isa, quantize_weights, quantize_weights_with_isa,
};

/// Fastest seconds per call of `f` over repetitions filling about `budget` (the minimum, since
/// this shared machine's other load only ever adds time).
fn time(budget: Duration, mut f: impl FnMut()) -> f64 {
    f(); // warm caches and the rayon pool
    let mut samples = Vec::new();
    let start = Instant::now();
    while start.elapsed() < budget || samples.len() < 5 {
        let t = Instant::now();
        f();
        samples.push(t.elapsed().as_secs_f64());
    }
    samples.sort_by(f64::total_cmp);
    samples[0]
}

fn data(n: usize, seed: u32) -> Vec<f32> {
    let mut s = seed;
    (0..n)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 17;
            s ^= s << 5;
            s as f32 / u32::MAX as f32 - 0.5
        })
        .collect()
}

fn main() -> Result<(), bitnet_cpu_ref::Error> {
    let budget = Duration::from_millis(800);
    println!("threads: {}", rayon::current_num_threads());
    for (n, k) in [(6912, 2560), (2560, 6912)] {
        let wf = data(n * k, 1);
        let w = quantize_weights(&wf, n, k)?;
        let xq = quantize_activations(&data(k, 2), 1, k)?;
        let bytes = (w.words().len() * 4) as f64;
        for isa in Isa::available() {
            let s = time(budget, || {
                black_box(bitlinear_accumulate_with_isa(&xq, &w, isa).unwrap());
            });
            println!(
                "bitlinear GEMV N={n} K={k} {isa:?}: {:.1} us, {:.2} GB/s packed weights",
                s * 1e6,
                bytes / s / 1e9
            );
        }
        let in_bytes = (n * k * 4) as f64;
        for isa in Isa::available() {
            let s = time(budget, || {
                black_box(quantize_weights_with_isa(&wf, n, k, isa).unwrap());
            });
            println!(
                "quantize_weights {n}x{k} {isa:?}: {:.2} GB/s f32 in",
                in_bytes / s / 1e9
            );
            let s = time(budget, || {
                black_box(quantize_activations_with_isa(&wf, n, k, isa).unwrap());
            });
            println!(
                "quantize_activations {n}x{k} {isa:?}: {:.2} GB/s f32 in",
                in_bytes / s / 1e9
            );
            let s = time(budget, || {
                black_box(canonical_abs_sum_with_isa(&wf, isa));
            });
            println!(
                "canonical_abs_sum {n}x{k} {isa:?}: {:.2} GB/s f32 in",
                in_bytes / s / 1e9
            );
        }
    }
    // Prefill-style GEMM: M = 64 activation rows against a 2560 x 2560 matrix.
    let (m, n, k) = (64, 2560, 2560);
    let w = quantize_weights(&data(n * k, 4), n, k)?;
    let xq = quantize_activations(&data(m * k, 5), m, k)?;
    for isa in Isa::available().into_iter().filter(|&i| i != Isa::Scalar) {
        let s = time(budget, || {
            black_box(bitlinear_accumulate_with_isa(&xq, &w, isa).unwrap());
        });
        let gops = 2.0 * (m * n * k) as f64 / s / 1e9;
        println!(
            "bitlinear GEMM M={m} N={n} K={k} {isa:?}: {:.1} us, {gops:.1} GOPS",
            s * 1e6
        );
    }
    // A matrix far larger than the last-level cache, so the weights stream from DRAM: random
    // valid codes (code 3 mapped to 1), N = 16 · 6912, K = 2560 → 70.8 MB packed.
    let (n, k) = (16 * 6912, 2560);
    let mut s = 0x1234_5678u32;
    let words: Vec<u32> = (0..n * k / 16)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 17;
            s ^= s << 5;
            let hi = s & (s >> 1) & 0x5555_5555; // low bit of every field holding code 3
            s & !(hi << 1) // 3 → 1
        })
        .collect();
    let w = bitnet_cpu_ref::TernaryMatrix::from_packed(words, n, k, 1.0)?;
    let xq = quantize_activations(&data(k, 2), 1, k)?;
    let bytes = (w.words().len() * 4) as f64;
    for isa in Isa::available().into_iter().filter(|&i| i != Isa::Scalar) {
        let s = time(budget, || {
            black_box(bitlinear_accumulate_with_isa(&xq, &w, isa).unwrap());
        });
        println!(
            "bitlinear GEMV N={n} K={k} (DRAM-resident) {isa:?}: {:.2} GB/s packed weights",
            bytes / s / 1e9
        );
    }
    // Activation quantization at decode size (one row of K = 2560).
    let x = data(2560, 3);
    for isa in Isa::available() {
        let s = time(budget, || {
            black_box(quantize_activations_with_isa(&x, 1, 2560, isa).unwrap());
        });
        println!(
            "quantize_activations 1x2560 {isa:?}: {:.2} us, {:.2} GB/s",
            s * 1e6,
            10240.0 / s / 1e9
        );
    }
    Ok(())
}
