//! Batching servers whose callers block rayon's workers or resume inside their wakers: each of
//! these deadlocked (found by a review; checked with gdb) before every batch ran its op on the
//! batchers' own pool and replies went out from the batcher thread only. A hang fails by the
//! time bound.

use std::sync::mpsc;
use std::time::Duration;

use bitnet_tests::{block_on, random_f32, random_normal, spawn_inline, thread_name};
use bitnet_wgpu::cpu_ref::{self, TernaryMatrix};
use bitnet_wgpu::{BatchingLinear, Engine, Linear};
use rayon::prelude::*;

const BOUND: Duration = Duration::from_secs(60);

fn weights(n: usize, k: usize, seed: u64) -> TernaryMatrix {
    cpu_ref::quantize_weights(&random_normal(seed, n * k, 0.02), n, k).unwrap()
}

/// `rx`'s value, or the test process ends failing (a deadlocked test would never return).
fn within<T>(rx: mpsc::Receiver<T>, what: &str) -> T {
    rx.recv_timeout(BOUND).unwrap_or_else(|_| {
        let message = format!("{what}: no result within {BOUND:?} (a deadlock)\n");
        let _ = std::io::Write::write_all(&mut std::io::stderr(), message.as_bytes());
        std::process::exit(101)
    })
}

/// A batch made only of plain-thread requests ran on the batcher thread, its cpu-ref splits on
/// rayon's *global* pool. If, meanwhile, every global worker is blocked in `forward` (their
/// requests queued behind that batch), the batch's rayon tasks never run: deadlock.
#[test]
fn plain_batch_while_global_workers_wait() {
    let e = Engine::cpu();
    let (n, k) = (1024, 1024);
    let w = weights(n, k, 7);
    let server = BatchingLinear::new(Linear::new(&e, w.clone()), Duration::ZERO, 64).unwrap();
    let workers = rayon::current_num_threads();
    let (tx, rx) = mpsc::channel();
    {
        let server = server.clone();
        std::thread::spawn(move || {
            let xa = random_f32(1, 4 * k, -1.0, 1.0);
            for _ in 0..100 {
                server.forward(&xa, 4).unwrap();
            }
            let _ = tx.send("plain");
        });
    }
    let (tx2, rx2) = mpsc::channel();
    {
        let server = server.clone();
        std::thread::spawn(move || {
            let xs: Vec<Vec<f32>> = (0..4 * workers)
                .map(|i| random_f32(10 + i as u64, k, -1.0, 1.0))
                .collect();
            for _ in 0..50 {
                xs.par_iter().with_max_len(1).for_each(|x| {
                    server.forward(x, 1).unwrap();
                });
            }
            let _ = tx2.send("rayon");
        });
    }
    within(rx, "the plain-thread caller");
    within(rx2, "the rayon callers");
}

/// A task polled inline by its waker, resumed where its reply was sent (the batchers' rayon pool,
/// when its batch had a caller on a rayon worker), then calls the blocking `forward`: the batcher
/// thread waited in `pool.install` for the very closure that blocked on it.
#[test]
fn inline_task_resumed_on_batch_pool_calls_forward() {
    let e = Engine::cpu();
    let (n, k, m) = (16, 64, 2);
    let w = weights(n, k, 8);
    let x = random_f32(32, m * k, -2.0, 2.0);
    let want = cpu_ref::bitlinear(&x, m, &w).unwrap();
    let b = BatchingLinear::new(Linear::new(&e, w), Duration::from_millis(300), 64).unwrap();
    let (b2, x2) = (b.clone(), x.clone());
    let task = spawn_inline(async move {
        let first = b2.forward_async(x2.clone(), m).await;
        let on = thread_name();
        let again = b2.forward(&x2, m);
        (first, on, again)
    });
    // A caller on a rayon worker joins the same batch window.
    let (tx, other) = mpsc::channel();
    let (b3, x3) = (b.clone(), x.clone());
    rayon::spawn(move || {
        let _ = tx.send(b3.forward(&x3, m));
    });
    let (first, on, again) = within(task, "the resumed task");
    assert_eq!(first.unwrap(), want);
    assert_eq!(again.unwrap(), want, "on {on}");
    assert!(!on.starts_with("bitnet-wgpu batch "), "woken on {on}");
    assert_eq!(within(other, "the rayon caller").unwrap(), want);
}

/// As above, but the inline task drops the batcher's last handle where it resumed: on a pool
/// thread `Drop` joined the batcher thread, which waited in `pool.install` for this closure.
#[test]
fn inline_task_resumed_on_batch_pool_drops_last_handle() {
    let e = Engine::cpu();
    let (n, k, m) = (16, 64, 2);
    let w = weights(n, k, 9);
    let x = random_f32(33, m * k, -2.0, 2.0);
    let want = cpu_ref::bitlinear(&x, m, &w).unwrap();
    let b = BatchingLinear::new(Linear::new(&e, w), Duration::from_millis(300), 64).unwrap();
    let (b2, x2) = (b.clone(), x.clone());
    let task = spawn_inline(async move {
        let first = b2.forward_async(x2, m).await;
        let on = thread_name();
        drop(b2);
        (first, on)
    });
    let (tx, other) = mpsc::channel();
    let (b3, x3) = (b.clone(), x.clone());
    rayon::spawn(move || {
        let f = b3.forward_async(x3, m);
        drop(b3);
        let _ = tx.send(block_on(f));
    });
    drop(b);
    let (first, on) = within(task, "the resumed task");
    assert!(!on.starts_with("bitnet-wgpu batch "), "woken on {on}");
    assert_eq!(first.unwrap(), want);
    assert_eq!(within(other, "the rayon caller").unwrap(), want);
}

/// A task resumed on an engine thread (its read's completion woke it there) drops the last
/// handle of a GPU batcher that still has a request queued: `Drop` joined the batcher, whose
/// queued batch needed that same engine thread, and both engine threads hung for good.
#[test]
fn last_handle_dropped_on_an_engine_thread_with_a_request_queued() {
    let e = bitnet_tests::gpu_engine();
    let (n, k, m) = (64, 128, 2);
    let w = weights(n, k, 10);
    let x = random_f32(34, m * k, -2.0, 2.0);
    let want = cpu_ref::bitlinear(&x, m, &w).unwrap();
    let l = Linear::new(&e, w);
    assert_eq!(l.forward(&x, m).unwrap(), want);
    let b = BatchingLinear::new(l, Duration::from_secs(1), 64).unwrap();
    // Queued: its batch closes after the window, once the handle below is gone.
    let queued = b.forward_async(x.clone(), m);
    let big = e.upload_f32(&vec![1.0; 1 << 20], &[1 << 20]).unwrap();
    let copied = e.copy(&big).unwrap();
    let task = spawn_inline(async move {
        let read = copied.read_f32_async().await;
        let on = thread_name();
        drop(b);
        (read.map(|v| v.len()), on)
    });
    let (read, on) = within(task, "the task that dropped the batcher");
    assert_eq!(read.unwrap(), 1 << 20);
    eprintln!("the batcher's last handle dropped on {on:?}");
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(block_on(queued));
    });
    assert_eq!(within(rx, "the queued request").unwrap(), want);
    // The engine still works.
    assert_eq!(e.sync(), Ok(()));
}

/// Two batchers; a task resumed on A's thread calls B.forward, one resumed on B's thread calls
/// A.forward: each batcher thread blocked on the other.
#[test]
fn two_batchers_inline_cycle() {
    let e = Engine::cpu();
    let (n, k, m) = (16, 64, 1);
    let w = weights(n, k, 23);
    let x = random_f32(34, m * k, -2.0, 2.0);
    let want = cpu_ref::bitlinear(&x, m, &w).unwrap();
    let a =
        BatchingLinear::new(Linear::new(&e, w.clone()), Duration::from_millis(300), 64).unwrap();
    let b =
        BatchingLinear::new(Linear::new(&e, w.clone()), Duration::from_millis(300), 64).unwrap();
    let (a1, b1, x1) = (a.clone(), b.clone(), x.clone());
    let t1 = spawn_inline(async move {
        let first = a1.forward_async(x1.clone(), m).await;
        let on = thread_name();
        (first, on, b1.forward(&x1, m))
    });
    let (a2, b2, x2) = (a.clone(), b.clone(), x.clone());
    let t2 = spawn_inline(async move {
        let first = b2.forward_async(x2.clone(), m).await;
        let on = thread_name();
        (first, on, a2.forward(&x2, m))
    });
    let (f1, on1, g1) = within(t1, "task 1");
    let (f2, on2, g2) = within(t2, "task 2");
    // Replies (and so their wakers) run on batcher threads only, never on a pool thread.
    for on in [on1, on2] {
        assert!(!on.starts_with("bitnet-wgpu batch "), "woken on {on}");
    }
    for r in [f1, g1, f2, g2] {
        assert_eq!(r.unwrap(), want);
    }
}

/// A task woken on a batcher thread runs `forward` there, unbatched — on the batchers' pool: on
/// the batcher thread itself, a layer large enough for cpu-ref to split sent its work to rayon's
/// global pool, whose every worker waited in `forward` on this batcher (deadlock).
#[test]
fn unbatched_forward_on_batcher_thread_while_global_workers_wait() {
    let e = Engine::cpu();
    let (n, k) = (1024, 1024);
    let w = weights(n, k, 41);
    let x = random_f32(42, k, -1.0, 1.0);
    let want = cpu_ref::bitlinear(&x, 1, &w).unwrap();
    let a = BatchingLinear::new(Linear::new(&e, w), Duration::from_millis(500), 1 << 20).unwrap();
    let (a1, x1) = (a.clone(), x.clone());
    let task = spawn_inline(async move {
        let first = a1.forward_async(x1.clone(), 1).await;
        let again = a1.forward(&x1, 1);
        (first, again)
    });
    std::thread::sleep(Duration::from_millis(50));
    let workers = rayon::current_num_threads();
    let (tx, rx) = mpsc::channel();
    let (a2, x2) = (a.clone(), x.clone());
    std::thread::spawn(move || {
        let r: Vec<_> = (0..2 * workers)
            .into_par_iter()
            .with_max_len(1)
            .map(|_| a2.forward(&x2, 1))
            .collect();
        let _ = tx.send(r);
    });
    let (first, again) = within(task, "the resumed task");
    assert_eq!(first.unwrap(), want);
    assert_eq!(again.unwrap(), want);
    for r in within(rx, "the rayon callers") {
        assert_eq!(r.unwrap(), want);
    }
}

/// The first `Auto` decision of a GPU engine calibrates on the thread that asks — here the
/// batcher thread, whose calibration's cpu-ref timings split into rayon tasks on the global pool
/// while every global worker waited in `forward` (deadlock). Run in a child process with the
/// calibration cache off, so that the calibration is measured, not loaded.
#[test]
fn a_batch_whose_first_decision_calibrates_while_global_workers_wait() {
    const NAME: &str = "a_batch_whose_first_decision_calibrates_while_global_workers_wait";
    let caches_off = [
        ("BITNET_CALIBRATION_CACHE", "off"),
        ("BITNET_TUNE_CACHE", "off"),
    ];
    if !bitnet_tests::in_child_process(NAME, "BITNET_TEST_CALIBRATING_BATCH", &caches_off) {
        return;
    }
    let e = bitnet_tests::gpu_engine_with(bitnet_wgpu::EngineOptions {
        dispatch: bitnet_wgpu::DispatchPolicy::Auto,
        ..Default::default()
    });
    let (n, k) = (256, 256);
    let w = weights(n, k, 7);
    let server = BatchingLinear::new(
        Linear::new(&e, w.clone()),
        Duration::from_millis(500),
        1 << 20,
    )
    .unwrap();
    let workers = rayon::current_num_threads();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let xs: Vec<Vec<f32>> = (0..2 * workers)
            .map(|i| random_f32(10 + i as u64, k, -1.0, 1.0))
            .collect();
        let got: Vec<_> = xs
            .par_iter()
            .with_max_len(1)
            .map(|x| (server.forward(x, 1), x.clone()))
            .collect();
        let _ = tx.send(got);
    });
    for (y, x) in within(rx, "rayon callers whose first batch calibrates") {
        assert_eq!(y.unwrap(), cpu_ref::bitlinear(&x, 1, &w).unwrap());
    }
    assert!(e.calibration().is_some(), "the batch calibrated");
}
