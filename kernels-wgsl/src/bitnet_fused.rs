//! The fused GEMV's relatives (decode, f32 activations, the quantization fused in): the
//! grouped GEMV over several matrices' concatenated rows, the gated GEMV over gate's and up's
//! interleaved rows, and the chain kernel (a decode step's linears in one dispatch). Declared here
//! and re-exported by `bitnet`, whose module docs give the variant table and conventions.

use crate::KernelSource;

/// [`BITLINEAR_GEMV_FUSED_SUBGROUP`](super::BITLINEAR_GEMV_FUSED_SUBGROUP) over a feed-forward
/// block's gate and up matrices, their packed rows interleaved two by two (gate rows 2i, 2i + 1,
/// then up rows 2i, 2i + 1), with the gated activation `act(gate) · up` in its store (override
/// `ACT`: `activation_common.wgsl`'s codes); same `TPR` / `DEPTH` and limits. Bindings: 0 `weights:
/// u32[]` (the interleaved rows, 2N of them), 1 `scales: u32[2]` (gate's and up's scale, f32 bits),
/// 2 `x: f32[M, K]`, 3 `out: f32[M, N]`. Status: word 0 first non-finite x index, words 1 and 2
/// gate's and up's first non-finite y index, word 3 the first non-finite output of finite
/// projections (all flat over `[M, N]` but x's).
pub const BITLINEAR_GEMV_FUSED_GATED_SUBGROUP: KernelSource = KernelSource {
    name: "bitlinear_gemv_fused_gated_subgroup",
    source: kernel!(
        "exact_div.wgsl",
        "exact_div_127.wgsl",
        "float_common.wgsl",
        "activation_common.wgsl",
        "bitlinear_common.wgsl",
        "bitlinear_gemv_blocks.wgsl",
        "act_quant_common.wgsl",
        "bitlinear_gemv_fused_common.wgsl",
        "bitlinear_gemv_fused_body.wgsl",
        "bitlinear_gemv_fused_input.wgsl",
        "bitlinear_gemv_fused_gated_subgroup.wgsl"
    ),
};

/// [`BITLINEAR_GEMV_FUSED_GATED_SUBGROUP`] on the RMSNorm of its input: `h = x + res` and
/// `rms_norm(h)` with weight `nw` computed in every workgroup for its own row (override
/// `RESIDUAL`; false: `rms_norm(x)`, `res` and `h` unused), the rows the gated GEMV quantizes;
/// override `EPS` the norm's epsilon. Bindings 0..=3 as the gated GEMV's, then 4 `res: f32[M, K]`,
/// 5 `nw: f32[K]`, 6 `h: f32[M, K]` (written). Status: word 0 the norm's errors, tagged with
/// their kind in bits 30-31 (`bitlinear_gemv_fused_norm.wgsl`), words 1..=3 as the gated GEMV's.
pub const BITLINEAR_GEMV_FUSED_GATED_NORM_SUBGROUP: KernelSource = KernelSource {
    name: "bitlinear_gemv_fused_gated_norm_subgroup",
    source: kernel!(
        "exact_div.wgsl",
        "exact_div_127.wgsl",
        "float_common.wgsl",
        "activation_common.wgsl",
        "bitlinear_common.wgsl",
        "bitlinear_gemv_blocks.wgsl",
        "act_quant_common.wgsl",
        "bitlinear_gemv_fused_common.wgsl",
        "bitlinear_gemv_fused_body.wgsl",
        "exact_sqrt.wgsl",
        "norm_rms_common.wgsl",
        "bitlinear_gemv_fused_norm.wgsl",
        "bitlinear_gemv_fused_gated_subgroup.wgsl",
        "bitlinear_gemv_fused_gated_norm.wgsl"
    ),
};

/// Most weight matrices [`BITLINEAR_GEMV_FUSED_GROUP_SUBGROUP`] runs in one dispatch.
pub const GEMV_GROUP_MAX_MATRICES: usize = 3;

/// [`BITLINEAR_GEMV_FUSED_SUBGROUP`](super::BITLINEAR_GEMV_FUSED_SUBGROUP) over up to
/// [`GEMV_GROUP_MAX_MATRICES`] weight matrices that share K and an input, their packed rows
/// concatenated (every matrix's N a multiple of 4, so no 4-row block straddles two); same override
/// constants and limits. Bindings: 0 `weights: u32[]` (every matrix's rows), 1 `table: u32[8]`
/// (words 0..3 each matrix's scale as f32 bits, 4..7 each matrix's end row; matrices past the last
/// end at N), 2 `x: f32[M, K]` (all read), 3..=5 `out_j: f32[M, N_j]` (a smaller group binds a word
/// of scratch per unused slot). Status: word 0 first non-finite x index (flat over `[M, K]`), word
/// 1 + j first non-finite y index of matrix j.
pub const BITLINEAR_GEMV_FUSED_GROUP_SUBGROUP: KernelSource = KernelSource {
    name: "bitlinear_gemv_fused_group_subgroup",
    source: kernel!(
        "exact_div.wgsl",
        "exact_div_127.wgsl",
        "bitlinear_common.wgsl",
        "bitlinear_gemv_blocks.wgsl",
        "act_quant_common.wgsl",
        "bitlinear_gemv_fused_common.wgsl",
        "bitlinear_gemv_fused_body.wgsl",
        "bitlinear_gemv_fused_input.wgsl",
        "bitlinear_gemv_fused_group_subgroup.wgsl"
    ),
};

/// [`BITLINEAR_GEMV_FUSED_GROUP_SUBGROUP`] on the RMSNorm of its input, as
/// [`BITLINEAR_GEMV_FUSED_GATED_NORM_SUBGROUP`] is the gated GEMV on it. Bindings 0..=5 as the
/// grouped GEMV's, then 6 `res: f32[M, K]`, 7 `nw: f32[K]`, 8 `h: f32[M, K]` (written). Status:
/// word 0 the norm's errors (tagged), word 1 + j matrix j's first non-finite y index.
pub const BITLINEAR_GEMV_FUSED_GROUP_NORM_SUBGROUP: KernelSource = KernelSource {
    name: "bitlinear_gemv_fused_group_norm_subgroup",
    source: kernel!(
        "exact_div.wgsl",
        "exact_div_127.wgsl",
        "float_common.wgsl",
        "bitlinear_common.wgsl",
        "bitlinear_gemv_blocks.wgsl",
        "act_quant_common.wgsl",
        "bitlinear_gemv_fused_common.wgsl",
        "bitlinear_gemv_fused_body.wgsl",
        "exact_sqrt.wgsl",
        "norm_rms_common.wgsl",
        "bitlinear_gemv_fused_norm.wgsl",
        "bitlinear_gemv_fused_group_subgroup.wgsl",
        "bitlinear_gemv_fused_group_norm.wgsl"
    ),
};

/// The chain kernel's WGSL, ending with one of its two output-access files.
macro_rules! chain_kernel {
    ($out_access:literal) => {
        kernel!(
            "exact_div.wgsl",
            "exact_div_127.wgsl",
            "bitlinear_common.wgsl",
            "bitlinear_gemv_blocks.wgsl",
            "act_quant_common.wgsl",
            "bitlinear_gemv_fused_common.wgsl",
            "bitlinear_chain_subgroup.wgsl",
            "bitlinear_chain_quantize.wgsl",
            $out_access
        )
    };
}

/// A chain of M = 1 BitLinears on f32 vectors (a decode step's linear layers, each reading the
/// chain input or an earlier linear's output) in one dispatch: every linear's workgroups wait
/// inside the dispatch for the workgroups of the linear they read (bounded; an exhausted wait
/// aborts the run and flags status word 1). K % 64 == 0 and K ≤
/// [`GEMV_FUSED_MAX_K`](super::GEMV_FUSED_MAX_K) for every linear; override constants `TPR`,
/// `DEPTH`, `SPIN_LIMIT`. Needs `SUBGROUP`; `out` is atomic (for devices that cannot declare
/// storage coherent). Bindings: 0 `weights: u32[]` (every linear's rows), 1
/// `x: f32[K]` (read), 2 `out: u32[]` (every output), 3 `jobs` (9 words per linear, see the
/// kernel), 4 `wg_job: u32[]` (read), 5 `counters: u32[2 jobs + 2]` (finished workgroups per job,
/// finished, abort, then each job's output absmax; zero before the first run, and the kernel leaves
/// them zero). Status: word 0 first non-finite x index, word 1 aborted, word 2 first non-finite
/// output index.
pub const BITLINEAR_CHAIN_SUBGROUP: KernelSource = KernelSource {
    name: "bitlinear_chain_subgroup",
    source: chain_kernel!("bitlinear_chain_out_atomic.wgsl"),
};

/// The word [`BITLINEAR_CHAIN_COHERENT_SUBGROUP`]'s output arena must hold before every run
/// (`CH_UNWRITTEN` of `bitlinear_chain_out_coherent.wgsl`): its consumers poll their input words
/// until none is; no output takes it (a NaN output is stored as `0x7fc0_0000`).
pub const CHAIN_UNWRITTEN: u32 = u32::MAX;

/// [`BITLINEAR_CHAIN_SUBGROUP`] with its output arena declared `@coherent` (binding 2 as plain
/// words), so consumers read their input as vec4 instead of one atomic load per value, and wait
/// by polling those words: fill `out` with [`CHAIN_UNWRITTEN`] before every run (the counters'
/// per-job words stay zero). Needs `MEMORY_DECORATION_COHERENT` besides
/// `SUBGROUP`. Same bindings, constants and status words.
pub const BITLINEAR_CHAIN_COHERENT_SUBGROUP: KernelSource = KernelSource {
    name: "bitlinear_chain_coherent_subgroup",
    source: chain_kernel!("bitlinear_chain_out_coherent.wgsl"),
};
