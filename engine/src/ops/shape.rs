//! Shape ops on resident tensors: `slice` (a range along one axis) and `concat` (tensors joined
//! along one axis), for the 4-byte dtypes `F32` and `U32`. On the GPU each is one strided word copy
//! per input (`blocks.rs`); on the CPU it is `bitnet_cpu_ref::ops::{slice, concat}` on the words.
//! Both backends validate shapes with cpu-ref's rules, so they reject bad input identically.
//!
//! Values move bit for bit: these ops never look at them, so a NaN or infinity is no error here
//! (the op that computes with it reports it), while an error a tensor's lineage already carries
//! still surfaces when the output is read, as for any op.

use std::ops::Range;

use bitnet_cpu_ref::Tensor as HostTensor;
use bitnet_cpu_ref::ops as cpu;

use super::blocks::{BlockCopy, copy_blocks};
use crate::engine::Engine;
use crate::error::{Error, Result};
use crate::tensor::{DType, Tensor};

/// The dtype of a tensor these ops can move (whole 32-bit words per element); any other is
/// `DTypeMismatch` naming it (expected `F32`, the float the tensor ops work in).
fn word_dtype(op: &'static str, t: &Tensor) -> Result<DType> {
    match t.dtype() {
        d @ (DType::F32 | DType::U32) => Ok(d),
        got => Err(Error::DTypeMismatch {
            op,
            expected: DType::F32,
            got,
        }),
    }
}

/// `(outer, len, inner)` of a validated `shape` around `axis`: the product of the dimensions
/// before the axis (the runs of a copy), its length, and the product of those after it.
fn around(shape: &[usize], axis: usize) -> (u64, u64, u64) {
    let product = |dims: &[usize]| dims.iter().map(|&d| d as u64).product::<u64>();
    (
        product(&shape[..axis]),
        shape[axis] as u64,
        product(&shape[axis + 1..]),
    )
}

/// A word tensor's elements as their bits (CPU backend): `F32` and `U32` alike.
fn host_words(t: &Tensor) -> Result<HostTensor<u32>> {
    let words = match (t.dtype(), t.data().host_words()) {
        // One word per element: a host tensor's words as they are.
        (DType::F32 | DType::U32, Some(words)) => words[..t.len()].to_vec(),
        (DType::F32, None) => t.read_f32()?.into_iter().map(f32::to_bits).collect(),
        _ => t.read_u32()?,
    };
    Ok(HostTensor::new(words, t.shape())?)
}

impl Engine {
    /// Stores a cpu-ref result of words as a tensor of `dtype` (CPU backend).
    fn store_words(&self, op: &'static str, dtype: DType, t: HostTensor<u32>) -> Result<Tensor> {
        self.tensor_from_bytes(op, t.shape(), dtype, bytemuck::cast_slice(t.data()), None)
    }

    /// The elements of `x` whose index along `axis` lies in `range`, every other axis whole
    /// (NumPy's `x[.., range, ..]`): same rank and dtype, `range.len()` along `axis`. Same as
    /// `bitnet_cpu_ref::ops::slice`. Splits a fused projection (`q`, `k`, `v` of a `[M, 3·H]`
    /// output) or picks heads and positions on the device.
    ///
    /// Dtypes `F32` and `U32`; values are copied bit for bit (a NaN is not an error here; an error
    /// `x`'s lineage carries is still reported by reading the output). A range covering the whole
    /// axis returns `x` itself (tensors are immutable: no copy needed).
    ///
    /// Errors: a tensor of another engine (`EngineMismatch`); another dtype (`DTypeMismatch`
    /// naming it); cpu-ref's shape errors (`Error::CpuRef`): `AxisOutOfRange` for `axis ≥ rank`,
    /// `InvalidRange` for an empty, reversed or out-of-bounds range.
    pub fn slice(&self, x: &Tensor, axis: usize, range: Range<usize>) -> Result<Tensor> {
        const OP: &str = "slice";
        self.expect_same(x.engine(), OP)?;
        let dtype = word_dtype(OP, x)?;
        let shape = cpu::slice_shape(x.shape(), axis, range.clone())?;
        if shape == x.shape() {
            return Ok(x.clone());
        }
        let on_host = || -> Result<Tensor> {
            let y = cpu::slice(&host_words(x)?, axis, range.clone())?;
            self.store_words(OP, dtype, y)
        };
        self.tensor_op(
            &[x],
            0,
            |gpu| {
                let out = self.empty(gpu, OP, &shape, dtype)?;
                let (outer, len, inner) = around(x.shape(), axis);
                // Per index before the axis, one run: the range's rows of everything after the axis.
                let run = (range.end - range.start) as u64 * inner;
                let copy = BlockCopy {
                    blocks: outer,
                    block_words: run,
                    src_start: range.start as u64 * inner,
                    src_stride: len * inner,
                    dst_start: 0,
                    dst_stride: run,
                };
                copy_blocks(gpu, x, &out, copy, gpu.next_seq())?;
                Ok(out)
            },
            on_host,
        )
    }

    /// The tensors `xs` joined along `axis`, in order (NumPy's `concatenate`): every input has the
    /// first one's rank, dtype and dimensions except along `axis`, where the output has the sum of
    /// their lengths. Same as `bitnet_cpu_ref::ops::concat`. Appends a step's keys to a cache,
    /// gathers heads, or feeds one matmul from several tensors, on the device.
    ///
    /// Dtypes `F32` and `U32`; values are copied bit for bit (a NaN is not an error here; an error
    /// an input's lineage carries is still reported by reading the output). One input returns
    /// that tensor itself (tensors are immutable: no copy needed).
    ///
    /// Errors: a tensor of another engine (`EngineMismatch`); a first input of another dtype
    /// (`DTypeMismatch` naming it), an input whose dtype differs from the first's
    /// (`DTypeMismatch { expected: <the first's>, .. }`); cpu-ref's shape errors
    /// (`Error::CpuRef`): no inputs (`InvalidArgument`), `AxisOutOfRange`, an input whose rank or
    /// dimensions off the axis differ (`ShapeMismatch`, `expected` = the shape that input needs),
    /// sizes past `usize` (`SizeOverflow`).
    pub fn concat(&self, xs: &[&Tensor], axis: usize) -> Result<Tensor> {
        const OP: &str = "concat";
        for x in xs {
            self.expect_same(x.engine(), OP)?;
        }
        let dtype = match xs.first() {
            Some(x) => word_dtype(OP, x)?,
            None => DType::F32, // no inputs: concat_shape reports it below
        };
        for x in xs {
            x.expect_dtype(OP, dtype)?;
        }
        let shapes: Vec<&[usize]> = xs.iter().map(|x| x.shape()).collect();
        let shape = cpu::concat_shape(&shapes, axis)?;
        if let [x] = xs {
            return Ok((*x).clone());
        }
        let on_host = || -> Result<Tensor> {
            let words = xs
                .iter()
                .map(|x| host_words(x))
                .collect::<Result<Vec<_>>>()?;
            let refs: Vec<&HostTensor<u32>> = words.iter().collect();
            self.store_words(OP, dtype, cpu::concat(&refs, axis)?)
        };
        self.tensor_op(
            xs,
            0,
            |gpu| {
                let out = self.empty(gpu, OP, &shape, dtype)?;
                let (outer, len, inner) = around(&shape, axis);
                // Input i fills, per index before the axis, the run after those of inputs 0..i.
                let group = gpu.next_seq();
                let mut at = 0;
                for x in xs {
                    let run = x.shape()[axis] as u64 * inner;
                    let copy = BlockCopy {
                        blocks: outer,
                        block_words: run,
                        src_start: 0,
                        src_stride: run,
                        dst_start: at,
                        dst_stride: len * inner,
                    };
                    copy_blocks(gpu, x, &out, copy, group)?;
                    at += run;
                }
                Ok(out)
            },
            on_host,
        )
    }
}
