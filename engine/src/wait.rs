//! Waiting for the GPU without blocking inside wgpu: every wait of the engine polls the device
//! non-blockingly (`PollType::Poll`), never `PollType::Wait`.
//!
//! A `Wait` poll holds wgpu's device locks for as long as the GPU takes, which blocks every other
//! thread's `queue.submit` meanwhile (gfx-rs/wgpu#9470) and parks the waiting thread inside the
//! driver, where a lost or destroyed device may never wake it. A `Poll` returns at once, and the
//! device's health is checked on every round, so a lost device ends the wait with
//! `Error::DeviceLost`.
//!
//! Between polls, [`Backoff`]: first a spin phase ([`crate::EngineOptions::spin_wait`]; 2 ms on
//! GPUs, none on CPU adapters, whose work needs the host's cores) that polls every few
//! microseconds without a syscall, then yields a few dozen times, then sleeps from 20 µs doubling
//! to 100 µs (at most 10,000 polls a second, for slow GPUs). A sleep wakes late by the kernel's
//! timer slack (50 µs on Linux) on top of its length, so without the spin phase a millisecond-long
//! decode step was seen up to ~150 µs after it finished: H200, one `LinearChain` run of the
//! 2B4T stack (GPU 834-837 µs), submit + wait 1.109 / 1.165 ms sleeping, 1.003 / 0.959 ms
//! spinning (two rounds).

use std::time::{Duration, Instant};

use crate::error::{Error, Result};

/// Yields before the first sleep.
const SPINS: u32 = 48;
/// How long a wait on a GPU adapter polls back to back before it backs off (the default of
/// [`crate::EngineOptions::spin_wait`]): a decode step's wait, about 1-3 ms, ends as its work ends.
pub(crate) const DEFAULT_SPIN_WAIT: Duration = Duration::from_millis(2);
/// The busy pause between two polls while spinning: no syscall, yet few enough polls that wgpu's
/// device lock, which a poll takes briefly, stays free for other threads' submissions.
const SPIN_GAP: Duration = Duration::from_micros(4);
/// Longest sleep between two polls.
const MAX_SLEEP: Duration = Duration::from_micros(100);

/// How [`Backoff::pause`] waited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Pause {
    /// Busy for [`SPIN_GAP`] (the spin phase).
    Spin,
    /// `yield_now`.
    Yield,
    /// Slept this long.
    Sleep(Duration),
}

/// The pause between two polls (see the module docs). `Default`: no spin phase.
#[derive(Debug, Default)]
pub(crate) struct Backoff {
    step: u32,
    /// How long to spin after the wait began or last made progress.
    spin: Duration,
    /// When the current spin phase began (set by the first pause after a reset).
    since: Option<Instant>,
}

impl Backoff {
    /// A backoff that spins for `spin` before it yields and sleeps.
    pub fn spinning(spin: Duration) -> Backoff {
        Backoff {
            spin,
            ..Backoff::default()
        }
    }

    /// Waits a little longer than last time; returns how.
    pub fn pause(&mut self) -> Pause {
        let since = *self.since.get_or_insert_with(Instant::now);
        if since.elapsed() < self.spin {
            let t = Instant::now();
            while t.elapsed() < SPIN_GAP {
                std::hint::spin_loop();
            }
            return Pause::Spin;
        }
        let pause = if self.step < SPINS {
            std::thread::yield_now();
            Pause::Yield
        } else {
            let doublings = (self.step - SPINS).min(6);
            let nap = (Duration::from_micros(20) * (1 << doublings)).min(MAX_SLEEP);
            std::thread::sleep(nap);
            Pause::Sleep(nap)
        };
        self.step = self.step.saturating_add(1);
        pause
    }

    /// Progress was made: poll eagerly again.
    pub fn reset(&mut self) {
        self.step = 0;
        self.since = None;
    }
}

/// One non-blocking poll, on the engine thread or caller named `thread` (in the log line). A
/// callback that panics inside it (an application's, on a device it shares with the engine) is
/// logged and swallowed, read as a poll that found work in flight: wgpu drops the poll's other callbacks unrun, and the engine's own
/// then fail their waiters with typed errors (a dropped device-lost callback marks the device
/// lost, `context.rs`), so the engine's caller gets an error, never the application's panic.
pub(crate) fn poll_guarded(
    thread: &str,
    device: &wgpu::Device,
) -> std::result::Result<wgpu::PollStatus, wgpu::PollError> {
    crate::scheduler::guarded_on(thread, || device.poll(wgpu::PollType::Poll))
        .unwrap_or(Ok(wgpu::PollStatus::Poll))
}

/// Polls `device` until `done()` is true, the device is lost (`lost()` says why), or `limit`
/// passed (`Ok(false)`), spinning for the first `spin` of it.
pub(crate) fn poll_until(
    device: &wgpu::Device,
    lost: &dyn Fn() -> Option<Error>,
    limit: Option<Duration>,
    spin: Duration,
    mut done: impl FnMut() -> bool,
) -> Result<bool> {
    let started = Instant::now();
    let mut backoff = Backoff::spinning(spin);
    loop {
        if done() {
            return Ok(true);
        }
        let polled = poll_guarded("caller", device);
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
/// On a submission thread it is refused, and on a completion thread it polls that thread's
/// device while it waits (`engine_thread.rs`: either would otherwise wait for itself).
pub(crate) fn block_on<T>(fut: impl Future<Output = Result<T>>) -> Result<T> {
    crate::engine_thread::check_not_submission("a blocking read")?;
    let drive = crate::engine_thread::completion_device();
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
        match &drive {
            Some(device) => {
                let _ = poll_guarded("completion", device);
                std::thread::park_timeout(Duration::from_micros(50));
            }
            None => std::thread::park_timeout(crate::scheduler::SLOW_CALL),
        }
        if since.elapsed() >= crate::scheduler::SLOW_CALL {
            waited += since.elapsed();
            since = Instant::now();
            log::warn!("bitnet-wgpu: a read has waited {waited:?} for the GPU");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The phases in order: spin while the spin window lasts (and again after progress), then
    /// yields, then sleeps doubling from 20 µs to the cap; no spin window, no spinning.
    #[test]
    fn backoff_spins_then_yields_then_sleeps() {
        let mut b = Backoff::spinning(Duration::from_millis(200));
        assert!((0..100).all(|_| b.pause() == Pause::Spin));
        std::thread::sleep(Duration::from_millis(250));
        assert_eq!(b.pause(), Pause::Yield, "the window has passed");
        b.reset();
        assert_eq!(b.pause(), Pause::Spin, "progress opens a new window");

        let mut b = Backoff::default();
        let pauses: Vec<Pause> = (0..SPINS + 4).map(|_| b.pause()).collect();
        assert!(pauses[..SPINS as usize].iter().all(|p| *p == Pause::Yield));
        let us = |n| Pause::Sleep(Duration::from_micros(n));
        assert_eq!(pauses[SPINS as usize..], [us(20), us(40), us(80), us(100)]);
        b.reset();
        assert_eq!(b.pause(), Pause::Yield);

        // A window that has passed by the first pause: straight to the yields.
        let mut b = Backoff::spinning(Duration::from_nanos(1));
        b.pause();
        std::thread::sleep(Duration::from_millis(1));
        assert_eq!(b.pause(), Pause::Yield);
    }

    /// A wait with a limit gives up once it passed (`Ok(false)`: the profiler then drops its
    /// samples) instead of polling for good; one whose condition holds ends at once.
    #[test]
    fn a_bounded_wait_gives_up_at_its_limit() {
        let e = crate::test_gpu::gpu();
        let g = e.gpu_context().unwrap();
        let lost = || -> Option<crate::error::Error> { None };
        let limit = Some(Duration::from_millis(20));
        let (tx, rx) = std::sync::mpsc::channel();
        let device = g.device.clone();
        std::thread::spawn(move || {
            let _ = tx.send(poll_until(&device, &lost, limit, Duration::ZERO, || false));
        });
        let got = rx.recv_timeout(Duration::from_secs(10));
        assert!(matches!(got, Ok(Ok(false))), "{got:?}");
        assert!(matches!(
            poll_until(&g.device, &lost, limit, Duration::ZERO, || true),
            Ok(true)
        ));
    }
}
