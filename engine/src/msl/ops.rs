//! The BitNet ops' MSL hooks: each returns `None` (the WGSL path then runs) unless its op's path
//! is MSL and the shape is inside the MSL kernels' limits without chunking (see `super`).

use bitnet_kernels_msl::{self as msl, MslKernel, Workgroups, dispatch};

use super::{ABS_SUM, GEMM, GEMV, GEMV_MAX_M, KernelPath, QUANT_W, QUANT_X};
use crate::context::Gpu;
use crate::engine::Engine;
use crate::error::{Error, Result};
use crate::launch::Launch;
use crate::status::{NonFiniteCheck, STATUS_WORDS};
use crate::tensor::{DType, Tensor};

/// `check` with its tensors named by `k`'s status words.
fn status_check(op: &'static str, k: &MslKernel) -> NonFiniteCheck {
    let mut tensors = [""; STATUS_WORDS];
    for (slot, name) in tensors.iter_mut().zip(k.status_words) {
        *slot = name;
    }
    NonFiniteCheck::tensors(op, tensors)
}

/// Applies a kernel-computed grid to a launch.
fn with_grid(launch: Launch<'_>, w: Workgroups) -> Launch<'_> {
    match w {
        Workgroups::Linear(n) => launch.workgroups(n),
        Workgroups::Grid(g) => launch.grid(g),
    }
}

/// Whether every binding (bytes) fits the device's storage-binding limit (the MSL path never
/// chunks; larger tensors take the WGSL path, which does).
fn fits(gpu: &Gpu, bytes: &[usize]) -> bool {
    bytes.iter().all(|&b| b as u64 <= gpu.caps.max_binding)
}

/// A kernels-msl dispatch error as an engine error (only reachable through a bug: shapes are
/// checked before any launch is recorded).
fn dispatch_error(e: msl::DispatchError) -> Error {
    Error::Unsupported(e.to_string())
}

impl Engine {
    /// `quantize_weights` on MSL: `Some(ternary tensor)` when MSL handles `w` `[n, k]`.
    pub(crate) fn msl_quantize_weights(
        &self,
        gpu: &Gpu,
        w: &Tensor,
        n: usize,
        k: usize,
    ) -> Result<Option<Tensor>> {
        const OP: &str = "quantize_weights";
        let wpr = k.div_ceil(16);
        let (Ok(levels), Ok(pack)) = (
            dispatch::abs_sum_levels(n * k),
            dispatch::quantize_weights(n, k),
        ) else {
            return Ok(None);
        };
        if gpu.msl.paths.quantize_weights != KernelPath::Msl
            || !fits(gpu, &[4 * n * k, 4 * n * wpr])
        {
            return Ok(None);
        }
        let out = self.empty(gpu, OP, &[n, k], DType::Ternary)?;
        let mut sums: Option<Tensor> = None;
        for (i, &count) in levels.iter().enumerate() {
            let d = dispatch::abs_sum_level(count, i == 0).map_err(dispatch_error)?;
            let next = self.empty(gpu, OP, &[count.div_ceil(4096)], DType::F32)?;
            let mut launch = Launch::new(gpu, &ABS_SUM)
                .input(sums.as_ref().unwrap_or(w))
                .output(&next)
                .params(&d.params);
            if i == 0 {
                launch = launch.check_finite(status_check(OP, &msl::ABS_SUM_BLOCKS));
            }
            with_grid(launch, d.workgroups).run()?;
            sums = Some(next);
        }
        let sum = sums.ok_or_else(|| Error::Unsupported("no abs-sum level".into()))?;
        let launch = Launch::new(gpu, &QUANT_W)
            .input(w)
            .input(&sum)
            .output(&out)
            .output_scales(&out)
            .params(&pack.params)
            .check_finite(status_check(OP, &msl::QUANTIZE_WEIGHTS));
        with_grid(launch, pack.workgroups).run()?;
        Ok(Some(out))
    }

    /// `quantize_activations` (errors named `op`) on MSL: `Some(QuantizedI8)` when MSL handles it.
    pub(crate) fn msl_quantize_activations(
        &self,
        gpu: &Gpu,
        op: &'static str,
        x: &Tensor,
        m: usize,
        k: usize,
    ) -> Result<Option<Tensor>> {
        let Ok(d) = dispatch::quantize_activations(m, k) else {
            return Ok(None);
        };
        if gpu.msl.paths.quantize_activations != KernelPath::Msl
            || !fits(gpu, &[4 * m * k, 16 * m * k.div_ceil(16)])
        {
            return Ok(None);
        }
        let out = self.empty(gpu, op, &[m, k], DType::QuantizedI8)?;
        let launch = Launch::new(gpu, &QUANT_X)
            .input(x)
            .output(&out)
            .output_scales(&out)
            .params(&d.params)
            .check_finite(status_check(op, &msl::QUANTIZE_ACTIVATIONS));
        with_grid(launch, d.workgroups).run()?;
        Ok(Some(out))
    }

    /// BitLinear on f32 `x` `[m, k]` and ternary `w` `[n, k]` (shapes already validated) through
    /// the fused MSL GEMV: `Some(y)` when MSL handles it (M ≤ 8, K ≤ 16384).
    pub(crate) fn msl_bitlinear_fused(
        &self,
        op: &'static str,
        x: &Tensor,
        w: &Tensor,
        (m, n, k): (usize, usize, usize),
    ) -> Result<Option<Tensor>> {
        // Host-staged operands cannot be bound: the other paths handle them (cpu-ref).
        let Some(gpu) = self.gpu_for(&[x, w]) else {
            return Ok(None);
        };
        let Ok(d) = dispatch::bitlinear_gemv(m, n, k, msl::OutputMode::Scaled) else {
            return Ok(None);
        };
        let msl_ok = gpu.msl.paths.bitlinear_gemv == KernelPath::Msl && m <= GEMV_MAX_M;
        if !msl_ok || !fits(gpu, &[4 * m * k, 4 * n * k.div_ceil(16), 4 * m * n]) {
            return Ok(None);
        }
        let out = self.empty(gpu, op, &[m, n], DType::F32)?;
        let launch = Launch::new(gpu, &GEMV)
            .input(x)
            .input(w)
            .input_scales(w)
            .output(&out)
            .params(&d.params)
            .check_finite(status_check(op, &msl::BITLINEAR_GEMV));
        with_grid(launch, d.workgroups).run()?;
        Ok(Some(out))
    }

    /// BitLinear on quantized `xq` `[m, k]` through the MSL GEMM for M > 8: `Some(y)` (`F32`) or,
    /// with `accumulators`, `Some(acc)` (`U32` words holding `i32`) when MSL handles it.
    pub(crate) fn msl_bitlinear_quantized(
        &self,
        gpu: &Gpu,
        op: &'static str,
        xq: &Tensor,
        w: &Tensor,
        (m, n, k): (usize, usize, usize),
        accumulators: bool,
    ) -> Result<Option<Tensor>> {
        let mode = if accumulators {
            msl::OutputMode::Accumulators
        } else {
            msl::OutputMode::Scaled
        };
        let Ok(d) = dispatch::bitlinear_gemm(m, n, k, mode) else {
            return Ok(None);
        };
        let msl_ok = gpu.msl.paths.bitlinear_gemm == KernelPath::Msl && m > GEMV_MAX_M;
        if !msl_ok
            || !fits(
                gpu,
                &[16 * m * k.div_ceil(16), 4 * n * k.div_ceil(16), 4 * m * n],
            )
        {
            return Ok(None);
        }
        let out = self.empty(
            gpu,
            op,
            &[m, n],
            if accumulators { DType::U32 } else { DType::F32 },
        )?;
        let mut launch = Launch::new(gpu, &GEMM)
            .input(xq)
            .input_scales(xq)
            .input(w)
            .input_scales(w)
            .output(&out)
            .params(&d.params);
        if !accumulators {
            launch = launch.check_finite(status_check(op, &msl::BITLINEAR_GEMM));
        }
        with_grid(launch, d.workgroups).run()?;
        Ok(Some(out))
    }
}

#[cfg(test)]
#[path = "routing_tests.rs"]
mod routing_tests;
