//! One-dispatch weight quantization (`weight_quant_fused.wgsl`: K % 16 == 0, `w` within one
//! binding; on CPU adapters up to 4 MiB) against cpu-ref: one block, partial last blocks, the
//! largest size lavapipe runs this way, calls overlapping in one batch, NaN/Inf and overflowing
//! sums, a run whose in-dispatch wait gives up, the |w| mass in a few spikes, most weights
//! exactly at the rounding threshold, and (ignored by default, for the GPU machine) the
//! benchmark's full-size shapes. Each test of the one-dispatch kernel runs on an engine of its
//! own, again on a fresh one where a run's wait gave up (`bitnet_tests::until_waits_hold`).

use bitnet_tests::{gpu_engine, random_normal, until_waits_hold};
use bitnet_wgpu::cpu_ref;
use bitnet_wgpu::{DispatchPolicy, Engine, Error, InjectedFault};

use crate::support::{assert_ternary_eq, check_weights};

/// Runs `checks` on a fresh GPU engine until none of its one-dispatch runs gave up (`checks`
/// returns false where one did).
fn on_own_engine(what: &str, checks: impl Fn(&Engine) -> bool) {
    until_waits_hold(what, gpu_engine, |e| checks(e).then_some(()));
}

/// Weights quantized through the tensor API against cpu-ref; false where the run gave up
/// (`Aborted`). Unlike the slice API (which re-runs an aborted GPU run on the CPU and so matches
/// cpu-ref whatever the kernel did), this sees the one-dispatch kernel's own result.
#[must_use]
fn check_on_gpu(e: &Engine, w: &[f32], n: usize, k: usize, ctx: &str) -> bool {
    let want = cpu_ref::quantize_weights(w, n, k).unwrap();
    let t = e.upload_f32(w, &[n, k]).unwrap();
    match e.quantize_weights_tensor(&t).and_then(|q| q.read_ternary()) {
        Ok(got) => assert_ternary_eq(&got, &want, ctx),
        Err(Error::Aborted { .. }) => return false,
        Err(err) => panic!("{ctx}: {err}"),
    }
    true
}

/// The tensor API's error for `w` (no CPU re-run behind it); `None` where the run gave up.
fn gpu_error(e: &Engine, w: &[f32], n: usize, k: usize) -> Option<Error> {
    let t = e.upload_f32(w, &[n, k]).unwrap();
    match e.quantize_weights_tensor(&t).and_then(|q| q.read_ternary()) {
        Err(Error::Aborted { .. }) => None,
        Err(err) => Some(err),
        Ok(_) => panic!("[{n}, {k}]: the GPU gave a result, not an error"),
    }
}

#[test]
fn one_dispatch_weights_match_cpu_ref() {
    on_own_engine("one dispatch", |e| {
        // 1 block; exactly 1 block; 21 blocks, the last partial; 255 blocks and a partial one;
        // 256 blocks of 4 MiB (the CPU adapter's largest).
        for (n, k) in [(1, 16), (4, 1024), (33, 2560), (1021, 1024), (1024, 1024)] {
            let seed = (n * 7 + k) as u64;
            let w = random_normal(seed, n * k, 0.02);
            if !check_on_gpu(e, &w, n, k, &format!("one dispatch [{n}, {k}]")) {
                return false;
            }
        }
        // All zeros (and all negative zeros): s = 1e-5 and every code 0.
        check_on_gpu(e, &[0.0; 3 * 32], 3, 32, "zeros")
            && check_on_gpu(e, &[-0.0; 3 * 32], 3, 32, "negative zeros")
    });
}

/// Half of the |w| mass in two spikes over weights with |w| between 0.3 s and 0.7 s (whose
/// codes depend on those spikes), and normal weights with rare large outliers. (These also
/// drove the sampled-band kernel of `docs/perf/not-kept.md` into its every-word fallback.)
#[test]
fn weights_whose_mass_sits_in_spikes_match_cpu_ref() {
    on_own_engine("spikes", |e| {
        for (n, k) in [(64, 1024), (256, 4096), (33, 2560)] {
            let len = n * k;
            let mut w: Vec<f32> = bitnet_tests::random_f32(70 + n as u64, len, 0.3, 0.7)
                .into_iter()
                .enumerate()
                .map(|(i, v)| if i % 3 == 0 { -v } else { v })
                .collect();
            for (j, at) in [len / 3 + 5, 2 * len / 3 + 1].into_iter().enumerate() {
                w[at] = if j == 0 { 0.25 } else { -0.25 } * len as f32;
            }
            if !check_on_gpu(e, &w, n, k, &format!("spikes [{n}, {k}]")) {
                return false;
            }
        }
        let (n, k) = (256, 4096);
        let mut w = random_normal(71, n * k, 0.02);
        for j in 0..40 {
            w[(j * 26_209 + 5) % (n * k)] = if j % 3 == 0 { -40.0 } else { 25.0 };
        }
        check_on_gpu(e, &w, n, k, "normal with outliers")
    });
}

/// Three quarters of the weights exactly at the rounding threshold `s / 2` (|w| = 1, the rest
/// |w| = 5, so `s` = 2 exactly): ties to even, 1 × 0.5 rounds to 0.
#[test]
fn weights_at_the_rounding_threshold_match_cpu_ref() {
    on_own_engine("threshold", |e| {
        [(64, 1024), (256, 4096)].into_iter().all(|(n, k)| {
            let w: Vec<f32> = (0..n * k)
                .map(|i| {
                    let v = if i % 4 == 3 { 5.0 } else { 1.0 };
                    if (i / 3) % 2 == 0 { v } else { -v }
                })
                .collect();
            let want = cpu_ref::quantize_weights(&w, n, k).unwrap();
            assert_eq!(want.scale(), 2.0, "the threshold case is exact");
            check_on_gpu(e, &w, n, k, &format!("threshold [{n}, {k}]"))
        })
    });
}

/// The benchmark's shapes (BitNet-2B4T and 8B-class) with normal, uniform and outlier-heavy
/// weights: on a real GPU these take the one-dispatch way at full size (a CPU adapter only up to
/// 4 MiB, so this is slow there and ignored by default; run it on the GPU machine with
/// `--ignored`).
#[test]
#[ignore = "large: for real GPUs (the device machine)"]
fn large_weights_match_cpu_ref_on_a_real_gpu() {
    let shapes = [
        (2560, 2560),
        (640, 2560),
        (6912, 2560),
        (2560, 6912),
        (14336, 4096),
    ];
    on_own_engine("large", |e| {
        shapes.iter().enumerate().all(|(i, &(n, k))| {
            let seed = 900 + i as u64;
            let normal = random_normal(seed, n * k, 0.02);
            let uniform = bitnet_tests::random_f32(seed + 50, n * k, -1.0, 1.0);
            let mut outliers = random_normal(seed + 100, n * k, 0.02);
            for j in 0..(n * k / 1000) {
                outliers[(j * 7_919 + 3) % (n * k)] *= 60.0;
            }
            check_on_gpu(e, &normal, n, k, &format!("normal [{n}, {k}]"))
                && check_on_gpu(e, &uniform, n, k, &format!("uniform [{n}, {k}]"))
                && check_on_gpu(e, &outliers, n, k, &format!("outliers [{n}, {k}]"))
        })
    });
}

#[test]
fn overlapping_one_dispatch_runs_match_cpu_ref() {
    let shapes = [(64, 256), (5, 4096), (300, 2560), (7, 16)];
    let ws: Vec<Vec<f32>> = shapes
        .iter()
        .enumerate()
        .map(|(i, &(n, k))| random_normal(40 + i as u64, n * k, 1.5))
        .collect();
    on_own_engine("overlapping", |e| {
        // Recorded into one batch, outputs kept: nothing orders the runs.
        let outs: Vec<_> = shapes
            .iter()
            .zip(&ws)
            .map(|(&(n, k), w)| {
                e.quantize_weights_tensor(&e.upload_f32(w, &[n, k]).unwrap())
                    .unwrap()
            })
            .collect();
        let mut held = true;
        for ((&(n, k), w), out) in shapes.iter().zip(&ws).zip(&outs) {
            let want = cpu_ref::quantize_weights(w, n, k).unwrap();
            match out.read_ternary() {
                Ok(got) => assert_ternary_eq(&got, &want, &format!("[{n}, {k}]")),
                Err(Error::Aborted { .. }) => held = false,
                Err(err) => panic!("[{n}, {k}]: {err}"),
            }
        }
        held
    });
}

/// Pack workgroups of one to four 4096-value chunks (`PACK_CHUNKS`: four where the run overlaps
/// earlier work, one for a small matrix behind a barrier) at every remainder of the block count
/// by four: a fresh upload (nothing pending writes it: four chunks) and the same weights written
/// by a pending copy (a barrier before the run: one chunk). An engine of its own, so no other
/// test's flush changes which runs wait.
#[test]
fn pack_chunk_groups_match_cpu_ref_overlapping_and_behind_a_barrier() {
    on_own_engine("pack chunk groups", |e| {
        e.set_dispatch_policy(DispatchPolicy::Gpu).unwrap();
        // 1, 2, 3, 4, 5 and 21 blocks (the last one partial in the 3- and 21-block cases).
        let mut held = true;
        for (n, k) in [
            (1, 4096),
            (2, 4096),
            (5, 2048),
            (4, 4096),
            (5, 4096),
            (33, 2560),
        ] {
            let w = random_normal((n * 3 + k) as u64, n * k, 0.7);
            let want = cpu_ref::quantize_weights(&w, n, k).unwrap();
            let fresh = e.upload_f32(&w, &[n, k]).unwrap();
            let copied = e.copy(&fresh).unwrap();
            let overlapping = e.quantize_weights_tensor(&fresh).unwrap();
            let behind = e.quantize_weights_tensor(&copied).unwrap();
            for (out, how) in [(overlapping, "overlapping"), (behind, "behind a barrier")] {
                match out.read_ternary() {
                    Ok(got) => assert_ternary_eq(&got, &want, &format!("[{n}, {k}] {how}")),
                    Err(Error::Aborted { .. }) => held = false,
                    Err(err) => panic!("[{n}, {k}] {how}: {err}"),
                }
            }
        }
        held
    });
}

#[test]
fn one_dispatch_errors_match_cpu_ref() {
    let (n, k) = (96, 2560);
    on_own_engine("errors", |e| {
        // The tensor API's error for `w`, against `want`; false where the run gave up.
        let gpu_fails_as = |w: &[f32], want: &Error, ctx: &str| match gpu_error(e, w, n, k) {
            Some(err) => {
                assert_eq!(&err, want, "{ctx} (tensor API)");
                true
            }
            None => false,
        };
        for bad in [f32::NAN, f32::INFINITY, f32::NEG_INFINITY] {
            // Two bad values in different blocks; the lowest flat index is reported.
            let mut w = random_normal(51, n * k, 0.02);
            w[200_001] = bad;
            w[9_999] = bad;
            let want = cpu_ref::quantize_weights(&w, n, k)
                .map_err(Error::from)
                .unwrap_err();
            assert_eq!(e.quantize_weights(&w, n, k).unwrap_err(), want, "{bad}");
            if !gpu_fails_as(&w, &want, &format!("{bad}")) {
                return false;
            }
        }
        // Finite weights whose |w| sum overflows f32.
        let mut w = random_normal(52, n * k, 0.02);
        w[5] = 3.0e38;
        w[70_000] = -3.0e38;
        let want = cpu_ref::quantize_weights(&w, n, k)
            .map_err(Error::from)
            .unwrap_err();
        assert_eq!(e.quantize_weights(&w, n, k).unwrap_err(), want, "overflow");
        if !gpu_fails_as(&w, &want, "overflow") {
            return false;
        }
        // The engine stays usable.
        let w = random_normal(53, n * k, 0.02);
        check_weights(e, &w, n, k, "after the errors");
        check_on_gpu(e, &w, n, k, "after the errors (tensor API)")
    });
}

/// The retry of this file's tests (`on_own_engine`) sees a wait that gave up under a call that
/// re-ran quietly: the slice API re-runs an aborted run on the CPU and returns cpu-ref's
/// values, and the checks after it would have run on the kernels that do not wait. That attempt
/// is tried again on a fresh engine.
#[test]
fn a_wait_that_gave_up_under_the_slice_api_is_tried_again() {
    let attempts = std::sync::atomic::AtomicUsize::new(0);
    let (n, k) = (40, 2560);
    let w = random_normal(62, n * k, 0.02);
    on_own_engine("quiet abort", |e| {
        e.set_dispatch_policy(DispatchPolicy::Gpu).unwrap();
        if attempts.fetch_add(1, std::sync::atomic::Ordering::SeqCst) == 0 {
            e.inject_fault(InjectedFault::WaitAbort);
        }
        check_weights(e, &w, n, k, "slice API");
        check_on_gpu(e, &w, n, k, "tensor API")
    });
    assert_eq!(attempts.into_inner(), 2);
}

#[test]
fn aborted_one_dispatch_run_is_a_fault_the_slice_api_recovers_from() {
    let (n, k) = (40, 2560);
    let w = random_normal(61, n * k, 0.02);
    let want = cpu_ref::quantize_weights(&w, n, k).unwrap();
    // The slice API re-runs an aborted run on the CPU.
    let e = gpu_engine();
    e.set_dispatch_policy(DispatchPolicy::Gpu).unwrap();
    e.inject_fault(InjectedFault::WaitAbort);
    assert_ternary_eq(&e.quantize_weights(&w, n, k).unwrap(), &want, "slice API");
    // The tensor API reports it at the read...
    let e = gpu_engine();
    e.set_dispatch_policy(DispatchPolicy::Gpu).unwrap();
    e.inject_fault(InjectedFault::WaitAbort);
    let t = e.upload_f32(&w, &[n, k]).unwrap();
    let err = e.quantize_weights_tensor(&t).unwrap().read_ternary();
    assert!(
        matches!(
            err,
            Err(Error::Aborted {
                op: "quantize_weights"
            })
        ),
        "{err:?}"
    );
    assert!(!e.info().in_dispatch_waits, "the device noted the abort");
    // ...and the device stops waiting inside dispatches: the next run is level by level (the
    // armed abort is never consumed) and right.
    e.inject_fault(InjectedFault::WaitAbort);
    let again = e
        .quantize_weights_tensor(&t)
        .unwrap()
        .read_ternary()
        .unwrap();
    assert_ternary_eq(&again, &want, "next run");
}
