//! Reads and checks keep their promises: an async read started before its tensor is dropped
//! returns that tensor's bytes, also past the first read-back chunk (64 MiB); `Tensor::check`
//! reports what a read would, on a lost device too.

use bitnet_tests::{block_on, gpu_engine, gpu_engine_with};
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
