//! The grouped fused GEMV: BitLinears that share an input (a decode step's q, k and v, or gate
//! and up) in one dispatch of `bitlinear_gemv_fused_group_subgroup.wgsl`, over their packed rows
//! concatenated (see [`crate::LinearGroup`] for the API and the fallbacks).
//!
//! The launch is the fused GEMV's for the concatenated shape `(M, ΣN_j, K)`: the same plan
//! choice (`linear_plan_for`, with the hazard-based latency / throughput lanes), `TPR` and
//! `DEPTH`, grid and row blocks. Only the store differs (each block's matrix scale and output),
//! so every output is bit for bit the matrix's own fused GEMV.

use bitnet_cpu_ref::layout::words_per_row;
use bitnet_kernels_wgsl::bitnet as kernels;

use super::bitnet::chunk_limit;
use super::bitnet_loops::plan_loops;
use super::bitnet_normed::NormPrologue;
use super::bitnet_plan::{LinearPlan, fused_ok};
use super::bitnet_record::{LinearParams, OUTPUT, load_depth, rows_per};
use super::float_args::loops_fit;
use crate::engine::Engine;
use crate::error::Result;
use crate::hazard::launch_overlaps;
use crate::launch::{Launch, fold_workgroups};
use crate::normed_input::NormedInput;
use crate::pipelines::{Access, Kernel};
use crate::status::NonFiniteCheck;
use crate::tensor::{DType, Location, Tensor};

use Access::{Read, ReadWrite};

/// Weights, group table, f32 activations `[M, K]`, then one output per matrix.
const BINDINGS: &[Access] = &[Read, Read, Read, ReadWrite, ReadWrite, ReadWrite];
const GEMV_FUSED_GROUP: Kernel = Kernel::new(
    kernels::BITLINEAR_GEMV_FUSED_GROUP_SUBGROUP,
    "main",
    BINDINGS,
)
.requiring(wgpu::Features::SUBGROUP);
/// The group's bindings, then the norm's residual, weight and `h`.
const NORM_BINDINGS: &[Access] = &[
    Read, Read, Read, ReadWrite, ReadWrite, ReadWrite, Read, Read, ReadWrite,
];
const GEMV_FUSED_GROUP_NORM: Kernel = Kernel::new(
    kernels::BITLINEAR_GEMV_FUSED_GROUP_NORM_SUBGROUP,
    "main",
    NORM_BINDINGS,
)
.requiring(wgpu::Features::SUBGROUP);

/// Most matrices one grouped dispatch runs (the kernel's output bindings).
pub(crate) const MAX_MATRICES: usize = kernels::GEMV_GROUP_MAX_MATRICES;

/// Whether a fused GEMV over `rows` weight rows of length `k` (a group's concatenated rows, a
/// gated layer's interleaved ones) can run on `gpu` at one activation row: what a layer checks
/// before it uploads such a copy, which would be memory for nothing otherwise (a device without
/// subgroups, K past the fused GEMV's, rows past a binding).
pub(crate) fn fused_rows_fit(gpu: &crate::context::Gpu, rows: usize, k: usize) -> bool {
    let bytes = (rows as u64).saturating_mul(4 * words_per_row(k) as u64);
    fused_ok(gpu, 1, k) && bytes <= chunk_limit(gpu)
}

/// The group table of the kernel (binding 1): words 0..3 each matrix's scale (f32 bits), words
/// 4..7 each matrix's end row in the concatenated rows; slots past the last matrix end at N.
pub(crate) fn group_table(scales: &[f32], ns: &[usize]) -> [u32; 8] {
    let mut table = [0u32; 8];
    let mut end = 0usize;
    for (j, (&s, &n)) in scales.iter().zip(ns).take(MAX_MATRICES).enumerate() {
        end += n;
        table[j] = s.to_bits();
        table[4 + j] = end as u32;
    }
    for slot in &mut table[4 + ns.len().min(MAX_MATRICES)..4 + MAX_MATRICES] {
        *slot = end as u32;
    }
    table
}

/// How the fused GEMV runs over a row-concatenated weight tensor of shape `(M, N, K)` (the
/// grouped and the gated kernels share its body, plan choice, grid and constants).
pub(super) struct RowsLaunch {
    params: LinearParams,
    grid: [u32; 3],
    lanes: u32,
    depth: u32,
}

impl RowsLaunch {
    /// `launch` with the params, the grid and the `TPR` / `DEPTH` constants.
    pub(super) fn apply<'a>(&self, launch: Launch<'a>) -> Launch<'a> {
        launch
            .params(&self.params)
            .grid(self.grid)
            .constant("TPR", f64::from(self.lanes))
            .constant("DEPTH", f64::from(self.depth))
    }
}

impl Engine {
    /// The fused GEMV's launch for `(m, n, k)` on `gpu` (`overlaps`: nothing the dispatch reads
    /// or writes waits on earlier work, so the throughput lanes may apply; `extra_loops`: loop
    /// iterations an input prologue adds), or `None` where the plan is another kernel or one the
    /// adapter's loop limit would cut.
    pub(super) fn rows_launch(
        &self,
        gpu: &crate::context::Gpu,
        (m, n, k): (usize, usize, usize),
        overlaps: bool,
        extra_loops: u64,
    ) -> Result<Option<RowsLaunch>> {
        let shape = (m, n, k);
        let plan = self.linear_plan_for(gpu, shape, true, overlaps)?;
        let lanes = match plan {
            LinearPlan::Fused { lanes }
                if loops_fit(gpu, plan_loops(plan, shape) + extra_loops) =>
            {
                lanes
            }
            _ => return Ok(None),
        };
        let params = LinearParams {
            m: m as u32,
            n: n as u32,
            words_per_row: words_per_row(k) as u32,
            out_stride: n as u32,
            out_base: 0,
            mode: 0,
            tiles_n: 0,
            m_base: 0,
            zero: 0,
            k_splits: 1,
        };
        let [gx, gy, _] = fold_workgroups(gpu, (n as u64).div_ceil(rows_per(lanes)))?;
        Ok(Some(RowsLaunch {
            params,
            grid: [m as u32, gx, gy],
            lanes,
            depth: load_depth(k, lanes),
        }))
    }

    /// BitLinear of f32 `x` `[M, K]` with every matrix of a group in one dispatch: `w` holds the
    /// matrices' rows concatenated (`[ΣN_j, K]`) and the group table as its scales, `ns` the
    /// matrices' row counts (each a multiple of 4, at most [`MAX_MATRICES`]). `None` where the
    /// grouped kernel cannot run (no device tensors, no subgroups, M > 8, K limits, a binding
    /// too large, a plan other than the fused GEMV, or one the adapter's loop limit would cut):
    /// the caller then runs one BitLinear per matrix.
    pub(crate) fn bitlinear_group_fused(
        &self,
        op: &'static str,
        x: &Tensor,
        w: &Tensor,
        ns: &[usize],
    ) -> Result<Option<Vec<Tensor>>> {
        self.bitlinear_group_launch(op, x, (w, None), ns, None)
    }

    /// [`Engine::bitlinear_group_fused`] on the RMSNorm of `input` (one dispatch: the norm in
    /// every workgroup): the residual stream after the add and the outputs, or `None` where
    /// that kernel cannot run (the caller then runs the norm op and the group separately).
    /// `table`: the group table as a `U32` tensor of its own (8 words, [`group_table`]) where
    /// `w` is a single matrix's own weights; `None`: `w`'s scales hold it.
    pub(crate) fn bitlinear_group_normed(
        &self,
        op: &'static str,
        input: NormedInput<'_>,
        (w, table): (&Tensor, Option<&Tensor>),
        ns: &[usize],
    ) -> Result<Option<(Tensor, Vec<Tensor>)>> {
        let Some(gpu) = self.gpu_for(&[input.x, w]) else {
            return Ok(None);
        };
        // 9 bindings of group 0 and the status words.
        let Some(norm) = NormPrologue::new(self, gpu, input, 10)? else {
            return Ok(None);
        };
        let outs = self.bitlinear_group_launch(op, norm.x(), (w, table), ns, Some(&norm))?;
        Ok(outs.map(|outs| (norm.stream(), outs)))
    }

    /// The grouped launch, on the norm of its input where `norm` is given (`table` as for
    /// [`Engine::bitlinear_group_normed`]).
    fn bitlinear_group_launch(
        &self,
        op: &'static str,
        x: &Tensor,
        (w, table): (&Tensor, Option<&Tensor>),
        ns: &[usize],
        norm: Option<&NormPrologue<'_>>,
    ) -> Result<Option<Vec<Tensor>>> {
        let Some(gpu) = self.gpu_for(&[x, w]) else {
            return Ok(None);
        };
        if table.is_some_and(|t| {
            t.dtype() != DType::U32
                || t.len() != 8
                || t.location() != Location::Device
                || t.engine().gpu_id() != Some(gpu.id)
        }) {
            return Ok(None);
        }
        let (&[m, k], &[n, wk]) = (x.shape(), w.shape()) else {
            return Ok(None);
        };
        let limit = chunk_limit(gpu);
        let wpr = words_per_row(k) as u64;
        let fits = x.dtype() == DType::F32
            && k == wk
            && (1..=MAX_MATRICES).contains(&ns.len())
            && ns.iter().all(|&nj| nj > 0 && nj % 4 == 0)
            && ns.iter().sum::<usize>() == n
            && fused_ok(gpu, m, k)
            && 4 * wpr * n as u64 <= limit
            && ns.iter().all(|&nj| 4 * (m * nj) as u64 <= limit);
        if !fits || x.engine().gpu_id() != Some(gpu.id) || w.engine().gpu_id() != Some(gpu.id) {
            return Ok(None);
        }
        // The outputs first: whether their buffers (maybe reused from the pool) are still in use
        // by pending work decides, with the inputs, whether the dispatch overlaps earlier ones.
        let outs = ns
            .iter()
            .map(|&nj| self.empty(gpu, op, &[m, nj], DType::F32))
            .collect::<Result<Vec<_>>>()?;
        let reads: Vec<&Tensor> = [x, w].into_iter().chain(table).collect();
        let overlaps = launch_overlaps(gpu, &reads, &outs.iter().collect::<Vec<_>>())
            && !norm.is_some_and(|p| p.waits(gpu));
        let extra_loops = norm.map_or(0, NormPrologue::loops);
        let Some(rows) = self.rows_launch(gpu, (m, n, k), overlaps, extra_loops)? else {
            return Ok(None);
        };
        let kernel = match norm {
            Some(_) => &GEMV_FUSED_GROUP_NORM,
            None => &GEMV_FUSED_GROUP,
        };
        let launch = Launch::new(gpu, kernel).input_range(w, 0, 4 * wpr * n as u64);
        let mut launch = match table {
            Some(t) => launch.input(t),
            None => launch.input_scales(w),
        }
        .input_range(x, 0, 4 * (m * k) as u64);
        for o in &outs {
            launch = launch.output_range(o, 0, 4 * o.len() as u64);
        }
        // Unused output slots bind a word of scratch each (no row block routes there): a buffer
        // bound twice for writing in one dispatch is invalid in WebGPU.
        let spare = (outs.len()..MAX_MATRICES)
            .map(|_| self.empty(gpu, op, &[1], DType::F32))
            .collect::<Result<Vec<_>>>()?;
        for s in &spare {
            launch = launch.scratch(s);
        }
        // Word 0: x (cpu-ref checks it first; the norm's words, tagged, where it runs first);
        // word 1 + j: matrix j's output, indexed in it.
        let check = NonFiniteCheck::tensors(op, ["x", OUTPUT, OUTPUT, OUTPUT]);
        let launch = rows.apply(launch);
        match norm {
            Some(p) => p.apply(launch, check),
            None => launch.check_finite(check),
        }
        .run()?;
        Ok(Some(outs))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Scales and end rows by slot; the slots past a group of two end at N.
    #[test]
    fn table_of_two_matrices() {
        let t = group_table(&[0.5, 2.0], &[8, 4]);
        assert_eq!(t[..4], [0.5f32.to_bits(), 2.0f32.to_bits(), 0, 0]);
        assert_eq!(t[4..], [8, 12, 12, 0]);
    }
}
