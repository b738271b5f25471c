//! Engine overhead on the CPU path: an `Engine` op on a small tensor versus calling bitnet-cpu-ref
//! directly. Issue 4 requires the engine to cost at most 5 % more (aim 1 %).
//!
//! Criterion times each variant; afterwards the interleaved A/B ratio of
//! [`bitnet_bench::overhead`] (the same measurement the headless run puts in RESULTS.md) prints
//! `engine / cpu-ref` per op with its verdict against 1.05.
//!
//! Variants: `cpu_ref` (the free function), `engine_cpu` (`Engine::cpu()`), and `engine_auto`
//! (`Engine::new()`: whatever backend the engine picks; small tensors should stay on the CPU).
//! The tensor ops (`relu_tensor_256`, …: engine tensors against cpu-ref tensors) run on
//! `Engine::cpu()` only ([`Op::host_facing`]).
//!
//! `cargo bench -p bitnet-bench --bench engine_overhead`

use bitnet_bench::overhead::{self, Inputs, OVERHEAD_GOAL, Op};
use bitnet_wgpu::Engine;
use criterion::{Criterion, criterion_group};
use std::time::Duration;

fn overhead(c: &mut Criterion) {
    let inputs = Inputs::new();
    let engines = [
        ("engine_cpu", Engine::cpu()),
        ("engine_auto", Engine::new()),
    ];
    for op in Op::ALL {
        let mut g = c.benchmark_group(format!("engine_overhead/{}", op.name()));
        g.warm_up_time(Duration::from_millis(300))
            .measurement_time(Duration::from_secs(1))
            .sample_size(30)
            .sampling_mode(criterion::SamplingMode::Flat);
        g.bench_function("cpu_ref", |b| b.iter(|| inputs.call(op, None)));
        // The tensor ops take CPU-engine tensors: `Engine::cpu()` only.
        let engines = if op.host_facing() {
            &engines[..]
        } else {
            &engines[..1]
        };
        for (name, e) in engines {
            g.bench_function(*name, |b| b.iter(|| inputs.call(op, Some(e))));
        }
        g.finish();
    }
}

criterion_group!(benches, overhead);

fn main() {
    benches();
    Criterion::default().configure_from_args().final_summary();
    println!(
        "\nengine overhead on the CPU path (issue 4: engine / cpu-ref ≤ {OVERHEAD_GOAL}, aim ≤ 1.01):"
    );
    for row in overhead::measure().rows {
        let verdict = if row.ratio <= OVERHEAD_GOAL {
            "ok"
        } else {
            "OVER"
        };
        println!(
            "  {:<14} {:<28} {}  {verdict}",
            row.engine,
            row.op,
            row.figure()
        );
    }
}
