//! Buffer-pool efficiency (issue 3): peak pool bytes over peak live tensor bytes, per measured
//! case and per section of the run (BitLinear, quantization, decode stack). Goal ≤ 1.5.
//!
//! The GPU side trims the pool and resets its peaks before every case, so each figure is that
//! case's own working set from an empty pool. A section's figure is its worst case.

use crate::report::Report;
use crate::workload::OpKind;
use bitnet_wgpu::PoolStats;
use serde::{Deserialize, Serialize};

/// The goal of issue 3: peak pool bytes / peak live tensor bytes.
pub const POOL_RATIO_GOAL: f64 = 1.5;

/// Section names, in report order.
pub const SECTIONS: [&str; 3] = ["bitlinear", "quant", "decode stack"];

/// The pool's peaks over one measured case.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PoolPeak {
    /// Highest bytes of storage buffers the pool owned (live + cached free).
    pub peak_allocated_bytes: u64,
    /// Highest logical bytes of live tensors.
    pub peak_live_bytes: u64,
    /// Buffer requests served from the free list.
    pub hits: u64,
    /// Buffer requests that created a buffer.
    pub misses: u64,
}

impl PoolPeak {
    /// The peaks of a stats snapshot taken after the case (`before`: the snapshot at its start,
    /// for the hit and miss counts).
    pub fn from_stats(after: &PoolStats, before: &PoolStats) -> PoolPeak {
        PoolPeak {
            peak_allocated_bytes: after.peak_allocated_bytes,
            peak_live_bytes: after.peak_live_bytes,
            hits: after.hits.saturating_sub(before.hits),
            misses: after.misses.saturating_sub(before.misses),
        }
    }

    /// Peak allocated / peak live; `None` when nothing was live.
    pub fn ratio(&self) -> Option<f64> {
        (self.peak_live_bytes > 0)
            .then(|| self.peak_allocated_bytes as f64 / self.peak_live_bytes as f64)
    }
}

/// One section's pool figure: its worst case.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PoolSection {
    /// One of [`SECTIONS`].
    pub section: String,
    /// Cases of the section with a pool figure.
    pub cases: usize,
    /// The case with the highest ratio (its id) …
    pub worst_case: Option<String>,
    /// … and its peaks.
    pub worst: Option<PoolPeak>,
}

impl PoolSection {
    /// The section's ratio (its worst case's).
    pub fn ratio(&self) -> Option<f64> {
        self.worst.and_then(|p| p.ratio())
    }

    /// `"1.19 (worst: bitlinear … , 3 cases)"` or "not measured".
    pub fn describe(&self) -> String {
        match (self.ratio(), &self.worst_case) {
            (Some(r), Some(id)) => format!(
                "{r:.3} (worst of {} case{}: {id})",
                self.cases,
                if self.cases == 1 { "" } else { "s" }
            ),
            _ => crate::fmt::NOT_MEASURED.to_string(),
        }
    }
}

/// The section a case belongs to.
pub fn section_of(op: OpKind) -> &'static str {
    match op {
        OpKind::Bitlinear => SECTIONS[0],
        OpKind::WeightQuant | OpKind::ActQuant => SECTIONS[1],
    }
}

/// Every section's worst pool ratio, derived from the per-case figures of `report`.
pub fn sections(report: &Report) -> Vec<PoolSection> {
    let mut items: Vec<(&str, String, PoolPeak)> = report
        .cases
        .iter()
        .filter_map(|c| Some((section_of(c.op), c.id.clone(), c.gpu_pool?)))
        .collect();
    if let Some(s) = &report.stack
        && let Some(p) = s.gpu_pool
    {
        items.push((SECTIONS[2], crate::run::STACK_ID.to_string(), p));
    }
    SECTIONS
        .iter()
        .map(|&name| {
            let mine: Vec<&(&str, String, PoolPeak)> = items
                .iter()
                .filter(|(s, _, p)| *s == name && p.ratio().is_some())
                .collect();
            let worst = mine.iter().max_by(|a, b| {
                a.2.ratio()
                    .unwrap_or(0.0)
                    .total_cmp(&b.2.ratio().unwrap_or(0.0))
            });
            PoolSection {
                section: name.to_string(),
                cases: mine.len(),
                worst_case: worst.map(|w| w.1.clone()),
                worst: worst.map(|w| w.2),
            }
        })
        .collect()
}

/// The worst ratio over all sections, with its section (for the target row).
pub fn overall(report: &Report) -> Option<(f64, String)> {
    sections(report)
        .into_iter()
        .filter_map(|s| Some((s.ratio()?, s.section)))
        .max_by(|a, b| a.0.total_cmp(&b.0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ratio_and_deltas() {
        let mut before = PoolStats::default();
        (before.hits, before.misses) = (2, 5);
        let mut after = PoolStats::default();
        (after.peak_allocated_bytes, after.peak_live_bytes) = (1250, 1000);
        (after.hits, after.misses) = (12, 6);
        let p = PoolPeak::from_stats(&after, &before);
        assert_eq!(p.ratio(), Some(1.25));
        assert_eq!((p.hits, p.misses), (10, 1));
        assert_eq!(PoolPeak::default().ratio(), None);
    }
}
