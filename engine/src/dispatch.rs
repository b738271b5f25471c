//! Automatic CPU/GPU dispatch of the host-facing ops, with fallback to the CPU on GPU faults.
//!
//! **Which ops.** The ops that take and return host data — the cpu-ref-compatible BitNet methods
//! (`quantize_weights`, `quantize_activations`, `bitlinear*`), [`crate::Linear`],
//! [`crate::BatchingLinear`] and streaming — choose a backend per call. Ops on resident
//! [`crate::Tensor`]s are not dispatched: they run on the GPU when every input is a device tensor
//! and the engine takes GPU work (any policy but `Cpu`, device not lost; on software adapters,
//! shapes past their loop limit aside), else on the CPU with device inputs read back — so ops
//! chained on device tensors stay on the device. New tensors (uploads, and the outputs of such
//! CPU runs) are device tensors whenever the engine takes GPU work, host tensors otherwise.
//!
//! **Policy** ([`DispatchPolicy`], per engine, changeable at run time; the `BITNET_DISPATCH`
//! environment variable — `auto`, `cpu` or `gpu` — overrides it for every engine created while it
//! is set): `Gpu` runs every host-facing op on the GPU; `Cpu` runs everything on the CPU (new
//! tensors are host tensors: nothing touches the GPU); `Auto` predicts both backends' times from
//! the op, its sizes and what must be transferred (weights already resident are free) and picks the
//! faster. `Engine::new()` is `Auto`; the explicit GPU constructors default to `Gpu`
//! (`EngineOptions::dispatch`); the CPU engine is always `Cpu`.
//!
//! **Predictions** come from a calibration ([`crate::Calibration`], `calibrate.rs`): measured by
//! [`Engine::calibrate`], or lazily at the first `Auto` decision (loaded from the user's cache
//! directory when this adapter + driver + crate version was calibrated before). They adapt at
//! run time: measured times of the chosen backend (every call on the GPU, about one call in
//! [`SAMPLE_EVERY`] on the CPU, so the CPU path stays within a few nanoseconds of calling cpu-ref)
//! scale that backend's prediction for the op class and size (a factor of 16 in work per size
//! bucket; moving average of measured / predicted, one sample moving it at most 20 %, so a cold
//! first call or a stall does not move a class). A class that left a backend because its runs
//! there measured slow is timed there again on one sampled call in four (`predict.rs`), and
//! comes back once that backend is as fast as calibrated.
//! A lazy calibration that fails (any GPU fault, transient ones included) leaves the engine's
//! `Auto` running every op on the CPU until a model is installed: by [`Engine::calibrate`],
//! [`Engine::set_calibration`], or a retry on a background thread with a doubling back-off
//! (`recalibrate.rs`; none once the device is lost).
//!
//! **Faults** (see `fault.rs`): a GPU failure (lost device, out of memory, validation, pipeline
//! creation, read-back, an aborted run, a caught panic) re-runs the op on the CPU from the
//! caller's host inputs — the caller gets the correct result and a warning is logged. Bad input
//! is returned as cpu-ref reports it; a device limit or missing feature (`LimitExceeded`,
//! `Unsupported`) re-runs on the CPU under `Auto` and is returned under `Gpu`. A lost device is
//! never used again: every later op of the engine runs on the CPU.

use std::sync::atomic::Ordering;

use crate::calibrate::{Calibration, measure};
use crate::context::Gpu;
use crate::engine::{BackendKind, Engine};
use crate::error::{Error, Result};
pub use crate::workload::Workload;

#[path = "dispatch_route.rs"]
mod route;
pub(crate) use route::{Route, noting_host_runs, ran_on_host, reruns_on_cpu};

/// Environment variable overriding every new engine's policy: `auto`, `cpu` or `gpu`.
pub const DISPATCH_ENV: &str = "BITNET_DISPATCH";
/// About one CPU-path call in this many is timed to adapt the predictions (spread by a hash of
/// the call count, so that a caller's loop of a power-of-two number of ops has each of them
/// timed). 256: a timed call costs two
/// clock reads (37-44 ns each on the H200 host's VM clock) and a model update, ~120 ns, which at
/// 64 was ~1 % of every call of a 256-value op (H200 host, three interleaved rounds: `Engine::new()`
/// 1.036 / 1.058 / 1.054 × cpu-ref at 64, 1.047 / 1.032 / 1.040 at 256; at 32 it had read
/// 1.054 against `Engine::cpu()`'s 1.024). The moving average still settles within a few
/// thousand calls, milliseconds for ops this small.
pub const SAMPLE_EVERY: u32 = 256;

/// Where an engine runs its host-facing ops (see the module docs).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DispatchPolicy {
    /// Per call: the backend predicted to be faster.
    Auto,
    /// Always the CPU (cpu-ref).
    Cpu,
    /// Always the GPU (falling back to the CPU only on a GPU fault).
    Gpu,
}

impl DispatchPolicy {
    /// The policy named by `BITNET_DISPATCH`, if set to a valid value (an invalid one is logged;
    /// unset or blank says nothing).
    pub fn from_env() -> Option<DispatchPolicy> {
        Self::from_setting(std::env::var(DISPATCH_ENV).ok().as_deref())
    }

    /// [`DispatchPolicy::from_env`] for the variable's value `v`.
    fn from_setting(v: Option<&str>) -> Option<DispatchPolicy> {
        let v = v.filter(|v| !v.trim().is_empty())?;
        let p = DispatchPolicy::parse(v);
        if p.is_none() {
            log::warn!("bitnet-wgpu: ignoring {DISPATCH_ENV}={v:?} (want auto, cpu or gpu)");
        }
        p
    }

    /// Parses `auto`, `cpu` or `gpu` (any case, surrounding blanks ignored).
    pub fn parse(s: &str) -> Option<DispatchPolicy> {
        match s.trim().to_ascii_lowercase().as_str() {
            "auto" => Some(DispatchPolicy::Auto),
            "cpu" => Some(DispatchPolicy::Cpu),
            "gpu" => Some(DispatchPolicy::Gpu),
            _ => None,
        }
    }

    /// The policy as stored in the dispatcher's atomic.
    pub(crate) const fn code(self) -> u8 {
        self as u8
    }

    /// Inverse of [`DispatchPolicy::code`].
    pub(crate) fn from_code(c: u8) -> DispatchPolicy {
        match c {
            0 => DispatchPolicy::Auto,
            1 => DispatchPolicy::Cpu,
            _ => DispatchPolicy::Gpu,
        }
    }
}

/// How many host-facing ops ran where, and how many fell back to the CPU after a GPU fault.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct DispatchStats {
    /// Ops run on the CPU by choice (policy, prediction, lost device). Counted without locking
    /// (to keep the CPU path cheap): exact on one thread, approximate under concurrent use
    /// (concurrent counts may be lost, and a sampled call's switch to the GPU may be undone).
    pub cpu_runs: u64,
    /// Ops completed on the GPU.
    pub gpu_runs: u64,
    /// Ops that failed on the GPU and were re-run on the CPU.
    pub fallbacks: u64,
}

impl Engine {
    /// The engine's dispatch policy (`Cpu` on the CPU engine).
    pub fn dispatch_policy(&self) -> DispatchPolicy {
        self.gpu_raw()
            .map_or(DispatchPolicy::Cpu, |g| g.dispatch.policy())
    }

    /// Sets the dispatch policy. `Err(Unsupported)` asking the CPU engine for `Auto` or `Gpu`.
    pub fn set_dispatch_policy(&self, policy: DispatchPolicy) -> Result<()> {
        match self.gpu_raw() {
            Some(g) => {
                g.dispatch.policy.store(policy.code(), Ordering::Relaxed);
                g.dispatch.policy_changes.fetch_add(1, Ordering::Release);
                Ok(())
            }
            None if policy == DispatchPolicy::Cpu => Ok(()),
            None => Err(Error::Unsupported(format!(
                "{policy:?} dispatch needs a GPU engine"
            ))),
        }
    }

    /// How many host-facing ops ran on each backend, and how many fell back (all zero on the
    /// CPU engine, which has nothing to choose between).
    pub fn dispatch_stats(&self) -> DispatchStats {
        self.gpu_raw().map_or_else(DispatchStats::default, |g| {
            let s = &g.dispatch.stats;
            let v = |i: usize| s[i].load(Ordering::Relaxed);
            DispatchStats {
                cpu_runs: v(0),
                gpu_runs: v(1),
                fallbacks: v(2),
            }
        })
    }

    /// Measures both backends now (about a second on a software adapter), installs the result as
    /// the `Auto` model and writes it to the calibration cache (unless disabled). Also the way
    /// back to the GPU for an `Auto` engine whose lazy calibration failed (see the module docs).
    ///
    /// Errors: `Unsupported` on the CPU engine or under the `Cpu` policy; a GPU fault while
    /// measuring (`DeviceLost` when the device was lost before or while measuring) is returned,
    /// and then nothing is installed or cached: the current model stays.
    pub fn calibrate(&self) -> Result<Calibration> {
        let g = self.usable_gpu("calibrate")?;
        let Some(_one) = g.dispatch.lock_calibrating(g.id) else {
            return Err(Error::Unsupported(
                "calibrate called while this thread calibrates".into(),
            ));
        };
        let c = measure(self, g)?;
        c.save_cached();
        g.dispatch.retry.disarm();
        g.dispatch.install(c.clone());
        Ok(c)
    }

    /// The calibration in use: `None` on the CPU engine, before the first `Auto` decision,
    /// [`Engine::calibrate`] or [`Engine::set_calibration`], and while a failed lazy
    /// calibration leaves `Auto` on the CPU ([`EngineInfo::calibration_failed`](crate::EngineInfo)):
    /// its stand-in model is no measurement, and copied to another engine with
    /// `set_calibration` it would pin that one to the CPU.
    pub fn calibration(&self) -> Option<Calibration> {
        let c = self.gpu_raw()?.dispatch.installed()?;
        (!crate::recalibrate::is_stand_in(&c)).then(|| (*c).clone())
    }

    /// Uses `c` as the `Auto` model (e.g. one measured earlier); nothing is measured or cached.
    /// A CPU engine has no choice to make and keeps nothing.
    ///
    /// Errors: a bandwidth that is not a positive finite number, or a negative, NaN or infinite
    /// cost, is `Error::CpuRef(InvalidArgument { op: "set_calibration", .. })` (such a model
    /// would send every op to one backend whatever its size); the current model stays.
    pub fn set_calibration(&self, c: Calibration) -> Result<()> {
        if let Some((what, reason)) = c.invalid() {
            return Err(Error::from(bitnet_cpu_ref::Error::InvalidArgument {
                op: "set_calibration",
                what,
                reason,
            }));
        }
        if let Some(g) = self.gpu_raw() {
            g.dispatch.retry.disarm();
            g.dispatch.install(c);
        }
        Ok(())
    }

    /// The backend a host-facing op of size `w` would run on now (calibrating first if `Auto`
    /// has no model yet).
    pub fn choose_backend(&self, w: &Workload) -> BackendKind {
        match self.gpu_context() {
            None => BackendKind::Cpu,
            Some(g) => self.choose(g, w),
        }
    }

    fn choose(&self, g: &Gpu, w: &Workload) -> BackendKind {
        match g.dispatch.policy() {
            DispatchPolicy::Cpu => BackendKind::Cpu,
            DispatchPolicy::Gpu => BackendKind::Gpu,
            DispatchPolicy::Auto => {
                if g.dispatch.ready.load(Ordering::Acquire) == 0 {
                    self.load_or_calibrate(g);
                }
                let (cpu, gpu) = g.dispatch.predict(w);
                if gpu < cpu && !g.dispatch.unfit(w) {
                    BackendKind::Gpu
                } else {
                    BackendKind::Cpu
                }
            }
        }
    }

    /// The lazy calibration of the first `Auto` decision: the cache, else a measurement; if
    /// measuring fails the GPU is not trusted (every prediction says CPU), that is logged, and a
    /// background retry is armed (`recalibrate.rs`): a measurement costs about a second, which no
    /// caller's op should wait for again.
    #[cold]
    #[inline(never)]
    fn load_or_calibrate(&self, g: &Gpu) {
        // Re-entered from code run while this thread calibrates (a logger): no model yet.
        let Some(_one) = g.dispatch.lock_calibrating(g.id) else {
            return;
        };
        if g.dispatch.ready.load(Ordering::Acquire) != 0 {
            return;
        }
        let key = Calibration::key_of(g);
        let c = match Calibration::load_cached(&key) {
            Some(c) => c,
            None => match measure(self, g) {
                Ok(c) => {
                    c.save_cached();
                    c
                }
                Err(e) => self.calibration_failed(g, key, &e),
            },
        };
        g.dispatch.install(c);
    }

    /// A GPU context that takes new work, or `Err` naming `what`.
    fn usable_gpu(&self, what: &str) -> Result<&Gpu> {
        let g = self
            .gpu_raw()
            .filter(|g| g.dispatch.policy() != DispatchPolicy::Cpu);
        let g = g.ok_or_else(|| {
            Error::Unsupported(format!("{what} needs a GPU engine whose policy is not Cpu"))
        })?;
        g.check_health()?;
        Ok(g)
    }
}

#[cfg(test)]
#[path = "dispatch_tests.rs"]
mod tests;
