//! RMSNorm over the last axis on resident `F32` tensors, one workgroup per row. The sum of squares
//! uses the 256-lane tree order of `bitnet_cpu_ref::ops::rms_norm` and the divisions are correctly
//! rounded, so only the shader's `sqrt` differs from the CPU reference.

use bitnet_cpu_ref::ops as cpu;
use bitnet_kernels_wgsl::tensor as kernels;

use super::float_args::{self, RowSplit, host_f32, row_chunks, store_values};
use super::reduce::rows_of;
use crate::context::Gpu;
use crate::engine::Engine;
use crate::error::{Error, Result};
use crate::launch::{Launch, check_binding};
use crate::pipelines::{Access, Kernel};
use crate::status::NonFiniteCheck;
use crate::tensor::{DType, Tensor};

const RMS_NORM: Kernel = Kernel::new(
    kernels::NORM_RMS,
    "main",
    &[Access::Read, Access::Read, Access::ReadWrite],
);

/// The params of both RMS norm kernels (`norm_rms.wgsl`, `norm_rms_add.wgsl`).
#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
pub(super) struct Params {
    pub rows: u32,
    pub len: u32,
    pub eps: f32,
    pub row_base: u32,
    /// Always 0: the runtime zero of `rms_pin4` (the compiler cannot know its value).
    pub zero: u32,
}

impl Params {
    /// The params of the launch covering `rows` (rows of `len` values).
    pub fn chunk(rows: &std::ops::Range<u64>, len: u64, eps: f32) -> Params {
        Params {
            rows: (rows.end - rows.start) as u32,
            len: len as u32,
            eps,
            row_base: rows.start as u32,
            zero: 0,
        }
    }
}

impl Engine {
    /// [`Engine::rms_norm`] on the CPU reference (out of line, as `Engine::unary`'s): values in,
    /// values out, no shape of cpu-ref's.
    #[inline(never)]
    fn rms_norm_on_host(
        &self,
        x: &Tensor,
        weight: &Tensor,
        len: usize,
        eps: f32,
    ) -> Result<Tensor> {
        let (hx, hw) = (host_f32(x)?, host_f32(weight)?);
        let values = cpu::rms_norm_values_as::<Error>(hx.values(), len, hw.values(), eps)?;
        store_values(self, x.shape(), values)
    }

    /// RMSNorm of an `F32` tensor over its last axis (length `L`), per row:
    /// `y = (x · inv) · weight[i]` with `inv = 1 / sqrt(Σx² / L + eps)`; `weight` is an `F32`
    /// tensor of `L` elements (any shape). Bit for bit `bitnet_cpu_ref::ops::rms_norm`. Errors:
    /// `weight` length, non-finite `x`, `weight` or `eps`, negative `eps`, a row whose sum of
    /// squares overflows, non-finite output. On the GPU, `eps` is checked before the tensors (the
    /// CPU reference checks it after them; only input with several faults is reported differently).
    pub fn rms_norm(&self, x: &Tensor, weight: &Tensor, eps: f32) -> Result<Tensor> {
        const OP: &str = "rms_norm";
        float_args::operand(self, OP, x, DType::F32)?;
        float_args::operand(self, OP, weight, DType::F32)?;
        let (rows, len) = norm_rows(OP, x, weight)?;
        let loops = norm_loops(len);
        let on_host = || -> Result<Tensor> { self.rms_norm_on_host(x, weight, len as usize, eps) };
        self.tensor_op(
            &[x, weight],
            loops,
            |gpu| {
                let split = gpu_rows(gpu, OP, eps, rows, len)?;
                let out = self.empty(gpu, OP, x.shape(), DType::F32)?;
                let group = gpu.next_seq();
                for r in &split.chunks {
                    let (off, size, _) = split.binding(0, r);
                    let n = r.end - r.start;
                    Launch::new(gpu, &RMS_NORM)
                        .input_range(x, off, size)
                        .input(weight)
                        .output_range(&out, off, size)
                        .params(&Params::chunk(r, len, eps))
                        .chunk_of(group)
                        .check_finite(NonFiniteCheck::tensors(
                            OP,
                            [
                                "x",
                                "weight",
                                "sum of squares of a row (overflows f32)",
                                "output",
                            ],
                        ))
                        .workgroups(n)
                        .run()?;
                }
                Ok(out)
            },
            on_host,
        )
    }
}

/// Loop iterations per invocation of the RMS norm kernels (for `float_args::loops_fit`): two
/// passes over the row, each iteration taking four elements in an inner loop of four (counted:
/// a compiler need not unroll it), 8 tree levels, two divisions and a square root.
pub(super) fn norm_loops(len: u64) -> u64 {
    2 * 5 * len.div_ceil(4 * 256) + 8 + 2 * float_args::DIV_LOOPS + float_args::SQRT_LOOPS
}

/// A GPU norm's host checks — `eps` ([`check_eps`]), 32-bit indexing, the weight (bound whole)
/// within the binding size — and its rows' chunks: `x` and the outputs have the same rows, all
/// bound whole or all chunk by chunk.
pub(super) fn gpu_rows(
    gpu: &Gpu,
    op: &'static str,
    eps: f32,
    rows: u64,
    len: u64,
) -> Result<RowSplit> {
    check_eps(op, eps)?;
    float_args::u32_indexable(op, "x", rows * len)?;
    check_binding(gpu, &format!("{op}: weight"), 4 * len)?;
    row_chunks(gpu, op, rows, &[4 * len], u64::MAX)
}

/// The GPU norms check `eps` on the host, before the tensors: non-finite or negative.
pub(super) fn check_eps(op: &'static str, eps: f32) -> Result<()> {
    if !eps.is_finite() {
        return Err(Error::NonFinite {
            op,
            tensor: "eps",
            index: 0,
        });
    }
    if eps < 0.0 {
        return Err(Error::from(bitnet_cpu_ref::Error::InvalidArgument {
            op,
            what: "eps",
            reason: "must be >= 0",
        }));
    }
    Ok(())
}

/// `x`'s rows and row length, with `weight` checked to hold one value per element of a row.
pub(super) fn norm_rows(op: &'static str, x: &Tensor, weight: &Tensor) -> Result<(u64, u64)> {
    let (rows, len) = rows_of(x.shape());
    if weight.len() as u64 != len {
        return Err(Error::from(bitnet_cpu_ref::Error::LengthMismatch {
            op,
            what: "weight (last axis of x)",
            expected: len as usize,
            got: weight.len(),
        }));
    }
    Ok((rows, len))
}
