//! The one GPU timing loop of the bench ([`time_calls`]) and how many back-to-back calls make a
//! timed sample.

use crate::clock_keeper;
use crate::measure::{Clock, Measurement, RepeatPolicy};
use bitnet_wgpu::Engine;
use std::time::{Duration, Instant};

/// The one GPU timing loop of the bench: warm-up, then samples of `group` calls `f(i)` recorded
/// back to back into one batch (inputs rotate with `i`; fewer when one call takes long, so a
/// sample stays near 20 ms), each sample the batch's GPU time ÷ the calls: with `timestamps` the
/// profiler's batch span (clock `ts`: two timestamps per batch, nothing between the kernels — the
/// engine must be in `ProfileGranularity::Batch`), else the submit + wait wall time of
/// `Engine::sync` (recording untimed, clock `wall`). Like the PyTorch peers' CUDA-graph replays
/// of one call per rotated copy, divided by the copies.
pub fn time_calls(
    e: &Engine,
    timestamps: bool,
    policy: RepeatPolicy,
    group: usize,
    mut f: impl FnMut(usize) -> Result<(), String>,
) -> Result<Measurement, String> {
    let sync = |e: &Engine| e.sync().map_err(|x| x.to_string());
    // Warm-up by count and by time: an H200 left idle (while a case's inputs are generated and
    // uploaded) drops its clocks, and the first few milliseconds of work ran 2-4x slower. The
    // first warm-up call may build pipelines or autotune (tens of milliseconds); then a batch
    // of up to CAP_PROBE calls measures the submit + wait time per call that caps the group, so
    // that a sample stays near SAMPLE_TARGET (on a software adapter one call can take a second;
    // on the H200 the cap is far above any group). Capping by the first call instead cut GPU
    // groups to a single call (one isolated dispatch timed, not back-to-back calls); capping by
    // one later call still counted a submission's fixed cost against every call. The probe runs
    // twice and the faster counts: calls that overlap the one before them may take another
    // kernel variant (`hazard.rs` in the engine), whose pipeline the first probe builds — that
    // once cut the B = 8 decode GEMV's groups to one call.
    //
    // Before every later batch the clock keeper (if one runs) keeps the GPU busy for about as
    // long as the host took to record the batch before it, so that the GPU's clocks stay at
    // their working level (see `clock_keeper.rs`); its work ends before the batch is submitted.
    let started = Instant::now();
    clock_keeper::heat(PRE_HEAT);
    f(0)?;
    sync(e)?;
    let probe = group.min(CAP_PROBE);
    let mut calls = 1;
    let mut per_call = f64::INFINITY;
    for _ in 0..2 {
        let t = Instant::now();
        for _ in 0..probe {
            f(calls)?;
            calls += 1;
        }
        sync(e)?;
        per_call = per_call.min(t.elapsed().as_secs_f64() / probe.max(1) as f64);
    }
    let cap = (SAMPLE_TARGET.as_secs_f64() / per_call.max(1e-9)) as usize;
    let group = group.min(cap).max(1);
    // Records one batch; returns the time that took.
    let mut run = |f: &mut dyn FnMut(usize) -> Result<(), String>| -> Result<Duration, String> {
        let t = Instant::now();
        for _ in 0..group {
            f(calls)?;
            calls += 1;
        }
        Ok(t.elapsed())
    };
    let mut recorded = Duration::ZERO;
    let heat = |recorded: Duration| clock_keeper::heat(recorded.min(MAX_HEAT));
    let mut warmed = 2;
    while (warmed < policy.warmup || started.elapsed() < MIN_WARM)
        && started.elapsed() <= policy.budget / 4
    {
        heat(recorded);
        recorded = run(&mut f)?;
        sync(e)?;
        warmed += 1;
    }
    e.reset_profile();
    let (mut samples, mut spent) = (Vec::new(), Duration::ZERO);
    while policy.wants_more(samples.len(), spent) {
        if timestamps {
            e.reset_profile();
            heat(recorded);
            let t = Instant::now();
            recorded = run(&mut f)?;
            sync(e)?;
            spent += t.elapsed();
            let report = e.profile_report().map_err(|x| x.to_string())?;
            if report.dropped > 0 {
                // A span dropped as an invalid timestamp pair: the rest would read short. Such
                // pairs are rare (a counter wrap); a device giving nothing else cannot be timed.
                if samples.is_empty() && spent > policy.budget {
                    return Err("no timestamp pair of this op was valid".into());
                }
                continue;
            }
            let ns = report.total_ns();
            if ns == 0 {
                return Err("the profiler recorded no GPU time for this op".into());
            }
            samples.push(ns as f64 * 1e-6 / group as f64);
        } else {
            heat(recorded);
            recorded = run(&mut f)?;
            let t = Instant::now();
            sync(e)?;
            let dt = t.elapsed();
            spent += dt;
            samples.push(dt.as_secs_f64() * 1e3 / group as f64);
        }
    }
    let clock = if timestamps {
        Clock::Timestamp
    } else {
        Clock::Wall
    };
    let mut m = Measurement::from_samples(&samples, clock).ok_or("no samples")?;
    m.calls_per_sample = group;
    Ok(m)
}

/// Calls per timed sample for a case with `copies` rotated inputs: one pass over the copies,
/// at least [`MIN_GROUP`] calls.
pub fn group(copies: usize) -> usize {
    copies.max(MIN_GROUP)
}

/// Calls per timed sample of a case with `copies` rotated inputs and `bytes` of compulsory
/// traffic per call: [`overlapped_group`] for overlapped calls, else [`group`].
pub fn calls_per_sample(copies: usize, bytes: u64, overlap: bool) -> usize {
    match overlap {
        true => overlapped_group(copies, bytes),
        false => group(copies),
    }
}

/// Calls per timed sample of *overlapped* calls (a throughput figure): [`group`], and enough
/// calls to stream at least [`OVERLAP_BATCH_BYTES`] of compulsory traffic — at most
/// [`MAX_OVERLAP_GROUP`] either way, so that a sample is one submission. A batch's span includes
/// its ramp-up (the first call starts on an idle GPU) and its drain (the last calls run alone,
/// about one serial call's latency): over one pass of 18-51 copies (100-150 µs of GPU time on the
/// H200) that fixed cost was about a tenth of the span; over the 0.25-1 ms of a capped sample it
/// is 1-2 %, as for the copy roofline's 1 GB dispatches. (Rotation stays cold with fewer calls
/// than copies: the call counter runs on across samples.)
pub fn overlapped_group(copies: usize, bytes_per_call: u64) -> usize {
    let by_bytes = OVERLAP_BATCH_BYTES.div_ceil(bytes_per_call.max(1)) as usize;
    group(copies).max(by_bytes).min(MAX_OVERLAP_GROUP)
}

/// Compulsory traffic one sample of overlapped calls streams where [`MAX_OVERLAP_GROUP`] allows
/// (about 1 ms at the H200's copy bandwidth).
pub const OVERLAP_BATCH_BYTES: u64 = 4 << 30;

/// Most calls [`overlapped_group`] asks for: half the engine's status slots, less a margin. An
/// overlapped call's output stays alive until the next sample has recorded as many calls, so the
/// calls of two samples own slots at once; when a sample needed more clean slots than were left,
/// the engine submitted it in pieces (a flush each time they ran out: about 16 submissions for a
/// sample of 960 calls), each piece starting on an idle GPU and draining at its end. That read
/// the 2B4T FFN GEMVs 10-15 points low (H200, overlapped M = 1, two rounds: 6912 × 2560
/// 70.0-70.8 → 80.1-81.0 %, 2560 × 6912 68.9-71.3 → 86.0-86.5 % with this cap, against 2048
/// before; 14336 × 4096, 148 calls either way, 87.2 / 87.1-87.2).
pub const MAX_OVERLAP_GROUP: usize = bitnet_wgpu::STATUS_SLOTS as usize / 2 - 32;

// Two samples' live outputs fit the engine's status slots, and the cap leaves MIN_GROUP.
const _: () = assert!(
    2 * MAX_OVERLAP_GROUP < bitnet_wgpu::STATUS_SLOTS as usize && MIN_GROUP <= MAX_OVERLAP_GROUP
);

/// About how long one timed sample of back-to-back calls may take (caps the group).
const SAMPLE_TARGET: Duration = Duration::from_millis(20);

/// Calls of the warm-up batch whose submit + wait time per call caps the group.
const CAP_PROBE: usize = 8;

/// How long the clock keeper keeps the GPU busy before a case's first call: the H200 came back
/// from its idle clocks within a second of light load (see `clock_keeper.rs`).
const PRE_HEAT: Duration = Duration::from_millis(200);

/// Most the clock keeper runs before one batch (a batch that records for long keeps the GPU
/// idle for long, but its samples are few).
const MAX_HEAT: Duration = Duration::from_millis(25);

/// Shortest warm-up of a timed case (see [`time_calls`]).
const MIN_WARM: Duration = Duration::from_millis(300);

/// Fewest back-to-back calls per timed sample (amortizes the batch's first-kernel latency).
pub const MIN_GROUP: usize = 16;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overlapped_samples_stream_at_least_the_batch_bytes_within_bounds() {
        // 8B down: 14.7 MB of packed weights per call, 18 rotated copies.
        let bytes = 4096 * 14336 / 4 + 4 * (14336 + 4096) + 4;
        let calls = overlapped_group(18, bytes);
        assert_eq!(calls, OVERLAP_BATCH_BYTES.div_ceil(bytes) as usize);
        assert!(calls as u64 * bytes >= OVERLAP_BATCH_BYTES);
        assert!((calls - 1) as u64 * bytes < OVERLAP_BATCH_BYTES);
        // Tiny calls stop at the cap; huge ones keep one pass over the copies (at least MIN_GROUP).
        assert_eq!(overlapped_group(512, 10 << 10), MAX_OVERLAP_GROUP);
        assert_eq!(overlapped_group(3, 1 << 32), MIN_GROUP);
        assert_eq!(overlapped_group(40, 1 << 32), 40);
        assert_eq!(overlapped_group(5, 0), MAX_OVERLAP_GROUP);
        // 2B gate/up (4.4 MB per call, 58 copies) would need 963 calls for the bytes: capped.
        assert_eq!(overlapped_group(58, 6912 * 2560 / 4), MAX_OVERLAP_GROUP);
    }

    /// No sample asks for more overlapped calls than the cap (whose fit in the engine's status
    /// slots is checked at compile time), however many copies a case rotates.
    #[test]
    fn overlapped_samples_fit_the_engine_status_slots() {
        for copies in [1, 16, 100, crate::gpu::MAX_COPIES as usize] {
            for bytes in [0, 1, 10 << 10, 4 << 20, 1 << 32] {
                assert!(overlapped_group(copies, bytes) <= MAX_OVERLAP_GROUP);
            }
        }
    }
}
