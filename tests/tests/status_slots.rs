//! Status slots reset in bulk (issue #5): slots of launches dropped unread are reset by copies at
//! the end of the next flush, never in front of a dispatch. More unread outputs than there are
//! slots — every one carrying a stale NaN flag — must neither leak into later launches nor hide a
//! later NaN, whether the drops span many batches or sit in one unflushed batch.

use bitnet_tests::gpu_engine_with;
use bitnet_wgpu::{EngineOptions, Error};

/// More than the engine's 1024 status slots.
const DROPPED: usize = 1500;

fn run(options: EngineOptions) {
    let what = format!("{options:?}");
    let e = gpu_engine_with(options);
    let mut stale = vec![1.0f32; 8];
    stale[2] = f32::NAN;
    let stale = e.upload_f32(&stale, &[8]).unwrap();
    let clean = e.upload_f32(&[1.0; 8], &[8]).unwrap();
    // Every slot gets dirtied with a flag at index 2, and given back unread.
    for _ in 0..DROPPED {
        drop(e.copy(&stale).unwrap());
    }
    // Reusing every slot after its stale flag: each clean launch must read clean.
    let outs: Vec<_> = (0..DROPPED).map(|_| e.copy(&clean).unwrap()).collect();
    for (i, y) in outs.iter().enumerate() {
        assert_eq!(y.check(), Ok(()), "{what}: output {i} saw a stale flag");
    }
    drop(outs);
    // More drops interleaved with kept clean outputs, then a NaN at another index.
    let mut kept = Vec::new();
    for i in 0..DROPPED {
        let y = e.copy(&stale).unwrap();
        if i % 100 == 0 {
            kept.push(e.copy(&clean).unwrap());
        }
        drop(y);
    }
    let mut bad = vec![2.0f32; 8];
    bad[5] = f32::NAN;
    let bad = e.upload_f32(&bad, &[8]).unwrap();
    let y = e.copy(&bad).unwrap();
    let z = e.copy(&clean).unwrap();
    assert_eq!(
        y.read_f32().unwrap_err(),
        Error::NonFinite {
            op: "copy",
            tensor: "x",
            index: 5
        },
        "{what}: the NaN is reported on its own tensor, at its own index"
    );
    assert_eq!(z.read_f32().unwrap(), vec![1.0; 8], "{what}");
    for (i, k) in kept.iter().enumerate() {
        assert_eq!(
            k.read_f32().unwrap(),
            vec![1.0; 8],
            "{what}: kept output {i}"
        );
    }
    e.sync().unwrap();
}

#[test]
fn dropped_outputs_across_many_batches_leave_no_stale_status() {
    run(EngineOptions {
        idle_flush: None,
        ..EngineOptions::default()
    });
}

#[test]
fn dropped_outputs_within_one_unflushed_batch_leave_no_stale_status() {
    // Every slot is dirtied by launches still in the pending batch: running out of clean slots
    // must flush (resetting after those dispatches), not hand a dirty slot out.
    run(EngineOptions {
        idle_flush: None,
        batch_dispatches: 8192,
        ..EngineOptions::default()
    });
}

#[test]
fn dropped_outputs_with_idle_flushes_leave_no_stale_status() {
    run(EngineOptions::default());
}

/// More unchecked launches (fills bind a slot but check nothing) than there are slots in one
/// unflushed batch: the slots their submission frees are reset and handed out, never a
/// `KernelMisuse` for the 1025th launch.
#[test]
fn more_unchecked_launches_than_slots_in_one_batch() {
    let e = gpu_engine_with(EngineOptions {
        idle_flush: None,
        batch_dispatches: 4096,
        ..EngineOptions::default()
    });
    let outs: Vec<_> = (0..1100).map(|i| e.fill(&[4], i as f32).unwrap()).collect();
    for (i, t) in outs.iter().enumerate() {
        assert_eq!(t.read_f32(), Ok(vec![i as f32; 4]), "fill {i}");
    }
}
