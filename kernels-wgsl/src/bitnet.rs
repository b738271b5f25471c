//! BitNet kernels: weight and activation quantization, BitLinear GEMV/GEMM.
//!
//! Every kernel follows `bitnet_cpu_ref::layout` operation for operation, so quantized weights,
//! scales, quantized activations, accumulators and outputs match the CPU reference bit for bit.
//!
//! # Variants
//!
//! | op | fast variant (condition) | generic variant |
//! |---|---|---|
//! | weight quant | [`WEIGHT_QUANT_FUSED`] (K % 16 == 0, w in one binding: sum, scale and pack in one dispatch) | sum and pack below |
//! | weight sum | [`WEIGHT_QUANT_SUM`] (two last levels in one dispatch) | — |
//! | weight pack | [`WEIGHT_QUANT_PACK_VEC4`] (K % 16 == 0) | [`WEIGHT_QUANT_PACK`] |
//! | activation quant | [`ACT_QUANT_VEC4`] (K % 4 == 0) | [`ACT_QUANT`] |
//! | BitLinear M ≤ 8, f32 x | [`BITLINEAR_GEMV_FUSED_SUBGROUP`] (K % 64 == 0, K ≤ [`GEMV_FUSED_MAX_K`]; a workgroup per row and row block) | quant + GEMV |
//! | BitLinear M ≤ 8 | [`BITLINEAR_GEMV_VEC4_SUBGROUP`] (K % 64 == 0) | [`BITLINEAR_GEMV_SUBGROUP`] / [`BITLINEAR_GEMV_WORKGROUP`] |
//! | BitLinears sharing x, M ≤ 8, f32 x | [`BITLINEAR_GEMV_FUSED_GROUP_SUBGROUP`] (the fused GEMV over ≤ 3 matrices' concatenated rows) | one fused GEMV per matrix |
//! | gated feed-forward (act(gate · x) · (up · x)), M ≤ 8, f32 x | [`BITLINEAR_GEMV_FUSED_GATED_SUBGROUP`] (the fused GEMV over gate's and up's interleaved rows, the activation in its store) | grouped GEMV + gated op |
//! | (residual add and) RMSNorm, then a group or the gated feed-forward, M ≤ 8 | [`BITLINEAR_GEMV_FUSED_GROUP_NORM_SUBGROUP`] / [`BITLINEAR_GEMV_FUSED_GATED_NORM_SUBGROUP`] (every workgroup normalizes its own row) | norm op, then the group or gated GEMV |
//! | chain of M = 1 BitLinears, f32 x | [`BITLINEAR_CHAIN_COHERENT_SUBGROUP`] (one dispatch; K as the fused GEMV; outputs declared coherent) | [`BITLINEAR_CHAIN_SUBGROUP`] (atomic outputs), then one fused GEMV per linear |
//! | BitLinear M ≤ 8, f32 x | [`BITLINEAR_GEMV_BATCH_SUBGROUP`] (K % 64 == 0, quantization fused, K tiles) | quant + GEMV |
//! | BitLinear M ≤ 8, f32 x (autotune candidate) | [`BITLINEAR_GEMV_LEAN_SUBGROUP`] | quant + GEMV |
//! | BitLinear M ≤ 8 (autotune candidate) | [`BITLINEAR_GEMV_LEAN_Q_SUBGROUP`] (K % 64 == 0) | — |
//! | BitLinear M ≤ 8 (autotune candidate) | [`BITLINEAR_GEMV_STAGED_SUBGROUP`] (K % 64 == 0, rows staged in K tiles) | — |
//! | BitLinear M > 8, K split | either coop GEMM or [`BITLINEAR_GEMM`] per K slice, then [`BITLINEAR_SPLIT_SUM`] | – |
//! | BitLinear M > 8 | [`BITLINEAR_GEMM_COOP_I8_SUBGROUP`] (Vulkan: int8 tensor cores through SPIR-V passthrough, 40.5 KiB) or [`BITLINEAR_GEMM_COOP_SUBGROUP`] (f16 tensor cores, 44.5 KiB); subgroup size 32, 512-thread workgroups, each verified on the device first | [`BITLINEAR_GEMM`] (dot4, any K) |
//!
//! The `_subgroup` kernels need `Features::SUBGROUP` and work for any subgroup size 4..=128.
//! Tunables are WGSL override constants (set per launch by the engine): `TPR` (lanes per 4-row
//! block) of the vec4 GEMVs, `MR` (activation rows) of [`BITLINEAR_GEMV_VEC4_SUBGROUP`] and
//! [`BITLINEAR_GEMV_BATCH_SUBGROUP`], `T`
//! (outputs per thread and dimension) of [`BITLINEAR_GEMM`].
//!
//! # Shared snippets
//!
//! Some kernels share WGSL code: the correctly rounded division (`exact_div.wgsl`; its short-chain
//! special case `127 / a` for the activation quantizers, `exact_div_127.wgsl`), the BitLinear
//! parameters and epilogue (`bitlinear_common.wgsl`; the output store, `bitlinear_write.wgsl`, is
//! separate because the chain kernel stores atomically), the vec4 activation quantizers' absmax
//! step and rounding (`act_quant_common.wgsl`), the scalar-load bindings of the generic
//! GEMVs (`bitlinear_bindings.wgsl`), their accumulation loop (`bitlinear_gemv_common.wgsl`),
//! the bindings and row blocks of the vec4 GEMVs (`bitlinear_bindings_vec4.wgsl`,
//! `bitlinear_gemv_blocks.wgsl`), the bindings of the GEMMs (`bitlinear_bindings_gemm.wgsl`) and
//! the body of both int8 cooperative-matrix GEMMs (`bitlinear_gemm_coop_i8.wgsl`, behind a header
//! that sets its tile width). WGSL has no `#include`, so
//! `kernel!` (a compile-time macro) concatenates the snippet files in front of the kernel file;
//! WGSL module-scope declarations are order independent, so snippets need no forward
//! declarations. Snippets hold no entry point, and each kernel source below is complete, valid
//! WGSL on its own.
//!
//! # Parameters, bindings, status
//!
//! Engine conventions (`engine/src/launch.rs`): group 0 holds the kernel's buffers in the binding
//! order listed on each constant below; group 1 holds the engine's resources — binding 0 the
//! per-call `Params` struct (documented in each `.wgsl` file; the engine rewrites the uniform
//! declaration into `var<immediate>` when the device has immediates), binding 1 the non-finite
//! status words (`atomicMin` of the smallest offending flat index). The grid is linear: workgroup
//! index `wid.x + wid.y * nwg.x` (the engine folds large counts into y).

use crate::KernelSource;

/// Concatenates shader files (snippets first) into one `&'static str` at compile time.
macro_rules! kernel {
    ($($file:literal),+ $(,)?) => {
        concat!($(include_str!(concat!("../shaders/", $file)), "\n"),+)
    };
}

// The fused GEMV's multi-matrix variants (grouped, gated) and the chain kernel.
#[path = "bitnet_fused.rs"]
mod fused;
pub use fused::{
    BITLINEAR_CHAIN_COHERENT_SUBGROUP, BITLINEAR_CHAIN_SUBGROUP,
    BITLINEAR_GEMV_FUSED_GATED_NORM_SUBGROUP, BITLINEAR_GEMV_FUSED_GATED_SUBGROUP,
    BITLINEAR_GEMV_FUSED_GROUP_NORM_SUBGROUP, BITLINEAR_GEMV_FUSED_GROUP_SUBGROUP, CHAIN_UNWRITTEN,
    GEMV_GROUP_MAX_MATRICES,
};

// The GEMM family (M > 8: tiled, cooperative-matrix, split-K epilogue) and its tile constants.
#[path = "bitnet_gemm.rs"]
mod gemm;
pub use gemm::{
    BITLINEAR_GEMM, BITLINEAR_GEMM_COOP_I8_N96_SUBGROUP, BITLINEAR_GEMM_COOP_I8_SUBGROUP,
    BITLINEAR_GEMM_COOP_SUBGROUP, BITLINEAR_SPLIT_SUM, GEMM_COOP_I8_N96_THREADS,
    GEMM_COOP_I8_N96_TILE_N, GEMM_COOP_I8_WORKGROUP_BYTES, GEMM_COOP_THREADS, GEMM_COOP_TILE_M,
    GEMM_COOP_TILE_N, GEMM_COOP_WORKGROUP_BYTES, GEMM_THREADS_PER_DIM,
};

/// Values per block of the canonical absolute-value sum (`layout::SUM_BLOCK`): one workgroup of
/// [`WEIGHT_QUANT_SUM`] per block.
pub const SUM_BLOCK: u32 = 4096;

/// Most blocks the finalizing (last) level of [`WEIGHT_QUANT_SUM`] takes in one workgroup.
pub const SUM_FINAL_BLOCKS: u32 = 64;

/// Workgroup size of [`WEIGHT_QUANT_PACK`] (one thread per packed word).
pub const WEIGHT_PACK_WORKGROUP: u32 = 256;

/// Packed words per workgroup of [`WEIGHT_QUANT_PACK_VEC4`].
pub const WEIGHT_PACK_VEC4_WORDS: u32 = 256;

/// Weight rows per workgroup of the generic GEMV kernels.
pub const GEMV_ROWS: u32 = 4;

/// Largest M handled by the GEMV kernels; larger M uses [`BITLINEAR_GEMM`].
pub const GEMV_MAX_M: u32 = 8;

/// Threads per workgroup of the vec4 GEMV kernels; a workgroup owns `4 * GEMV_VEC4_THREADS / TPR`
/// weight rows.
pub const GEMV_VEC4_THREADS: u32 = 256;

/// Largest K of [`BITLINEAR_GEMV_FUSED_SUBGROUP`] (its quantized row lives in workgroup memory).
pub const GEMV_FUSED_MAX_K: u32 = 15360;

/// Weight quantization pass (a), one workgroup per 4096-value block: one level of the canonical
/// absolute-value sum; on the last level (`finalize = 1`, one workgroup, at most
/// [`SUM_FINAL_BLOCKS`] blocks) the two last levels and the scale `s`. Bindings: 0
/// `input: f32[]` (read), 1 `output: f32[]` (block sums, or the ternary tensor's scale). Status:
/// word 0 first non-finite input (first level), word 1 the sum overflowed.
pub const WEIGHT_QUANT_SUM: KernelSource = KernelSource {
    name: "weight_quant_sum",
    source: kernel!(
        "exact_div.wgsl",
        "weight_quant_sum_common.wgsl",
        "weight_quant_sum.wgsl"
    ),
};

/// Weight quantization pass (b): quantize with `inv_s = 1 / s` and pack 16 codes per `u32`, one
/// thread per word (any K). Bindings: 0 `weights: f32[]` (read), 1 `scale: f32[1]` (read),
/// 2 `packed: u32[]`.
pub const WEIGHT_QUANT_PACK: KernelSource = KernelSource {
    name: "weight_quant_pack",
    source: kernel!(
        "exact_div.wgsl",
        "weight_quant_pack_common.wgsl",
        "weight_quant_pack.wgsl"
    ),
};

/// Weight quantization pass (b) for K % 16 == 0: coalesced vec4 loads, [`WEIGHT_PACK_VEC4_WORDS`]
/// words per workgroup. Same bindings as [`WEIGHT_QUANT_PACK`].
pub const WEIGHT_QUANT_PACK_VEC4: KernelSource = KernelSource {
    name: "weight_quant_pack_vec4",
    source: kernel!(
        "exact_div.wgsl",
        "weight_quant_pack_common.wgsl",
        "weight_quant_pack_vec4.wgsl"
    ),
};

/// Weight quantization in one dispatch for K % 16 == 0: `blocks` = ceil(N K / 4096) workgroups
/// of the canonical sum, the last of which makes `s`, then `blocks` pack workgroups (256 words
/// each, from the end of the matrix) that wait inside the dispatch for `s` (override constants
/// `SPIN_LIMIT`, `POLL_RMW` as [`BITLINEAR_CHAIN_SUBGROUP`]; `POLL_DELAY`, the pause between
/// two polls on GPUs). Bindings: 0 `weights: f32[]` (read), 1 `packed: u32[]`, 2
/// `scale: f32[1]`. Status: word 0 first non-finite `w`, word 1 the sum overflowed, word 2 the
/// run aborted, word 3 the kernel's state (never an error).
pub const WEIGHT_QUANT_FUSED: KernelSource = KernelSource {
    name: "weight_quant_fused",
    source: kernel!(
        "exact_div.wgsl",
        "weight_quant_sum_common.wgsl",
        "weight_quant_pack_common.wgsl",
        "weight_quant_fused.wgsl"
    ),
};

/// Activation quantization, one workgroup per row (any K): absmax, `127 / a`, quantize, pack 4
/// per `u32`. Bindings: 0 `x: f32[]` (read), 1 `packed: u32[]`, 2 `absmax: f32[]`. Status: word 0
/// first non-finite `x` index.
pub const ACT_QUANT: KernelSource = KernelSource {
    name: "act_quant",
    source: kernel!("exact_div.wgsl", "exact_div_127.wgsl", "act_quant.wgsl"),
};

/// Activation quantization for K % 4 == 0, vec4 loads: `TPR` threads per row (override, 16 to
/// 256; 256 / `TPR` rows per workgroup) with `REGS` vec4 each kept in registers (override,
/// 1..=16). Same bindings and status as [`ACT_QUANT`].
pub const ACT_QUANT_VEC4: KernelSource = KernelSource {
    name: "act_quant_vec4",
    source: kernel!(
        "exact_div.wgsl",
        "exact_div_127.wgsl",
        "act_quant_common.wgsl",
        "act_quant_vec4.wgsl"
    ),
};

/// BitLinear GEMV (M ≤ [`GEMV_MAX_M`], any K) with subgroup reductions; needs `SUBGROUP` (any
/// subgroup size 4..=128). [`GEMV_ROWS`] weight rows per workgroup. Bindings: 0 `weights: u32[]`,
/// 1 `weight_scale: f32[1]`, 2 `act: u32[]`, 3 `act_absmax: f32[]` (all read), 4 `out: u32[]`
/// (f32 bits of y, or i32 bits of acc with `mode = 1`). Status: word 0 first non-finite y index.
pub const BITLINEAR_GEMV_SUBGROUP: KernelSource = KernelSource {
    name: "bitlinear_gemv_subgroup",
    source: kernel!(
        "bitlinear_common.wgsl",
        "bitlinear_write.wgsl",
        "bitlinear_bindings.wgsl",
        "bitlinear_gemv_common.wgsl",
        "bitlinear_gemv_subgroup.wgsl"
    ),
};

/// BitLinear GEMV (M ≤ [`GEMV_MAX_M`], any K) with workgroup-memory reductions, for adapters
/// without `SUBGROUP`. Same bindings as [`BITLINEAR_GEMV_SUBGROUP`].
pub const BITLINEAR_GEMV_WORKGROUP: KernelSource = KernelSource {
    name: "bitlinear_gemv_workgroup",
    source: kernel!(
        "bitlinear_common.wgsl",
        "bitlinear_write.wgsl",
        "bitlinear_bindings.wgsl",
        "bitlinear_gemv_common.wgsl",
        "bitlinear_gemv_workgroup.wgsl"
    ),
};

/// BitLinear GEMV for M ≤ [`GEMV_MAX_M`] and K % 64 == 0: vec4 weight loads, 4-row blocks of
/// `TPR` lanes, `MR` = M (override constants). Needs `SUBGROUP`. Bindings as
/// [`BITLINEAR_GEMV_SUBGROUP`] (weights and activations read as vec4).
pub const BITLINEAR_GEMV_VEC4_SUBGROUP: KernelSource = KernelSource {
    name: "bitlinear_gemv_vec4_subgroup",
    source: kernel!(
        "bitlinear_common.wgsl",
        "bitlinear_write.wgsl",
        "bitlinear_bindings_vec4.wgsl",
        "bitlinear_gemv_blocks.wgsl",
        "bitlinear_gemv_vec4_subgroup.wgsl"
    ),
};

/// BitLinear on M ≤ 8 f32 activation rows with the activation quantization fused in, one
/// workgroup per activation row (grid x) and row block (grid y, z): K % 64 == 0,
/// K ≤ [`GEMV_FUSED_MAX_K`], override constants `TPR`, `DEPTH`. Needs `SUBGROUP`. Bindings:
/// 0 `weights: u32[]`, 1 `weight_scale: f32[1]`, 2 `x: f32[M, K]` (all read), 3 `out: u32[]`.
/// Status: word 0 first non-finite x index (flat over [M, K]), word 1 first non-finite y index.
pub const BITLINEAR_GEMV_FUSED_SUBGROUP: KernelSource = KernelSource {
    name: "bitlinear_gemv_fused_subgroup",
    source: kernel!(
        "exact_div.wgsl",
        "exact_div_127.wgsl",
        "bitlinear_common.wgsl",
        "bitlinear_write.wgsl",
        "bitlinear_gemv_blocks.wgsl",
        "act_quant_common.wgsl",
        "bitlinear_gemv_fused_common.wgsl",
        "bitlinear_gemv_fused_body.wgsl",
        "bitlinear_gemv_fused_input.wgsl",
        "bitlinear_gemv_fused_subgroup.wgsl"
    ),
};

/// BitLinear on 1..=[`GEMV_MAX_M`] f32 activation rows (batched decode) with the activation
/// quantization fused in: K % 64 == 0 (any K: the quantized rows are staged in K tiles of
/// [`GEMV_BATCH_TILE_VEC4`] vec4 of workgroup memory), override constants `TPR` and `MR` = M;
/// each weight vec4 is loaded once and applied to all M rows. Needs `SUBGROUP`. Bindings as
/// [`BITLINEAR_GEMV_FUSED_SUBGROUP`] (2 `x: f32[M, K]`). Status: word 0 first non-finite x
/// index (flat over `[M, K]`), word 1 first non-finite y index.
pub const BITLINEAR_GEMV_BATCH_SUBGROUP: KernelSource = KernelSource {
    name: "bitlinear_gemv_batch_subgroup",
    source: kernel!(
        "exact_div.wgsl",
        "exact_div_127.wgsl",
        "bitlinear_common.wgsl",
        "bitlinear_write.wgsl",
        "act_quant_common.wgsl",
        "bitlinear_gemv_blocks.wgsl",
        "bitlinear_gemv_batch_subgroup.wgsl"
    ),
};

/// BitLinear GEMV on quantized activations for M ≤ [`GEMV_MAX_M`] and K % 64 == 0, with the
/// activation rows staged in workgroup memory in K tiles (the layout and the one-load-for-all-rows
/// GEMV of [`BITLINEAR_GEMV_BATCH_SUBGROUP`]); override constants `TPR` and `MR` = M. Needs
/// `SUBGROUP`. Bindings and status as [`BITLINEAR_GEMV_VEC4_SUBGROUP`].
pub const BITLINEAR_GEMV_STAGED_SUBGROUP: KernelSource = KernelSource {
    name: "bitlinear_gemv_staged_subgroup",
    source: kernel!(
        "bitlinear_common.wgsl",
        "bitlinear_write.wgsl",
        "bitlinear_bindings_vec4.wgsl",
        "bitlinear_gemv_blocks.wgsl",
        "bitlinear_gemv_staged_subgroup.wgsl"
    ),
};

/// The batched fused GEMV arranged for a short critical path (autotune candidate; see the
/// `.wgsl`): K tiles of [`GEMV_LEAN_TILE_VEC4`] vec4, subgroup size ≥ 8,
/// [`GEMV_LEAN_WORKGROUP_BYTES`] of workgroup memory. As [`BITLINEAR_GEMV_BATCH_SUBGROUP`] otherwise.
pub const BITLINEAR_GEMV_LEAN_SUBGROUP: KernelSource = KernelSource {
    name: "bitlinear_gemv_lean_subgroup",
    source: kernel!(
        "exact_div.wgsl",
        "exact_div_127.wgsl",
        "bitlinear_common.wgsl",
        "bitlinear_write.wgsl",
        "act_quant_common.wgsl",
        "bitlinear_gemv_blocks.wgsl",
        "bitlinear_gemv_lean_subgroup.wgsl"
    ),
};
/// The vec4 GEMV on quantized activations with the lean GEMV's barrier-free epilogue (autotune
/// candidate after act_quant; see the `.wgsl`): subgroup size ≥ 8. As
/// [`BITLINEAR_GEMV_VEC4_SUBGROUP`] otherwise.
pub const BITLINEAR_GEMV_LEAN_Q_SUBGROUP: KernelSource = KernelSource {
    name: "bitlinear_gemv_lean_q_subgroup",
    source: kernel!(
        "bitlinear_common.wgsl",
        "bitlinear_write.wgsl",
        "bitlinear_bindings_vec4.wgsl",
        "bitlinear_gemv_blocks.wgsl",
        "bitlinear_gemv_lean_q_subgroup.wgsl"
    ),
};
/// Vec4 per K tile of [`BITLINEAR_GEMV_LEAN_SUBGROUP`], all rows together (28 KiB).
pub const GEMV_LEAN_TILE_VEC4: u32 = 1792;
/// Workgroup bytes of [`BITLINEAR_GEMV_LEAN_SUBGROUP`] (tile, row maxima, block slots).
pub const GEMV_LEAN_WORKGROUP_BYTES: u32 = 16 * GEMV_LEAN_TILE_VEC4 + 4 * 256 + 16 * 64;

/// Quantized-activation vec4 (16 values each) of one K tile of
/// [`BITLINEAR_GEMV_BATCH_SUBGROUP`], all rows together: a tile covers
/// `GEMV_BATCH_TILE_VEC4 / (4 M)` weight vec4 steps (64 values each) per row.
pub const GEMV_BATCH_TILE_VEC4: u32 = 896;

/// Every BitNet kernel of this module (every variant).
pub const ALL: &[KernelSource] = &[
    WEIGHT_QUANT_SUM,
    WEIGHT_QUANT_PACK,
    WEIGHT_QUANT_PACK_VEC4,
    WEIGHT_QUANT_FUSED,
    ACT_QUANT,
    ACT_QUANT_VEC4,
    BITLINEAR_GEMV_SUBGROUP,
    BITLINEAR_GEMV_WORKGROUP,
    BITLINEAR_GEMV_VEC4_SUBGROUP,
    BITLINEAR_GEMV_FUSED_SUBGROUP,
    BITLINEAR_GEMV_FUSED_GROUP_SUBGROUP,
    BITLINEAR_GEMV_FUSED_GROUP_NORM_SUBGROUP,
    BITLINEAR_GEMV_FUSED_GATED_SUBGROUP,
    BITLINEAR_GEMV_FUSED_GATED_NORM_SUBGROUP,
    BITLINEAR_GEMV_BATCH_SUBGROUP,
    BITLINEAR_CHAIN_SUBGROUP,
    BITLINEAR_CHAIN_COHERENT_SUBGROUP,
    BITLINEAR_GEMV_STAGED_SUBGROUP,
    BITLINEAR_GEMV_LEAN_SUBGROUP,
    BITLINEAR_GEMV_LEAN_Q_SUBGROUP,
    BITLINEAR_GEMM,
    BITLINEAR_GEMM_COOP_SUBGROUP,
    BITLINEAR_GEMM_COOP_I8_SUBGROUP,
    BITLINEAR_GEMM_COOP_I8_N96_SUBGROUP,
    BITLINEAR_SPLIT_SUM,
];

#[cfg(test)]
#[path = "bitnet_exact_div_tests.rs"]
mod tests;
