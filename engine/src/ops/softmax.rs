//! Numerically stable softmax over the last axis on resident `F32` tensors, one workgroup per row
//! (max-subtracted; the sum in the 256-lane tree order of `bitnet_cpu_ref::ops::softmax_last`, the
//! division correctly rounded, so only the shader's `exp` differs from the CPU reference); `-inf`
//! entries are masks, as in cpu-ref.

use bitnet_cpu_ref::ops as cpu;
use bitnet_kernels_wgsl::tensor as kernels;

use super::float_args::{self, host_f32, row_chunks, store_result};
use super::reduce::rows_of;
use crate::engine::Engine;
use crate::error::Result;
use crate::launch::Launch;
use crate::pipelines::{Access, Kernel};
use crate::status::NonFiniteCheck;
use crate::tensor::{DType, Tensor};

const SOFTMAX: Kernel = Kernel::new(
    kernels::SOFTMAX_LAST,
    "main",
    &[Access::Read, Access::ReadWrite],
);

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct Params {
    rows: u32,
    len: u32,
    row_base: u32,
    pad: u32,
}

impl Engine {
    /// Softmax of an `F32` tensor over its last axis: `y_i = e^(x_i - max) / Σ_j e^(x_j - max)`.
    /// Same as `bitnet_cpu_ref::ops::softmax_last`, masking included: a `-inf` entry (PyTorch's
    /// attention mask value) is left out of the max and the sum and its output is exactly 0.
    ///
    /// Errors: wrong dtype; a NaN or `+inf` input ([`Error::NonFinite`](crate::Error::NonFinite),
    /// tensor `"x"`, its flat index); a row whose every entry is `-inf`, which has no distribution
    /// (`NonFinite` with tensor [`bitnet_cpu_ref::ops::SOFTMAX_MASKED_ROW`] and the flat index of
    /// the row's first element), reported after any NaN or `+inf`, as cpu-ref does. On the GPU, like
    /// every value error of a resident op, these are returned by the read of the output. The
    /// output is always finite.
    pub fn softmax_last(&self, x: &Tensor) -> Result<Tensor> {
        const OP: &str = "softmax_last";
        float_args::operand(self, OP, x, DType::F32)?;
        let (rows, len) = rows_of(x.shape());
        // Per invocation: three passes over the row, the last dividing once per element, and two
        // trees of 8 levels.
        let loops = len.div_ceil(256) * (3 + float_args::DIV_LOOPS) + 16;
        let on_host =
            || -> Result<Tensor> { store_result(self, cpu::softmax_last(host_f32(x)?.view()?)) };
        self.tensor_op(
            &[x],
            loops,
            |gpu| {
                float_args::u32_indexable(OP, "x", rows * len)?;
                let out = self.empty(gpu, OP, x.shape(), DType::F32)?;
                // x and the output have the same rows: both are bound whole, or both chunk by chunk.
                let split = row_chunks(gpu, OP, rows, &[4 * len], u64::MAX)?;
                let group = gpu.next_seq();
                for r in &split.chunks {
                    let (off, size, _) = split.binding(0, r);
                    let n = r.end - r.start;
                    Launch::new(gpu, &SOFTMAX)
                        .input_range(x, off, size)
                        .output_range(&out, off, size)
                        .params(&Params {
                            rows: n as u32,
                            len: len as u32,
                            row_base: r.start as u32,
                            pad: 0,
                        })
                        .chunk_of(group)
                        .check_finite(NonFiniteCheck::tensors(
                            OP,
                            ["x", cpu::SOFTMAX_MASKED_ROW, "", ""],
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
