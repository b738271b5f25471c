//! Stress: 8 threads × 1,000 mixed ops on one engine and shared weights, every result checked
//! against cpu-ref (zero mismatches, the right error for the ops fed NaN), no deadlock (a
//! watchdog fails the test instead of hanging), the buffer pool back to its baseline at the end,
//! and pool memory ≤ 1.5 × live tensor bytes throughout (peak allocated / peak live).

use std::sync::Arc;
use std::sync::mpsc;
use std::time::Duration;

use bitnet_tests::{Rng, block_on, gpu_engine, random_f32, random_normal};
use bitnet_wgpu::cpu_ref::{self, TernaryMatrix};
use bitnet_wgpu::{BatchingLinear, Engine, Error, Linear, Tensor};

const THREADS: u64 = 8;
const OPS: u64 = 1000;
/// Shared weights `[N, K]`: resident like a model layer (256 KiB packed).
const N: usize = 1024;
const K: usize = 1024;

/// What every thread shares.
struct Shared {
    engine: Engine,
    w: TernaryMatrix,
    layer: Linear,
    w_dev: Tensor,
    server: BatchingLinear,
}

/// One mixed op, checked against cpu-ref; returns a description on mismatch.
fn op(s: &Shared, t: u64, i: u64, r: &mut Rng) -> Result<(), String> {
    let e = &s.engine;
    let m = 1 + r.below(3) as usize;
    let x = random_f32(t * 100_000 + i, m * K, -3.0, 3.0);
    let ctx = |what: &str| format!("thread {t} op {i} ({what}, M {m})");
    let same = |got: Vec<f32>, want: Vec<f32>, what: &str| {
        (got == want).then_some(()).ok_or_else(|| ctx(what))
    };
    match i % 8 {
        0 => same(
            s.layer.forward(&x, m).map_err(|e| ctx(&e.to_string()))?,
            cpu_ref::bitlinear(&x, m, &s.w).unwrap(),
            "Linear",
        ),
        1 => {
            // Resident chain, read as a future.
            let xt = e.upload_f32(&x, &[m, K]).map_err(|e| ctx(&e.to_string()))?;
            let q = e
                .quantize_activations_tensor(&xt)
                .map_err(|e| ctx(&e.to_string()))?;
            let y = e
                .bitlinear_tensor(&q, &s.w_dev)
                .map_err(|e| ctx(&e.to_string()))?;
            let got = block_on(y.read_f32_async()).map_err(|e| ctx(&e.to_string()))?;
            let xq = cpu_ref::quantize_activations(&x, m, K).unwrap();
            same(
                got,
                cpu_ref::bitlinear_quantized(&xq, &s.w).unwrap(),
                "tensor chain",
            )
        }
        2 => {
            let got = e
                .quantize_activations(&x, m, K)
                .map_err(|e| ctx(&e.to_string()))?;
            (got == cpu_ref::quantize_activations(&x, m, K).unwrap())
                .then_some(())
                .ok_or_else(|| ctx("act quant"))
        }
        3 => {
            let (n, k) = (8 + r.below(24) as usize, 64 + r.below(200) as usize);
            let wf = random_normal(t * 7 + i, n * k, 0.05);
            let got = e
                .quantize_weights(&wf, n, k)
                .map_err(|e| ctx(&e.to_string()))?;
            (got == cpu_ref::quantize_weights(&wf, n, k).unwrap())
                .then_some(())
                .ok_or_else(|| ctx("weight quant"))
        }
        4 => {
            let xt = e
                .upload_f32(&x, &[m, 1, K])
                .map_err(|e| ctx(&e.to_string()))?;
            let y = e
                .bitlinear_batched_tensor(&xt, &s.w_dev)
                .map_err(|e| ctx(&e.to_string()))?;
            same(
                y.read_f32().map_err(|e| ctx(&e.to_string()))?,
                cpu_ref::bitlinear(&x, m, &s.w).unwrap(),
                "batched",
            )
        }
        5 => same(
            s.server.forward(&x, m).map_err(|e| ctx(&e.to_string()))?,
            cpu_ref::bitlinear(&x, m, &s.w).unwrap(),
            "BatchingLinear",
        ),
        6 => {
            // Fed NaN/Inf: exactly cpu-ref's error, whichever thread computes next to it.
            let mut bad = x.clone();
            let at = r.below((m * K) as u64) as usize;
            bad[at] = [f32::NAN, f32::INFINITY][(i / 8 % 2) as usize];
            let want = Error::from(cpu_ref::bitlinear(&bad, m, &s.w).unwrap_err());
            match s.layer.forward(&bad, m) {
                Err(got) if got == want => Ok(()),
                other => Err(ctx(&format!("NaN op gave {other:?}, want {want:?}"))),
            }
        }
        _ => {
            let xt = e.upload_f32(&x, &[m, K]).map_err(|e| ctx(&e.to_string()))?;
            let y = e
                .copy(&e.copy(&xt).map_err(|e| ctx(&e.to_string()))?)
                .map_err(|e| ctx(&e.to_string()))?;
            same(
                y.read_f32().map_err(|e| ctx(&e.to_string()))?,
                x,
                "copy chain",
            )
        }
    }
}

#[test]
fn eight_threads_thousand_mixed_ops_each_on_shared_weights() {
    let engine = gpu_engine();
    let w = cpu_ref::quantize_weights(&random_normal(1, N * K, 0.02), N, K).unwrap();
    let layer = Linear::new(&engine, w.clone());
    let w_dev = layer.device_weights().unwrap();
    let server = BatchingLinear::new(layer.clone(), Duration::from_micros(300), 16).unwrap();
    let shared = Arc::new(Shared {
        engine: engine.clone(),
        w,
        layer,
        w_dev,
        server,
    });
    // Warm-up (pipelines, pool), then the baseline: only the shared weights are live.
    let mut r = Rng::new(0);
    for i in 0..8 {
        op(&shared, 99, i, &mut r).unwrap();
    }
    engine.sync().unwrap();
    let baseline = engine.pool_stats();
    engine.reset_pool_peaks();
    let (done_tx, done_rx) = mpsc::channel();
    for t in 0..THREADS {
        let (s, done) = (Arc::clone(&shared), done_tx.clone());
        std::thread::spawn(move || {
            let mut r = Rng::new(t + 1);
            let failures: Vec<String> = (0..OPS)
                .filter_map(|i| op(&s, t, i, &mut r).err())
                .collect();
            let _ = done.send(failures);
        });
    }
    let mut failures = Vec::new();
    for _ in 0..THREADS {
        // A deadlock fails the test here instead of hanging the suite.
        match done_rx.recv_timeout(Duration::from_secs(240)) {
            Ok(f) => failures.extend(f),
            Err(_) => panic!("stress: a worker did not finish within 240 s (deadlock?)"),
        }
    }
    assert!(
        failures.is_empty(),
        "{} mismatches, first: {:?}",
        failures.len(),
        &failures[..failures.len().min(5)]
    );
    engine.sync().unwrap();
    let after = engine.pool_stats();
    println!(
        "pool: baseline {baseline:?}\n      after    {after:?}\n      peak ratio {:?}",
        after.peak_ratio()
    );
    println!(
        "dispatch: {:?}; batching: {:?}",
        engine.dispatch_stats(),
        shared.server.stats()
    );
    assert_eq!(
        after.live_bytes, baseline.live_bytes,
        "pool back to baseline"
    );
    assert_eq!(after.live_buffers, baseline.live_buffers);
    let ratio = after.peak_ratio().unwrap();
    assert!(
        ratio <= 1.5,
        "peak allocated / peak live = {ratio:.3} > 1.5"
    );
    // Every host-facing op ran on the GPU (the engine's policy is Gpu): the pool checks above
    // measured GPU work, not a pool left idle by ops routed to the CPU.
    let dispatch = engine.dispatch_stats();
    assert_eq!(
        (dispatch.fallbacks, dispatch.cpu_runs),
        (0, 0),
        "{dispatch:?}"
    );
    assert!(dispatch.gpu_runs > 0, "{dispatch:?}");
}
