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
    /// Policy changes so far: a GPU run that saw it move ran (some of) its op on host tensors,
    /// even where the policy came back before the run ended.
    pub(crate) policy_changes: AtomicU64,
    /// 0: not calibrated; 1: model loaded.
    pub(crate) ready: AtomicU8,
    pub(crate) calibration: Mutex<Option<Arc<Calibration>>>,
    /// Serializes calibration runs.
    pub(crate) calibrating: Mutex<()>,
    /// Per class: CPU fixed, CPU per unit, GPU fixed, GPU per unit (f64 bits).
    pub(crate) model: [[AtomicU64; 4]; 4],
    /// Seconds per uploaded / read-back byte (f64 bits).
    pub(crate) transfer: [AtomicU64; 2],
    /// Per class, size bucket ([`size_bucket`]) and backend (CPU, GPU): measured / predicted,
    /// moving average (f64 bits). Per size, because one factor learned from whatever sizes ran
    /// mispriced the others (after small sampled GEMMs a prefill GEMM's CPU time was predicted
    /// 6.4x too short).
    pub(crate) adapt: [[[AtomicU64; 2]; SIZE_BUCKETS]; 4],
    /// Per class: up to this many units the CPU wins even if the GPU moved no data (so the hot
    /// path of small ops is one compare); derived from `model` and `adapt`.
    pub(crate) cpu_below: [AtomicU64; 4],
    pub(crate) stats: [AtomicU64; 3],
    /// Calls that asked for a probe of the other backend (one in [`PROBE_EVERY`] gets one).
    pub(crate) probes: AtomicU64,
    /// Shapes the device could not take ([`Dispatcher::mark_unfit`]), and whether there are any
    /// (so that decisions skip the lock until there are).
    pub(crate) unfit: Mutex<Vec<Workload>>,
    pub(crate) any_unfit: std::sync::atomic::AtomicBool,
    /// The background retry of a failed lazy calibration (`recalibrate.rs`).
    pub(crate) retry: crate::recalibrate::Retry,
}

/// Range of the adaptation factors (measured / calibrated time).
const ADAPT_MIN: f64 = 0.01;
const ADAPT_MAX: f64 = 100.0;

/// Size buckets of the adaptation factors: units below 16, 16-255, 256-4095, ..., 16^7 and up.
pub(crate) const SIZE_BUCKETS: usize = 8;

/// The adaptation bucket of an op of `units` (a factor of 16 per bucket).
pub(crate) fn size_bucket(units: u64) -> usize {
    (units.max(1).ilog2() as usize / 4).min(SIZE_BUCKETS - 1)
}

/// The first and last units of bucket `b`.
fn bucket_units(b: usize) -> (u64, u64) {
    let first = if b == 0 { 0 } else { 1u64 << (4 * b) };
    let last = if b + 1 == SIZE_BUCKETS {
        u64::MAX
    } else {
        (1u64 << (4 * (b + 1))) - 1
    };
    (first, last)
}

/// Most shapes [`Dispatcher::mark_unfit`] remembers.
pub(crate) const UNFIT_MAX: usize = 64;

/// Whether a shape the device could not take (`u`) means it cannot take `w` either.
fn covers(u: &Workload, w: &Workload) -> bool {
    // Quantized input rows bind a quarter of f32 rows' bytes: an f32 shape's limit says
    // nothing about them.
    let input_no_smaller = u.quantized_input || !w.quantized_input;
    u.class == w.class && u.n == w.n && u.k == w.k && w.rows >= u.rows && input_no_smaller
}

/// Sampled calls per probe of the backend a class left (see [`Dispatcher::gpu_probe_due`]).
pub(crate) const PROBE_EVERY: u64 = 4;

/// Whether CPU-route call number `n` is timed: one in [`crate::SAMPLE_EVERY`], spread by a
/// Fibonacci hash instead of every 256th call, so that a caller's loop of a power-of-two number
/// of ops does not time only one of them (one class then never adapted).
#[inline(always)]
pub(crate) fn sampled(n: u64) -> bool {
    n.wrapping_mul(0x9E37_79B9_7F4A_7C15) < u64::MAX / u64::from(crate::dispatch::SAMPLE_EVERY)
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
            policy_changes: AtomicU64::new(0),
            ready: AtomicU8::new(0),
            calibration: Mutex::new(None),
            calibrating: Mutex::new(()),
            model: Default::default(),
            transfer: Default::default(),
            adapt: std::array::from_fn(|_| std::array::from_fn(|_| [one(), one()])),
            cpu_below: Default::default(),
            stats: Default::default(),
            probes: AtomicU64::new(0),
            unfit: Mutex::new(Vec::new()),
            any_unfit: std::sync::atomic::AtomicBool::new(false),
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
            self.adapt[i].iter().flatten().for_each(|a| store(a, 1.0));
        }
        store(&self.transfer[0], 1.0 / c.upload_bytes_per_s.max(1.0));
        store(&self.transfer[1], 1.0 / c.download_bytes_per_s.max(1.0));
        OpClass::ALL
            .iter()
            .for_each(|&class| self.update_threshold(class));
        *self.calibration.lock().unwrap_or_else(|e| e.into_inner()) = Some(Arc::new(c));
        self.ready.store(1, Ordering::Release);
    }

    /// The installed calibration, if any (a failed lazy calibration's stand-in included).
    pub(crate) fn installed(&self) -> Option<Arc<Calibration>> {
        self.calibration
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
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
    /// adapted GPU time with no transfers at all (transfers only add to the GPU's time), bucket
    /// by bucket from the smallest sizes up.
    pub(crate) fn update_threshold(&self, class: OpClass) {
        let m = &self.model[class.index()];
        let mut below = u64::MAX; // the CPU always wins, unless a bucket says otherwise
        for (b, a) in self.adapt[class.index()].iter().enumerate() {
            let (ac, ag) = (load(&a[0]), load(&a[1]));
            // cpu - gpu = gap + slope · units
            let gap = load(&m[0]) * ac - load(&m[2]) * ag;
            let slope = load(&m[1]) * ac - load(&m[3]) * ag;
            let (first, last) = bucket_units(b);
            // The last units of this bucket where the CPU still wins, if not all of them.
            let cpu_until = match (gap <= 0.0, slope <= 0.0) {
                (true, true) => continue,
                (true, false) => (-gap / slope).floor().min(9e18) as u64,
                (false, _) => 0,
            };
            if cpu_until < last {
                below = cpu_until.max(first.saturating_sub(1));
                break;
            }
        }
        self.cpu_below[class.index()].store(below, Ordering::Relaxed);
    }

    /// Adapted predictions `(cpu_s, gpu_s)`.
    pub(crate) fn predict(&self, w: &Workload) -> (f64, f64) {
        let (c, g) = self.raw(w);
        let a = self.factors(w);
        (c * load(&a[0]), g * load(&a[1]))
    }

    /// Folds one measured time of `backend` (0 CPU, 1 GPU) into the adaptation factor: a moving
    /// average of measured / predicted, where one sample counts at most twice or half the
    /// current factor. A single outlier — the first GPU call compiling its pipelines (55-85 ms
    /// against 0.55 ms warm on lavapipe), a stall, a preempted CPU run — used to push the factor
    /// to its cap at once and send the class to the other backend, whose runs alone were timed
    /// from then on; now it moves the factor by at most 20 %, and only a run of consistent
    /// samples moves it far.
    pub(crate) fn observe(&self, w: &Workload, backend: usize, seconds: f64) {
        let raw = if backend == 0 {
            self.raw(w).0
        } else {
            self.raw(w).1
        };
        if self.ready.load(Ordering::Acquire) == 0 || raw <= 0.0 || !seconds.is_finite() {
            return;
        }
        let slot = &self.factors(w)[backend];
        let a = load(slot);
        let sample = (seconds / raw).clamp(a / 2.0, 2.0 * a);
        store(slot, (0.8 * a + 0.2 * sample).clamp(ADAPT_MIN, ADAPT_MAX));
        self.update_threshold(w.class);
    }

    /// Remembers that the device cannot take `w` (a device limit, `LimitExceeded`, under
    /// `Auto`): every such call uploaded its inputs, failed and re-ran on the CPU. Shapes with
    /// the same class, N and K and at least as many rows go to the CPU from now on (their
    /// bindings are no smaller); the device's limits do not change, so this is never retried.
    /// At most [`UNFIT_MAX`] shapes, the oldest forgotten first.
    pub(crate) fn mark_unfit(&self, w: &Workload) {
        let mut unfit = self.unfit.lock().unwrap_or_else(|e| e.into_inner());
        if !unfit.iter().any(|u| covers(u, w)) {
            if unfit.len() == UNFIT_MAX {
                unfit.remove(0);
            }
            unfit.push(*w);
        }
        self.any_unfit.store(true, Ordering::Release);
    }

    /// Whether the device was found unable to take `w` ([`Dispatcher::mark_unfit`]).
    pub(crate) fn unfit(&self, w: &Workload) -> bool {
        self.any_unfit.load(Ordering::Acquire)
            && self
                .unfit
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .iter()
                .any(|u| covers(u, w))
    }

    /// Whether the sampled CPU call of `w` should run on the GPU instead, to time it again: the
    /// class left the GPU because its GPU runs measured slower than calibrated (factor above 1),
    /// and the GPU would win at its calibrated time. Without such probes a class demoted by a
    /// few slow runs was never timed on the GPU again. One sampled call in [`PROBE_EVERY`].
    pub(crate) fn gpu_probe_due(&self, w: &Workload) -> bool {
        self.probe_due(w, 1)
    }

    /// Whether a GPU call of `w` should run on the CPU instead, timed: the mirror of
    /// [`Dispatcher::gpu_probe_due`] for a class that left the CPU because its sampled CPU runs
    /// measured slower than calibrated. Checked on one GPU call in [`crate::SAMPLE_EVERY`].
    pub(crate) fn cpu_probe_due(&self, w: &Workload) -> bool {
        sampled(self.stats[1].load(Ordering::Relaxed)) && self.probe_due(w, 0)
    }

    /// Whether to time `backend` (0 CPU, 1 GPU) again for `w`, a class that left it: its turn
    /// came, its factor is above 1, and at its calibrated time it would beat the other backend's
    /// adapted time.
    fn probe_due(&self, w: &Workload, backend: usize) -> bool {
        if !self.probe_turn() {
            return false;
        }
        let a = self.factors(w);
        let (cpu, gpu) = self.raw(w);
        let raw = [cpu, gpu];
        let other = 1 - backend;
        load(&a[backend]) > 1.0 && raw[backend] < raw[other] * load(&a[other])
    }

    /// The adaptation factors (CPU, GPU) of `w`'s class and size.
    pub(crate) fn factors(&self, w: &Workload) -> &[AtomicU64; 2] {
        &self.adapt[w.class.index()][size_bucket(w.units())]
    }

    /// One call in [`PROBE_EVERY`] of those asking.
    fn probe_turn(&self) -> bool {
        self.probes
            .fetch_add(1, Ordering::Relaxed)
            .is_multiple_of(PROBE_EVERY)
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
    pub(super) fn model() -> Calibration {
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

    /// Whether the adapted prediction for `w` picks the GPU.
    pub(super) fn gpu_wins(d: &Dispatcher, w: &Workload) -> bool {
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
        // Only that size adapted: the threshold, in a smaller bucket, stays.
        assert_eq!(
            d.cpu_below[OpClass::LinearGemm.index()].load(Ordering::Relaxed),
            below
        );
        // The GPU measuring slow at the threshold's own size moves the threshold up.
        let at = Workload::bitlinear(16, 64, 128, true);
        let (_, predicted) = d.raw(&at);
        for _ in 0..20 {
            d.observe(&at, 1, 20.0 * predicted);
        }
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

#[cfg(test)]
#[path = "adapt_tests.rs"]
mod adapt_tests;
