//! GPU tests of the batch sizes: small right after a sync point, doubling per full batch up to
//! `EngineOptions::batch_dispatches` (`Batch::record`); and the forced status check's panic
//! path.

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

/// A forced status check (every slot owned by an unread launch) whose flush panics before it
/// took the batch — an injected job panic there — takes its copy-outs back, as a read's flush
/// does: the unread outputs still read their values afterwards, where the queued copy-outs
/// behind the dropped ticket had failed them as a lost read-back for good.
#[test]
fn a_forced_status_check_that_panics_leaves_the_outputs_readable() {
    use crate::fault::InjectedFault;
    let e = engine(64, 64);
    let g = e.gpu_context().expect("a GPU engine");
    let x = e.upload_f32(&[1.5; 64], &[64]).unwrap();
    // Checked launches (a copy flags NaN/Inf), submitted, their status not read yet.
    let ys: Vec<Tensor> = (0..4).map(|_| e.copy(&x).unwrap()).collect();
    e.sync().unwrap();
    let forced = g
        .scheduler
        .call(|b, g| {
            g.faults.arm(InjectedFault::JobPanic);
            b.force_status_check(g)
        })
        .unwrap();
    assert!(forced.is_err(), "the panic fails the forced check");
    for y in &ys {
        assert_eq!(y.read_f32().unwrap(), vec![1.5; 64]);
    }
    e.sync().unwrap();
}

/// A full batch whose submission panics when the next launch arrives fails its own launches with
/// the panic, not that next launch: it is recorded into the new batch and reads its value.
#[test]
fn a_launch_that_fills_a_panicking_batch_is_not_failed_with_it() {
    use crate::error::Error;
    use crate::fault::InjectedFault;
    let e = engine(2, 2);
    let g = e.gpu_context().expect("a GPU engine");
    let x = e.upload_f32(&[0.75; 64], &[64]).unwrap();
    e.sync().unwrap();
    let full: Vec<Tensor> = (0..2).map(|_| e.copy(&x).unwrap()).collect();
    g.scheduler
        .call(|_, g| g.faults.arm(InjectedFault::SubmitPanic))
        .unwrap();
    let next = e.copy(&x).unwrap();
    for y in &full {
        let r = y.read_f32();
        assert!(matches!(r, Err(Error::Panicked(_))), "{r:?}");
    }
    assert_eq!(next.read_f32().unwrap(), vec![0.75; 64]);
    e.sync().unwrap();
}
