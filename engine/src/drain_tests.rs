//! GPU tests of `Scheduler::drained`: when an upload may skip the round trip to the submission
//! thread (`transfer::write`), and that skipping it never lets an upload overtake a recorded
//! command that still reads the buffer's old contents.

use std::time::{Duration, Instant};

use crate::engine::{Engine, EngineOptions};
use crate::tensor::Storage;

/// An engine that submits only at sync points (no idle flush), so pending work stays pending.
fn engine() -> Engine {
    crate::test_gpu::gpu_with(EngineOptions {
        idle_flush: None,
        ..EngineOptions::default()
    })
}

fn buffer_of(t: &crate::Tensor) -> wgpu::Buffer {
    match t.data() {
        Storage::Device(b) => b.buffer().clone(),
        _ => panic!("a device tensor"),
    }
}

#[test]
fn drained_only_once_every_posted_job_is_submitted() {
    let e = engine();
    let g = e.gpu_context().expect("a GPU engine");
    let x = e.upload_f32(&[1.0; 64], &[64]).unwrap();
    e.sync().unwrap();
    assert!(g.scheduler.drained(), "nothing recorded after a sync");
    let y = e.copy(&x).unwrap();
    // A call is itself a job: once it ran, the copy's dispatch waits in the batch.
    g.scheduler.call(|_, _| ()).unwrap();
    assert!(
        !g.scheduler.drained(),
        "a recorded dispatch is not submitted"
    );
    assert_eq!(y.read_f32().unwrap(), vec![1.0; 64]);
    // The read submitted everything; its job finished with an empty batch (counted just after
    // the job replied, so allow the thread a moment).
    let deadline = Instant::now() + Duration::from_secs(5);
    while !g.scheduler.drained() && Instant::now() < deadline {
        std::thread::yield_now();
    }
    assert!(g.scheduler.drained(), "a read submits what it depends on");
}

/// The hazard the round trip guards against: a buffer given back to the pool while a recorded
/// (unsubmitted) copy still reads it, handed to the next upload. `queue.write_buffer` runs
/// before the next submission, so without a flush first the copy would read the new bytes.
#[test]
fn an_upload_into_a_reused_buffer_never_overtakes_its_pending_reader() {
    let e = engine();
    let old: Vec<f32> = (0..256).map(|i| i as f32).collect();
    let new = vec![-7.0f32; 256];
    for round in 0..3 {
        let x = e.upload_f32(&old, &[256]).unwrap();
        e.sync().unwrap();
        let x_buffer = buffer_of(&x);
        let y = e.copy(&x).unwrap();
        drop(x);
        let x2 = e.upload_f32(&new, &[256]).unwrap();
        assert!(
            buffer_of(&x2) == x_buffer,
            "round {round}: the pool handed the freed buffer to the next upload"
        );
        assert_eq!(y.read_f32().unwrap(), old, "round {round}: the copy read");
        assert_eq!(x2.read_f32().unwrap(), new, "round {round}: the upload");
    }
}
