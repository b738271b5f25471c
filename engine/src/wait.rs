//! Waiting for the GPU without blocking inside wgpu: every wait of the engine polls the device
//! non-blockingly (`PollType::Poll`) with a short backoff, never `PollType::Wait`.
//!
//! A `Wait` poll holds wgpu's device locks for as long as the GPU takes, which blocks every other
//! thread's `queue.submit` meanwhile (gfx-rs/wgpu#9470) and parks the waiting thread inside the
//! driver, where a lost or destroyed device may never wake it. A `Poll` returns at once; the
//! backoff (yield a few dozen times, then sleep from 20 µs doubling to 100 µs) keeps read
//! latency low on fast GPUs and the CPU cost low on slow ones (at most 10,000 polls a second; a
//! 1 ms cap could let a 1.4 ms batch finish ~0.6 ms before its waiter woke), and the device's
//! health is checked on every round, so a lost device ends the wait with `Error::DeviceLost`.

use std::time::{Duration, Instant};

use crate::error::{Error, Result};

/// Yields before the first sleep.
const SPINS: u32 = 48;
/// Longest sleep between two polls.
const MAX_SLEEP: Duration = Duration::from_micros(100);

/// The pause between two polls (see the module docs).
#[derive(Debug, Default)]
pub(crate) struct Backoff {
    step: u32,
}

impl Backoff {
    /// Waits a little longer than last time.
    pub fn pause(&mut self) {
        if self.step < SPINS {
            std::thread::yield_now();
        } else {
            let doublings = (self.step - SPINS).min(6);
            std::thread::sleep((Duration::from_micros(20) * (1 << doublings)).min(MAX_SLEEP));
        }
        self.step = self.step.saturating_add(1);
    }

    /// Progress was made: poll eagerly again.
    pub fn reset(&mut self) {
        self.step = 0;
    }
}

/// Polls `device` until `done()` is true, the device is lost (`lost()` says why), or `limit`
/// passed (`Ok(false)`).
pub(crate) fn poll_until(
    device: &wgpu::Device,
    lost: &dyn Fn() -> Option<Error>,
    limit: Option<Duration>,
    mut done: impl FnMut() -> bool,
) -> Result<bool> {
    let started = Instant::now();
    let mut backoff = Backoff::default();
    loop {
        if done() {
            return Ok(true);
        }
        let polled = device.poll(wgpu::PollType::Poll);
        if done() {
            return Ok(true);
        }
        if let Some(e) = lost() {
            return Err(e);
        }
        if let Err(e) = polled {
            return Err(Error::DeviceLost(format!("device poll failed: {e}")));
        }
        if limit.is_some_and(|l| started.elapsed() >= l) {
            return Ok(false);
        }
        backoff.pause();
    }
}

/// Runs `fut` to completion on this thread (the blocking form of the engine's reads). The future
/// is woken by the engine's completion thread; a wait longer than
/// [`crate::scheduler::SLOW_CALL`] is logged (never an error: a slow GPU is not a failure).
pub(crate) fn block_on<F: Future>(fut: F) -> F::Output {
    struct Unpark(std::thread::Thread);
    impl std::task::Wake for Unpark {
        fn wake(self: std::sync::Arc<Self>) {
            self.0.unpark();
        }
    }
    let waker = std::task::Waker::from(std::sync::Arc::new(Unpark(std::thread::current())));
    let mut cx = std::task::Context::from_waker(&waker);
    let mut fut = std::pin::pin!(fut);
    let (mut since, mut waited) = (Instant::now(), Duration::ZERO);
    loop {
        if let std::task::Poll::Ready(v) = fut.as_mut().poll(&mut cx) {
            return v;
        }
        std::thread::park_timeout(crate::scheduler::SLOW_CALL);
        if since.elapsed() >= crate::scheduler::SLOW_CALL {
            waited += since.elapsed();
            since = Instant::now();
            log::warn!("bitnet-wgpu: a read has waited {waited:?} for the GPU");
        }
    }
}
