//! GPU tests of the batch sizes: small right after a sync point, doubling per full batch up to
//! `EngineOptions::batch_dispatches` (`Batch::record`).

use crate::engine::{Engine, EngineOptions};
use crate::tensor::Tensor;

/// An engine that submits only at sync points and full batches (`first`, doubling up to `cap`).
fn engine(first: u32, cap: u32) -> Engine {
    crate::test_gpu::gpu_with(EngineOptions {
        idle_flush: None,
        batch_dispatches: cap,
        first_batch_dispatches: first,
        ..EngineOptions::default()
    })
}

/// `n` dependent copies starting from `y`, and after each the dispatches recorded but not yet
/// submitted (once the submission thread has run every job posted before).
fn chain(e: &Engine, mut y: Tensor, n: usize) -> (Tensor, Vec<u32>) {
    let g = e.gpu_context().expect("a GPU engine");
    let mut pending = Vec::new();
    for _ in 0..n {
        y = e.copy(&y).unwrap();
        pending.push(g.scheduler.call(|b, _| b.dispatches).unwrap());
    }
    (y, pending)
}

#[test]
fn batches_start_small_after_a_sync_and_double_up_to_the_cap() {
    let e = engine(2, 8);
    let x = e.upload_f32(&[2.5; 64], &[64]).unwrap();
    let (y, pending) = chain(&e, x, 24);
    // Batches of 2, 4, 8, 8: a full batch is submitted when the next launch arrives.
    let want = [
        1, 2, 1, 2, 3, 4, 1, 2, 3, 4, 5, 6, 7, 8, 1, 2, 3, 4, 5, 6, 7, 8, 1, 2,
    ];
    assert_eq!(pending, want);
    assert_eq!(y.read_f32().unwrap(), vec![2.5; 64]);
    // The read was a sync point: the GPU ran dry, so the next batch is small again.
    let (y, pending) = chain(&e, y, 4);
    assert_eq!(pending, [1, 2, 1, 2]);
    assert_eq!(y.read_f32().unwrap(), vec![2.5; 64]);
}

#[test]
fn a_first_batch_as_large_as_the_cap_gives_fixed_batches() {
    let e = engine(4, 4);
    let x = e.upload_f32(&[1.0; 16], &[16]).unwrap();
    let (y, pending) = chain(&e, x, 9);
    assert_eq!(pending, [1, 2, 3, 4, 1, 2, 3, 4, 1]);
    assert_eq!(y.read_f32().unwrap(), vec![1.0; 16]);
}
