//! The stable BitNet entry points: the cpu-ref free functions as engine methods, with the same
//! signatures, results (bit for bit) and errors. Each call runs where the engine's dispatch policy
//! puts it (`dispatch.rs`): on the GPU they upload, run the kernels of `bitnet.rs` /
//! `bitnet_linear.rs` and read back (re-running on the CPU if the GPU faults); on the CPU they
//! call cpu-ref directly. Each method decides the route and calls cpu-ref on the CPU route at
//! once; everything the other routes need (validation, closures, the GPU path) lives in a
//! never-inlined `*_off_cpu` function, so the CPU path of a small op costs a few loads and
//! compares over cpu-ref's own.
//!
//! The CPU route calls cpu-ref's `_as` functions, whose quantizers write their result straight
//! into this crate's `Result` (no conversion of cpu-ref's; the BitLinear ones convert after the
//! op, a move that is nothing next to it), and the methods themselves are never inlined:
//! inlined, the two routes' calls produced the result in a slot of their own, which the caller
//! then copied out. A copy of a result the op has just stored stalls the CPU (the stores
//! cannot be forwarded to the copy's wider loads): on a 256-value `quantize_activations` the
//! engine cost 10-12 % over cpu-ref with both copies, 3-5 % without (lavapipe host, 2026-12-01).
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

use crate::dispatch::{Route, Workload};
use crate::engine::Engine;
use crate::error::Result;
use crate::tensor::Tensor;

/// A cpu-ref BitLinear on quantized activations (`bitlinear_quantized`, `bitlinear_accumulate`).
type QuantizedCpuOp<T> = fn(&QuantizedActivations, &TernaryMatrix) -> Result<Vec<T>>;

/// Largest K cpu-ref accepts (exact i32 accumulation).
const K_LIMIT: usize = 1 << 24;

/// Whether BitLinear's GPU path can take `x` (`[m, K]` f32) against `w`: anything else goes to
/// cpu-ref, which returns its own error for it.
pub(crate) fn bitlinear_input_ok(x: &[f32], m: usize, w: &TernaryMatrix) -> bool {
    m > 0 && m.checked_mul(w.k()) == Some(x.len()) && m.checked_mul(w.n()).is_some()
}

impl Engine {
    /// Quantizes `w` (`[N, K]`, row-major) to ternary weights; same result as
    /// [`bitnet_cpu_ref::quantize_weights`] (codes and scale bit for bit).
    #[inline(never)]
    pub fn quantize_weights(&self, w: &[f32], n: usize, k: usize) -> Result<TernaryMatrix> {
        let work = Workload::quantize_weights(n, k);
        match self.route(&work) {
            Route::Cpu => bitnet_cpu_ref::quantize_weights_as(w, n, k),
            route => self.quantize_weights_off_cpu(route, work, w, n, k),
        }
    }

    #[inline(never)]
    fn quantize_weights_off_cpu(
        &self,
        route: Route<'_>,
        work: Workload,
        w: &[f32],
        n: usize,
        k: usize,
    ) -> Result<TernaryMatrix> {
        self.off_cpu(
            route,
            "quantize_weights",
            &work,
            || n > 0 && k > 0 && k < K_LIMIT && n.checked_mul(k) == Some(w.len()),
            || bitnet_cpu_ref::quantize_weights_as(w, n, k),
            || {
                let t = self.upload_f32(w, &[n, k])?;
                self.quantize_weights_tensor(&t)?.read_ternary()
            },
        )
    }

    /// Quantizes activations `x` (`[M, K]`) to int8 rows; same result as
    /// [`bitnet_cpu_ref::quantize_activations`] (values and absmax bit for bit).
    #[inline(never)]
    pub fn quantize_activations(
        &self,
        x: &[f32],
        m: usize,
        k: usize,
    ) -> Result<QuantizedActivations> {
        let work = Workload::quantize_activations(m, k);
        match self.route(&work) {
            Route::Cpu => bitnet_cpu_ref::quantize_activations_as(x, m, k),
            route => self.quantize_activations_off_cpu(route, work, x, m, k),
        }
    }

    #[inline(never)]
    fn quantize_activations_off_cpu(
        &self,
        route: Route<'_>,
        work: Workload,
        x: &[f32],
        m: usize,
        k: usize,
    ) -> Result<QuantizedActivations> {
        self.off_cpu(
            route,
            "quantize_activations",
            &work,
            || m > 0 && k > 0 && k < K_LIMIT && m.checked_mul(k) == Some(x.len()),
            || bitnet_cpu_ref::quantize_activations_as(x, m, k),
            || {
                let t = self.upload_f32(x, &[m, k])?;
                self.quantize_activations_tensor(&t)?.read_activations()
            },
        )
    }

    /// BitLinear `y = x · Wᵀ` for `x` `[M, K]` (quantized per row) and ternary `w` `[N, K]`;
    /// same result as [`bitnet_cpu_ref::bitlinear`].
    #[inline(never)]
    pub fn bitlinear(&self, x: &[f32], m: usize, w: &TernaryMatrix) -> Result<Vec<f32>> {
        let work = Workload::bitlinear(m, w.n(), w.k(), false);
        match self.route(&work) {
            Route::Cpu => bitnet_cpu_ref::bitlinear_as(x, m, w),
            route => self.bitlinear_off_cpu(route, work, x, m, w),
        }
    }

    #[inline(never)]
    fn bitlinear_off_cpu(
        &self,
        route: Route<'_>,
        work: Workload,
        x: &[f32],
        m: usize,
        w: &TernaryMatrix,
    ) -> Result<Vec<f32>> {
        self.off_cpu(
            route,
            "bitlinear",
            &work,
            || bitlinear_input_ok(x, m, w),
            || bitnet_cpu_ref::bitlinear_as(x, m, w),
            || {
                let x = self.upload_f32(x, &[m, w.k()])?;
                let w = self.upload_ternary(w)?;
                self.bitlinear_tensor(&x, &w)?.read_f32()
            },
        )
    }

    /// BitLinear on already-quantized activations; same result as
    /// [`bitnet_cpu_ref::bitlinear_quantized`].
    #[inline(never)]
    pub fn bitlinear_quantized(
        &self,
        xq: &QuantizedActivations,
        w: &TernaryMatrix,
    ) -> Result<Vec<f32>> {
        let work = Workload::bitlinear_quantized(xq.m(), w.n(), w.k(), false);
        match self.route(&work) {
            Route::Cpu => bitnet_cpu_ref::bitlinear_quantized_as(xq, w),
            route => self.quantized_off_cpu(
                route,
                work,
                ("bitlinear", bitnet_cpu_ref::bitlinear_quantized_as),
                (xq, w),
                |x, w| self.bitlinear_tensor(x, w)?.read_f32(),
            ),
        }
    }

    /// The exact BitLinear accumulators, `M · N` `i32` row-major; same result as
    /// [`bitnet_cpu_ref::bitlinear_accumulate`].
    #[inline(never)]
    pub fn bitlinear_accumulate(
        &self,
        xq: &QuantizedActivations,
        w: &TernaryMatrix,
    ) -> Result<Vec<i32>> {
        let work = Workload::bitlinear_quantized(xq.m(), w.n(), w.k(), false);
        match self.route(&work) {
            Route::Cpu => bitnet_cpu_ref::bitlinear_accumulate_as(xq, w),
            route => self.quantized_off_cpu(
                route,
                work,
                (
                    "bitlinear_accumulate",
                    bitnet_cpu_ref::bitlinear_accumulate_as,
                ),
                (xq, w),
                |x, w| {
                    let words = self.bitlinear_accumulate_tensor(x, w)?.read_u32()?;
                    Ok(words.into_iter().map(|v| v as i32).collect())
                },
            ),
        }
    }

    /// The routes other than plain CPU of the two quantized-input ops: `op` and its cpu-ref
    /// function `cpu`, or `gpu` on the uploaded activations and weights.
    #[inline(never)]
    fn quantized_off_cpu<T>(
        &self,
        route: Route<'_>,
        work: Workload,
        (op, cpu): (&'static str, QuantizedCpuOp<T>),
        (xq, w): (&QuantizedActivations, &TernaryMatrix),
        gpu: impl FnOnce(&Tensor, &Tensor) -> Result<Vec<T>>,
    ) -> Result<Vec<T>> {
        self.off_cpu(
            route,
            op,
            &work,
            || xq.k() == w.k() && xq.m().checked_mul(w.n()).is_some(),
            || cpu(xq, w),
            || gpu(&self.upload_activations(xq)?, &self.upload_ternary(w)?),
        )
    }
}
