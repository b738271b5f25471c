//! Loop iterations of one invocation of the BitNet kernels, for CPU adapters: lavapipe
//! (llvmpipe's loop limiter) ends a shader's loops after 65 535 iterations in all, with no error
//! (`float_args::loops_fit`), and these kernels loop over K inside one invocation.
//!
//! The estimates count what lavapipe counts: every traversal of every loop, and a WGSL loop's
//! exit test is one more traversal (its lanes leave the loop masked, the loop ends a traversal
//! later), so a loop of `n` trips costs `n + 1`. Loops over the activation rows (`MR`, an
//! override constant) are counted as loops: lavapipe kept some of them (the staged GEMV, the
//! lean GEMV on quantized rows), and the estimates stay upper bounds. Kernels whose rows are
//! named variables (the vec4 and batched GEMVs) have no row loops. Measured on lavapipe (subgroup
//! size 8), first failing K: act quant (K % 4 != 0) 14M, generic GEMV M = 8 15M, tiled GEMM
//! 245 760, staged GEMV M = 8 (128 lanes) 7.9M, lean GEMV on quantized rows M = 8 (8 lanes) 3.36M.

use bitnet_cpu_ref::layout::{activation_words_per_row, words_per_row};
use bitnet_kernels_wgsl::bitnet as kernels;

use super::bitnet_plan::{LinearPlan, batch_tile_steps};
use super::float_args::{DIV_LOOPS, loops_fit};
use crate::context::Gpu;

/// Loops of a kernel's epilogue and reductions (subgroup trees, cross-subgroup sums, stores),
/// which do not grow with K: a bound for every BitLinear kernel at M ≤ 8.
const EPILOGUE_LOOPS: u64 = 400;

/// Traversals of a loop over `items` with stride `step` (its trips and the exit test).
fn walk(items: u64, step: u64) -> u64 {
    items.div_ceil(step.max(1)) + 1
}

/// Iterations of one invocation of activation quantization of rows of `k` values
/// (`act_quant_vec4.wgsl` for K % 4 == 0, its longest rows with 256 threads per row and 16
/// registers each; `act_quant.wgsl` otherwise, one 256-thread workgroup per row).
pub(crate) fn act_quant_loops(k: usize) -> u64 {
    let k = k as u64;
    let words = activation_words_per_row(k as usize) as u64;
    let fixed = 2 * 17 + DIV_LOOPS;
    if k.is_multiple_of(4) {
        // Past the 16 registers of 256 threads: the absmax rest (4 loads a step), the pack rest.
        let kv = k / 4;
        let rest = kv.saturating_sub(16 * 256);
        walk(rest, 4 * 256) + walk(words.saturating_sub(16 * 256), 256) + fixed
    } else {
        walk(k, 256) + walk(words, 256) + fixed
    }
}

/// Iterations of one invocation of `plan`'s BitLinear kernel for `(m, n, k)` (f32 plans include
/// their fused quantization; the separate `act_quant` dispatch is checked on its own).
pub(crate) fn plan_loops(plan: LinearPlan, (m, _n, k): (usize, usize, usize)) -> u64 {
    let mr = m.clamp(1, kernels::GEMV_MAX_M as usize) as u64;
    let wpr = words_per_row(k) as u64;
    // Weight vec4 per row (K % 64 == 0 plans) and f32 vec4 per activation row.
    let (vpr, kv) = (wpr / 4, 4 * wpr);
    let wg = u64::from(kernels::GEMV_VEC4_THREADS);
    // Traversals per trip of a loop with a loop over the rows inside: its own, and the row
    // loop's M trips and exit test.
    let rows = mr + 2;
    // Tiled GEMVs: `tiles` K tiles of `st` steps, each a quantization / copy walk of `per`
    // items and a walk of the steps over the lanes, `trip` traversals per trip of either.
    let tiled = |st: u64, per: u64, lanes: u32, trip: u64| {
        let tiles = vpr.div_ceil(st);
        tiles * (1 + walk(per * st, wg) * trip + walk(st, u64::from(lanes)) * trip)
    };
    let loops = match plan {
        LinearPlan::Fused { lanes } => {
            walk(kv, 4 * wg) + walk(kv, wg) + walk(vpr, u64::from(lanes))
        }
        LinearPlan::Vec4 { lanes } => walk(vpr, u64::from(lanes)),
        LinearPlan::LeanQ { lanes } => walk(vpr, u64::from(lanes)) * rows,
        LinearPlan::Batch { lanes } => {
            let st = u64::from(batch_tile_steps(m));
            walk(kv, 2 * wg) + tiled(st, 16, lanes, 1)
        }
        LinearPlan::Staged { lanes } => {
            let st = u64::from(batch_tile_steps(m));
            tiled(st, 4, lanes, rows)
        }
        LinearPlan::Lean { lanes } => {
            let st = u64::from(kernels::GEMV_LEAN_TILE_VEC4) / (4 * mr);
            walk(kv, 2 * wg) * rows + tiled(st, 16, lanes, rows)
        }
        // 128 threads walk the words; per word a loop over the M rows.
        LinearPlan::Generic => walk(wpr, 128) * rows,
        // Per K step of 4 words (of this slice) an inner loop over its 16 k.
        LinearPlan::Gemm { splits, .. } => {
            let steps = wpr.div_ceil(4).div_ceil(u64::from(splits.max(1)));
            (steps + 1) * (kernels::GEMM_THREADS_PER_DIM as u64 + 2)
        }
        // Cooperative-matrix GEMMs need subgroups of 32 (never a CPU adapter's 8); a bound.
        LinearPlan::Coop { splits, .. } => {
            let steps = wpr.div_ceil(2).div_ceil(u64::from(splits.max(1)));
            (steps + 1) * 8
        }
    };
    loops + EPILOGUE_LOOPS
}

/// Whether `plan` computes its full result for `shape` on `gpu`: always on GPUs; on CPU adapters
/// only where its invocations' loops fit lavapipe's limit ([`loops_fit`]).
pub(crate) fn plan_fits(gpu: &Gpu, plan: LinearPlan, shape: (usize, usize, usize)) -> bool {
    loops_fit(gpu, plan_loops(plan, shape))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The estimates reach the limit where lavapipe's results broke (first failing K measured on
    /// lavapipe) and stay within it where they held (last passing K).
    #[test]
    fn estimates_bracket_the_measured_limits() {
        const LIMIT: u64 = 65_535;
        let gemm = LinearPlan::Gemm { t: 4, splits: 1 };
        let cases = [
            (LinearPlan::Generic, (8, 4, 15_000_016), (8, 4, 3_276_800)),
            (gemm, (9, 4, 245_760), (9, 4, 229_376)),
            (
                LinearPlan::Staged { lanes: 128 },
                (8, 4, 7_904_320),
                (1, 4, 16_777_152),
            ),
            (
                LinearPlan::LeanQ { lanes: 8 },
                (8, 4, 3_364_096),
                (8, 4, 1 << 20),
            ),
        ];
        for (plan, broke, held) in cases {
            assert!(plan_loops(plan, broke) > LIMIT, "{plan} {broke:?}");
            assert!(plan_loops(plan, held) <= LIMIT, "{plan} {held:?}");
        }
        assert!(act_quant_loops(14_000_001) > LIMIT);
        assert!(act_quant_loops(8_000_001) <= LIMIT);
        // Never past the limit below cpu-ref's K < 2^24: the vec4 quantizer, the vec4 GEMV at
        // 8 lanes, the fused GEMV at its largest K.
        let k = (1 << 24) - 64;
        assert!(act_quant_loops(k) <= LIMIT);
        assert!(plan_loops(LinearPlan::Vec4 { lanes: 8 }, (8, 4, k)) <= LIMIT);
        let fused = LinearPlan::Fused { lanes: 8 };
        assert!(plan_loops(fused, (8, 4, kernels::GEMV_FUSED_MAX_K as usize)) <= LIMIT);
    }
}
