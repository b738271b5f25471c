//! Issue 4's batching measurement: time(B = 8) / time(B = 1) for the BitNet-2B4T decode shapes
//! (target ≤ 1.5). Eight decode requests (M = 1 each) against the same weights, run through the
//! engine's batched op [`Engine::bitlinear_batched_tensor`] on `[8, 1, K]` f32 activations,
//! against one request (`[1, 1, K]`) through the same op. GPU time as for every case (timestamp
//! passes, summed over the op's kernels, or submit + wait wall time without timestamps), weights
//! rotated through cold copies. The engine path and the BitLinear plan each batch size ran with
//! are named in the result ([`BatchResult::path`], [`BatchShape::plan_b8`]).

use crate::data;
use crate::measure::{Clock, Measurement, RepeatPolicy};
use crate::workload::SHAPES;
use bitnet_wgpu::{Engine, Tensor};
use serde::{Deserialize, Serialize};
use std::time::{Duration, Instant};

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
    /// Why a figure is missing, if one is.
    pub error: Option<String>,
}

impl BatchShape {
    /// time(B = 8) / time(B = 1).
    pub fn ratio(&self) -> Option<f64> {
        Some(self.b8?.median_ms / self.b1?.median_ms)
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
                error: None,
            };
            if let Err(err) = measure_shape(e, timestamps, policy, cold_bytes, &mut shape) {
                shape.error = Some(err);
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
        let m = time(e, timestamps, policy, |i| {
            e.bitlinear_batched_tensor(&x, &ws[i % ws.len()])
                .map(drop)
                .map_err(err)
        })?;
        let plan = e
            .bitlinear_plan(b, n, k, true)
            .or_else(|| e.bitlinear_plan(b, n, k, false))
            .map(|p| p.to_string());
        if b == 1 {
            (shape.b1, shape.plan_b1) = (Some(m), plan);
        } else {
            (shape.b8, shape.plan_b8) = (Some(m), plan);
        }
    }
    Ok(())
}

/// Warm-up, then timed repeats of `f(i)`: profiler kernel time with `timestamps`, else submit +
/// wait wall time (recording untimed), as the GPU bench times every case.
fn time(
    e: &Engine,
    timestamps: bool,
    policy: RepeatPolicy,
    mut f: impl FnMut(usize) -> Result<(), String>,
) -> Result<Measurement, String> {
    let sync = |e: &Engine| e.sync().map_err(|x| x.to_string());
    let started = Instant::now();
    for i in 0..policy.warmup {
        f(i)?;
        sync(e)?;
        if started.elapsed() > policy.budget / 4 {
            break;
        }
    }
    let (mut samples, mut spent) = (Vec::new(), Duration::ZERO);
    while policy.wants_more(samples.len(), spent) {
        let i = policy.warmup + samples.len();
        if timestamps {
            e.reset_profile();
            let t = Instant::now();
            f(i)?;
            sync(e)?;
            spent += t.elapsed();
            let ns = e.profile_report().map_err(|x| x.to_string())?.total_ns();
            if ns == 0 {
                return Err("the profiler recorded no kernel time for this op".into());
            }
            samples.push(ns as f64 * 1e-6);
        } else {
            f(i)?;
            let t = Instant::now();
            sync(e)?;
            spent += t.elapsed();
            samples.push(t.elapsed().as_secs_f64() * 1e3);
        }
    }
    let clock = if timestamps {
        Clock::Timestamp
    } else {
        Clock::Wall
    };
    Measurement::from_samples(&samples, clock).ok_or_else(|| "no samples".into())
}
