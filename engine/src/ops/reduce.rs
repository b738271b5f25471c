//! Last-axis reductions on resident `F32` tensors (`sum`, `mean`, `max`, `absmax`), one workgroup
//! per row. Sum and mean use the fixed 256-lane tree order of `bitnet_cpu_ref::ops::reduce_last`
//! (and a correctly rounded division), so they match it bit for bit (for subnormal values, on
//! devices that keep them: see `elementwise.rs`); max and absmax are exact in any order and use
//! subgroup operations where the device has them. Max orders -0 below +0 (IEEE 754-2019
//! `maximum`, as cpu-ref): WGSL's `max` and `subgroupMax` leave a zero result's sign to the
//! device, so the fold selects on equal values and the subgroup step takes the maximum of
//! order-preserving integer keys (`reduce_common.wgsl`).

use bitnet_cpu_ref::ops::{self as cpu, ReduceOp};
use bitnet_kernels_wgsl::tensor as kernels;

use super::float_args::{self, host_f32, row_chunks, store_result};
use crate::context::Gpu;
use crate::engine::Engine;
use crate::error::Result;
use crate::launch::Launch;
use crate::pipelines::{Access, Kernel};
use crate::status::NonFiniteCheck;
use crate::tensor::{DType, Tensor};

const BINDINGS: &[Access] = &[Access::Read, Access::ReadWrite];
const TREE: Kernel = Kernel::new(kernels::REDUCE_LAST, "main", BINDINGS);
const SUBGROUP: Kernel = Kernel::new(kernels::REDUCE_LAST_SUBGROUP, "main", BINDINGS)
    .requiring(wgpu::Features::SUBGROUP);

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct Params {
    rows: u32,
    len: u32,
    op: u32,
    row_base: u32,
    x_shift: u32,
    out_shift: u32,
    pad: [u32; 2],
}

fn code(op: ReduceOp) -> u32 {
    match op {
        ReduceOp::Sum => 0,
        ReduceOp::Mean => 1,
        ReduceOp::Max => 2,
        ReduceOp::AbsMax => 3,
    }
}

/// `(rows, len)` of the last axis; rank 0 is one row of one element (as in cpu-ref).
pub(crate) fn rows_of(shape: &[usize]) -> (u64, u64) {
    let len = shape.last().copied().unwrap_or(1) as u64;
    let n = shape.iter().map(|&d| d as u64).product::<u64>();
    (n / len, len)
}

impl Engine {
    /// Reduces the last axis of an `F32` tensor; the output shape drops that axis (rank 1 gives
    /// a rank-0 scalar; rank 0 is one row of one element). Same as
    /// `bitnet_cpu_ref::ops::reduce_last`. Errors: wrong dtype, non-finite input, a sum or mean
    /// that overflows f32 (`Error::NonFinite` naming `output`).
    pub fn reduce_last(&self, op: ReduceOp, a: &Tensor) -> Result<Tensor> {
        const OP: &str = "reduce_last";
        float_args::operand(self, OP, a, DType::F32)?;
        // Per invocation: the fold over the row, 8 tree levels or up to 64 subgroup partials, and
        // the mean's division.
        let (_, len) = rows_of(a.shape());
        let loops = len.div_ceil(256) + 64 + float_args::DIV_LOOPS;
        let on_host =
            || -> Result<Tensor> { store_result(self, cpu::reduce_last(op, host_f32(a)?.view()?)) };
        self.tensor_op(
            &[a],
            loops,
            |gpu| {
                let order_free = matches!(op, ReduceOp::Max | ReduceOp::AbsMax);
                let kernel = if order_free && gpu.caps.has(wgpu::Features::SUBGROUP) {
                    &SUBGROUP
                } else {
                    &TREE
                };
                launch_reduce(self, gpu, kernel, op, a)
            },
            on_host,
        )
    }
}

/// Records `kernel` (the tree or the subgroup variant) reducing `a`'s rows; chunked by rows.
fn launch_reduce(
    e: &Engine,
    gpu: &Gpu,
    kernel: &Kernel,
    op: ReduceOp,
    a: &Tensor,
) -> Result<Tensor> {
    const OP: &str = "reduce_last";
    let (rows, len) = rows_of(a.shape());
    float_args::u32_indexable(OP, "a", rows * len)?;
    let out_shape = &a.shape()[..a.shape().len().saturating_sub(1)];
    let out = e.empty(gpu, OP, out_shape, DType::F32)?;
    let split = row_chunks(gpu, OP, rows, &[4 * len, 4], u64::MAX)?;
    let group = gpu.next_seq();
    for r in &split.chunks {
        let (x_off, x_size, x_row) = split.binding(0, r);
        let (o_off, o_size, o_row) = split.binding(1, r);
        let n = r.end - r.start;
        Launch::new(gpu, kernel)
            .input_range(a, x_off, x_size)
            .output_range(&out, o_off, o_size)
            .params(&Params {
                rows: n as u32,
                len: len as u32,
                op: code(op),
                row_base: r.start as u32,
                x_shift: (r.start - x_row) as u32,
                out_shift: (r.start - o_row) as u32,
                pad: [0; 2],
            })
            .chunk_of(group)
            .check_finite(NonFiniteCheck::tensors(OP, ["a", "output", "", ""]))
            .workgroups(n)
            .run()?;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    //! Both kernel variants, whatever the engine would pick on this device: the tree kernel's max
    //! path only runs on devices without subgroups otherwise.

    use super::*;

    #[test]
    fn tree_and_subgroup_variants_match_cpu_ref() {
        let e = crate::test_gpu::gpu();
        let gpu = e.gpu_context().expect("a GPU engine");
        let shapes: [&[usize]; 4] = [&[1], &[3, 5], &[2, 257], &[2, 3000]];
        for (i, shape) in shapes.into_iter().enumerate() {
            let n: usize = shape.iter().product();
            // Deterministic values of both signs, distinct magnitudes.
            let v: Vec<f32> = (0..n)
                .map(|j| ((j * 7919 + i * 31) % 1009) as f32 - 504.5)
                .collect();
            let host = bitnet_cpu_ref::Tensor::new(v.clone(), shape).unwrap();
            let t = e.upload_f32(&v, shape).unwrap();
            let mut variants = vec![(&TREE, "tree")];
            if gpu.caps.has(wgpu::Features::SUBGROUP) {
                variants.push((&SUBGROUP, "subgroup"));
            }
            for (kernel, name) in variants {
                for op in [
                    ReduceOp::Sum,
                    ReduceOp::Mean,
                    ReduceOp::Max,
                    ReduceOp::AbsMax,
                ] {
                    let got = launch_reduce(&e, gpu, kernel, op, &t)
                        .unwrap()
                        .read_f32()
                        .unwrap();
                    let want = cpu::reduce_last(op, &host).unwrap();
                    // Sums of these integers and halves are exact in any order below 2^24.
                    assert_eq!(got, want.data(), "{name} {op:?} {shape:?}");
                }
            }
        }
    }
}
