//! The per-call route of a host-facing op, the hot path of dispatch: [`Engine::route`] picks
//! CPU, sampled CPU or GPU from the policy and (under `Auto`) the prediction, in a few loads and a
//! compare for small ops; [`Engine::off_cpu`] runs the routes other than plain CPU, timing
//! sampled CPU runs and re-running a GPU fault on the CPU. Policy, statistics and calibration are
//! `dispatch.rs`.

use std::cell::Cell;
use std::sync::atomic::Ordering;
use std::time::Instant;

use super::{DispatchPolicy, Workload};
use crate::context::Gpu;
use crate::engine::Engine;
use crate::error::{Error, Result};
use crate::fault::{is_capability_error, is_gpu_fault};

impl Engine {
    /// Runs a host-facing op named `op` of size `w` off the CPU route (`route` from
    /// [`Engine::route`], anything but [`Route::Cpu`]): a timed cpu-ref run, or the GPU path
    /// `gpu` for input that `valid` accepts (anything else goes to cpu-ref, which returns its
    /// error). A GPU fault re-runs `cpu` (see the module docs); bad input errors are returned as
    /// they are (the CPU would return the same).
    ///
    /// The ops call it from a function of their own that is never inlined, after matching
    /// `Route::Cpu` themselves: then the CPU route, the hot path of small ops, is a few loads and
    /// a compare before cpu-ref, with no closure or workload built for the other routes.
    pub(crate) fn off_cpu<T>(
        &self,
        route: Route<'_>,
        op: &'static str,
        w: &Workload,
        valid: impl FnOnce() -> bool,
        cpu: impl FnOnce() -> Result<T>,
        gpu: impl FnOnce() -> Result<T>,
    ) -> Result<T> {
        let route = match route {
            // A timed CPU run, or now and then a GPU run to time the GPU again (counted as that,
            // not as the CPU run `route` counted).
            Route::Sampled(g)
                if g.dispatch.policy() == DispatchPolicy::Auto
                    && g.dispatch.gpu_probe_due(w)
                    && !g.is_lost()
                    && !g.dispatch.unfit(w) =>
            {
                g.dispatch.stats[0].fetch_sub(1, Ordering::Relaxed);
                Route::Gpu(g)
            }
            route => route,
        };
        match route {
            Route::Cpu => cpu(),
            Route::Sampled(g) | Route::CpuProbe(g) => {
                let started = Instant::now();
                let r = cpu();
                g.dispatch.observe(w, 0, started.elapsed().as_secs_f64());
                self.retry_calibration_if_due(g);
                r
            }
            Route::Gpu(_) if !valid() => cpu(),
            Route::Gpu(g) => on_gpu(g, op, w, cpu, gpu),
        }
    }

    /// Where a host-facing op of size `w` runs now (counting CPU runs); the ops run
    /// [`Route::Cpu`] themselves and hand every other route to [`Engine::off_cpu`].
    #[inline(always)]
    pub(crate) fn route(&self, w: &Workload) -> Route<'_> {
        let Some(g) = self.gpu_raw() else {
            return Route::Cpu;
        };
        let d = &g.dispatch;
        // The CPU route never needs the device's health: only a GPU decision checks it.
        let policy = d.policy.load(Ordering::Relaxed);
        let to_gpu = if policy == DispatchPolicy::Auto.code() {
            self.auto_prefers_gpu(g, w)
        } else {
            policy == DispatchPolicy::Gpu.code()
        } && !g.is_lost();
        if to_gpu {
            return gpu_route(g, w, policy);
        }
        if crate::predict::sampled(d.count_cpu()) {
            Route::Sampled(g)
        } else {
            Route::Cpu
        }
    }

    /// The `Auto` decision: whether the GPU is predicted faster for `w` (small ops: one compare).
    #[inline]
    fn auto_prefers_gpu(&self, g: &Gpu, w: &Workload) -> bool {
        // Before the first calibration every threshold is 0, so this falls through to it.
        let below = g.dispatch.cpu_below[w.class.index()].load(Ordering::Relaxed);
        w.units() > below && self.auto_predict(g, w)
    }

    /// The full prediction (and the lazy calibration on first use), out of the hot path.
    #[inline(never)]
    fn auto_predict(&self, g: &Gpu, w: &Workload) -> bool {
        let d = &g.dispatch;
        if d.ready.load(Ordering::Acquire) == 0 {
            self.load_or_calibrate(g);
            if w.units() <= d.cpu_below[w.class.index()].load(Ordering::Relaxed) {
                return false;
            }
        }
        let (cpu, gpu) = d.predict(w);
        // The unfit list's lock only for ops the GPU would take.
        gpu < cpu && !d.unfit(w)
    }
}

/// The route of an op headed for the GPU: the GPU, or under `Auto` now and then a timed CPU run
/// (`Dispatcher::cpu_probe_due`).
#[inline(never)]
fn gpu_route<'a>(g: &'a Gpu, w: &Workload, policy: u8) -> Route<'a> {
    if policy == DispatchPolicy::Auto.code() && g.dispatch.cpu_probe_due(w) {
        g.dispatch.count_cpu();
        Route::CpuProbe(g)
    } else {
        Route::Gpu(g)
    }
}

/// Where one host-facing op runs.
pub(crate) enum Route<'a> {
    /// cpu-ref, untimed.
    Cpu,
    /// cpu-ref, timed to adapt the model (now and then a GPU run instead, to time the GPU).
    Sampled(&'a Gpu),
    /// cpu-ref, timed: a GPU-bound call of a class that left the CPU, timing the CPU again.
    CpuProbe(&'a Gpu),
    /// The GPU path (CPU on a fault).
    Gpu(&'a Gpu),
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
    let policy = d.policy();
    let changes = d.policy_changes.load(Ordering::Acquire);
    let t = Instant::now();
    let (result, on_host) = noting_host_runs(gpu);
    match result {
        // A policy changed to `Cpu` since the route was chosen (and maybe back) may have run
        // the op on host tensors (the GPU path's uploads follow the policy): neither counted
        // nor timed as a GPU run then.
        Ok(v)
            if policy == DispatchPolicy::Cpu
                || d.policy_changes.load(Ordering::Acquire) != changes =>
        {
            Ok(v)
        }
        // A device lost meanwhile left the op's tensors on the host from then on: cpu-ref ran
        // (some of) it, so a fallback, not timed.
        Ok(v) if g.is_lost() => {
            d.count(2);
            Ok(v)
        }
        // cpu-ref ran it (a CPU adapter's loop limit): a CPU run, untimed.
        Ok(v) if on_host => {
            d.count(0);
            Ok(v)
        }
        Ok(v) => {
            d.count(1);
            d.observe(w, 1, t.elapsed().as_secs_f64());
            Ok(v)
        }
        Err(e) if reruns_on_cpu(g, &e, w) => {
            let e = g.explain(e);
            log::log!(
                crate::fault::log_level(&e, crate::fault::CPU_RERUN),
                "bitnet-wgpu: {op} failed on the GPU ({e}); re-running it on the CPU"
            );
            if matches!(e, Error::OutOfMemory { .. }) {
                g.pool.trim();
            }
            d.count(2);
            cpu()
        }
        Err(e) => Err(e),
    }
}

thread_local! {
    /// Set by a GPU path that ran (part of) its op on cpu-ref instead, where a CPU adapter's
    /// loop limit would cut its kernel short ([`ran_on_host`]); read and cleared by `on_gpu`.
    static RAN_ON_HOST: Cell<bool> = const { Cell::new(false) };
    /// How many host-facing GPU paths ([`noting_host_runs`]) this thread is inside.
    static IN_HOST_FACING: Cell<u32> = const { Cell::new(0) };
}

/// Notes that the GPU path running on this thread took cpu-ref instead (a CPU adapter's loop
/// limit): the host-facing op around it counts a CPU run, not a GPU run, and times nothing (a
/// reviewer's probe: such a run counted as a GPU run, and its CPU time would have taught `Auto`
/// the GPU's speed). Harmless outside a host-facing op: `on_gpu` clears it before each run.
pub(crate) fn ran_on_host() {
    RAN_ON_HOST.with(|c| c.set(true));
}

/// Runs `gpu_path` and says whether it noted a cpu-ref run ([`ran_on_host`]). Nested uses keep
/// the outer flag, and an inner host run counts for the outer path too (part of it ran there).
/// Meanwhile the tensor ops it calls return a device limit rather than run on the CPU
/// themselves (`Engine::gpu_unless_unfit`): the host-facing op re-runs whole and remembers the
/// shape (`reruns_on_cpu`).
pub(crate) fn noting_host_runs<T>(gpu_path: impl FnOnce() -> T) -> (T, bool) {
    /// Leaves the host-facing path on drop, a panic's unwinding included.
    struct Leave;
    impl Drop for Leave {
        fn drop(&mut self) {
            IN_HOST_FACING.with(|c| c.set(c.get() - 1));
        }
    }
    let outer = RAN_ON_HOST.with(|c| c.replace(false));
    IN_HOST_FACING.with(|c| c.set(c.get() + 1));
    let leave = Leave;
    let result = gpu_path();
    drop(leave);
    let on_host = RAN_ON_HOST.with(|c| c.replace(outer || c.get()));
    (result, on_host)
}

/// Whether a GPU error of an op of size `w` re-runs it on the CPU (`fault.rs`): a GPU fault, or
/// — under `Auto` dispatch — a device limit or missing feature. A device limit is the device's
/// for good, so it is remembered for `w` (`Dispatcher::mark_unfit`): later ops of that shape go
/// to the CPU instead of uploading and failing one by one. `Unsupported` also names passing
/// conditions (a blocking call on the engine's own thread, a policy change mid-call).
pub(crate) fn reruns_on_cpu(g: &Gpu, e: &Error, w: &Workload) -> bool {
    let auto = g.dispatch.policy() == DispatchPolicy::Auto;
    if auto && matches!(e, Error::LimitExceeded { .. }) {
        g.dispatch.mark_unfit(w);
    }
    is_gpu_fault(e) || (is_capability_error(e) && auto)
}

impl Engine {
    /// Where a tensor op on `inputs` runs, the one rule for every op on resident tensors: on
    /// the GPU (`on_gpu`) when every input is a device tensor of an engine that takes GPU work
    /// ([`Engine::gpu_for`]) and its kernels' `loops` iterations per invocation fit the adapter
    /// (`loops_fit`; 0 for kernels without long loops), else on the CPU (`on_host`). A GPU run
    /// that a CPU adapter's loop limit sends to the CPU is noted ([`ran_on_host`]: inside a
    /// host-facing op it counts as a CPU run). Where the device cannot take the op's shape, see
    /// [`Engine::gpu_unless_unfit`].
    pub(crate) fn tensor_op<T>(
        &self,
        inputs: &[&crate::Tensor],
        loops: u64,
        on_gpu: impl FnOnce(&Gpu) -> Result<T>,
        on_host: impl FnOnce() -> Result<T>,
    ) -> Result<T> {
        match self.gpu_for(inputs) {
            Some(g) if crate::ops::loops_fit(g, loops) => {
                self.gpu_unless_unfit(g, || on_gpu(g), on_host)
            }
            Some(_) => {
                ran_on_host();
                on_host()
            }
            None => on_host(),
        }
    }

    /// A tensor op's GPU run (`on_gpu`, on `g`), or its CPU run where the device cannot take
    /// the op under `Auto`: a device limit or a missing feature (`LimitExceeded`,
    /// `Unsupported`: a row past the binding size, a broadcast past the kernel's axes) is no
    /// fault, and `Auto` runs such a tensor op on the CPU as it does a host-facing one (device
    /// inputs read back, the output uploaded); under `Gpu` the error is returned. Not where the
    /// limit is `max_buffer_size`: a buffer the device cannot hold (the output, mostly) is not
    /// one the CPU run's upload could make, so the CPU would compute it only to fail the same
    /// way. Nor while calibrating (`calibrate::measuring`), whose GPU timings must be the GPU's.
    /// Inside a host-facing op's GPU path the error is returned too: that op re-runs whole on
    /// the CPU and remembers its shape ([`noting_host_runs`]). A failed GPU run leaves at most
    /// outputs and launches into them, dropped (its checks come before its work, but for
    /// `rope_pair`'s second launch). Not remembered per shape, as a host-facing op's is: the
    /// checks that fail cost little next to the CPU run.
    fn gpu_unless_unfit<T>(
        &self,
        g: &Gpu,
        on_gpu: impl FnOnce() -> Result<T>,
        on_host: impl FnOnce() -> Result<T>,
    ) -> Result<T> {
        match on_gpu() {
            Err(e)
                if is_capability_error(&e)
                    && !matches!(
                        e,
                        Error::LimitExceeded {
                            limit: "max_buffer_size",
                            ..
                        }
                    )
                    && g.dispatch.policy() == DispatchPolicy::Auto
                    && IN_HOST_FACING.with(|c| c.get()) == 0
                    && !crate::calibrate::measuring(g) =>
            {
                log::debug!(
                    "bitnet-wgpu: the device cannot take a tensor op ({e}); running it on the CPU"
                );
                on_host()
            }
            r => r,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{IN_HOST_FACING, noting_host_runs};

    /// A host-facing GPU path that panics leaves this thread outside every such path: its later
    /// tensor ops may still run on the CPU under `Auto` (`Engine::gpu_unless_unfit`).
    #[test]
    fn a_panicking_host_facing_path_leaves_the_thread_outside_it() {
        let depth = || IN_HOST_FACING.with(|c| c.get());
        noting_host_runs(|| {
            assert_eq!(depth(), 1);
            noting_host_runs(|| assert_eq!(depth(), 2));
            assert_eq!(depth(), 1);
        });
        let r = std::panic::catch_unwind(|| noting_host_runs(|| panic!("a GPU path panics")));
        assert!(r.is_err());
        assert_eq!(depth(), 0);
    }
}
