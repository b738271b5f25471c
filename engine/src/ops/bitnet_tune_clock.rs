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
//! report neither gains the tuner's work nor loses its own; and per plan one warm-up call
//! (pipeline creation) and a calibration batch of [`CALIBRATION_CALLS`] that sizes its timed
//! batches to about [`BATCH_TARGET`] of wall time, then the best of three timed batches, taken
//! round-robin over the plans ([`time_each`]).

use std::time::{Duration, Instant};

use super::measure_gate::MeasureHold;
use crate::context::Gpu;
use crate::engine::Engine;
use crate::error::{Error, Result};
use crate::profiler::{ProfileGranularity, ProfileReport, ProfilerState};

/// Target wall time of one timed batch.
const BATCH_TARGET: Duration = Duration::from_millis(2);
/// Calls of the batch that estimates a call's time.
const CALIBRATION_CALLS: u64 = 8;
/// Timed batches per candidate; its best counts.
const ROUNDS: usize = 3;

/// Seconds per call of each of `candidates` plans, `record(c, i)` recording one call of plan `c`
/// (`i` runs over all calls of all plans, so rotating inputs stay cold): on the GPU clock of
/// `clock` when it times spans, else the wall clock. Every plan is warmed up and sized first;
/// then [`ROUNDS`] rounds time one batch of each plan in turn ([`interleaved`]), and each plan
/// keeps its best. Timed one plan after another, plans would meet different GPU clocks: the
/// tuner runs at a shape's first use, often on a GPU that was idle, and the H200 went from
/// 1000-1450 MHz back to 1980 MHz over about a second of work (nvidia-smi; the bench's
/// `clock_keeper.rs`), so the later plans would have been timed faster — and the choice is
/// cached for good.
pub(super) fn time_each(
    engine: &Engine,
    clock: Option<&TuneProfiler>,
    candidates: usize,
    mut record: impl FnMut(usize, u64) -> Result<()>,
) -> Result<Vec<f64>> {
    let mut i = 0;
    let mut wall_batch = |c: usize, calls: u64| -> Result<f64> {
        let t = Instant::now();
        for _ in 0..calls {
            record(c, i)?;
            i += 1;
        }
        engine.sync()?;
        Ok(t.elapsed().as_secs_f64() / calls as f64)
    };
    let mut calls = Vec::with_capacity(candidates);
    for c in 0..candidates {
        wall_batch(c, 1)?;
        let estimate = wall_batch(c, CALIBRATION_CALLS)?;
        calls.push(((BATCH_TARGET.as_secs_f64() / estimate) as u64).clamp(CALIBRATION_CALLS, 400));
    }
    let spans = clock.filter(|c| c.spans);
    if let Some(c) = spans {
        // Drop the spans of the warm-up and calibration batches.
        c.take_ns()?;
    }
    interleaved(candidates, ROUNDS, |c| {
        let wall = wall_batch(c, calls[c])?;
        let span_ns = match spans {
            Some(s) => s.take_ns()?,
            None => None,
        };
        Ok(span_ns.map_or(wall, |ns| ns as f64 * 1e-9 / calls[c] as f64))
    })
}

/// The best of `rounds` results of `time(c)` for each of `candidates`, timed round-robin (every
/// candidate once per round), so that a drift of the clock spreads over all of them.
fn interleaved(
    candidates: usize,
    rounds: usize,
    mut time: impl FnMut(usize) -> Result<f64>,
) -> Result<Vec<f64>> {
    let mut best = vec![f64::INFINITY; candidates];
    for _ in 0..rounds {
        for (c, b) in best.iter_mut().enumerate() {
            *b = b.min(time(c)?);
        }
    }
    Ok(best)
}

/// The tuner's own profiler, installed in place of the engine's (stashed in the batch,
/// `Batch::stashed_profiler`, and put back when stopped or dropped) for the whole measurement,
/// so that none of the tuner's dispatches reach the user's report: timing batch spans (GEMMs),
/// or disabled (wall-clock tuning, which timestamp writes and their read-backs would perturb).
/// Calibration (`calibrate_measure.rs`) installs a disabled one for the same reasons.
/// Measurements of one context take turns ([`MeasureGate`](super::MeasureGate)), so two
/// threads' swaps never interleave. The public profiling calls act on the stashed profiler
/// meanwhile (`Batch::user_profiler`): a report read during a measurement is the engine's, and
/// a setting changed then stays. (They acted on the tuner's before: reports read empty through
/// a whole calibration and settings were lost, a reviewer's probe.) What other threads submit
/// during the measurement is timed by the tuner's profiler, not the engine's: it is missing
/// from the engine's report.
pub(crate) struct TuneProfiler<'a> {
    gpu: &'a Gpu,
    /// Whether it times batch spans.
    spans: bool,
    /// Whether a profiler is to be put back (the stashed engine's, or `outer`).
    swapped: bool,
    /// Nested in another measurement of this thread (calibration timing a GEMM that autotunes,
    /// an autotune running the coop self-test): the outer measurement's profiler, put back when
    /// this one stops. Only the outermost stashes the engine's; a nested start that stashed too
    /// overwrote it with the outer tuner's, which then stayed installed for good (a reviewer's
    /// probe: the lazy calibration on a discrete GPU autotunes its 64 × 1024 × 1024 GEMM).
    outer: Option<Option<ProfilerState>>,
    /// No other thread measures (swaps profilers) on this context meanwhile; released after
    /// the engine's profiler is back (fields drop after `Drop::drop`).
    _turn: MeasureHold<'a>,
}

impl<'a> TuneProfiler<'a> {
    /// Submits pending work (timed by the engine's profiler as before), then swaps in the
    /// tuner's. `None` on a device without timestamp queries (no profiler to protect or use).
    pub(crate) fn start(gpu: &'a Gpu, spans: bool) -> Result<Option<TuneProfiler<'a>>> {
        if !gpu.caps.has(wgpu::Features::TIMESTAMP_QUERY) {
            return Ok(None);
        }
        let turn = gpu.measure_gate.hold();
        let outermost = turn.is_outermost();
        let outer = gpu.scheduler.call(move |batch, g| {
            batch.flush(g)?;
            let mut own = ProfilerState::new(&g.device, &g.queue, g.caps.features);
            own.enabled = spans;
            own.granularity = ProfileGranularity::Batch;
            let previous = batch.profiler.replace(own);
            if !outermost {
                return Ok::<_, Error>(Some(previous));
            }
            // A stash left by a restore that never ran (the submission thread gone) is still
            // the engine's profiler; `previous` is then a tuner's.
            if batch.stashed_profiler.is_none() {
                batch.stashed_profiler = Some(previous);
            }
            Ok(None)
        })??;
        Ok(Some(TuneProfiler {
            gpu,
            spans,
            swapped: true,
            outer,
            _turn: turn,
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
        if !std::mem::take(&mut self.swapped) {
            return Ok(());
        }
        let outer = self.outer.take();
        self.gpu.scheduler.call(move |batch, g| {
            // What was recorded meanwhile is timed by this measurement's profiler; the swap
            // happens even if that flush panics (then the panic goes on), or the engine's
            // profiler would stay set aside, missing every later batch.
            let flushed = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| batch.flush(g)));
            match outer {
                // Nested: the outer measurement's profiler, unless the outer one stopped first
                // (its stop put the engine's back; reinstalling the outer tuner's over it
                // would drop the engine's for good).
                Some(outer) if batch.stashed_profiler.is_some() => batch.profiler = outer,
                Some(_) => {}
                None => {
                    if let Some(saved) = batch.stashed_profiler.take() {
                        batch.profiler = saved;
                    }
                }
            }
            match flushed {
                Ok(flushed) => flushed.map(drop),
                Err(panic) => std::panic::resume_unwind(panic),
            }
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
    fn plans_are_timed_round_robin_and_keep_their_best() {
        // A clock that speeds up with every batch (a GPU coming up from idle clocks): three
        // plans of equal cost. Round-robin, each plan's best is from the last round, within
        // one batch's drift of the others; one plan after another, the last would win by
        // six batches' drift.
        let mut order = Vec::new();
        let mut batch = 0.0;
        let best = interleaved(3, 3, |c| {
            order.push(c);
            batch += 1.0;
            Ok(10.0 - batch * 0.5)
        })
        .unwrap();
        assert_eq!(order, [0, 1, 2, 0, 1, 2, 0, 1, 2]);
        assert_eq!(best, [6.5, 6.0, 5.5]);
        // A failing batch ends the timing with its error.
        let failed = interleaved(2, 3, |c| match c {
            1 => Err(Error::Unsupported("timing failed".into())),
            _ => Ok(1.0),
        });
        assert!(failed.is_err());
    }

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

    /// Two threads measuring at once take turns: the second's swap waits for the first's
    /// restore, and after both the engine's own profiler (none here) is back — not a tuner's
    /// left installed by interleaved swaps.
    #[test]
    fn concurrent_measurements_restore_the_engines_profiler() {
        let e = crate::test_gpu::gpu();
        let g = e.gpu_context().unwrap();
        let installed = || g.scheduler.call(|b, _| b.profiler.is_some()).unwrap();
        assert!(!installed(), "a fresh engine has no profiler");
        let first = TuneProfiler::start(g, true).unwrap();
        assert!(
            first.is_some(),
            "lavapipe and the H200 have timestamp queries"
        );
        let second_started = std::sync::atomic::AtomicBool::new(false);
        std::thread::scope(|s| {
            let other = s.spawn(|| {
                let second = TuneProfiler::start(g, false).unwrap();
                second_started.store(true, std::sync::atomic::Ordering::SeqCst);
                second.map(TuneProfiler::stop).transpose().unwrap();
            });
            std::thread::sleep(Duration::from_millis(50));
            let waited = !second_started.load(std::sync::atomic::Ordering::SeqCst);
            first.map(TuneProfiler::stop).transpose().unwrap();
            other.join().unwrap();
            assert!(waited, "the second measurement started during the first");
        });
        assert!(!installed(), "a tuner's profiler was left installed");
    }

    /// A GPU engine profiling one copy already: the engine, a tensor to copy, the report.
    fn profiling_engine() -> (crate::Engine, crate::Tensor, crate::ProfileReport) {
        let e = crate::test_gpu::gpu();
        e.set_profiling(true).unwrap();
        let t = e.upload_f32(&[1.0; 1024], &[1024]).unwrap();
        e.copy(&t).unwrap().read_f32().unwrap();
        let before = e.profile_report().unwrap();
        assert!(before.dispatches > 0, "{before:?}");
        (e, t, before)
    }

    /// Nested measurements (calibration timing a GEMM that autotunes) unwind in order: the
    /// engine's profiler is back after both, with its totals and settings, and reads as the
    /// engine's during both. The nested start stashed over the outer's stash, and the outer
    /// tuner's disabled profiler stayed installed for good (a reviewer's probe).
    #[test]
    fn nested_measurements_put_the_engines_profiler_back() {
        let (e, t, before) = profiling_engine();
        let g = e.gpu_context().unwrap();
        let outer = TuneProfiler::start(g, false)
            .unwrap()
            .expect("timestamp queries");
        let inner = TuneProfiler::start(g, true)
            .unwrap()
            .expect("timestamp queries");
        assert_eq!(e.profile_report().unwrap(), before, "during both");
        inner.stop().unwrap();
        assert_eq!(e.profile_report().unwrap(), before, "during the outer one");
        outer.stop().unwrap();
        e.copy(&t).unwrap().read_f32().unwrap();
        let after = e.profile_report().unwrap();
        assert_eq!(after.dispatches, before.dispatches + 1, "{after:?}");
    }

    /// Measurements stopped out of order (the outer first), and a stop whose flush panics,
    /// still leave the engine's profiler installed (a reviewer's probes: the engine's was
    /// dropped, or stayed set aside while a tuner's timed every later batch).
    #[test]
    fn out_of_order_and_panicking_stops_put_the_engines_profiler_back() {
        let (e, t, before) = profiling_engine();
        let g = e.gpu_context().unwrap();
        let outer = TuneProfiler::start(g, false).unwrap().unwrap();
        let inner = TuneProfiler::start(g, true).unwrap().unwrap();
        drop(outer);
        drop(inner);
        e.copy(&t).unwrap().read_f32().unwrap();
        let after = e.profile_report().unwrap();
        assert_eq!(after.dispatches, before.dispatches + 1, "out of order");
        let tuner = TuneProfiler::start(g, false).unwrap().unwrap();
        e.inject_fault(crate::InjectedFault::JobPanic);
        assert!(tuner.stop().is_err(), "the flush panicked");
        e.copy(&t).unwrap().read_f32().unwrap();
        let last = e.profile_report().unwrap();
        assert_eq!(
            last.dispatches,
            after.dispatches + 1,
            "after a panicking stop"
        );
    }

    /// The public profiling calls act on the engine's profiler while a measurement's own stands
    /// in for it: a report read meanwhile is the engine's (it read empty through a whole
    /// calibration), and a setting changed meanwhile stays once the engine's is back (it was
    /// lost: a reviewer's probes).
    #[test]
    fn profiling_calls_during_a_measurement_act_on_the_engines_profiler() {
        use crate::profiler::{BATCH_SPAN, ProfileGranularity};
        let (e, t, before) = profiling_engine();
        let g = e.gpu_context().unwrap();
        let tuner = TuneProfiler::start(g, false)
            .unwrap()
            .expect("timestamp queries");
        assert_eq!(
            e.profile_report().unwrap(),
            before,
            "read during the measurement"
        );
        e.set_profiling_granularity(ProfileGranularity::Batch)
            .unwrap();
        tuner.stop().unwrap();
        e.reset_profile();
        e.copy(&t).unwrap().read_f32().unwrap();
        let after = e.profile_report().unwrap();
        assert_eq!(
            after
                .entries
                .iter()
                .map(|(name, ..)| *name)
                .collect::<Vec<_>>(),
            [BATCH_SPAN],
            "the granularity set during the measurement: {after:?}"
        );
    }
}
