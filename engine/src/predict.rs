//! The dispatch model of one GPU engine ([`Dispatcher`]): policy, the calibrated time model in
//! atomics (read lock-free on every decision), run-time adaptation from measured times, the
//! per-class "CPU wins below" thresholds that make small ops a one-compare decision, and the
//! dispatch counters.

use std::sync::atomic::{AtomicU8, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use crate::calibrate::{Calibration, OpClass};
use crate::dispatch::DispatchPolicy;
use crate::workload::Workload;

/// The dispatch state of a GPU engine.
pub(crate) struct Dispatcher {
    pub(crate) policy: AtomicU8,
    /// 0: not calibrated; 1: model loaded.
    pub(crate) ready: AtomicU8,
    pub(crate) calibration: Mutex<Option<Arc<Calibration>>>,
    /// Serializes calibration runs.
    pub(crate) calibrating: Mutex<()>,
    /// Per class: CPU fixed, CPU per unit, GPU fixed, GPU per unit (f64 bits).
    pub(crate) model: [[AtomicU64; 4]; 4],
    /// Seconds per uploaded / read-back byte (f64 bits).
    pub(crate) transfer: [AtomicU64; 2],
    /// Per class and backend (CPU, GPU): measured / predicted, moving average (f64 bits).
    pub(crate) adapt: [[AtomicU64; 2]; 4],
    /// Per class: up to this many units the CPU wins even if the GPU moved no data (so the hot
    /// path of small ops is one compare); derived from `model` and `adapt`.
    pub(crate) cpu_below: [AtomicU64; 4],
    pub(crate) stats: [AtomicU64; 3],
    /// The background retry of a failed lazy calibration (`recalibrate.rs`).
    pub(crate) retry: crate::recalibrate::Retry,
}

fn load(a: &AtomicU64) -> f64 {
    f64::from_bits(a.load(Ordering::Relaxed))
}

fn store(a: &AtomicU64, v: f64) {
    a.store(v.to_bits(), Ordering::Relaxed);
}

thread_local! {
    /// The GPU context id whose `calibrating` lock this thread holds (0: none).
    static HOLDING: std::cell::Cell<u64> = const { std::cell::Cell::new(0) };
}

/// The `calibrating` lock, held by this thread (released on drop).
pub(crate) struct CalibratingGuard<'a> {
    _lock: std::sync::MutexGuard<'a, ()>,
    /// What this thread held before (restored on drop).
    previous: u64,
}

impl Drop for CalibratingGuard<'_> {
    fn drop(&mut self) {
        HOLDING.with(|h| h.set(self.previous));
    }
}

impl Dispatcher {
    /// The `calibrating` lock of context `id`; `None` if this thread already holds it (code the
    /// engine runs while calibrating, an application's logger, re-entered the engine).
    pub(crate) fn lock_calibrating(&self, id: u64) -> Option<CalibratingGuard<'_>> {
        if HOLDING.with(|h| h.get()) == id {
            return None;
        }
        let g = self.calibrating.lock().unwrap_or_else(|e| e.into_inner());
        Some(CalibratingGuard {
            _lock: g,
            previous: HOLDING.with(|h| h.replace(id)),
        })
    }

    /// A dispatcher with `policy` (overridden by `BITNET_DISPATCH`).
    pub(crate) fn new(policy: DispatchPolicy) -> Dispatcher {
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
            retry: Default::default(),
        }
    }

    /// The current policy.
    #[inline]
    pub(crate) fn policy(&self) -> DispatchPolicy {
        DispatchPolicy::from_code(self.policy.load(Ordering::Relaxed))
    }

    /// Installs a calibration as the prediction model (adaptation restarts from it).
    pub(crate) fn install(&self, c: Calibration) {
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
    pub(crate) fn raw(&self, w: &Workload) -> (f64, f64) {
        let m = &self.model[w.class.index()];
        let units = w.units() as f64;
        let cpu = load(&m[0]) + load(&m[1]) * units;
        let moved = w.upload_bytes() * load(&self.transfer[0])
            + w.download_bytes() * load(&self.transfer[1]);
        (cpu, load(&m[2]) + load(&m[3]) * units + moved)
    }

    /// Recomputes `cpu_below[class]`: the units up to which the adapted CPU time is below the
    /// adapted GPU time with no transfers at all (transfers only add to the GPU's time).
    pub(crate) fn update_threshold(&self, class: OpClass) {
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
    pub(crate) fn predict(&self, w: &Workload) -> (f64, f64) {
        let (c, g) = self.raw(w);
        let a = &self.adapt[w.class.index()];
        (c * load(&a[0]), g * load(&a[1]))
    }

    /// Folds one measured time of `backend` (0 CPU, 1 GPU) into the adaptation factor.
    pub(crate) fn observe(&self, w: &Workload, backend: usize, seconds: f64) {
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

    pub(crate) fn count(&self, i: usize) {
        self.stats[i].fetch_add(1, Ordering::Relaxed);
    }

    /// Counts a CPU run without a locked instruction (the CPU path of small ops must stay within
    /// nanoseconds of cpu-ref): exact on one thread, may miss counts under concurrent use.
    /// Returns the new count (which also picks the calls that are timed).
    #[inline]
    pub(crate) fn count_cpu(&self) -> u64 {
        let c = &self.stats[0];
        let n = c.load(Ordering::Relaxed).wrapping_add(1);
        c.store(n, Ordering::Relaxed);
        n
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::calibrate::Cost;

    /// GPU: 100 us per call, 0.1 ns per unit; CPU: 1 us per call, 1 ns per unit.
    fn model() -> Calibration {
        Calibration {
            key: "unit test".into(),
            upload_bytes_per_s: 1e12,
            download_bytes_per_s: 1e12,
            cpu: [Cost {
                fixed_s: 1e-6,
                per_unit_s: 1e-9,
            }; 4],
            gpu: [Cost {
                fixed_s: 1e-4,
                per_unit_s: 1e-10,
            }; 4],
        }
    }

    fn gpu_wins(d: &Dispatcher, w: &Workload) -> bool {
        let (cpu, gpu) = d.predict(w);
        gpu < cpu
    }

    #[test]
    fn thresholds_make_small_ops_cpu_and_follow_adaptation() {
        let d = Dispatcher::new(DispatchPolicy::Auto);
        d.install(model());
        // Crossover without transfers: 1e-6 + 1e-9 u = 1e-4 + 1e-10 u  =>  u = 110_000.
        let below = d.cpu_below[OpClass::LinearGemm.index()].load(Ordering::Relaxed);
        assert_eq!(below, 110_000);
        let big = Workload::bitlinear(64, 1024, 1024, true);
        assert!(gpu_wins(&d, &big));
        // The GPU keeps measuring 20x slower than predicted: the decision flips to the CPU.
        let (_, predicted) = d.raw(&big);
        for _ in 0..20 {
            d.observe(&big, 1, 20.0 * predicted);
        }
        assert!(!gpu_wins(&d, &big));
        assert!(d.cpu_below[OpClass::LinearGemm.index()].load(Ordering::Relaxed) > below);
        // Reinstalling the calibration restarts the adaptation.
        d.install(model());
        assert!(gpu_wins(&d, &big));
    }

    #[test]
    fn policy_names_parse() {
        assert_eq!(DispatchPolicy::parse(" GPU "), Some(DispatchPolicy::Gpu));
        assert_eq!(DispatchPolicy::parse("auto"), Some(DispatchPolicy::Auto));
        assert_eq!(DispatchPolicy::parse("Cpu"), Some(DispatchPolicy::Cpu));
        assert_eq!(DispatchPolicy::parse("fast"), None);
    }
}
