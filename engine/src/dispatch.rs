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
    /// Ops run on the CPU by choice (policy, prediction, lost device). Counted without locking
    /// (to keep the CPU path cheap): exact on one thread, a lower bound under concurrent use.
    pub cpu_runs: u64,
    /// Ops completed on the GPU.
    pub gpu_runs: u64,
    /// Ops that failed on the GPU and were re-run on the CPU.
    pub fallbacks: u64,
}

/// The size of one host-facing op, as the dispatch layer sees it: integers only, so building one
/// on the CPU path costs nothing measurable (the float model is evaluated only when needed).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Workload {
    /// The op class.
    pub class: OpClass,
    /// Rows (`M`, or `N` for weight quantization).
    pub rows: usize,
    /// Output features (`N`; 1 for quantization).
    pub n: usize,
    /// Input features (`K`).
    pub k: usize,
    /// Bytes the GPU path uploads beyond the f32 rows (e.g. weights that are not resident).
    pub extra_upload: usize,
}

impl Workload {
    /// Weight quantization of `[n, k]` f32 weights.
    #[inline]
    pub fn quantize_weights(n: usize, k: usize) -> Workload {
        let class = OpClass::QuantizeWeights;
        Workload {
            class,
            rows: n,
            n: 1,
            k,
            extra_upload: 0,
        }
    }

    /// Activation quantization of `[m, k]` f32 activations.
    #[inline]
    pub fn quantize_activations(m: usize, k: usize) -> Workload {
        let class = OpClass::QuantizeActivations;
        Workload {
            class,
            rows: m,
            n: 1,
            k,
            extra_upload: 0,
        }
    }

    /// BitLinear of `[m, k]` activations with `[n, k]` weights (uploaded per call unless
    /// `weights_resident`).
    #[inline]
    pub fn bitlinear(m: usize, n: usize, k: usize, weights_resident: bool) -> Workload {
        let class = if m <= GEMV_ROWS {
            OpClass::LinearGemv
        } else {
            OpClass::LinearGemm
        };
        let extra_upload = if weights_resident {
            0
        } else {
            n.saturating_mul(k) / 4
        };
        Workload {
            class,
            rows: m,
            n,
            k,
            extra_upload,
        }
    }

    /// Units of work: elements (quantization) or `M·N·K` (BitLinear).
    #[inline]
    pub fn units(&self) -> u64 {
        (self.rows as u64)
            .saturating_mul(self.n as u64)
            .saturating_mul(self.k as u64)
    }

    /// Bytes the GPU path uploads.
    pub fn upload_bytes(&self) -> f64 {
        4.0 * (self.rows * self.k) as f64 + self.extra_upload as f64
    }

    /// Bytes the GPU path reads back.
    pub fn download_bytes(&self) -> f64 {
        let (rows, elems) = (self.rows as f64, (self.rows * self.k) as f64);
        match self.class {
            OpClass::QuantizeWeights => elems / 4.0 + 4.0,
            OpClass::QuantizeActivations => elems + 4.0 * rows,
            OpClass::LinearGemv | OpClass::LinearGemm => 4.0 * rows * self.n as f64,
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
    /// Per class: up to this many units the CPU wins even if the GPU moved no data (so the hot
    /// path of small ops is one compare); derived from `model` and `adapt`.
    cpu_below: [AtomicU64; 4],
    stats: [AtomicU64; 3],
}

fn load(a: &AtomicU64) -> f64 {
    f64::from_bits(a.load(Ordering::Relaxed))
}

fn store(a: &AtomicU64, v: f64) {
    a.store(v.to_bits(), Ordering::Relaxed);
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
            cpu_below: Default::default(),
            stats: Default::default(),
        }
    }

    /// The current policy.
    #[inline]
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
        OpClass::ALL
            .iter()
            .for_each(|&class| self.update_threshold(class));
        *self.calibration.lock().unwrap_or_else(|e| e.into_inner()) = Some(Arc::new(c));
        self.ready.store(1, Ordering::Release);
    }

    /// Unadapted predictions `(cpu_s, gpu_s)` for `w`.
    fn raw(&self, w: &Workload) -> (f64, f64) {
        let m = &self.model[w.class.index()];
        let units = w.units() as f64;
        let cpu = load(&m[0]) + load(&m[1]) * units;
        let moved = w.upload_bytes() * load(&self.transfer[0])
            + w.download_bytes() * load(&self.transfer[1]);
        (cpu, load(&m[2]) + load(&m[3]) * units + moved)
    }

    /// Recomputes `cpu_below[class]`: the units up to which the adapted CPU time is below the
    /// adapted GPU time with no transfers at all (transfers only add to the GPU's time).
    fn update_threshold(&self, class: OpClass) {
        let (m, a) = (&self.model[class.index()], &self.adapt[class.index()]);
        let (ac, ag) = (load(&a[0]), load(&a[1]));
        // cpu - gpu = gap + slope · units
        let gap = load(&m[0]) * ac - load(&m[2]) * ag;
        let slope = load(&m[1]) * ac - load(&m[3]) * ag;
        let below = match (gap <= 0.0, slope <= 0.0) {
            (true, true) => u64::MAX, // the CPU always wins
            (true, false) => (-gap / slope).floor().min(9e18) as u64, // the GPU wins above
            (false, _) => 0,          // evaluate every call
        };
        self.cpu_below[class.index()].store(below, Ordering::Relaxed);
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
        self.update_threshold(w.class);
    }

    fn count(&self, i: usize) {
        self.stats[i].fetch_add(1, Ordering::Relaxed);
    }

    /// Counts a CPU run without a locked instruction (the CPU path of small ops must stay within
    /// nanoseconds of cpu-ref): exact on one thread, may miss counts under concurrent use.
    /// Returns the new count (which also picks the calls that are timed).
    #[inline]
    fn count_cpu(&self) -> u64 {
        let c = &self.stats[0];
        let n = c.load(Ordering::Relaxed).wrapping_add(1);
        c.store(n, Ordering::Relaxed);
        n
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
    #[cold]
    #[inline(never)]
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
    ///
    /// The CPU route is the hot path of small ops: inlined, a few loads and flops, no locked
    /// instruction; timing samples and the GPU route are out of line.
    #[inline]
    pub(crate) fn dispatched<T>(
        &self,
        op: &'static str,
        w: &Workload,
        cpu: impl FnOnce() -> Result<T>,
        gpu: impl FnOnce() -> Result<T>,
    ) -> Result<T> {
        match self.route(w) {
            Route::Cpu => cpu(),
            Route::Sampled(g) => sampled(g, w, cpu),
            Route::Gpu(g) => on_gpu(g, op, w, cpu, gpu),
        }
    }

    /// Where a host-facing op of size `w` runs now (counting CPU runs).
    #[inline]
    fn route(&self, w: &Workload) -> Route<'_> {
        let Some(g) = self.gpu_raw() else {
            return Route::Cpu;
        };
        let d = &g.dispatch;
        let policy = d.policy.load(Ordering::Relaxed);
        let to_gpu = if policy == DispatchPolicy::Auto.code() {
            !g.is_lost() && self.auto_prefers_gpu(g, w)
        } else {
            policy == DispatchPolicy::Gpu.code() && !g.is_lost()
        };
        if to_gpu {
            return Route::Gpu(g);
        }
        if d.count_cpu() % u64::from(SAMPLE_EVERY) == 0 {
            Route::Sampled(g)
        } else {
            Route::Cpu
        }
    }

    /// The `Auto` decision: whether the GPU is predicted faster for `w` (small ops: one compare).
    #[inline]
    fn auto_prefers_gpu(&self, g: &Gpu, w: &Workload) -> bool {
        let d = &g.dispatch;
        if d.ready.load(Ordering::Acquire) == 0 {
            self.load_or_calibrate(g);
        }
        if w.units() <= d.cpu_below[w.class.index()].load(Ordering::Relaxed) {
            return false;
        }
        let (cpu, gpu) = d.predict(w);
        gpu < cpu
    }
}

/// Where one host-facing op runs.
enum Route<'a> {
    /// cpu-ref, untimed.
    Cpu,
    /// cpu-ref, timed to adapt the model.
    Sampled(&'a Gpu),
    /// The GPU path (CPU on a fault).
    Gpu(&'a Gpu),
}

/// A timed CPU run (one in [`SAMPLE_EVERY`]).
#[inline(never)]
fn sampled<T>(g: &Gpu, w: &Workload, cpu: impl FnOnce() -> Result<T>) -> Result<T> {
    let t = Instant::now();
    let r = cpu();
    g.dispatch.observe(w, 0, t.elapsed().as_secs_f64());
    r
}

/// The GPU route: run `gpu`; on a GPU fault (or, under `Auto`, a device limit) re-run `cpu`.
#[inline(never)]
fn on_gpu<T>(
    g: &Gpu,
    op: &'static str,
    w: &Workload,
    cpu: impl FnOnce() -> Result<T>,
    gpu: impl FnOnce() -> Result<T>,
) -> Result<T> {
    let d = &g.dispatch;
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
