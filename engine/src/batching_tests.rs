//! Where a batcher's CPU work runs (`cpu_work`).

use std::cell::Cell;
use std::time::Duration;

thread_local! {
    /// Test hook: the batchers' pool cannot be started from this thread.
    pub(super) static NO_BATCH_POOL: Cell<bool> = const { Cell::new(false) };
}

/// Where the batchers' rayon pool cannot be started, `BatchingLinear::new` says so: the
/// batcher's CPU work then ran right on its thread, whose rayon tasks went to the global pool
/// and could wait there for the callers, who waited for the batcher (deadlock).
#[test]
fn a_batcher_without_its_pool_is_refused() {
    let e = crate::Engine::cpu();
    let w = bitnet_cpu_ref::quantize_weights(&[1.0; 64], 1, 64).unwrap();
    let layer = crate::Linear::new(&e, w);
    let got = std::thread::spawn(move || {
        NO_BATCH_POOL.set(true);
        super::BatchingLinear::new(layer, Duration::from_millis(1), 8).map(drop)
    })
    .join()
    .unwrap();
    assert!(matches!(got, Err(crate::Error::Unsupported(_))), "{got:?}");
}

/// A batch routed to the GPU that finds the policy changed to `Cpu` when it uploads (a
/// concurrent `set_dispatch_policy`) runs cpu-ref off the global pool too: the tensor op's host
/// path ran it right on the batcher thread, whose rayon tasks waited for the held pool.
#[test]
fn a_gpu_routed_batch_that_finds_the_policy_cpu_stays_off_the_global_pool() {
    let e = crate::test_gpu::gpu();
    let (layer, x, want) = layer_and_rows(&e);
    let (n, k, m) = (layer.weights().n(), layer.weights().k(), ROWS);
    e.set_dispatch_policy(crate::DispatchPolicy::Cpu).unwrap();
    let got = with_global_pool_held(move || {
        become_a_batcher();
        let g = e.gpu_raw().expect("a GPU engine");
        let work = crate::dispatch::Workload::bitlinear(m, n, k, true);
        layer.forward_off_cpu(crate::dispatch::Route::Gpu(g), work, &x, m)
    });
    let got = got.expect("the batch's work waited for the global pool");
    assert_eq!(got.unwrap(), want);
}

/// The same with the policy turning `Cpu` after the upload (a device tensor), before the tensor
/// op looks for a GPU: its host path ran cpu-ref on the batcher thread, outside `cpu_work`.
/// Flips are random in time; before the fix a forward stalled within 2-20 of them.
#[test]
fn gpu_routed_batches_under_policy_flips_stay_off_the_global_pool() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};
    let e = crate::test_gpu::gpu();
    e.set_dispatch_policy(crate::DispatchPolicy::Gpu).unwrap();
    let (layer, x, want) = layer_and_rows(&e);
    let (n, k, m) = (layer.weights().n(), layer.weights().k(), ROWS);
    let stop = Arc::new(AtomicBool::new(false));
    let flipper = {
        let (e, stop) = (e.clone(), Arc::clone(&stop));
        std::thread::spawn(move || {
            let mut i = 0u64;
            while !stop.load(Ordering::Relaxed) {
                i = i
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                e.set_dispatch_policy(crate::DispatchPolicy::Cpu).unwrap();
                std::thread::sleep(Duration::from_micros(20 + (i >> 58)));
                e.set_dispatch_policy(crate::DispatchPolicy::Gpu).unwrap();
                std::thread::sleep(Duration::from_micros(50 + (i >> 57)));
            }
        })
    };
    let e2 = e.clone();
    let got = with_global_pool_held(move || {
        become_a_batcher();
        let g = e2.gpu_raw().expect("a GPU engine");
        let work = crate::dispatch::Workload::bitlinear(m, n, k, true);
        (0..60)
            .map(|_| layer.forward_off_cpu(crate::dispatch::Route::Gpu(g), work, &x, m))
            .collect::<Vec<_>>()
    });
    stop.store(true, Ordering::Relaxed);
    flipper.join().unwrap();
    for y in got.expect("a forward waited for the global pool") {
        assert_eq!(y.unwrap(), want);
    }
}

/// Runs `f` on a new thread while every worker of rayon's global pool is blocked (as callers
/// waiting in `BatchingLinear::forward` from `par_iter` hold them); `None` if it did not finish
/// within 20 s. The workers are released either way.
fn with_global_pool_held<R: Send + 'static>(f: impl FnOnce() -> R + Send + 'static) -> Option<R> {
    // One holder at a time: two tests each holding some of the workers waited for the rest
    // forever (a reviewer's hang, reproduced in a standalone copy).
    static ONE: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _one = ONE.lock().unwrap_or_else(|p| p.into_inner());
    let workers = rayon::current_num_threads();
    let (started_tx, started_rx) = flume::unbounded::<()>();
    let (release_tx, release_rx) = flume::unbounded::<()>();
    for _ in 0..workers {
        let (started, release) = (started_tx.clone(), release_rx.clone());
        rayon::spawn(move || {
            started.send(()).unwrap();
            let _ = release.recv();
        });
    }
    for _ in 0..workers {
        started_rx
            .recv_timeout(Duration::from_secs(60))
            .expect("no global worker came free");
    }
    let (done_tx, done_rx) = flume::bounded(1);
    let thread = std::thread::spawn(move || {
        let _ = done_tx.send(f());
    });
    let got = done_rx.recv_timeout(Duration::from_secs(20)).ok();
    for _ in 0..workers {
        release_tx.send(()).unwrap();
    }
    thread.join().unwrap();
    got
}

/// Makes this thread a batcher thread, as `BatchingLinear::new` starts one (the pool first).
fn become_a_batcher() {
    super::start_batch_pool().expect("the batchers' pool");
    super::ON_BATCHER_THREAD.set(true);
}

/// Rows of the batches these tests run.
const ROWS: usize = 32;

/// A 64 × 1024 layer of `e`, `ROWS` rows of input and cpu-ref's output: large enough for
/// cpu-ref to split into rayon tasks.
fn layer_and_rows(e: &crate::Engine) -> (crate::Linear, Vec<f32>, Vec<f32>) {
    let (n, k) = (64, 1024);
    let v: Vec<f32> = (0..n * k).map(|i| ((i * 7919) % 13) as f32 - 6.0).collect();
    let w = bitnet_cpu_ref::quantize_weights(&v, n, k).unwrap();
    let x: Vec<f32> = (0..ROWS * k)
        .map(|i| ((i * 31) % 17) as f32 - 8.0)
        .collect();
    let want = bitnet_cpu_ref::bitlinear(&x, ROWS, &w).unwrap();
    (crate::Linear::new(e, w), x, want)
}
