//! Float tensor kernels: matmul, elementwise, reductions, norms, softmax, activations, RoPE,
//! attention.
//!
//! Every kernel follows the engine's launch convention (`bitnet_wgpu::launch`): buffers in group 0
//! (inputs, then the output), `Params` at `@group(1) @binding(0)`, and the launch's non-finite
//! status words at `@group(1) @binding(1)` (word `t` ↔ the `t`-th checked tensor; the kernel does
//! `atomicMin` with the flat index in the full tensor). Each file's header documents its params,
//! bindings, status words, chunking and dispatch grid.

use crate::KernelSource;

/// Concatenates shader files (snippets first) into one `&'static str` at compile time; WGSL
/// module-scope declarations are order independent (an `enable` directive must come first, so a
/// file that has one is listed first). Snippets here: `exact_div.wgsl` (correctly rounded
/// division and its signed form `div_rounded`, shared with the BitNet kernels), `float_common.wgsl`
/// (the non-finite test), `elementwise_apply.wgsl` (the binary operations), `activation_common.wgsl`
/// (the unary activations, shared by unary and gated), `matmul_common.wgsl`
/// (what the float matmul kernels share, both element types), `reduce_common.wgsl` (what the two last-axis
/// reductions share) and `attention_common.wgsl` (attention's exp and chunk merge).
macro_rules! kernel {
    ($($file:literal),+ $(,)?) => {
        concat!($(include_str!(concat!("../shaders/", $file)), "\n"),+)
    };
}

/// Tiled f32 matmul `C[M,N] = A[M,K] · B`, B stored `[K,N]` or (flag `b_trans`) `[N,K]`.
/// 16×16 workgroup, 64×64 output tile, 4×4 register block; grid `(x, ceil(M/64), z)` with the
/// `ceil(N/64)` column tiles folded into x and z.
pub const MATMUL_F32: KernelSource = KernelSource {
    name: "matmul_f32",
    source: kernel!(
        "matmul_f32.wgsl",
        "matmul_tile_64.wgsl",
        "float_common.wgsl",
        "matmul_common.wgsl",
        "matmul_tiled.wgsl"
    ),
};

/// The matmul of few rows (up to 4 per workgroup, 16 columns, 16 invocations sharing each
/// column's k chunks, B read straight from memory): [`MATMUL_F32`]'s bindings, params and sums,
/// for outputs of few rows (a decode step's logits) with B stored `[K,N]`. Grid
/// `(x, ceil(M/4), z)` with the `ceil(N/16)` column tiles folded into x and z.
pub const MATMUL_F32_GEMV: KernelSource = KernelSource {
    name: "matmul_f32_gemv",
    source: kernel!(
        "matmul_f32.wgsl",
        "matmul_gemv_lanes_16.wgsl",
        "float_common.wgsl",
        "matmul_common.wgsl",
        "matmul_gemv_common.wgsl",
        "matmul_gemv_direct.wgsl"
    ),
};

/// [`MATMUL_F32_GEMV`] staging B and A through workgroup memory, so that the invocations
/// sharing a column load whole memory sectors: for B stored `[N,K]`.
pub const MATMUL_F32_GEMV_STAGED: KernelSource = KernelSource {
    name: "matmul_f32_gemv_staged",
    source: kernel!(
        "matmul_f32.wgsl",
        "matmul_gemv_lanes_16.wgsl",
        "float_common.wgsl",
        "matmul_common.wgsl",
        "matmul_gemv_common.wgsl",
        "matmul_gemv_staged.wgsl"
    ),
};

/// [`MATMUL_F32_GEMV_STAGED`] with one invocation per column and 256 columns per workgroup,
/// staging 16 k per step: for outputs of few rows and very many columns (logits against a large
/// vocabulary). Needs [`MATMUL_GEMV_WIDE_WORKGROUP_BYTES`] of workgroup memory. Grid
/// `(x, ceil(M/4), z)` with the `ceil(N/256)` column tiles folded into x and z.
pub const MATMUL_F32_GEMV_WIDE: KernelSource = KernelSource {
    name: "matmul_f32_gemv_wide",
    source: kernel!(
        "matmul_f32.wgsl",
        "matmul_gemv_wide_f32.wgsl",
        "float_common.wgsl",
        "matmul_common.wgsl",
        "matmul_gemv_common.wgsl",
        "matmul_gemv_staged.wgsl"
    ),
};

/// [`MATMUL_F32`] with a 16×64 output tile (1×4 register block): more workgroups for outputs of
/// few rows (a decode step's logits, M = 1).
pub const MATMUL_F32_T16: KernelSource = KernelSource {
    name: "matmul_f32_t16",
    source: kernel!(
        "matmul_f32.wgsl",
        "matmul_tile_16.wgsl",
        "float_common.wgsl",
        "matmul_common.wgsl",
        "matmul_tiled.wgsl"
    ),
};

/// Tiled f16 matmul (f16 in and out, f32 accumulation); requires `SHADER_F16`. Same grid and
/// bindings as [`MATMUL_F32`].
pub const MATMUL_F16: KernelSource = KernelSource {
    name: "matmul_f16",
    source: kernel!(
        "matmul_f16.wgsl",
        "matmul_tile_64.wgsl",
        "float_common.wgsl",
        "matmul_common.wgsl",
        "matmul_tiled.wgsl"
    ),
};

/// [`MATMUL_F32_GEMV`] on f16 (as [`MATMUL_F16`]).
pub const MATMUL_F16_GEMV: KernelSource = KernelSource {
    name: "matmul_f16_gemv",
    source: kernel!(
        "matmul_f16.wgsl",
        "matmul_gemv_lanes_16.wgsl",
        "float_common.wgsl",
        "matmul_common.wgsl",
        "matmul_gemv_common.wgsl",
        "matmul_gemv_direct.wgsl"
    ),
};

/// [`MATMUL_F32_GEMV_STAGED`] on f16 (as [`MATMUL_F16`]).
pub const MATMUL_F16_GEMV_STAGED: KernelSource = KernelSource {
    name: "matmul_f16_gemv_staged",
    source: kernel!(
        "matmul_f16.wgsl",
        "matmul_gemv_lanes_16.wgsl",
        "float_common.wgsl",
        "matmul_common.wgsl",
        "matmul_gemv_common.wgsl",
        "matmul_gemv_staged.wgsl"
    ),
};

/// Workgroup bytes of [`MATMUL_F32_GEMV_WIDE`]: the staged B (256 slots of 16 k, padded to 17
/// words), A (4 rows, 17 words) and the chunk sums (256 vec4). Past WebGPU's default limit, so
/// the engine checks the device's before it picks the tile. ([`MATMUL_F16_GEMV_WIDE`] stages 8 k
/// per step and stays within the default.)
pub const MATMUL_GEMV_WIDE_WORKGROUP_BYTES: u32 = 4 * (256 * 17 + 4 * 17 + 4 * 256);

/// [`MATMUL_F32_GEMV_WIDE`] on f16 (as [`MATMUL_F16`]), staging 8 k per step (faster for f16).
pub const MATMUL_F16_GEMV_WIDE: KernelSource = KernelSource {
    name: "matmul_f16_gemv_wide",
    source: kernel!(
        "matmul_f16.wgsl",
        "matmul_gemv_wide_f16.wgsl",
        "float_common.wgsl",
        "matmul_common.wgsl",
        "matmul_gemv_common.wgsl",
        "matmul_gemv_staged.wgsl"
    ),
};

/// [`MATMUL_F16`] with [`MATMUL_F32_T16`]'s tile.
pub const MATMUL_F16_T16: KernelSource = KernelSource {
    name: "matmul_f16_t16",
    source: kernel!(
        "matmul_f16.wgsl",
        "matmul_tile_16.wgsl",
        "float_common.wgsl",
        "matmul_common.wgsl",
        "matmul_tiled.wgsl"
    ),
};

/// Values one workgroup of the linear elementwise kernels covers (binary, scalar, unary, gated; and
/// `util::COPY`): 256 invocations × 4 values, 256 apart. Their grids are `ceil(len / this)`.
pub const ELEMENTWISE_GROUP_VALUES: u32 = 1024;

/// Broadcasting binary op (add, sub, mul, div) over up to 6 axes, strides passed as parameters.
pub const ELEMENTWISE_BINARY: KernelSource = KernelSource {
    name: "elementwise_binary",
    source: kernel!(
        "exact_div.wgsl",
        "float_common.wgsl",
        "elementwise_apply.wgsl",
        "elementwise_binary.wgsl"
    ),
};

/// Tensor-scalar binary op (add, sub, mul, div), the scalar passed as a parameter.
pub const ELEMENTWISE_SCALAR: KernelSource = KernelSource {
    name: "elementwise_scalar",
    source: kernel!(
        "exact_div.wgsl",
        "float_common.wgsl",
        "elementwise_apply.wgsl",
        "elementwise_scalar.wgsl"
    ),
};

/// Unary activations: relu, relu², silu, gelu (erf form), exp.
pub const ELEMENTWISE_UNARY: KernelSource = KernelSource {
    name: "elementwise_unary",
    source: kernel!(
        "exact_div.wgsl",
        "float_common.wgsl",
        "activation_common.wgsl",
        "elementwise_unary.wgsl"
    ),
};

/// Gated activation `act(gate) · up` (same shape, any activation of [`ELEMENTWISE_UNARY`]): a
/// feed-forward GLU in one dispatch, bit for bit the unary kernel followed by the binary mul.
pub const ELEMENTWISE_GATED: KernelSource = KernelSource {
    name: "elementwise_gated",
    source: kernel!(
        "exact_div.wgsl",
        "float_common.wgsl",
        "activation_common.wgsl",
        "elementwise_gated.wgsl"
    ),
};

/// Last-axis reduction (sum, mean, max, absmax), workgroup-memory tree; one workgroup per row.
pub const REDUCE_LAST: KernelSource = KernelSource {
    name: "reduce_last",
    source: kernel!(
        "exact_div.wgsl",
        "float_common.wgsl",
        "reduce_common.wgsl",
        "reduce_last.wgsl"
    ),
};

/// Last-axis reduction with subgroup operations (requires `SUBGROUP`); same contract as
/// [`REDUCE_LAST`].
pub const REDUCE_LAST_SUBGROUP: KernelSource = KernelSource {
    name: "reduce_last_subgroup",
    source: kernel!(
        "exact_div.wgsl",
        "float_common.wgsl",
        "reduce_common.wgsl",
        "reduce_last_subgroup.wgsl"
    ),
};

/// RMS norm over the last axis with a per-column weight; one workgroup per row.
pub const NORM_RMS: KernelSource = KernelSource {
    name: "norm_rms",
    source: kernel!(
        "exact_div.wgsl",
        "float_common.wgsl",
        "exact_sqrt.wgsl",
        "norm_rms_common.wgsl",
        "norm_rms_tree.wgsl",
        "norm_rms.wgsl"
    ),
};

/// Residual add fused with RMS norm over the last axis (`h = x + res`, `y = rms_norm(h)`, both
/// written); one workgroup per row.
pub const NORM_RMS_ADD: KernelSource = KernelSource {
    name: "norm_rms_add",
    source: kernel!(
        "exact_div.wgsl",
        "float_common.wgsl",
        "exact_sqrt.wgsl",
        "norm_rms_common.wgsl",
        "norm_rms_tree.wgsl",
        "norm_rms_add.wgsl"
    ),
};

/// Numerically stable softmax over the last axis; one workgroup per row.
pub const SOFTMAX_LAST: KernelSource = KernelSource {
    name: "softmax_last",
    source: kernel!("exact_div.wgsl", "float_common.wgsl", "softmax_last.wgsl"),
};

/// Rotary position embedding (HF rotate-half pairing) on `[S, H, D]`, host-supplied frequencies.
pub const ROPE: KernelSource = KernelSource {
    name: "rope",
    source: kernel!("float_common.wgsl", "rope_common.wgsl", "rope.wgsl"),
};

/// RoPE on a step's queries and keys (`[S, Hq, D]`, `[S, Hk, D]`, same positions) in one
/// dispatch; not chunked.
pub const ROPE_PAIR: KernelSource = KernelSource {
    name: "rope_pair",
    source: kernel!(
        "float_common.wgsl",
        "rope_common.wgsl",
        "rope_pairs_common.wgsl",
        "rope_pair.wgsl"
    ),
};

/// [`ROPE_PAIR`] with the rotated keys and the values written into a KV cache's buffers (a
/// decode step's RoPE and KV append in one dispatch); not chunked.
pub const ROPE_APPEND: KernelSource = KernelSource {
    name: "rope_append",
    source: kernel!(
        "float_common.wgsl",
        "rope_common.wgsl",
        "rope_pairs_common.wgsl",
        "rope_append.wgsl"
    ),
};

/// Scaled-dot-product attention (GQA, optional causal mask) on token-major `[T, H, D]`, in chunks
/// of 256 keys: one workgroup per (query, head) walking its chunks, or (split mode, for decode) one
/// per (query, head, chunk) writing scratch records that [`ATTENTION_COMBINE`] merges.
pub const ATTENTION: KernelSource = KernelSource {
    name: "attention",
    source: kernel!(
        "exact_div.wgsl",
        "float_common.wgsl",
        "attention_common.wgsl",
        "attention.wgsl",
        "attention_sums.wgsl"
    ),
};

/// Query-tiled attention for prefill (flash-attention style): one workgroup of 256 per tile of
/// `BQ` query rows of one kv head (its query heads' rows together, so grouped heads share K/V)
/// streams that head's keys through workgroup memory in tiles of [`ATTENTION_TILED_KEYS`] with
/// a running maximum and sum. Same bindings and status words as [`ATTENTION`]'s whole mode; its
/// own params. Override constants `DIM` (32, 64 or 128) and `BQ` (16, 32 or 64, `BQ·DIM >= 1024`)
/// size its workgroup memory ([`attention_tiled_workgroup_bytes`]).
pub const ATTENTION_TILED: KernelSource = KernelSource {
    name: "attention_tiled",
    source: kernel!(
        "exact_div.wgsl",
        "float_common.wgsl",
        "attention_common.wgsl",
        "attention_tiled.wgsl"
    ),
};

/// Keys per tile of [`ATTENTION_TILED`] (`BK` in its source).
pub const ATTENTION_TILED_KEYS: u32 = 32;

/// Workgroup bytes of [`ATTENTION_TILED`] with head dimension `dim` and `bq` rows per tile: the
/// q tile and the K / V tile (rows of `dim / 4 + 1` vec4: one of padding against bank
/// conflicts), the weights (`bq` rows of `keys / 4 + 1` vec4), two 256-float partial arrays and
/// `bq` row factors. The engine compares it with the device's
/// `max_compute_workgroup_storage_size`.
pub const fn attention_tiled_workgroup_bytes(dim: u32, bq: u32) -> u32 {
    let row = 16 * (dim / 4 + 1);
    bq * row
        + ATTENTION_TILED_KEYS * row
        + 16 * bq * (ATTENTION_TILED_KEYS / 4 + 1)
        + 2 * 4 * 256
        + 8 * bq
}

/// Decode attention (few query rows per kv head, D = 32, 64 or 128, at most 8 query heads per
/// kv head): one workgroup of 256 per (query row, kv head, run of 64-key chunks) for all the kv
/// head's query heads, each K/V vector loaded once for the group, the softmax kept per
/// invocation (flash attention) and merged once; writes the output, or records for
/// [`ATTENTION_COMBINE`]. Same bindings as [`ATTENTION_TILED`]; override constants `DIM` and
/// `GROUP` size its workgroup memory ([`attention_decode_workgroup_bytes`]).
pub const ATTENTION_DECODE: KernelSource = KernelSource {
    name: "attention_decode",
    source: kernel!(
        "exact_div.wgsl",
        "float_common.wgsl",
        "attention_common.wgsl",
        "attention_decode.wgsl"
    ),
};

/// Keys per chunk of [`ATTENTION_DECODE`] (`KEYS` in its source).
pub const ATTENTION_DECODE_KEYS: u32 = 64;

/// Workgroup bytes of [`ATTENTION_DECODE`] with head dimension `dim` and `group` query heads
/// per kv head: the group's q rows, the score parts / key-group sums (256 vec4 per head), the
/// chunk's weights; three 256-float arrays of key-group maxima, sums and rescale factors, and
/// eight head maxima. The engine compares it with the device's
/// `max_compute_workgroup_storage_size`.
pub const fn attention_decode_workgroup_bytes(dim: u32, group: u32) -> u32 {
    group * (4 * dim + 16 * 256 + 4 * ATTENTION_DECODE_KEYS) + 3 * 4 * 256 + 4 * 8
}

/// The second dispatch of split-mode [`ATTENTION`]: merges each (query, head)'s chunk records in
/// order and divides; one workgroup of 128 per (query, head).
pub const ATTENTION_COMBINE: KernelSource = KernelSource {
    name: "attention_combine",
    source: kernel!(
        "exact_div.wgsl",
        "float_common.wgsl",
        "attention_common.wgsl",
        "attention_combine.wgsl"
    ),
};

/// Every float tensor kernel of this module.
pub const ALL: &[KernelSource] = &[
    MATMUL_F32,
    MATMUL_F32_GEMV,
    MATMUL_F32_GEMV_STAGED,
    MATMUL_F32_GEMV_WIDE,
    MATMUL_F32_T16,
    MATMUL_F16,
    MATMUL_F16_GEMV,
    MATMUL_F16_GEMV_STAGED,
    MATMUL_F16_GEMV_WIDE,
    MATMUL_F16_T16,
    ELEMENTWISE_BINARY,
    ELEMENTWISE_SCALAR,
    ELEMENTWISE_UNARY,
    ELEMENTWISE_GATED,
    REDUCE_LAST,
    REDUCE_LAST_SUBGROUP,
    NORM_RMS,
    NORM_RMS_ADD,
    SOFTMAX_LAST,
    ROPE,
    ROPE_PAIR,
    ROPE_APPEND,
    ATTENTION,
    ATTENTION_TILED,
    ATTENTION_DECODE,
    ATTENTION_COMBINE,
];
