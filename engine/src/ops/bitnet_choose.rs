//! How settings turn into BitLinear plans: the heuristic with forced parts applied, whether the
//! settings force a plan completely, and the candidate list autotune measures. Pure functions of
//! the device capabilities, the shape and the [`BitnetTuning`]; state and timing live in
//! `bitnet_tune.rs`.

use bitnet_kernels_wgsl::bitnet as kernels;

use super::bitnet_loops::plan_fits;
use super::bitnet_plan::{
    CoopKind, GEMV_LANES, LinearPlan, OVERLAP_LANES, batch_lanes, batch_ok, batch_tile_steps,
    coop_kind_ok, default_lanes, fused_lanes, fused_ok, heuristic, plan_ok, vec4_ok,
};
use super::bitnet_split::{K_SPLITS, split_ok, split_worth};
use super::bitnet_tune::{BitnetTuning, CoopVerdict, Key};
use crate::context::Gpu;

/// The throughput variant of `plan` for a dispatch that overlaps earlier work (`hazard.rs`): the
/// fused decode GEMV with [`OVERLAP_LANES`]; other plans as they are.
pub(crate) fn overlapping(plan: LinearPlan) -> LinearPlan {
    match plan {
        LinearPlan::Fused { .. } => LinearPlan::Fused {
            lanes: OVERLAP_LANES,
        },
        other => other,
    }
}

/// The plan the settings force for `key`, if they force one completely.
pub(crate) fn forced_plan(gpu: &Gpu, s: BitnetTuning, key: Key) -> Option<LinearPlan> {
    let plan = heuristic_with(gpu, key, s);
    let complete = match plan {
        LinearPlan::Fused { .. } => s.gemv_lanes.is_some() && s.fuse_decode.is_some(),
        LinearPlan::Batch { .. } => s.gemv_lanes.is_some() && s.batch_gemv == Some(true),
        LinearPlan::Lean { .. } => s.gemv_lanes.is_some(),
        LinearPlan::Vec4 { .. } | LinearPlan::Staged { .. } | LinearPlan::LeanQ { .. } => {
            let (m, k) = (key.m, key.k);
            s.gemv_lanes.is_some()
                && (s.staged_gemv.is_some() || matches!(plan, LinearPlan::LeanQ { .. }))
                && (!key.f32_input
                    || s.fuse_decode == Some(false)
                    || ((s.batch_gemv == Some(false) || !batch_ok(gpu, m, k))
                        && (!fused_ok(gpu, m, k) || s.fuse_decode.is_some())))
        }
        LinearPlan::Generic => true,
        LinearPlan::Coop { .. } => s.gemm_splits.is_some(),
        LinearPlan::Gemm { .. } => s.gemm_block.is_some() && s.gemm_splits.is_some(),
    };
    complete.then_some(plan)
}

/// The heuristic plan ([`heuristic_with`]), unless a CPU adapter's loop limit rules it out
/// (`bitnet_loops.rs`): then the first of `fitting` (the candidates, all of which fit) of the
/// heuristic's kind and tile, else the first of any kind — a GEMM over a long K splits it into
/// slices short enough. With no candidate that fits, the heuristic plan (its calls run on cpu-ref).
pub(crate) fn heuristic_fitting(
    gpu: &Gpu,
    key: Key,
    s: BitnetTuning,
    fitting: &[LinearPlan],
) -> LinearPlan {
    let plan = heuristic_with(gpu, key, s);
    if plan_fits(gpu, plan, (key.m, key.n, key.k)) {
        return plan;
    }
    let same_kind = |p: &LinearPlan| match (plan, *p) {
        (LinearPlan::Gemm { t, .. }, LinearPlan::Gemm { t: t2, .. }) => t == t2,
        _ => std::mem::discriminant(&plan) == std::mem::discriminant(p),
    };
    fitting
        .iter()
        .find(|p| same_kind(p))
        .or_else(|| fitting.first())
        .copied()
        .unwrap_or(plan)
}

/// The coop kernel forced coop plans use: the settings' kernel, else the portable f16 one.
fn forced_coop(s: BitnetTuning) -> CoopKind {
    s.gemm_coop_kernel.unwrap_or(CoopKind::F16)
}

/// The heuristic plan with the settings' forced parts applied.
pub(crate) fn heuristic_with(gpu: &Gpu, key: Key, s: BitnetTuning) -> LinearPlan {
    let Key { m, n, k, f32_input } = key;
    let fusable = f32_input && s.fuse_decode != Some(false);
    // Forced K slices where the GEMM can split them, else `default`.
    let splits = |default: u32| {
        s.gemm_splits
            .filter(|&sp| split_ok(gpu, sp, m, n))
            .unwrap_or(default)
    };
    let plan = match heuristic(gpu, m, n, k, f32_input) {
        LinearPlan::Fused { .. } | LinearPlan::Batch { .. } | LinearPlan::Vec4 { .. }
            if s.generic_gemv =>
        {
            LinearPlan::Generic
        }
        LinearPlan::Fused { .. } | LinearPlan::Batch { .. } | LinearPlan::Vec4 { .. } => {
            if fusable && s.lean_gemv == Some(true) && lean_ok(gpu, m, k) {
                LinearPlan::Lean {
                    lanes: lean_lanes(gpu, k),
                }
            } else if fusable && s.batch_gemv == Some(true) && batch_ok(gpu, m, k) {
                LinearPlan::Batch {
                    lanes: batch_lanes(m, k),
                }
            } else if fusable && fused_ok(gpu, m, k) {
                LinearPlan::Fused {
                    lanes: fused_lanes(m, n, k),
                }
            } else if fusable && s.batch_gemv != Some(false) && batch_ok(gpu, m, k) {
                LinearPlan::Batch {
                    lanes: batch_lanes(m, k),
                }
            } else {
                LinearPlan::Vec4 {
                    lanes: default_lanes(k),
                }
            }
        }
        other => other,
    };
    let forced = match plan {
        LinearPlan::Fused { lanes } => LinearPlan::Fused {
            lanes: s.gemv_lanes.unwrap_or(lanes),
        },
        LinearPlan::Vec4 { lanes } if s.lean_q_gemv == Some(true) && lean_q_ok(gpu, m, k) => {
            LinearPlan::LeanQ {
                lanes: s.gemv_lanes.unwrap_or(lanes),
            }
        }
        LinearPlan::Vec4 { lanes } if s.staged_gemv == Some(true) => LinearPlan::Staged {
            lanes: s.gemv_lanes.unwrap_or(lanes),
        },
        LinearPlan::Vec4 { lanes } => LinearPlan::Vec4 {
            lanes: s.gemv_lanes.unwrap_or(lanes),
        },
        LinearPlan::Batch { lanes } => LinearPlan::Batch {
            lanes: s.gemv_lanes.unwrap_or(lanes),
        },
        LinearPlan::Lean { lanes } => LinearPlan::Lean {
            lanes: s.gemv_lanes.unwrap_or(lanes),
        },
        LinearPlan::Gemm { .. }
            if s.gemm_coop == Some(true) && coop_kind_ok(gpu, forced_coop(s), m, k) =>
        {
            LinearPlan::Coop {
                splits: splits(1),
                kind: forced_coop(s),
            }
        }
        LinearPlan::Gemm { t, splits: s0 } => LinearPlan::Gemm {
            t: s.gemm_block.unwrap_or(t),
            splits: splits(s0),
        },
        other => other,
    };
    if plan_ok(gpu, forced, (m, n, k), f32_input) {
        forced
    } else {
        // Once per shape (plans are cached): a forced plan this shape or device cannot run.
        if forced != plan {
            log::warn!(
                "bitnet-wgpu: the forced plan {forced} cannot run a {m}x{n}x{k} BitLinear here; \
                 running {plan}"
            );
        }
        plan
    }
}

/// Whether the lean batched GEMV can run `m` f32 rows of length `k` on `gpu`: the batched GEMV's
/// conditions, a subgroup size of at least 8 and enough workgroup memory.
pub(crate) fn lean_ok(gpu: &Gpu, m: usize, k: usize) -> bool {
    batch_ok(gpu, m, k)
        && gpu.caps.subgroup_min_size >= 8
        && gpu.caps.limits.max_compute_workgroup_storage_size >= kernels::GEMV_LEAN_WORKGROUP_BYTES
}

/// Whether the lean GEMV on quantized rows can run: the vec4 GEMV's conditions and a subgroup
/// size of at least 8.
pub(crate) fn lean_q_ok(gpu: &Gpu, m: usize, k: usize) -> bool {
    vec4_ok(gpu, m, k) && gpu.caps.subgroup_min_size >= 8
}

/// Default lanes of the lean batched GEMV: those of the vec4 GEMV, at most one subgroup (its
/// epilogue then needs no barrier).
fn lean_lanes(gpu: &Gpu, k: usize) -> u32 {
    default_lanes(k).min(gpu.caps.subgroup_min_size).max(8)
}

/// Workgroups of the vec4 GEMVs (`N · lanes / 1024`: `1024 / lanes` rows each) up to which
/// autotune also tries lane counts that leave lanes idle: about one workgroup per SM of a large
/// GPU.
const SMALL_GRID_WORKGROUPS: u64 = 160;

/// The plans autotune compares for `key` (respecting forced settings); `coop`: which
/// cooperative-matrix GEMMs passed their self-tests. On CPU adapters only plans whose loops fit
/// lavapipe's limit (`bitnet_loops.rs`).
pub(crate) fn candidates(
    gpu: &Gpu,
    key: Key,
    s: BitnetTuning,
    coop: CoopVerdict,
) -> Vec<LinearPlan> {
    let mut out = all_candidates(gpu, key, s, coop);
    out.retain(|&p| plan_fits(gpu, p, (key.m, key.n, key.k)));
    out
}

/// [`candidates`] before the loop check.
fn all_candidates(gpu: &Gpu, key: Key, s: BitnetTuning, coop: CoopVerdict) -> Vec<LinearPlan> {
    let Key {
        m, k, f32_input, ..
    } = key;
    let mut out = Vec::new();
    if m > 8 {
        let splits: Vec<u32> = K_SPLITS
            .iter()
            .copied()
            .filter(|&sp| split_ok(gpu, sp, m, key.n) && split_worth(sp, k))
            .filter(|&sp| s.gemm_splits.is_none_or(|f| f == sp))
            .collect();
        if s.gemm_coop != Some(true) {
            for t in [4, 8] {
                if s.gemm_block.is_none_or(|b| b == t) {
                    out.extend(splits.iter().map(|&splits| LinearPlan::Gemm { t, splits }));
                }
            }
        }
        for kind in CoopKind::ALL {
            let allowed =
                s.gemm_coop != Some(false) && s.gemm_coop_kernel.is_none_or(|f| f == kind);
            if allowed && coop.passed(kind) && coop_kind_ok(gpu, kind, m, k) {
                out.extend(
                    splits
                        .iter()
                        .map(|&splits| LinearPlan::Coop { splits, kind }),
                );
            }
        }
        return out;
    }
    if s.generic_gemv || !vec4_ok(gpu, m, k) {
        return vec![LinearPlan::Generic];
    }
    // Lanes beyond twice the vec4 per row would idle, unless the grid is small (few rows): then
    // more lanes per block mean fewer rows per workgroup and more workgroups to spread over a
    // large GPU. Below 8 a block is too narrow to coalesce.
    let vec4_per_row = (k / 64) as u32;
    let small_grid = |l: u32| key.n as u64 * u64::from(l) <= SMALL_GRID_WORKGROUPS * 1024;
    let lanes: Vec<u32> = GEMV_LANES
        .iter()
        .copied()
        .filter(|&l| l <= 2 * vec4_per_row.max(8) || small_grid(l))
        .filter(|&l| l >= 16.min(vec4_per_row.max(8)))
        .filter(|&l| s.gemv_lanes.is_none_or(|f| f == l))
        .collect();
    // The tiled GEMVs (batched, staged): more lanes than a K tile has steps would idle (worth it
    // only on small grids).
    let tile = batch_tile_steps(m).max(8);
    let tile_lanes: Vec<u32> = GEMV_LANES
        .iter()
        .copied()
        .filter(|&l| {
            (l <= tile.next_power_of_two() && l <= 2 * vec4_per_row.max(8)) || small_grid(l)
        })
        .filter(|&l| s.gemv_lanes.is_none_or(|f| f == l))
        .collect();
    let batch = f32_input && batch_ok(gpu, m, k) && s.fuse_decode != Some(false);
    // The lean batched GEMV where it was built for and measured faster on the H200 (B = 8 of
    // 2560 x 2560: 23.2 µs vs 28 µs before): M ≥ 2 (for M = 1 the tuner picked it and the decode
    // stack's GPU span was 5.75 ms vs 1.78 ms untuned, with the fused decode GEMV — though its
    // wall time was not: 3.30 vs 3.47 ms) and all rows in one K tile (more add barriers: B = 8
    // of 2560 x 6912 ran 57.9 µs, 39 µs before with the staged GEMV).
    let one_tile = (k / 64) as u64 * 4 * m as u64 <= u64::from(kernels::GEMV_LEAN_TILE_VEC4);
    let lean_wanted = s.lean_gemv == Some(true) || (m >= 2 && one_tile);
    if batch && lean_ok(gpu, m, k) && s.lean_gemv != Some(false) && lean_wanted {
        // Lean blocks up to 128 lanes (wider ones add barriers and tuning time).
        let lean = lanes
            .iter()
            .chain(&tile_lanes)
            .copied()
            .filter(|&l| l <= 128);
        let mut lean: Vec<u32> = lean.collect();
        lean.sort_unstable();
        lean.dedup();
        out.extend(lean.into_iter().map(|lanes| LinearPlan::Lean { lanes }));
        if s.lean_gemv == Some(true) && !out.is_empty() {
            return out;
        }
    }
    if batch && s.batch_gemv != Some(false) {
        out.extend(tile_lanes.iter().map(|&lanes| LinearPlan::Batch { lanes }));
        if s.batch_gemv == Some(true) && !out.is_empty() {
            return out;
        }
    }
    if s.staged_gemv != Some(false) && s.lean_q_gemv != Some(true) {
        out.extend(tile_lanes.iter().map(|&lanes| LinearPlan::Staged { lanes }));
    }
    // The two-dispatch lean GEMV: for batches (M ≥ 2) only, M = 1 keeps its measured plans.
    if lean_q_ok(gpu, m, k) && s.lean_q_gemv != Some(false) && (m >= 2 || s.lean_q_gemv.is_some()) {
        out.extend(
            lanes
                .iter()
                .filter(|&&l| l <= 128)
                .map(|&lanes| LinearPlan::LeanQ { lanes }),
        );
        if s.lean_q_gemv == Some(true) {
            return out;
        }
    }
    let fuse = f32_input && fused_ok(gpu, m, k);
    for &lanes in &lanes {
        if fuse && s.fuse_decode != Some(false) {
            out.push(LinearPlan::Fused { lanes });
        }
        if (!fuse || s.fuse_decode != Some(true)) && s.staged_gemv != Some(true) {
            out.push(LinearPlan::Vec4 { lanes });
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::super::bitnet_plan::{default_lanes, latency_lanes};
    use super::*;
    use crate::engine::EngineOptions;

    /// The per-call plan: the throughput lanes where the dispatch overlaps earlier work, the
    /// latency lanes behind a barrier, the batch rule for M > 1, and forced lanes kept.
    #[test]
    fn fused_plans_follow_where_the_dispatch_runs() {
        let e = crate::test_gpu::gpu_with(EngineOptions::default());
        let g = e.gpu_context().unwrap();
        if !g.caps.has(wgpu::Features::SUBGROUP) {
            return;
        }
        let plan = |shape, overlaps| e.linear_plan_for(g, shape, true, overlaps).unwrap();
        let latency = LinearPlan::Fused {
            lanes: latency_lanes(2560, 2560),
        };
        assert_eq!(plan((1, 2560, 2560), false), latency);
        let throughput = LinearPlan::Fused {
            lanes: OVERLAP_LANES,
        };
        assert_eq!(plan((1, 2560, 2560), true), throughput);
        // Batches: the fewest lanes from 8 that give 256 workgroups, at most the M = 1 default;
        // 4 where that still gives 200 workgroups on rows of at most 12 vec4 per lane.
        assert_eq!(fused_lanes(8, 2560, 2560), 16);
        assert_eq!(fused_lanes(8, 6912, 2560), 4);
        assert_eq!(fused_lanes(4, 6912, 2560), 16, "108 workgroups at 4 lanes");
        assert_eq!(
            fused_lanes(8, 14336, 4096),
            8,
            "16 vec4 per lane at 4 lanes"
        );
        assert_eq!(fused_lanes(8, 2560, 6912), 16);
        assert_eq!(fused_lanes(8, 640, 2560), default_lanes(2560));
        // M = 1 behind a barrier: one wave of a 132-SM GPU (the shapes of bench/RESULTS.md).
        for ((n, k), lanes) in [
            ((2560, 2560), 32),
            ((640, 2560), 64),
            ((6912, 2560), 16),
            ((2560, 6912), 32),
            ((14336, 4096), 8),
            ((4096, 14336), 32),
        ] {
            assert_eq!(fused_lanes(1, n, k), lanes, "{n} x {k}");
        }
        assert_eq!(
            latency_lanes(8, 64),
            8,
            "a tiny GEMV keeps at least 8 lanes"
        );
        assert_eq!(plan((8, 6912, 2560), false), LinearPlan::Fused { lanes: 4 });
        // Forced lanes win either way.
        e.set_bitnet_tuning(BitnetTuning {
            gemv_lanes: Some(64),
            fuse_decode: Some(true),
            ..Default::default()
        });
        for overlaps in [false, true] {
            assert_eq!(
                plan((1, 2560, 2560), overlaps),
                LinearPlan::Fused { lanes: 64 }
            );
        }
    }
}
