//! The guarded, checkpointed steps of a run: each step times one thing under the deadline, turns
//! errors and panics into one-line text, and rewrites `--json` afterwards.

use crate::error::write_file;
use crate::gpu_stack::StackTimes;
use crate::pool::{self, PoolPeak};
use crate::progress::Progress;
use crate::report::Report;
use crate::{batch, fmt, stream};
use std::path::PathBuf;
use std::time::Instant;

/// A step's result, shown on the progress line by its headline time.
pub(crate) trait Timed {
    fn median_ms(&self) -> f64;

    /// What the progress line shows for a finished step: its time, unless a figure says more.
    fn shown(&self) -> String {
        fmt::time_ms(self.median_ms())
    }
}

impl Timed for crate::measure::Measurement {
    fn median_ms(&self) -> f64 {
        self.median_ms
    }
}

impl<T: Timed> Timed for (T, PoolPeak) {
    fn median_ms(&self) -> f64 {
        self.0.median_ms()
    }
}

impl Timed for stream::StreamResult {
    fn median_ms(&self) -> f64 {
        self.total.map_or(f64::NAN, |t| t.median_ms)
    }
}

impl Timed for batch::BatchResult {
    fn median_ms(&self) -> f64 {
        self.shapes
            .iter()
            .filter_map(|s| s.b8)
            .map(|m| m.median_ms)
            .sum()
    }
}

impl Timed for crate::overhead::OverheadResult {
    fn median_ms(&self) -> f64 {
        f64::NAN
    }

    fn shown(&self) -> String {
        let worst = self.rows.iter().map(|r| r.ratio).fold(f64::NAN, f64::max);
        format!("worst engine / cpu-ref {worst:.3}")
    }
}

impl Timed for StackTimes {
    fn median_ms(&self) -> f64 {
        self.kernels.unwrap_or(self.wall).median_ms
    }
}

/// Progress, deadline and checkpoints shared by every step of a run.
pub(crate) struct Steps {
    pub progress: Progress,
    pub deadline: Option<Instant>,
    pub json: Option<PathBuf>,
}

impl Steps {
    /// Runs one measurement unless the deadline passed; errors and panics become the error text.
    pub fn step<T: Timed>(
        &mut self,
        label: &str,
        f: impl FnOnce() -> Result<T, String>,
    ) -> (Option<T>, Option<String>) {
        self.progress.start(label);
        let r = if self.deadline.is_some_and(|d| Instant::now() >= d) {
            Err("skipped: --time-limit reached".to_string())
        } else {
            guarded(f)
        };
        let shown = match &r {
            Ok(v) => v.shown(),
            Err(e) => format!("not measured: {e}"),
        };
        self.progress.finish_step(label, &shown);
        match r {
            Ok(v) => (Some(v), None),
            Err(e) => (None, Some(one_line(&e))),
        }
    }

    /// Rewrites `--json` with what is known so far, marked partial (best effort).
    pub fn checkpoint(&self, report: &Report) {
        if let Some(path) = &self.json {
            let mut partial = report.clone();
            partial.pool = pool::sections(report);
            partial
                .notes
                .push("partial report: the run had not finished when this was written".into());
            if let Ok(text) = serde_json::to_string_pretty(&partial) {
                let _ = write_file(path, &text);
            }
        }
    }
}

/// An error as one line of at most 300 characters (wgpu validation errors span many lines; the
/// table and RESULTS.md need one).
pub(crate) fn one_line(e: &str) -> String {
    let flat = e.split_whitespace().collect::<Vec<_>>().join(" ");
    match flat.char_indices().nth(300) {
        Some((i, _)) => format!("{}…", &flat[..i]),
        None => flat,
    }
}

/// Runs `f`, turning a panic into an error so one broken op cannot end the whole run.
pub(crate) fn guarded<T>(f: impl FnOnce() -> Result<T, String>) -> Result<T, String> {
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)) {
        Ok(r) => r,
        Err(p) => {
            let msg = p
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| p.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "unknown panic".into());
            Err(format!("panicked: {msg}"))
        }
    }
}
