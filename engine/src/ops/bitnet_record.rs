//! Recording a BitLinear plan: the kernels of every plan, their parameters, and the launches of
//! one call chunked over M and N (see `bitnet_plan.rs` for the plans and when each runs).

use bitnet_cpu_ref::layout::{activation_words_per_row, words_per_row};
use bitnet_kernels_wgsl::bitnet as kernels;

use super::bitnet::{row_chunks, scale_rows};
use super::bitnet_plan::{COOP_FEATURES, CoopKind, LinearPlan};
use super::bitnet_split as split;
use crate::context::Gpu;
use crate::error::Result;
use crate::launch::{Launch, fold_workgroups};
use crate::pipelines::{Access, Kernel};
use crate::status::NonFiniteCheck;
use crate::tensor::Tensor;

use Access::{Read, ReadWrite};

/// weights, weight scale, activations, activation absmax, output.
const BINDINGS: &[Access] = &[Read, Read, Read, Read, ReadWrite];
/// The fused kernels: weights, weight scale, f32 activations `[M, K]`, output.
const F32_BINDINGS: &[Access] = &[Read, Read, Read, ReadWrite];
const GEMV_SUBGROUP: Kernel = Kernel::new(kernels::BITLINEAR_GEMV_SUBGROUP, "main", BINDINGS)
    .requiring(wgpu::Features::SUBGROUP);
const GEMV_WORKGROUP: Kernel = Kernel::new(kernels::BITLINEAR_GEMV_WORKGROUP, "main", BINDINGS);
const GEMV_VEC4: Kernel = Kernel::new(kernels::BITLINEAR_GEMV_VEC4_SUBGROUP, "main", BINDINGS)
    .requiring(wgpu::Features::SUBGROUP);
const GEMV_FUSED: Kernel =
    Kernel::new(kernels::BITLINEAR_GEMV_FUSED_SUBGROUP, "main", F32_BINDINGS)
        .requiring(wgpu::Features::SUBGROUP);
const GEMV_STAGED: Kernel = Kernel::new(kernels::BITLINEAR_GEMV_STAGED_SUBGROUP, "main", BINDINGS)
    .requiring(wgpu::Features::SUBGROUP);
const GEMV_BATCH: Kernel =
    Kernel::new(kernels::BITLINEAR_GEMV_BATCH_SUBGROUP, "main", F32_BINDINGS)
        .requiring(wgpu::Features::SUBGROUP);
const GEMV_LEAN: Kernel = Kernel::new(kernels::BITLINEAR_GEMV_LEAN_SUBGROUP, "main", F32_BINDINGS)
    .requiring(wgpu::Features::SUBGROUP);
const GEMV_LEAN_Q: Kernel = Kernel::new(kernels::BITLINEAR_GEMV_LEAN_Q_SUBGROUP, "main", BINDINGS)
    .requiring(wgpu::Features::SUBGROUP);
const GEMM: Kernel = Kernel::new(kernels::BITLINEAR_GEMM, "main", BINDINGS);
const GEMM_COOP: Kernel =
    Kernel::new(kernels::BITLINEAR_GEMM_COOP_SUBGROUP, "main", BINDINGS).requiring(COOP_FEATURES);
const GEMM_COOP_I8: Kernel =
    Kernel::new(kernels::BITLINEAR_GEMM_COOP_I8_SUBGROUP, "main", BINDINGS)
        .requiring(COOP_FEATURES)
        .spirv_int8();
const GEMM_COOP_I8_N96: Kernel = Kernel::new(
    kernels::BITLINEAR_GEMM_COOP_I8_N96_SUBGROUP,
    "main",
    BINDINGS,
)
.requiring(COOP_FEATURES)
.spirv_int8();

/// cpu-ref's name for an output that overflowed in the rescale.
pub(crate) const OUTPUT: &str = "output (rescale overflowed f32)";

/// The `Params` uniform of `bitlinear_common.wgsl`, field for field (see there for each field).
#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
pub(crate) struct LinearParams {
    pub m: u32,
    pub n: u32,
    pub words_per_row: u32,
    pub out_stride: u32,
    pub out_base: u32,
    pub mode: u32,
    pub tiles_n: u32,
    pub m_base: u32,
    /// Always 0 (the kernels' runtime zero for their optimization barrier).
    pub zero: u32,
    /// K slices of a split GEMM (grid z), else 1.
    pub k_splits: u32,
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
    /// Records the plan's launches, chunked over M and N to fit the storage-binding limit; a
    /// split GEMM writes each M chunk's K slices to a scratch tensor and sums them
    /// (`bitnet_split.rs`).
    pub fn record(&self, gpu: &Gpu) -> Result<()> {
        let (m, n, k) = self.shape;
        let fused = self.plan.takes_f32();
        let wpr = words_per_row(k) as u64;
        let xpr = activation_words_per_row(k) as u64;
        let x_row = if fused { 4 * k as u64 } else { 4 * xpr };
        let (m64, n64) = (m as u64, n as u64);
        let splits = self.plan.k_splits();
        // The launches of this call, chunked over M and N, report their flags as one launch.
        let group = gpu.next_seq();
        for mr in row_chunks(gpu, self.op, m64, &[x_row, 4 * n64])? {
            let partials = match splits {
                1 => None,
                s => Some(split::partials(gpu, self, s, mr.end - mr.start)?),
            };
            for nr in row_chunks(gpu, self.op, n64, &[4 * wpr])? {
                let (rows_m, rows_n) = (mr.end - mr.start, nr.end - nr.start);
                // The chunk's activation scales (quantized inputs only), bound as a range.
                let x_scales = scale_rows(gpu, &mr);
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
                    LinearPlan::Coop { kind, .. } => {
                        let tiles_n = rows_n.div_ceil(u64::from(kind.tile_n()));
                        let tiles_m = rows_m.div_ceil(u64::from(kernels::GEMM_COOP_TILE_M));
                        let kernel = match kind {
                            CoopKind::F16 => &GEMM_COOP,
                            CoopKind::Int8 => &GEMM_COOP_I8,
                            CoopKind::Int8N96 => &GEMM_COOP_I8_N96,
                        };
                        (kernel, tiles_n * tiles_m, tiles_n)
                    }
                    LinearPlan::Gemm { t, .. } => {
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
                    // A split writes exact accumulators; its sum applies the mode.
                    mode: u32::from(self.acc || partials.is_some()),
                    tiles_n: tiles_n as u32,
                    m_base: x_scales.base,
                    zero: 0,
                    k_splits: splits,
                };
                let mut launch = Launch::new(gpu, kernel)
                    .input_range(self.w, self.w_base + 4 * wpr * nr.start, 4 * wpr * rows_n)
                    .input_scales(self.w)
                    .input_range(self.x, x_row * mr.start, x_row * rows_m)
                    .chunk_of(group);
                if !fused {
                    launch = launch.input_scales_range(self.x, x_scales.offset, x_scales.size);
                }
                launch = match &partials {
                    Some(p) => launch.output(p),
                    None => launch.output_range(self.out, 4 * n64 * mr.start, 4 * n64 * rows_m),
                }
                .params(&params);
                launch = match self.plan {
                    // One workgroup per activation row (x, fastest) and row block (y, z).
                    LinearPlan::Fused { .. } => {
                        let [x, y, _] = fold_workgroups(gpu, groups)?;
                        launch.grid([rows_m as u32, x, y])
                    }
                    // K slices along z.
                    _ if splits > 1 => {
                        let [x, y, _] = fold_workgroups(gpu, groups)?;
                        launch.grid([x, y, splits])
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
                    LinearPlan::Gemm { t, .. } => launch.constant("T", f64::from(t)),
                    LinearPlan::Generic | LinearPlan::Coop { .. } => launch,
                };
                if partials.is_some() {
                    // No y yet: the sum checks it.
                } else if self.check && !self.acc {
                    // The fused kernels check x (word 0, cpu-ref checks it first) and y (word 1),
                    // each indexed from the chunk's first row (an output too large for one
                    // binding splits M even where all of x fits).
                    let check = if fused {
                        NonFiniteCheck::tensors(self.op, ["x", OUTPUT, "", ""]).at_each([
                            mr.start * k as u64,
                            mr.start * n64,
                            0,
                            0,
                        ])
                    } else {
                        NonFiniteCheck::new(self.op, OUTPUT).at(mr.start * n64)
                    };
                    launch = launch.check_finite(check);
                } else if self.check && fused {
                    let check = NonFiniteCheck::new(self.op, "x").at(mr.start * k as u64);
                    launch = launch.check_finite(check);
                }
                launch.run()?;
            }
            if let Some(p) = &partials {
                split::record_sum(gpu, self, p, (mr.start, mr.end - mr.start), group)?;
            }
        }
        Ok(())
    }
}

/// Weight steps each fused-GEMV thread keeps in flight (`DEPTH`): 2 (double buffering), or 1
/// when a thread has a single step. Deeper (up to 4: every step up front) measured no faster on
/// the H200 (within ~1 µs, slightly slower), at the cost of registers; for calls overlapping each
/// other (8 lanes) too: 6912 × 2560 1.47 µs per call at depth 2, 1.70 at 3 and 4, 1.52 at 1
/// (14336 × 4096: 4.62 / 5.15 / 5.10 / 4.90 µs).
pub(crate) fn load_depth(k: usize, lanes: u32) -> u32 {
    let steps = (k as u64 / 64).div_ceil(u64::from(lanes)).max(1);
    steps.min(2) as u32
}

/// Weight rows per workgroup of the vec4 GEMVs with `lanes` threads per 4-row block.
pub(crate) fn rows_per(lanes: u32) -> u64 {
    u64::from(4 * kernels::GEMV_VEC4_THREADS / lanes)
}
