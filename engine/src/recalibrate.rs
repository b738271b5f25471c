//! Retrying a failed lazy calibration in the background.
//!
//! When the lazy calibration of an `Auto` engine fails (a GPU fault while measuring), the engine
//! installs a stand-in model that sends every op to the CPU. A transient fault — an allocation
//! that failed under memory pressure, a caught panic — would otherwise leave a long-running
//! server on the CPU for good. So the failure also arms a retry: once its back-off has passed,
//! the next sampled CPU call (one in [`SAMPLE_EVERY`](crate::dispatch::SAMPLE_EVERY), already off
//! the untimed hot path) under the `Auto` policy — the only one the model serves; under `Cpu`
//! nothing may touch the GPU — starts a measurement on a background thread, and the caller's op
//! does not wait for it. Ops keep running on the CPU meanwhile. A retry that fails doubles the
//! back-off (30 s, 1 min, ... up to 1 h); a lost device ends the retries, as does a model
//! installed by [`Engine::calibrate`] or [`Engine::set_calibration`] — also while a retry is
//! measuring: its result, success or failure, then arms and installs nothing.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::calibrate::{Calibration, Cost, OpClass, measure_with};
use crate::context::Gpu;
use crate::dispatch::DispatchPolicy;
use crate::engine::Engine;
use crate::error::Error;

/// Back-off before the first retry.
const FIRST_BACKOFF: Duration = Duration::from_secs(30);
/// Longest back-off between retries.
const MAX_BACKOFF: Duration = Duration::from_secs(3600);

/// The retry state of one engine's dispatcher: none armed, or the next one.
#[derive(Debug, Default)]
pub(crate) struct Retry(Mutex<Option<Armed>>);

/// An armed retry.
#[derive(Debug, Clone, Copy)]
struct Armed {
    /// When it may start.
    at: Instant,
    /// The back-off it waited (doubled for the next after a failure).
    backoff: Duration,
    /// A background measurement is running (no second one starts).
    running: bool,
}

impl Retry {
    /// Arms a retry `backoff` from now (replacing any armed one).
    pub(crate) fn arm(&self, backoff: Duration) {
        *self.lock() = Some(Armed {
            at: Instant::now() + backoff,
            backoff,
            running: false,
        });
    }

    /// Disarms it (a model was installed, or the device is lost).
    pub(crate) fn disarm(&self) {
        *self.lock() = None;
    }

    /// Whether a retry is armed (running or not).
    pub(crate) fn armed(&self) -> bool {
        self.lock().is_some()
    }

    /// Claims a due retry for one background run: its back-off, or None (none armed, not due,
    /// already running, or another thread holds the state right now: the next sample checks).
    fn claim_due(&self) -> Option<Duration> {
        let mut state = self.0.try_lock().ok()?;
        let armed = state.as_mut()?;
        if armed.running || Instant::now() < armed.at {
            return None;
        }
        armed.running = true;
        Some(armed.backoff)
    }

    /// Runs `install` and disarms, if the retry claimed with `backoff` is still the armed one —
    /// not disarmed by [`Engine::set_calibration`] or [`Engine::calibrate`] meanwhile, which
    /// disarm before they install, so their model is the one that stays.
    fn finish_if_claimed(&self, backoff: Duration, install: impl FnOnce()) -> bool {
        let mut state = self.lock();
        let claimed = state.is_some_and(|a| a.running && a.backoff == backoff);
        if claimed {
            install();
            *state = None;
        }
        claimed
    }

    /// Arms the retry claimed with `backoff` again, with back-off `next`, due `due_in` from now
    /// — if it is still the armed one. One disarmed meanwhile ([`Engine::set_calibration`],
    /// [`Engine::calibrate`], a lost device) stays disarmed: re-arming it unconditionally let a
    /// later retry install its model over the user's.
    fn rearm_if_claimed(&self, backoff: Duration, next: Duration, due_in: Duration) -> bool {
        let mut state = self.lock();
        let claimed = state.is_some_and(|a| a.running && a.backoff == backoff);
        if claimed {
            *state = Some(Armed {
                at: Instant::now() + due_in,
                backoff: next,
                running: false,
            });
        }
        claimed
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Option<Armed>> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The armed retry's back-off, when none is running (tests).
    #[cfg(test)]
    pub(crate) fn backoff_if_idle(&self) -> Option<Duration> {
        self.lock().filter(|a| !a.running).map(|a| a.backoff)
    }

    /// Moves an armed retry's start to now (tests: no waiting out the back-off).
    #[cfg(test)]
    pub(crate) fn make_due(&self) {
        if let Some(a) = self.lock().as_mut() {
            a.at = Instant::now();
        }
    }
}

/// The GPU cost of every class in the stand-in model of a failed calibration: so large that
/// every prediction says CPU. [`Engine::calibration`] reports no calibration while it is in use.
pub(crate) const STAND_IN_GPU_COST: Cost = Cost {
    fixed_s: f64::MAX / 4.0,
    per_unit_s: 0.0,
};

/// Whether `c` is the stand-in model of a failed calibration.
pub(crate) fn is_stand_in(c: &Calibration) -> bool {
    c.gpu == [STAND_IN_GPU_COST; 4]
}

impl Engine {
    /// The stand-in model after the lazy calibration failed with `e` (GPU costs `f64::MAX / 4`
    /// s per call: every prediction says CPU), with the failure logged and — unless the device is
    /// lost — a retry armed.
    pub(crate) fn calibration_failed(&self, g: &Gpu, key: String, e: &Error) -> Calibration {
        let retry = if matches!(e, Error::DeviceLost(_)) {
            String::new()
        } else {
            g.dispatch.retry.arm(FIRST_BACKOFF);
            let s = FIRST_BACKOFF.as_secs();
            format!(" (retried in the background from {s} s on)")
        };
        log::warn!("bitnet-wgpu: calibration failed ({e}); Auto dispatch uses the CPU{retry}");
        Calibration {
            key,
            upload_bytes_per_s: 1.0,
            download_bytes_per_s: 1.0,
            cpu: [Default::default(); 4],
            gpu: [STAND_IN_GPU_COST; 4],
        }
    }

    /// From a sampled CPU call: starts a due calibration retry on a background thread.
    #[cold]
    #[inline(never)]
    pub(crate) fn retry_calibration_if_due(&self, g: &Gpu) {
        // Its model serves only `Auto`, and under `Cpu` nothing may touch the GPU: a due retry
        // waits for a sample under `Auto`.
        if g.dispatch.policy() != DispatchPolicy::Auto {
            return;
        }
        if g.is_lost() {
            // Nothing to measure on for good.
            g.dispatch.retry.disarm();
            return;
        }
        let Some(backoff) = g.dispatch.retry.claim_due() else {
            return;
        };
        let engine = self.clone();
        let spawned = std::thread::Builder::new()
            .name("bitnet-recalibrate".into())
            .spawn(move || engine.retry_calibration(backoff));
        if let Err(e) = spawned {
            log::warn!("bitnet-wgpu: cannot start a calibration retry ({e}); trying later");
            // Unless a model was installed meanwhile.
            g.dispatch.retry.rearm_if_claimed(backoff, backoff, backoff);
        }
    }

    /// The background retry claimed with `backoff`: measure; install and cache the model, or
    /// arm the next retry with twice the back-off (none once the device is lost).
    fn retry_calibration(&self, backoff: Duration) {
        self.retry_calibration_with(backoff, |_| ());
    }

    /// [`Engine::retry_calibration`], calling `before(class)` before each op class is measured
    /// (tests act there, in the middle of a retry). A panic in the attempt (a bug, or one inside
    /// wgpu outside the scheduler's guard) is logged and arms the next retry: left marked as
    /// running, it would have ended the retries without a word.
    fn retry_calibration_with(&self, backoff: Duration, before: impl FnMut(OpClass)) {
        let attempt = std::panic::AssertUnwindSafe(|| self.retry_attempt(backoff, before));
        if std::panic::catch_unwind(attempt).is_err() {
            let next = (backoff * 2).min(MAX_BACKOFF);
            let rearmed = self
                .gpu_raw()
                .is_some_and(|g| g.dispatch.retry.rearm_if_claimed(backoff, next, next));
            if rearmed {
                log::warn!(
                    "bitnet-wgpu: calibration retry panicked; next try in {} s",
                    next.as_secs()
                );
            }
        }
    }

    /// One retry attempt (see [`Engine::retry_calibration_with`]).
    fn retry_attempt(&self, backoff: Duration, before: impl FnMut(OpClass)) {
        let Some(g) = self.gpu_raw() else {
            return;
        };
        let d = &g.dispatch;
        let Some(_one) = d.lock_calibrating(g.id) else {
            return;
        };
        if !d.retry.armed() {
            return;
        }
        if d.policy() != DispatchPolicy::Auto {
            // Set to `Cpu` or `Gpu` since it was claimed: due again at the next `Auto` sample.
            d.retry.rearm_if_claimed(backoff, backoff, Duration::ZERO);
            return;
        }
        match measure_with(self, g, before) {
            Ok(c) => {
                let installed = d.retry.finish_if_claimed(backoff, || {
                    c.save_cached();
                    d.install(c.clone());
                });
                if installed {
                    log::info!("bitnet-wgpu: calibration retry succeeded; Auto uses its model");
                }
            }
            Err(Error::DeviceLost(_)) => d.retry.disarm(),
            Err(e) => {
                let next = (backoff * 2).min(MAX_BACKOFF);
                if d.retry.rearm_if_claimed(backoff, next, next) {
                    log::warn!(
                        "bitnet-wgpu: calibration retry failed ({e}); Auto dispatch keeps the \
                         CPU, next try in {} s",
                        next.as_secs()
                    );
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dispatch::SAMPLE_EVERY;

    /// Whether the installed model is the stand-in of a failed calibration, as the engine's
    /// info says it; `calibration()` then reads `None` (the stand-in is no measurement).
    fn stand_in(e: &Engine) -> bool {
        let failed = e.info().calibration_failed;
        assert_eq!(
            e.calibration().is_none(),
            failed,
            "calibration() while failed"
        );
        failed
    }

    /// A model the user could install: the key of the engine's device, every GPU cost its CPU
    /// cost (made up; no measurement).
    fn user_model(e: &Engine) -> Calibration {
        let g = e.gpu_raw().unwrap();
        let cpu = Cost {
            fixed_s: 1e-6,
            per_unit_s: 1e-9,
        };
        Calibration {
            key: Calibration::key_of(g),
            upload_bytes_per_s: 1e9,
            download_bytes_per_s: 1e9,
            cpu: [cpu; 4],
            gpu: [cpu; 4],
        }
    }

    /// An `Auto` engine whose lazy calibration just failed with a transient fault.
    fn failed_engine() -> Engine {
        let e = crate::test_gpu::gpu();
        e.set_dispatch_policy(DispatchPolicy::Auto).unwrap();
        let g = e.gpu_raw().expect("a GPU engine");
        let oom = Error::OutOfMemory {
            context: "calibrating (a test's stand-in failure)".into(),
        };
        let c = e.calibration_failed(g, Calibration::key_of(g), &oom);
        g.dispatch.install(c);
        assert!(stand_in(&e) && g.dispatch.retry.armed());
        assert!(e.info().to_string().contains("calibration FAILED"));
        e
    }

    /// Enough tiny host-facing ops that some are sampled (the retry's trigger), all on the CPU.
    fn run_small_ops(e: &Engine) {
        for _ in 0..2 * SAMPLE_EVERY {
            let q = e
                .quantize_activations(&[1.0, -2.0, 0.5, 4.0], 1, 4)
                .unwrap();
            assert_eq!(q.absmax()[0], 4.0);
        }
    }

    /// Polls `done` for up to two minutes (a measurement takes seconds on lavapipe).
    fn wait_for(what: &str, done: impl Fn() -> bool) {
        let end = Instant::now() + Duration::from_secs(120);
        while !done() {
            assert!(Instant::now() < end, "timed out waiting for {what}");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// A failed lazy calibration used to leave `Auto` on the CPU for the engine's lifetime; a
    /// due retry now measures in the background and installs a real model, with no caller
    /// waiting on it.
    #[test]
    fn a_failed_lazy_calibration_is_retried_in_the_background() {
        let e = failed_engine();
        let g = e.gpu_raw().unwrap();
        run_small_ops(&e);
        assert!(stand_in(&e), "not before its back-off");
        g.dispatch.retry.make_due();
        run_small_ops(&e);
        wait_for("the retry's model", || !stand_in(&e));
        assert!(!g.dispatch.retry.armed(), "disarmed once it succeeded");
        assert!(e.calibration().unwrap().invalid().is_none());
    }

    /// A retry that fails arms the next with twice the back-off; a model the user installs
    /// meanwhile disarms it.
    #[test]
    fn a_failed_retry_backs_off_and_a_user_model_ends_the_retries() {
        let e = failed_engine();
        let g = e.gpu_raw().unwrap();
        g.dispatch.retry.make_due();
        // The retry's first allocation fails (the small ops allocate nothing on the GPU).
        e.inject_fault(crate::InjectedFault::OutOfMemory);
        run_small_ops(&e);
        wait_for("the second retry to be armed", || {
            g.dispatch.retry.backoff_if_idle() == Some(2 * FIRST_BACKOFF)
        });
        assert!(stand_in(&e), "a failed retry installs nothing");
        let user = user_model(&e);
        e.set_calibration(user.clone()).unwrap();
        assert!(!g.dispatch.retry.armed());
        g.dispatch.retry.make_due();
        run_small_ops(&e);
        assert_eq!(e.calibration(), Some(user), "the user's model stays");
    }

    /// A model the user installs while a retry measures stays, even when that measurement then
    /// fails: the failed retry armed the next one regardless, which later installed its own
    /// model over the user's.
    #[test]
    fn a_retry_failing_after_a_user_model_arms_no_other() {
        let e = failed_engine();
        let g = e.gpu_raw().unwrap();
        g.dispatch.retry.make_due();
        let backoff = g.dispatch.retry.claim_due().expect("a due retry");
        let user = user_model(&e);
        let mut installing = Some(user.clone());
        // In the middle of the measurement: the user's model, then a fault that fails it.
        e.retry_calibration_with(backoff, |_| {
            if let Some(u) = installing.take() {
                e.set_calibration(u).unwrap();
                e.inject_fault(crate::InjectedFault::OutOfMemory);
            }
        });
        assert!(!g.dispatch.retry.armed(), "no retry after the user's model");
        assert_eq!(e.calibration(), Some(user), "the user's model stays");
    }

    /// A retry that panics arms the next one (it stayed marked as running, and no retry ever
    /// started again).
    #[test]
    fn a_panicking_retry_arms_the_next() {
        let e = failed_engine();
        let g = e.gpu_raw().unwrap();
        g.dispatch.retry.make_due();
        let backoff = g.dispatch.retry.claim_due().expect("a due retry");
        e.retry_calibration_with(backoff, |_| panic!("a bug in the middle of a retry"));
        assert_eq!(g.dispatch.retry.backoff_if_idle(), Some(2 * backoff));
        assert!(stand_in(&e));
    }

    /// Under the `Cpu` policy nothing touches the GPU, and a retry (a measurement on it) is no
    /// exception: it waits until the policy is `Auto` again (the only one its model serves).
    #[test]
    fn no_retry_starts_under_the_cpu_policy() {
        let e = failed_engine();
        let g = e.gpu_raw().unwrap();
        e.set_dispatch_policy(DispatchPolicy::Cpu).unwrap();
        g.dispatch.retry.make_due();
        run_small_ops(&e);
        let idle = g.dispatch.retry.backoff_if_idle();
        assert_eq!(idle, Some(FIRST_BACKOFF), "a retry started under Cpu");
        e.set_dispatch_policy(DispatchPolicy::Auto).unwrap();
        run_small_ops(&e);
        wait_for("the retry's model", || !stand_in(&e));
    }
}
