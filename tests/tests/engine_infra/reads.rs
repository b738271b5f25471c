//! Reads and checks keep their promises: an async read started before its tensor is dropped
//! returns that tensor's bytes, also past the first read-back chunk (64 MiB); `Tensor::check`
//! reports what a read would, on a lost device too; futures driven by a waker that polls them
//! on the waking thread (the engine's own) complete, and leave the engine working.

use bitnet_tests::{block_on, gpu_engine, gpu_engine_with, spawn_inline};
use bitnet_wgpu::{EngineOptions, Error, InjectedFault};

#[test]
fn an_async_read_outlives_its_dropped_tensor() {
    let e = gpu_engine_with(EngineOptions {
        idle_flush: None,
        ..EngineOptions::default()
    });
    let n = (64 << 20) / 4 + 1024; // one whole read-back chunk and a bit of the next
    let t = e.upload_f32(&vec![1.0; n], &[n]).unwrap();
    let read = t.read_f32_async();
    drop(t);
    // Same size class: the pool would hand out t's buffer if the read had let it go.
    let u = e.upload_f32(&vec![2.0; n], &[n]).unwrap();
    let v = block_on(read).unwrap();
    assert_eq!(v.len(), n);
    assert_eq!(
        v.iter().position(|&x| x != 1.0),
        None,
        "bytes of another tensor"
    );
    assert_eq!(u.read_f32().unwrap()[n - 1], 2.0);
}

#[test]
fn check_agrees_with_read_on_a_lost_device() {
    let e = gpu_engine();
    let y = e.fill(&[4], 1.0).unwrap();
    e.sync().unwrap();
    e.inject_fault(InjectedFault::DeviceLost);
    let (checked, read) = (y.check(), y.read_f32());
    assert!(matches!(read, Err(Error::DeviceLost(_))), "{read:?}");
    assert_eq!(checked, read.map(drop));
}

/// A read and a batched request whose futures are polled inside their wakers — on the engine's
/// submission, completion and batcher threads — return the right values, and the engine goes
/// on. flume's channels woke a receiver while holding their lock, so such a poll deadlocked the
/// engine's thread on itself and every later sync hung.
#[test]
fn futures_polled_inside_their_wakers_complete() {
    let e = gpu_engine_with(EngineOptions {
        idle_flush: None,
        ..EngineOptions::default()
    });
    let v: Vec<f32> = (0..64).map(|i| i as f32 - 20.0).collect();
    let y = e.copy(&e.upload_f32(&v, &[64]).unwrap()).unwrap();
    let read = spawn_inline(y.read_f32_async());
    let got = read.recv_timeout(std::time::Duration::from_secs(60));
    assert_eq!(got.expect("the read completed").unwrap(), v);

    let (n, k, m) = (8, 32, 2);
    let w = bitnet_wgpu::cpu_ref::quantize_weights(
        &bitnet_tests::random_f32(3, n * k, -1.0, 1.0),
        n,
        k,
    )
    .unwrap();
    let x = bitnet_tests::random_f32(4, m * k, -2.0, 2.0);
    let want = bitnet_wgpu::cpu_ref::bitlinear(&x, m, &w).unwrap();
    let linear = bitnet_wgpu::Linear::new(&e, w);
    let batcher =
        bitnet_wgpu::BatchingLinear::new(linear, std::time::Duration::from_millis(1), 64).unwrap();
    let answer = spawn_inline(batcher.forward_async(x, m));
    let got = answer.recv_timeout(std::time::Duration::from_secs(60));
    assert_eq!(got.expect("the request was answered").unwrap(), want);

    let (synced_tx, synced) = std::sync::mpsc::channel();
    let e2 = e.clone();
    std::thread::spawn(move || {
        let _ = synced_tx.send(e2.sync());
    });
    let synced = synced.recv_timeout(std::time::Duration::from_secs(60));
    synced.expect("sync returned").unwrap();
    assert_eq!(e.copy(&y).unwrap().read_f32().unwrap(), v);
}
