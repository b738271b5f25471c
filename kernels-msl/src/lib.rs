//! Hand-written Metal Shading Language kernels for the BitLinear hot path of bitnet-wgpu.
//!
//! On Apple GPUs the engine can build these through wgpu's `PASSTHROUGH_SHADERS`
//! (`Device::create_shader_module_passthrough` with `msl` source): simdgroup reductions
//! (`simd_sum`, `simd_max`, `simd_shuffle_down`) and simdgroup matrices, which WGSL cannot express.
//! Everywhere else the engine uses the WGSL kernels of `bitnet-kernels-wgsl`.
//!
//! Each kernel is a real `.metal` file under `shaders/`, concatenated at compile time behind a shared
//! prelude ([`PRELUDE`]: constants, correctly rounded f32 helpers, layout helpers) into one complete
//! MSL source per kernel. Bit layouts and rounding rules are those of `bitnet_cpu_ref::layout`,
//! followed operation for operation, so codes, scales, accumulators and outputs match the CPU
//! reference bit for bit — including under Metal's default fast-math compile mode, which is why the
//! few float operations that are not a lone multiply are done on bit patterns.
//!
//! Passthrough shaders have no reflection, so every kernel comes with an [`MslKernel`] descriptor:
//! entry point, workgroup size and the explicit list of Metal buffer slots ([`MslBinding`]), which
//! follow the engine's binding convention (params as immediates at `buffer(0)`, group-0 storage
//! buffers at `buffer(1..=n)`, the group-1 status slot at `buffer(n + 1)`). [`dispatch`] computes
//! params and grids, rejecting shapes a kernel cannot handle with a typed [`DispatchError`].
//!
//! Without a Mac, the tests of this crate compile every kernel with clang as C++ against a small
//! Metal compatibility header, execute them on an emulated grid (real threads and barriers, 32-lane
//! simdgroups) and compare their outputs with `bitnet-cpu-ref` bit for bit.
#![warn(missing_docs)]

pub mod dispatch;
mod error;
pub mod kernels;

pub use dispatch::{Dispatch, OutputMode, Workgroups};
pub use error::DispatchError;
pub use kernels::{
    ABS_SUM_BLOCKS, ALL, BITLINEAR_GEMM, BITLINEAR_GEMV, BindingKind, MslBinding, MslKernel,
    PRELUDE, QUANTIZE_ACTIVATIONS, QUANTIZE_WEIGHTS,
};
