//! BitNet kernels: weight and activation quantization, BitLinear GEMV/GEMM.

use crate::KernelSource;

/// Every BitNet kernel of this module.
pub const ALL: &[KernelSource] = &[];
