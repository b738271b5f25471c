//! Running several CPU BitLinears under one entry into rayon's pool.
//!
//! A cpu-ref BitLinear of [`bitnet_cpu_ref::BITLINEAR_SPLIT_MACS`] multiply-accumulates or more
//! splits into rayon tasks. Started from a thread outside the pool, each split hands its job to a
//! worker and parks the caller until the last task ends (an empty split over 16 threads: 15 µs on
//! the H200 host); started from a worker it runs its share in place (6 µs). A
//! [`crate::LinearChain`] on the CPU therefore runs its linears from one worker, paying the
//! hand-off once (four 2B4T layers, 28 linears: median 1.61-1.99 → 1.42-1.78 ms).
//!
//! Not done for three or two linears ([`crate::LinearGroup`], [`crate::GatedLinear`]): wrapped
//! the same way, the 2B4T decode example's CPU steps (four layers, H200 host, eight alternating
//! pairs) took 3.39-4.07 ms against 2.94-4.81 ms as they are, slower in six pairs
//! (2026-12-02). A caller running a whole decode step on the CPU engine gains from entering the
//! pool once for all of it (`rayon::scope(|_| ...)`, as `engine/examples/decode_step.rs` does):
//! 2.71-2.85 against 2.92-3.21 ms, five of five pairs.

/// Runs `work` on one of rayon's workers when it will run cpu-ref BitLinears that split into
/// tasks — its largest has `macs` multiply-accumulates per row, at or above the split threshold
/// — and the caller is not already one; otherwise on the calling thread. `work`'s result is
/// returned either way.
pub(crate) fn in_pool<R: Send>(macs: usize, work: impl FnOnce() -> R + Send) -> R {
    if macs < bitnet_cpu_ref::BITLINEAR_SPLIT_MACS || rayon::current_thread_index().is_some() {
        return work();
    }
    rayon::scope(|_| work())
}
