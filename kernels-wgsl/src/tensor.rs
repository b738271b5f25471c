//! Float tensor kernels: matmul, elementwise, reductions, norms, softmax, activations, RoPE.

use crate::KernelSource;

/// Every float tensor kernel of this module.
pub const ALL: &[KernelSource] = &[];
