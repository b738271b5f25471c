//! `BITNET_DISPATCH` parsing; re-entering the calibration lock.

use super::*;
use crate::cache_file::tests::warnings;

/// A blank `BITNET_DISPATCH` (as `BITNET_DISPATCH= cmd` leaves it) says nothing, as an unset
/// one: it was logged as an invalid policy.
#[test]
fn a_blank_setting_says_nothing() {
    warnings();
    for blank in ["", " ", "\t\n"] {
        assert_eq!(DispatchPolicy::from_setting(Some(blank)), None);
    }
    assert_eq!(DispatchPolicy::from_setting(None), None);
    let gpu = DispatchPolicy::from_setting(Some(" GPU "));
    assert_eq!(gpu, Some(DispatchPolicy::Gpu));
    assert_eq!(DispatchPolicy::from_setting(Some("fast")), None);
    let logged = warnings();
    let about = |v: &str| {
        logged
            .iter()
            .any(|w| w.contains(&format!("{DISPATCH_ENV}={v:?}")))
    };
    assert!(!about("") && !about(" ") && !about("\t\n"), "{logged:?}");
    assert!(about("fast"), "{logged:?}");
}

/// Code the engine runs on a thread while it holds this engine's calibration lock (an
/// application's logger, called for the calibration's own log lines) that re-enters the engine
/// there: an Auto decision takes the CPU (no model yet) and `calibrate` is refused, where both
/// locked the same mutex again and hung every thread that made an Auto decision.
#[test]
fn re_entering_calibration_on_the_calibrating_thread_does_not_hang() {
    let e = crate::test_gpu::gpu_with(crate::engine::EngineOptions::default());
    e.set_dispatch_policy(DispatchPolicy::Auto).unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    let e2 = e.clone();
    std::thread::spawn(move || {
        let g = e2.gpu_raw().expect("a GPU engine");
        let held = g.dispatch.lock_calibrating(g.id);
        let again = g.dispatch.lock_calibrating(g.id).is_none();
        let w = crate::workload::Workload::bitlinear(1, 64, 64, true);
        let choice = e2.choose_backend(&w);
        let calibrated = e2.calibrate().map(drop);
        drop(held);
        let _ = tx.send((again, choice, calibrated));
    });
    let (again, choice, calibrated) = rx
        .recv_timeout(std::time::Duration::from_secs(60))
        .expect("no hang");
    assert!(again, "the lock is this thread's already");
    assert_eq!(choice, BackendKind::Cpu);
    assert!(
        matches!(calibrated, Err(Error::Unsupported(_))),
        "{calibrated:?}"
    );
    // The lock is free again: a calibration from another thread runs.
    e.calibrate().unwrap();
}

/// A calibration on which the GPU wins a 1 × 1024 × 1024 GEMV only with resident weights: GPU
/// 100 us, CPU 200 us, the weights' upload 262 us.
fn resident_only_model() -> Calibration {
    use crate::calibrate::{Cost, OpClass};
    let mut cost = [Cost {
        fixed_s: 1e-3,
        per_unit_s: 0.0,
    }; 4];
    let mut cpu = cost;
    cost[OpClass::LinearGemv.index()].fixed_s = 100e-6;
    cpu[OpClass::LinearGemv.index()].fixed_s = 200e-6;
    Calibration {
        key: "dispatch test".into(),
        upload_bytes_per_s: 1e9,
        download_bytes_per_s: 1e9,
        cpu,
        gpu: cost,
    }
}

fn ternary(n: usize, k: usize) -> bitnet_cpu_ref::TernaryMatrix {
    let v: Vec<f32> = (0..n * k).map(|i| ((i * 7919) % 13) as f32 - 6.0).collect();
    bitnet_cpu_ref::quantize_weights(&v, n, k).unwrap()
}

/// A layer is priced with resident weights from its second call on: charging the one-time upload
/// to every decision kept a layer that wins on the GPU only without it on the CPU for good.
#[test]
fn a_reused_layer_goes_to_the_gpu_where_resident_weights_win() {
    let e = crate::test_gpu::gpu();
    e.set_dispatch_policy(DispatchPolicy::Auto).unwrap();
    e.set_calibration(resident_only_model()).unwrap();
    let w = ternary(1024, 1024);
    let want = bitnet_cpu_ref::bitlinear(&[0.5; 1024], 1, &w).unwrap();
    let layer = crate::Linear::new(&e, w);
    for _ in 0..4 {
        assert_eq!(layer.forward(&[0.5; 1024], 1).unwrap(), want);
    }
    let s = e.dispatch_stats();
    assert!(s.gpu_runs >= 3 && s.cpu_runs <= 1, "{s:?}");
}

/// A GPU-routed call during which `change` happens — simulated before the GPU run starts
/// (`before`: inside `valid`, which runs in that window) or during it — runs on host tensors; it
/// must be neither counted nor timed as a GPU run (its CPU time went into the GPU's adaptation
/// factor). `undo` runs at the end of the GPU run. The (CPU runs, GPU runs, fallbacks) it added.
fn changed_in_flight(
    before: bool,
    change: impl Fn(&crate::Engine),
    undo: impl Fn(&crate::Engine),
) -> [u64; 3] {
    use crate::dispatch::Route;
    let e = crate::test_gpu::gpu();
    e.set_dispatch_policy(DispatchPolicy::Auto).unwrap();
    e.set_calibration(resident_only_model()).unwrap();
    let g = e.gpu_raw().unwrap();
    let w = ternary(64, 64);
    let work = Workload::bitlinear(1, 64, 64, false);
    let stats = e.dispatch_stats();
    let y = e
        .off_cpu(
            Route::Gpu(g),
            "bitlinear",
            &work,
            || {
                if before {
                    change(&e);
                }
                true
            },
            || Ok(bitnet_cpu_ref::bitlinear(&[0.5; 64], 1, &w)?),
            || {
                if !before {
                    change(&e);
                }
                let x = e.upload_f32(&[0.5; 64], &[1, 64])?;
                assert_eq!(x.location(), crate::tensor::Location::Host);
                let y = e.bitlinear_tensor(&x, &e.upload_ternary(&w)?)?.read_f32();
                undo(&e);
                y
            },
        )
        .unwrap();
    assert_eq!(y, bitnet_cpu_ref::bitlinear(&[0.5; 64], 1, &w).unwrap());
    let after = e.dispatch_stats();
    assert_eq!(after.gpu_runs, stats.gpu_runs);
    let factor = g.dispatch.factors(&work)[1].load(Ordering::Relaxed);
    assert_eq!(f64::from_bits(factor), 1.0);
    [
        after.cpu_runs - stats.cpu_runs,
        after.gpu_runs - stats.gpu_runs,
        after.fallbacks - stats.fallbacks,
    ]
}

fn to_cpu(e: &crate::Engine) {
    e.set_dispatch_policy(DispatchPolicy::Cpu).unwrap();
}

#[test]
fn a_call_whose_policy_changed_in_flight_is_not_timed_as_a_gpu_run() {
    changed_in_flight(false, to_cpu, |_| ());
}

/// The change lands before the GPU run starts: the in-flight check's snapshot, taken there,
/// missed it at first.
#[test]
fn a_policy_change_before_the_gpu_run_is_not_timed_as_one() {
    changed_in_flight(true, to_cpu, |_| ());
}

/// The policy goes to `Cpu` and back to `Auto` while the call runs: comparing the policy before
/// and after saw no change, and the host run was counted and timed as a GPU run.
#[test]
fn a_policy_round_trip_in_flight_is_not_timed_as_a_gpu_run() {
    changed_in_flight(false, to_cpu, |e| {
        e.set_dispatch_policy(DispatchPolicy::Auto).unwrap()
    });
}

/// The device is lost while the call runs: its tensors are host tensors from then on, so
/// cpu-ref ran the op — a fallback, where it was counted and timed as a GPU run.
#[test]
fn a_device_lost_in_flight_is_a_fallback_not_a_gpu_run() {
    let added = changed_in_flight(
        false,
        |e| {
            e.inject_fault(crate::InjectedFault::DeviceLost);
            let _ = e.sync();
        },
        |_| (),
    );
    assert_eq!(added, [0, 0, 1]);
}

/// Under `Auto`, a shape the device cannot take (a binding limit) is remembered: it went to the
/// GPU, uploaded its inputs, failed and re-ran on the CPU on every call.
#[test]
fn a_shape_the_device_cannot_take_stays_on_the_cpu() {
    let e = crate::test_gpu::gpu_with(crate::engine::EngineOptions {
        max_binding_bytes: Some(64 << 10),
        ..Default::default()
    });
    e.set_dispatch_policy(DispatchPolicy::Auto).unwrap();
    let mut c = resident_only_model();
    c.upload_bytes_per_s = 1e12;
    c.download_bytes_per_s = 1e12;
    c.gpu = [crate::calibrate::Cost {
        fixed_s: 1e-5,
        per_unit_s: 0.0,
    }; 4];
    e.set_calibration(c).unwrap();
    let (m, n, k) = (16, 64, 32768);
    let w = ternary(n, k);
    let x = vec![0.5f32; m * k];
    let want = bitnet_cpu_ref::bitlinear(&x, m, &w).unwrap();
    for _ in 0..20 {
        assert_eq!(e.bitlinear(&x, m, &w).unwrap(), want);
    }
    let s = e.dispatch_stats();
    assert_eq!(s.fallbacks, 1, "{s:?}");
}

/// CPU `cpu_fixed` and GPU `gpu_fixed` seconds per call for every class; free transfers.
fn flat_model(cpu_fixed: f64, gpu_fixed: f64) -> Calibration {
    use crate::calibrate::Cost;
    Calibration {
        key: "dispatch test".into(),
        upload_bytes_per_s: 1e12,
        download_bytes_per_s: 1e12,
        cpu: [Cost {
            fixed_s: cpu_fixed,
            per_unit_s: 0.0,
        }; 4],
        gpu: [Cost {
            fixed_s: gpu_fixed,
            per_unit_s: 0.0,
        }; 4],
    }
}

/// Runs 4096 calls of a 16 × 64 × 64 BitLinear under `Auto` on a model where `backend` (0 CPU,
/// 1 GPU) is calibrated faster but measured 100× slower, so the other backend runs them and
/// `backend` is probed now and then; the (CPU, GPU, fallback) counts, which must add up to the
/// calls.
fn probe_counts(backend: usize) -> (u64, u64) {
    let e = crate::test_gpu::gpu();
    e.set_dispatch_policy(DispatchPolicy::Auto).unwrap();
    let (cpu, gpu) = if backend == 1 {
        (5e-4, 1e-5)
    } else {
        (1e-4, 5e-4)
    };
    e.set_calibration(flat_model(cpu, gpu)).unwrap();
    let g = e.gpu_raw().unwrap();
    let (m, n, k) = (16, 64, 64);
    let work = Workload::bitlinear(m, n, k, false);
    g.dispatch.factors(&work)[backend].store(100f64.to_bits(), Ordering::Relaxed);
    g.dispatch.update_threshold(work.class);
    let w = ternary(n, k);
    let x = vec![0.5f32; m * k];
    let before = e.dispatch_stats();
    let calls = 4096u64;
    for _ in 0..calls {
        e.bitlinear(&x, m, &w).unwrap();
    }
    let s = e.dispatch_stats();
    let (c, gr, f) = (
        s.cpu_runs - before.cpu_runs,
        s.gpu_runs - before.gpu_runs,
        s.fallbacks - before.fallbacks,
    );
    assert_eq!(c + gr + f, calls, "one op counted once");
    (c, gr)
}

/// A GPU probe (a sampled CPU call sent to the GPU) counts once, as a GPU run: `route` had
/// counted it as a CPU run too.
#[test]
fn a_gpu_probe_counts_once_as_a_gpu_run() {
    let (cpu, gpu) = probe_counts(1);
    assert!(
        cpu > 0 && gpu > 0,
        "the GPU probes ran: {cpu} CPU, {gpu} GPU runs"
    );
}

/// A CPU probe (a GPU-bound call run on the CPU, timed) counts as a CPU run: it counted nowhere.
#[test]
fn a_cpu_probe_counts_as_a_cpu_run() {
    let (cpu, gpu) = probe_counts(0);
    assert!(
        cpu > 0 && gpu > 0,
        "the CPU probes ran: {cpu} CPU, {gpu} GPU runs"
    );
}

/// A shape the device cannot take (K too long for a 64 KiB binding) is remembered alone: capping
/// its size bucket's GPU factor sent another shape of that bucket, which the device runs and
/// which wins there, to the CPU.
#[test]
fn a_shape_the_device_cannot_take_leaves_other_shapes_alone() {
    let e = crate::test_gpu::gpu_with(crate::engine::EngineOptions {
        max_binding_bytes: Some(64 << 10),
        ..Default::default()
    });
    e.set_dispatch_policy(DispatchPolicy::Auto).unwrap();
    e.set_calibration(flat_model(1e-3, 1e-5)).unwrap();
    let (m, n, k) = (16, 2048, 1024); // 33.5M units, as 16 x 64 x 32768
    let w_ok = ternary(n, k);
    let x_ok = vec![0.5f32; m * k];
    let want = bitnet_cpu_ref::bitlinear(&x_ok, m, &w_ok).unwrap();
    let w_bad = ternary(64, 32768);
    let x_bad = vec![0.5f32; 16 * 32768];
    e.bitlinear(&x_bad, 16, &w_bad).unwrap(); // a capability error: remembered
    let s2 = e.dispatch_stats();
    assert_eq!(s2.fallbacks, 1);
    for _ in 0..20 {
        assert_eq!(e.bitlinear(&x_ok, m, &w_ok).unwrap(), want);
    }
    let s3 = e.dispatch_stats();
    assert_eq!(s3.gpu_runs - s2.gpu_runs, 20);
}
