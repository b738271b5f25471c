//! GPU faults: which errors make an op re-run on the CPU, and the test-only fault-injection hook.
//!
//! **Fallback rule.** An op that the dispatch layer ran on the GPU and that failed with a GPU
//! fault — device lost, out of memory, validation or pipeline-creation error, failed read-back,
//! a panic caught on the submission thread — is re-run on the CPU from the host inputs the engine
//! still holds, and the caller gets the CPU's correct result plus a logged warning. Input errors
//! (NaN/Inf, shapes, dtypes) are returned as they are: the CPU would return the very same error. A
//! device limit or missing feature re-runs on the CPU under `Auto` dispatch and is returned under
//! `Gpu`. A lost device is never used again: once lost, every op of the engine runs on the CPU (a
//! panic does not lose the device: the next op tries the GPU again).
//!
//! **Injection** ([`crate::Engine::inject_fault`], hidden from the docs, for tests): each
//! [`InjectedFault`] arms the next matching GPU event of the engine so that it fails through the
//! engine's real error paths — the device really is destroyed, the injected validation error is a
//! real invalid command rejected by wgpu at submit, the pipeline error comes from compiling a real
//! broken shader; only out-of-memory is simulated (at the pool's allocation), as real OOM cannot be
//! produced on demand, and a panic is a real one, raised where the submission thread records or
//! submits (an engine bug or a panic inside wgpu cannot be produced on demand either).

use std::sync::atomic::{AtomicU32, Ordering};

use crate::error::Error;

/// A GPU failure to inject (testing only; see the module docs).
#[doc(hidden)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InjectedFault {
    /// Destroys the device now (`wgpu::Device::destroy`): it is lost for good.
    DeviceLost,
    /// The next storage allocation fails with `Error::OutOfMemory`.
    OutOfMemory,
    /// The next dispatch is followed by an invalid copy, so its submission fails validation.
    Validation,
    /// The next pipeline lookup compiles a broken shader and fails with `PipelineCreation`.
    PipelineCreation,
    /// The next kernel that waits inside its dispatch (a linear-chain run, one-dispatch weight
    /// quantization) gives up its waits at once, as on a GPU that does not start workgroups in
    /// order: its outputs read as `Error::Aborted`.
    WaitAbort,
    /// The submission thread's next recording of a dispatch or submission of its batch panics
    /// before it changes anything, as an engine bug or a panic inside wgpu would.
    JobPanic,
    /// The next submission panics inside `encode::submit`, after the batch's commands were taken
    /// from it (as a panic inside wgpu's encoding or submit would).
    SubmitPanic,
    /// The next submission panics inside `encode::submit` right after `queue.submit` handed the
    /// batch to the GPU (as a panic inside wgpu after the submission would): the GPU runs the
    /// batch, and the engine never learns that it did.
    PostSubmitPanic,
    /// The next read that copies status slots out panics where it allocates their read-back
    /// buffer, after it claimed the slots (as a panic inside wgpu's allocation would).
    StatusPanic,
}

/// Armed injections of one engine (counts of pending events per kind).
#[derive(Debug, Default)]
pub(crate) struct Faults {
    oom: AtomicU32,
    validation: AtomicU32,
    pipeline: AtomicU32,
    wait_abort: AtomicU32,
    job_panic: AtomicU32,
    submit_panic: AtomicU32,
    post_submit_panic: AtomicU32,
    status_panic: AtomicU32,
}

fn take(counter: &AtomicU32) -> bool {
    // Fast path: one relaxed load when nothing is armed (always, outside tests).
    counter.load(Ordering::Relaxed) > 0
        && counter
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| n.checked_sub(1))
            .is_ok()
}

impl Faults {
    /// Arms one event of `fault` (device loss is not armed: it happens at once).
    pub fn arm(&self, fault: InjectedFault) {
        let c = match fault {
            InjectedFault::OutOfMemory => &self.oom,
            InjectedFault::Validation => &self.validation,
            InjectedFault::PipelineCreation => &self.pipeline,
            InjectedFault::WaitAbort => &self.wait_abort,
            InjectedFault::JobPanic => &self.job_panic,
            InjectedFault::SubmitPanic => &self.submit_panic,
            InjectedFault::PostSubmitPanic => &self.post_submit_panic,
            InjectedFault::StatusPanic => &self.status_panic,
            InjectedFault::DeviceLost => return,
        };
        c.fetch_add(1, Ordering::AcqRel);
    }

    /// Whether this allocation must fail (consumes the arm).
    pub fn take_oom(&self) -> bool {
        take(&self.oom)
    }

    /// Whether this dispatch must be followed by an invalid command (consumes the arm).
    pub fn take_validation(&self) -> bool {
        take(&self.validation)
    }

    /// Whether this pipeline lookup must fail (consumes the arm).
    pub fn take_pipeline(&self) -> bool {
        take(&self.pipeline)
    }

    /// Consumes one armed in-dispatch wait abort, if any.
    pub fn take_wait_abort(&self) -> bool {
        take(&self.wait_abort)
    }

    /// Panics if a job panic is armed (consuming the arm); the submission thread calls it where
    /// it records and submits.
    pub fn panic_if_armed(&self) {
        if take(&self.job_panic) {
            panic!("injected panic (InjectedFault::JobPanic)");
        }
    }

    /// Panics if a submission panic is armed (consuming the arm); called inside submissions.
    pub fn panic_in_submit_if_armed(&self) {
        if take(&self.submit_panic) {
            panic!("injected panic (InjectedFault::SubmitPanic)");
        }
    }

    /// Panics if a post-submission panic is armed (consuming the arm); called right after
    /// `queue.submit`.
    pub fn panic_after_submit_if_armed(&self) {
        if take(&self.post_submit_panic) {
            panic!("injected panic (InjectedFault::PostSubmitPanic)");
        }
    }

    /// Panics if a status read-back panic is armed (consuming the arm); called where a read
    /// allocates the read-back of the status slots it claimed.
    pub fn panic_in_status_if_armed(&self) {
        if take(&self.status_panic) {
            panic!("injected panic (InjectedFault::StatusPanic)");
        }
    }

    /// Whether an armed job panic is still waiting for its job.
    #[cfg(test)]
    pub fn job_panic_armed(&self) -> bool {
        self.job_panic.load(Ordering::Acquire) > 0
    }
}

/// Whether `e` says the GPU failed — lost device, out of memory, validation or pipeline
/// creation, a failed read-back, an aborted run, a panic on the submission thread (the device
/// is healthy, but the GPU run did not happen) — so the op is re-run on the CPU. Bad input is
/// not a fault (the CPU would return the same error), nor is a device limit or missing feature
/// ([`is_capability_error`]).
pub(crate) fn is_gpu_fault(e: &Error) -> bool {
    matches!(
        e,
        Error::DeviceLost(_)
            | Error::OutOfMemory { .. }
            | Error::Validation { .. }
            | Error::PipelineCreation { .. }
            | Error::Map(_)
            | Error::Aborted { .. }
            | Error::Panicked(_)
    )
}

/// The level at which to log a GPU error that the engine works around (`how`: [`CPU_RERUN`] or
/// [`UNFUSED`]): `warn`, except for a kernel's failure to build that this process has already
/// reported with that `how` (`debug`). The pipeline cache returns such a failure at every call
/// of its op (compiling again would fail again), so a warning per call flooded a server's log
/// with the same multi-line compiler message (a reviewer's probe: 20 calls, 20 warnings).
pub(crate) fn log_level(e: &Error, how: &'static str) -> log::Level {
    static REPORTED: std::sync::Mutex<Vec<(&str, &str, &str)>> = std::sync::Mutex::new(Vec::new());
    let Error::PipelineCreation { kernel, entry, .. } = e else {
        return log::Level::Warn;
    };
    let mut reported = REPORTED.lock().unwrap_or_else(|p| p.into_inner());
    if reported.contains(&(kernel, entry, how)) {
        log::Level::Debug
    } else {
        reported.push((kernel, entry, how));
        log::Level::Warn
    }
}

/// [`log_level`]'s `how` of an op (or stream chunk) re-run on the CPU.
pub(crate) const CPU_RERUN: &str = "re-run on the CPU";
/// [`log_level`]'s `how` of a fused layer running its unfused ops.
pub(crate) const UNFUSED: &str = "unfused ops";

/// A fused launch's result with a kernel the driver cannot build (`PipelineCreation`, raised
/// before anything is recorded), or an operand past the binding size, turned into "not fused"
/// (`Ok(None)`, logged): the caller then
/// runs the unfused ops, which need other kernels. (A layer's fused kernel that fails to build
/// fails again at every call, through the pipeline cache; without this its layer failed for
/// good on such a driver.)
pub(crate) fn unless_unbuildable<T>(r: crate::Result<Option<T>>) -> crate::Result<Option<T>> {
    match r {
        // A fused kernel binding more storage buffers than the device allows is unbuildable
        // the same way (the pipeline cache refuses it before compiling).
        Err(
            e @ (Error::PipelineCreation { .. }
            | Error::LimitExceeded {
                limit: "max_storage_buffers_per_shader_stage",
                ..
            }),
        ) => {
            log::log!(
                log_level(&e, UNFUSED),
                "bitnet-wgpu: {e}; running the unfused ops instead"
            );
            Ok(None)
        }
        // An operand of the fused launch past the binding size: a shape, not a fault (no
        // warning per call); the unfused ops chunk their operands or take the shape as any
        // tensor op does.
        Err(
            e @ Error::LimitExceeded {
                limit: "max_storage_buffer_binding_size",
                ..
            },
        ) => {
            log::debug!("bitnet-wgpu: {e}; running the unfused ops instead");
            Ok(None)
        }
        r => r,
    }
}

/// Whether `e` says this device cannot run the op at all (a limit, a missing feature): under
/// `Auto` dispatch the op then runs on the CPU; under `Gpu` the error is returned as asked.
pub(crate) fn is_capability_error(e: &Error) -> bool {
    matches!(e, Error::LimitExceeded { .. } | Error::Unsupported(_))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A kernel's failure to build warns once per process and logs at `debug` after; other
    /// errors always warn.
    #[test]
    fn a_kernel_that_fails_to_build_warns_once() {
        let failed = |kernel| Error::PipelineCreation {
            kernel,
            entry: "main",
            message: "no".into(),
        };
        let level = |kernel, how| log_level(&failed(kernel), how);
        assert_eq!(level("probe_kernel_a", CPU_RERUN), log::Level::Warn);
        assert_eq!(level("probe_kernel_a", CPU_RERUN), log::Level::Debug);
        // The same kernel worked around another way is news.
        assert_eq!(level("probe_kernel_a", UNFUSED), log::Level::Warn);
        assert_eq!(level("probe_kernel_b", CPU_RERUN), log::Level::Warn);
        let lost = Error::DeviceLost("gone".into());
        assert_eq!(log_level(&lost, CPU_RERUN), log::Level::Warn);
        assert_eq!(log_level(&lost, CPU_RERUN), log::Level::Warn);
    }

    /// A fused kernel that cannot be built, binds more storage buffers than the device has or
    /// an operand past the binding size, runs the unfused ops; other errors stay errors.
    #[test]
    fn unbuildable_fused_kernels_give_way() {
        let limit = |limit| Error::LimitExceeded {
            limit,
            requested: 10,
            max: 8,
            what: "kernel `x`".into(),
        };
        let r = |e| unless_unbuildable::<()>(Err(e));
        assert_eq!(r(limit("max_storage_buffers_per_shader_stage")), Ok(None));
        assert_eq!(r(limit("max_storage_buffer_binding_size")), Ok(None));
        let buffer = limit("max_buffer_size");
        assert_eq!(r(buffer.clone()), Err(buffer));
        let failed = Error::PipelineCreation {
            kernel: "probe_kernel_c",
            entry: "main",
            message: "no".into(),
        };
        assert_eq!(r(failed), Ok(None));
    }

    #[test]
    fn arms_are_consumed_once() {
        let f = Faults::default();
        assert!(!f.take_oom());
        f.arm(InjectedFault::OutOfMemory);
        f.arm(InjectedFault::OutOfMemory);
        assert!(f.take_oom() && f.take_oom() && !f.take_oom());
        assert!(!f.take_validation() && !f.take_pipeline());
    }

    #[test]
    fn input_errors_are_not_faults() {
        let nan = Error::NonFinite {
            op: "x",
            tensor: "x",
            index: 0,
        };
        assert!(!is_gpu_fault(&nan));
        assert!(is_gpu_fault(&Error::DeviceLost("gone".into())));
        assert!(is_gpu_fault(&Error::OutOfMemory {
            context: "x".into()
        }));
        assert!(is_gpu_fault(&Error::Panicked("bug".into())));
        assert!(!is_gpu_fault(&Error::Unsupported("f16".into())));
        assert!(is_capability_error(&Error::Unsupported("f16".into())));
    }
}
