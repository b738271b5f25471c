//! `BatchingLinear` as a server's callers see it when something goes wrong: requests of different
//! sizes and bad requests mixed into one batch, GPU faults while a merged op runs, and the server
//! or its engine dropped while requests wait. Every caller must get its own rows (checked against
//! cpu-ref) or its own error, and nobody may hang.

use std::sync::mpsc;
use std::time::Duration;

use bitnet_tests::{block_on, gpu_engine, random_f32, random_normal};
use bitnet_wgpu::cpu_ref::{self, TernaryMatrix};
use bitnet_wgpu::{BatchingLinear, BatchingStats, Engine, Error, InjectedFault, Linear};

fn weights(n: usize, k: usize, seed: u64) -> TernaryMatrix {
    cpu_ref::quantize_weights(&random_normal(seed, n * k, 0.02), n, k).unwrap()
}

/// Waits for `f` on another thread; a hang fails the test instead of stalling the suite (the
/// bound is a hang guard, far above any batch's time on lavapipe, not a timing assertion).
fn answer<T: Send + 'static>(f: impl Future<Output = T> + Send + 'static) -> T {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || tx.send(block_on(f)));
    rx.recv_timeout(Duration::from_secs(300))
        .expect("a request was never answered")
}

/// Submits one request of each size in `sizes` (random rows in ±`range`, seeds from `seed`)
/// before awaiting any, so they queue together; then checks each answer against cpu-ref.
fn submit_all_and_check(
    server: &BatchingLinear,
    w: &TernaryMatrix,
    sizes: &[usize],
    seed: u64,
    range: f32,
) {
    let k = w.k();
    let xs: Vec<Vec<f32>> = sizes
        .iter()
        .enumerate()
        .map(|(i, &m)| random_f32(seed + i as u64, m * k, -range, range))
        .collect();
    let futs: Vec<_> = xs
        .iter()
        .zip(sizes)
        .map(|(x, &m)| server.forward_async(x.clone(), m))
        .collect();
    for (i, ((f, x), &m)) in futs.into_iter().zip(&xs).zip(sizes).enumerate() {
        let want = cpu_ref::bitlinear(x, m, w).unwrap();
        assert_eq!(answer(f).unwrap(), want, "request {i} ({m} rows)");
    }
}

/// Requests of 1, 3, 2 and 5 rows merged into one op (M = 11, a GEMM): each caller gets exactly
/// its own rows.
#[test]
fn requests_of_different_sizes_get_their_own_rows() {
    let e = gpu_engine();
    let (n, k) = (40, 128);
    let w = weights(n, k, 41);
    let server = BatchingLinear::new(Linear::new(&e, w.clone()), Duration::MAX, 11).unwrap();
    submit_all_and_check(&server, &w, &[1, 3, 2, 5], 300, 2.0);
    let st = server.stats();
    assert_eq!((st.requests, st.batches, st.max_rows), (4, 1, 11), "{st:?}");
}

/// max_rows as documented, with a window that never ends: a request that would pass it closes
/// the open batch (which runs short) and opens the next; one above it runs alone; the next
/// batch closes exactly at max_rows.
#[test]
fn max_rows_closes_and_opens_batches_as_documented() {
    let e = gpu_engine();
    let (n, k) = (16, 64);
    let w = weights(n, k, 46);
    let server = BatchingLinear::new(Linear::new(&e, w.clone()), Duration::MAX, 4).unwrap();
    submit_all_and_check(&server, &w, &[1, 6, 2, 2], 350, 1.0);
    // [1] (closed by the 6-row request), [6] alone, [2, 2] at max_rows.
    let st = server.stats();
    assert_eq!((st.requests, st.batches, st.max_rows), (4, 3, 6), "{st:?}");
}

/// Malformed requests (wrong length, zero rows) between good ones get the error a call of their
/// own gives and never join the batch, which closes at max_rows with the good rows only.
#[test]
fn malformed_requests_fail_alone_and_do_not_join_the_batch() {
    let e = gpu_engine();
    let (n, k) = (24, 64);
    let w = weights(n, k, 42);
    let layer = Linear::new(&e, w.clone());
    let server = BatchingLinear::new(layer.clone(), Duration::MAX, 4).unwrap();
    let good: Vec<Vec<f32>> = (0..3)
        .map(|i| random_f32(310 + i, [1, 1, 2][i as usize] * k, -1.0, 1.0))
        .collect();
    let a = server.forward_async(good[0].clone(), 1);
    let short = server.forward_async(vec![0.5; k - 1], 1);
    let b = server.forward_async(good[1].clone(), 1);
    let empty = server.forward_async(Vec::new(), 0);
    let long = server.forward_async(vec![0.5; 3 * k], 2);
    let c = server.forward_async(good[2].clone(), 2);
    let want_short = layer.forward(&vec![0.5; k - 1], 1);
    assert!(
        matches!(want_short, Err(Error::CpuRef(_))),
        "{want_short:?}"
    );
    assert_eq!(answer(short), want_short);
    assert_eq!(answer(empty), layer.forward(&[], 0));
    assert_eq!(answer(long), layer.forward(&vec![0.5; 3 * k], 2));
    for (i, (f, m)) in [(a, 1), (b, 1), (c, 2)].into_iter().enumerate() {
        let want = cpu_ref::bitlinear(&good[i], m, &w).unwrap();
        assert_eq!(answer(f).unwrap(), want, "request {i}");
    }
    let st = server.stats();
    assert_eq!((st.requests, st.batches, st.max_rows), (3, 1, 4), "{st:?}");
}

/// Every injectable GPU fault, armed while three requests wait in an open batch: the merged op
/// fails on the GPU, falls back to the CPU, and every caller gets its correct rows — and the
/// server keeps serving.
#[test]
fn a_gpu_fault_during_a_merged_op_answers_every_request() {
    for fault in FAULTS {
        let (e, st) = merged_batch_meets(fault, false);
        assert_eq!((st.batches, st.split_batches), (1, 0), "{fault:?}: {st:?}");
        assert_eq!(
            e.dispatch_stats().fallbacks,
            1,
            "{fault:?}: the merged op fell back"
        );
    }
}

/// A bad request and a GPU fault in one batch: the merged op fails on the NaN, the requests are
/// re-run one by one, the first good one meets the fault (and falls back); the bad request gets
/// its own error, the others their rows.
#[test]
fn a_bad_request_and_a_gpu_fault_in_one_batch() {
    for fault in FAULTS {
        let (_, st) = merged_batch_meets(fault, true);
        assert_eq!((st.batches, st.split_batches), (1, 1), "{fault:?}: {st:?}");
    }
}

const FAULTS: [InjectedFault; 6] = [
    InjectedFault::OutOfMemory,
    InjectedFault::Validation,
    InjectedFault::PipelineCreation,
    InjectedFault::JobPanic,
    InjectedFault::SubmitPanic,
    InjectedFault::DeviceLost,
];

/// Three 2-row requests (the first with a NaN if `nan`) merged into one batch with `fault` armed
/// while it is open; checks every answer against cpu-ref and that the server still serves, and
/// returns the engine and the server's stats of that batch.
fn merged_batch_meets(fault: InjectedFault, nan: bool) -> (Engine, BatchingStats) {
    let (n, k) = (32, 128);
    let w = weights(n, k, 43);
    let e = gpu_engine();
    let server = BatchingLinear::new(Linear::new(&e, w.clone()), Duration::MAX, 6).unwrap();
    let mut xs: Vec<Vec<f32>> = (0..3)
        .map(|i| random_f32(320 + i, 2 * k, -2.0, 2.0))
        .collect();
    if nan {
        xs[0][k + 3] = f32::NAN;
    }
    let mut futs: Vec<_> = xs[..2]
        .iter()
        .map(|x| server.forward_async(x.clone(), 2))
        .collect();
    // Earlier work submitted and its status slots reset first, so the next submission — the one
    // the fault is armed for — is the merged op's (a submission of slot resets alone fails no
    // launch: a submit panic there would meet nothing of the op).
    e.sync().unwrap();
    e.inject_fault(fault);
    // The third request closes the batch (6 rows): the merged op meets the fault.
    futs.push(server.forward_async(xs[2].clone(), 2));
    for (i, (f, x)) in futs.into_iter().zip(&xs).enumerate() {
        let (got, want) = (answer(f), cpu_ref::bitlinear(x, 2, &w));
        assert_eq!(
            got,
            want.map_err(Error::from),
            "{fault:?}, NaN {nan}: request {i}"
        );
    }
    let st = server.stats();
    let x = random_f32(329, 6 * k, -2.0, 2.0);
    let again = answer(server.forward_async(x.clone(), 6));
    assert_eq!(
        again.unwrap(),
        cpu_ref::bitlinear(&x, 6, &w).unwrap(),
        "{fault:?}"
    );
    (e, st)
}

/// Dropping the server while requests wait in an open batch (a window that never ends, rows to
/// spare) runs that batch: the waiting callers get their rows, none hangs.
#[test]
fn dropping_the_server_answers_the_waiting_requests() {
    let e = gpu_engine();
    let (n, k) = (24, 96);
    let w = weights(n, k, 44);
    let server = BatchingLinear::new(Linear::new(&e, w.clone()), Duration::MAX, 64).unwrap();
    let xs: Vec<Vec<f32>> = (0..3).map(|i| random_f32(330 + i, k, -1.0, 1.0)).collect();
    let (tx, rx) = mpsc::channel();
    for (i, x) in xs.iter().enumerate() {
        let (f, tx) = (server.forward_async(x.clone(), 1), tx.clone());
        std::thread::spawn(move || tx.send((i, block_on(f))));
    }
    drop(server);
    for _ in 0..xs.len() {
        let (i, got) = rx
            .recv_timeout(Duration::from_secs(300))
            .expect("a waiting request hung after the server was dropped");
        assert_eq!(
            got.unwrap(),
            cpu_ref::bitlinear(&xs[i], 1, &w).unwrap(),
            "request {i}"
        );
    }
}

/// The engine handle dropped while requests wait: the layer keeps the engine alive, and the
/// batch runs on it when it closes.
#[test]
fn dropping_the_engine_handle_does_not_strand_requests() {
    let (n, k) = (24, 96);
    let w = weights(n, k, 45);
    let e = gpu_engine();
    let server = BatchingLinear::new(Linear::new(&e, w.clone()), Duration::MAX, 2).unwrap();
    let x0 = random_f32(340, k, -1.0, 1.0);
    let first = server.forward_async(x0.clone(), 1);
    drop(e);
    let x1 = random_f32(341, k, -1.0, 1.0);
    let second = server.forward_async(x1.clone(), 1);
    assert_eq!(
        answer(first).unwrap(),
        cpu_ref::bitlinear(&x0, 1, &w).unwrap()
    );
    assert_eq!(
        answer(second).unwrap(),
        cpu_ref::bitlinear(&x1, 1, &w).unwrap()
    );
}
