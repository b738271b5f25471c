//! Automatic CPU/GPU dispatch: policies, the calibrated prediction (and its cache), and that every
//! host-facing op returns cpu-ref's result whichever backend runs it.

use bitnet_tests::{gpu_engine, random_f32, random_normal};
use bitnet_wgpu::cpu_ref;
use bitnet_wgpu::{
    BackendKind, Calibration, Cost, DispatchPolicy, Engine, EngineOptions, Linear, Location,
    OpClass, Workload,
};

/// A model where the GPU costs 1 ms per call and nothing per unit, the CPU 1 ns per unit.
fn model(key: &str) -> Calibration {
    Calibration {
        key: key.into(),
        upload_bytes_per_s: 1e10,
        download_bytes_per_s: 1e10,
        cpu: [Cost {
            fixed_s: 1e-7,
            per_unit_s: 1e-9,
        }; 4],
        gpu: [Cost {
            fixed_s: 1e-3,
            per_unit_s: 0.0,
        }; 4],
    }
}

#[test]
fn policies_per_constructor_and_at_run_time() {
    assert_eq!(Engine::cpu().dispatch_policy(), DispatchPolicy::Cpu);
    assert!(
        Engine::cpu()
            .set_dispatch_policy(DispatchPolicy::Gpu)
            .is_err()
    );
    let e = gpu_engine();
    assert_eq!(
        e.dispatch_policy(),
        DispatchPolicy::Gpu,
        "explicit GPU engines default to Gpu"
    );
    let auto = Engine::gpu_with(EngineOptions {
        dispatch: DispatchPolicy::Auto,
        ..EngineOptions::default()
    })
    .unwrap();
    assert_eq!(auto.dispatch_policy(), DispatchPolicy::Auto);
    auto.set_dispatch_policy(DispatchPolicy::Cpu).unwrap();
    assert_eq!(
        auto.choose_backend(&Workload::bitlinear(512, 4096, 4096, true)),
        BackendKind::Cpu
    );
    auto.set_dispatch_policy(DispatchPolicy::Gpu).unwrap();
    assert_eq!(
        auto.choose_backend(&Workload::bitlinear(1, 8, 8, false)),
        BackendKind::Gpu
    );
}

#[test]
fn auto_picks_the_predicted_faster_backend_and_both_give_cpu_ref_results() {
    let e = Engine::gpu_with(EngineOptions {
        dispatch: DispatchPolicy::Auto,
        ..EngineOptions::default()
    })
    .unwrap();
    e.set_calibration(model("test model")).unwrap();
    // 1 ms on the GPU vs 1 ns per MAC on the CPU: the crossover is at 1e6 MACs.
    let small = Workload::bitlinear(1, 64, 64, false);
    let large = Workload::bitlinear(64, 1024, 1024, true);
    assert_eq!(e.choose_backend(&small), BackendKind::Cpu);
    assert_eq!(e.choose_backend(&large), BackendKind::Gpu);
    // Resident weights are not uploaded: with a slow link they tip the choice.
    // CPU 2.1 ms; GPU 1 ms + 0.16 ms for x, + 2.6 ms more when the weights must be uploaded.
    let mut slow = model("slow link");
    slow.upload_bytes_per_s = 1e8;
    e.set_calibration(slow).unwrap();
    let k = 2048;
    assert_eq!(
        e.choose_backend(&Workload::bitlinear(2, 512, k, false)),
        BackendKind::Cpu
    );
    assert_eq!(
        e.choose_backend(&Workload::bitlinear(2, 512, k, true)),
        BackendKind::Gpu
    );
    // Real calls on both sides of the crossover, checked against cpu-ref. Measured times adapt
    // the model (lavapipe is far slower than this one claims), so reinstall it before each call.
    let before = e.dispatch_stats();
    for (m, n, k) in [(1, 16, 64), (40, 256, 512)] {
        let w = cpu_ref::quantize_weights(&random_normal(1, n * k, 0.02), n, k).unwrap();
        let x = random_f32(2, m * k, -1.0, 1.0);
        e.set_calibration(model("test model")).unwrap();
        assert_eq!(
            e.bitlinear(&x, m, &w).unwrap(),
            cpu_ref::bitlinear(&x, m, &w).unwrap()
        );
        let xq = cpu_ref::quantize_activations(&x, m, k).unwrap();
        e.set_calibration(model("test model")).unwrap();
        assert_eq!(
            e.bitlinear_accumulate(&xq, &w).unwrap(),
            cpu_ref::bitlinear_accumulate(&xq, &w).unwrap()
        );
    }
    let after = e.dispatch_stats();
    assert_eq!(
        after.cpu_runs - before.cpu_runs,
        2,
        "the small shape ran on the CPU"
    );
    assert_eq!(
        after.gpu_runs - before.gpu_runs,
        2,
        "the large shape ran on the GPU"
    );
    assert_eq!(after.fallbacks, 0);
}

#[test]
fn cpu_policy_keeps_everything_off_the_gpu() {
    let e = gpu_engine();
    e.set_dispatch_policy(DispatchPolicy::Cpu).unwrap();
    let pool = e.pool_stats();
    let x = random_f32(5, 3 * 128, -2.0, 2.0);
    let t = e.upload_f32(&x, &[3, 128]).unwrap();
    assert_eq!(t.location(), Location::Host);
    let q = e.quantize_activations_tensor(&t).unwrap();
    assert_eq!(q.location(), Location::Host);
    assert_eq!(
        q.read_activations().unwrap(),
        cpu_ref::quantize_activations(&x, 3, 128).unwrap()
    );
    assert_eq!(
        e.quantize_activations(&x, 3, 128).unwrap(),
        cpu_ref::quantize_activations(&x, 3, 128).unwrap()
    );
    assert_eq!(
        e.pool_stats().misses,
        pool.misses,
        "no GPU buffer was created"
    );
    assert_eq!(e.dispatch_stats().gpu_runs, 0);
}

#[test]
fn calibration_measures_both_backends_and_round_trips_through_its_cache() {
    let e = Engine::gpu_with(EngineOptions {
        dispatch: DispatchPolicy::Auto,
        ..EngineOptions::default()
    })
    .unwrap();
    let c = e.calibrate().unwrap();
    println!("{}", c.to_text());
    assert!(c.key.contains(&e.info().adapter_name) && c.key.contains(env!("CARGO_PKG_VERSION")));
    assert!(c.upload_bytes_per_s > 0.0 && c.download_bytes_per_s > 0.0);
    for class in OpClass::ALL {
        let (cpu, gpu) = (c.cpu[class.index()], c.gpu[class.index()]);
        assert!(
            cpu.seconds(1e6) > 0.0 && gpu.seconds(1e6) > 0.0,
            "{class:?}"
        );
    }
    assert_eq!(e.calibration(), Some(c.clone()));
    assert_eq!(Calibration::from_text(&c.to_text()), Some(c.clone()));
    if let Some(path) = Calibration::cache_path(&c.key)
        && path.parent().is_some_and(|d| d.is_dir())
    {
        let cached = std::fs::read_to_string(&path).unwrap();
        assert_eq!(Calibration::from_text(&cached), Some(c.clone()));
    }
    // Whatever it chose, a decision exists for every class and results match cpu-ref.
    let (m, n, k) = (2, 64, 256);
    let w = cpu_ref::quantize_weights(&random_normal(7, n * k, 0.02), n, k).unwrap();
    let x = random_f32(8, m * k, -1.0, 1.0);
    assert_eq!(
        e.bitlinear(&x, m, &w).unwrap(),
        cpu_ref::bitlinear(&x, m, &w).unwrap()
    );
}

/// A model that cannot drive `Auto` (NaN or negative costs, a zero bandwidth) is refused with a
/// typed error, and the model in use stays; before, it was installed and sent every op to one
/// backend whatever its size.
#[test]
fn set_calibration_refuses_a_model_auto_cannot_use() {
    let e = gpu_engine();
    e.set_calibration(model("test model")).unwrap();
    let bad_cost = Cost {
        fixed_s: f64::NAN,
        per_unit_s: -1.0,
    };
    let mut nan = model("nan");
    nan.gpu[0] = bad_cost;
    let mut zero_bw = model("zero bandwidth");
    zero_bw.upload_bytes_per_s = 0.0;
    for bad in [nan, zero_bw] {
        let key = bad.key.clone();
        let err = e.set_calibration(bad).unwrap_err();
        assert!(
            matches!(
                err,
                bitnet_wgpu::Error::CpuRef(cpu_ref::Error::InvalidArgument {
                    op: "set_calibration",
                    ..
                })
            ),
            "{key}: {err:?}"
        );
        assert_eq!(e.calibration().unwrap().key, "test model", "{key}");
    }
    // The CPU engine has no model to set, and says Ok.
    Engine::cpu().set_calibration(model("cpu")).unwrap();
}

/// A device limit that a host-facing op cannot chunk around (one activation row wider than the
/// binding cap) is returned under `Gpu`, and under `Auto` re-runs the op on the CPU: cpu-ref's
/// result, counted as a fallback.
#[test]
fn auto_reruns_an_op_past_a_device_limit_on_the_cpu() {
    let e = bitnet_tests::gpu_engine_with(EngineOptions {
        max_binding_bytes: Some(1024),
        ..EngineOptions::default()
    });
    let (m, n, k) = (2, 8, 512); // a row of x: 2 KiB of f32
    let w = cpu_ref::quantize_weights(&random_normal(8, n * k, 0.05), n, k).unwrap();
    let x = random_f32(9, m * k, -2.0, 2.0);
    fn limited<T>(r: Result<T, bitnet_wgpu::Error>) -> bool {
        matches!(r, Err(bitnet_wgpu::Error::LimitExceeded { .. }))
    }
    assert!(limited(e.bitlinear(&x, m, &w)), "Gpu returns the limit");
    assert!(limited(e.quantize_activations(&x, m, k)));
    bitnet_tests::auto_preferring_gpu(&e, "device-limit");
    let before = e.dispatch_stats().fallbacks;
    assert_eq!(
        e.bitlinear(&x, m, &w).unwrap(),
        cpu_ref::bitlinear(&x, m, &w).unwrap()
    );
    assert_eq!(
        e.quantize_activations(&x, m, k).unwrap(),
        cpu_ref::quantize_activations(&x, m, k).unwrap()
    );
    assert_eq!(e.dispatch_stats().fallbacks, before + 2);
}

/// A host-facing op whose GPU path runs cpu-ref instead (on a CPU adapter, a row whose
/// quantization loops past lavapipe's limit) counts as a CPU run, not a GPU run: it was counted
/// (and timed, under `Auto`) as the GPU's (a reviewer's probe). On a real GPU the kernel runs.
#[test]
fn a_gpu_path_that_ran_cpu_ref_counts_as_a_cpu_run() {
    let e = gpu_engine();
    e.set_dispatch_policy(DispatchPolicy::Gpu).unwrap();
    // K not a multiple of 4, past 12.3 M values: more loop iterations than lavapipe runs.
    let k = 13_000_001;
    let x = random_f32(77, k, -1.0, 1.0);
    let before = e.dispatch_stats();
    let got = e.quantize_activations(&x, 1, k).unwrap();
    assert_eq!(got, cpu_ref::quantize_activations(&x, 1, k).unwrap());
    let after = e.dispatch_stats();
    let cpu_adapter = e.info().device_type == "Cpu";
    let ran = (
        after.cpu_runs - before.cpu_runs,
        after.gpu_runs - before.gpu_runs,
    );
    let want_ran = if cpu_adapter { (1, 0) } else { (0, 1) };
    assert_eq!(ran, want_ran, "(cpu, gpu)");
    assert_eq!(after.fallbacks, before.fallbacks);
    // The same for BitLinear, and for a streamed chunk (counted when delivered).
    let w = cpu_ref::quantize_weights(&random_normal(78, k, 0.02), 1, k).unwrap();
    let layer = Linear::new(&e, w.clone());
    let want = cpu_ref::bitlinear(&x, 1, &w).unwrap();
    let before = e.dispatch_stats();
    assert_eq!(layer.forward(&x, 1).unwrap(), want);
    let stats = e
        .stream_bitlinear(std::iter::once(x.as_slice()), &layer, |_, y| {
            assert_eq!(y, want.as_slice());
            Ok(())
        })
        .unwrap();
    let after = e.dispatch_stats();
    let ran = (
        after.cpu_runs - before.cpu_runs,
        after.gpu_runs - before.gpu_runs,
    );
    assert_eq!(ran, (2 * want_ran.0, 2 * want_ran.1), "(cpu, gpu)");
    assert_eq!(
        (stats.cpu_chunks as u64, stats.gpu_chunks as u64),
        want_ran,
        "the stream's chunks"
    );
    assert_eq!(after.fallbacks, before.fallbacks);
}

/// A calibration times the GPU on the GPU: on a device that cannot take its shapes (bindings
/// capped at 4 KiB, below weight quantization's 16 KiB blocks) it fails under `Auto` as under
/// `Gpu`, rather than timing the tensor ops' CPU runs as the GPU's and installing that model (a
/// reviewer's finding, once tensor ops ran such shapes on the CPU under `Auto`).
#[test]
fn a_calibration_never_times_a_cpu_run_as_the_gpu() {
    for policy in [DispatchPolicy::Gpu, DispatchPolicy::Auto] {
        let e = bitnet_tests::gpu_engine_with(EngineOptions {
            max_binding_bytes: Some(4096),
            dispatch: policy,
            ..EngineOptions::default()
        });
        let r = e.calibrate();
        assert!(
            matches!(r, Err(bitnet_wgpu::Error::LimitExceeded { .. })),
            "{policy:?}: {r:?}"
        );
        assert_eq!(e.calibration(), None, "{policy:?}");
    }
}
