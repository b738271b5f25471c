//! Run-time adaptation of the dispatch model: outliers, probes of the backend a class left, and
//! which CPU calls are timed.

use super::tests::{gpu_wins, model};
use super::*;

/// `calls` decisions as the route makes them (every CPU call taken as a sampled one), each
/// backend's run measuring `cpu_s` / `gpu_s`; the (CPU, GPU) runs made.
fn simulate(d: &Dispatcher, w: &Workload, cpu_s: f64, gpu_s: f64, calls: usize) -> (usize, usize) {
    let mut runs = (0, 0);
    for _ in 0..calls {
        let on_gpu = if gpu_wins(d, w) {
            !d.cpu_probe_due(w)
        } else {
            d.gpu_probe_due(w)
        };
        if on_gpu {
            d.observe(w, 1, gpu_s);
            runs.1 += 1;
        } else {
            d.observe(w, 0, cpu_s);
            runs.0 += 1;
        }
    }
    runs
}

/// One slow run — the first GPU call compiling its pipelines, a preempted CPU run — moves the
/// factor a bounded step: it used to reach the cap at once and move the class for good.
#[test]
fn one_outlier_does_not_move_a_class() {
    let d = Dispatcher::new(DispatchPolicy::Auto);
    d.install(model());
    // A GEMM the GPU wins by ~10x, and one 150x slower GPU run.
    let big = Workload::bitlinear(64, 1024, 1024, true);
    let (cpu, gpu) = d.raw(&big);
    assert!(cpu > 9.0 * gpu);
    d.observe(&big, 1, 150.0 * gpu);
    assert!(gpu_wins(&d, &big));
    // An op the CPU wins by ~1.6x, and one 100x slower sampled CPU run.
    let small = Workload::bitlinear(16, 16, 256, true);
    let (cpu, gpu) = d.raw(&small);
    assert!(gpu > 1.5 * cpu);
    d.observe(&small, 0, 100.0 * cpu);
    assert!(!gpu_wins(&d, &small));
}

/// A class that a run of slow measurements moved to the other backend is timed there again now
/// and then, and comes back once that backend is as fast as calibrated: before, only the backend
/// it moved to was ever timed, so it stayed there for the process's life.
#[test]
fn a_class_that_left_a_backend_returns_when_it_is_fast_again() {
    let d = Dispatcher::new(DispatchPolicy::Auto);
    d.install(model());
    let big = Workload::bitlinear(64, 1024, 1024, true);
    let (cpu, gpu) = d.raw(&big);
    // The GPU stalls for a while (30x its calibrated time): the GEMM moves to the CPU.
    simulate(&d, &big, cpu, 30.0 * gpu, 200);
    assert!(!gpu_wins(&d, &big));
    // The GPU is back to its calibrated speed: the probes see it, and the GEMM returns.
    let (_, gpu_runs) = simulate(&d, &big, cpu, gpu, 400);
    assert!(gpu_runs > 0 && gpu_wins(&d, &big), "{gpu_runs} GPU runs");

    // The mirror: slow CPU runs move a CPU op to the GPU; the CPU recovers, the op returns.
    let small = Workload::bitlinear(16, 16, 256, true);
    let (small_cpu, small_gpu) = d.raw(&small);
    simulate(&d, &small, 30.0 * small_cpu, small_gpu, 200);
    assert!(gpu_wins(&d, &small));
    let (cpu_runs, _) = simulate(&d, &small, small_cpu, small_gpu, 400);
    assert!(cpu_runs > 0 && !gpu_wins(&d, &small), "{cpu_runs} CPU runs");

    // A backend that stays slow is only probed, one sampled call in a few.
    let (_, probes) = simulate(&d, &big, cpu, 30.0 * gpu, 400);
    assert!(!gpu_wins(&d, &big));
    assert!(
        probes <= 400 / PROBE_EVERY as usize + 20,
        "{probes} GPU runs"
    );
}

/// About one CPU call in SAMPLE_EVERY is timed, and a caller's loop of two, four or eight ops
/// has each of its ops timed: every 256th call timed only one op of such a loop, so the other
/// op classes never adapted.
#[test]
fn sampled_calls_reach_every_op_of_a_loop() {
    let calls = 64 * u64::from(crate::dispatch::SAMPLE_EVERY);
    let timed = (1..=calls).filter(|&n| sampled(n)).count() as u64;
    assert!((48..=80).contains(&timed), "{timed} of {calls}");
    for ops in [2, 4, 8] {
        for op in 0..ops {
            let hits = (1..=calls).filter(|&n| n % ops == op && sampled(n)).count();
            assert!(hits > 0, "op {op} of a loop of {ops}: never timed");
        }
    }
}

/// Measurements of small ops adapt the small sizes only: a factor shared by the whole class,
/// learned from small sampled GEMMs, predicted a prefill GEMM's CPU time 6.4x too short.
#[test]
fn small_ops_do_not_reprice_large_ones() {
    let d = Dispatcher::new(DispatchPolicy::Auto);
    d.install(model());
    let small = Workload::bitlinear(16, 32, 64, true);
    let big = Workload::bitlinear(256, 2048, 2048, true);
    let before = d.predict(&big);
    let (cpu, _) = d.raw(&small);
    for _ in 0..200 {
        d.observe(&small, 0, 0.1 * cpu);
    }
    assert!(d.predict(&small).0 < 0.2 * cpu);
    assert_eq!(d.predict(&big), before);
}

/// A shape found unfit with f32 input rows says nothing of the same shape with quantized rows (a
/// quarter of the bytes), which the device may take; the other way round it does.
#[test]
fn an_f32_limit_does_not_cover_quantized_rows() {
    let d = Dispatcher::new(DispatchPolicy::Auto);
    let (f32_rows, i8_rows) = (
        Workload::bitlinear(16, 64, 32768, true),
        Workload::bitlinear_quantized(16, 64, 32768, true),
    );
    d.mark_unfit(&f32_rows);
    assert!(d.unfit(&f32_rows) && !d.unfit(&i8_rows));
    d.mark_unfit(&i8_rows);
    assert!(d.unfit(&Workload::bitlinear(32, 64, 32768, true)));
}
