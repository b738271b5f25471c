//! The stable BitNet entry points, with the same signatures and results as the cpu-ref free
//! functions. CPU-backed for now; the BitNet-kernel engineer switches them to GPU kernels (and may
//! move them into `ops/bitnet.rs`).

use bitnet_cpu_ref::{QuantizedActivations, TernaryMatrix};

use crate::engine::Engine;
use crate::error::Result;

impl Engine {
    /// Quantizes `w` (`[N, K]`, row-major) to ternary weights; same result as
    /// [`bitnet_cpu_ref::quantize_weights`].
    pub fn quantize_weights(&self, w: &[f32], n: usize, k: usize) -> Result<TernaryMatrix> {
        Ok(bitnet_cpu_ref::quantize_weights(w, n, k)?)
    }

    /// Quantizes activations `x` (`[M, K]`) to int8 rows; same result as
    /// [`bitnet_cpu_ref::quantize_activations`].
    pub fn quantize_activations(&self, x: &[f32], m: usize, k: usize) -> Result<QuantizedActivations> {
        Ok(bitnet_cpu_ref::quantize_activations(x, m, k)?)
    }

    /// BitLinear `y = x · Wᵀ` for `x` `[M, K]` and ternary `w` `[N, K]`; same result as
    /// [`bitnet_cpu_ref::bitlinear`].
    pub fn bitlinear(&self, x: &[f32], m: usize, w: &TernaryMatrix) -> Result<Vec<f32>> {
        Ok(bitnet_cpu_ref::bitlinear(x, m, w)?)
    }
}
