//! The float matmul's output tiles — how many outputs a workgroup makes, with the kernels that
//! make them for each layout of B — and the choice among them by the output's size.

use bitnet_kernels_wgsl::KernelSource;
use bitnet_kernels_wgsl::tensor as kernels;

use super::Variant;
use crate::pipelines::{Access, Kernel};
use crate::tensor::DType;

const BINDINGS: &[Access] = &[Access::Read, Access::Read, Access::ReadWrite];

/// One output tile of the tiled matmul: its edges and its kernels. Every tile sums each output
/// in the same order; the tile decides how many outputs a workgroup makes.
pub(crate) struct Tile {
    /// Output rows per workgroup.
    pub rows: u64,
    /// Output columns per workgroup.
    pub cols: u64,
    /// How the kernel walks k.
    walk: Walk,
    /// The f32 and f16 kernels for B stored `[K,N]`.
    kn: [Kernel; 2],
    /// The f32 and f16 kernels for B stored `[N,K]` (`matmul_bt`).
    nk: [Kernel; 2],
    /// Workgroup memory the most demanding of its kernels needs past WebGPU's default 16384
    /// bytes (0: all within it).
    pub workgroup_bytes: u32,
}

/// How a tile's kernel walks k, for its loop count.
#[derive(Clone, Copy)]
enum Walk {
    /// `matmul_tiled.wgsl`: all of k in steps of `step_k`, with `loads` tile-load loop
    /// iterations per invocation and step (as many again check and store them).
    Steps { step_k: u64, loads: u64 },
    /// `matmul_gemv_*.wgsl`: rounds of `lanes` chunks, one chunk per invocation. B stored [K,N]:
    /// per 4 k a load loop (B and the tile's rows of A) and a check-and-sum loop as long. B
    /// stored [N,K]: steps of `step` k staged through workgroup memory, per step a load loop
    /// (`step` values of B, the invocation's share of rows × `lanes` × `step` of A), a
    /// check-and-store loop as long, and `step` sums over the tile's rows. Then a fold of
    /// `lanes` chunk sums.
    Chunks { lanes: u64, step: u64 },
}

impl Tile {
    /// Loop iterations an invocation runs for `k` (the CPU adapters' loop budget,
    /// `float_args::loops_fit`), counting every loop as not unrolled, the stores included.
    /// lavapipe unrolled the tiled kernel's loads (18 per step of the 64 × 64 tile, when this
    /// counted 26 with one loop per load): a driver that did not must not cut the sums short.
    pub(crate) fn loops(&self, k: u64) -> u64 {
        let stores = (self.rows * self.cols).div_ceil(256);
        match self.walk {
            Walk::Steps { step_k, loads } => k.div_ceil(step_k) * (step_k + 2 * loads + 2) + stores,
            Walk::Chunks { lanes, step } => {
                let chunk = bitnet_cpu_ref::ops::MATMUL_CHUNK as u64;
                // Per 4 k: 4 loads of B with the rows of A each, as many checks and sums, an exit.
                let direct = chunk / 4 * (2 * (4 + 4 * self.rows) + 1);
                // Loads and check-and-stores, the sums with their inner loop over the rows, and
                // an exit test for each of the step's 5 loops and for the step loop itself.
                let a_loads = (self.rows * lanes * step).div_ceil(256);
                let staged = chunk / step * (2 * (step + a_loads) + step * (2 + self.rows) + 6);
                k.div_ceil(lanes * chunk) * (direct.max(staged) + lanes + 2) + self.rows
            }
        }
    }
}

/// A tile of `rows` × `cols` outputs whose kernels walk k as `walk` says: the f32 and f16
/// sources for B stored `[K,N]`, then for B stored `[N,K]`.
const fn tile(
    (rows, cols): (u64, u64),
    walk: Walk,
    [kn_f32, kn_f16]: [KernelSource; 2],
    [nk_f32, nk_f16]: [KernelSource; 2],
) -> Tile {
    let f16 = wgpu::Features::SHADER_F16;
    Tile {
        rows,
        cols,
        walk,
        kn: [
            Kernel::new(kn_f32, "main", BINDINGS),
            Kernel::new(kn_f16, "main", BINDINGS).requiring(f16),
        ],
        nk: [
            Kernel::new(nk_f32, "main", BINDINGS),
            Kernel::new(nk_f16, "main", BINDINGS).requiring(f16),
        ],
        workgroup_bytes: 0,
    }
}

/// [`tile`] for kernels that need `bytes` of workgroup memory, past WebGPU's default.
const fn with_workgroup_bytes(t: Tile, bytes: u32) -> Tile {
    Tile {
        workgroup_bytes: bytes,
        ..t
    }
}

impl Tile {
    /// The kernel for variant `v` (its element type and B's layout).
    pub(super) fn kernel(&self, v: Variant) -> &Kernel {
        let [f32, f16] = if v.bt { &self.nk } else { &self.kn };
        if v.dtype == DType::F32 { f32 } else { f16 }
    }
}

/// The tiles: 64 × 64 (4 × 4 outputs per invocation), 16 × 64 (1 × 4), 4 × 16 (16 invocations
/// sharing each column's k chunks, reading a B stored `[K,N]` straight from memory and staging
/// one stored `[N,K]`: `matmul_gemv_direct.wgsl`, `matmul_gemv_staged.wgsl`) and 4 × 256 (the
/// staged kernel with one invocation per column).
pub(crate) const TILES: [Tile; 4] = [
    // Tiled (`matmul_tiled.wgsl`): k by 16, RM loads of A and 4 RN4 of B per step.
    tile(
        (64, 64),
        Walk::Steps {
            step_k: 16,
            loads: 4 + 4,
        },
        [kernels::MATMUL_F32, kernels::MATMUL_F16],
        [kernels::MATMUL_F32, kernels::MATMUL_F16],
    ),
    tile(
        (16, 64),
        Walk::Steps {
            step_k: 16,
            loads: 1 + 4,
        },
        [kernels::MATMUL_F32_T16, kernels::MATMUL_F16_T16],
        [kernels::MATMUL_F32_T16, kernels::MATMUL_F16_T16],
    ),
    tile(
        (4, 16),
        Walk::Chunks { lanes: 16, step: 8 },
        [kernels::MATMUL_F32_GEMV, kernels::MATMUL_F16_GEMV],
        [
            kernels::MATMUL_F32_GEMV_STAGED,
            kernels::MATMUL_F16_GEMV_STAGED,
        ],
    ),
    with_workgroup_bytes(
        tile(
            (4, 256),
            Walk::Chunks { lanes: 1, step: 16 },
            [kernels::MATMUL_F32_GEMV_WIDE, kernels::MATMUL_F16_GEMV_WIDE],
            [kernels::MATMUL_F32_GEMV_WIDE, kernels::MATMUL_F16_GEMV_WIDE],
        ),
        kernels::MATMUL_GEMV_WIDE_WORKGROUP_BYTES,
    ),
];

/// Fewest workgroups the 64 × 64 tile must leave an output before it is taken over the 16 × 64
/// one. H200, `[M, 2560] · [2560, N]` f32, µs, 16 × 64 against 64 × 64 tiles: M = 8 265 / 427,
/// 64 326 / 519, 256 634 / 683 (160 tiles of 64), 512 1151 / 936 (320 tiles), 2048 4128 / 2697;
/// M = 512, N = 6912: 2984 / 2211. (A 128 × 128 tile with 8 × 8 outputs per invocation was 1.5-8×
/// slower than both on every shape: not kept.)
const FILL_WORKGROUPS: u64 = 256;

/// Columns from which outputs of up to [`FEW_ROW_WIDE_MAX_ROWS`] rows against a B stored `[N,K]`
/// take the 4 × 256 tile: wider workgroups stage B faster once there are enough of them. H100,
/// µs, `[M, 2560] · [N, 2560]ᵀ`, 4 × 16 / 4 × 256 / 16 × 64: M = 1, N = 128256 1126 / 936 / 1983;
/// N = 65536 597 / 494 / 1024; `[1, 4096] · [32000, 4096]ᵀ` 414 / 588 / 855; M = 8, N = 128256
/// 2239 / 1702 / 1987 (4 × 256 at 8 k per step; at 16, the f32 kernel's now, 861 and 440 for
/// M = 1). (B stored `[K,N]` is read directly, fastest with 16 lanes: M = 1, N = 128256,
/// 4 × 16 728, 4 × 256 903 staged.)
const FEW_ROW_WIDE_COLUMNS: u64 = 65_536;
const FEW_ROW_WIDE_MAX_ROWS: u64 = 8;

/// Where the 4 × 16 tile is taken, for one layout of B: always up to `always` rows, and up to
/// `max_rows` where ceil(M/4) × N — how much of B its row groups read, each all of B again — is
/// at most `max_reads`.
struct FewRowReach {
    always: u64,
    max_rows: u64,
    max_reads: u64,
}

/// B stored `[K,N]`, read straight from memory. H100, µs, `[M, 2560] · [2560, N]`, 4 × 16 /
/// 16 × 64: M = 8, N = 2560 52 / 149, 6912 103 / 205, 32000 387 / 473, 128256 1449 / 1686;
/// M = 16, N = 6912 184 / 205, 32000 737 / 474; M = 24, N = 2560 109 / 179, 6912 254 / 261;
/// M = 32, N = 2560 132 / 159, 6912 333 / 262.
const FEW_ROW_REACH_KN: FewRowReach = FewRowReach {
    always: 8,
    max_rows: 32,
    max_reads: 32_768,
};

/// B stored `[N,K]`, staged. H100, µs, 4 × 16 / 16 × 64: `[8, 2560] · [2560, 2560]ᵀ` 66 / 175,
/// `[16, 4096] · [4096, 4096]ᵀ` 223 / 339; `[16, 2560] · [6912, 2560]ᵀ` 336 / 218, `[32, 2560] ·
/// [2560, 2560]ᵀ` 198 / 176, `[8, 2560] · [128256, 2560]ᵀ` 2234 / 1988 (more in
/// `docs/perf/float-matmul.md`).
const FEW_ROW_REACH_NK: FewRowReach = FewRowReach {
    always: 4,
    max_rows: 16,
    max_reads: 16_384,
};

/// The tile for an `[m, n]` output (B stored `[N,K]` when `bt`) on a device with
/// `workgroup_storage` bytes of workgroup memory: 4 × 256 for up to [`FEW_ROW_WIDE_MAX_ROWS`]
/// rows and from [`FEW_ROW_WIDE_COLUMNS`] columns with `bt` (a decode step's logits against a
/// large vocabulary's embedding) where its kernel's memory fits; 4 × 16 within its reach for the
/// layout ([`FEW_ROW_REACH_KN`], [`FEW_ROW_REACH_NK`]); else 64 × 64 where it pads the rows by
/// at most a quarter and gives [`FILL_WORKGROUPS`] workgroups, else 16 × 64 (or the one
/// `BITNET_MATMUL_TILE` forces in a build with the `kernel-override` feature).
pub(crate) fn tile_for(m: u64, n: u64, bt: bool, workgroup_storage: u32) -> &'static Tile {
    if let Some((rows, cols)) = crate::kernel_override::matmul_tile() {
        let named = |t: &&Tile| t.rows == rows && cols.is_none_or(|c| t.cols == c);
        match TILES.iter().find(named) {
            Some(t) => return t,
            None => crate::kernel_override::warn_once(&format!(
                "{}: no {rows} × {} tile (64x64, 16x64, 4x16, 4x256): the matmul picks its \
                 tile by shape",
                crate::kernel_override::MATMUL_TILE_ENV,
                cols.map_or("any".into(), |c| c.to_string()),
            )),
        }
    }
    let [wide, narrow, few, few_wide] = &TILES;
    let tiles = m.div_ceil(wide.rows);
    let wide_fits = workgroup_storage >= few_wide.workgroup_bytes;
    if bt && wide_fits && m <= FEW_ROW_WIDE_MAX_ROWS && n >= FEW_ROW_WIDE_COLUMNS {
        return few_wide;
    }
    let reach = if bt {
        &FEW_ROW_REACH_NK
    } else {
        &FEW_ROW_REACH_KN
    };
    if m <= reach.always || (m <= reach.max_rows && m.div_ceil(few.rows) * n <= reach.max_reads) {
        few
    } else if tiles * wide.rows <= m + m / 4 && tiles * n.div_ceil(wide.cols) >= FILL_WORKGROUPS {
        wide
    } else {
        narrow
    }
}
