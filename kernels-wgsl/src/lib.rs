//! WGSL compute kernels of bitnet-wgpu: the portable GPU path for every op.
//!
//! Each kernel is a real `.wgsl` file under `shaders/`, embedded with `include_str!` so the engine
//! ships no loose files. The engine's pipeline cache compiles each (kernel, variant) pair once.
//! Bit layouts and rounding rules are those of `bitnet_cpu_ref::layout`.
#![warn(missing_docs)]

pub mod bitnet;
pub mod tensor;
pub mod util;

/// One WGSL kernel source with a stable name (used in cache keys, logs and profiler output).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct KernelSource {
    /// Stable, human-readable kernel name, e.g. `"bitlinear_gemv"`.
    pub name: &'static str,
    /// Full WGSL source text.
    pub source: &'static str,
}

/// Every kernel shipped by this crate, for validation and for warming the pipeline cache.
pub fn all() -> Vec<KernelSource> {
    bitnet::ALL
        .iter()
        .chain(tensor::ALL.iter())
        .chain(util::ALL.iter())
        .copied()
        .collect()
}
