//! Criterion benches of the CPU reference at the real BitNet shapes: BitLinear GEMV (M = 1) GB/s,
//! weight quantization and activation quantization GB/s, and attention at 2B4T's heads, all on
//! every host core (rayon).
//!
//! Throughput (GB/s, 10^9 bytes) is the compulsory traffic of
//! `bitnet_bench::workload::Workload::bytes`, the same count the headless benchmark uses, so the
//! GB/s here and in RESULTS.md are comparable.
//!
//! `cargo bench -p bitnet-bench --bench cpu_ops` (add `-- cpu_ref_bitlinear` to run one group).

use bitnet_bench::data;
use bitnet_bench::workload::{OpKind, SHAPES, Workload};
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use std::hint::black_box;
use std::time::Duration;

fn workload(op: OpKind, label: &'static str, m: usize, n: usize, k: usize) -> Workload {
    Workload {
        op,
        shape: label,
        m,
        n,
        k,
    }
}

/// cpu-ref BitLinear at M = 1 (decode GEMV) and M = 8 on every shape.
fn gemv(c: &mut Criterion) {
    let mut g = c.benchmark_group("cpu_ref_bitlinear");
    g.sample_size(10)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2));
    for s in SHAPES {
        let w = data::ternary(s.n, s.k, 7).expect("valid synthetic weights");
        for m in [1usize, 8] {
            let wl = workload(OpKind::Bitlinear, s.label, m, s.n, s.k);
            let x = data::floats(m * s.k, 8);
            g.throughput(Throughput::BytesDecimal(wl.bytes()));
            g.bench_with_input(
                BenchmarkId::new(format!("M{m}"), format!("{}x{}", s.n, s.k)),
                &x,
                |b, x| {
                    b.iter(|| black_box(bitnet_cpu_ref::bitlinear(x, m, &w).expect("valid shapes")))
                },
            );
        }
    }
    g.finish();
}

/// cpu-ref absmean weight quantization on every shape.
fn weight_quant(c: &mut Criterion) {
    let mut g = c.benchmark_group("cpu_ref_weight_quant");
    g.sample_size(10)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2));
    for s in SHAPES {
        let wl = workload(OpKind::WeightQuant, s.label, 0, s.n, s.k);
        let w = data::floats(s.n * s.k, 9);
        g.throughput(Throughput::BytesDecimal(wl.bytes()));
        g.bench_with_input(
            BenchmarkId::from_parameter(format!("{}x{}", s.n, s.k)),
            &w,
            |b, w| {
                b.iter(|| {
                    black_box(bitnet_cpu_ref::quantize_weights(w, s.n, s.k).expect("valid shapes"))
                })
            },
        );
    }
    g.finish();
}

/// cpu-ref absmax activation quantization for every distinct K at M = 1 and M = 512.
fn act_quant(c: &mut Criterion) {
    let mut g = c.benchmark_group("cpu_ref_act_quant");
    g.sample_size(10)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2));
    for k in [2560usize, 6912, 4096, 14336] {
        for m in [1usize, 512] {
            let wl = workload(OpKind::ActQuant, "", m, 0, k);
            let x = data::floats(m * k, 10);
            g.throughput(Throughput::BytesDecimal(wl.bytes()));
            g.bench_with_input(
                BenchmarkId::new(format!("M{m}"), format!("K{k}")),
                &x,
                |b, x| {
                    b.iter(|| {
                        black_box(
                            bitnet_cpu_ref::quantize_activations(x, m, k).expect("valid shapes"),
                        )
                    })
                },
            );
        }
    }
    g.finish();
}

/// cpu-ref attention at BitNet b1.58 2B4T's heads (20 query heads over 5 kv heads of 128):
/// decode (one query, causal) over 512 and 4096 cached positions, and a 512-position causal
/// prefill. Throughput is the K and V bytes a call reads.
fn attention(c: &mut Criterion) {
    let mut g = c.benchmark_group("cpu_ref_attention");
    g.sample_size(10)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2));
    let (hq, hkv, d) = (20usize, 5usize, 128usize);
    for (tq, tk) in [(1usize, 512usize), (1, 4096), (512, 512)] {
        let tensor = |rows: usize, heads: usize, seed| {
            bitnet_cpu_ref::Tensor::new(data::floats(rows * heads * d, seed), &[rows, heads, d])
                .expect("valid shape")
        };
        let (q, k, v) = (tensor(tq, hq, 20), tensor(tk, hkv, 21), tensor(tk, hkv, 22));
        g.throughput(Throughput::BytesDecimal((2 * 4 * tk * hkv * d) as u64));
        g.bench_function(
            BenchmarkId::new(format!("Tq{tq}"), format!("Tk{tk}")),
            |b| {
                b.iter(|| {
                    let scale = 1.0 / (d as f32).sqrt();
                    black_box(
                        bitnet_cpu_ref::ops::attention(&q, &k, &v, scale, true).expect("valid"),
                    )
                })
            },
        );
    }
    g.finish();
}

criterion_group!(benches, gemv, weight_quant, act_quant, attention);
criterion_main!(benches);
