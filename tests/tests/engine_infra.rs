//! Engine infrastructure on a real GPU adapter (lavapipe in CI): adapter info, upload/read-back
//! round trips, typed errors; `engine_infra/` holds the pool/cache and GPU-path tests.

mod engine_infra {
    mod gpu_paths;
    mod own_device;
    mod pool;
    mod reads;
    mod reentry;
    mod residence;
}

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

/// A batch size whose uniform-mode params arena cannot exist is a typed error at engine
/// creation, not an uncaptured device error that only a later sync reports.
#[test]
fn an_impossible_batch_size_is_a_typed_error_at_creation() {
    let got = Engine::gpu_with(EngineOptions {
        force_uniform_params: true,
        batch_dispatches: u32::MAX,
        ..Default::default()
    });
    assert!(
        matches!(
            got,
            Err(Error::LimitExceeded {
                limit: "max_buffer_size",
                ..
            })
        ),
        "{:?}",
        got.map(|e| e.info().adapter_name)
    );
}

/// A binding cap no op could bind a chunk under is a typed error at engine creation, not an
/// engine whose every chunked op later fails. 256 bytes is at least any device's alignment.
#[test]
fn a_binding_cap_below_the_offset_alignment_is_a_typed_error_at_creation() {
    let with_cap = |cap| {
        Engine::gpu_with(EngineOptions {
            max_binding_bytes: Some(cap),
            ..Default::default()
        })
    };
    for cap in [0, 3, 4] {
        let got = with_cap(cap).map(|e| e.info().adapter_name);
        assert!(
            matches!(
                got,
                Err(Error::CpuRef(bitnet_cpu_ref::Error::InvalidArgument {
                    what: "max_binding_bytes",
                    ..
                }))
            ),
            "cap {cap}: {got:?}"
        );
    }
    let e = with_cap(256).unwrap();
    let t = e.upload_f32(&[1.5; 300], &[300]).unwrap();
    assert_eq!(
        e.unary(bitnet_wgpu::UnaryOp::Relu, &t)
            .unwrap()
            .read_f32()
            .unwrap(),
        vec![1.5; 300]
    );
}

/// An idle-flush window too long to add to the current time (`Duration::MAX`) means "no idle
/// flush", not a panic that kills the submission thread the first time it idles with work
/// pending (after which every read failed with `DeviceLost` and the recorded work was lost).
#[test]
fn an_unbounded_idle_flush_window_never_flushes_and_never_panics() {
    let e = bitnet_tests::gpu_engine_with(EngineOptions {
        idle_flush: Some(std::time::Duration::MAX),
        ..Default::default()
    });
    let v = random_f32(11, 300, -2.0, 2.0);
    let x = e.upload_f32(&v, &[300]).unwrap();
    let y = e.copy(&x).unwrap();
    // Long past the thread's spin: it now waits idle with the copy pending.
    std::thread::sleep(std::time::Duration::from_millis(200));
    assert_eq!(y.read_f32().unwrap(), v);
    assert_eq!(e.copy(&y).unwrap().read_f32().unwrap(), v);
    e.sync().unwrap();
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

/// Reads past one read-back staging chunk (64 MiB) come back whole: the chunks continue at the
/// right byte offsets, and a tail that is not a whole word is cut at the tensor's end.
#[test]
fn reads_larger_than_one_readback_chunk() {
    let e = gpu_engine();
    let n = (64 << 20) / 4 + 3;
    let v = random_f32(9, n, -10.0, 10.0);
    assert_eq!(e.upload_f32(&v, &[n]).unwrap().read_f32().unwrap(), v);
    let b = random_i8(10, (64 << 20) + 5);
    let t = e.upload_i8(&b, &[1, b.len()]).unwrap();
    assert_eq!(t.read_i8().unwrap(), b);
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

/// A fill the host cannot hold is a typed error on the CPU engine and under the CPU policy —
/// as `LimitExceeded` is on the GPU — not a capacity-overflow panic or an allocation abort.
#[test]
fn host_fills_too_large_for_the_host_are_typed_errors() {
    let gpu_on_cpu = gpu_engine();
    gpu_on_cpu
        .set_dispatch_policy(bitnet_wgpu::DispatchPolicy::Cpu)
        .unwrap();
    for e in [Engine::cpu(), gpu_on_cpu] {
        // 2^63 bytes: more than any allocation may ask for.
        let got = e.fill(&[1 << 61], 0.0).map(|t| t.len());
        assert!(
            matches!(got, Err(Error::LimitExceeded { requested, .. }) if requested == 1 << 63),
            "{got:?}"
        );
        // 4 PiB: representable, but beyond any x86-64 / AArch64 user address space.
        let got = e.fill(&[1 << 50], 0.0).map(|t| t.len());
        assert!(matches!(got, Err(Error::OutOfMemory { .. })), "{got:?}");
        let t = e.fill(&[2, 3], 1.5).unwrap();
        assert_eq!(t.location(), Location::Host);
        assert_eq!(t.read_f32().unwrap(), vec![1.5; 6]);
    }
}

/// A non-finite fill value is a typed error on both engines (it gave a readable tensor of NaN,
/// against the crate docs' promise that NaN/Inf inputs become errors).
#[test]
fn non_finite_fill_values_are_errors() {
    for e in [Engine::cpu(), gpu_engine()] {
        for v in [f32::NAN, f32::INFINITY, f32::NEG_INFINITY] {
            let got = e.fill(&[3], v).map(|t| t.len());
            assert!(
                matches!(
                    got,
                    Err(Error::NonFinite {
                        op: "fill",
                        tensor: "value",
                        index: 0
                    })
                ),
                "{v}: {got:?}"
            );
        }
    }
}

/// An op whose output the host cannot hold is a typed error on the CPU backend, not an
/// allocation abort: 64 MiB operands asking for a 1 PiB broadcast or matmul output.
#[test]
fn host_op_outputs_too_large_for_the_host_are_typed_errors() {
    const BIG: usize = 1 << 24;
    let gpu_on_cpu = gpu_engine();
    gpu_on_cpu
        .set_dispatch_policy(bitnet_wgpu::DispatchPolicy::Cpu)
        .unwrap();
    for e in [Engine::cpu(), gpu_on_cpu] {
        let ones = vec![1.0f32; BIG];
        let col = e.upload_f32(&ones, &[BIG, 1]).unwrap();
        let row = e.upload_f32(&ones, &[1, BIG]).unwrap();
        let got = e
            .binary(bitnet_wgpu::BinaryOp::Add, &col, &row)
            .map(|t| t.len());
        assert!(matches!(got, Err(Error::OutOfMemory { .. })), "{got:?}");
        let got = e.matmul(&col, &row).map(|t| t.len());
        assert!(matches!(got, Err(Error::OutOfMemory { .. })), "{got:?}");
    }
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

/// `info()` says where ops run, not only which adapter exists: under the `Cpu` policy the
/// adapter runs nothing, and a lost device none either.
#[test]
fn info_says_where_ops_run() {
    use bitnet_wgpu::DispatchPolicy;
    let e = gpu_engine();
    e.set_dispatch_policy(DispatchPolicy::Gpu).unwrap();
    let info = e.info();
    assert_eq!(
        (info.dispatch, info.device_lost),
        (DispatchPolicy::Gpu, false)
    );
    assert!(
        info.to_string()
            .contains("dispatch:  Gpu (every op runs on the GPU)")
    );
    e.set_dispatch_policy(DispatchPolicy::Cpu).unwrap();
    let shown = e.info().to_string();
    assert!(
        shown.contains("dispatch:  Cpu (every op runs on the CPU; the adapter is unused)"),
        "{shown}"
    );
    bitnet_tests::lose_device(&e);
    assert!(e.info().to_string().contains("device LOST"));
    assert_eq!(Engine::cpu().info().dispatch, DispatchPolicy::Cpu);
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
