//! Weight quantization on resident tensors: `F32 [N, K]` → `Ternary` (packed codes + scale `s`),
//! bit-identical to cpu-ref.
//!
//! Two ways on the GPU, with the same arithmetic (`kernels-wgsl/src/bitnet.rs`):
//! - **one dispatch** (`weight_quant_fused.wgsl`) for K % 16 == 0 and `w` within one storage
//!   binding: the sum workgroups publish their block sums, the last one makes `s`, and the pack
//!   workgroups — started after them, weights already loaded — wait inside the dispatch for `s`
//!   and pack from the end of the matrix, whose weights the sum read last (likely still in the L2 cache).
//!   No barrier between the passes, and calls with nothing in common overlap on the GPU.
//! - **level by level** otherwise: one dispatch per level of the canonical sum (the last one also
//!   makes `s`), then a pack dispatch, each behind a pipeline barrier.
//!
//! The one-dispatch way runs where it was checked against cpu-ref: NVIDIA GPUs (on the H200)
//! and CPU adapters (on lavapipe, in CI; other software adapters are taken to behave alike, as
//! they run workgroups on CPU threads). Its wait assumes GPUs start workgroups in
//! index order, as the linear chain does (`bitlinear_chain_subgroup.wgsl`); the wait is bounded,
//! and a run that gave up reads as [`Error::Aborted`](crate::Error::Aborted) — a GPU fault, so the host-facing
//! `quantize_weights` re-runs on the CPU — after which the device quantizes level by level
//! (`Gpu::waits_gave_up`). On CPU adapters (lavapipe) a workgroup may wait for a
//! whole other thread's share of the grid, so only small matrices take the one-dispatch way there.
//!
//! H200, same command, serial / overlapped calls (% of copy bandwidth): 2560×2560 26.2 → 24.5 µs,
//! 48 → 60 %; 640×2560 14.7 → 12.1 µs, 22 → 53 %; 6912×2560 53.1 → 51.7 µs, 65 → 72 %;
//! 14336×4096 145.4 → 146.1 µs, 79 → 80 %.

use bitnet_cpu_ref::layout::words_per_row;
use bitnet_kernels_wgsl::bitnet as kernels;

use super::bitnet::{check_k, chunk_limit, matrix_shape, row_chunks, same_engine};
use super::float_args::host_f32;
use super::in_dispatch_wait::{CPU_ADAPTER_MAX_BYTES, cpu_adapter, wait_constants, waits_allowed};
use crate::context::Gpu;
use crate::engine::Engine;
use crate::error::Result;
use crate::hazard::launch_overlaps;
use crate::launch::Launch;
use crate::pipelines::{Access, Kernel};
use crate::status::{ABORTED, KERNEL_STATE, NonFiniteCheck};
use crate::tensor::{DType, Tensor};

use Access::{Read, ReadWrite};

const WEIGHT_SUM: Kernel = Kernel::new(kernels::WEIGHT_QUANT_SUM, "main", &[Read, ReadWrite]);
const WEIGHT_PACK: Kernel =
    Kernel::new(kernels::WEIGHT_QUANT_PACK, "main", &[Read, Read, ReadWrite]);
const WEIGHT_PACK_VEC4: Kernel = Kernel::new(
    kernels::WEIGHT_QUANT_PACK_VEC4,
    "main",
    &[Read, Read, ReadWrite],
);
const WEIGHT_FUSED: Kernel = Kernel::new(
    kernels::WEIGHT_QUANT_FUSED,
    "main",
    &[Read, ReadWrite, ReadWrite],
);

/// cpu-ref's name for an overflowing weight sum (status word 1 of the last sum level).
const SUM_OVERFLOW: &str = "sum of |w| (overflows f32)";

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct SumParams {
    len: u32,
    block_base: u32,
    check_input: u32,
    finalize: u32,
    count: f32,
    /// Always 0 (the kernel's runtime zero for its optimization barrier).
    zero: u32,
}

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct PackParams {
    rows: u32,
    k: u32,
    words_per_row: u32,
    /// Always 0 (the kernels' runtime zero for their optimization barrier).
    zero: u32,
}

/// Chunks of 4096 values per pack workgroup of `weight_quant_fused.wgsl` for a matrix of
/// `blocks` such chunks: four where the dispatch overlaps earlier work (no barrier before it,
/// `hazard.rs`: a model's matrices quantized one after another) or the matrix is large, one for
/// a small matrix behind a barrier. H200, 4 against 1: overlapped calls 2560 × 2560 61.7 → 77.1 %
/// of copy bandwidth, 640 × 2560 55.6 → 80.0 %, 6912 × 2560 72.6 → 82.5 %; behind a barrier
/// 640 × 2560 12.2 → 16.2 µs and 2560 × 2560 24.5 → 26.6 µs, but 6912 × 2560 51.7 → 47.9 µs.
fn pack_chunks(blocks: u64, overlaps: bool) -> u64 {
    if overlaps || blocks >= PACK_CHUNKS_SERIAL_MIN_BLOCKS {
        4
    } else {
        1
    }
}

/// Fewest 4096-value blocks (16M values) for which a call behind a barrier packs four chunks per
/// workgroup: measured on both sides at 1600 (slower with four) and 4320 blocks (faster).
const PACK_CHUNKS_SERIAL_MIN_BLOCKS: u64 = 4096;

/// `Params` of `weight_quant_fused.wgsl`.
#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct FusedParams {
    len: u32,
    blocks: u32,
    count: f32,
    /// Always 0 (the kernel's runtime zero for its optimization barriers).
    zero: u32,
}

/// PCI vendor id of NVIDIA, whose GPUs ran the one-dispatch kernel against cpu-ref (H200).
const NVIDIA: u32 = 0x10de;

/// Whether `[n, k]` weights are quantized in one dispatch on `gpu` (see the module docs): an
/// adapter the kernel was checked on (NVIDIA GPUs, CPU adapters — a stale block sum there would
/// be a silently wrong scale, so other GPUs keep the level-by-level way until checked) where no
/// in-dispatch wait has given up yet (`Gpu::waits_gave_up`), K a
/// multiple of 16, `w` in one binding, the block sums within one finalizing workgroup (always,
/// below 2^30 values), and on CPU adapters a small matrix.
fn one_dispatch(gpu: &Gpu, n: usize, k: usize) -> bool {
    let bytes = 4 * (n as u64) * (k as u64);
    let mut cap = chunk_limit(gpu);
    if cpu_adapter(gpu) {
        cap = cap.min(CPU_ADAPTER_MAX_BYTES);
    }
    (cpu_adapter(gpu) || gpu.adapter_info.vendor == NVIDIA)
        && waits_allowed(gpu)
        && k.is_multiple_of(16)
        && bytes > 0
        && bytes <= cap
        && bytes / 4
            <= u64::from(kernels::SUM_BLOCK)
                * u64::from(kernels::SUM_BLOCK)
                * u64::from(kernels::SUM_FINAL_BLOCKS)
}

impl Engine {
    /// Quantizes resident `F32` weights `[N, K]` to a `Ternary` tensor (packed codes + scale `s`),
    /// bit-identical to [`bitnet_cpu_ref::quantize_weights`]. On the GPU the canonical
    /// absolute-value sum (then `s`) and quantize + pack, in one dispatch where the module docs
    /// allow it, otherwise level by level and a pack pass. Errors: wrong dtype or
    /// rank, `K ≥ 2^24`, NaN/Inf in `w` or an overflowing `|w|` sum (`Error::NonFinite`; on the
    /// GPU by reading or checking the output, or a tensor computed from it), and a one-dispatch run whose in-dispatch wait gave up
    /// (`Error::Aborted` when the output is read; this API does not re-run it on the CPU).
    pub fn quantize_weights_tensor(&self, w: &Tensor) -> Result<Tensor> {
        const OP: &str = "quantize_weights";
        w.expect_dtype(OP, DType::F32)?;
        let (n, k) = matrix_shape(OP, w)?;
        check_k(OP, k)?;
        same_engine(self, OP, w)?;
        let on_host = || -> Result<Tensor> {
            let q = bitnet_cpu_ref::quantize_weights(host_f32(w)?.values(), n, k)?;
            self.upload_ternary(&q)
        };
        self.tensor_op(
            &[w],
            0,
            |gpu| {
                if let Some(out) = self.msl_quantize_weights(gpu, w, n, k)? {
                    return Ok(out);
                }
                let out = self.empty(gpu, OP, &[n, k], DType::Ternary)?;
                if one_dispatch(gpu, n, k) {
                    self.record_weight_quant_fused(gpu, w, &out)?;
                    return Ok(out);
                }
                self.record_weight_scale(gpu, w, &out)?;
                let wpr = words_per_row(k) as u64;
                // K % 16 == 0: the packed words are a flat map of float vec4 (coalesced variant).
                let vec4 = k.is_multiple_of(16);
                let (kernel, per_group) = if vec4 {
                    (&WEIGHT_PACK_VEC4, kernels::WEIGHT_PACK_VEC4_WORDS)
                } else {
                    (&WEIGHT_PACK, kernels::WEIGHT_PACK_WORKGROUP)
                };
                for r in row_chunks(gpu, OP, n as u64, &[4 * k as u64, 4 * wpr])? {
                    let rows = r.end - r.start;
                    Launch::new(gpu, kernel)
                        .input_range(w, 4 * k as u64 * r.start, 4 * k as u64 * rows)
                        .input_scales(&out)
                        .output_range(&out, 4 * wpr * r.start, 4 * wpr * rows)
                        .params(&PackParams {
                            rows: rows as u32,
                            k: k as u32,
                            words_per_row: wpr as u32,
                            zero: 0,
                        })
                        .workgroups((rows * wpr).div_ceil(u64::from(per_group)))
                        .run()?;
                }
                Ok(out)
            },
            on_host,
        )
    }

    /// Weight quantization in one dispatch (`one_dispatch` said yes): `ceil(N K / 4096)` sum
    /// workgroups, then the pack workgroups of [`pack_chunks`] chunks each.
    fn record_weight_quant_fused(&self, gpu: &Gpu, w: &Tensor, out: &Tensor) -> Result<()> {
        const OP: &str = "quantize_weights";
        let len = w.len() as u64;
        let blocks = len.div_ceil(u64::from(kernels::SUM_BLOCK));
        let chunks = pack_chunks(blocks, launch_overlaps(gpu, &[w], &[out]));
        let launch = Launch::new(gpu, &WEIGHT_FUSED)
            .input(w)
            .output(out)
            .output_scales(out)
            .params(&FusedParams {
                len: len as u32,
                blocks: blocks as u32,
                // Rust's `as` rounding, exactly as cpu-ref computes `(N * K) as f32`.
                count: len as f32,
                zero: 0,
            });
        wait_constants(launch, gpu)
            .constant("PACK_CHUNKS", chunks as f64)
            .check_finite(NonFiniteCheck::tensors(
                OP,
                ["w", SUM_OVERFLOW, ABORTED, KERNEL_STATE],
            ))
            .workgroups(blocks + blocks.div_ceil(chunks))
            .run()
    }

    /// Pass (a) of weight quantization: the canonical sum, level by level, ending with the scale
    /// `s` written into `out`'s scale buffer by a finalizing dispatch that also sums the last
    /// level (up to [`kernels::SUM_FINAL_BLOCKS`] blocks).
    fn record_weight_scale(&self, gpu: &Gpu, w: &Tensor, out: &Tensor) -> Result<()> {
        const OP: &str = "quantize_weights";
        let block = u64::from(kernels::SUM_BLOCK);
        let total = w.len() as u64;
        // Rust's `as` rounding, exactly as cpu-ref computes `(N * K) as f32`.
        let count = total as f32;
        let check = NonFiniteCheck::tensors(OP, ["w", SUM_OVERFLOW, "", ""]);
        let mut params = SumParams {
            len: 0,
            block_base: 0,
            check_input: 1,
            finalize: 0,
            count,
            zero: 0,
        };
        if total <= block {
            params.len = total as u32;
            params.finalize = 1;
            return Launch::new(gpu, &WEIGHT_SUM)
                .input(w)
                .output_scales(out)
                .params(&params)
                .check_finite(check)
                .workgroups(1)
                .run();
        }
        // Level 1 reads w in chunks of whole 4096-value blocks (16 KiB: aligned for any device).
        let blocks_per_chunk = (chunk_limit(gpu) / (4 * block)).max(1);
        let mut len = total.div_ceil(block);
        let mut sums = self.empty(gpu, OP, &[len as usize], DType::F32)?;
        for c in 0..len.div_ceil(blocks_per_chunk) {
            let first = c * blocks_per_chunk * block;
            let values = (total - first).min(blocks_per_chunk * block);
            params.len = values as u32;
            params.block_base = (c * blocks_per_chunk) as u32;
            Launch::new(gpu, &WEIGHT_SUM)
                .input_range(w, 4 * first, 4 * values)
                .output(&sums)
                .params(&params)
                .check_finite(check.at(first))
                .workgroups(values.div_ceil(block))
                .run()?;
        }
        // Later levels: block sums of block sums (small, one binding each), until the finalizing
        // workgroup can take the rest.
        params.check_input = 0;
        params.block_base = 0;
        while len > block * u64::from(kernels::SUM_FINAL_BLOCKS) {
            let next = self.empty(gpu, OP, &[len.div_ceil(block) as usize], DType::F32)?;
            params.len = len as u32;
            Launch::new(gpu, &WEIGHT_SUM)
                .input(&sums)
                .output(&next)
                .params(&params)
                .workgroups(len.div_ceil(block))
                .run()?;
            len = len.div_ceil(block);
            sums = next;
        }
        params.len = len as u32;
        params.finalize = 1;
        Launch::new(gpu, &WEIGHT_SUM)
            .input(&sums)
            .output_scales(out)
            .params(&params)
            .check_finite(check)
            .workgroups(1)
            .run()
    }
}
