//! BitLinear on resident tensors: `y[M, N] = x[M, K] · W[N, K]ᵀ` with int8 activations and
//! ternary weights, exact i32 accumulation and the multiplication-only epilogue of `layout.rs`
//! (bit-identical to [`bitnet_cpu_ref::bitlinear_quantized`]).
//!
//! Kernel choice: a [`LinearPlan`] per shape (`bitnet_plan.rs`: fused quant + GEMV for decode,
//! fused quant + batched GEMV for M = 2..8 f32 rows, vec4 GEMV for M ≤ 8 and K % 64 == 0, generic GEMV otherwise, tiled GEMM for M > 8), chosen by
//! `bitnet_tune.rs` (heuristic, forced settings, or measured on the device). Weights above the
//! storage-binding limit are processed in chunks of rows (N), and outputs / activations above it
//! in chunks of M.

use super::bitnet::{check_k, matrix_shape, same_engine};
use super::bitnet_loops::plan_fits;
use super::bitnet_plan::LinearPlan;
use super::bitnet_record::LinearCall;
use crate::engine::Engine;
use crate::error::{Error, Result};
use crate::hazard::launch_overlaps;
use crate::tensor::{DType, Tensor};

/// What a BitLinear launch writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Output {
    /// `y` as `F32`.
    Y,
    /// The exact accumulators as `U32` words holding `i32` bits.
    Acc,
}

impl Engine {
    /// BitLinear: `y = x · Wᵀ` for `x` `[M, K]` (`F32`, quantized per row first — fused into the
    /// same batch — or already `QuantizedI8`) and ternary `w` `[N, K]`; returns `F32` `[M, N]`,
    /// bit-identical to [`bitnet_cpu_ref::bitlinear`] / [`bitnet_cpu_ref::bitlinear_quantized`].
    /// Errors: dtypes, ranks, K mismatch, NaN/Inf in `x` or an overflowing output
    /// (`Error::NonFinite`; on the GPU by reading or checking the output, or a tensor computed
    /// from it).
    pub fn bitlinear_tensor(&self, x: &Tensor, w: &Tensor) -> Result<Tensor> {
        const OP: &str = "bitlinear";
        w.expect_dtype(OP, DType::Ternary)?;
        let xq = match x.dtype() {
            DType::F32 => {
                // Shape errors first, as cpu-ref reports them before quantizing.
                let shape = self.linear_shapes(OP, x, w)?;
                if let Some(y) = self.msl_bitlinear_fused(OP, x, w, shape)? {
                    return Ok(y);
                }
                // A fused launch past a device limit (its output row over the binding size)
                // gives way to the ops below, which take it as any tensor op does (the CPU
                // under `Auto`, the error under `Gpu`). Not `fault::unless_unbuildable`: a
                // pipeline fault here stays a fault, which the host-facing op re-runs on the CPU.
                match self.bitlinear_fused(OP, x, w, shape) {
                    Ok(Some(y)) => return Ok(y),
                    Ok(None) => {}
                    Err(e) if crate::fault::is_capability_error(&e) => {}
                    Err(e) => return Err(e),
                }
                self.quantize_activations_as(OP, x)?
            }
            DType::QuantizedI8 => x.clone(),
            got => {
                return Err(Error::DTypeMismatch {
                    op: OP,
                    expected: DType::QuantizedI8,
                    got,
                });
            }
        };
        self.bitlinear_run(OP, &xq, w, Output::Y)
    }

    /// The exact BitLinear accumulators `acc[m, n] = Σ_k xq[m, k] · wq[n, k]` for `QuantizedI8`
    /// `xq` `[M, K]` and ternary `w` `[N, K]`: a `U32` tensor `[M, N]` whose words are the `i32`
    /// bit patterns (same values as [`bitnet_cpu_ref::bitlinear_accumulate`]).
    pub fn bitlinear_accumulate_tensor(&self, xq: &Tensor, w: &Tensor) -> Result<Tensor> {
        const OP: &str = "bitlinear_accumulate";
        xq.expect_dtype(OP, DType::QuantizedI8)?;
        w.expect_dtype(OP, DType::Ternary)?;
        self.bitlinear_run(OP, xq, w, Output::Acc)
    }

    /// `(M, N, K)` after checking ranks, K agreement, `K < 2^24` and engine ownership.
    fn linear_shapes(
        &self,
        op: &'static str,
        x: &Tensor,
        w: &Tensor,
    ) -> Result<(usize, usize, usize)> {
        let (m, k) = matrix_shape(op, x)?;
        let (n, wk) = matrix_shape(op, w)?;
        if k != wk {
            return Err(Error::ShapeMismatch {
                op,
                detail: format!("activations [{m}, {k}] vs weights [{n}, {wk}]: K must agree"),
            });
        }
        check_k(op, k)?;
        same_engine(self, op, x)?;
        same_engine(self, op, w)?;
        Ok((m, n, k))
    }

    /// Records BitLinear of quantized `xq` and ternary `w` (or runs cpu-ref on the CPU engine).
    fn bitlinear_run(
        &self,
        op: &'static str,
        xq: &Tensor,
        w: &Tensor,
        mode: Output,
    ) -> Result<Tensor> {
        let (m, n, k) = self.linear_shapes(op, xq, w)?;
        // cpu-ref through `cpu_work`: off the global rayon pool on a batcher thread, which gets
        // here when the policy changes to `Cpu` in the middle of a GPU-routed call.
        let cpu = || {
            let (xq, w) = (xq.read_activations()?, w.ternary_matrix()?);
            match mode {
                Output::Y => {
                    let y =
                        crate::batching::cpu_work(|| bitnet_cpu_ref::bitlinear_quantized(&xq, &w))?;
                    self.upload_f32(&y, &[m, n])
                }
                Output::Acc => {
                    let acc = crate::batching::cpu_work(|| {
                        bitnet_cpu_ref::bitlinear_accumulate(&xq, &w)
                    })?;
                    self.upload_u32(bytemuck::cast_slice(&acc), &[m, n])
                }
            }
        };
        self.tensor_op(
            &[xq, w],
            0,
            |gpu| {
                let acc = mode == Output::Acc;
                if let Some(out) = self.msl_bitlinear_quantized(gpu, op, xq, w, (m, n, k), acc)? {
                    return Ok(out);
                }
                let dtype = if mode == Output::Y {
                    DType::F32
                } else {
                    DType::U32
                };
                let out = self.empty(gpu, op, &[m, n], dtype)?;
                let mut plan = self.linear_plan(gpu, (m, n, k), false)?;
                if plan.takes_f32() {
                    // Never cached for quantized input; keep the lanes, skip the quantization.
                    plan = LinearPlan::Generic;
                }
                if !plan_fits(gpu, plan, (m, n, k)) {
                    // A CPU adapter whose loop limit would cut every candidate plan short (or a forced
                    // plan that it would): cpu-ref, as on the CPU.
                    crate::dispatch::ran_on_host();
                    return cpu();
                }
                LinearCall {
                    op,
                    plan,
                    x: xq,
                    w,
                    w_base: 0,
                    out: &out,
                    shape: (m, n, k),
                    acc: mode == Output::Acc,
                    check: true,
                }
                .record(gpu)?;
                Ok(out)
            },
            cpu,
        )
    }

    /// BitLinear of f32 `x` as one fused dispatch, when the shape's plan is
    /// [`LinearPlan::Fused`] (M = 1) or [`LinearPlan::Batch`] (M ≤ 8) on a GPU with subgroups;
    /// `None` otherwise.
    fn bitlinear_fused(
        &self,
        op: &'static str,
        x: &Tensor,
        w: &Tensor,
        shape: (usize, usize, usize),
    ) -> Result<Option<Tensor>> {
        let Some(gpu) = self.gpu_for(&[x, w]) else {
            return Ok(None);
        };
        let (m, k) = (shape.0, shape.2);
        if !super::bitnet_plan::fused_ok(gpu, m, k) && !super::bitnet_plan::batch_ok(gpu, m, k) {
            return Ok(None);
        }
        // The output first: whether its buffer (maybe reused from the pool) is still in use by
        // pending work decides, with the inputs, whether the dispatch overlaps earlier ones.
        let out = self.empty(gpu, op, &[shape.0, shape.1], DType::F32)?;
        let overlaps = launch_overlaps(gpu, &[x, w], &[&out]);
        let plan = self.linear_plan_for(gpu, shape, true, overlaps)?;
        // A fused plan lavapipe's loop limit would cut short: quantize first, then a plan on
        // quantized rows (or cpu-ref).
        if !plan.takes_f32() || !plan_fits(gpu, plan, shape) {
            return Ok(None);
        }
        LinearCall {
            op,
            plan,
            x,
            w,
            w_base: 0,
            out: &out,
            shape,
            acc: false,
            check: true,
        }
        .record(gpu)?;
        Ok(Some(out))
    }
}
