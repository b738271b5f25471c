//! GPU tests of the profiler's two timestamp paths: inside the dispatch run's pass (the device has
//! `TIMESTAMP_QUERY_INSIDE_PASSES`) and one pass per timed dispatch (the fallback). Both must time
//! every dispatch once, keep results exact, and leave the engine usable afterwards.

use crate::engine::{Engine, EngineOptions};

fn engine() -> Engine {
    crate::test_gpu::gpu_with(EngineOptions {
        idle_flush: None,
        ..EngineOptions::default()
    })
}

#[test]
fn both_timestamp_paths_time_every_dispatch() {
    let e = engine();
    let g = e.gpu_context().expect("a GPU engine");
    if !g.caps.has(wgpu::Features::TIMESTAMP_QUERY) {
        eprintln!("adapter lacks TIMESTAMP_QUERY: the profiler is unsupported here");
        assert!(e.set_profiling(true).is_err());
        return;
    }
    let inside = g.caps.has(wgpu::Features::TIMESTAMP_QUERY_INSIDE_PASSES);
    eprintln!("TIMESTAMP_QUERY_INSIDE_PASSES: {inside}");
    // Vulkan's range for a queue with timestamps (wgpu offers them from 36 bits on).
    let bits = super::timestamp_valid_bits(&g.device, &g.queue);
    eprintln!("timestamp valid bits: {bits:?}");
    if e.info().backend == "Vulkan" {
        assert!(bits.is_some_and(|b| (36..=64).contains(&b)), "{bits:?}");
    }
    let modes: &[bool] = if inside { &[true, false] } else { &[false] };
    let x = e.upload_f32(&[1.5; 300], &[300]).unwrap();
    for &mode in modes {
        e.set_profiling(true).unwrap();
        g.scheduler
            .call(move |b, _| {
                if let Some(p) = b.profiler.as_mut() {
                    p.inside_passes = mode;
                }
            })
            .unwrap();
        e.reset_profile();
        // More dispatches than one query set holds (the batch is split), with a read between.
        let n = super::PROFILE_PAIRS as usize + 44;
        let mut y = e.copy(&x).unwrap();
        for _ in 1..n {
            y = e.copy(&y).unwrap();
        }
        assert_eq!(
            y.read_f32().unwrap(),
            vec![1.5; 300],
            "inside passes: {mode}"
        );
        let report = e.profile_report().unwrap();
        let calls: u64 = report.entries.iter().map(|e| e.1).sum();
        assert_eq!(calls, n as u64, "inside passes: {mode}: {report}");
        assert!(report.total_ns() > 0, "inside passes: {mode}: {report}");
        e.set_profiling(false).unwrap();
    }
    assert_eq!(e.copy(&x).unwrap().read_f32().unwrap(), vec![1.5; 300]);
}

#[test]
fn batch_granularity_times_each_batch_once_and_counts_its_dispatches() {
    let e = engine();
    if e.set_profiling(true).is_err() {
        eprintln!("adapter lacks TIMESTAMP_QUERY: the profiler is unsupported here");
        return;
    }
    e.set_profiling_granularity(super::ProfileGranularity::Batch)
        .unwrap();
    let x = e.upload_f32(&[2.5; 64], &[64]).unwrap();
    e.reset_profile();
    // More dispatches than one per-dispatch query set holds: still one batch, one span.
    let n = super::PROFILE_PAIRS as usize + 44;
    let mut y = e.copy(&x).unwrap();
    for _ in 1..n {
        y = e.copy(&y).unwrap();
    }
    e.sync().unwrap();
    let report = e.profile_report().unwrap();
    assert_eq!(report.dispatches, n as u64, "{report}");
    assert_eq!(report.entries.len(), 1, "{report}");
    let (name, batches, ns) = report.entries[0];
    assert_eq!(name, super::BATCH_SPAN);
    assert!(batches >= 1 && ns > 0, "{report}");
    assert_eq!(y.read_f32().unwrap(), vec![2.5; 64]);
    // Back to per-kernel attribution.
    e.set_profiling_granularity(super::ProfileGranularity::Dispatch)
        .unwrap();
    e.reset_profile();
    let _ = e.copy(&x).unwrap().read_f32().unwrap();
    let report = e.profile_report().unwrap();
    assert_eq!(report.entries[0].0, "util_copy", "{report}");
    assert_eq!(report.dispatches, 1);
}

/// The profiler is the GPU context's under every dispatch policy: under `Cpu` the report still
/// holds what was timed (it read as empty), a reset clears it (it was skipped, so old totals came
/// back with the GPU policy), and profiling can be turned off (it was `Unsupported`).
#[test]
fn report_reset_and_switch_work_under_the_cpu_policy() {
    use crate::dispatch::DispatchPolicy;
    let e = engine();
    if e.set_profiling(true).is_err() {
        eprintln!("adapter lacks TIMESTAMP_QUERY: the profiler is unsupported here");
        return;
    }
    let policy = e.dispatch_policy();
    let x = e.upload_f32(&[1.5; 64], &[64]).unwrap();
    let _ = e.copy(&x).unwrap().read_f32().unwrap();
    e.set_dispatch_policy(DispatchPolicy::Cpu).unwrap();
    let report = e.profile_report().unwrap();
    assert_eq!(report.dispatches, 1, "{report}");
    assert_eq!(report.entries[0].0, "util_copy", "{report}");
    e.reset_profile();
    e.set_profiling(false).unwrap();
    e.set_dispatch_policy(policy).unwrap();
    let _ = e.copy(&x).unwrap().read_f32().unwrap();
    assert_eq!(e.profile_report().unwrap(), super::ProfileReport::default());
}

/// Totals saturate instead of overflowing (a panic in debug builds, a wrap to a small number in
/// release): one bogus timestamp pair — an unwritten begin read as 0 — can be near `u64::MAX`.
#[test]
fn totals_saturate_instead_of_overflowing() {
    let r = super::ProfileReport {
        entries: vec![("a", 1, u64::MAX), ("b", 1, 1)],
        dispatches: 2,
        dropped: 0,
    };
    assert_eq!(r.total_ns(), u64::MAX);
}

/// Calibration measures with the profiler set aside: none of its dispatches reach the user's
/// report, and profiling is still on afterwards.
#[test]
fn calibration_stays_out_of_the_users_profile() {
    let e = engine();
    if e.set_profiling(true).is_err() {
        eprintln!("adapter lacks TIMESTAMP_QUERY: the profiler is unsupported here");
        return;
    }
    e.reset_profile();
    e.calibrate().unwrap();
    assert_eq!(e.profile_report().unwrap(), super::ProfileReport::default());
    let x = e.upload_f32(&[1.5; 64], &[64]).unwrap();
    let _ = e.copy(&x).unwrap().read_f32().unwrap();
    assert_eq!(e.profile_report().unwrap().dispatches, 1);
    e.set_profiling(false).unwrap();
}

/// A pair read on counters of 36, 48 and 64 valid bits, and of an unknown width: the ticks a
/// pair brackets, modulo the counter's width when a wrap came between its two stamps; a pair
/// that cannot be a measurement is `None` (dropped), never 0 ticks.
#[test]
fn timestamp_pairs_are_read_modulo_the_counter_width() {
    use super::timestamp_ticks as ticks;
    for bits in [Some(36), Some(48), Some(64), None] {
        assert_eq!(ticks(1_000, 1_250, bits), Some(250), "{bits:?}");
        assert_eq!(
            ticks(7, 7, bits),
            Some(0),
            "{bits:?}: an empty span is a sample"
        );
    }
    // Wrapped between the stamps: 100 ticks to the wrap, 50 after it.
    assert_eq!(ticks((1 << 36) - 100, 50, Some(36)), Some(150));
    assert_eq!(ticks((1 << 48) - 1, 0, Some(48)), Some(1));
    // A full-width counter does not wrap within centuries: there, and on a counter of unknown
    // width, an end before the begin is no measurement.
    assert_eq!(ticks(u64::MAX - 100, 50, Some(64)), None);
    assert_eq!(ticks(2_000, 1_000, None), None);
    // A stamp above the valid bits is not a stamp of that counter.
    assert_eq!(ticks(1 << 36, (1 << 36) + 5, Some(36)), None);
    // No timestamp bits at all: nothing is a measurement.
    assert_eq!(ticks(1, 2, Some(0)), None);
}

/// `EngineOptions::disabled_features` reaches the profiler: with
/// `TIMESTAMP_QUERY_INSIDE_PASSES` disabled it times through a pass per dispatch (it read the
/// device's features, so a driver bug could not be routed around).
#[test]
fn disabled_inside_pass_timestamps_are_not_used() {
    let e = crate::test_gpu::gpu_with(EngineOptions {
        disabled_features: wgpu::Features::TIMESTAMP_QUERY_INSIDE_PASSES,
        ..EngineOptions::default()
    });
    let g = e.gpu_context().expect("a GPU engine");
    if !g.caps.has(wgpu::Features::TIMESTAMP_QUERY) {
        return;
    }
    e.set_profiling(true).unwrap();
    let inside = g
        .scheduler
        .call(|b, _| b.profiler.as_ref().map(|p| p.inside_passes))
        .unwrap();
    assert_eq!(inside, Some(false));
    let x = e.upload_f32(&[2.0; 8], &[8]).unwrap();
    assert_eq!(e.copy(&x).unwrap().read_f32().unwrap(), vec![2.0; 8]);
    let calls: u64 = e
        .profile_report()
        .unwrap()
        .entries
        .iter()
        .map(|e| e.1)
        .sum();
    assert_eq!(calls, 1);
}
