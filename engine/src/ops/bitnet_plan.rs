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
//! | [`LinearPlan::Coop`] [`CoopKind::Int8`] / [`CoopKind::Int8N96`] | `bitlinear_gemm_coop_i8{,_n96}_subgroup` retyped to int8 in SPIR-V (`spirv.rs`) | as the f16 one, and Vulkan with `PASSTHROUGH_SHADERS`; passed its own self-test |
//!
//! Both GEMMs can split K into `splits` slices (`bitnet_split.rs`): each slice's workgroups write
//! exact accumulators to a plane of a scratch tensor, and `bitlinear_split_sum` adds the planes
//! and rescales — for grids too small to fill the GPU, whose time is one workgroup's walk over K.
//!
//! For f32 activations every plan other than `Fused`, `Batch` and `Lean` quantizes them first (one
//! `act_quant` dispatch) and then runs the plan's kernel.

use bitnet_kernels_wgsl::bitnet as kernels;

use super::bitnet::chunk_limit;
use super::bitnet_choose::{lean_ok, lean_q_ok};
use super::bitnet_loops::plan_fits;
use super::bitnet_split::split_ok;
use crate::context::Gpu;

/// Features of the cooperative-matrix GEMM.
pub(crate) const COOP_FEATURES: wgpu::Features = wgpu::Features::SHADER_F16
    .union(wgpu::Features::SUBGROUP)
    .union(wgpu::Features::EXPERIMENTAL_COOPERATIVE_MATRIX);
/// Largest K of the f16 cooperative-matrix GEMM: f32 sums of |x·w| ≤ 128 K stay exact below 2^24.
/// (The int8 one sums in i32: exact for every K a binding can hold.)
const COOP_MAX_K: usize = 1 << 17;

/// Lane counts (`TPR`) the vec4 GEMVs are compiled with: powers of two, 8..=256.
pub const GEMV_LANES: [u32; 6] = [8, 16, 32, 64, 128, 256];

/// Lane counts of the fused GEMV: [`GEMV_LANES`] and 4 (256 rows per workgroup, for wide batches:
/// see [`fused_lanes`]).
pub const FUSED_LANES: [u32; 7] = [4, 8, 16, 32, 64, 128, 256];

/// How one BitLinear shape runs (see the module table).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum LinearPlan {
    /// Activation quantization fused into the vec4 GEMV, one workgroup per row block and
    /// activation row (M ≤ 8); `lanes` threads per 4-row block.
    Fused {
        /// Threads per 4-row block (`TPR`), one of `FUSED_LANES` (4, 8, ..., 256).
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
    /// A cooperative-matrix (tensor core) GEMM; each used after its device self-test.
    Coop {
        /// K slices (one of `K_SPLITS`; 1 = no split).
        splits: u32,
        /// Which kernel.
        kind: CoopKind,
    },
    /// The tiled GEMM with `t × t` outputs per thread (`t` = 4 or 8; tiles of 16 t × 16 t).
    Gemm {
        /// Outputs per thread and dimension.
        t: u32,
        /// K slices (one of `K_SPLITS`; 1 = no split).
        splits: u32,
    },
}

/// The cooperative-matrix GEMM kernels.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CoopKind {
    /// f16 × f16 → f32 (WGSL, exact while 127 K < 2^24), 128 × 128 tiles.
    F16,
    /// i8 × i8 → i32 (SPIR-V passthrough on Vulkan, `spirv.rs`), 128 × 128 tiles.
    Int8,
    /// The int8 kernel with 128 × 96 tiles: more workgroups where 128-wide tiles leave SMs idle.
    Int8N96,
}

impl CoopKind {
    /// Every kind, in autotune's candidate order.
    pub const ALL: [CoopKind; 3] = [CoopKind::F16, CoopKind::Int8, CoopKind::Int8N96];

    /// Output columns (weight rows) per tile.
    pub(crate) fn tile_n(self) -> u32 {
        match self {
            CoopKind::F16 | CoopKind::Int8 => kernels::GEMM_COOP_TILE_N,
            CoopKind::Int8N96 => kernels::GEMM_COOP_I8_N96_TILE_N,
        }
    }

    /// The kind's short stable name (plan cache, bench `--tuning coopkernel=`).
    pub fn code(self) -> &'static str {
        match self {
            CoopKind::F16 => "coop",
            CoopKind::Int8 => "coopi8",
            CoopKind::Int8N96 => "coopi8n96",
        }
    }

    /// Parses [`CoopKind::code`].
    pub fn from_code(code: &str) -> Option<CoopKind> {
        CoopKind::ALL.into_iter().find(|k| k.code() == code)
    }
}

impl std::fmt::Display for CoopKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            CoopKind::F16 => "coop-matrix gemm",
            CoopKind::Int8 => "int8 coop-matrix gemm",
            CoopKind::Int8N96 => "int8 coop-matrix gemm (128x96 tiles)",
        })
    }
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
            LinearPlan::Gemm { t, splits: 1 } => write!(f, "gemm ({t}x{t} per thread)"),
            LinearPlan::Gemm { t, splits } => {
                write!(f, "gemm ({t}x{t} per thread, K in {splits} slices)")
            }
            LinearPlan::Coop { splits: 1, kind } => write!(f, "{kind}"),
            LinearPlan::Coop { splits, kind } => write!(f, "{kind}, K in {splits} slices"),
        }
    }
}

impl LinearPlan {
    /// K slices of a GEMM plan (1 for every other plan).
    pub(crate) fn k_splits(&self) -> u32 {
        match *self {
            LinearPlan::Gemm { splits, .. } | LinearPlan::Coop { splits, .. } => splits,
            _ => 1,
        }
    }

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

/// What both cooperative-matrix GEMMs need of the device, and M > 8: `features`, a subgroup size
/// of exactly 32, and room for their 512-thread workgroups with `bytes` of workgroup memory.
fn coop_device_ok(gpu: &Gpu, features: wgpu::Features, bytes: u32, m: usize) -> bool {
    let limits = &gpu.caps.limits;
    gpu.caps.has(features)
        && gpu.caps.subgroup_min_size == 32
        && gpu.caps.subgroup_max_size == 32
        && limits.max_compute_invocations_per_workgroup >= kernels::GEMM_COOP_THREADS
        && limits.max_compute_workgroup_size_x >= kernels::GEMM_COOP_THREADS
        && limits.max_compute_workgroup_storage_size >= bytes
        && m as u64 > u64::from(kernels::GEMV_MAX_M)
}

/// Whether the f16 cooperative-matrix GEMM can run `m` rows of length `k` on `gpu` (correctness
/// is established by the tuner's self-test).
pub(crate) fn coop_ok(gpu: &Gpu, m: usize, k: usize) -> bool {
    coop_device_ok(gpu, COOP_FEATURES, kernels::GEMM_COOP_WORKGROUP_BYTES, m) && k <= COOP_MAX_K
}

/// Whether the int8 cooperative-matrix GEMMs can run `m` rows (any K) on `gpu`: passthrough
/// shaders, and a Vulkan driver that lists their int8 matrices (`Caps::int8_coop`; correctness is
/// established by the tuner's self-test).
pub(crate) fn coop_i8_ok(gpu: &Gpu, m: usize) -> bool {
    let features = COOP_FEATURES | wgpu::Features::PASSTHROUGH_SHADERS;
    gpu.caps.int8_coop && coop_device_ok(gpu, features, kernels::GEMM_COOP_I8_WORKGROUP_BYTES, m)
}

/// Whether the cooperative-matrix GEMM `kind` can run `m` rows of length `k` on `gpu`.
pub(crate) fn coop_kind_ok(gpu: &Gpu, kind: CoopKind, m: usize, k: usize) -> bool {
    match kind {
        CoopKind::F16 => coop_ok(gpu, m, k),
        CoopKind::Int8 | CoopKind::Int8N96 => coop_i8_ok(gpu, m),
    }
}

/// Whether `plan` can run the shape (`f32_input`: activations not yet quantized).
pub(crate) fn plan_ok(
    gpu: &Gpu,
    plan: LinearPlan,
    (m, n, k): (usize, usize, usize),
    f32_input: bool,
) -> bool {
    let lanes_ok = |l: u32| GEMV_LANES.contains(&l);
    // On CPU adapters, plans whose loops lavapipe would cut short are out.
    plan_fits(gpu, plan, (m, n, k))
        && match plan {
            LinearPlan::Fused { lanes } => {
                f32_input && fused_ok(gpu, m, k) && FUSED_LANES.contains(&lanes)
            }
            LinearPlan::Batch { lanes } => f32_input && batch_ok(gpu, m, k) && lanes_ok(lanes),
            LinearPlan::Lean { lanes } => f32_input && lean_ok(gpu, m, k) && lanes_ok(lanes),
            LinearPlan::LeanQ { lanes } => lean_q_ok(gpu, m, k) && lanes_ok(lanes),
            LinearPlan::Vec4 { lanes } | LinearPlan::Staged { lanes } => {
                vec4_ok(gpu, m, k) && lanes_ok(lanes)
            }
            LinearPlan::Generic => m as u64 <= u64::from(kernels::GEMV_MAX_M),
            LinearPlan::Gemm { t, splits } => {
                m as u64 > u64::from(kernels::GEMV_MAX_M)
                    && [4, 8].contains(&t)
                    && split_ok(gpu, splits, m, n)
            }
            LinearPlan::Coop { splits, kind } => {
                coop_kind_ok(gpu, kind, m, k) && split_ok(gpu, splits, m, n)
            }
        }
}

/// Default lanes per 4-row block: about two vec4 steps per lane (`K / 64` vec4 per row), at
/// least 8 and at most 128.
pub(crate) fn default_lanes(k: usize) -> u32 {
    let steps = (k / 64).div_ceil(2).max(1) as u32;
    steps.next_power_of_two().clamp(8, 128)
}

/// Default lanes of the fused GEMV: [`latency_lanes`] for M = 1. Batches have M times the
/// workgroups, so they take the fewest lanes (most rows per workgroup, from [`OVERLAP_LANES`]) that
/// still give [`FILL_WORKGROUPS`] workgroups, at most [`default_lanes`] — or 4 lanes (256 rows
/// per workgroup) where that still gives [`WIDE_BATCH_WORKGROUPS`] and each lane walks at most
/// [`WIDE_BATCH_MAX_STEPS`] vec4 of its rows. H200, M = 8, serial µs by 4 / 8 / 16 / 32 lanes
/// (two runs, equal to 0.1 µs; this rule's choice marked): 2560 × 2560 9.80 / 8.75 / *8.92* /
/// 11.1; 640 × 2560 9.39 / 7.00 / 5.93 / *6.28*; 6912 × 2560 *12.75* / 14.35 / 16.9 / 24.2;
/// 2560 × 6912 19.9 / 16.35 / *15.1* / 17.4; 14336 × 4096 31.0 / *30.4* / 36.9 / 48.8;
/// 4096 × 14336 38.1 / *29.75* / 34.0 / 42.4. (Without the 4-lane case 6912 × 2560 took 8.)
/// The grouped, gated and normed dispatches apply the rule to their rows together: 2B4T's gate
/// and up as one `GatedLinear` (13824 rows) take 4 lanes from M = 4 — H200, serial µs at 4 / 8 /
/// 16 lanes, two runs: M = 4 12.2-12.3 / 13.8-13.9 / 16.5, M = 8 20.7-20.8 / 21.4-21.6 / 29.1-29.2
/// (8 was the choice before).
pub(crate) fn fused_lanes(m: usize, n: usize, k: usize) -> u32 {
    if m <= 1 {
        return latency_lanes(n, k);
    }
    let most = default_lanes(k);
    let groups = |lanes: u32| (m * n) as u64 * u64::from(lanes) / (4 * GV_THREADS);
    if groups(4) >= WIDE_BATCH_WORKGROUPS && (k / 64).div_ceil(4) <= WIDE_BATCH_MAX_STEPS {
        return 4;
    }
    let mut lanes = OVERLAP_LANES;
    while lanes < most && groups(lanes) < FILL_WORKGROUPS {
        lanes *= 2;
    }
    lanes
}

/// Workgroups a batched fused GEMV aims for: two per SM of a 132-SM GPU, rounded.
const FILL_WORKGROUPS: u64 = 256;

/// Workgroups that let a batch take 4 lanes: about a wave and a half of a 132-SM GPU.
const WIDE_BATCH_WORKGROUPS: u64 = 200;

/// Most vec4 per weight row a lane walks at 4 lanes (K ≤ 3072): at K = 4096 (16 steps) 4 lanes
/// were no faster than 8 on the H200.
const WIDE_BATCH_MAX_STEPS: usize = 12;

/// Most workgroups of a lone (latency-bound) M = 1 fused GEMV: one wave of a 132-SM GPU.
const WAVE_WORKGROUPS: u64 = 132;

/// Lanes of the fused GEMV for one activation row behind a barrier (decode latency): from
/// [`default_lanes`] (about two vec4 steps per lane), halved while the grid is more than one wave
/// of a large GPU ([`WAVE_WORKGROUPS`]), doubled while a doubled grid still is one wave and the
/// lanes stay within two per vec4 of the row. H200, serial M = 1, µs by TPR 8 / 16 / 32 / 64 /
/// 128 in one run (this rule's choice marked): 2560 × 2560 7.31 / 6.06 / *5.48* / 5.73 / 6.27;
/// 640 × 2560 7.17 / 5.82 / 5.21 / *4.75* / 4.85; 6912 × 2560 7.69 / *6.79* / 8.51 / 8.70 /
/// 10.89; 2560 × 6912 13.23 / 9.43 / *8.33* / 8.38 / 8.85; 14336 × 4096 *11.16* / 10.13 / 12.41
/// / 13.63 / 20.61; 4096 × 14336 23.14 / 15.44 / *12.54* / 12.98 / 17.39. ([`default_lanes`]
/// alone took 32, 32, 32, 64, 32 and 128.)
pub(crate) fn latency_lanes(n: usize, k: usize) -> u32 {
    let groups = |lanes: u32| (n as u64 * u64::from(lanes)).div_ceil(4 * GV_THREADS);
    let most = (2 * (k / 64) as u32).max(8);
    let mut lanes = default_lanes(k);
    while lanes > 8 && groups(lanes) > WAVE_WORKGROUPS {
        lanes /= 2;
    }
    while lanes < 128 && 2 * lanes <= most && groups(2 * lanes) <= WAVE_WORKGROUPS {
        lanes *= 2;
    }
    lanes
}
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
            splits: 1,
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

/// Lanes per 4-row block of the fused GEMV where there is work beside it: when its dispatch
/// overlaps earlier work (`hazard.rs`, `bitnet_choose::overlapping`), and the fewest lanes a batch
/// starts from (M ≥ 2, M times the workgroups; wide batches may take 4, see [`fused_lanes`]).
/// 128 rows per workgroup, so each workgroup's activation quantization
/// (K floats read twice, a reduction) serves 128 rows. On the H200, M = 1 GEMVs overlapping each
/// other ran 1.8-2x faster than with the latency lanes (2560 × 2560: 0.59 against 1.11 µs per
/// call; 14336 × 4096: 5.9-8.8 against 10.4 µs), while a lone GEMV behind a barrier ran slower
/// (2560 × 2560: 7.3 against 5.5 µs).
pub(crate) const OVERLAP_LANES: u32 = 8;
