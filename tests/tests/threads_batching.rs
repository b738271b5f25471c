//! Batching: `[B, M, K]` BitNet ops in one dispatch, and `BatchingLinear` merging concurrent
//! requests on shared weights into one op — every caller gets exactly its own bits (or its own
//! error), checked against cpu-ref.

use std::sync::Barrier;
use std::time::Duration;

use bitnet_tests::{block_on, gpu_engine, random_f32, random_normal};
use bitnet_wgpu::cpu_ref::{self, TernaryMatrix};
use bitnet_wgpu::{BatchingLinear, DType, DispatchPolicy, Error, Linear, LinearPlan, wgpu};

fn weights(n: usize, k: usize, seed: u64) -> TernaryMatrix {
    cpu_ref::quantize_weights(&random_normal(seed, n * k, 0.02), n, k).unwrap()
}

#[test]
fn batched_ops_run_in_one_dispatch_and_match_per_slice_results() {
    let e = gpu_engine();
    let (n, k) = (96, 320);
    let w = weights(n, k, 1);
    let wt = e.upload_ternary(&w).unwrap();
    for (b, m) in [(8, 1), (3, 5)] {
        let x = random_f32(b as u64, b * m * k, -2.0, 2.0);
        let xt = e.upload_f32(&x, &[b, m, k]).unwrap();
        e.set_profiling(true).unwrap();
        e.reset_profile();
        let y = e.bitlinear_batched_tensor(&xt, &wt).unwrap();
        let q = e.quantize_activations_batched_tensor(&xt).unwrap();
        assert_eq!((y.dtype(), y.shape()), (DType::F32, &[b, m, n][..]));
        assert_eq!(q.shape(), &[b * m, k]);
        let got = y.read_f32().unwrap();
        let calls: u64 = e
            .profile_report()
            .unwrap()
            .entries
            .iter()
            .map(|en| en.1)
            .sum();
        e.set_profiling(false).unwrap();
        // Activation quant + BitLinear for the whole batch (one dispatch where a GEMV with the
        // quantization fused in runs it: B·M ≤ 8 rows on a GPU with subgroups), then the
        // batched quantization.
        let fused = matches!(
            e.bitlinear_plan(b * m, n, k, true),
            Some(LinearPlan::Fused { .. } | LinearPlan::Batch { .. })
        );
        let subgroups = e.info().features.contains(wgpu::Features::SUBGROUP);
        assert_eq!(fused, b * m <= 8 && subgroups, "B = {b}, M = {m}: plan");
        assert_eq!(
            calls,
            if fused { 2 } else { 3 },
            "B = {b}, M = {m}: one dispatch per op for the whole batch"
        );
        for s in 0..b {
            let xs = &x[s * m * k..(s + 1) * m * k];
            let want = cpu_ref::bitlinear(xs, m, &w).unwrap();
            assert_eq!(&got[s * m * n..(s + 1) * m * n], &want[..], "slice {s}");
        }
        let want_q = cpu_ref::quantize_activations(&x, b * m, k).unwrap();
        assert_eq!(q.read_activations().unwrap(), want_q);
    }
    // A rank-1 tensor is a shape error, not a panic.
    let v = e.upload_f32(&[1.0; 8], &[8]).unwrap();
    assert!(matches!(
        e.bitlinear_batched_tensor(&v, &wt),
        Err(Error::ShapeMismatch { .. })
    ));
}

#[test]
fn serving_types_are_clone_send_sync() {
    fn assert_traits<T: Clone + Send + Sync + 'static>() {}
    assert_traits::<Linear>();
    assert_traits::<BatchingLinear>();
    assert_traits::<bitnet_wgpu::Engine>();
    assert_traits::<bitnet_wgpu::Tensor>();
}

#[test]
fn linear_layer_matches_cpu_ref_on_both_backends() {
    let e = gpu_engine();
    let w = weights(64, 256, 2);
    let layer = Linear::new(&e, w.clone());
    let x = random_f32(3, 4 * 256, -1.0, 1.0);
    let want = cpu_ref::bitlinear(&x, 4, &w).unwrap();
    assert_eq!(layer.forward(&x, 4).unwrap(), want);
    assert_eq!(layer.forward_batched(&x, 2, 2).unwrap(), want);
    e.set_dispatch_policy(DispatchPolicy::Cpu).unwrap();
    assert_eq!(layer.forward(&x, 4).unwrap(), want);
    let s = e.dispatch_stats();
    assert_eq!((s.gpu_runs, s.cpu_runs), (2, 1));
    // Bad input: cpu-ref's error, whatever the backend.
    let err = layer.forward(&x[..100], 4).unwrap_err();
    assert_eq!(
        err,
        Error::from(cpu_ref::bitlinear(&x[..100], 4, &w).unwrap_err())
    );
}

#[test]
fn concurrent_requests_are_merged_into_one_op_with_exact_results() {
    let e = gpu_engine();
    let (n, k) = (80, 256);
    let w = weights(n, k, 4);
    // A long window and max_rows = all the rows: the batch closes exactly when all arrived.
    let server =
        BatchingLinear::new(Linear::new(&e, w.clone()), Duration::from_secs(30), 8).unwrap();
    let barrier = Barrier::new(8);
    std::thread::scope(|s| {
        for t in 0..8u64 {
            let (server, w, barrier) = (&server, &w, &barrier);
            s.spawn(move || {
                let x = random_f32(100 + t, k, -3.0, 3.0);
                barrier.wait();
                let got = server.forward(&x, 1).unwrap();
                assert_eq!(got, cpu_ref::bitlinear(&x, 1, w).unwrap(), "request {t}");
            });
        }
    });
    let st = server.stats();
    assert_eq!((st.requests, st.batches, st.max_rows), (8, 1, 8), "{st:?}");
}

#[test]
fn a_bad_request_never_fails_its_batch_neighbours() {
    let e = gpu_engine();
    let (n, k) = (48, 192);
    let w = weights(n, k, 5);
    let server =
        BatchingLinear::new(Linear::new(&e, w.clone()), Duration::from_secs(30), 8).unwrap();
    let mut inputs: Vec<Vec<f32>> = (0..4)
        .map(|i| random_f32(200 + i, 2 * k, -1.0, 1.0))
        .collect();
    inputs[2][k + 17] = f32::NAN; // request 2, row 1
    let futures: Vec<_> = inputs
        .iter()
        .map(|x| server.forward_async(x.clone(), 2))
        .collect();
    for (i, (f, x)) in futures.into_iter().zip(&inputs).enumerate() {
        let got = block_on(f);
        match i {
            2 => assert_eq!(
                got.unwrap_err(),
                Error::NonFinite {
                    op: "bitlinear",
                    tensor: "x",
                    index: k + 17
                }
            ),
            _ => assert_eq!(
                got.unwrap(),
                cpu_ref::bitlinear(x, 2, &w).unwrap(),
                "request {i}"
            ),
        }
    }
    let st = server.stats();
    assert_eq!(
        (st.requests, st.batches, st.split_batches),
        (4, 1, 1),
        "{st:?}"
    );
    // A malformed request gets cpu-ref's error and does not join a batch.
    let short = server.forward(&[1.0; 10], 1).unwrap_err();
    assert_eq!(
        short,
        Error::from(cpu_ref::bitlinear(&[1.0; 10], 1, &w).unwrap_err())
    );
}

/// A batch never merges more than `max_rows` rows: a request that would pass it opens the next
/// batch (two requests of 3 rows under max_rows = 4 run as two ops).
#[test]
fn batches_respect_max_rows() {
    let e = gpu_engine();
    let (n, k) = (16, 64);
    let w = weights(n, k, 31);
    let server =
        BatchingLinear::new(Linear::new(&e, w.clone()), Duration::from_millis(500), 4).unwrap();
    let xs: Vec<Vec<f32>> = (0..2)
        .map(|i| random_f32(70 + i, 3 * k, -1.0, 1.0))
        .collect();
    let futs: Vec<_> = xs
        .iter()
        .map(|x| server.forward_async(x.clone(), 3))
        .collect();
    for (f, x) in futs.into_iter().zip(&xs) {
        assert_eq!(block_on(f).unwrap(), cpu_ref::bitlinear(x, 3, &w).unwrap());
    }
    let st = server.stats();
    assert_eq!((st.batches, st.max_rows), (2, 3), "{st:?}");
}

/// A request whose future is dropped before its batch runs is withdrawn: not run, not answered,
/// counted as withdrawn (a server's timed-out requests took rows of every batch they reached).
#[test]
fn dropped_requests_are_withdrawn_before_their_batch_runs() {
    let e = gpu_engine();
    let (n, k) = (16, 64);
    let w = weights(n, k, 33);
    // Batches close at 4 rows or after a long window: both requests below share one batch.
    let server =
        BatchingLinear::new(Linear::new(&e, w.clone()), Duration::from_millis(300), 4).unwrap();
    let (x1, x2) = (
        random_f32(85, 3 * k, -1.0, 1.0),
        random_f32(86, k, -1.0, 1.0),
    );
    drop(server.forward_async(x1, 3));
    let kept = server.forward_async(x2.clone(), 1);
    assert_eq!(
        block_on(kept).unwrap(),
        cpu_ref::bitlinear(&x2, 1, &w).unwrap()
    );
    let st = server.stats();
    assert_eq!(
        (st.requests, st.withdrawn, st.batches, st.max_rows),
        (1, 1, 1, 1),
        "{st:?}"
    );
}

/// A withdrawn request's rows do not count toward `max_rows`: live requests behind it share
/// one batch (they were split in two, the second waiting out a window of its own).
#[test]
fn withdrawn_rows_leave_room_for_live_requests() {
    let e = gpu_engine();
    let (n, k) = (16, 64);
    let w = weights(n, k, 34);
    let server =
        BatchingLinear::new(Linear::new(&e, w.clone()), Duration::from_millis(300), 4).unwrap();
    drop(server.forward_async(random_f32(87, k, -1.0, 1.0), 1));
    let xs: Vec<Vec<f32>> = (0..2)
        .map(|i| random_f32(88 + i, 2 * k, -1.0, 1.0))
        .collect();
    let futs: Vec<_> = xs
        .iter()
        .map(|x| server.forward_async(x.clone(), 2))
        .collect();
    for (f, x) in futs.into_iter().zip(&xs) {
        assert_eq!(block_on(f).unwrap(), cpu_ref::bitlinear(x, 2, &w).unwrap());
    }
    let st = server.stats();
    assert_eq!(
        (st.requests, st.withdrawn, st.batches, st.max_rows),
        (2, 1, 1, 4),
        "{st:?}"
    );
}

/// A window of `Duration::MAX` closes batches at `max_rows` only (it used to overflow the
/// deadline and kill the batcher thread on the first request).
#[test]
fn an_unbounded_window_closes_at_max_rows() {
    let e = gpu_engine();
    let (n, k) = (16, 64);
    let w = weights(n, k, 32);
    let server = BatchingLinear::new(Linear::new(&e, w.clone()), Duration::MAX, 2).unwrap();
    let xs: Vec<Vec<f32>> = (0..2).map(|i| random_f32(80 + i, k, -1.0, 1.0)).collect();
    let futs: Vec<_> = xs
        .iter()
        .map(|x| server.forward_async(x.clone(), 1))
        .collect();
    for (f, x) in futs.into_iter().zip(&xs) {
        assert_eq!(block_on(f).unwrap(), cpu_ref::bitlinear(x, 1, &w).unwrap());
    }
    let x = random_f32(90, 2 * k, -1.0, 1.0);
    assert_eq!(
        server.forward(&x, 2).unwrap(),
        cpu_ref::bitlinear(&x, 2, &w).unwrap()
    );
}

/// `max_rows = 0` is a typed error, as documented (`max_rows ≥ 1`), not silently served as 1.
#[test]
fn a_batcher_of_zero_rows_is_a_typed_error() {
    let e = bitnet_wgpu::Engine::cpu();
    let w = weights(4, 16, 9);
    let got = BatchingLinear::new(Linear::new(&e, w.clone()), Duration::ZERO, 0).map(|_| ());
    assert!(
        matches!(
            got,
            Err(Error::CpuRef(cpu_ref::Error::InvalidArgument {
                op: "BatchingLinear::new",
                what: "max_rows",
                ..
            }))
        ),
        "{got:?}"
    );
    let server = BatchingLinear::new(Linear::new(&e, w.clone()), Duration::ZERO, 1).unwrap();
    let x = random_f32(3, 2 * 16, -1.0, 1.0);
    assert_eq!(
        block_on(server.forward_async(x.clone(), 2)).unwrap(),
        cpu_ref::bitlinear(&x, 2, &w).unwrap()
    );
}

/// Every worker of rayon's global pool submits one request (a server fanning requests out with
/// `par_iter`) and blocks in `forward`; the merged op is large enough for cpu-ref to split it into
/// rayon tasks. Each caller must get its rows, nobody may hang: before, the op's tasks waited in
/// the global pool for workers that were all waiting for the op (found by a review helper).
#[test]
fn callers_on_every_global_rayon_worker_are_answered() {
    use rayon::prelude::*;
    let e = bitnet_wgpu::Engine::cpu();
    let (n, k) = (256, 1024);
    let w = weights(n, k, 3);
    let server =
        BatchingLinear::new(Linear::new(&e, w.clone()), Duration::from_millis(100), 64).unwrap();
    let workers = rayon::current_num_threads();
    let xs: Vec<Vec<f32>> = (0..workers)
        .map(|i| random_f32(i as u64, 2 * k, -1.0, 1.0))
        .collect();
    let (tx, rx) = std::sync::mpsc::channel();
    {
        let (server, xs, w) = (server.clone(), xs.clone(), w.clone());
        std::thread::spawn(move || {
            let ok = xs
                .par_iter()
                .with_max_len(1)
                .all(|x| server.forward(x, 2).unwrap() == cpu_ref::bitlinear(x, 2, &w).unwrap());
            tx.send(ok).unwrap();
        });
    }
    // A hang guard, far above the batch's time, not a timing assertion.
    let got = rx.recv_timeout(Duration::from_secs(120));
    assert_eq!(
        got,
        Ok(true),
        "{workers} rayon workers blocked in BatchingLinear::forward: {:?}",
        server.stats()
    );
}
