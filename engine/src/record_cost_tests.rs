//! CPU cost of recording and encoding launches (issue #5): how long the caller spends per
//! `bitlinear_tensor` call, how long the submission thread spends recording it, and how long the
//! flush that encodes and submits the batch takes, per op. Ignored by default (a measurement, not
//! a check); run with
//! `cargo test -p bitnet-wgpu --lib record_cost -- --ignored --nocapture`.
//! `BITNET_RECORD_N` (default 1000) and `BITNET_RECORD_K` (default 256: small, so lavapipe's
//! execution of the batch does not compete with the measurement for the CPU) set the size.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use crate::engine::EngineOptions;

/// Nanoseconds spent encoding command buffers (creating the encoder to `finish`), summed by
/// `encode::submit` in test builds.
pub(crate) static ENCODE_NS: AtomicU64 = AtomicU64::new(0);

/// Records one measured step; returns its outputs (kept alive until the caller drops them).
type Step<'a> = dyn Fn() -> Box<dyn std::any::Any> + 'a;

fn env(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

#[test]
#[ignore = "measurement; run with --ignored --nocapture"]
fn record_cost() {
    let n = env("BITNET_RECORD_N", 1000);
    let k = env("BITNET_RECORD_K", 256);
    let e = crate::test_gpu::gpu_with(EngineOptions {
        idle_flush: None,
        batch_dispatches: 4 * n as u32,
        first_batch_dispatches: 4 * n as u32,
        ..EngineOptions::default()
    });
    let g = e.gpu_context().expect("a GPU engine");
    let w: Vec<f32> = (0..k * k).map(|i| ((i * 7919) % 3) as f32 - 1.0).collect();
    let w = e
        .upload_ternary(&bitnet_cpu_ref::quantize_weights(&w, k, k).expect("weights"))
        .expect("upload w");
    let x: Vec<f32> = (0..k).map(|i| (i as f32 * 0.37).sin()).collect();
    let x = e.upload_f32(&x, &[1, k]).expect("upload x");
    let rounds = env("BITNET_RECORD_ROUNDS", 7);
    let mut medians: [Vec<f64>; 3] = Default::default();
    for round in 0..rounds {
        // Warm-up round 0: pipelines, plans, pool classes.
        e.sync().expect("sync");
        let t0 = Instant::now();
        for _ in 0..n {
            drop(e.bitlinear_tensor(&x, &w).expect("bitlinear"));
        }
        let calls = t0.elapsed();
        g.scheduler.call(|_, _| ()).expect("drain");
        let recorded = t0.elapsed();
        let t1 = Instant::now();
        let encode0 = ENCODE_NS.load(Ordering::Relaxed);
        g.scheduler
            .call(|b, g| b.flush(g))
            .expect("call")
            .expect("flush");
        let flushed = t1.elapsed();
        let encoded = std::time::Duration::from_nanos(ENCODE_NS.load(Ordering::Relaxed) - encode0);
        let t2 = Instant::now();
        e.sync().expect("sync");
        let waited = t2.elapsed();
        let us = |d: std::time::Duration| d.as_secs_f64() * 1e6 / n as f64;
        if round > 0 {
            medians[0].push(us(calls));
            medians[1].push(us(flushed));
            medians[2].push(us(encoded));
        }
        println!(
            "round {round} N={n} K={k}: caller {:.2} µs/op, recorded (caller + submission thread) \
             {:.2} µs/op, flush {:.2} µs/op (of which encode {:.2}), wait {:.2} µs/op",
            us(calls),
            us(recorded),
            us(flushed),
            us(encoded),
            us(waited)
        );
    }
    for m in &mut medians {
        m.sort_by(f64::total_cmp);
    }
    let med = |m: &Vec<f64>| m.get(m.len() / 2).copied().unwrap_or(f64::NAN);
    println!(
        "median of rounds 1..{rounds}: caller {:.2} µs/op, flush {:.2} µs/op, encode {:.2} µs/op",
        med(&medians[0]),
        med(&medians[1]),
        med(&medians[2])
    );
}

/// The decode stack's host cost: `BITNET_STACK_W` (default 210) distinct `[K, K]` weights, one
/// M = 1 BitLinear each with every output kept until the step ends (as `bitnet-bench`'s
/// independent stack), then the same weights as one `LinearChain` (each linear reading the one
/// before). Per round: recording (caller, then the submission thread catching up), the flush
/// (encode + submit), the wait, and the GPU span of the same work with the profiler on. Run with
/// `cargo test -p bitnet-wgpu --lib stack_cost -- --ignored --nocapture`.
#[test]
#[ignore = "measurement; run with --ignored --nocapture"]
fn stack_cost() {
    use crate::chain::ChainInput;
    use crate::linear::Linear;
    let w_count = env("BITNET_STACK_W", 210);
    let k = env("BITNET_RECORD_K", 256);
    let e = crate::test_gpu::gpu_with(EngineOptions {
        idle_flush: None,
        batch_dispatches: 8 * w_count as u32,
        first_batch_dispatches: 8 * w_count as u32,
        ..EngineOptions::default()
    });
    let g = e.gpu_context().expect("a GPU engine");
    // Ternary weights scaled so that a linear keeps the activations' magnitude (the chain's
    // values stay finite: a non-finite input makes every thread flag it, a slow error path).
    let gain = 2.2 / (k as f32).sqrt();
    let host: Vec<_> = (0..w_count)
        .map(|j| {
            let w: Vec<f32> = (0..k * k)
                .map(|i| {
                    let h = ((i * 31 + j) as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 40;
                    ((h % 3) as f32 - 1.0) * gain
                })
                .collect();
            bitnet_cpu_ref::quantize_weights(&w, k, k).expect("weights")
        })
        .collect();
    let weights: Vec<_> = host
        .iter()
        .map(|w| e.upload_ternary(w).expect("upload w"))
        .collect();
    let links = host
        .iter()
        .enumerate()
        .map(|(i, w)| {
            let input = if i == 0 {
                ChainInput::Input
            } else {
                ChainInput::Output(i - 1)
            };
            (Linear::new(&e, w.clone()), input)
        })
        .collect();
    let chain = e.linear_chain(k, links).expect("chain");
    let x: Vec<f32> = (0..k).map(|i| (i as f32 * 0.37).sin()).collect();
    let x = e.upload_f32(&x, &[1, k]).expect("upload x");
    let independent = || -> Box<dyn std::any::Any> {
        let outs: Vec<_> = weights
            .iter()
            .map(|w| e.bitlinear_tensor(&x, w).expect("bitlinear"))
            .collect();
        Box::new(outs)
    };
    let chained =
        || -> Box<dyn std::any::Any> { Box::new(chain.forward_tensor(&x).expect("chain")) };
    let outs = chain.forward_tensor(&x).expect("chain");
    let last = outs.read(w_count - 1).expect("chain output");
    let peak = last.iter().fold(0f32, |m, v| m.max(v.abs()));
    println!("chain output: finite, max |y| = {peak:e}");
    let ms = |d: std::time::Duration| d.as_secs_f64() * 1e3;
    let flows: [(&str, &Step); 2] = [("independent", &independent), ("chain", &chained)];
    for (name, step) in flows {
        for round in 0..env("BITNET_RECORD_ROUNDS", 7) {
            e.sync().expect("sync");
            let t0 = Instant::now();
            let outs = step();
            let calls = t0.elapsed();
            g.scheduler.call(|_, _| ()).expect("drain");
            let recorded = t0.elapsed();
            let encode0 = ENCODE_NS.load(Ordering::Relaxed);
            let t1 = Instant::now();
            g.scheduler
                .call(|b, g| b.flush(g))
                .expect("call")
                .expect("flush");
            let flushed = t1.elapsed();
            let encoded =
                std::time::Duration::from_nanos(ENCODE_NS.load(Ordering::Relaxed) - encode0);
            let t2 = Instant::now();
            e.sync().expect("sync");
            let waited = t2.elapsed();
            drop(outs);
            // The bench's wall figure: record (untimed), then one timed sync.
            let outs = step();
            let t3 = Instant::now();
            e.sync().expect("sync");
            let wall = t3.elapsed();
            drop(outs);
            // The GPU span of the same work (profiler on, whole-batch timestamps).
            let span = e.set_profiling(true).ok().map(|()| {
                e.set_profiling_granularity(crate::ProfileGranularity::Batch)
                    .expect("granularity");
                e.reset_profile();
                let outs = step();
                e.sync().expect("sync");
                drop(outs);
                let ns = e.profile_report().expect("report").total_ns();
                e.set_profiling(false).expect("profiling off");
                ns as f64 * 1e-6
            });
            println!(
                "{name} round {round} W={w_count} K={k}: caller {:.3} ms, recorded {:.3} ms, \
                 flush {:.3} ms (encode {:.3}), wait {:.3} ms; bench-style sync {:.3} ms; \
                 GPU span {:.3} ms",
                ms(calls),
                ms(recorded),
                ms(flushed),
                ms(encoded),
                ms(waited),
                ms(wall),
                span.unwrap_or(f64::NAN)
            );
        }
    }
}
