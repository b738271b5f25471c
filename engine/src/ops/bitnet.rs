//! BitNet b1.58 ops on resident tensors: activation quantization (`F32 [M, K]` → `QuantizedI8`)
//! and the helpers of every BitNet op (shapes, binding chunks). Weight quantization is in
//! `bitnet_weight_quant.rs`, BitLinear in `bitnet_linear.rs`, the cpu-ref-compatible slice entry
//! points in `bitnet_stable.rs`.
//!
//! Results are bit-identical to `bitnet-cpu-ref` (codes, scales, quantized values, absmax): the
//! kernels follow `layout.rs` operation for operation, including the canonical summation order
//! and a correctly rounded division (see `kernels-wgsl/src/bitnet.rs`). On the CPU engine the ops
//! run cpu-ref on host tensors. NaN/Inf inputs give the same `Error::NonFinite` as cpu-ref (on the
//! GPU when a tensor computed from them is read or checked; `Engine::sync` does not report it).

use std::ops::Range;

use bitnet_cpu_ref::layout::activation_words_per_row;
use bitnet_kernels_wgsl::bitnet as kernels;

use super::bitnet_loops::act_quant_loops;
use super::float_args::host_f32;
use crate::context::Gpu;
use crate::engine::Engine;
use crate::error::{Error, Result};
use crate::launch::Launch;
use crate::pipelines::{Access, Kernel};
use crate::status::NonFiniteCheck;
use crate::tensor::{DType, Tensor};

use Access::{Read, ReadWrite};

const ACT_QUANT: Kernel = Kernel::new(kernels::ACT_QUANT, "main", &[Read, ReadWrite, ReadWrite]);
const ACT_QUANT_VEC4: Kernel = Kernel::new(
    kernels::ACT_QUANT_VEC4,
    "main",
    &[Read, ReadWrite, ReadWrite],
);

/// Largest byte range one binding of these kernels covers, so every u32 index stays exact.
const MAX_CHUNK_BYTES: u64 = 1 << 31;

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct ActParams {
    rows: u32,
    k: u32,
    words_per_row: u32,
    row_base: u32,
}

/// The storage-binding limit the BitNet ops chunk against (device limit, capped so that flat
/// u32 indices inside a binding never overflow).
pub(crate) fn chunk_limit(gpu: &Gpu) -> u64 {
    gpu.caps.max_binding.min(MAX_CHUNK_BYTES)
}

/// Splits `rows` rows into consecutive ranges such that, for every tensor `t` whose row is
/// `row_bytes[t]` bytes, the chunk's bytes fit [`chunk_limit`] and start at an offset aligned
/// to `min_storage_buffer_offset_alignment`. One range when everything fits; when the smallest
/// aligned group of rows (the rows it takes to realign every tensor) is too large,
/// `Err(LimitExceeded)`.
pub(crate) fn row_chunks(
    gpu: &Gpu,
    what: &str,
    rows: u64,
    row_bytes: &[u64],
) -> Result<Vec<Range<u64>>> {
    let align = u64::from(gpu.caps.limits.min_storage_buffer_offset_alignment).max(4);
    // The alignment is a power of two, so the rows needed to realign each tensor are powers of
    // two too, and their least common multiple is the largest.
    let step = row_bytes
        .iter()
        .map(|&b| align >> b.trailing_zeros().min(align.trailing_zeros()))
        .max()
        .unwrap_or(1);
    let widest = row_bytes.iter().copied().max().unwrap_or(1).max(1);
    let limit = chunk_limit(gpu);
    let per = if rows * widest <= limit {
        rows
    } else {
        (limit / widest) / step * step
    };
    if per == 0 {
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

/// The binding of the per-row activation scales (4 bytes a row) of the rows `rows` of a chunked
/// launch: the byte range from the aligned offset at or before the chunk's first row, and the
/// chunk's first row within it (the kernels' `row_base` / `m_base`). Bound whole, the scales of
/// tens of millions of rows (small K) exceeded the binding limit although the rows were chunked
/// to fit it (a reviewer's `[20000, 64]` under a 64 KiB cap: `LimitExceeded` where cpu-ref
/// gives the result).
pub(crate) fn scale_rows(gpu: &Gpu, rows: &Range<u64>) -> ScaleRows {
    let align = u64::from(gpu.caps.limits.min_storage_buffer_offset_alignment).max(4);
    let offset = 4 * rows.start / align * align;
    ScaleRows {
        offset,
        size: 4 * rows.end - offset,
        base: (rows.start - offset / 4) as u32,
    }
}

/// [`scale_rows`]: a byte range of a scales buffer and a row within it.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ScaleRows {
    /// First byte bound (aligned).
    pub offset: u64,
    /// Bytes bound.
    pub size: u64,
    /// The chunk's first row, counted from `offset`.
    pub base: u32,
}

/// `[rows, cols]` of a rank-2 tensor, or `ShapeMismatch` naming `op`.
pub(crate) fn matrix_shape(op: &'static str, t: &Tensor) -> Result<(usize, usize)> {
    match *t.shape() {
        [rows, cols] => Ok((rows, cols)),
        ref s => Err(Error::ShapeMismatch {
            op,
            detail: format!("expected a rank-2 [rows, K] tensor, got shape {s:?}"),
        }),
    }
}

/// Rejects `K ≥ 2^24` exactly as cpu-ref does (exact i32 accumulation needs `K < 2^24`).
pub(crate) fn check_k(op: &'static str, k: usize) -> Result<()> {
    if k >= 1 << 24 {
        return Err(Error::CpuRef(bitnet_cpu_ref::Error::SizeOverflow {
            op,
            what: "K must be below 2^24 for exact i32 accumulation",
        }));
    }
    Ok(())
}

/// Rejects a tensor of another engine.
pub(crate) fn same_engine(engine: &Engine, op: &'static str, t: &Tensor) -> Result<()> {
    engine.expect_same(t.engine(), op)
}

impl Engine {
    /// Quantizes resident `F32` activations `[M, K]` per row to a `QuantizedI8` tensor (packed
    /// rows + clamped absmax), bit-identical to [`bitnet_cpu_ref::quantize_activations`].
    /// Errors: wrong dtype or rank, `K ≥ 2^24`, NaN/Inf in `x` (`Error::NonFinite`; on the GPU
    /// by reading or checking the output, or a tensor computed from it).
    pub fn quantize_activations_tensor(&self, x: &Tensor) -> Result<Tensor> {
        self.quantize_activations_as("quantize_activations", x)
    }

    /// [`Engine::quantize_activations_tensor`] reporting errors under `op` (BitLinear on f32
    /// activations reports them as `"bitlinear"`, like cpu-ref).
    pub(crate) fn quantize_activations_as(&self, op: &'static str, x: &Tensor) -> Result<Tensor> {
        x.expect_dtype(op, DType::F32)?;
        let (m, k) = matrix_shape(op, x)?;
        check_k(op, k)?;
        same_engine(self, op, x)?;
        let on_host = || -> Result<Tensor> {
            // `cpu_work`: off the global rayon pool on a batcher thread (`batching.rs`).
            let hx = host_f32(x)?;
            let q = crate::batching::cpu_work(|| {
                bitnet_cpu_ref::quantize_activations(hx.values(), m, k)
            })
            .map_err(|e| rename(e, op))?;
            self.upload_activations(&q)
        };
        // On CPU adapters a row whose quantization loops past lavapipe's limit runs on cpu-ref.
        self.tensor_op(
            &[x],
            act_quant_loops(k),
            |gpu| {
                if let Some(out) = self.msl_quantize_activations(gpu, op, x, m, k)? {
                    return Ok(out);
                }
                let out = self.empty(gpu, op, &[m, k], DType::QuantizedI8)?;
                let awpr = activation_words_per_row(k) as u64;
                // K % 4 == 0: every row starts 16-byte aligned, one float vec4 per packed word.
                let vec4 = k.is_multiple_of(4);
                let kernel = if vec4 { &ACT_QUANT_VEC4 } else { &ACT_QUANT };
                let (tpr, regs) = act_quant_threads(m, k);
                let group = gpu.next_seq();
                for r in row_chunks(gpu, op, m as u64, &[4 * k as u64, 4 * awpr])? {
                    let rows = r.end - r.start;
                    let scales = scale_rows(gpu, &r);
                    let mut launch = Launch::new(gpu, kernel)
                        .input_range(x, 4 * k as u64 * r.start, 4 * k as u64 * rows)
                        .output_range(&out, 4 * awpr * r.start, 4 * awpr * rows)
                        .output_scales_range(&out, scales.offset, scales.size)
                        .params(&ActParams {
                            rows: rows as u32,
                            k: k as u32,
                            words_per_row: awpr as u32,
                            row_base: scales.base,
                        })
                        .chunk_of(group)
                        .check_finite(NonFiniteCheck::new(op, "x").at(r.start * k as u64));
                    launch = if vec4 {
                        launch
                            .constant("TPR", f64::from(tpr))
                            .constant("REGS", f64::from(regs))
                            .workgroups(rows.div_ceil(u64::from(ACT_QUANT_WORKGROUP / tpr)))
                    } else {
                        launch.workgroups(rows)
                    };
                    launch.run()?;
                }
                Ok(out)
            },
            on_host,
        )
    }
}

/// Threads per row (`TPR`) and vec4 registers per thread (`REGS`) of `act_quant_vec4` for `m`
/// rows of `k` values: every thread loads its whole share up front (one read of x, all loads in
/// flight at once) where at most [`ACT_QUANT_MAX_REGS`] vec4 per thread hold it. A few rows
/// (latency-bound) take whole workgroups; many rows take the fewest threads (64 to 256) whose
/// shares fit the registers, so a workgroup holds several rows and amortizes its fixed costs.
/// H200, same run, overlapped M = 512 (% of copy bandwidth, two samples): K = 2560 45-53 → 72-73
/// (64 threads), K = 4096 61-67 → 72-73 (64), K = 6912 64-73 → 69-75 (128), K = 14336 61-62 →
/// 74 (256 with 14 registers); 32 and 16 threads per row were slower everywhere.
fn act_quant_threads(m: usize, k: usize) -> (u32, u32) {
    let kv = k / 4;
    let regs = |tpr: u32| {
        kv.div_ceil(tpr as usize)
            .clamp(1, ACT_QUANT_MAX_REGS as usize) as u32
    };
    if m <= ACT_QUANT_FEW_ROWS {
        return (ACT_QUANT_WORKGROUP, regs(ACT_QUANT_WORKGROUP));
    }
    let tpr = [64, 128, ACT_QUANT_WORKGROUP]
        .into_iter()
        .find(|&t| kv.div_ceil(t as usize) <= ACT_QUANT_MAX_REGS as usize)
        .unwrap_or(ACT_QUANT_WORKGROUP);
    (tpr, regs(tpr))
}

/// Threads of an `act_quant_vec4` workgroup (its `@workgroup_size`).
const ACT_QUANT_WORKGROUP: u32 = 256;

/// Most vec4 an `act_quant_vec4` thread keeps in registers (the kernel's array size).
const ACT_QUANT_MAX_REGS: u32 = 16;

/// Rows up to which activation quantization runs one row per workgroup (a latency-bound call:
/// more threads per row, fewer loads per thread).
const ACT_QUANT_FEW_ROWS: usize = 32;

/// A cpu-ref error re-labelled with `op` (cpu-ref's public quantizer reports
/// `"quantize_activations"`; BitLinear's own path reports `"bitlinear"`).
fn rename(e: bitnet_cpu_ref::Error, op: &'static str) -> Error {
    match Error::from(e) {
        Error::NonFinite { tensor, index, .. } => Error::NonFinite { op, tensor, index },
        other => other,
    }
}
