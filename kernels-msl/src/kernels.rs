//! The kernel sources and their descriptors: what the engine needs to build a passthrough pipeline
//! (passthrough shaders have no reflection, so the layout must be spelled out).
//!
//! Buffer slots follow the engine's convention, which is also the order in which wgpu's Metal
//! backend assigns buffer indices: the params struct at `buffer(0)` (wgpu immediates, i.e.
//! `setBytes`), the kernel's group-0 storage buffers at `buffer(1..=n)`, and the engine's group-1
//! non-finite status slot (binding 1) at `buffer(n + 1)`. The engine must therefore use these
//! kernels only in its immediates params mode.

/// Concatenates the shared prelude files and one kernel file into one MSL source.
macro_rules! msl_source {
    () => {
        concat!(
            include_str!("../shaders/prelude.metal"),
            "\n",
            include_str!("../shaders/exact_f32.metal"),
            "\n",
            include_str!("../shaders/ternary.metal"),
            "\n"
        )
    };
    ($file:literal) => {
        concat!(msl_source!(), include_str!(concat!("../shaders/", $file)))
    };
}

/// The shared prelude every kernel source starts with: `metal_stdlib`, the constants of
/// `layout.rs` as bit patterns, the correctly rounded f32 helpers (`exact_f32.metal`) and the
/// packed-layout helpers (`ternary.metal`). No entry point.
pub const PRELUDE: &str = msl_source!();

/// How the engine binds one Metal buffer slot of a kernel.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum BindingKind {
    /// The kernel's params struct (`constant P&`), set as wgpu immediates (Metal `setBytes`).
    Params,
    /// A read-only storage buffer of group 0 (`device const T*`).
    StorageRead,
    /// A read-write storage buffer of group 0 (`device T*`).
    StorageReadWrite,
    /// The engine's non-finite status slot, group 1 binding 1 (`device atomic_uint*`).
    Status,
}

/// One `[[buffer(index)]]` parameter of a kernel.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct MslBinding {
    /// The Metal buffer index, `[[buffer(index)]]`.
    pub index: u32,
    /// How the engine binds it.
    pub kind: BindingKind,
    /// The parameter's name in the `.metal` file.
    pub name: &'static str,
    /// The parameter's MSL type, exactly as declared (e.g. `"device const float*"`).
    pub msl_type: &'static str,
    /// What the buffer holds (shape, element meaning).
    pub meaning: &'static str,
}

/// One MSL kernel: its complete source and everything a passthrough pipeline needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct MslKernel {
    /// Stable kernel name for cache keys, logs and profiles (`"<entry>_msl"`).
    pub name: &'static str,
    /// The `kernel void` function name.
    pub entry_point: &'static str,
    /// The complete MSL source ([`PRELUDE`] + the kernel file).
    pub source: &'static str,
    /// Threads per threadgroup (x, y, z), as passthrough entry points must declare them.
    pub workgroup_size: (u32, u32, u32),
    /// Every buffer parameter, in `index` order (0, 1, 2, ...).
    pub bindings: &'static [MslBinding],
    /// The tensor each status word checks, for the engine's non-finite report (word `t` holds the
    /// smallest flat index of a NaN/inf in `status_words[t]`).
    pub status_words: &'static [&'static str],
}

impl MslKernel {
    /// The group-0 storage bindings, in binding order (group-0 binding `i` is `buffer(i + 1)`).
    pub fn storage(&self) -> impl Iterator<Item = &MslBinding> {
        self.bindings.iter().filter(|b| {
            matches!(
                b.kind,
                BindingKind::StorageRead | BindingKind::StorageReadWrite
            )
        })
    }
}

/// Shorthand for the binding tables below.
const fn bind(
    index: u32,
    kind: BindingKind,
    name: &'static str,
    msl_type: &'static str,
    meaning: &'static str,
) -> MslBinding {
    MslBinding {
        index,
        kind,
        name,
        msl_type,
        meaning,
    }
}

use BindingKind::{Params, Status, StorageRead, StorageReadWrite};

/// The status slot's description (shared by every kernel).
const STATUS: &str = "non-finite status slot (group 1 binding 1): atomic min of flat indices";

/// Weight quantization pass 1: one level of the canonical absolute-value sum, one threadgroup per
/// 4096-value block (grid linear, foldable). Run level after level until one value remains
/// ([`crate::dispatch::abs_sum_levels`]).
pub const ABS_SUM_BLOCKS: MslKernel = MslKernel {
    name: "abs_sum_blocks_msl",
    entry_point: "abs_sum_blocks",
    source: msl_source!("abs_sum_blocks.metal"),
    workgroup_size: (256, 1, 1),
    bindings: &[
        bind(
            0,
            Params,
            "params",
            "constant AbsSumParams&",
            "AbsSumParams {count, check_finite, 0, 0}",
        ),
        bind(
            1,
            StorageRead,
            "values",
            "device const float*",
            "this level's input: count f32",
        ),
        bind(
            2,
            StorageReadWrite,
            "block_sums",
            "device float*",
            "ceil(count / 4096) block sums",
        ),
        bind(3, Status, "status", "device atomic_uint*", STATUS),
    ],
    status_words: &["w"],
};

/// Weight quantization pass 2: `s = max(sum / (N·K), 1e-5)`, quantize and pack one word per
/// thread (grid linear, foldable), store `s`.
pub const QUANTIZE_WEIGHTS: MslKernel = MslKernel {
    name: "quantize_weights_msl",
    entry_point: "quantize_weights",
    source: msl_source!("quantize_weights.metal"),
    workgroup_size: (256, 1, 1),
    bindings: &[
        bind(
            0,
            Params,
            "params",
            "constant QuantizeWeightsParams&",
            "QuantizeWeightsParams {n, k, count_bits, 0}",
        ),
        bind(
            1,
            StorageRead,
            "weights",
            "device const float*",
            "[N, K] f32 row-major",
        ),
        bind(
            2,
            StorageRead,
            "abs_sum",
            "device const float*",
            "[1] the canonical sum of |W|",
        ),
        bind(
            3,
            StorageReadWrite,
            "packed",
            "device uint*",
            "[N, ceil(K / 16)] ternary words",
        ),
        bind(4, StorageReadWrite, "scale", "device float*", "[1] = s"),
        bind(5, Status, "status", "device atomic_uint*", STATUS),
    ],
    status_words: &["sum of |w| (overflows f32)"],
};

/// Activation quantization, one threadgroup per row (grid linear, foldable): packed int8 values
/// and the clamped absmax of each row — the inputs of [`BITLINEAR_GEMM`].
pub const QUANTIZE_ACTIVATIONS: MslKernel = MslKernel {
    name: "quantize_activations_msl",
    entry_point: "quantize_activations",
    source: msl_source!("quantize_activations.metal"),
    workgroup_size: (256, 1, 1),
    bindings: &[
        bind(
            0,
            Params,
            "params",
            "constant QuantizeActParams&",
            "QuantizeActParams {rows, k, 0, 0}",
        ),
        bind(
            1,
            StorageRead,
            "x",
            "device const float*",
            "[rows, K] f32 row-major",
        ),
        bind(
            2,
            StorageReadWrite,
            "packed",
            "device uint*",
            "[rows, 4 * ceil(K / 16)] packed int8",
        ),
        bind(
            3,
            StorageReadWrite,
            "absmax",
            "device float*",
            "[rows] clamped absmax a",
        ),
        bind(4, Status, "status", "device atomic_uint*", STATUS),
    ],
    status_words: &["x"],
};

/// Fused activation quantization + BitLinear GEMV (decode: small M, K ≤
/// [`crate::dispatch::GEMV_MAX_K`]): grid `(ceil(N / 32), M, 1)`, simdgroup reductions.
pub const BITLINEAR_GEMV: MslKernel = MslKernel {
    name: "bitlinear_gemv_msl",
    entry_point: "bitlinear_gemv",
    source: msl_source!("bitlinear_gemv.metal"),
    workgroup_size: (256, 1, 1),
    bindings: &[
        bind(
            0,
            Params,
            "params",
            "constant GemvParams&",
            "GemvParams {m, n, k, output_mode}",
        ),
        bind(
            1,
            StorageRead,
            "x",
            "device const float*",
            "[M, K] f32 activations",
        ),
        bind(
            2,
            StorageRead,
            "weights",
            "device const uint*",
            "[N, ceil(K / 16)] ternary words",
        ),
        bind(
            3,
            StorageRead,
            "weight_scale",
            "device const float*",
            "[1] = s, the weights' scale",
        ),
        bind(
            4,
            StorageReadWrite,
            "y",
            "device uint*",
            "[M, N] f32 bits (or i32 accumulators)",
        ),
        bind(5, Status, "status", "device atomic_uint*", STATUS),
    ],
    status_words: &["x", "output (rescale overflowed f32)"],
};

/// BitLinear GEMM on simdgroup matrices (prefill; K ≤ [`crate::dispatch::GEMM_MAX_K`]): 32×32
/// output tiles, grid `(ceil(N / 32), ceil(M / 32), 1)`, inputs from [`QUANTIZE_ACTIVATIONS`].
pub const BITLINEAR_GEMM: MslKernel = MslKernel {
    name: "bitlinear_gemm_msl",
    entry_point: "bitlinear_gemm",
    source: msl_source!("bitlinear_gemm.metal"),
    workgroup_size: (128, 1, 1),
    bindings: &[
        bind(
            0,
            Params,
            "params",
            "constant GemmParams&",
            "GemmParams {m, n, k, output_mode}",
        ),
        bind(
            1,
            StorageRead,
            "x_packed",
            "device const uint*",
            "[M, 4 * ceil(K / 16)] packed int8",
        ),
        bind(
            2,
            StorageRead,
            "x_absmax",
            "device const float*",
            "[M] clamped absmax a_m",
        ),
        bind(
            3,
            StorageRead,
            "weights",
            "device const uint*",
            "[N, ceil(K / 16)] ternary words",
        ),
        bind(
            4,
            StorageRead,
            "weight_scale",
            "device const float*",
            "[1] = s, the weights' scale",
        ),
        bind(
            5,
            StorageReadWrite,
            "y",
            "device uint*",
            "[M, N] f32 bits (or i32 accumulators)",
        ),
        bind(6, Status, "status", "device atomic_uint*", STATUS),
    ],
    status_words: &["output (rescale overflowed f32)"],
};

/// Every kernel of this crate.
pub const ALL: &[MslKernel] = &[
    ABS_SUM_BLOCKS,
    QUANTIZE_WEIGHTS,
    QUANTIZE_ACTIVATIONS,
    BITLINEAR_GEMV,
    BITLINEAR_GEMM,
];
