//! Plumbing shared by the float tensor ops (`matmul`, `elementwise`, `reduce`, `norm`, `softmax`,
//! `rope`): operand checks that both backends apply identically, the CPU-backend bridge to
//! `bitnet_cpu_ref::ops`, and row chunking over `max_storage_buffer_binding_size`.
//!
//! Shape and argument errors are built as the CPU reference builds them (`Error::CpuRef(..)` with
//! the same op, names and values), so the GPU and CPU backends reject bad input identically.

use std::ops::Range;

use bitnet_cpu_ref::Tensor as HostTensor;
use half::f16;

use crate::context::Gpu;
use crate::engine::Engine;
use crate::error::{Error, Result};
use crate::tensor::{DType, Tensor};

/// Checks one operand: its dtype, that it belongs to `engine`, and that it has elements.
pub(crate) fn operand(engine: &Engine, op: &'static str, t: &Tensor, dtype: DType) -> Result<()> {
    if t.engine().gpu_id() != engine.gpu_id() {
        return Err(Error::EngineMismatch { op });
    }
    t.expect_dtype(op, dtype)?;
    if t.is_empty() {
        return Err(Error::EmptyTensor { op, shape: t.shape().to_vec() });
    }
    Ok(())
}

/// Rejects a tensor whose flat indices do not fit the kernels' 32-bit index arithmetic.
pub(crate) fn u32_indexable(op: &'static str, what: &str, elements: u64) -> Result<()> {
    if elements > u64::from(u32::MAX) {
        return Err(Error::Unsupported(format!(
            "{op}: {what} has {elements} elements; GPU kernels index with 32 bits (at most {})",
            u32::MAX
        )));
    }
    Ok(())
}

/// An `F32` tensor's values as a cpu-ref tensor (CPU backend).
pub(crate) fn host_f32(t: &Tensor) -> Result<HostTensor<f32>> {
    Ok(HostTensor::new(t.read_f32()?, t.shape())?)
}

/// An `F16` tensor's values as a cpu-ref tensor (CPU backend).
pub(crate) fn host_f16(t: &Tensor) -> Result<HostTensor<f16>> {
    Ok(HostTensor::new(t.read_f16()?, t.shape())?)
}

/// Stores a cpu-ref `f32` result as an engine tensor (CPU backend).
pub(crate) fn store_f32(engine: &Engine, t: HostTensor<f32>) -> Result<Tensor> {
    engine.upload_f32(t.data(), t.shape())
}

/// Stores a cpu-ref `f16` result as an engine tensor (CPU backend).
pub(crate) fn store_f16(engine: &Engine, t: HostTensor<f16>) -> Result<Tensor> {
    engine.upload_f16(t.data(), t.shape())
}

fn gcd(a: u64, b: u64) -> u64 {
    if b == 0 { a } else { gcd(b, a % b) }
}

/// Splits `rows` rows into consecutive ranges such that, for every tensor `i` bound by rows of
/// `row_bytes[i]` bytes, a chunk's binding fits the storage-binding limit and starts at an
/// aligned offset; chunks also hold at most `max_rows` rows (a grid limit). One range when
/// everything fits. A single row above the limit is `Err(LimitExceeded)`.
pub(crate) fn row_chunks(
    gpu: &Gpu,
    what: &str,
    rows: u64,
    row_bytes: &[u64],
    max_rows: u64,
) -> Result<Vec<Range<u64>>> {
    let limit = gpu.caps.max_binding;
    let fits = |n: u64| row_bytes.iter().all(|&b| n * b <= limit);
    if rows <= max_rows && fits(rows) {
        return Ok(vec![0..rows]);
    }
    let align = u64::from(gpu.caps.limits.min_storage_buffer_offset_alignment).max(4);
    // Rows per chunk must be a multiple of `step` so every tensor's chunk start is aligned.
    let step = row_bytes.iter().fold(1, |step, &b| {
        let s = align / gcd(align, b.max(1));
        step / gcd(step, s) * s
    });
    let most = row_bytes.iter().fold(max_rows, |m, &b| m.min(limit / b.max(1)));
    let per = most / step * step;
    if per == 0 {
        let widest = row_bytes.iter().copied().max().unwrap_or(0);
        return Err(Error::LimitExceeded {
            limit: "max_storage_buffer_binding_size",
            requested: widest * step,
            max: limit,
            what: format!("{what}: one chunk of {step} rows of {widest} bytes"),
        });
    }
    Ok((0..rows.div_ceil(per))
        .map(|c| c * per..((c + 1) * per).min(rows))
        .collect())
}

/// The byte range `(offset, size)` of rows `r` of a tensor with `row_bytes` bytes per row, its
/// size rounded up to whole words (the buffer is word-padded, and chunk starts are aligned).
pub(crate) fn row_range(r: &Range<u64>, row_bytes: u64) -> (u64, u64) {
    (r.start * row_bytes, ((r.end - r.start) * row_bytes).next_multiple_of(4))
}
