//! GPU faults fall back to the CPU and lose nothing: each injected failure kind (device lost, out
//! of memory, validation, pipeline creation) makes the op re-run on the CPU from the caller's
//! inputs, the result equals cpu-ref bit for bit, and the fallback is counted (and logged). A lost
//! device is never used again; a failed launch poisons only the tensors computed from it. A panic
//! on the submission thread is a typed internal error, and the device stays in use.

use bitnet_tests::{block_on, gpu_engine_with, random_f32, random_normal};
use bitnet_wgpu::cpu_ref::{self, TernaryMatrix};
use bitnet_wgpu::{Engine, EngineOptions, Error, InjectedFault, Location};

fn engine() -> Engine {
    gpu_engine_with(EngineOptions::default()) // dispatch policy Gpu: every op tries the GPU
}

fn weights(n: usize, k: usize) -> TernaryMatrix {
    cpu_ref::quantize_weights(&random_normal(3, n * k, 0.02), n, k).unwrap()
}

/// Runs the three host-facing BitNet ops on `e` and checks them against cpu-ref.
fn check_ops(e: &Engine, seed: u64) {
    let (m, n, k) = (3, 40, 200);
    let w = weights(n, k);
    let x = random_f32(seed, m * k, -2.0, 2.0);
    let got = e.bitlinear(&x, m, &w).unwrap();
    assert_eq!(got, cpu_ref::bitlinear(&x, m, &w).unwrap(), "bitlinear");
    let got = e.quantize_activations(&x, m, k).unwrap();
    assert_eq!(got, cpu_ref::quantize_activations(&x, m, k).unwrap());
    let wf = random_normal(seed + 1, n * k, 0.05);
    let got = e.quantize_weights(&wf, n, k).unwrap();
    assert_eq!(got, cpu_ref::quantize_weights(&wf, n, k).unwrap());
}

#[test]
fn each_fault_kind_falls_back_to_a_correct_cpu_result() {
    for fault in [
        InjectedFault::OutOfMemory,
        InjectedFault::Validation,
        InjectedFault::PipelineCreation,
    ] {
        let e = engine();
        check_ops(&e, 1); // warm: pipelines compiled, pool populated
        let before = e.dispatch_stats();
        assert_eq!((before.gpu_runs, before.fallbacks), (3, 0), "{fault:?}");
        e.inject_fault(fault);
        let (m, n, k) = (5, 64, 320);
        let w = weights(n, k);
        let x = random_f32(9, m * k, -3.0, 3.0);
        let got = e
            .bitlinear(&x, m, &w)
            .unwrap_or_else(|err| panic!("{fault:?}: {err}"));
        assert_eq!(got, cpu_ref::bitlinear(&x, m, &w).unwrap(), "{fault:?}");
        let after = e.dispatch_stats();
        assert_eq!(after.fallbacks, 1, "{fault:?}: the faulted op fell back");
        assert_eq!(after.gpu_runs, before.gpu_runs, "{fault:?}");
        // The device is still healthy: the next ops run on the GPU again, correctly.
        check_ops(&e, 2);
        assert_eq!(
            e.dispatch_stats().gpu_runs,
            before.gpu_runs + 3,
            "{fault:?}"
        );
        e.sync().unwrap();
    }
}

#[test]
fn a_lost_device_is_never_used_again_and_nothing_is_lost() {
    lost_device_case(engine());
}

/// The same with waits that spin (the default on GPUs; lavapipe's is to sleep): a thread polling
/// back to back sees the loss too, and nothing waits forever.
#[test]
fn a_lost_device_ends_spinning_waits_too() {
    lost_device_case(gpu_engine_with(EngineOptions {
        spin_wait: Some(std::time::Duration::from_millis(50)),
        ..EngineOptions::default()
    }));
}

fn lost_device_case(e: Engine) {
    check_ops(&e, 4);
    let resident = e.upload_f32(&[1.0, 2.0, 3.0], &[1, 3]).unwrap();
    assert_eq!(resident.read_f32().unwrap(), vec![1.0, 2.0, 3.0]);
    let gpu_runs = e.dispatch_stats().gpu_runs;
    e.inject_fault(InjectedFault::DeviceLost);
    // The op in flight when the device dies still returns the correct (CPU) result.
    let (m, n, k) = (2, 48, 256);
    let w = weights(n, k);
    let x = random_f32(11, m * k, -1.0, 1.0);
    assert_eq!(
        e.bitlinear(&x, m, &w).unwrap(),
        cpu_ref::bitlinear(&x, m, &w).unwrap()
    );
    assert_eq!(e.dispatch_stats().fallbacks, 1);
    // Every later op runs on the CPU: no GPU attempt, no further fallback.
    for seed in 20..23 {
        check_ops(&e, seed);
    }
    let s = e.dispatch_stats();
    assert_eq!((s.gpu_runs, s.fallbacks, s.cpu_runs), (gpu_runs, 1, 9));
    // Tensors created now live on the host and the tensor ops run on the CPU.
    let t = e.upload_f32(&[4.0, 5.0], &[1, 2]).unwrap();
    assert_eq!(t.location(), Location::Host);
    assert_eq!(e.copy(&t).unwrap().read_f32().unwrap(), vec![4.0, 5.0]);
    let q = e.quantize_activations_tensor(&t).unwrap();
    assert_eq!(
        q.read_activations().unwrap(),
        cpu_ref::quantize_activations(&[4.0, 5.0], 1, 2).unwrap()
    );
    // Data that only existed on the dead device is reported as lost, never as wrong bytes.
    assert!(matches!(resident.read_f32(), Err(Error::DeviceLost(_))));
    assert!(matches!(e.sync(), Err(Error::DeviceLost(_))));
}

#[test]
fn a_failed_launch_poisons_only_what_is_computed_from_it() {
    // Deterministic batching: both launches go into one submission, which wgpu rejects.
    let e = gpu_engine_with(EngineOptions {
        idle_flush: None,
        ..EngineOptions::default()
    });
    let a = e
        .upload_f32(&random_f32(1, 512, -1.0, 1.0), &[2, 256])
        .unwrap();
    let b_in = random_f32(2, 512, -1.0, 1.0);
    let b = e.upload_f32(&b_in, &[2, 256]).unwrap();
    e.inject_fault(InjectedFault::Validation);
    let bad = e.copy(&a).unwrap(); // this launch's submission is invalid
    let good = e.copy(&b).unwrap(); // recorded in the same batch
    let downstream = e.quantize_activations_tensor(&bad).unwrap();
    assert_eq!(good.read_f32().unwrap(), b_in);
    assert!(matches!(bad.read_f32(), Err(Error::Validation { .. })));
    assert!(matches!(
        downstream.read_activations(),
        Err(Error::Validation { .. })
    ));
    // A launch from a tensor known to be poisoned fails at once.
    assert!(matches!(e.copy(&bad), Err(Error::Validation { .. })));
    e.sync().unwrap();
}

#[test]
fn faults_on_the_tensor_api_are_typed_errors() {
    let e = engine();
    e.inject_fault(InjectedFault::OutOfMemory);
    assert!(matches!(
        e.upload_f32(&[1.0; 64], &[64]),
        Err(Error::OutOfMemory { .. })
    ));
    e.inject_fault(InjectedFault::PipelineCreation);
    let x = e.upload_f32(&[1.0; 64], &[64]).unwrap();
    match e.copy(&x) {
        Err(Error::PipelineCreation {
            kernel, message, ..
        }) => {
            assert_eq!(kernel, "util_copy");
            assert!(message.contains("injected"), "{message}");
        }
        other => panic!("expected PipelineCreation, got {other:?}"),
    }
    assert_eq!(e.copy(&x).unwrap().read_f32().unwrap(), vec![1.0; 64]);
}

#[test]
fn errors_outside_any_scope_are_reported_by_sync_and_never_by_a_tensor() {
    use bitnet_wgpu::wgpu;
    let instance =
        wgpu::Instance::new(wgpu::InstanceDescriptor::new_without_display_handle_from_env());
    let adapter = block_on(instance.request_adapter(&wgpu::RequestAdapterOptions::default()))
        .expect("GPU adapter required");
    let (device, queue) =
        block_on(adapter.request_device(&wgpu::DeviceDescriptor::default())).unwrap();
    let e = Engine::from_device(&adapter, device.clone(), queue).unwrap();
    let x = e.upload_f32(&[1.0, 2.0], &[2]).unwrap();
    // The application misuses the shared device outside any error scope: wgpu routes the error
    // to the engine's uncaptured-error handler.
    let _bad = device.create_buffer(&wgpu::BufferDescriptor {
        label: Some("invalid: MAP_READ | MAP_WRITE"),
        size: 16,
        usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::MAP_WRITE,
        mapped_at_creation: false,
    });
    assert_eq!(e.copy(&x).unwrap().read_f32().unwrap(), vec![1.0, 2.0]);
    assert!(matches!(e.sync(), Err(Error::Validation { .. })));
    e.sync().unwrap(); // reported once
}

/// A panic on the submission thread (an engine bug, or one inside wgpu) is an internal error of
/// the call it hit, never a lost device: the device stays in use, a launch whose recording
/// panicked poisons only its outputs, and a host-facing op re-runs on the CPU as for any fault.
#[test]
fn a_panic_on_the_submission_thread_is_not_a_lost_device() {
    // Deterministic batching: no idle submission takes the injected panic.
    let e = gpu_engine_with(EngineOptions {
        idle_flush: None,
        ..EngineOptions::default()
    });
    let v = random_f32(7, 256, -1.0, 1.0);
    let x = e.upload_f32(&v, &[256]).unwrap();
    // A sync point whose submission panics.
    e.inject_fault(InjectedFault::JobPanic);
    let r = e.sync();
    assert!(matches!(r, Err(Error::Panicked(_))), "{r:?}");
    e.sync().unwrap();
    // A launch whose recording panics: its output reads as the panic, its input is intact.
    e.inject_fault(InjectedFault::JobPanic);
    let y = e.copy(&x).unwrap();
    let r = y.read_f32();
    assert!(matches!(r, Err(Error::Panicked(_))), "{r:?}");
    assert_eq!(x.read_f32().unwrap(), v);
    // A host-facing op that meets the panic re-runs on the CPU, correctly.
    check_ops(&e, 5);
    let before = e.dispatch_stats();
    e.inject_fault(InjectedFault::JobPanic);
    let (m, n, k) = (3, 40, 200);
    let w = weights(n, k);
    let xs = random_f32(8, m * k, -2.0, 2.0);
    assert_eq!(
        e.bitlinear(&xs, m, &w).unwrap(),
        cpu_ref::bitlinear(&xs, m, &w).unwrap()
    );
    assert_eq!(e.dispatch_stats().fallbacks, before.fallbacks + 1);
    // The device is not lost: new tensors live on it, and ops run on it again.
    check_ops(&e, 6);
    assert_eq!(e.dispatch_stats().gpu_runs, before.gpu_runs + 3);
    let t = e.upload_f32(&v, &[256]).unwrap();
    assert_eq!(t.location(), Location::Device);
    assert_eq!(e.copy(&t).unwrap().read_f32().unwrap(), v);
    e.sync().unwrap();
}

/// A panic inside a submission, after the batch left the engine's hands, fails every launch of
/// that batch with the panic: none is dropped unsubmitted, which would let its outputs read as
/// whatever their pooled buffers held before.
#[test]
fn a_panic_inside_a_submission_fails_its_launches_instead_of_dropping_them() {
    let e = gpu_engine_with(EngineOptions {
        idle_flush: None,
        ..EngineOptions::default()
    });
    let v = random_f32(9, 256, -1.0, 1.0);
    let x = e.upload_f32(&v, &[256]).unwrap();
    // A buffer of the same size holding other bytes, back in the pool for the copy's output.
    drop(e.upload_f32(&[7.0; 256], &[256]).unwrap());
    // Settled first: an engine's first submission resets its status slots, and with no submit
    // before it (uploads need none) the copy's recording would make it — racing the arm below.
    e.sync().unwrap();
    let y = e.copy(&x).unwrap();
    e.inject_fault(InjectedFault::SubmitPanic);
    let r = e.sync();
    assert!(matches!(r, Err(Error::Panicked(_))), "{r:?}");
    let r = y.read_f32();
    assert!(matches!(r, Err(Error::Panicked(_))), "{r:?}");
    // Nothing else is lost, and the device is still in use.
    assert_eq!(x.read_f32().unwrap(), v);
    assert_eq!(e.copy(&x).unwrap().read_f32().unwrap(), v);
    e.sync().unwrap();
}

/// An engine without idle flushes and a submitted, unread activation quantization of 4 × 64
/// random values (from `seed`) with a NaN at index 70: its flag waits in its status slot.
/// Returns the engine, the values, their tensor and the quantized tensor.
fn flagged_quantization(seed: u64) -> (Engine, Vec<f32>, bitnet_wgpu::Tensor, bitnet_wgpu::Tensor) {
    let e = gpu_engine_with(EngineOptions {
        idle_flush: None,
        ..EngineOptions::default()
    });
    let (m, k) = (4, 64);
    let mut v = random_f32(seed, m * k, -1.0, 1.0);
    v[70] = f32::NAN;
    let x = e.upload_f32(&v, &[m, k]).unwrap();
    let q = e.quantize_activations_tensor(&x).unwrap();
    e.sync().unwrap();
    (e, v, x, q)
}

/// A panic inside a submission after `queue.submit` (the GPU runs the batch; the engine never
/// learns that it did) must not clear a flagged launch: the batch's status copy-out ran — it
/// copied the launch's non-finite flag out and reset its slot — so reading the slot again would
/// find it clean, and the NaN-poisoned output would read as valid. The launch fails with the
/// panic instead.
#[test]
fn a_panic_after_a_status_copy_out_was_submitted_does_not_clear_its_flag() {
    let (e, v, x, q) = flagged_quantization(11);
    let (m, k) = (4, 64);
    e.inject_fault(InjectedFault::PostSubmitPanic);
    let r = q.read_activations();
    assert!(matches!(r, Err(Error::Panicked(_))), "first read: {r:?}");
    let r = q.read_activations();
    assert!(matches!(r, Err(Error::Panicked(_))), "second read: {r:?}");
    // Nothing else is lost, the slot is reset for later launches, and the device is in use.
    let bits = |v: &[f32]| v.iter().map(|f| f.to_bits()).collect::<Vec<_>>();
    assert_eq!(bits(&x.read_f32().unwrap()), bits(&v));
    let clean = random_f32(12, m * k, -1.0, 1.0);
    let y = e.upload_f32(&clean, &[m, k]).unwrap();
    assert_eq!(
        e.quantize_activations_tensor(&y)
            .unwrap()
            .read_activations()
            .unwrap(),
        cpu_ref::quantize_activations(&clean, m, k).unwrap()
    );
    e.sync().unwrap();
}

/// A panic while a read copies status slots out, after it claimed them (inside wgpu's allocation
/// of their read-back, or an engine bug), fails that read alone: the claims are given back, so
/// the next read copies the slot out and reports the flag, instead of waiting for ever on a claim
/// that nobody will resolve.
#[test]
fn a_panic_while_claiming_status_slots_gives_the_claims_back() {
    let (e, _, _, q) = flagged_quantization(13);
    e.inject_fault(InjectedFault::StatusPanic);
    let r = q.read_activations();
    assert!(matches!(r, Err(Error::Panicked(_))), "first read: {r:?}");
    // On another thread: a hang fails the test instead of stalling the suite (the bound is a
    // hang guard, far above a read's time on lavapipe, not a timing assertion).
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || tx.send(q.read_activations()));
    let r = rx
        .recv_timeout(std::time::Duration::from_secs(300))
        .expect("the second read never returned");
    assert!(
        matches!(r, Err(Error::NonFinite { index: 70, .. })),
        "second read: {r:?}"
    );
    e.sync().unwrap();
}
