//! Automatic CPU/GPU dispatch of the host-facing ops, with fallback to the CPU on GPU faults.
//!
//! **Which ops.** The ops that take and return host data — the cpu-ref-compatible BitNet methods
//! (`quantize_weights`, `quantize_activations`, `bitlinear*`), [`crate::Linear`],
//! [`crate::BatchingLinear`] and streaming — choose a backend per call. Ops on resident
//! [`crate::Tensor`]s run where their tensors live (device tensors on the GPU, host tensors on the
//! CPU), so chained ops never move data behind the caller's back.
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
//! run time: measured times of the chosen backend (every call on the GPU, one call in
//! [`SAMPLE_EVERY`] on the CPU, so the CPU path stays within a few nanoseconds of calling cpu-ref)
//! scale that backend's prediction for the op class (moving average of measured / predicted).
//!
//! **Faults** (see `fault.rs`): a GPU failure other than bad input re-runs the op on the CPU from
//! the caller's host inputs — the caller gets the correct result and a warning is logged. A lost
//! device is never used again: every later op of the engine runs on the CPU.

use std::cell::Cell;
use std::sync::atomic::{AtomicU8, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use crate::calibrate::{Calibration, GEMV_ROWS, OpClass, measure};
use crate::context::Gpu;
use crate::engine::{BackendKind, Engine};
use crate::error::{Error, Result};
use crate::fault::{is_capability_error, is_gpu_fault};

/// Environment variable overriding every new engine's policy: `auto`, `cpu` or `gpu`.
pub const DISPATCH_ENV: &str = "BITNET_DISPATCH";
/// One CPU-path call in this many is timed to adapt the predictions.
pub const SAMPLE_EVERY: u32 = 32;

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
    /// The policy named by `BITNET_DISPATCH`, if set to a valid value (an invalid one is logged).
    pub fn from_env() -> Option<DispatchPolicy> {
        let v = std::env::var(DISPATCH_ENV).ok()?;
        match v.trim().to_ascii_lowercase().as_str() {
            "auto" => Some(DispatchPolicy::Auto),
            "cpu" => Some(DispatchPolicy::Cpu),
            "gpu" => Some(DispatchPolicy::Gpu),
            other => {
                log::warn!(
                    "bitnet-wgpu: ignoring {DISPATCH_ENV}={other:?} (want auto, cpu or gpu)"
                );
                None
            }
        }
    }

    const fn code(self) -> u8 {
        self as u8
    }

    fn from_code(c: u8) -> DispatchPolicy {
        match c {
            0 => DispatchPolicy::Auto,
            1 => DispatchPolicy::Cpu,
            _ => DispatchPolicy::Gpu,
        }
    }
}

/// How many host-facing ops ran where, and how many fell back to the CPU after a GPU fault.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DispatchStats {
    /// Ops run on the CPU by choice (policy or prediction).
    pub cpu_runs: u64,
    /// Ops completed on the GPU.
    pub gpu_runs: u64,
    /// Ops that failed on the GPU and were re-run on the CPU.
    pub fallbacks: u64,
}

/// The size of one host-facing op, as the dispatch layer sees it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Workload {
    /// The op class.
    pub class: OpClass,
    /// Units of work (elements, or `M·N·K`).
    pub units: f64,
    /// Bytes the GPU path must upload.
    pub upload_bytes: f64,
    /// Bytes the GPU path must read back.
    pub download_bytes: f64,
}

impl Workload {
    /// Weight quantization of `[n, k]` f32 weights.
    pub fn quantize_weights(n: usize, k: usize) -> Workload {
        let e = (n * k) as f64;
        Workload {
            class: OpClass::QuantizeWeights,
            units: e,
            upload_bytes: 4.0 * e,
            download_bytes: e / 4.0,
        }
    }

    /// Activation quantization of `[m, k]` f32 activations.
    pub fn quantize_activations(m: usize, k: usize) -> Workload {
        let e = (m * k) as f64;
        let download_bytes = e + 4.0 * m as f64;
        Workload {
            class: OpClass::QuantizeActivations,
            units: e,
            upload_bytes: 4.0 * e,
            download_bytes,
        }
    }

    /// BitLinear of `[m, k]` activations with `[n, k]` weights (uploaded per call unless
    /// `weights_resident`).
    pub fn bitlinear(m: usize, n: usize, k: usize, weights_resident: bool) -> Workload {
        let class = if m <= GEMV_ROWS {
            OpClass::LinearGemv
        } else {
            OpClass::LinearGemm
        };
        let weights = if weights_resident {
            0.0
        } else {
            (n * k) as f64 / 4.0
        };
        Workload {
            class,
            units: (m * n * k) as f64,
            upload_bytes: 4.0 * (m * k) as f64 + weights,
            download_bytes: 4.0 * (m * n) as f64,
        }
    }
}

/// The dispatch state of a GPU engine.
pub(crate) struct Dispatcher {
    policy: AtomicU8,
    /// 0: not calibrated; 1: model loaded.
    ready: AtomicU8,
    calibration: Mutex<Option<Arc<Calibration>>>,
    /// Serializes calibration runs.
    calibrating: Mutex<()>,
    /// Per class: CPU fixed, CPU per unit, GPU fixed, GPU per unit (f64 bits).
    model: [[AtomicU64; 4]; 4],
    /// Seconds per uploaded / read-back byte (f64 bits).
    transfer: [AtomicU64; 2],
    /// Per class and backend (CPU, GPU): measured / predicted, moving average (f64 bits).
    adapt: [[AtomicU64; 2]; 4],
    stats: [AtomicU64; 3],
}

fn load(a: &AtomicU64) -> f64 {
    f64::from_bits(a.load(Ordering::Relaxed))
}

fn store(a: &AtomicU64, v: f64) {
    a.store(v.to_bits(), Ordering::Relaxed);
}

thread_local! {
    /// Per-thread call counter for sampling CPU-path timings (no shared cache line).
    static CALLS: Cell<u32> = const { Cell::new(0) };
}

impl Dispatcher {
    /// A dispatcher with `policy` (overridden by `BITNET_DISPATCH`).
    pub fn new(policy: DispatchPolicy) -> Dispatcher {
        let policy = DispatchPolicy::from_env().unwrap_or(policy);
        let one = || AtomicU64::new(1f64.to_bits());
        Dispatcher {
            policy: AtomicU8::new(policy.code()),
            ready: AtomicU8::new(0),
            calibration: Mutex::new(None),
            calibrating: Mutex::new(()),
            model: Default::default(),
            transfer: Default::default(),
            adapt: std::array::from_fn(|_| [one(), one()]),
            stats: Default::default(),
        }
    }

    /// The current policy.
    pub fn policy(&self) -> DispatchPolicy {
        DispatchPolicy::from_code(self.policy.load(Ordering::Relaxed))
    }

    /// Installs a calibration as the prediction model (adaptation restarts from it).
    fn install(&self, c: Calibration) {
        for class in OpClass::ALL {
            let (i, m) = (class.index(), &self.model[class.index()]);
            store(&m[0], c.cpu[i].fixed_s);
            store(&m[1], c.cpu[i].per_unit_s);
            store(&m[2], c.gpu[i].fixed_s);
            store(&m[3], c.gpu[i].per_unit_s);
            self.adapt[i].iter().for_each(|a| store(a, 1.0));
        }
        store(&self.transfer[0], 1.0 / c.upload_bytes_per_s.max(1.0));
        store(&self.transfer[1], 1.0 / c.download_bytes_per_s.max(1.0));
        *self.calibration.lock().unwrap_or_else(|e| e.into_inner()) = Some(Arc::new(c));
        self.ready.store(1, Ordering::Release);
    }

    /// Unadapted predictions `(cpu_s, gpu_s)` for `w`.
    fn raw(&self, w: &Workload) -> (f64, f64) {
        let m = &self.model[w.class.index()];
        let cpu = load(&m[0]) + load(&m[1]) * w.units;
        let moved =
            w.upload_bytes * load(&self.transfer[0]) + w.download_bytes * load(&self.transfer[1]);
        (cpu, load(&m[2]) + load(&m[3]) * w.units + moved)
    }

    /// Adapted predictions `(cpu_s, gpu_s)`.
    fn predict(&self, w: &Workload) -> (f64, f64) {
        let (c, g) = self.raw(w);
        let a = &self.adapt[w.class.index()];
        (c * load(&a[0]), g * load(&a[1]))
    }

    /// Folds one measured time of `backend` (0 CPU, 1 GPU) into the adaptation factor.
    fn observe(&self, w: &Workload, backend: usize, seconds: f64) {
        let raw = if backend == 0 {
            self.raw(w).0
        } else {
            self.raw(w).1
        };
        if self.ready.load(Ordering::Acquire) == 0 || raw <= 0.0 {
            return;
        }
        let a = &self.adapt[w.class.index()][backend];
        store(a, (0.8 * load(a) + 0.2 * seconds / raw).clamp(0.05, 20.0));
    }

    fn count(&self, i: usize) {
        self.stats[i].fetch_add(1, Ordering::Relaxed);
    }
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
                Ok(())
            }
            None if policy == DispatchPolicy::Cpu => Ok(()),
            None => Err(Error::Unsupported(format!(
                "{policy:?} dispatch needs a GPU engine"
            ))),
        }
    }

    /// How many host-facing ops ran on each backend, and how many fell back.
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
    /// the `Auto` model and writes it to the calibration cache (unless disabled).
    pub fn calibrate(&self) -> Result<Calibration> {
        let g = self.usable_gpu("calibrate")?;
        let _one = g
            .dispatch
            .calibrating
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        let c = measure(self, g)?;
        c.save_cached();
        g.dispatch.install(c.clone());
        Ok(c)
    }

    /// The calibration in use (None before the first `Auto` decision or `calibrate`).
    pub fn calibration(&self) -> Option<Calibration> {
        let g = self.gpu_raw()?;
        let c = g
            .dispatch
            .calibration
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        c.as_deref().cloned()
    }

    /// Uses `c` as the `Auto` model (e.g. one measured earlier); nothing is measured or cached.
    pub fn set_calibration(&self, c: Calibration) {
        if let Some(g) = self.gpu_raw() {
            g.dispatch.install(c);
        }
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
                if gpu < cpu {
                    BackendKind::Gpu
                } else {
                    BackendKind::Cpu
                }
            }
        }
    }

    /// The lazy calibration of the first `Auto` decision: the cache, else a measurement; if
    /// measuring fails the GPU is not trusted (every prediction says CPU) and that is logged.
    fn load_or_calibrate(&self, g: &Gpu) {
        let _one = g
            .dispatch
            .calibrating
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        if g.dispatch.ready.load(Ordering::Acquire) != 0 {
            return;
        }
        let key = Calibration::key_of(g);
        let c = Calibration::load_cached(&key).map_or_else(
            || {
                measure(self, g)
                    .inspect(Calibration::save_cached)
                    .unwrap_or_else(|e| {
                        log::warn!(
                            "bitnet-wgpu: calibration failed ({e}); Auto dispatch uses the CPU"
                        );
                        let never = crate::calibrate::Cost {
                            fixed_s: f64::MAX / 4.0,
                            per_unit_s: 0.0,
                        };
                        Calibration {
                            key,
                            upload_bytes_per_s: 1.0,
                            download_bytes_per_s: 1.0,
                            cpu: [Default::default(); 4],
                            gpu: [never; 4],
                        }
                    })
            },
            |c| c,
        );
        g.dispatch.install(c);
    }

    /// A GPU context that takes new work, or `Err` naming `what`.
    fn usable_gpu(&self, what: &str) -> Result<&Gpu> {
        match self.gpu_raw() {
            Some(g) if g.is_lost() => Err(g.check_health().unwrap_err()),
            Some(g) if g.dispatch.policy() != DispatchPolicy::Cpu => Ok(g),
            _ => Err(Error::Unsupported(format!(
                "{what} needs a GPU engine whose policy is not Cpu"
            ))),
        }
    }

    /// Runs a host-facing op named `op` of size `w` on the chosen backend: `cpu` runs cpu-ref on
    /// the caller's host inputs; `gpu` the GPU path. A GPU fault re-runs `cpu` (see the module
    /// docs); bad input errors are returned as they are (the CPU would return the same).
    pub(crate) fn dispatched<T>(
        &self,
        op: &'static str,
        w: &Workload,
        cpu: impl FnOnce() -> Result<T>,
        gpu: impl FnOnce() -> Result<T>,
    ) -> Result<T> {
        let Some(g) = self.gpu_context() else {
            // The CPU engine, a `Cpu` policy or a lost device: cpu-ref, counted on GPU engines.
            if let Some(g) = self.gpu_raw() {
                g.dispatch.count(0);
            }
            return cpu();
        };
        let d = &g.dispatch;
        if self.choose(g, w) == BackendKind::Cpu {
            d.count(0);
            let sample = CALLS.with(|c| {
                c.set(c.get().wrapping_add(1));
                c.get() % SAMPLE_EVERY == 0
            });
            if !sample {
                return cpu();
            }
            let t = Instant::now();
            let r = cpu();
            d.observe(w, 0, t.elapsed().as_secs_f64());
            return r;
        }
        let t = Instant::now();
        match gpu() {
            Ok(v) => {
                d.count(1);
                d.observe(w, 1, t.elapsed().as_secs_f64());
                Ok(v)
            }
            Err(e)
                if is_gpu_fault(&e)
                    || (is_capability_error(&e) && d.policy() == DispatchPolicy::Auto) =>
            {
                let e = g.explain(e);
                log::warn!("bitnet-wgpu: {op} failed on the GPU ({e}); re-running it on the CPU");
                if matches!(e, Error::OutOfMemory { .. }) {
                    g.pool.trim();
                }
                d.count(2);
                cpu()
            }
            Err(e) => Err(e),
        }
    }
}
