//! BitLinear GEMM kernels, for M above [`GEMV_MAX_M`](super::GEMV_MAX_M): the tiled dot4 GEMM
//! (any K, any device), the cooperative-matrix GEMMs (f16, and int8 through SPIR-V passthrough)
//! with their tile, thread and workgroup-memory constants, and the split-K epilogue. Declared
//! here and re-exported by `bitnet`, whose module docs give the variant table and conventions.

use crate::KernelSource;

/// Threads per dimension of the [`BITLINEAR_GEMM`] workgroup grid (16 × 16); a tile is
/// `16 T × 16 T` outputs.
pub const GEMM_THREADS_PER_DIM: u32 = 16;

/// Activation rows (M) per output tile of [`BITLINEAR_GEMM_COOP_SUBGROUP`].
pub const GEMM_COOP_TILE_M: u32 = 128;

/// Weight rows (N) per output tile of [`BITLINEAR_GEMM_COOP_SUBGROUP`].
pub const GEMM_COOP_TILE_N: u32 = 128;

/// Threads per workgroup of [`BITLINEAR_GEMM_COOP_SUBGROUP`] (above the WebGPU default of 256:
/// the engine checks the device's limits before it plans the kernel).
pub const GEMM_COOP_THREADS: u32 = 512;

/// Workgroup bytes of [`BITLINEAR_GEMM_COOP_SUBGROUP`] (double-buffered f16 operands, the
/// epilogue's accumulator slots, the tile rows' scales).
pub const GEMM_COOP_WORKGROUP_BYTES: u32 = 2 * 2 * 10240 + 4096 + 512;

/// Workgroup bytes of both int8 coop GEMMs (double-buffered int8 operands, whose space the
/// epilogue reuses, and the row scales; checked against the device limit by the engine).
pub const GEMM_COOP_I8_WORKGROUP_BYTES: u32 = 2 * 2 * 10240 + 512;

/// Weight rows (N) per output tile of [`BITLINEAR_GEMM_COOP_I8_N96_SUBGROUP`].
pub const GEMM_COOP_I8_N96_TILE_N: u32 = 96;

/// Threads per workgroup of [`BITLINEAR_GEMM_COOP_I8_N96_SUBGROUP`] (12 subgroups of 32).
pub const GEMM_COOP_I8_N96_THREADS: u32 = 384;

/// BitLinear GEMM: `16 T × 16 T` output tiles (override constant `T` ∈ {4, 8}), 256 threads with
/// `T × T` register blocking, signed weights decoded once per K step, one workgroup per tile
/// (`tiles_n · ceil(M / 16 T)` workgroups). Any K. Same bindings as
/// [`BITLINEAR_GEMV_SUBGROUP`](super::BITLINEAR_GEMV_SUBGROUP).
pub const BITLINEAR_GEMM: KernelSource = KernelSource {
    name: "bitlinear_gemm",
    source: kernel!(
        "bitlinear_common.wgsl",
        "bitlinear_write.wgsl",
        "bitlinear_bindings_gemm.wgsl",
        "bitlinear_gemm.wgsl"
    ),
};

/// The epilogue of a split-K BitLinear GEMM: sums the `k_splits` planes of exact accumulators a
/// split GEMM wrote and rescales them exactly as the unsplit kernels do (or keeps the
/// accumulators, mode 1). One output per thread, linear grid. Bindings: 0 `weight_scale: f32[1]`,
/// 1 `act_absmax: f32[M]`, 2 `partials: u32[S, M, N]` (all read), 3 `out: u32[M, N]`. Status: word
/// 0 first non-finite y index.
pub const BITLINEAR_SPLIT_SUM: KernelSource = KernelSource {
    name: "bitlinear_split_sum",
    source: kernel!(
        "bitlinear_common.wgsl",
        "bitlinear_write.wgsl",
        "bitlinear_split_sum.wgsl"
    ),
};

/// BitLinear GEMM on cooperative matrices (f16 × f16 → f32 16×16×16, exact for int8 × ternary
/// while `127 K < 2^24`): [`GEMM_COOP_TILE_M`] × [`GEMM_COOP_TILE_N`] tiles, 512 threads = 16
/// subgroups of exactly 32 (each 2 × 2 accumulators), K steps of 32 staged as f16,
/// double-buffered in 44 KiB of workgroup memory. Needs `SHADER_F16`, `SUBGROUP` and
/// `EXPERIMENTAL_COOPERATIVE_MATRIX` with f16 16×16×16 / f32 accumulators, subgroup size 32.
/// Same bindings as [`BITLINEAR_GEMV_SUBGROUP`](super::BITLINEAR_GEMV_SUBGROUP) (activations
/// read as vec4); workgroups `tiles_n · ceil(M / GEMM_COOP_TILE_M)` with
/// `tiles_n = ceil(N / GEMM_COOP_TILE_N)`.
pub const BITLINEAR_GEMM_COOP_SUBGROUP: KernelSource = KernelSource {
    name: "bitlinear_gemm_coop_subgroup",
    source: kernel!(
        "bitlinear_gemm_coop_subgroup.wgsl",
        "bitlinear_bindings_gemm.wgsl",
        "bitlinear_common.wgsl",
        "bitlinear_write.wgsl"
    ),
};

/// The WGSL skeleton of the int8 cooperative-matrix BitLinear GEMM (i8 × i8 → i32 16×16×32, exact
/// for any K): written with f16 / f32 matrices because WGSL has no 8-bit type, and retyped to int8
/// in SPIR-V by the engine (`engine/src/spirv.rs`) before it reaches a Vulkan driver through
/// passthrough; never run as WGSL. Tiles and threads as [`BITLINEAR_GEMM_COOP_SUBGROUP`], K steps
/// of 64 staged as signed bytes in [`GEMM_COOP_I8_WORKGROUP_BYTES`]. Needs, besides the f16 kernel's features,
/// `PASSTHROUGH_SHADERS`, Vulkan, and driver support for int8 16×16×32 matrices (which wgpu does
/// not report: the engine's self-test decides). Same bindings and grid as
/// [`BITLINEAR_GEMM_COOP_SUBGROUP`].
pub const BITLINEAR_GEMM_COOP_I8_SUBGROUP: KernelSource = KernelSource {
    name: "bitlinear_gemm_coop_i8_subgroup",
    source: kernel!(
        "bitlinear_gemm_coop_i8_subgroup.wgsl",
        "bitlinear_bindings_gemm.wgsl",
        "bitlinear_gemm_coop_i8.wgsl",
        "bitlinear_common.wgsl",
        "bitlinear_write.wgsl"
    ),
};

/// [`BITLINEAR_GEMM_COOP_I8_SUBGROUP`] with tiles of [`GEMM_COOP_TILE_M`] ×
/// [`GEMM_COOP_I8_N96_TILE_N`] and [`GEMM_COOP_I8_N96_THREADS`] threads: more, smaller workgroups
/// where 128-wide tiles would leave a large GPU's SMs idle (an autotune candidate). Same bindings;
/// workgroups `tiles_n · ceil(M / GEMM_COOP_TILE_M)` with `tiles_n = ceil(N / 96)`.
pub const BITLINEAR_GEMM_COOP_I8_N96_SUBGROUP: KernelSource = KernelSource {
    name: "bitlinear_gemm_coop_i8_n96_subgroup",
    source: kernel!(
        "bitlinear_gemm_coop_i8_n96_subgroup.wgsl",
        "bitlinear_bindings_gemm.wgsl",
        "bitlinear_gemm_coop_i8.wgsl",
        "bitlinear_common.wgsl",
        "bitlinear_write.wgsl"
    ),
};
