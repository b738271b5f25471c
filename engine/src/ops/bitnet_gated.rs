//! The gated fused GEMV: a feed-forward block's gate and up projections and its gated activation
//! `act(gate) · up` in one dispatch of `bitlinear_gemv_fused_gated_subgroup.wgsl`, over the two
//! matrices' rows interleaved two by two (see [`crate::GatedLinear`] for the API and the
//! fallback).
//!
//! The launch is the fused GEMV's for the interleaved shape `(M, 2N, K)` — the same plan choice,
//! `TPR` and `DEPTH`, grid and row blocks as [`super::bitnet_group`]'s — with a store that
//! applies the activation: every output is bit for bit `Engine::gated` of the two matrices' own
//! fused GEMVs, and each status word reports as the op that would have flagged it.

use bitnet_cpu_ref::layout::words_per_row;
use bitnet_cpu_ref::ops::UnaryOp;
use bitnet_kernels_wgsl::bitnet as kernels;

use super::bitnet::chunk_limit;
use super::bitnet_normed::NormPrologue;
use super::bitnet_plan::fused_ok;
use super::bitnet_record::OUTPUT;
use super::elementwise::unary_code;
use crate::engine::Engine;
use crate::error::Result;
use crate::hazard::launch_overlaps;
use crate::launch::Launch;
use crate::normed_input::NormedInput;
use crate::pipelines::{Access, Kernel};
use crate::status::NonFiniteCheck;
use crate::tensor::{DType, Tensor};

use Access::{Read, ReadWrite};

const GEMV_FUSED_GATED: Kernel = Kernel::new(
    kernels::BITLINEAR_GEMV_FUSED_GATED_SUBGROUP,
    "main",
    &[Read, Read, Read, ReadWrite],
)
.requiring(wgpu::Features::SUBGROUP);
/// The gated GEMV's bindings, then the norm's residual, weight and `h`.
const GEMV_FUSED_GATED_NORM: Kernel = Kernel::new(
    kernels::BITLINEAR_GEMV_FUSED_GATED_NORM_SUBGROUP,
    "main",
    &[Read, Read, Read, ReadWrite, Read, Read, ReadWrite],
)
.requiring(wgpu::Features::SUBGROUP);

/// gate's rows `2i, 2i + 1`, then up's: the row order of the interleaved weights (`gate` and
/// `up`: packed rows of `wpr` words, the same even count N of them).
pub(crate) fn interleave_rows(gate: &[u32], up: &[u32], wpr: usize) -> Vec<u32> {
    let mut words = Vec::with_capacity(gate.len() + up.len());
    for (g, u) in gate.chunks(2 * wpr).zip(up.chunks(2 * wpr)) {
        words.extend_from_slice(g);
        words.extend_from_slice(u);
    }
    words
}

impl Engine {
    /// `act(x · gateᵀ) · (x · upᵀ)` for f32 `x` `[M, K]` in one dispatch: `w` holds the two
    /// matrices' rows interleaved (`[2N, K]`, [`interleave_rows`]) with gate's and up's scales
    /// as its two scale words. `None` where the kernel cannot run (no device tensors, no
    /// subgroups, M > 8, K limits, a binding too large, a plan other than the fused GEMV, or one
    /// the adapter's loop limit would cut): the caller then runs the two BitLinears and the
    /// gated op.
    pub(crate) fn bitlinear_gated_fused(
        &self,
        x: &Tensor,
        w: &Tensor,
        act: UnaryOp,
    ) -> Result<Option<Tensor>> {
        self.bitlinear_gated_launch(x, w, act, None)
    }

    /// [`Engine::bitlinear_gated_fused`] on the RMSNorm of `input` (one dispatch: the norm in
    /// every workgroup): the residual stream after the add and the output, or `None` where that
    /// kernel cannot run (the caller then runs the norm op and the gated layer separately).
    pub(crate) fn bitlinear_gated_normed(
        &self,
        input: NormedInput<'_>,
        w: &Tensor,
        act: UnaryOp,
    ) -> Result<Option<(Tensor, Tensor)>> {
        let Some(gpu) = self.gpu_for(&[input.x, w]) else {
            return Ok(None);
        };
        // 7 bindings of group 0 and the status words.
        let Some(norm) = NormPrologue::new(self, gpu, input, 8)? else {
            return Ok(None);
        };
        let out = self.bitlinear_gated_launch(norm.x(), w, act, Some(&norm))?;
        Ok(out.map(|out| (norm.stream(), out)))
    }

    /// The gated launch, on the norm of its input where `norm` is given.
    fn bitlinear_gated_launch(
        &self,
        x: &Tensor,
        w: &Tensor,
        act: UnaryOp,
        norm: Option<&NormPrologue<'_>>,
    ) -> Result<Option<Tensor>> {
        const OP: &str = "bitlinear";
        let Some(gpu) = self.gpu_for(&[x, w]) else {
            return Ok(None);
        };
        let (&[m, k], &[n2, wk]) = (x.shape(), w.shape()) else {
            return Ok(None);
        };
        let limit = chunk_limit(gpu);
        let wpr = words_per_row(k) as u64;
        let fits = x.dtype() == DType::F32
            && k == wk
            && n2 > 0
            && n2 % 4 == 0
            && fused_ok(gpu, m, k)
            && 4 * wpr * n2 as u64 <= limit
            && 4 * (m * n2 / 2) as u64 <= limit;
        if !fits || x.engine().gpu_id() != Some(gpu.id) || w.engine().gpu_id() != Some(gpu.id) {
            return Ok(None);
        }
        let out = self.empty(gpu, OP, &[m, n2 / 2], DType::F32)?;
        let overlaps =
            launch_overlaps(gpu, &[x, w], &[&out]) && !norm.is_some_and(|p| p.waits(gpu));
        let extra_loops = norm.map_or(0, NormPrologue::loops);
        let Some(rows) = self.rows_launch(gpu, (m, n2, k), overlaps, extra_loops)? else {
            return Ok(None);
        };
        // Words 0..2 as the two BitLinears report them (x, then gate's and up's output, each
        // indexed in its own [M, N]); word 3 as the gated op reports its output.
        let check =
            NonFiniteCheck::tensors(OP, ["x", OUTPUT, OUTPUT, "output"]).word_op(3, "gated");
        let kernel = match norm {
            Some(_) => &GEMV_FUSED_GATED_NORM,
            None => &GEMV_FUSED_GATED,
        };
        let launch = Launch::new(gpu, kernel)
            .input_range(w, 0, 4 * wpr * n2 as u64)
            .input_scales(w)
            .input_range(x, 0, 4 * (m * k) as u64)
            .output(&out);
        let launch = rows
            .apply(launch)
            .constant("ACT", f64::from(unary_code(act)));
        match norm {
            Some(p) => p.apply(launch, check),
            None => launch.check_finite(check),
        }
        .run()?;
        Ok(Some(out))
    }
}

#[cfg(test)]
mod tests {
    /// Two rows of gate, then two of up, pair by pair.
    #[test]
    fn rows_interleave_two_by_two() {
        let (gate, up) = ([1, 2, 3, 4], [5, 6, 7, 8]);
        assert_eq!(
            super::interleave_rows(&gate, &up, 1),
            [1, 2, 5, 6, 3, 4, 7, 8]
        );
    }
}
