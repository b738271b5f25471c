//! How autotune times one candidate plan: GPU time where it decides, wall time elsewhere.
//!
//! * **GEMMs (M > 8) on a device with timestamp queries**: the GPU span of each timed batch, from
//!   a private profiler in [`ProfileGranularity::Batch`] (two timestamps per submitted batch,
//!   nothing between the kernels), [`TuneProfiler`]. A GEMM call runs for tens to hundreds of
//!   microseconds on the GPU, while its 2-3 dispatches cost a few microseconds each to record;
//!   in wall time that recording narrowed the gap between close plans until run-to-run noise
//!   flipped the choice (H200, 640 × 2560, M = 512: the split GEMM at 40 µs of GPU time against
//!   52 µs unsplit, chosen in some runs and not in others). The bench reports GPU time too.
//! * **Otherwise** (GEMVs, whose recording is comparable to their GPU time and matters to a
//!   decode step; devices without timestamps): the submit-and-wait wall time per call.
//!
//! Either way the tuner's dispatches run under its own profiler ([`TuneProfiler`], disabled for
//! wall-clock tuning), swapped in for the engine's and back after, so that a user's profiling
//! report neither gains the tuner's work nor loses its own; and one warm-up call (pipeline
//! creation), a calibration batch of [`CALIBRATION_CALLS`] that sizes the timed batches to about
//! [`BATCH_TARGET`] of wall time, then the best of three timed batches.

use std::time::{Duration, Instant};

use crate::context::Gpu;
use crate::engine::Engine;
use crate::error::{Error, Result};
use crate::profiler::{ProfileGranularity, ProfileReport, ProfilerState};

/// Target wall time of one timed batch.
const BATCH_TARGET: Duration = Duration::from_millis(2);
/// Calls of the batch that estimates a call's time.
const CALIBRATION_CALLS: u64 = 8;

/// Seconds per call of `record` (called with a running call index): on the GPU clock of `clock`
/// when it times spans, else the wall clock.
pub(super) fn time_per_call(
    engine: &Engine,
    clock: Option<&TuneProfiler>,
    mut record: impl FnMut(u64) -> Result<()>,
) -> Result<f64> {
    let mut i = 0;
    let mut wall_batch = |calls: u64| -> Result<f64> {
        let t = Instant::now();
        for _ in 0..calls {
            record(i)?;
            i += 1;
        }
        engine.sync()?;
        Ok(t.elapsed().as_secs_f64() / calls as f64)
    };
    wall_batch(1)?;
    let estimate = wall_batch(CALIBRATION_CALLS)?;
    let calls = ((BATCH_TARGET.as_secs_f64() / estimate) as u64).clamp(CALIBRATION_CALLS, 400);
    let spans = clock.filter(|c| c.spans);
    if let Some(c) = spans {
        // Drop the spans of the warm-up and calibration batches.
        c.take_ns()?;
    }
    let mut best = f64::INFINITY;
    for _ in 0..3 {
        let wall = wall_batch(calls)?;
        let span_ns = match spans {
            Some(c) => c.take_ns()?,
            None => None,
        };
        best = best.min(span_ns.map_or(wall, |ns| ns as f64 * 1e-9 / calls as f64));
    }
    Ok(best)
}

/// The tuner's own profiler, installed in place of the engine's (which it holds, to put back
/// when stopped or dropped) for the whole measurement, so that none of the tuner's dispatches
/// reach the user's report: timing batch spans (GEMMs), or disabled (wall-clock tuning, which
/// timestamp writes and their read-backs would perturb). Calibration (`calibrate_measure.rs`)
/// installs a disabled one for the same reasons. A profiling setting another thread
/// changes while the tuner measures applies to the tuner's profiler and is lost when the
/// engine's is put back (tuning is a one-off sync point; set profiling up before the first
/// GEMM of a shape, or tune with [`Engine::autotune_bitlinear`] first).
pub(crate) struct TuneProfiler<'a> {
    gpu: &'a Gpu,
    /// Whether it times batch spans.
    spans: bool,
    /// The engine's profiler (if it had one), until it is put back.
    saved: Option<Option<ProfilerState>>,
}

impl<'a> TuneProfiler<'a> {
    /// Submits pending work (timed by the engine's profiler as before), then swaps in the
    /// tuner's. `None` on a device without timestamp queries (no profiler to protect or use).
    pub(crate) fn start(gpu: &'a Gpu, spans: bool) -> Result<Option<TuneProfiler<'a>>> {
        if !gpu.caps.has(wgpu::Features::TIMESTAMP_QUERY) {
            return Ok(None);
        }
        let saved = gpu.scheduler.call(move |batch, g| {
            batch.flush(g)?;
            let mut own = ProfilerState::new(&g.device, &g.queue);
            own.enabled = spans;
            own.granularity = ProfileGranularity::Batch;
            Ok::<_, Error>(batch.profiler.replace(own))
        })??;
        Ok(Some(TuneProfiler {
            gpu,
            spans,
            saved: Some(saved),
        }))
    }

    /// GPU nanoseconds of the batches submitted since the last call (submitted now), then reset;
    /// `None` where they were not all measured ([`measured_ns`]).
    fn take_ns(&self) -> Result<Option<u64>> {
        self.gpu.scheduler.call(|batch, g| {
            batch.flush(g)?;
            let Some(clock) = batch.profiler.as_mut() else {
                return Ok(None);
            };
            let ns = measured_ns(&clock.report());
            clock.reset();
            Ok::<_, Error>(ns)
        })?
    }

    /// Submits what was recorded meanwhile and puts the engine's profiler back.
    pub(crate) fn stop(mut self) -> Result<()> {
        self.restore()
    }

    fn restore(&mut self) -> Result<()> {
        let Some(saved) = self.saved.take() else {
            return Ok(());
        };
        self.gpu.scheduler.call(move |batch, g| {
            let flushed = batch.flush(g);
            batch.profiler = saved;
            flushed.map(drop)
        })?
    }
}

impl Drop for TuneProfiler<'_> {
    /// An error path of the timing loop still puts the engine's profiler back.
    fn drop(&mut self) {
        if let Err(e) = self.restore() {
            log::warn!("bitnet-wgpu: autotune could not restore the profiler: {e}");
        }
    }
}

/// The GPU time of every span in `report`, or `None` where it does not hold them all: no span
/// measured (another thread reconfigured profiling meanwhile), or one dropped as an invalid
/// timestamp pair — the total of the others would make the candidate look faster than it is
/// (the timed batch then counts at its wall time, which is never below its GPU span).
fn measured_ns(report: &ProfileReport) -> Option<u64> {
    let ns = report.total_ns();
    (ns > 0 && report.dropped == 0).then_some(ns)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_batch_with_a_dropped_span_is_not_a_gpu_time() {
        let report = |spans: u64, ns: u64, dropped: u64| ProfileReport {
            entries: vec![(crate::profiler::BATCH_SPAN, spans, ns)],
            dispatches: 40,
            dropped,
        };
        assert_eq!(measured_ns(&report(3, 9_000, 0)), Some(9_000));
        assert_eq!(measured_ns(&report(2, 6_000, 1)), None);
        assert_eq!(measured_ns(&ProfileReport::default()), None);
    }
}
