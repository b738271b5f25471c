//! The stable BitNet entry points: the cpu-ref free functions as engine methods, with the same
//! signatures, results (bit for bit) and errors. Each call runs where the engine's dispatch policy
//! puts it (`dispatch.rs`): on the GPU they upload, run the kernels of `bitnet.rs` /
//! `bitnet_linear.rs` and read back (re-running on the CPU if the GPU faults); on the CPU they
//! call cpu-ref directly (a CPU-only engine before looking at anything else: its small-op cost is
//! one branch over cpu-ref's).
//!
//! Input that cpu-ref rejects before computing (zero or mismatched dimensions, `K ≥ 2^24`, size
//! overflow) is handed to cpu-ref itself, so both paths return the very same error. NaN/Inf
//! inputs and overflowing outputs are detected by the kernels and reported as the same
//! `Error::NonFinite` (op, tensor, index) as cpu-ref.
//!
//! These methods move the weights to the device on every call. To keep quantized weights
//! resident, upload them once with [`Engine::upload_ternary`] (or quantize on the device with
//! [`Engine::quantize_weights_tensor`]) and call [`Engine::bitlinear_tensor`].

use bitnet_cpu_ref::{QuantizedActivations, TernaryMatrix};

use crate::dispatch::Workload;
use crate::engine::Engine;
use crate::error::Result;

/// Largest K cpu-ref accepts (exact i32 accumulation).
const K_LIMIT: usize = 1 << 24;

impl Engine {
    /// Quantizes `w` (`[N, K]`, row-major) to ternary weights; same result as
    /// [`bitnet_cpu_ref::quantize_weights`] (codes and scale bit for bit).
    #[inline]
    pub fn quantize_weights(&self, w: &[f32], n: usize, k: usize) -> Result<TernaryMatrix> {
        let valid = || n > 0 && k > 0 && k < K_LIMIT && n.checked_mul(k) == Some(w.len());
        let cpu = || Ok(bitnet_cpu_ref::quantize_weights(w, n, k)?);
        if self.cpu_only() || !valid() {
            return cpu();
        }
        self.dispatched(
            "quantize_weights",
            &Workload::quantize_weights(n, k),
            cpu,
            || {
                let t = self.upload_f32(w, &[n, k])?;
                self.quantize_weights_tensor(&t)?.read_ternary()
            },
        )
    }

    /// Quantizes activations `x` (`[M, K]`) to int8 rows; same result as
    /// [`bitnet_cpu_ref::quantize_activations`] (values and absmax bit for bit).
    #[inline]
    pub fn quantize_activations(
        &self,
        x: &[f32],
        m: usize,
        k: usize,
    ) -> Result<QuantizedActivations> {
        let valid = || m > 0 && k > 0 && k < K_LIMIT && m.checked_mul(k) == Some(x.len());
        let cpu = || Ok(bitnet_cpu_ref::quantize_activations(x, m, k)?);
        if self.cpu_only() || !valid() {
            return cpu();
        }
        let work = Workload::quantize_activations(m, k);
        self.dispatched("quantize_activations", &work, cpu, || {
            let t = self.upload_f32(x, &[m, k])?;
            self.quantize_activations_tensor(&t)?.read_activations()
        })
    }

    /// BitLinear `y = x · Wᵀ` for `x` `[M, K]` (quantized per row) and ternary `w` `[N, K]`;
    /// same result as [`bitnet_cpu_ref::bitlinear`].
    #[inline]
    pub fn bitlinear(&self, x: &[f32], m: usize, w: &TernaryMatrix) -> Result<Vec<f32>> {
        let valid =
            || m > 0 && m.checked_mul(w.k()) == Some(x.len()) && m.checked_mul(w.n()).is_some();
        let cpu = || Ok(bitnet_cpu_ref::bitlinear(x, m, w)?);
        if self.cpu_only() || !valid() {
            return cpu();
        }
        let work = Workload::bitlinear(m, w.n(), w.k(), false);
        self.dispatched("bitlinear", &work, cpu, || {
            let x = self.upload_f32(x, &[m, w.k()])?;
            let w = self.upload_ternary(w)?;
            self.bitlinear_tensor(&x, &w)?.read_f32()
        })
    }

    /// BitLinear on already-quantized activations; same result as
    /// [`bitnet_cpu_ref::bitlinear_quantized`].
    #[inline]
    pub fn bitlinear_quantized(
        &self,
        xq: &QuantizedActivations,
        w: &TernaryMatrix,
    ) -> Result<Vec<f32>> {
        let valid = || xq.k() == w.k() && xq.m().checked_mul(w.n()).is_some();
        let cpu = || Ok(bitnet_cpu_ref::bitlinear_quantized(xq, w)?);
        if self.cpu_only() || !valid() {
            return cpu();
        }
        let work = Workload::bitlinear(xq.m(), w.n(), w.k(), false);
        self.dispatched("bitlinear", &work, cpu, || {
            let x = self.upload_activations(xq)?;
            let w = self.upload_ternary(w)?;
            self.bitlinear_tensor(&x, &w)?.read_f32()
        })
    }

    /// The exact BitLinear accumulators, `M · N` `i32` row-major; same result as
    /// [`bitnet_cpu_ref::bitlinear_accumulate`].
    #[inline]
    pub fn bitlinear_accumulate(
        &self,
        xq: &QuantizedActivations,
        w: &TernaryMatrix,
    ) -> Result<Vec<i32>> {
        let valid = || xq.k() == w.k() && xq.m().checked_mul(w.n()).is_some();
        let cpu = || Ok(bitnet_cpu_ref::bitlinear_accumulate(xq, w)?);
        if self.cpu_only() || !valid() {
            return cpu();
        }
        let work = Workload::bitlinear(xq.m(), w.n(), w.k(), false);
        self.dispatched("bitlinear_accumulate", &work, cpu, || {
            let x = self.upload_activations(xq)?;
            let w = self.upload_ternary(w)?;
            let words = self.bitlinear_accumulate_tensor(&x, &w)?.read_u32()?;
            Ok(words.into_iter().map(|v| v as i32).collect())
        })
    }
}
