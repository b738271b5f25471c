//! The M ≤ 8 GEMVs that quantize f32 rows in the kernel (fused and batched), one K tile and
//! several.

use super::*;

/// Values per K tile of the batched GEMV for `m` rows (`GEMV_BATCH_TILE_VEC4 / (4 m)` steps of 64).
fn batch_tile(m: usize) -> usize {
    64 * (896 / (4 * m))
}

/// Shapes (M, K) with x in one K tile, and with x over several.
const ONE_TILE: [(usize, usize); 5] = [(2, 256), (3, 2560), (4, 2560), (4, 3584), (2, 7168)];
const MULTI_TILE: [(usize, usize); 4] = [(8, 6912), (3, 6912), (6, 6912), (8, 1856)];
const BATCH_N: usize = 37;

fn batch_weights(k: usize) -> TernaryMatrix {
    cpu_ref::quantize_weights(&random_normal(k as u64, BATCH_N * k, 0.02), BATCH_N, k).unwrap()
}

/// The engine with the batched GEMV forced for M ≤ 8 (the default runs the fused GEMV).
fn batch_engine() -> &'static Engine {
    static E: OnceLock<Engine> = OnceLock::new();
    let batch = BitnetTuning {
        batch_gemv: Some(true),
        ..Default::default()
    };
    tuned(&E, batch)
}

/// The GPU results of one call.
type GpuRuns = Vec<(&'static str, Result<Vec<f32>, Error>)>;

/// BitLinear on f32 x through both M ≤ 8 GEMVs that quantize in the kernel — the fused GEMV (one
/// workgroup per row block and row, the default plan) and the batched GEMV (forced) — asserting
/// each ran (on adapters with subgroups; they need them), and cpu-ref's result.
fn batch_run(x: &[f32], m: usize, w: &TernaryMatrix) -> (GpuRuns, Result<Vec<f32>, Error>) {
    let mut runs = Vec::new();
    for (name, e) in [("fused GEMV", engine()), ("batched GEMV", batch_engine())] {
        runs.push((name, e.bitlinear(x, m, w)));
        if has_subgroups() {
            let plan = e.bitlinear_plan(m, w.n(), w.k(), true);
            let ran = match name {
                "fused GEMV" => matches!(plan, Some(LinearPlan::Fused { .. })),
                _ => matches!(plan, Some(LinearPlan::Batch { .. })),
            };
            assert!(ran, "M {m} K {}: plan {plan:?}, want the {name}", w.k());
        }
    }
    (runs, cpu_ref::bitlinear(x, m, w).map_err(Error::from))
}

/// Late K positions of a row for the batched GEMV: the last element and the first element of
/// the last vec4, the last x word of a thread's last register slot (words 256 u), the first
/// value of the last tile and one inside it.
fn batch_positions(m: usize, k: usize) -> Vec<usize> {
    let words = k / 4;
    let tile = batch_tile(m);
    let last_tile = tile * ((k - 1) / tile);
    let mut p = vec![
        k - 1,
        k - 4,
        k - 3,
        4 * (256 * ((words - 1) / 256)) + 1,
        last_tile,
        last_tile + (k - last_tile) / 2 + 2,
    ];
    p.retain(|&i| i < k);
    p.sort_unstable();
    p.dedup();
    p
}

fn batch_non_finite(shapes: &[(usize, usize)], one_tile: bool) {
    for &(m, k) in shapes {
        assert_eq!(k <= batch_tile(m), one_tile, "M {m} K {k}: tile count");
        let w = batch_weights(k);
        for (pi, &pos) in batch_positions(m, k).iter().enumerate() {
            for (bi, &bad) in BADS.iter().enumerate() {
                // The last row, and (rotating) row 1: a bad value in a later row.
                let row = if (pi + bi) % 2 == 0 { m - 1 } else { 1 };
                let ctx = format!("batch M {m} K {k}: {bad} at row {row} k {pos}");
                let mut x = random_normal((m * k + pi * 3 + bi) as u64, m * k, 1.0);
                x[row * k + pos] = bad;
                let (runs, want) = batch_run(&x, m, &w);
                let want = err_of(want, "cpu-ref", &ctx);
                for (name, got) in runs {
                    assert_eq!(err_of(got, name, &ctx), want, "{ctx}: {name}");
                }
            }
        }
        // Two bad values: the last row's first element, and before it (reported) the last
        // element of the row above.
        let mut x = random_normal((m * k) as u64, m * k, 1.0);
        x[(m - 1) * k] = f32::NEG_INFINITY;
        x[(m - 1) * k - 1] = f32::NAN;
        let ctx = format!("batch M {m} K {k}: two bad values");
        let (runs, want) = batch_run(&x, m, &w);
        let want = err_of(want, "cpu-ref", &ctx);
        assert!(
            matches!(want, Error::NonFinite { index, .. } if index == (m - 1) * k - 1),
            "{ctx}: {want:?}"
        );
        for (name, got) in runs {
            assert_eq!(err_of(got, name, &ctx), want, "{ctx}: {name}");
        }
    }
}

fn batch_finite(shapes: &[(usize, usize)]) {
    for &(m, k) in shapes {
        let w = batch_weights(k);
        let positions = batch_positions(m, k);
        let mut x = random_normal((m * k) as u64 + 1, m * k, 1.5);
        // Row r's maximum (negative in even rows, positive in odd ones) at a late position, the
        // latest in row 0; from M = 3 on, the last row below the 1e-5 floor.
        for r in 0..m {
            let top = if r % 2 == 0 { -11.5 } else { 11.5 } + r as f32;
            x[r * k + positions[positions.len() - 1 - r % positions.len()]] = top;
        }
        if m >= 3 {
            for v in &mut x[(m - 1) * k..] {
                *v *= 1e-7;
            }
        }
        let ctx = format!("batch M {m} K {k}: finite");
        let (runs, want) = batch_run(&x, m, &w);
        let want = want.unwrap();
        for (name, got) in runs {
            let got = got.unwrap_or_else(|e| panic!("{ctx}: {name}: {e}"));
            assert_eq!(got.len(), want.len(), "{ctx}: {name}");
            if let Some(i) = (0..want.len()).find(|&i| got[i].to_bits() != want[i].to_bits()) {
                panic!(
                    "{ctx}: {name}: y[{i}] is {:e} vs cpu-ref {:e}",
                    got[i], want[i]
                );
            }
        }
    }
}

#[test]
fn batch_gemv_one_tile_non_finite() {
    batch_non_finite(&ONE_TILE, true);
}

#[test]
fn batch_gemv_multi_tile_non_finite() {
    batch_non_finite(&MULTI_TILE, false);
}

#[test]
fn batch_gemv_finite_bit_exact() {
    batch_finite(&ONE_TILE);
    batch_finite(&MULTI_TILE);
}
