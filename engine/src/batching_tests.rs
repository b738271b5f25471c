//! Where a batcher's CPU work runs (`cpu_work`).

use std::cell::Cell;
use std::time::Duration;

use rayon::prelude::*;

thread_local! {
    /// Test hook: this thread sees no shared batchers' pool, as where it could not be started.
    pub(super) static NO_SHARED_POOL: Cell<bool> = const { Cell::new(false) };
}

/// Where the batchers' shared pool could not be started, a batcher's CPU work (rayon tasks, as
/// cpu-ref's) still stays off the global pool: with every global worker held by a blocked
/// caller it completes. It ran right on the batcher thread before, whose rayon tasks went to the
/// global pool and waited there for the callers, who waited for the batcher (deadlock).
#[test]
fn batch_work_without_the_shared_pool_stays_off_the_global_pool() {
    let got = with_global_pool_held(|| {
        NO_SHARED_POOL.set(true);
        super::ON_BATCHER_THREAD.set(true);
        super::cpu_work(|| (0..10_000u64).into_par_iter().sum::<u64>())
    });
    assert_eq!(
        got,
        Some(10_000 * 9_999 / 2),
        "the batch's work waited for the global pool"
    );
}

/// A batch routed to the GPU that finds the policy changed to `Cpu` when it uploads (a
/// concurrent `set_dispatch_policy`) runs cpu-ref off the global pool too: the tensor op's host
/// path ran it right on the batcher thread, whose rayon tasks waited for the held pool.
#[test]
fn a_gpu_routed_batch_that_finds_the_policy_cpu_stays_off_the_global_pool() {
    let e = crate::test_gpu::gpu();
    let (n, k, m) = (64, 1024, 32); // large enough for cpu-ref to split into rayon tasks
    let v: Vec<f32> = (0..n * k).map(|i| ((i * 7919) % 13) as f32 - 6.0).collect();
    let w = bitnet_cpu_ref::quantize_weights(&v, n, k).unwrap();
    let x: Vec<f32> = (0..m * k).map(|i| ((i * 31) % 17) as f32 - 8.0).collect();
    let want = bitnet_cpu_ref::bitlinear(&x, m, &w).unwrap();
    let layer = crate::Linear::new(&e, w);
    e.set_dispatch_policy(crate::DispatchPolicy::Cpu).unwrap();
    let got = with_global_pool_held(move || {
        super::ON_BATCHER_THREAD.set(true);
        let g = e.gpu_raw().expect("a GPU engine");
        let work = crate::dispatch::Workload::bitlinear(m, n, k, true);
        layer.forward_off_cpu(crate::dispatch::Route::Gpu(g), work, &x, m)
    });
    let got = got.expect("the batch's work waited for the global pool");
    assert_eq!(got.unwrap(), want);
}

/// Runs `f` on a new thread while every worker of rayon's global pool is blocked (as callers
/// waiting in `BatchingLinear::forward` from `par_iter` hold them); `None` if it did not finish
/// within 20 s. The workers are released either way.
fn with_global_pool_held<R: Send + 'static>(f: impl FnOnce() -> R + Send + 'static) -> Option<R> {
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
        started_rx.recv().unwrap();
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
