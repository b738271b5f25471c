//! A small progress bar on stderr, so stdout stays a clean table (and can be piped).
//!
//! On a terminal the bar redraws in place; otherwise (CI logs, the device machine's captured
//! output) it prints one line per finished step, which keeps logs readable.

use std::io::{IsTerminal, Write};
use std::time::Instant;

/// Progress over a known number of steps.
pub struct Progress {
    total: usize,
    done: usize,
    started: Instant,
    tty: bool,
    enabled: bool,
}

impl Progress {
    /// A bar over `total` steps; `enabled = false` makes every call a no-op (`--no-progress`).
    pub fn new(total: usize, enabled: bool) -> Progress {
        Progress {
            total: total.max(1),
            done: 0,
            started: Instant::now(),
            tty: std::io::stderr().is_terminal(),
            enabled,
        }
    }

    /// Shows that `label` is being worked on now.
    pub fn start(&mut self, label: &str) {
        if self.enabled && self.tty {
            self.draw(label);
        }
    }

    /// Marks one step finished, with a short outcome (e.g. `"0.123 ms"`).
    pub fn finish_step(&mut self, label: &str, outcome: &str) {
        self.done = (self.done + 1).min(self.total);
        if !self.enabled {
            return;
        }
        if self.tty {
            self.draw(label);
        } else {
            let mut err = std::io::stderr().lock();
            let _ = writeln!(err, "[{:>3}/{}] {label}: {outcome}", self.done, self.total);
        }
    }

    /// Clears the bar line and prints a final elapsed-time line.
    pub fn close(&mut self) {
        if !self.enabled {
            return;
        }
        let mut err = std::io::stderr().lock();
        if self.tty {
            let _ = write!(err, "\r\x1b[2K");
        }
        let secs = self.started.elapsed().as_secs_f64();
        let _ = writeln!(err, "done: {} steps in {secs:.1} s", self.done);
    }

    fn draw(&self, label: &str) {
        const WIDTH: usize = 30;
        let filled = WIDTH * self.done / self.total;
        let bar: String = "#".repeat(filled) + &"-".repeat(WIDTH - filled);
        let secs = self.started.elapsed().as_secs_f64();
        let label: String = label.chars().take(48).collect();
        let mut err = std::io::stderr().lock();
        let _ = write!(
            err,
            "\r\x1b[2K[{bar}] {:>3}/{} {secs:6.1}s {label}",
            self.done, self.total
        );
        let _ = err.flush();
    }
}
