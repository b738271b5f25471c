//! Issue 4's batching measurement: time(B = 8) / time(B = 1) for the BitNet-2B4T decode shapes
//! (target ≤ 1.5). Eight decode requests (M = 1 each) against the same weights, run as one
//! batched BitLinear, against one request alone; GPU time as for every case (timestamps, cold
//! weights). The engine path used is named in the result ([`BatchResult::path`]).

use crate::measure::{Measurement, RepeatPolicy};
use crate::workload::{OpKind, SHAPES, Workload};
use serde::{Deserialize, Serialize};

/// Id `--filter` matches against.
pub const BATCH_ID: &str = "batch decode 2B4T B=8 vs B=1";

/// The batch size of the target.
pub const BATCH: usize = 8;

/// The target of issue 4.
pub const BATCH_GOAL: f64 = 1.5;

/// How the batch runs today: one BitLinear over the stacked `[B, K]` rows (the engine has no
/// `[B, M, K]` batched op or request batcher yet; with M = 1 this is the same computation).
pub const PATH: &str = "bitlinear_tensor on the stacked [B, K] activations (B requests of M = 1)";

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

/// Measures every 2B4T shape at B = 1 and B = 8 with `time` (the GPU bench's case timer).
pub fn measure(
    policy: RepeatPolicy,
    time: impl Fn(&Workload, RepeatPolicy) -> Result<Measurement, String>,
) -> BatchResult {
    let shapes = SHAPES[..4]
        .iter()
        .map(|s| {
            let w = |m| Workload {
                op: OpKind::Bitlinear,
                shape: s.label,
                m,
                n: s.n,
                k: s.k,
            };
            let (b1, e1) = split(time(&w(1), policy));
            let (b8, e8) = split(time(&w(BATCH), policy));
            BatchShape {
                label: s.label.to_string(),
                n: s.n,
                k: s.k,
                b1,
                b8,
                error: e1.or(e8),
            }
        })
        .collect();
    BatchResult {
        path: PATH.into(),
        shapes,
    }
}

fn split<T>(r: Result<T, String>) -> (Option<T>, Option<String>) {
    match r {
        Ok(v) => (Some(v), None),
        Err(e) => (None, Some(e)),
    }
}
