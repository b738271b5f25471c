//! What the kernels that wait inside their dispatch share — the linear chain
//! (`bitlinear_chain_subgroup.wgsl`) and one-dispatch weight quantization
//! (`weight_quant_fused.wgsl`): when they may run, and the override constants of their waits.
//!
//! Their workgroups wait for lower-numbered ones, which GPUs start first; WGSL does not promise
//! that, so the waits are bounded (`SPIN_LIMIT`), a run that gives up reads as
//! [`Error::Aborted`](crate::Error::Aborted), and the device then stops using them
//! (`Gpu::waits_gave_up`). On CPU adapters (lavapipe) workgroups run on CPU threads, each thread
//! a contiguous share of the grid, so a waiter may spin for a whole other share: only small
//! inputs take these kernels there.

use std::sync::atomic::Ordering;

use crate::context::Gpu;
use crate::launch::Launch;

/// Largest input (bytes the kernel reads) of a waiting kernel on a CPU adapter: small runs (the
/// tests') gain nothing there but lose little; larger ones take the kernels that do not wait.
pub(crate) const CPU_ADAPTER_MAX_BYTES: u64 = 4 << 20;

/// `SPIN_LIMIT` on GPUs: iterations of 32 polls (the chain) before a workgroup gives up, about
/// 150 ms on the H200 (measured: a run whose workgroups could not all start stalled that long,
/// then aborted). lavapipe caps a shader's loop iterations at 65535 in all, and its producers
/// may run for milliseconds: CPU adapters get that cap (some 2 million polls).
const SPIN_LIMIT_GPU: u32 = 32768;
const SPIN_LIMIT_CPU: u32 = 65000;

/// Whether `gpu` is a CPU adapter (lavapipe): small inputs only, read-modify-write polls.
pub(crate) fn cpu_adapter(gpu: &Gpu) -> bool {
    gpu.adapter_info.device_type == wgpu::DeviceType::Cpu
}

/// Whether waiting kernels may run on `gpu`: none has given up on it yet.
pub(crate) fn waits_allowed(gpu: &Gpu) -> bool {
    !gpu.waits_gave_up.load(Ordering::Relaxed)
}

/// Sets a waiting kernel's `SPIN_LIMIT` (0 when a test armed
/// [`InjectedFault::WaitAbort`](crate::InjectedFault)) and `POLL_RMW` (CPU adapters: lavapipe
/// hoists a relaxed atomic load out of a wait loop, so polls there are read-modify-writes).
pub(crate) fn wait_constants<'a>(launch: Launch<'a>, gpu: &Gpu) -> Launch<'a> {
    let spin = if gpu.faults.take_wait_abort() {
        0
    } else if cpu_adapter(gpu) {
        SPIN_LIMIT_CPU
    } else {
        SPIN_LIMIT_GPU
    };
    launch
        .constant("SPIN_LIMIT", f64::from(spin))
        .constant("POLL_RMW", f64::from(u8::from(cpu_adapter(gpu))))
}
