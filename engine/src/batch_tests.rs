//! GPU tests of the batch sizes: small right after a sync point, doubling per full batch up to
//! `EngineOptions::batch_dispatches` (`Batch::record`).

use crate::engine::{Engine, EngineOptions};

/// Dispatches recorded but not yet submitted, once the submission thread has run every job
/// posted before this call.
fn pending(e: &Engine) -> u32 {
    let g = e.gpu_context().expect("a GPU engine");
    g.scheduler
        .call(|b, _| b.dispatches)
        .expect("a scheduler call")
}

#[test]
fn batches_start_small_after_a_sync_and_double_up_to_the_cap() {
    let e = crate::test_gpu::gpu_with(EngineOptions {
        idle_flush: None,
        batch_dispatches: 8,
        first_batch_dispatches: 2,
        ..EngineOptions::default()
    });
    let x = e.upload_f32(&[2.5; 64], &[64]).unwrap();
    let mut y = e.copy(&x).unwrap();
    let mut seen = vec![pending(&e)];
    for _ in 1..24 {
        y = e.copy(&y).unwrap();
        seen.push(pending(&e));
    }
    // Batches of 2, 4, 8, 8: a full batch is submitted when the next launch arrives.
    let want = [
        1, 2, 1, 2, 3, 4, 1, 2, 3, 4, 5, 6, 7, 8, 1, 2, 3, 4, 5, 6, 7, 8, 1, 2,
    ];
    assert_eq!(seen, want);
    assert_eq!(y.read_f32().unwrap(), vec![2.5; 64]);
    // The read was a sync point: the GPU ran dry, so the next batch is small again.
    let mut seen = Vec::new();
    for _ in 0..4 {
        y = e.copy(&y).unwrap();
        seen.push(pending(&e));
    }
    assert_eq!(seen, [1, 2, 1, 2]);
    assert_eq!(y.read_f32().unwrap(), vec![2.5; 64]);
}

#[test]
fn a_first_batch_as_large_as_the_cap_gives_fixed_batches() {
    let e = crate::test_gpu::gpu_with(EngineOptions {
        idle_flush: None,
        batch_dispatches: 4,
        first_batch_dispatches: 4,
        ..EngineOptions::default()
    });
    let x = e.upload_f32(&[1.0; 16], &[16]).unwrap();
    let mut y = e.copy(&x).unwrap();
    let mut seen = vec![pending(&e)];
    for _ in 1..9 {
        y = e.copy(&y).unwrap();
        seen.push(pending(&e));
    }
    assert_eq!(seen, [1, 2, 3, 4, 1, 2, 3, 4, 1]);
    assert_eq!(y.read_f32().unwrap(), vec![1.0; 16]);
}
