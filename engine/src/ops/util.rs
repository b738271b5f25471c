//! Utility ops on the engine's own kernels: `fill` and the finite-checked `copy`. They are also
//! the reference use of the launch helper: pooled outputs, params, linear grids, chunking over the
//! storage-binding limit, and the non-finite status slot.

use bitnet_kernels_wgsl::util as kernels;

use crate::context::Gpu;
use crate::engine::Engine;
use crate::error::{Error, Result};
use crate::launch::{Launch, binding_chunks};
use crate::pipelines::{Access, Kernel};
use crate::status::NonFiniteCheck;
use crate::tensor::{DType, Tensor};

const FILL: Kernel = Kernel::new(kernels::FILL, "main", &[Access::ReadWrite]);
const COPY: Kernel = Kernel::new(kernels::COPY, "main", &[Access::Read, Access::ReadWrite]);
/// Threads per workgroup of both kernels.
/// Values one workgroup of the fill and copy kernels covers (4 per invocation).
const GROUP_VALUES: u64 = bitnet_kernels_wgsl::tensor::ELEMENTWISE_GROUP_VALUES as u64;

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct FillParams {
    n: u32,
    value: u32,
}

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct CopyParams {
    n: u32,
}

/// Records a fill of every 32-bit word of the device tensor `out` with `bits`.
pub(crate) fn fill_words(gpu: &Gpu, out: &Tensor, bits: u32) -> Result<()> {
    let n = out.len() as u64;
    for r in binding_chunks(gpu, "fill", n, 4)? {
        let len = r.end - r.start;
        Launch::new(gpu, &FILL)
            .output_range(out, 4 * r.start, 4 * len)
            .params(&FillParams {
                n: len as u32,
                value: bits,
            })
            .workgroups(len.div_ceil(GROUP_VALUES))
            .run()?;
    }
    Ok(())
}

impl Engine {
    /// An `F32` tensor of `shape` with every element `value`. A NaN or ±Inf `value` is
    /// `Err(NonFinite { op: "fill", tensor: "value", index: 0 })`, as every op's non-finite
    /// input is (the crate docs' promise), on both engines.
    pub fn fill(&self, shape: &[usize], value: f32) -> Result<Tensor> {
        if !value.is_finite() {
            return Err(Error::NonFinite {
                op: "fill",
                tensor: "value",
                index: 0,
            });
        }
        let Some(gpu) = self.gpu_context() else {
            return self.host_filled("fill", shape, DType::F32, value.to_bits());
        };
        let out = self.empty(gpu, "fill", shape, DType::F32)?;
        fill_words(gpu, &out, value.to_bits())?;
        Ok(out)
    }

    /// A copy of an `F32` tensor; `Err(NonFinite { op: "copy", tensor: "x", index })` if it holds
    /// NaN or ±Inf (on the GPU: by reading or checking the copy, or a tensor computed from it;
    /// [`Engine::sync`] does not report it).
    pub fn copy(&self, x: &Tensor) -> Result<Tensor> {
        const OP: &str = "copy";
        x.expect_dtype(OP, DType::F32)?;
        self.expect_same(x.engine(), OP)?;
        let on_host = || -> Result<Tensor> {
            // A device tensor of this engine under the CPU policy is read back, as every op does.
            let v = x.read_f32()?;
            if let Some(index) = v.iter().position(|f| !f.is_finite()) {
                return Err(Error::NonFinite {
                    op: OP,
                    tensor: "x",
                    index,
                });
            }
            self.upload_f32(&v, x.shape())
        };
        self.tensor_op(
            &[x],
            0,
            |gpu| {
                let out = self.empty(gpu, OP, x.shape(), DType::F32)?;
                let n = x.len() as u64;
                let group = gpu.next_seq();
                for r in binding_chunks(gpu, OP, n, 4)? {
                    let len = r.end - r.start;
                    Launch::new(gpu, &COPY)
                        .input_range(x, 4 * r.start, 4 * len)
                        .output_range(&out, 4 * r.start, 4 * len)
                        .params(&CopyParams { n: len as u32 })
                        .chunk_of(group)
                        .check_finite(NonFiniteCheck::new(OP, "x").at(r.start))
                        .workgroups(len.div_ceil(GROUP_VALUES))
                        .run()?;
                }
                Ok(out)
            },
            on_host,
        )
    }
}
