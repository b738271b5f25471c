//! BitNet GPU path against cpu-ref, through the public API: quantized weights (codes and scale
//! bits), quantized activations (values and absmax bits), exact i32 accumulators and BitLinear
//! outputs, all bit for bit (`TOLERANCES`: exact for every BitNet op). Shapes cover M ∈ {1, 2,
//! 3, 7, 64}, K ∈ {1, 3, 15, 17, 100, 255, 2560}, odd N and the BitNet-2B4T layer shapes; edge
//! values cover zeros, all-equal, huge magnitudes, exact half-way rounding cases and subnormals;
//! NaN/Inf and overflows give the same error on both paths. Paths: subgroup GEMV and tiled GEMM
//! on the default engine; workgroup-memory GEMV and uniform params on an engine whose device has
//! no optional features; every chunked path under a tiny binding cap; every kernel variant forced
//! one at a time (`variants.rs`).

#[path = "bitnet_cross_check/batched.rs"]
mod batched;
#[path = "bitnet_cross_check/edge_values.rs"]
mod edge_values;
#[path = "bitnet_cross_check/errors.rs"]
mod errors;
#[path = "bitnet_cross_check/lean.rs"]
mod lean;
#[path = "bitnet_cross_check/long_k.rs"]
mod long_k;
#[path = "bitnet_cross_check/support.rs"]
mod support;
#[path = "bitnet_cross_check/tensors.rs"]
mod tensors;
#[path = "bitnet_cross_check/variants.rs"]
mod variants;
#[path = "bitnet_cross_check/weight_quant.rs"]
mod weight_quant;

use bitnet_tests::{Rng, random_f32, random_normal};
use bitnet_wgpu::cpu_ref;

use support::{
    assert_bits_eq, assert_every_pipeline_built, check_acts, check_linear, check_weights, engine,
    engines, plain_engine,
};

const M_SET: [usize; 5] = [1, 2, 3, 7, 64];
const K_SET: [usize; 7] = [1, 3, 15, 17, 100, 255, 2560];

/// The subgroup-sensitive cases again on 4-lane subgroups (lavapipe, see
/// `bitnet_tests::rerun_on_4_lane_subgroups`): every GEMV variant's blocks of 8 to 64 lanes span
/// several subgroups there, and the lean GEMVs, gated on 8-lane subgroups, give way.
#[test]
fn gemvs_on_4_lane_subgroups() {
    bitnet_tests::rerun_on_4_lane_subgroups(
        "gemvs_on_4_lane_subgroups",
        &[
            "variants::gemv_variants_at_every_lane_count",
            "variants::fast_quant_variants_on_edge_values",
            "batched::",
            "lean::",
            "bitnet_2b4t_layer_shapes_at_m1",
        ],
    );
}

/// The hot cases again where lavapipe's subgroup layout is broken (it reports 32 lanes and runs
/// 16: `bitnet_tests::rerun_where_the_subgroup_layout_is_broken`): the engine's self-test must
/// drop its subgroup kernels there, and the ops must stay exact on the others.
#[test]
fn ops_where_the_subgroup_layout_is_broken() {
    bitnet_tests::rerun_where_the_subgroup_layout_is_broken(
        "ops_where_the_subgroup_layout_is_broken",
        &[
            "bitnet_2b4t_layer_shapes_at_m1",
            "bitlinear_matches_cpu_ref_over_shapes_and_engines",
            "activations_match_cpu_ref_over_shapes_and_engines",
        ],
    );
}

#[test]
fn weights_match_cpu_ref_over_shapes_and_engines() {
    for (name, e) in engines() {
        for (i, &k) in K_SET.iter().enumerate() {
            for n in [1usize, 5, 33] {
                let seed = (i * 100 + n) as u64;
                let w = random_normal(seed, n * k, 0.02);
                check_weights(
                    e,
                    &w,
                    n,
                    k,
                    &format!("{name}: weights [{n}, {k}] seed {seed}"),
                );
            }
        }
    }
    assert_every_pipeline_built();
}

#[test]
fn activations_match_cpu_ref_over_shapes_and_engines() {
    for (name, e) in engines() {
        for &m in &M_SET {
            for (i, &k) in K_SET.iter().enumerate() {
                let seed = (1000 + i * 10 + m) as u64;
                let x = random_f32(seed, m * k, -4.0, 4.0);
                check_acts(
                    e,
                    &x,
                    m,
                    k,
                    &format!("{name}: activations [{m}, {k}] seed {seed}"),
                );
            }
        }
    }
    assert_every_pipeline_built();
}

/// Many rows run several rows per workgroup (64, 128 or 256 threads each, by K) with each
/// thread's share in registers; rows past 16 vec4 per thread are read twice. Row counts leave the
/// last workgroup partial, K = 4100 has padding words, and a NaN past the registers is found.
#[test]
fn many_row_activations_match_cpu_ref_for_every_row_split() {
    let e = engine();
    for (m, k) in [(37, 2560), (45, 4100), (33, 6912), (35, 14336), (34, 20000)] {
        let seed = (m * 100_000 + k) as u64;
        let mut x = random_f32(seed, m * k, -3.0, 3.0);
        // One large value per row, somewhere past the first workgroup's share.
        for r in 0..m {
            x[r * k + (r * 7919) % k] = 50.0 + r as f32;
        }
        check_acts(e, &x, m, k, &format!("activations [{m}, {k}] seed {seed}"));
    }
    let (m, k) = (40, 20000);
    let mut x = random_f32(7, m * k, -1.0, 1.0);
    x[39 * k + 19_999] = f32::NAN;
    let want = cpu_ref::quantize_activations(&x, m, k).map_err(bitnet_wgpu::Error::from);
    let got = e.quantize_activations(&x, m, k);
    assert!(want.is_err(), "cpu-ref flags the NaN");
    assert_eq!(
        got.err(),
        want.err(),
        "NaN in the last value of [40, 20000]"
    );
}

#[test]
fn bitlinear_matches_cpu_ref_over_shapes_and_engines() {
    for (name, e) in engines() {
        for &m in &M_SET {
            for (i, &k) in K_SET.iter().enumerate() {
                // Odd N, not a multiple of the GEMV rows or the GEMM tile.
                let n = [1usize, 3, 37, 67][(i + m) % 4];
                let seed = (5000 + i * 10 + m) as u64;
                let w = cpu_ref::quantize_weights(&random_normal(seed, n * k, 0.02), n, k).unwrap();
                let x = random_normal(seed + 1, m * k, 1.0);
                check_linear(
                    e,
                    &x,
                    m,
                    &w,
                    &format!("{name}: bitlinear M {m} K {k} N {n}"),
                );
            }
        }
    }
    assert_every_pipeline_built();
}

#[test]
fn bitnet_2b4t_layer_shapes_at_m1() {
    // [N, K] of BitNet-2B4T's linear layers: attention q/o, k/v, FFN up/gate, FFN down.
    let shapes = [
        (2560usize, 2560usize),
        (640, 2560),
        (6912, 2560),
        (2560, 6912),
    ];
    for (i, &(n, k)) in shapes.iter().enumerate() {
        let seed = 90 + i as u64;
        let ctx = format!("2B4T [{n}, {k}]");
        let w = check_weights(engine(), &random_normal(seed, n * k, 0.02), n, k, &ctx);
        let x = random_normal(seed + 7, k, 1.0);
        check_linear(engine(), &x, 1, &w, &ctx);
        // The workgroup-memory GEMV on the same real shape.
        let xq = cpu_ref::quantize_activations(&x, 1, k).unwrap();
        let want = cpu_ref::bitlinear_quantized(&xq, &w).unwrap();
        assert_bits_eq(
            &plain_engine().bitlinear_quantized(&xq, &w).unwrap(),
            &want,
            &ctx,
        );
    }
}

#[test]
fn several_seeds_and_scales() {
    for seed in 0..6u64 {
        let mut r = Rng::new(seed);
        let (m, k, n) = (
            1 + r.below(70) as usize,
            1 + r.below(700) as usize,
            1 + r.below(90) as usize,
        );
        let scale = [1e-3f32, 0.05, 1.0, 300.0][seed as usize % 4];
        let ctx = format!("seed {seed}: M {m} K {k} N {n} scale {scale}");
        let w = check_weights(engine(), &random_normal(seed, n * k, scale), n, k, &ctx);
        let x = random_normal(seed + 100, m * k, scale);
        check_acts(engine(), &x, m, k, &ctx);
        check_linear(engine(), &x, m, &w, &ctx);
    }
}

#[test]
fn exact_scale_division_through_weight_quantization() {
    // A [N, K] matrix holding one value v (rest zero) has the canonical sum v exactly, so its
    // scale is the correctly rounded v / (N·K) (or 1e-5): a direct probe of the WGSL division.
    let mut r = Rng::new(77);
    for i in 0..48u64 {
        let (n, k) = (1 + r.below(9) as usize, 1 + r.below(300) as usize);
        let v = f32::from_bits(0x3800_0000 + (r.next_u64() as u32 % 0x1000_0000));
        let mut w = vec![0.0f32; n * k];
        w[r.below((n * k) as u64) as usize] = if i % 2 == 0 { v } else { -v };
        check_weights(
            engine(),
            &w,
            n,
            k,
            &format!("division probe {v:e} / {}", n * k),
        );
    }
}
