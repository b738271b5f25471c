//! Engine infrastructure on a real GPU adapter (lavapipe in CI): adapter info, upload/read-back
//! round trips, buffer pool, pipeline cache, limits and chunking, the non-finite flag path.

use bitnet_tests::{gpu_engine, random_f32};
use bitnet_wgpu::{BackendKind, DType, Engine, EngineOptions, Error, Location};

#[test]
fn gpu_engine_reports_adapter_and_limits() {
    let e = gpu_engine();
    let info = e.info();
    println!("{info}");
    assert_eq!(info.backend_kind, BackendKind::Gpu);
    assert!(!info.adapter_name.is_empty());
    let l = info.limits.expect("GPU engines report limits");
    // The engine requests the adapter's real limits, not the 128 MiB WebGPU default.
    assert!(l.max_storage_buffer_binding_size >= 128 << 20);
    assert!(l.max_compute_workgroups_per_dimension >= 65535);
    assert!(info.subgroup_min_size >= 1 && info.subgroup_min_size <= info.subgroup_max_size);
    assert!(info.to_string().contains(&info.adapter_name));
}

#[test]
fn f32_round_trip_odd_sizes() {
    let e = gpu_engine();
    for n in [1usize, 3, 63, 257, 1000, 4099] {
        let v = random_f32(n as u64, n, -10.0, 10.0);
        let t = e.upload_f32(&v, &[n]).unwrap();
        assert_eq!(t.location(), Location::Device);
        assert_eq!((t.dtype(), t.shape(), t.byte_size()), (DType::F32, &[n][..], 4 * n as u64));
        assert_eq!(t.read_f32().unwrap(), v);
    }
}

#[test]
fn copy_kernel_chains_on_device() {
    let e = gpu_engine();
    let v = random_f32(1, 777, -1.0, 1.0);
    let x = e.upload_f32(&v, &[7, 111]).unwrap();
    let y = e.copy(&e.copy(&x).unwrap()).unwrap();
    assert_eq!(y.shape(), &[7, 111]);
    assert_eq!(y.read_f32().unwrap(), v);
}

#[test]
fn cpu_engine_works_without_gpu() {
    let e = Engine::cpu();
    assert_eq!(e.backend_kind(), BackendKind::Cpu);
    let x = e.upload_f32(&[1.0, 2.0], &[2]).unwrap();
    assert_eq!(x.location(), Location::Host);
    assert_eq!(e.copy(&x).unwrap().read_f32().unwrap(), vec![1.0, 2.0]);
    let _ = EngineOptions::default();
    assert!(matches!(e.upload_f32(&[], &[0]), Err(Error::EmptyTensor { .. })));
}
