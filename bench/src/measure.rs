//! Timing samples and their summary (median of repeats), plus the CPU-side repeat loop.

use serde::{Deserialize, Serialize};
use std::time::{Duration, Instant};

/// Where a time came from; the table and RESULTS.md say which one every figure is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Clock {
    /// GPU timestamp queries around the op's kernels (the engine profiler): pure GPU time.
    Timestamp,
    /// Host wall time of submit + wait (includes submission and synchronization overhead).
    Wall,
    /// Host wall time of a CPU computation.
    Cpu,
}

impl Clock {
    /// Short tag for table cells.
    pub fn tag(self) -> &'static str {
        match self {
            Clock::Timestamp => "ts",
            Clock::Wall => "wall",
            Clock::Cpu => "cpu",
        }
    }
}

/// Summary of repeated timings of one workload.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Measurement {
    /// Median of the samples, in milliseconds (the headline figure).
    pub median_ms: f64,
    /// Fastest sample, in milliseconds.
    pub min_ms: f64,
    /// Slowest sample, in milliseconds.
    pub max_ms: f64,
    /// Number of samples behind the median.
    pub samples: usize,
    /// Which clock measured it.
    pub clock: Clock,
    /// Back-to-back calls per sample (each sample is their total ÷ this); 1 where a sample is
    /// one call (and in reports from before the field existed).
    #[serde(default = "one")]
    pub calls_per_sample: usize,
}

fn one() -> usize {
    1
}

impl Measurement {
    /// Summarizes samples in milliseconds; `None` when there are none (or only non-finite ones).
    pub fn from_samples(samples_ms: &[f64], clock: Clock) -> Option<Measurement> {
        let mut v: Vec<f64> = samples_ms
            .iter()
            .copied()
            .filter(|x| x.is_finite())
            .collect();
        if v.is_empty() {
            return None;
        }
        v.sort_by(f64::total_cmp);
        Some(Measurement {
            median_ms: median_sorted(&v),
            min_ms: v[0],
            max_ms: v[v.len() - 1],
            samples: v.len(),
            clock,
            calls_per_sample: 1,
        })
    }
}

/// Whether `ms` can stand as a time: finite and above zero. A zero, negative or non-finite time
/// measures nothing and must read "not measured", never feed a ratio or a verdict.
pub fn valid_ms(ms: f64) -> bool {
    ms.is_finite() && ms > 0.0
}

/// Median of an ascending slice (mean of the two middle values for even lengths); NaN if empty.
pub fn median_sorted(v: &[f64]) -> f64 {
    match v.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => v[n / 2],
        n => 0.5 * (v[n / 2 - 1] + v[n / 2]),
    }
}

/// How many times to repeat a measurement and how long one case may take in total.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RepeatPolicy {
    /// Untimed runs first (caches, lazy pipeline creation, page faults).
    pub warmup: usize,
    /// Timed runs at most.
    pub repeats: usize,
    /// Stop early (after at least one timed run) once the timed runs add up to this.
    pub budget: Duration,
}

impl RepeatPolicy {
    /// Whether another timed run fits: fewer than `repeats` so far and still inside the budget.
    pub fn wants_more(&self, done: usize, spent: Duration) -> bool {
        done == 0 || (done < self.repeats && spent < self.budget)
    }
}

/// Times a CPU closure with wall time under `policy`; the closure's own errors stop the loop.
pub fn time_cpu<E>(
    policy: RepeatPolicy,
    f: impl FnMut() -> Result<(), E>,
) -> Result<Measurement, E> {
    time_host(policy, Clock::Cpu, || {}, f)
}

/// Times a closure run on the host (a CPU computation, or a whole call that waits for the GPU)
/// by wall clock under `policy`, tagging the figure `clock`, with `between` run untimed before
/// every call (warm-up ones too); the closure's own errors stop the loop.
pub fn time_host<E>(
    policy: RepeatPolicy,
    clock: Clock,
    mut between: impl FnMut(),
    mut f: impl FnMut() -> Result<(), E>,
) -> Result<Measurement, E> {
    let warm_start = Instant::now();
    for _ in 0..policy.warmup {
        between();
        f()?;
        // A single slow warmup already costs the budget; skip the others.
        if warm_start.elapsed() >= policy.budget {
            break;
        }
    }
    let mut samples = Vec::new();
    let mut spent = Duration::ZERO;
    while policy.wants_more(samples.len(), spent) {
        between();
        let t = Instant::now();
        f()?;
        let dt = t.elapsed();
        spent += dt;
        samples.push(dt.as_secs_f64() * 1e3);
    }
    Ok(Measurement::from_samples(&samples, clock).expect("at least one finite sample"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_of_even_and_odd() {
        assert_eq!(median_sorted(&[1.0, 2.0, 3.0]), 2.0);
        assert_eq!(median_sorted(&[1.0, 2.0, 3.0, 10.0]), 2.5);
        let m = Measurement::from_samples(&[3.0, f64::NAN, 1.0, 2.0], Clock::Wall).unwrap();
        assert_eq!(
            (m.median_ms, m.min_ms, m.max_ms, m.samples),
            (2.0, 1.0, 3.0, 3)
        );
        assert!(Measurement::from_samples(&[], Clock::Wall).is_none());
    }

    #[test]
    fn budget_stops_repeats_but_keeps_one() {
        let p = RepeatPolicy {
            warmup: 0,
            repeats: 100,
            budget: Duration::ZERO,
        };
        let mut calls = 0;
        let m = time_cpu::<()>(p, || {
            calls += 1;
            Ok(())
        })
        .unwrap();
        assert_eq!((calls, m.samples), (1, 1));
    }
}
