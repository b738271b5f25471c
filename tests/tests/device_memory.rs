//! The GPU's memory really running out — not the injected out-of-memory fault of `faults.rs`, but
//! a device filled with live tensors until the driver refuses. The refusal must be a typed
//! `OutOfMemory` at the call that allocates, nothing held before it may be lost or changed, the
//! host-facing ops must still return cpu-ref's results (they fall back to the CPU), and once the
//! tensors are dropped the engine must use the GPU again (an exhausted device is not a lost one).
//!
//! Ignored: it fills the whole device, which on a software adapter is the host's memory. Run it by
//! hand on a real GPU: `cargo test --release -p bitnet-tests --test device_memory -- --ignored`.
//! `DEVICE_MEMORY_CAP_GIB` bounds how much it allocates (default 256 GiB: past an H200's 141 GB,
//! so that a driver which spills device allocations into host memory is seen, not waited on).
//!
//! H200 (2026-12-01): 139 fillers of 1 GiB in 3.2 s, then `OutOfMemory` ("allocating 1073741824
//! bytes of GPU memory for fill"); passed — nothing lost, bitlinear right while full and back on
//! the GPU after.

use bitnet_tests::{gpu_engine, random_f32, random_normal};
use bitnet_wgpu::{Error, cpu_ref};

/// Elements of one filler tensor: 1 GiB of f32, or the device's largest buffer if smaller.
fn filler_elements(max_buffer: u64) -> usize {
    ((1u64 << 30).min(max_buffer) / 4) as usize
}

#[test]
#[ignore = "fills the GPU's memory: run by hand on a real GPU"]
fn filling_the_gpu_memory_is_a_typed_error_that_loses_nothing() {
    let e = gpu_engine();
    let cap_gib: u64 = std::env::var("DEVICE_MEMORY_CAP_GIB")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(256);
    let max_buffer = e.info().limits.map_or(1 << 30, |l| l.max_buffer_size);
    let per = filler_elements(max_buffer);
    let kept_values = random_f32(1, 4096, -3.0, 3.0);
    let kept = e.upload_f32(&kept_values, &[4096]).unwrap();
    let (m, n, k) = (4, 64, 512);
    let w = cpu_ref::quantize_weights(&random_normal(2, n * k, 0.05), n, k).unwrap();
    let x = random_f32(3, m * k, -2.0, 2.0);
    let want = cpu_ref::bitlinear(&x, m, &w).unwrap();

    let started = std::time::Instant::now();
    let mut held = Vec::new();
    let refusal = loop {
        if (held.len() as u64 + 1) * per as u64 * 4 > cap_gib << 30 {
            break None;
        }
        match e.fill(&[per], held.len() as f32) {
            Ok(t) => held.push(t),
            Err(err) => break Some(err),
        }
    };
    let filled_gib = held.len() as f64 * per as f64 * 4.0 / (1u64 << 30) as f64;
    println!(
        "{}: {} tensors of {} MiB ({filled_gib:.1} GiB) in {:.1} s, then {refusal:?}",
        e.info().adapter_name,
        held.len(),
        (per * 4) >> 20,
        started.elapsed().as_secs_f64()
    );
    let refusal = refusal.unwrap_or_else(|| {
        panic!("{filled_gib:.1} GiB allocated without a refusal (DEVICE_MEMORY_CAP_GIB={cap_gib})")
    });
    assert!(
        matches!(refusal, Error::OutOfMemory { .. }),
        "a full device refuses with OutOfMemory, not {refusal:?}"
    );

    // Full: what was there stays, and host-facing ops still compute (on the CPU).
    assert_eq!(kept.read_f32().unwrap(), kept_values);
    assert_eq!(e.bitlinear(&x, m, &w).unwrap(), want);
    assert!(
        !e.info().device_lost,
        "an exhausted device is not a lost one"
    );
    // The last filler holds its value: read through a one-element window would allocate, so
    // the whole tensor is read only once memory is free again.
    let last = held.pop().expect("at least one filler");
    let last_fill = held.len() as f32;
    drop(held);
    e.trim_pool();
    let last_values = last.read_f32().unwrap();
    assert!(
        last_values.iter().all(|&v| v == last_fill),
        "the last filler reads back as it was filled"
    );
    drop(last);
    e.trim_pool();

    // Free again: the GPU computes again, right.
    let before = e.dispatch_stats().gpu_runs;
    assert_eq!(e.bitlinear(&x, m, &w).unwrap(), want);
    assert_eq!(e.dispatch_stats().gpu_runs, before + 1, "back on the GPU");
    let t = e.upload_f32(&x, &[m * k]).unwrap();
    assert_eq!(e.fill(&[per], 7.0).unwrap().shape(), [per]);
    assert_eq!(t.read_f32().unwrap(), x);
}
