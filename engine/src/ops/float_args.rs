//! Plumbing shared by the float tensor ops (`matmul`, `elementwise`, `reduce`, `norm`, `softmax`,
//! `rope`, `attention`): operand checks that both backends apply identically, the CPU-backend bridge to
//! `bitnet_cpu_ref::ops`, and row chunking over `max_storage_buffer_binding_size`.
//!
//! Shape and argument errors are built as the CPU reference builds them (`Error::CpuRef(..)` with
//! the same op, names and values), so the GPU and CPU backends reject bad input identically.

use std::borrow::Cow;
use std::ops::Range;

use bitnet_cpu_ref::{Tensor as HostTensor, TensorRef as HostTensorRef};
use half::f16;

use super::in_dispatch_wait::cpu_adapter;
use crate::context::Gpu;
use crate::engine::Engine;
use crate::error::{Error, Result};
use crate::tensor::{DType, Storage, Tensor};

/// Checks one operand: its dtype, that it belongs to `engine`, and that it has elements.
pub(crate) fn operand(engine: &Engine, op: &'static str, t: &Tensor, dtype: DType) -> Result<()> {
    engine.expect_same(t.engine(), op)?;
    t.expect_dtype(op, dtype)?;
    if t.is_empty() {
        return Err(Error::EmptyTensor {
            op,
            shape: t.shape().to_vec(),
        });
    }
    Ok(())
}

/// Indices kept free below 2^32 by [`u32_indexable`]: the kernels' strided loops step up to
/// 1024 indices past their last one (RMSNorm: 4 × 256 per step), and a step that wrapped past
/// 2^32 would restart the loop, forever (a row of 2^32 − 256 values would hang `reduce_last`).
const INDEX_HEADROOM: u64 = 4096;

/// The most elements a tensor may have for [`u32_indexable`].
pub(crate) const MAX_INDEXABLE: u64 = u32::MAX as u64 - INDEX_HEADROOM;

/// Rejects a tensor whose flat indices do not fit the kernels' 32-bit index arithmetic, with
/// room for their loops' last step ([`MAX_INDEXABLE`] elements at most): a device limit
/// (`LimitExceeded`: a tensor op returns it under `Gpu` and runs on the CPU under `Auto`,
/// `Engine::tensor_op`).
pub(crate) fn u32_indexable(op: &'static str, what: &str, elements: u64) -> Result<()> {
    if elements > MAX_INDEXABLE {
        return Err(Error::LimitExceeded {
            limit: "32-bit indexing of the GPU kernels (elements per tensor)",
            requested: elements,
            max: MAX_INDEXABLE,
            what: format!("{op}: {what}"),
        });
    }
    Ok(())
}

/// Loop iterations one invocation may run on a CPU adapter. lavapipe (llvmpipe's loop limiter)
/// ends a shader's loops after 65 535 iterations in all, with no error: a longer fold returns a
/// truncated result (a 16.8M-element row summed to a few thousandths of its sum). The margin
/// covers loops the callers' estimates leave out (short constant ones a driver may not unroll).
const CPU_ADAPTER_LOOP_BUDGET: u64 = 60_000;

/// Iterations of one correctly rounded division (`exact_div.wgsl`: a loop over up to 25 quotient
/// bits, and its exit test), for the loop estimates of [`loops_fit`].
pub(crate) const DIV_LOOPS: u64 = 26;

/// Iterations of one correctly rounded square root (`exact_sqrt.wgsl`: up to 4 corrections of
/// the shader's root, and the exit test).
pub(crate) const SQRT_LOOPS: u64 = 5;

/// Whether a kernel whose invocations each run up to `iterations` loop iterations computes its
/// full result on `gpu`: always on GPUs; on CPU adapters only within [`CPU_ADAPTER_LOOP_BUDGET`].
/// An op past it runs on the CPU reference instead, as under the CPU policy.
pub(crate) fn loops_fit(gpu: &Gpu, iterations: u64) -> bool {
    !cpu_adapter(gpu) || iterations <= CPU_ADAPTER_LOOP_BUDGET
}

/// An `F32` tensor's values for the CPU reference (CPU backend): a host tensor's own storage,
/// borrowed, or a device tensor's values read back. Borrowed because copies cost more than a
/// small op itself (a ReLU of 2048 values: 0.56 µs in cpu-ref, 1.2 µs with the input copied in and
/// the output copied out) and a KV cache's views are as long as the context, every step.
pub(crate) struct HostF32<'a> {
    values: Cow<'a, [f32]>,
    shape: &'a [usize],
}

impl HostF32<'_> {
    /// The values as a cpu-ref tensor view.
    pub(crate) fn view(&self) -> Result<HostTensorRef<'_, f32>> {
        Ok(HostTensorRef::new(&self.values, self.shape)?)
    }

    /// The values, flat.
    pub(crate) fn values(&self) -> &[f32] {
        &self.values
    }
}

/// `t`'s values for the CPU reference ([`HostF32`]). Errors: those of `Tensor::read_f32`.
///
/// The CPU paths take their `F32` operands through this rather than `read_f32`, which copies.
/// (Until 2026-12-02 a read of a host tensor also drove a future to completion: an RMSNorm of
/// one 256-value row paid about as much for reading its weight as for the norm.)
pub(crate) fn host_f32(t: &Tensor) -> Result<HostF32<'_>> {
    let values = match (t.dtype(), t.data().host_words()) {
        (DType::F32, Some(words)) => {
            Cow::Borrowed(bytemuck::cast_slice::<u32, f32>(&words[..t.len()]))
        }
        _ => Cow::Owned(t.read_f32()?),
    };
    Ok(HostF32 {
        values,
        shape: t.shape(),
    })
}

/// An `F16` tensor's values as a cpu-ref tensor (CPU backend).
pub(crate) fn host_f16(t: &Tensor) -> Result<HostTensor<f16>> {
    Ok(HostTensor::new(t.read_f16()?, t.shape())?)
}

/// Stores a cpu-ref `f32` result as an engine tensor: on the CPU engine its values as they are
/// (no copy), on a GPU engine (an op that ran on the CPU reference) uploaded.
pub(crate) fn store_f32(engine: &Engine, t: HostTensor<f32>) -> Result<Tensor> {
    let (values, shape) = t.into_parts();
    store_values(engine, &shape, values)
}

/// An op's `f32` values computed on the host as a tensor of `shape` (`values` holds exactly its
/// elements): on the CPU engine the vector becomes the storage as it is, with no shape check
/// (the op's operands were checked), on a GPU engine it is uploaded. The CPU paths of small
/// ops take this rather than [`store_f32`]: a cpu-ref tensor's shape is one allocation more.
pub(crate) fn store_values(engine: &Engine, shape: &[usize], values: Vec<f32>) -> Result<Tensor> {
    if engine.gpu_context().is_some() {
        return engine.upload_f32(&values, shape);
    }
    debug_assert_eq!(values.len(), shape.iter().product::<usize>());
    // f32 and u32 share size and alignment: the allocation is reused as it is.
    let words: Vec<u32> = bytemuck::allocation::cast_vec(values);
    Ok(Tensor::from_parts(
        engine.clone(),
        shape,
        DType::F32,
        Storage::Host(words),
        None,
    ))
}

/// [`store_f32`] of a cpu-ref op's result as it comes, errors converted here: kept out of
/// line, it reads the result's fields where they lie (converting the result first made the
/// caller copy it whole, reading back in 16-byte loads what cpu-ref had just stored in 8-byte
/// ones, which the CPU cannot forward).
#[inline(never)]
pub(crate) fn store_result(
    engine: &Engine,
    result: bitnet_cpu_ref::Result<HostTensor<f32>>,
) -> Result<Tensor> {
    match result {
        Ok(t) => store_f32(engine, t),
        Err(e) => Err(e.into()),
    }
}

/// Stores a cpu-ref `f16` result as an engine tensor (CPU backend).
pub(crate) fn store_f16(engine: &Engine, t: HostTensor<f16>) -> Result<Tensor> {
    engine.upload_f16(t.data(), t.shape())
}

fn gcd(a: u64, b: u64) -> u64 {
    if b == 0 { a } else { gcd(b, a % b) }
}

/// How a row-wise op splits its launches over the storage-binding limit: consecutive row ranges,
/// and for each tensor bound by rows whether it is bound whole (it fits) or chunk by chunk.
#[derive(Debug, Clone)]
pub(crate) struct RowSplit {
    /// Row ranges, one launch each.
    pub chunks: Vec<Range<u64>>,
    rows: u64,
    row_bytes: Vec<u64>,
    whole: Vec<bool>,
}

impl RowSplit {
    /// Tensor `i`'s binding for chunk `r`: `(offset, size, first_row)`, where `first_row` is the
    /// first row the binding holds (0 when bound whole, `r.start` when chunked). Sizes are rounded
    /// up to whole words (buffers are word-padded and chunk starts are aligned).
    pub fn binding(&self, i: usize, r: &Range<u64>) -> (u64, u64, u64) {
        let b = self.row_bytes[i];
        if self.whole[i] {
            (0, (self.rows * b).next_multiple_of(4), 0)
        } else {
            (
                r.start * b,
                ((r.end - r.start) * b).next_multiple_of(4),
                r.start,
            )
        }
    }
}

/// Splits `rows` rows into launches. Tensor `i` has `row_bytes[i]` bytes per row; one that fits
/// the storage-binding limit is bound whole, the others chunk by chunk, at aligned offsets
/// (`min_storage_buffer_offset_alignment`) and within the limit. Chunks also hold at most
/// `max_rows` rows (a grid limit). A row range that cannot be both aligned and small enough is
/// `Err(LimitExceeded)` naming the limit.
pub(crate) fn row_chunks(
    gpu: &Gpu,
    what: &str,
    rows: u64,
    row_bytes: &[u64],
    max_rows: u64,
) -> Result<RowSplit> {
    let limit = gpu.caps.max_binding;
    let whole: Vec<bool> = row_bytes.iter().map(|&b| rows * b <= limit).collect();
    let split = |chunks| RowSplit {
        chunks,
        rows,
        row_bytes: row_bytes.to_vec(),
        whole: whole.clone(),
    };
    if rows <= max_rows && whole.iter().all(|&w| w) {
        return Ok(split(std::iter::once(0..rows).collect()));
    }
    let align = u64::from(gpu.caps.limits.min_storage_buffer_offset_alignment).max(4);
    let chunked = || {
        row_bytes
            .iter()
            .zip(&whole)
            .filter(|(_, w)| !**w)
            .map(|(&b, _)| b.max(1))
    };
    // Rows per chunk must be a multiple of `step` so every chunked tensor's start is aligned.
    let step = chunked().fold(1, |step, b| {
        let s = align / gcd(align, b);
        step / gcd(step, s) * s
    });
    let most = chunked().fold(max_rows, |m, b| m.min(limit / b));
    let per = most / step * step;
    if per == 0 {
        let widest = chunked().max().unwrap_or(0);
        return Err(Error::LimitExceeded {
            limit: "max_storage_buffer_binding_size",
            requested: widest * step,
            max: limit,
            what: format!("{what}: one aligned chunk of {step} rows of {widest} bytes"),
        });
    }
    Ok(split(
        (0..rows.div_ceil(per))
            .map(|c| c * per..((c + 1) * per).min(rows))
            .collect(),
    ))
}

#[cfg(test)]
mod tests {
    use super::{MAX_INDEXABLE, u32_indexable};

    /// Sizes near 2^32 are refused before a kernel's loop step could wrap past it.
    #[test]
    fn indexable_sizes_leave_room_for_a_loop_step() {
        assert!(u32_indexable("op", "x", MAX_INDEXABLE).is_ok());
        assert!(u32_indexable("op", "x", MAX_INDEXABLE + 1).is_err());
        assert!(u32_indexable("op", "x", u64::from(u32::MAX) - 255).is_err());
        const { assert!(MAX_INDEXABLE + 1024 < 1 << 32) };
    }
}
