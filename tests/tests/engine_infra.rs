//! Engine infrastructure on a real GPU adapter (lavapipe in CI): adapter info, upload/read-back
//! round trips, buffer pool, pipeline cache, limits and chunking, the non-finite flag path.

use bitnet_tests::{gpu_engine, random_f32, random_i8};
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
        assert_eq!(
            (t.dtype(), t.shape(), t.byte_size()),
            (DType::F32, &[n][..], 4 * n as u64)
        );
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
    assert!(matches!(
        e.upload_f32(&[], &[0]),
        Err(Error::EmptyTensor { .. })
    ));
}

fn opts() -> EngineOptions {
    EngineOptions::default()
}

#[test]
fn engine_is_clone_send_sync_and_new_prefers_the_gpu() {
    fn assert_traits<T: Clone + Send + Sync + 'static>() {}
    assert_traits::<Engine>();
    assert_traits::<bitnet_wgpu::Tensor>();
    // This machine (and CI) has a GPU adapter, so the automatic choice must be the GPU.
    assert_eq!(Engine::new().backend_kind(), BackendKind::Gpu);
    assert!(Engine::cpu().info().to_string().contains("cpu-ref"));
}

#[test]
fn typed_round_trips_f16_i8_u32() {
    let e = gpu_engine();
    for n in [1usize, 2, 3, 5, 7, 1001] {
        let h: Vec<bitnet_wgpu::half::f16> = random_f32(n as u64, n, -4.0, 4.0)
            .into_iter()
            .map(bitnet_wgpu::half::f16::from_f32)
            .collect();
        assert_eq!(e.upload_f16(&h, &[n]).unwrap().read_f16().unwrap(), h);
        let b = random_i8(n as u64, n);
        let t = e.upload_i8(&b, &[1, n]).unwrap();
        assert_eq!((t.dtype(), t.byte_size()), (DType::I8, n as u64));
        assert_eq!(t.read_i8().unwrap(), b);
        let u: Vec<u32> = (0..n as u32)
            .map(|i| i.wrapping_mul(2_654_435_761))
            .collect();
        assert_eq!(e.upload_u32(&u, &[n]).unwrap().read_u32().unwrap(), u);
    }
}

#[test]
fn packed_weights_and_activations_round_trip() {
    let e = gpu_engine();
    for (n, k) in [(1usize, 1usize), (3, 17), (7, 64), (5, 100)] {
        let w =
            bitnet_wgpu::cpu_ref::quantize_weights(&random_f32(k as u64, n * k, -1.0, 1.0), n, k)
                .unwrap();
        let t = e.upload_ternary(&w).unwrap();
        assert_eq!((t.dtype(), t.shape()), (DType::Ternary, &[n, k][..]));
        assert_eq!(t.read_ternary().unwrap(), w);
        let x = bitnet_wgpu::cpu_ref::quantize_activations(
            &random_f32(n as u64, n * k, -3.0, 3.0),
            n,
            k,
        )
        .unwrap();
        let t = e.upload_activations(&x).unwrap();
        assert_eq!(t.dtype(), DType::QuantizedI8);
        assert_eq!(t.read_activations().unwrap(), x);
        // Host round trip of a packed tensor keeps data and scales.
        assert_eq!(
            e.to_device(&t.to_host().unwrap())
                .unwrap()
                .read_activations()
                .unwrap(),
            x
        );
    }
}

#[test]
fn bad_uploads_and_reads_are_typed_errors() {
    let e = gpu_engine();
    assert!(matches!(
        e.upload_f32(&[], &[0]),
        Err(Error::EmptyTensor { .. })
    ));
    assert!(matches!(
        e.upload_f32(&[], &[3, 0]),
        Err(Error::EmptyTensor { .. })
    ));
    assert!(matches!(
        e.upload_f32(&[1.0; 5], &[2, 3]),
        Err(Error::ShapeMismatch { .. })
    ));
    let t = e.upload_f32(&[1.0; 6], &[2, 3]).unwrap();
    assert!(matches!(
        t.read_i8(),
        Err(Error::DTypeMismatch {
            expected: DType::I8,
            got: DType::F32,
            ..
        })
    ));
    // 4 GiB of f32 exceeds max_buffer_size (2 GiB on lavapipe, 4 GiB-ish elsewhere): a limit error
    // naming the limit, with no host allocation.
    let huge = (e.info().limits.unwrap().max_buffer_size / 4 + 1) as usize;
    match e.fill(&[huge], 0.0) {
        Err(Error::LimitExceeded {
            limit: "max_buffer_size",
            requested,
            ..
        }) => {
            assert_eq!(requested, 4 * huge as u64)
        }
        other => panic!("expected LimitExceeded(max_buffer_size), got {other:?}"),
    }
    let other = gpu_engine();
    assert!(matches!(other.copy(&t), Err(Error::EngineMismatch { .. })));
}

#[test]
fn pool_reuses_buffers_and_returns_to_baseline() {
    let e = gpu_engine();
    let base = e.pool_stats();
    assert_eq!((base.live_bytes, base.allocated_bytes), (0, 0));
    {
        let a = e.upload_f32(&[1.0; 1000], &[1000]).unwrap();
        let s = e.pool_stats();
        assert_eq!((s.live_bytes, s.live_buffers, s.misses), (4000, 1, 1));
        assert_eq!(s.in_use_bytes, bitnet_wgpu::size_class(4000));
        drop(a);
    }
    let s = e.pool_stats();
    assert_eq!((s.live_bytes, s.live_buffers), (0, 0));
    assert_eq!(
        s.allocated_bytes,
        bitnet_wgpu::size_class(4000),
        "the buffer stays cached"
    );
    // Same size class: served from the free list.
    let b = e.upload_f32(&[2.0; 990], &[990]).unwrap();
    let s2 = e.pool_stats();
    assert_eq!((s2.hits, s2.misses), (s.hits + 1, s.misses));
    assert_eq!(b.read_f32().unwrap(), vec![2.0; 990]);
    drop(b);
    e.trim_pool();
    let end = e.pool_stats();
    assert_eq!(
        (
            end.live_bytes,
            end.allocated_bytes,
            end.in_use_bytes,
            end.staging_bytes
        ),
        (0, 0, 0, 0)
    );
}

#[test]
fn pool_peak_over_live_ratio_on_a_chained_workload() {
    let e = gpu_engine();
    let mut live = Vec::new();
    for step in 0..60usize {
        let n = 1000 + (step * 7919) % 50_000;
        let x = e
            .upload_f32(&random_f32(step as u64, n, -1.0, 1.0), &[n])
            .unwrap();
        let y = e.copy(&e.copy(&x).unwrap()).unwrap();
        live.push(y);
        if live.len() > 8 {
            live.remove(0);
        }
    }
    let last = live.last().unwrap().read_f32().unwrap();
    assert!(last.iter().all(|v| v.is_finite()));
    let s = e.pool_stats();
    let ratio = s.peak_ratio().unwrap();
    println!("pool: {s:?}\npeak allocated / peak live = {ratio:.3}");
    assert!(
        ratio <= 1.5,
        "peak pool bytes / live tensor bytes = {ratio}"
    );
    drop(live);
    e.trim_pool();
    assert_eq!(e.pool_stats().allocated_bytes, 0);
}

#[test]
fn pipelines_compile_once() {
    let e = gpu_engine();
    let x = e.upload_f32(&[1.0; 10], &[10]).unwrap();
    let _ = e.copy(&x).unwrap();
    let first = e.pipeline_stats();
    for _ in 0..5 {
        let _ = e.copy(&x).unwrap();
    }
    let after = e.pipeline_stats();
    assert_eq!(after.compiled, first.compiled, "no recompilation");
    assert_eq!(after.hits, first.hits + 5);
}

#[test]
fn chunked_ops_match_unchunked_over_a_small_binding_limit() {
    // A 4 KiB binding cap forces 1000-element tensors through many chunks.
    let e = bitnet_tests::gpu_engine_with(EngineOptions {
        max_binding_bytes: Some(4096),
        ..opts()
    });
    assert_eq!(
        e.info().limits.unwrap().max_storage_buffer_binding_size,
        4096
    );
    let n = 10_007;
    let v = random_f32(9, n, -5.0, 5.0);
    let x = e.upload_f32(&v, &[n]).unwrap();
    assert_eq!(e.copy(&x).unwrap().read_f32().unwrap(), v);
    assert_eq!(e.fill(&[n], 2.5).unwrap().read_f32().unwrap(), vec![2.5; n]);
    // The non-finite index is reported in the whole tensor's index space (chunk base added).
    let mut bad = v.clone();
    bad[7777] = f32::NAN;
    bad[9000] = f32::INFINITY;
    let y = e.copy(&e.upload_f32(&bad, &[n]).unwrap()).unwrap();
    assert_eq!(
        y.read_f32().unwrap_err(),
        Error::NonFinite {
            op: "copy",
            tensor: "x",
            index: 7777
        }
    );
}

#[test]
fn grids_above_65535_workgroups_are_folded() {
    let e = gpu_engine();
    let max = e
        .info()
        .limits
        .unwrap()
        .max_compute_workgroups_per_dimension as usize;
    let n = (max + 1) * 256 + 5; // needs max + 2 workgroups of 256
    let t = e.fill(&[n], -3.25).unwrap();
    let v = t.read_f32().unwrap();
    assert_eq!(v.len(), n);
    assert!(
        v.iter().all(|&x| x == -3.25),
        "every element written exactly once"
    );
}

#[test]
fn non_finite_input_is_reported_at_the_next_sync_point() {
    for force_uniform_params in [false, true] {
        let e = bitnet_tests::gpu_engine_with(EngineOptions {
            force_uniform_params,
            ..opts()
        });
        let x = e
            .upload_f32(&[1.0, f32::NAN, 3.0, f32::NEG_INFINITY, 5.0], &[5])
            .unwrap();
        let y = e.copy(&x).unwrap(); // recorded, not yet checked
        let err = Error::NonFinite {
            op: "copy",
            tensor: "x",
            index: 1,
        };
        assert_eq!(y.read_f32().unwrap_err(), err);
        // Reported once: the status was reset, clean work reads fine again.
        let z = e.copy(&e.upload_f32(&[1.0, 2.0], &[2]).unwrap()).unwrap();
        assert_eq!(z.read_f32().unwrap(), vec![1.0, 2.0]);
        let _ = e.copy(&x).unwrap();
        assert_eq!(e.sync().unwrap_err(), err);
        e.sync().unwrap();
        // Same error as the CPU engine.
        let c = Engine::cpu();
        let cx = c
            .upload_f32(&[1.0, f32::NAN, 3.0, f32::NEG_INFINITY, 5.0], &[5])
            .unwrap();
        assert_eq!(c.copy(&cx).unwrap_err(), err);
    }
}

#[test]
fn status_slots_overflow_keeps_the_first_error() {
    // More flagged launches than status slots between two sync points, in small batches.
    let e = bitnet_tests::gpu_engine_with(EngineOptions {
        batch_dispatches: 7,
        ..opts()
    });
    let clean = e.upload_f32(&[1.0; 4], &[4]).unwrap();
    let mut bad = vec![0.0f32; 4];
    bad[2] = f32::NAN;
    let bad = e.upload_f32(&bad, &[4]).unwrap();
    for i in 0..1500 {
        let _ = e.copy(if i == 1200 { &bad } else { &clean }).unwrap();
    }
    assert_eq!(
        e.sync().unwrap_err(),
        Error::NonFinite {
            op: "copy",
            tensor: "x",
            index: 2
        }
    );
    e.sync().unwrap();
    assert_eq!(e.pool_stats().live_bytes, 32);
}

#[test]
fn profiler_counts_kernel_calls() {
    let e = gpu_engine();
    assert!(
        e.info()
            .features
            .contains(bitnet_wgpu::wgpu::Features::TIMESTAMP_QUERY)
    );
    e.set_profiling(true).unwrap();
    let x = e.upload_f32(&[1.0; 4096], &[4096]).unwrap();
    for _ in 0..3 {
        let _ = e.copy(&x).unwrap();
    }
    let _ = e.fill(&[100], 1.0).unwrap();
    let report = e.profile_report().unwrap();
    println!("{report}");
    let calls = |name| report.entries.iter().find(|en| en.0 == name).map(|en| en.1);
    assert_eq!(calls("util_copy"), Some(3));
    assert_eq!(calls("util_fill"), Some(1));
    e.reset_profile();
    e.set_profiling(false).unwrap();
    let _ = e.copy(&x).unwrap();
    assert!(e.profile_report().unwrap().entries.is_empty());
    assert!(Engine::cpu().set_profiling(true).is_err());
}

#[test]
fn device_lost_is_a_typed_error() {
    use bitnet_wgpu::wgpu;
    let instance =
        wgpu::Instance::new(wgpu::InstanceDescriptor::new_without_display_handle_from_env());
    let adapter = pollster_block(instance.request_adapter(&wgpu::RequestAdapterOptions::default()))
        .expect("GPU adapter required");
    let (device, queue) =
        pollster_block(adapter.request_device(&wgpu::DeviceDescriptor::default())).unwrap();
    let e = Engine::from_device(&adapter, device.clone(), queue).unwrap();
    // Default device limits were requested by the app: the engine reports what it got.
    assert_eq!(
        e.info().limits.unwrap().max_storage_buffer_binding_size,
        128 << 20
    );
    let x = e.upload_f32(&[1.0, 2.0], &[2]).unwrap();
    assert_eq!(e.copy(&x).unwrap().read_f32().unwrap(), vec![1.0, 2.0]);
    device.destroy();
    let r = e.copy(&x).and_then(|y| y.read_f32());
    assert!(matches!(r, Err(Error::DeviceLost(_))), "{r:?}");
}

/// Minimal block_on for the test's own wgpu calls (no extra dependency).
fn pollster_block<F: std::future::Future>(f: F) -> F::Output {
    use std::task::{Context, Poll, Waker};
    let mut f = std::pin::pin!(f);
    let mut cx = Context::from_waker(Waker::noop());
    loop {
        if let Poll::Ready(v) = f.as_mut().poll(&mut cx) {
            return v;
        }
        std::thread::yield_now();
    }
}

#[test]
fn one_engine_shared_by_threads() {
    let e = gpu_engine();
    let handles: Vec<_> = (0..4u64)
        .map(|t| {
            let e = e.clone();
            std::thread::spawn(move || {
                for i in 0..25u64 {
                    let n = 1 + ((t * 31 + i * 17) % 3000) as usize;
                    let v = random_f32(t * 1000 + i, n, -1.0, 1.0);
                    let y = e.copy(&e.upload_f32(&v, &[n]).unwrap()).unwrap();
                    assert_eq!(y.read_f32().unwrap(), v, "thread {t} iteration {i}");
                }
            })
        })
        .collect();
    for h in handles {
        h.join().expect("worker thread");
    }
    assert_eq!(e.pool_stats().live_bytes, 0);
}

#[test]
fn steady_state_creates_no_buffers() {
    // A decode-like loop with fixed shapes: after the first iteration every buffer is reused.
    let e = gpu_engine();
    let step = |i: u64| {
        let x = e
            .upload_f32(&random_f32(i, 2560, -1.0, 1.0), &[1, 2560])
            .unwrap();
        let h = e.copy(&e.copy(&x).unwrap()).unwrap();
        let y = e.fill(&[6912], 0.5).unwrap();
        (h.read_f32().unwrap().len(), y.read_f32().unwrap().len())
    };
    step(0);
    let warm = e.pool_stats();
    for i in 1..20 {
        assert_eq!(step(i), (2560, 6912));
    }
    let s = e.pool_stats();
    assert_eq!(
        s.misses, warm.misses,
        "no buffer created after warm-up: {s:?}"
    );
    assert!(s.hits >= warm.hits + 19 * 4);
    println!(
        "steady state: {s:?}, peak ratio {:.3}",
        s.peak_ratio().unwrap()
    );
    assert!(s.peak_ratio().unwrap() <= 1.5);
}
