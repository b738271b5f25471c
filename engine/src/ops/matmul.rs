//! Dense matmul on resident tensors: `matmul` / `matmul_bt` in f32, and their f16 forms (f16 in
//! and out, f32 accumulation; need `SHADER_F16` on the GPU). Same results and errors as
//! `bitnet_cpu_ref::ops::{matmul, matmul_bt, matmul_f16, matmul_bt_f16}`: the GPU accumulates
//! in the same order (k in chunks of `MATMUL_CHUNK`, each chunk k ascending, then the chunks in
//! order), each product rounded before its sum (pinned, so no driver can contract it into a fused
//! multiply-add), so f32 results are the same bits; an f16 result may differ by one f16 ulp,
//! since WGSL lets the final f32 → f16 conversion round either way.
//!
//! The tile (outputs per workgroup) follows the output's size ([`tile_for`]): 64 × 64 for large
//! outputs, 16 × 64 where 64 × 64 tiles would leave the GPU idle, and for up to 4 rows one
//! whose invocations share each output's k chunks (`matmul_gemv.wgsl`; a decode step's logits).
//! Every tile sums in the same order, so the same bits; the measurements behind the choice are
//! in `docs/perf/float-matmul.md`.

use bitnet_cpu_ref::ops as cpu;
use bitnet_kernels_wgsl::KernelSource;
use bitnet_kernels_wgsl::tensor as kernels;

use super::float_args::{self, host_f16, host_f32, row_chunks, store_f16, store_f32};
use crate::context::Gpu;
use crate::engine::Engine;
use crate::error::{Error, Result};
use crate::launch::{Launch, check_binding};
use crate::pipelines::{Access, Kernel};
use crate::status::NonFiniteCheck;
use crate::tensor::{DType, Tensor};

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
}

/// How a tile's kernel walks k, for its loop count.
#[derive(Clone, Copy)]
enum Walk {
    /// `matmul_tiled.wgsl`: all of k in steps of `step_k`, with `loads` tile-load loop
    /// iterations per invocation and step (as many again check and store them).
    Steps { step_k: u64, loads: u64 },
    /// `matmul_gemv.wgsl`: rounds of `lanes` chunks, one chunk per invocation. B stored [K,N]:
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
    }
}

impl Tile {
    /// The kernel for variant `v` (its element type and B's layout).
    fn kernel(&self, v: Variant) -> &Kernel {
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
    tile(
        (4, 256),
        Walk::Chunks { lanes: 1, step: 8 },
        [kernels::MATMUL_F32_GEMV_WIDE, kernels::MATMUL_F16_GEMV_WIDE],
        [kernels::MATMUL_F32_GEMV_WIDE, kernels::MATMUL_F16_GEMV_WIDE],
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
/// 2239 / 1702 / 1987. (B stored `[K,N]` is read directly, fastest with 16 lanes: M = 1,
/// N = 128256, 4 × 16 728, 4 × 256 903 staged.)
const FEW_ROW_WIDE_COLUMNS: u64 = 65_536;
const FEW_ROW_WIDE_MAX_ROWS: u64 = 8;

/// Most rows the 4 × 16 tile takes past 4, and most row groups × columns it may read B for (each
/// group of 4 rows reads all of B again). H100, µs, 4 × 16 / 16 × 64: `[8, 2560] · [2560, 2560]`
/// 65 / 150, `[16, 2560] · [2560, 2560]` 105 / 151, `[8, 2560] · [2560, 6912]` 149 / 205,
/// `[16, 4096] · [4096, 4096]ᵀ` 226 / 339; `[16, 2560] · [6912, 2560]ᵀ` 336 / 218, `[32, 2560] ·
/// [2560, 2560]` 196 / 182.
const FEW_ROW_MAX_ROWS: u64 = 16;
const FEW_ROW_MAX_READS: u64 = 16_384;

/// The tile for an `[m, n]` output (B stored `[N,K]` when `bt`): 4 × 256 for up to
/// [`FEW_ROW_WIDE_MAX_ROWS`] rows and from [`FEW_ROW_WIDE_COLUMNS`] columns with `bt` (a decode
/// step's logits against a large vocabulary's embedding); 4 × 16
/// for up to 4 rows, and up to [`FEW_ROW_MAX_ROWS`] where it reads B few times; else 64 × 64
/// where it pads the rows by at most a quarter and gives [`FILL_WORKGROUPS`] workgroups, else
/// 16 × 64 (or the one `BITNET_MATMUL_TILE` forces in a build with the `kernel-override`
/// feature).
pub(crate) fn tile_for(m: u64, n: u64, bt: bool) -> &'static Tile {
    if let Some((rows, cols)) = crate::kernel_override::matmul_tile()
        && let Some(t) = TILES.iter().find(|t| (t.rows, t.cols) == (rows, cols))
    {
        return t;
    }
    let [wide, narrow, few, few_wide] = &TILES;
    let tiles = m.div_ceil(wide.rows);
    if bt && m <= FEW_ROW_WIDE_MAX_ROWS && n >= FEW_ROW_WIDE_COLUMNS {
        few_wide
    } else if m <= few.rows
        || (m <= FEW_ROW_MAX_ROWS && m.div_ceil(few.rows) * n <= FEW_ROW_MAX_READS)
    {
        few
    } else if tiles * wide.rows <= m + m / 4 && tiles * n.div_ceil(wide.cols) >= FILL_WORKGROUPS {
        wide
    } else {
        narrow
    }
}

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct Params {
    m: u32,
    n: u32,
    k: u32,
    b_trans: u32,
    row_base: u32,
    a_shift: u32,
    c_shift: u32,
    /// Always 0: the kernel's runtime zero, which pins each product against fma contraction.
    zero: u32,
}

/// Which of the four products.
#[derive(Clone, Copy)]
pub(crate) struct Variant {
    pub op: &'static str,
    pub dtype: DType,
    /// `b` is stored `[N, K]` and used transposed.
    pub bt: bool,
}

impl Engine {
    /// `C[M, N] = A[M, K] · B[K, N]` for `F32` tensors; same as `bitnet_cpu_ref::ops::matmul`.
    /// Errors: operands not rank 2 or inner dimensions differ (as cpu-ref reports them), wrong
    /// dtype, non-finite inputs or outputs (`Error::NonFinite`; on the GPU by reading or checking
    /// the output, or a tensor computed from it).
    pub fn matmul(&self, a: &Tensor, b: &Tensor) -> Result<Tensor> {
        self.matmul_variant(
            Variant {
                op: "matmul",
                dtype: DType::F32,
                bt: false,
            },
            a,
            b,
        )
    }

    /// `C[M, N] = A[M, K] · B[N, K]ᵀ` for `F32` tensors (`x · Wᵀ`, `Q · Kᵀ`); same as
    /// `bitnet_cpu_ref::ops::matmul_bt`, errors as [`Engine::matmul`].
    pub fn matmul_bt(&self, a: &Tensor, b: &Tensor) -> Result<Tensor> {
        self.matmul_variant(
            Variant {
                op: "matmul_bt",
                dtype: DType::F32,
                bt: true,
            },
            a,
            b,
        )
    }

    /// [`Engine::matmul`] on `F16` tensors: f32 accumulation, each output rounded once to f16; an
    /// output beyond the f16 range is a non-finite output error. Needs `SHADER_F16` on the GPU
    /// (`Error::Unsupported` naming it otherwise). Same as `bitnet_cpu_ref::ops::matmul_f16`.
    pub fn matmul_f16(&self, a: &Tensor, b: &Tensor) -> Result<Tensor> {
        self.matmul_variant(
            Variant {
                op: "matmul_f16",
                dtype: DType::F16,
                bt: false,
            },
            a,
            b,
        )
    }

    /// [`Engine::matmul_bt`] on `F16` tensors, with [`Engine::matmul_f16`]'s conventions. Same as
    /// `bitnet_cpu_ref::ops::matmul_bt_f16`.
    pub fn matmul_bt_f16(&self, a: &Tensor, b: &Tensor) -> Result<Tensor> {
        self.matmul_variant(
            Variant {
                op: "matmul_bt_f16",
                dtype: DType::F16,
                bt: true,
            },
            a,
            b,
        )
    }

    fn matmul_variant(&self, v: Variant, a: &Tensor, b: &Tensor) -> Result<Tensor> {
        float_args::operand(self, v.op, a, v.dtype)?;
        float_args::operand(self, v.op, b, v.dtype)?;
        let (m, k, n) = dims(v, a.shape(), b.shape())?;
        let tile = tile_for(m as u64, n as u64, v.bt);
        let on_host = || -> Result<Tensor> {
            match (v.dtype, v.bt) {
                (DType::F32, false) => store_f32(
                    self,
                    cpu::matmul(host_f32(a)?.view()?, host_f32(b)?.view()?)?,
                ),
                (DType::F32, true) => store_f32(
                    self,
                    cpu::matmul_bt(host_f32(a)?.view()?, host_f32(b)?.view()?)?,
                ),
                (_, false) => store_f16(self, cpu::matmul_f16(&host_f16(a)?, &host_f16(b)?)?),
                (_, true) => store_f16(self, cpu::matmul_bt_f16(&host_f16(a)?, &host_f16(b)?)?),
            }
        };
        self.tensor_op(
            &[a, b],
            tile.loops(k as u64),
            |gpu| {
                let (m, k, n) = (m as u64, k as u64, n as u64);
                self.matmul_tiled(gpu, v, a, b, (m, k, n), tile)
            },
            on_host,
        )
    }

    /// [`Engine::matmul_variant`] on the GPU with `tile`.
    pub(crate) fn matmul_tiled(
        &self,
        gpu: &Gpu,
        v: Variant,
        a: &Tensor,
        b: &Tensor,
        (m, k, n): (u64, u64, u64),
        tile: &Tile,
    ) -> Result<Tensor> {
        let kernel = tile.kernel(v);
        if !gpu.caps.has(kernel.requires) {
            return Err(Error::Unsupported(format!(
                "{}: the GPU lacks wgpu::Features::SHADER_F16 (f16 shader arithmetic and storage)",
                v.op
            )));
        }
        // Saturating: a and b exist, but an output of m × n can pass u64 (then past u32 too).
        for (what, count) in [("a", m * k), ("b", k * n), ("output", m.saturating_mul(n))] {
            float_args::u32_indexable(v.op, what, count)?;
        }
        let es = if v.dtype == DType::F32 { 4 } else { 2 };
        check_binding(
            gpu,
            &format!("{}: b", v.op),
            (k * n * es).next_multiple_of(4),
        )?;
        let out = self.empty(gpu, v.op, &[m as usize, n as usize], v.dtype)?;
        // Column tiles fold into grid x and z (the kernel's tile is wg.x + wg.z * nwg.x), so
        // N is not capped at max_compute_workgroups_per_dimension tiles.
        let max_dim = gpu.caps.limits.max_compute_workgroups_per_dimension;
        let col_tiles = crate::chunk::fold(n.div_ceil(tile.cols), max_dim)?;
        let max_rows = u64::from(gpu.caps.limits.max_compute_workgroups_per_dimension) * tile.rows;
        let split = row_chunks(gpu, v.op, m, &[k * es, n * es], max_rows)?;
        let group = gpu.next_seq();
        for r in &split.chunks {
            let (a_off, a_size, a_row) = split.binding(0, r);
            let (c_off, c_size, c_row) = split.binding(1, r);
            let rows = r.end - r.start;
            Launch::new(gpu, kernel)
                .input_range(a, a_off, a_size)
                .input(b)
                .output_range(&out, c_off, c_size)
                .params(&Params {
                    m: rows as u32,
                    n: n as u32,
                    k: k as u32,
                    b_trans: u32::from(v.bt),
                    row_base: r.start as u32,
                    a_shift: (r.start - a_row) as u32,
                    c_shift: (r.start - c_row) as u32,
                    zero: 0,
                })
                .chunk_of(group)
                .check_finite(NonFiniteCheck::tensors(v.op, ["a", "b", "output", ""]))
                .grid([col_tiles[0], rows.div_ceil(tile.rows) as u32, col_tiles[1]])
                .run()?;
        }
        Ok(out)
    }
}

/// `(M, K, N)`, with cpu-ref's shape errors (rank 2 each, shared `K`).
fn dims(v: Variant, a: &[usize], b: &[usize]) -> Result<(usize, usize, usize)> {
    let mismatch = |what, expected: Vec<usize>| {
        Error::from(bitnet_cpu_ref::Error::ShapeMismatch {
            op: v.op,
            what,
            expected,
            got: b.to_vec(),
        })
    };
    let (&[m, k], &[b0, b1]) = (a, b) else {
        let (tensor, got) = if a.len() != 2 { ("a", a) } else { ("b", b) };
        return Err(Error::from(bitnet_cpu_ref::Error::RankMismatch {
            op: v.op,
            tensor,
            expected: 2,
            got: got.to_vec(),
        }));
    };
    let (bk, n) = if v.bt { (b1, b0) } else { (b0, b1) };
    if bk != k {
        // As cpu-ref: the shape b needs (a's K, b's own N) against b's shape.
        return Err(if v.bt {
            mismatch("a is [M, K], b must be [N, K]", vec![n, k])
        } else {
            mismatch("a is [M, K], b must be [K, N]", vec![k, n])
        });
    }
    Ok((m, k, n))
}

#[cfg(test)]
#[path = "matmul_tests.rs"]
mod tests;
