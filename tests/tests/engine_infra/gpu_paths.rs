//! GPU-only paths: chunking over the binding limit, folded grids, non-finite reporting, status
//! slot overflow, the profiler, device loss and sharing one engine between threads.

use bitnet_tests::{gpu_engine, random_f32};
use bitnet_wgpu::{Engine, EngineOptions, Error};

fn opts() -> EngineOptions {
    EngineOptions::default()
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

/// A fill of more values than 256 × `max_compute_workgroups_per_dimension` (fills cover 1024
/// per workgroup, so the grid itself is not folded here; `launch_tests.rs` folds one).
#[test]
fn large_fills_write_every_element_once() {
    let e = gpu_engine();
    let max = e
        .info()
        .limits
        .unwrap()
        .max_compute_workgroups_per_dimension as usize;
    let n = (max + 1) * 256 + 5;
    let t = e.fill(&[n], -3.25).unwrap();
    let v = t.read_f32().unwrap();
    assert_eq!(v.len(), n);
    assert!(
        v.iter().all(|&x| x == -3.25),
        "every element written exactly once"
    );
}

#[test]
fn non_finite_input_is_reported_by_the_tensors_it_flows_into() {
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
        // An unrelated tensor recorded after it reads clean while y's flag is still unread.
        let z = e.copy(&e.upload_f32(&[1.0, 2.0], &[2]).unwrap()).unwrap();
        assert_eq!(z.read_f32().unwrap(), vec![1.0, 2.0]);
        assert_eq!(y.read_f32().unwrap_err(), err);
        // The poison stays with y and what is computed from it; reading again reports it again.
        assert_eq!(y.check().unwrap_err(), err);
        assert_eq!(e.copy(&y).unwrap_err(), err);
        // Engine-wide sync points report device errors only, never a tensor's flag.
        let _dropped_unread = e.copy(&x).unwrap();
        e.sync().unwrap();
        assert_eq!(z.check(), Ok(()));
        // Same error as the CPU engine.
        let c = Engine::cpu();
        let cx = c
            .upload_f32(&[1.0, f32::NAN, 3.0, f32::NEG_INFINITY, 5.0], &[5])
            .unwrap();
        assert_eq!(c.copy(&cx).unwrap_err(), err);
    }
}

#[test]
fn status_slots_run_out_and_every_launch_keeps_its_own_result() {
    // More flagged launches than status slots between two reads, in small batches: the forced
    // check stores each result in its own launch, so exactly one output is poisoned.
    let e = bitnet_tests::gpu_engine_with(EngineOptions {
        batch_dispatches: 7,
        ..opts()
    });
    let clean = e.upload_f32(&[1.0; 4], &[4]).unwrap();
    let mut bad = vec![0.0f32; 4];
    bad[2] = f32::NAN;
    let bad = e.upload_f32(&bad, &[4]).unwrap();
    let outs: Vec<_> = (0..1500)
        .map(|i| e.copy(if i == 1200 { &bad } else { &clean }).unwrap())
        .collect();
    let err = Error::NonFinite {
        op: "copy",
        tensor: "x",
        index: 2,
    };
    for (i, y) in outs.iter().enumerate().rev() {
        match i {
            1200 => assert_eq!(y.check().unwrap_err(), err),
            _ => assert_eq!(y.check(), Ok(()), "output {i}"),
        }
    }
    assert_eq!(outs[1200].read_f32().unwrap_err(), err);
    assert_eq!(outs[3].read_f32().unwrap(), vec![1.0; 4]);
    // Outputs dropped unread give their (dirty) slots back: thousands more launches still work.
    for i in 0..3000 {
        let _ = e.copy(if i % 500 == 0 { &bad } else { &clean }).unwrap();
    }
    assert_eq!(e.copy(&clean).unwrap().read_f32().unwrap(), vec![1.0; 4]);
    assert_eq!(e.copy(&bad).unwrap().read_f32().unwrap_err(), err);
    drop(outs);
    e.sync().unwrap();
    assert_eq!(e.pool_stats().live_bytes, 32);
}

/// A batch is one submission while its checked launches with live, unread outputs fit the
/// status slots, and is submitted in pieces past them (the crate docs' sync points; the
/// benchmark's overlapped samples rely on the first half).
#[test]
fn live_unread_launches_past_the_status_slots_split_a_batch() {
    use bitnet_wgpu::{ProfileGranularity, STATUS_SLOTS};
    let e = bitnet_tests::gpu_engine_with(EngineOptions {
        batch_dispatches: 4 * STATUS_SLOTS,
        first_batch_dispatches: 4 * STATUS_SLOTS,
        idle_flush: None,
        ..opts()
    });
    e.set_profiling(true).unwrap();
    e.set_profiling_granularity(ProfileGranularity::Batch)
        .unwrap();
    let x = e.upload_f32(&[2.0; 4], &[4]).unwrap();
    e.sync().unwrap();
    let batches = |launches: u32| {
        e.reset_profile();
        let outs: Vec<_> = (0..launches).map(|_| e.copy(&x).unwrap()).collect();
        e.sync().unwrap();
        let report = e.profile_report().unwrap();
        assert_eq!(report.dispatches, u64::from(launches));
        assert_eq!(
            outs[launches as usize - 1].read_f32().unwrap(),
            vec![2.0; 4]
        );
        report.entries.iter().map(|en| en.1).sum::<u64>()
    };
    assert_eq!(batches(STATUS_SLOTS / 2), 1);
    assert!(batches(STATUS_SLOTS + 100) >= 2);
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

#[test]
fn a_device_from_open_gpu_device_is_shared_with_the_app() {
    use bitnet_wgpu::{cpu_ref, wgpu};
    let (adapter, device, queue) = bitnet_wgpu::open_gpu_device().expect("GPU adapter required");
    let e = Engine::from_device(&adapter, device.clone(), queue.clone()).unwrap();
    // The device has the limits the engine asks for (the adapter's), unlike a default one.
    assert_eq!(
        e.info().limits.unwrap().max_storage_buffer_binding_size,
        adapter.limits().max_storage_buffer_binding_size
    );
    assert_eq!(e.info().adapter_name, adapter.get_info().name);
    // The app's own work on the shared queue, between and around the engine's ops.
    let app_buffer = device.create_buffer(&wgpu::BufferDescriptor {
        label: Some("app"),
        size: 1 << 20,
        usage: wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_DST,
        mapped_at_creation: false,
    });
    let (n, k) = (5, 64);
    let w = random_f32(3, n * k, -1.0, 1.0);
    let x = random_f32(4, 2 * k, -2.0, 2.0);
    let weights = e.quantize_weights(&w, n, k).unwrap();
    assert_eq!(weights, cpu_ref::quantize_weights(&w, n, k).unwrap());
    let want = cpu_ref::bitlinear(&x, 2, &weights).unwrap();
    for _ in 0..3 {
        queue.write_buffer(&app_buffer, 0, &[7u8; 4096]);
        queue.submit([]);
        assert_eq!(e.bitlinear(&x, 2, &weights).unwrap(), want);
    }
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

/// An engine on an adapter the application picked (`Engine::from_adapter`) requests the
/// adapter's real limits, runs ops bit for bit as cpu-ref, and keeps the tuning it is given.
#[test]
fn an_engine_on_a_chosen_adapter_runs_and_keeps_its_tuning() {
    use bitnet_wgpu::{BitnetTuning, cpu_ref, wgpu};
    let instance =
        wgpu::Instance::new(wgpu::InstanceDescriptor::new_without_display_handle_from_env());
    let adapter = pollster_block(instance.request_adapter(&wgpu::RequestAdapterOptions::default()))
        .expect("GPU adapter required");
    let e = Engine::from_adapter(&adapter).unwrap();
    assert_eq!(e.info().adapter_name, adapter.get_info().name);
    assert_eq!(
        e.info().limits.unwrap().max_storage_buffer_binding_size,
        adapter.limits().max_storage_buffer_binding_size
    );
    assert_eq!(e.bitnet_tuning(), BitnetTuning::default());
    let tuning = BitnetTuning {
        autotune: Some(false),
        gemv_lanes: Some(16),
        ..BitnetTuning::default()
    };
    e.set_bitnet_tuning(tuning);
    assert_eq!(e.bitnet_tuning(), tuning);
    assert_eq!(Engine::cpu().bitnet_tuning(), BitnetTuning::default());
    let (n, k) = (9, 128);
    let weights = cpu_ref::quantize_weights(&random_f32(5, n * k, -1.0, 1.0), n, k).unwrap();
    let x = random_f32(6, 3 * k, -2.0, 2.0);
    e.set_dispatch_policy(bitnet_wgpu::DispatchPolicy::Gpu)
        .unwrap();
    assert_eq!(
        e.bitlinear(&x, 3, &weights).unwrap(),
        cpu_ref::bitlinear(&x, 3, &weights).unwrap()
    );
}
