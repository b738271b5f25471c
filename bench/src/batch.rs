//! Issue 4's batching measurement: time(B = 8) / time(B = 1) for the BitNet-2B4T decode shapes
//! (target ≤ 1.5). Eight decode requests (M = 1 each) against the same weights, run through the
//! engine's batched op [`Engine::bitlinear_batched_tensor`] on `[8, 1, K]` f32 activations,
//! against one request (`[1, 1, K]`) through the same op. GPU time as for every case
//! ([`crate::timing::time_calls`]: batch span of back-to-back calls ÷ calls), weights rotated
//! through cold copies. The engine path and the BitLinear plan each batch size ran with are named
//! in the result ([`BatchResult::path`], [`BatchShape::plan_b8`]).
//!
//! A second, end-to-end figure per shape (wall clock, dispatch policy forced to the GPU): eight
//! concurrent callers through the engine's request batcher [`BatchingLinear`] (merged into one
//! op), against one caller through [`Linear::forward`] alone — upload, BitLinear, read-back and
//! host threads included ([`BatchShape::server_ratio`]; reported, not the target's figure).

use crate::data;
use crate::measure::{Clock, Measurement, RepeatPolicy};
use crate::workload::SHAPES;
use bitnet_wgpu::{BatchingLinear, DispatchPolicy, Engine, Linear, Tensor};
use serde::{Deserialize, Serialize};
use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Barrier, Mutex};
use std::time::Duration;

/// Id `--filter` matches against.
pub const BATCH_ID: &str = "batch decode 2B4T B=8 vs B=1";

/// The batch size of the target.
pub const BATCH: usize = 8;

/// The target of issue 4.
pub const BATCH_GOAL: f64 = 1.5;

/// The engine call timed for both batch sizes.
pub const PATH: &str = "Engine::bitlinear_batched_tensor on [B, 1, K] f32 activations (B requests of M = 1), resident weights";

/// Most weight copies rotated per shape (bounds memory on small shapes).
const MAX_COPIES: u64 = 512;

/// One decode shape at B = 1 and B = 8.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BatchShape {
    /// Shape label (e.g. "2B q/o").
    pub label: String,
    /// Output features.
    pub n: usize,
    /// Input features.
    pub k: usize,
    /// GPU time of one request.
    pub b1: Option<Measurement>,
    /// GPU time of [`BATCH`] requests batched.
    pub b8: Option<Measurement>,
    /// The BitLinear plan B = 1 ran with (the engine's `LinearPlan`, as text).
    #[serde(default)]
    pub plan_b1: Option<String>,
    /// The BitLinear plan B = 8 ran with.
    #[serde(default)]
    pub plan_b8: Option<String>,
    /// Wall time of one request through `Linear::forward` (GPU forced).
    #[serde(default)]
    pub server_b1: Option<Measurement>,
    /// Wall time of [`BATCH`] concurrent requests through `BatchingLinear` (GPU forced).
    #[serde(default)]
    pub server_b8: Option<Measurement>,
    /// Why a figure is missing, if one is.
    pub error: Option<String>,
}

impl BatchShape {
    /// time(B = 8) / time(B = 1).
    pub fn ratio(&self) -> Option<f64> {
        Some(self.b8?.median_ms / self.b1?.median_ms)
    }

    /// The end-to-end wall-clock ratio: batcher with 8 callers / `Linear::forward` alone.
    pub fn server_ratio(&self) -> Option<f64> {
        Some(self.server_b8?.median_ms / self.server_b1?.median_ms)
    }
}

/// Every 2B4T decode shape.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BatchResult {
    /// The engine calls used.
    pub path: String,
    /// Per shape.
    pub shapes: Vec<BatchShape>,
}

impl BatchResult {
    /// The worst ratio over the shapes (None unless every shape was measured).
    pub fn worst_ratio(&self) -> Option<f64> {
        let r: Option<Vec<f64>> = self.shapes.iter().map(BatchShape::ratio).collect();
        r?.into_iter().reduce(f64::max)
    }
}

/// Measures every 2B4T shape at B = 1 and B = 8 on `e` (`timestamps`: its profiler is on),
/// rotating weight copies until they exceed `cold_bytes`.
pub fn measure(e: &Engine, timestamps: bool, policy: RepeatPolicy, cold_bytes: u64) -> BatchResult {
    let shapes = SHAPES[..4]
        .iter()
        .map(|s| {
            let mut shape = BatchShape {
                label: s.label.to_string(),
                n: s.n,
                k: s.k,
                b1: None,
                b8: None,
                plan_b1: None,
                plan_b8: None,
                server_b1: None,
                server_b8: None,
                error: None,
            };
            if let Err(err) = measure_shape(e, timestamps, policy, cold_bytes, &mut shape) {
                shape.error = Some(err);
            }
            if let Err(err) = measure_server(e, timestamps, policy, &mut shape) {
                shape.error.get_or_insert(err);
            }
            shape
        })
        .collect();
    BatchResult {
        path: PATH.into(),
        shapes,
    }
}

/// Fills `shape`'s figures (B = 1 first, then B = 8).
fn measure_shape(
    e: &Engine,
    timestamps: bool,
    policy: RepeatPolicy,
    cold_bytes: u64,
    shape: &mut BatchShape,
) -> Result<(), String> {
    let err = |x: bitnet_wgpu::Error| x.to_string();
    let (n, k) = (shape.n, shape.k);
    let wq = data::ternary(n, k, (n * 31 + k) as u64).map_err(|x| x.to_string())?;
    let copies = cold_bytes
        .div_ceil((n * k.div_ceil(16) * 4) as u64)
        .clamp(1, MAX_COPIES);
    let ws = (0..copies)
        .map(|_| e.upload_ternary(&wq))
        .collect::<Result<Vec<Tensor>, _>>()
        .map_err(err)?;
    for b in [1, BATCH] {
        let x = e
            .upload_f32(&data::floats(b * k, 91 + b as u64), &[b, 1, k])
            .map_err(err)?;
        let m = crate::timing::time_calls(
            e,
            timestamps,
            policy,
            crate::timing::group(ws.len()),
            |i| {
                e.bitlinear_batched_tensor(&x, &ws[i % ws.len()])
                    .map(drop)
                    .map_err(err)
            },
        )?;
        let plan = crate::gpu::plan_name(e, b, n, k);
        if b == 1 {
            (shape.b1, shape.plan_b1) = (Some(m), plan);
        } else {
            (shape.b8, shape.plan_b8) = (Some(m), plan);
        }
    }
    Ok(())
}

/// The end-to-end figures: one caller through `Linear::forward`, then [`BATCH`] concurrent
/// callers through a `BatchingLinear` (window 2 ms, at most `BATCH` rows: the op starts as soon as
/// all eight arrived), each repeat timed from the callers' start to the last reply. The callers
/// are threads started once, as a server's workers are (a repeat releases them through a barrier
/// and waits for them at another): starting eight threads per repeat cost more than the batch
/// itself (0.45-0.75 ms on a 2-core host). The engine's dispatch policy is forced to the GPU
/// meanwhile (and restored), and its profiler turned off (and back on with `timestamps`).
fn measure_server(
    e: &Engine,
    timestamps: bool,
    policy: RepeatPolicy,
    shape: &mut BatchShape,
) -> Result<(), String> {
    let err = |x: bitnet_wgpu::Error| x.to_string();
    let (n, k) = (shape.n, shape.k);
    let layer = Linear::new(
        e,
        data::ternary(n, k, (n * 37 + k) as u64).map_err(|x| x.to_string())?,
    );
    let xs: Vec<Vec<f32>> = (0..BATCH)
        .map(|i| data::floats(k, 300 + i as u64))
        .collect();
    let was_policy = e.dispatch_policy();
    e.set_dispatch_policy(DispatchPolicy::Gpu).map_err(err)?;
    let _ = e.set_profiling(false);
    let mut run = || -> Result<(), String> {
        shape.server_b1 = Some(time_wall(policy, || {
            layer.forward(&xs[0], 1).map(drop).map_err(err)
        })?);
        let batcher =
            BatchingLinear::new(layer.clone(), Duration::from_millis(2), BATCH).map_err(err)?;
        shape.server_b8 = Some(concurrent_callers(policy, &xs, |x| {
            batcher.forward(x, 1).map(drop).map_err(err)
        })?);
        Ok(())
    };
    let result = run();
    let _ = e.set_dispatch_policy(was_policy);
    if timestamps {
        let _ = e.set_profiling(true);
    }
    result
}

/// Whole calls of `f` timed by wall clock (they end with the read-back), after at least one
/// warm-up call; before each, the clock keeper keeps the GPU busy for [`ROUND_HEAT`].
fn time_wall(
    policy: RepeatPolicy,
    f: impl FnMut() -> Result<(), String>,
) -> Result<Measurement, String> {
    let policy = RepeatPolicy {
        warmup: policy.warmup.max(1),
        ..policy
    };
    let heat = || crate::clock_keeper::heat(ROUND_HEAT);
    crate::measure::time_host(policy, Clock::Wall, heat, f)
}

/// The clock keeper's work before each timed call or round of callers: longer than a round (the
/// GPU idles through most of one, waiting for the host), so the GPU is busy most of the time.
const ROUND_HEAT: Duration = Duration::from_millis(1);

/// [`time_wall`] of one round of `call(x)` on every `x` of `xs` at once, each from its own
/// caller thread. The threads start once and wait between rounds: a round releases them all
/// through one barrier and ends when the last has passed the next, so a round is the callers'
/// work and two barrier hand-offs, not thread starts. A caller's error is reported after its
/// round (every caller still reaches the end barrier, a panicking one too, so nothing waits
/// forever).
fn concurrent_callers(
    policy: RepeatPolicy,
    xs: &[Vec<f32>],
    call: impl Fn(&[f32]) -> Result<(), String> + Sync,
) -> Result<Measurement, String> {
    let go = Barrier::new(xs.len() + 1);
    let done = Barrier::new(xs.len() + 1);
    let stop = AtomicBool::new(false);
    let failed: Mutex<Option<String>> = Mutex::new(None);
    std::thread::scope(|s| {
        for x in xs {
            let (go, done, stop, failed, call) = (&go, &done, &stop, &failed, &call);
            s.spawn(move || {
                loop {
                    go.wait();
                    if stop.load(Ordering::Acquire) {
                        return;
                    }
                    // A panicking caller would never reach `done`: its panic is its error.
                    let r = std::panic::catch_unwind(AssertUnwindSafe(|| call(x)));
                    if let Err(e) = r.unwrap_or_else(|_| Err("a caller thread panicked".into())) {
                        let mut f = failed.lock().unwrap_or_else(|p| p.into_inner());
                        f.get_or_insert(e);
                    }
                    done.wait();
                }
            });
        }
        let measured = time_wall(policy, || {
            go.wait();
            done.wait();
            match failed.lock().unwrap_or_else(|p| p.into_inner()).take() {
                Some(e) => Err(e),
                None => Ok(()),
            }
        });
        // Release the callers for good (they all wait at `go`).
        stop.store(true, Ordering::Release);
        go.wait();
        measured
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;

    fn policy(repeats: usize) -> RepeatPolicy {
        RepeatPolicy {
            warmup: 2,
            repeats,
            budget: Duration::from_secs(60),
        }
    }

    #[test]
    fn every_caller_runs_once_per_round_on_its_own_input() {
        let xs: Vec<Vec<f32>> = (0..BATCH).map(|i| vec![i as f32]).collect();
        let calls: Vec<AtomicUsize> = (0..BATCH).map(|_| AtomicUsize::new(0)).collect();
        let m = concurrent_callers(policy(5), &xs, |x| {
            calls[x[0] as usize].fetch_add(1, Ordering::Relaxed);
            Ok(())
        })
        .unwrap();
        assert_eq!(m.samples, 5);
        // Two warm-up rounds and five timed ones, each caller once per round.
        for c in &calls {
            assert_eq!(c.load(Ordering::Relaxed), 7);
        }
    }

    #[test]
    fn a_caller_error_or_panic_ends_the_measurement_with_it() {
        let xs: Vec<Vec<f32>> = (0..BATCH).map(|i| vec![i as f32]).collect();
        let failing = concurrent_callers(policy(5), &xs, |x| match x[0] {
            3.0 => Err("caller 3 failed".to_string()),
            _ => Ok(()),
        });
        assert_eq!(failing.unwrap_err(), "caller 3 failed");
        let panicking = concurrent_callers(policy(5), &xs, |x| {
            assert!(x[0] != 5.0, "caller 5 panics");
            Ok(())
        });
        assert_eq!(panicking.unwrap_err(), "a caller thread panicked");
    }
}
