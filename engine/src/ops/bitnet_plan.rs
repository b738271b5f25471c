//! BitLinear kernel plans: which kernel (and override constants) runs one BitLinear shape, the
//! heuristic default, and the recording of a plan over every chunk of a shape.
//!
//! | plan | kernel | when |
//! |---|---|---|
//! | [`LinearPlan::Fused`] | `bitlinear_gemv_fused_subgroup` | M ≤ 8, f32 activations, K % 64 == 0, K ≤ 15360, `SUBGROUP` |
//! | [`LinearPlan::Batch`] | `bitlinear_gemv_batch_subgroup` | M ≤ 8, f32 activations, K % 64 == 0, `SUBGROUP` (default past K = 15360) |
//! | [`LinearPlan::Vec4`] | `bitlinear_gemv_vec4_subgroup` | M ≤ 8, K % 64 == 0, `SUBGROUP` |
//! | [`LinearPlan::Lean`] | `bitlinear_gemv_lean_subgroup` | as `Batch`, subgroup size ≥ 8, 30 KiB of workgroup memory (autotune candidate) |
//! | [`LinearPlan::LeanQ`] | `bitlinear_gemv_lean_q_subgroup` | M ≤ 8, K % 64 == 0, subgroup size ≥ 8 (autotune candidate) |
//! | [`LinearPlan::Staged`] | `bitlinear_gemv_staged_subgroup` | M ≤ 8, K % 64 == 0, `SUBGROUP` (autotune candidate) |
//! | [`LinearPlan::Generic`] | `bitlinear_gemv_{subgroup,workgroup}` | M ≤ 8, any K |
//! | [`LinearPlan::Gemm`] | `bitlinear_gemm` | M > 8 |
//! | [`LinearPlan::Coop`] | `bitlinear_gemm_coop_subgroup` | M > 8, f16 cooperative matrices, subgroup size 32, passed the self-test |
//!
//! For f32 activations every plan other than `Fused`, `Batch` and `Lean` quantizes them first (one
//! `act_quant` dispatch) and then runs the plan's kernel.

use bitnet_cpu_ref::layout::{activation_words_per_row, words_per_row};
use bitnet_kernels_wgsl::bitnet as kernels;

use super::bitnet::{chunk_limit, row_chunks};
use super::bitnet_choose::{lean_ok, lean_q_ok};
use crate::context::Gpu;
use crate::error::Result;
use crate::launch::{Launch, fold_workgroups};
use crate::pipelines::{Access, Kernel};
use crate::status::NonFiniteCheck;
use crate::tensor::Tensor;

use Access::{Read, ReadWrite};

/// weights, weight scale, activations, activation absmax, output.
const BINDINGS: &[Access] = &[Read, Read, Read, Read, ReadWrite];
const GEMV_SUBGROUP: Kernel = Kernel::new(kernels::BITLINEAR_GEMV_SUBGROUP, "main", BINDINGS)
    .requiring(wgpu::Features::SUBGROUP);
const GEMV_WORKGROUP: Kernel = Kernel::new(kernels::BITLINEAR_GEMV_WORKGROUP, "main", BINDINGS);
const GEMV_VEC4: Kernel = Kernel::new(kernels::BITLINEAR_GEMV_VEC4_SUBGROUP, "main", BINDINGS)
    .requiring(wgpu::Features::SUBGROUP);
/// weights, weight scale, f32 activations, output.
const GEMV_FUSED: Kernel = Kernel::new(
    kernels::BITLINEAR_GEMV_FUSED_SUBGROUP,
    "main",
    &[Read, Read, Read, ReadWrite],
)
.requiring(wgpu::Features::SUBGROUP);
const GEMV_STAGED: Kernel = Kernel::new(kernels::BITLINEAR_GEMV_STAGED_SUBGROUP, "main", BINDINGS)
    .requiring(wgpu::Features::SUBGROUP);
/// weights, weight scale, f32 activations `[M, K]`, output.
const GEMV_BATCH: Kernel = Kernel::new(
    kernels::BITLINEAR_GEMV_BATCH_SUBGROUP,
    "main",
    &[Read, Read, Read, ReadWrite],
)
.requiring(wgpu::Features::SUBGROUP);
const GEMV_LEAN: Kernel = Kernel::new(
    kernels::BITLINEAR_GEMV_LEAN_SUBGROUP,
    "main",
    &[Read, Read, Read, ReadWrite],
)
.requiring(wgpu::Features::SUBGROUP);
const GEMV_LEAN_Q: Kernel = Kernel::new(kernels::BITLINEAR_GEMV_LEAN_Q_SUBGROUP, "main", BINDINGS)
    .requiring(wgpu::Features::SUBGROUP);
const GEMM: Kernel = Kernel::new(kernels::BITLINEAR_GEMM, "main", BINDINGS);
const GEMM_COOP: Kernel =
    Kernel::new(kernels::BITLINEAR_GEMM_COOP_SUBGROUP, "main", BINDINGS).requiring(COOP_FEATURES);
/// Features of the cooperative-matrix GEMM.
const COOP_FEATURES: wgpu::Features = wgpu::Features::SHADER_F16
    .union(wgpu::Features::SUBGROUP)
    .union(wgpu::Features::EXPERIMENTAL_COOPERATIVE_MATRIX);
/// Largest K of the cooperative-matrix GEMM: f32 sums of |x·w| ≤ 128 K stay exact below 2^24.
const COOP_MAX_K: usize = 1 << 17;

/// cpu-ref's name for an output that overflowed in the rescale.
const OUTPUT: &str = "output (rescale overflowed f32)";

/// Lane counts (`TPR`) the vec4 GEMVs are compiled with: powers of two, 8..=256.
pub const GEMV_LANES: [u32; 6] = [8, 16, 32, 64, 128, 256];

/// How one BitLinear shape runs (see the module table).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum LinearPlan {
    /// Activation quantization fused into the vec4 GEMV, one workgroup per row block and
    /// activation row (M ≤ 8); `lanes` threads per 4-row block.
    Fused {
        /// Threads per 4-row block (`TPR`), one of `GEMV_LANES` (8, 16, ..., 256).
        lanes: u32,
    },
    /// Activation quantization fused into the batched GEMV (M ≤ 8 f32 rows staged in K tiles,
    /// each weight load applied to every row); `lanes` threads per 4-row block.
    Batch {
        /// Threads per 4-row block (`TPR`), one of `GEMV_LANES` (8, 16, ..., 256).
        lanes: u32,
    },
    /// The lean batched GEMV (M ≤ 8 f32 rows, quantization fused, short critical path:
    /// `bitlinear_gemv_lean_subgroup.wgsl`); `lanes` threads per 4-row block.
    Lean {
        /// Threads per 4-row block (`TPR`), one of `GEMV_LANES` (8, 16, ..., 256).
        lanes: u32,
    },
    /// The vec4 GEMV with a barrier-free epilogue (`bitlinear_gemv_lean_q_subgroup.wgsl`; M ≤ 8,
    /// K % 64 == 0, subgroup size ≥ 8); `lanes` threads per 4-row block.
    LeanQ {
        /// Threads per 4-row block (`TPR`), one of `GEMV_LANES` (8, 16, ..., 256).
        lanes: u32,
    },
    /// The vec4 GEMV (M ≤ 8, K % 64 == 0); `lanes` threads per 4-row block.
    Vec4 {
        /// Threads per 4-row block (`TPR`), one of `GEMV_LANES` (8, 16, ..., 256).
        lanes: u32,
    },
    /// The staged GEMV (M ≤ 8, K % 64 == 0): quantized rows copied into workgroup memory in K
    /// tiles, each weight load applied to every row; `lanes` threads per 4-row block.
    Staged {
        /// Threads per 4-row block (`TPR`), one of `GEMV_LANES` (8, 16, ..., 256).
        lanes: u32,
    },
    /// The generic GEMV (M ≤ 8, any K; subgroup or workgroup-memory reduction by features).
    Generic,
    /// The cooperative-matrix (tensor core) GEMM, f16 × f16 → f32; used after a device self-test.
    Coop,
    /// The tiled GEMM with `t × t` outputs per thread (`t` = 4 or 8; tiles of 16 t × 16 t).
    Gemm {
        /// Outputs per thread and dimension.
        t: u32,
    },
}

impl std::fmt::Display for LinearPlan {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            LinearPlan::Fused { lanes } => write!(f, "fused gemv (TPR {lanes})"),
            LinearPlan::Batch { lanes } => write!(f, "fused batch gemv (TPR {lanes})"),
            LinearPlan::Vec4 { lanes } => write!(f, "vec4 gemv (TPR {lanes})"),
            LinearPlan::Staged { lanes } => write!(f, "staged gemv (TPR {lanes})"),
            LinearPlan::Lean { lanes } => write!(f, "lean batch gemv (TPR {lanes})"),
            LinearPlan::LeanQ { lanes } => write!(f, "lean gemv (TPR {lanes})"),
            LinearPlan::Generic => write!(f, "generic gemv"),
            LinearPlan::Gemm { t } => write!(f, "gemm ({t}x{t} per thread)"),
            LinearPlan::Coop => write!(f, "coop-matrix gemm"),
        }
    }
}

impl LinearPlan {
    /// Whether the plan's kernel takes f32 activations (quantization fused in).
    pub(crate) fn takes_f32(&self) -> bool {
        matches!(
            self,
            LinearPlan::Fused { .. } | LinearPlan::Batch { .. } | LinearPlan::Lean { .. }
        )
    }
}

/// Whether the vec4 GEMV can run `m` activation rows of length `k` on `gpu`.
pub(crate) fn vec4_ok(gpu: &Gpu, m: usize, k: usize) -> bool {
    gpu.caps.has(wgpu::Features::SUBGROUP)
        && m as u64 <= u64::from(kernels::GEMV_MAX_M)
        && k.is_multiple_of(64)
}

/// Whether the fused M = 1 GEMV can run an f32 row of length `k` on `gpu`.
pub(crate) fn fused_ok(gpu: &Gpu, m: usize, k: usize) -> bool {
    batch_ok(gpu, m, k) && k as u64 <= u64::from(kernels::GEMV_FUSED_MAX_K)
}

/// Whether the fused batched GEMV can run `m` f32 rows of length `k` on `gpu`: the vec4 GEMV's
/// conditions, and all `m` rows in one binding (the kernel reports flat `[M, K]` indices).
pub(crate) fn batch_ok(gpu: &Gpu, m: usize, k: usize) -> bool {
    vec4_ok(gpu, m, k) && m >= 1 && 4 * (m as u64) * (k as u64) <= chunk_limit(gpu)
}

/// Weight steps (64 values) per K tile of the batched GEMV for `m` rows.
pub(crate) fn batch_tile_steps(m: usize) -> u32 {
    kernels::GEMV_BATCH_TILE_VEC4 / (4 * m.clamp(1, kernels::GEMV_MAX_M as usize) as u32)
}

/// Default lanes of the batched GEMV: those of the vec4 GEMV, but no more than a tile's steps
/// rounded up to a power of two (M = 8: 28 steps, 32 lanes — one step each, 4 lanes idle; 16
/// lanes would idle as many step slots with half the workgroups to spread over a large GPU).
pub(crate) fn batch_lanes(m: usize, k: usize) -> u32 {
    default_lanes(k)
        .min(batch_tile_steps(m).next_power_of_two())
        .max(8)
}

/// Whether the cooperative-matrix GEMM can run `m` rows of length `k` on `gpu` (features, a
/// subgroup size of exactly 32; correctness is established by the tuner's self-test).
pub(crate) fn coop_ok(gpu: &Gpu, m: usize, k: usize) -> bool {
    gpu.caps.has(COOP_FEATURES)
        && gpu.caps.subgroup_min_size == 32
        && gpu.caps.subgroup_max_size == 32
        && m as u64 > u64::from(kernels::GEMV_MAX_M)
        && k <= COOP_MAX_K
}

/// Whether `plan` can run the shape (`f32_input`: activations not yet quantized).
pub(crate) fn plan_ok(gpu: &Gpu, plan: LinearPlan, m: usize, k: usize, f32_input: bool) -> bool {
    let lanes_ok = |l: u32| GEMV_LANES.contains(&l);
    match plan {
        LinearPlan::Fused { lanes } => f32_input && fused_ok(gpu, m, k) && lanes_ok(lanes),
        LinearPlan::Batch { lanes } => f32_input && batch_ok(gpu, m, k) && lanes_ok(lanes),
        LinearPlan::Lean { lanes } => f32_input && lean_ok(gpu, m, k) && lanes_ok(lanes),
        LinearPlan::LeanQ { lanes } => lean_q_ok(gpu, m, k) && lanes_ok(lanes),
        LinearPlan::Vec4 { lanes } | LinearPlan::Staged { lanes } => {
            vec4_ok(gpu, m, k) && lanes_ok(lanes)
        }
        LinearPlan::Generic => m as u64 <= u64::from(kernels::GEMV_MAX_M),
        LinearPlan::Gemm { t } => m as u64 > u64::from(kernels::GEMV_MAX_M) && [4, 8].contains(&t),
        LinearPlan::Coop => coop_ok(gpu, m, k),
    }
}

/// Default lanes per 4-row block: about two vec4 steps per lane (`K / 64` vec4 per row), at
/// least 8 and at most 128.
pub(crate) fn default_lanes(k: usize) -> u32 {
    let steps = (k / 64).div_ceil(2).max(1) as u32;
    steps.next_power_of_two().clamp(8, 128)
}

/// Default lanes of the fused GEMV: [`default_lanes`] for M = 1. Batches have M times the
/// workgroups, so they take the fewest lanes (most rows per workgroup, from [`OVERLAP_LANES`]) that
/// still give [`FILL_WORKGROUPS`] workgroups, at most [`default_lanes`].
pub(crate) fn fused_lanes(m: usize, n: usize, k: usize) -> u32 {
    let most = default_lanes(k);
    if m <= 1 {
        return most;
    }
    let groups = |lanes: u32| (m * n) as u64 * u64::from(lanes) / (4 * GV_THREADS);
    let mut lanes = OVERLAP_LANES;
    while lanes < most && groups(lanes) < FILL_WORKGROUPS {
        lanes *= 2;
    }
    lanes
}

/// Workgroups a batched fused GEMV aims for: two per SM of a 132-SM GPU, rounded.
const FILL_WORKGROUPS: u64 = 256;
/// Threads of a vec4-GEMV workgroup.
const GV_THREADS: u64 = kernels::GEMV_VEC4_THREADS as u64;

/// The untuned choice for a shape: fused kernels for f32 activations (`Fused` for M ≤ 8, `Batch`
/// past `Fused`'s K limit), else the vec4 GEMV, the generic GEMV or the tiled GEMM. `Fused` for
/// M = 2..8 (one workgroup per row block and activation row) measured on the H200 against
/// `Batch` (each workgroup quantizing all M rows): see `bench/RESULTS.md`, issue 4's B = 8 / B = 1.
pub(crate) fn heuristic(gpu: &Gpu, m: usize, n: usize, k: usize, f32_input: bool) -> LinearPlan {
    if m as u64 > u64::from(kernels::GEMV_MAX_M) {
        // Big tiles when there are enough of them to fill a large GPU.
        let big = m.div_ceil(128) * n.div_ceil(128) >= 128;
        return LinearPlan::Gemm {
            t: if big { 8 } else { 4 },
        };
    }
    let lanes = default_lanes(k);
    if f32_input && fused_ok(gpu, m, k) {
        LinearPlan::Fused {
            lanes: fused_lanes(m, n, k),
        }
    } else if f32_input && batch_ok(gpu, m, k) {
        LinearPlan::Batch {
            lanes: batch_lanes(m, k),
        }
    } else if vec4_ok(gpu, m, k) {
        LinearPlan::Vec4 { lanes }
    } else {
        LinearPlan::Generic
    }
}

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct LinearParams {
    m: u32,
    n: u32,
    words_per_row: u32,
    out_stride: u32,
    out_base: u32,
    mode: u32,
    tiles_n: u32,
    m_base: u32,
    /// Always 0 (the kernels' runtime zero for their optimization barrier).
    zero: u32,
}

/// One recording of a plan.
pub(crate) struct LinearCall<'a> {
    /// Error name of the op.
    pub op: &'static str,
    /// The plan; `Fused` and `Batch` take f32 `x`, every other plan a `QuantizedI8` `x`.
    pub plan: LinearPlan,
    /// Activations `[M, K]`.
    pub x: &'a Tensor,
    /// Ternary weights; rows are read from byte `w_base` on (autotune binds copies).
    pub w: &'a Tensor,
    /// Byte offset of row 0 in `w`'s data (aligned to the storage offset alignment).
    pub w_base: u64,
    /// Output `[M, N]` (`F32`, or `U32` with `acc`).
    pub out: &'a Tensor,
    /// `(M, N, K)`.
    pub shape: (usize, usize, usize),
    /// Write the exact accumulators instead of y.
    pub acc: bool,
    /// Report non-finite input / output through the status slot.
    pub check: bool,
}

impl LinearCall<'_> {
    /// Records the plan's launches, chunked over M and N to fit the storage-binding limit.
    pub fn record(&self, gpu: &Gpu) -> Result<()> {
        let (m, n, k) = self.shape;
        let fused = self.plan.takes_f32();
        let wpr = words_per_row(k) as u64;
        let xpr = activation_words_per_row(k) as u64;
        let x_row = if fused { 4 * k as u64 } else { 4 * xpr };
        let (m64, n64) = (m as u64, n as u64);
        for mr in row_chunks(gpu, self.op, m64, &[x_row, 4 * n64])? {
            for nr in row_chunks(gpu, self.op, n64, &[4 * wpr])? {
                let (rows_m, rows_n) = (mr.end - mr.start, nr.end - nr.start);
                let (kernel, groups, tiles_n) = match self.plan {
                    LinearPlan::Fused { lanes } => {
                        (&GEMV_FUSED, rows_n.div_ceil(rows_per(lanes)), 0)
                    }
                    LinearPlan::Batch { lanes } => {
                        (&GEMV_BATCH, rows_n.div_ceil(rows_per(lanes)), 0)
                    }
                    LinearPlan::Lean { lanes } => (&GEMV_LEAN, rows_n.div_ceil(rows_per(lanes)), 0),
                    LinearPlan::LeanQ { lanes } => {
                        (&GEMV_LEAN_Q, rows_n.div_ceil(rows_per(lanes)), 0)
                    }
                    LinearPlan::Vec4 { lanes } => (&GEMV_VEC4, rows_n.div_ceil(rows_per(lanes)), 0),
                    LinearPlan::Staged { lanes } => {
                        (&GEMV_STAGED, rows_n.div_ceil(rows_per(lanes)), 0)
                    }
                    LinearPlan::Generic => {
                        let kernel = if gpu.caps.has(wgpu::Features::SUBGROUP) {
                            &GEMV_SUBGROUP
                        } else {
                            &GEMV_WORKGROUP
                        };
                        (kernel, rows_n.div_ceil(u64::from(kernels::GEMV_ROWS)), 0)
                    }
                    LinearPlan::Coop => {
                        let tiles_n = rows_n.div_ceil(u64::from(kernels::GEMM_COOP_TILE_N));
                        let tiles_m = rows_m.div_ceil(u64::from(kernels::GEMM_COOP_TILE_M));
                        (&GEMM_COOP, tiles_n * tiles_m, tiles_n)
                    }
                    LinearPlan::Gemm { t } => {
                        let tiles_n = rows_n.div_ceil(16 * u64::from(t));
                        (&GEMM, tiles_n * rows_m.div_ceil(16 * u64::from(t)), tiles_n)
                    }
                };
                let params = LinearParams {
                    m: rows_m as u32,
                    n: rows_n as u32,
                    words_per_row: wpr as u32,
                    out_stride: n as u32,
                    out_base: nr.start as u32,
                    mode: u32::from(self.acc),
                    tiles_n: tiles_n as u32,
                    m_base: mr.start as u32,
                    zero: 0,
                };
                let mut launch = Launch::new(gpu, kernel)
                    .input_range(self.w, self.w_base + 4 * wpr * nr.start, 4 * wpr * rows_n)
                    .input_scales(self.w)
                    .input_range(self.x, x_row * mr.start, x_row * rows_m);
                if !fused {
                    launch = launch.input_scales(self.x);
                }
                launch = launch
                    .output_range(self.out, 4 * n64 * mr.start, 4 * n64 * rows_m)
                    .params(&params);
                launch = match self.plan {
                    // One workgroup per activation row (x, fastest) and row block (y, z).
                    LinearPlan::Fused { .. } => {
                        let [x, y, _] = fold_workgroups(gpu, groups)?;
                        launch.grid([rows_m as u32, x, y])
                    }
                    _ => launch.workgroups(groups),
                };
                launch = match self.plan {
                    LinearPlan::Fused { lanes } => launch
                        .constant("TPR", f64::from(lanes))
                        .constant("DEPTH", f64::from(load_depth(k, lanes))),
                    LinearPlan::Vec4 { lanes }
                    | LinearPlan::Batch { lanes }
                    | LinearPlan::Lean { lanes }
                    | LinearPlan::LeanQ { lanes }
                    | LinearPlan::Staged { lanes } => launch
                        .constant("TPR", f64::from(lanes))
                        .constant("MR", rows_m as f64),
                    LinearPlan::Gemm { t } => launch.constant("T", f64::from(t)),
                    LinearPlan::Generic | LinearPlan::Coop => launch,
                };
                if self.check && !self.acc {
                    // The fused kernels check x (word 0, cpu-ref checks it first) and y (word 1);
                    // they bind all M rows at once (`batch_ok`), so both index spaces start at 0.
                    let check = if fused {
                        NonFiniteCheck::tensors(self.op, ["x", OUTPUT, "", ""])
                    } else {
                        NonFiniteCheck::new(self.op, OUTPUT).at(mr.start * n64)
                    };
                    launch = launch.check_finite(check);
                } else if self.check && fused {
                    launch = launch.check_finite(NonFiniteCheck::new(self.op, "x"));
                }
                launch.run()?;
            }
        }
        Ok(())
    }
}

/// Weight steps each fused-GEMV thread keeps in flight (`DEPTH`): 2 (double buffering), or 1
/// when a thread has a single step. Deeper (up to 4: every step up front) measured no faster on
/// the H200 (within ~1 µs, slightly slower), at the cost of registers.
fn load_depth(k: usize, lanes: u32) -> u32 {
    let steps = (k as u64 / 64).div_ceil(u64::from(lanes)).max(1);
    steps.min(2) as u32
}

/// Lanes per 4-row block of the fused GEMV where there is work beside it: when its dispatch
/// overlaps earlier work (`hazard.rs`, `bitnet_choose::overlapping`) and for batches (M ≥ 2,
/// M times the workgroups). 128 rows per workgroup, so each workgroup's activation quantization
/// (K floats read twice, a reduction) serves 128 rows. On the H200, M = 1 GEMVs overlapping each
/// other ran 1.8-2x faster than with the latency lanes (2560 × 2560: 0.59 against 1.11 µs per
/// call; 14336 × 4096: 5.9-8.8 against 10.4 µs), while a lone GEMV behind a barrier ran slower
/// (2560 × 2560: 7.3 against 5.5 µs).
pub(crate) const OVERLAP_LANES: u32 = 8;

/// Weight rows per workgroup of the vec4 GEMVs with `lanes` threads per 4-row block.
fn rows_per(lanes: u32) -> u64 {
    u64::from(4 * kernels::GEMV_VEC4_THREADS / lanes)
}
