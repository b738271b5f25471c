//! `LinearGroup`: BitLinears sharing an input (q/k/v, gate/up) in one dispatch, bit for bit
//! separate `bitlinear_tensor` calls and cpu-ref; the fallbacks (4 matrices, M > 8, N not a
//! multiple of 4, CPU engine) give the same bits; a non-finite x and an overflowing output are
//! reported as `linear_group.rs` documents. And `GatedLinear` (`linear_group/gated.rs`), and both
//! on a normed input (`linear_group/normed.rs`).

use bitnet_tests::{gpu_engine, random_f32, random_normal};
use bitnet_wgpu::cpu_ref::{self, TernaryMatrix};
use bitnet_wgpu::{
    BitnetTuning, DispatchPolicy, Engine, Error, Linear, LinearGroup, LinearPlan, Tensor, wgpu,
};

#[path = "linear_group/gated.rs"]
mod gated;
#[path = "linear_group/normed.rs"]
mod normed;

/// The grouped, gated and normed GEMVs again on 4-lane subgroups (lavapipe, see
/// `bitnet_tests::rerun_on_4_lane_subgroups`).
#[test]
fn group_gemvs_on_4_lane_subgroups() {
    bitnet_tests::rerun_on_4_lane_subgroups(
        "group_gemvs_on_4_lane_subgroups",
        &[
            "grouped_outputs",
            "gated::gated_linear_",
            "normed::forward_normed_",
        ],
    );
}
pub(crate) const K: usize = 256;

pub(crate) fn weights(n: usize, k: usize, seed: u64, spread: f32) -> TernaryMatrix {
    cpu_ref::quantize_weights(&random_normal(seed, n * k, spread), n, k).unwrap()
}

fn layers(e: &Engine, ns: &[usize], seed: u64) -> Vec<Linear> {
    ns.iter()
        .enumerate()
        .map(|(j, &n)| Linear::new(e, weights(n, K, seed + j as u64, 0.05)))
        .collect()
}

fn group(e: &Engine, ls: &[Linear]) -> LinearGroup {
    e.linear_group(&ls.iter().collect::<Vec<_>>()).unwrap()
}

pub(crate) fn bits(v: &[f32]) -> Vec<u32> {
    v.iter().map(|f| f.to_bits()).collect()
}

/// The group's outputs equal separate `bitlinear_tensor` calls and cpu-ref, bit for bit.
fn check_against_separate(e: &Engine, g: &LinearGroup, x: &[f32], m: usize) {
    let xt = e.upload_f32(x, &[m, K]).unwrap();
    let outs = g.forward_tensor(&xt).unwrap();
    assert_eq!(outs.len(), g.linears().len());
    for (j, (out, l)) in outs.iter().zip(g.linears()).enumerate() {
        let n = l.weights().n();
        assert_eq!(out.shape(), &[m, n], "matrix {j}");
        let got = bits(&out.read_f32().unwrap());
        let w = e.upload_ternary(l.weights()).unwrap();
        let separate = bits(&e.bitlinear_tensor(&xt, &w).unwrap().read_f32().unwrap());
        let want = bits(&cpu_ref::bitlinear(x, m, l.weights()).unwrap());
        assert_eq!(
            got, separate,
            "matrix {j} of {n} rows, M = {m}: vs bitlinear_tensor"
        );
        assert_eq!(got, want, "matrix {j} of {n} rows, M = {m}: vs cpu-ref");
    }
}

/// Dispatches of the grouped kernel during `run`, where the adapter can time kernels.
fn grouped_dispatches(e: &Engine, run: impl FnOnce()) -> Option<u64> {
    e.set_profiling(true).ok()?;
    e.reset_profile();
    run();
    e.sync().unwrap();
    let report = e.profile_report().unwrap();
    e.set_profiling(false).unwrap();
    let calls = |name: &str| {
        report
            .entries
            .iter()
            .filter(|en| en.0 == name)
            .map(|en| en.1)
            .sum::<u64>()
    };
    // Nothing ran as separate fused GEMVs.
    assert_eq!(calls("bitlinear_gemv_fused_subgroup"), 0);
    Some(calls("bitlinear_gemv_fused_group_subgroup"))
}

#[test]
fn grouped_outputs_match_separate_calls_and_cpu_ref() {
    let e = gpu_engine();
    e.set_dispatch_policy(DispatchPolicy::Gpu).unwrap();
    // 2B4T's q/k/v (2560, 640, 640) and gate/up (2 × 6912) scaled down; and a group of one.
    for (seed, ns) in [(1, &[256, 64, 64][..]), (10, &[192, 192]), (20, &[64])] {
        let g = group(&e, &layers(&e, ns, seed));
        assert!(g.grouped(), "{ns:?}");
        for m in [1, 3, 8] {
            let x = random_f32(seed + m as u64, m * K, -1.0, 1.0);
            check_against_separate(&e, &g, &x, m);
            let xt = e.upload_f32(&x, &[m, K]).unwrap();
            let runs = grouped_dispatches(&e, || drop(g.forward_tensor(&xt).unwrap()));
            if let Some(runs) = runs {
                assert_eq!(runs, 1, "{ns:?}, M = {m}: one dispatch per forward");
            }
        }
    }
}

/// The fused GEMV's lanes forced to 4 (256 rows per workgroup, what wide batches such as
/// 2B4T's gate/up at M = 8 take by default): the grouped, gated and normed kernels run them.
pub(crate) fn four_lanes() -> BitnetTuning {
    BitnetTuning {
        autotune: Some(false),
        gemv_lanes: Some(4),
        fuse_decode: Some(true),
        ..Default::default()
    }
}

#[test]
fn grouped_outputs_at_four_lanes_match_separate_calls_and_cpu_ref() {
    let e = gpu_engine_with_tuning(four_lanes());
    for (seed, ns) in [(70, &[256, 64, 64][..]), (80, &[192, 192])] {
        let g = group(&e, &layers(&e, ns, seed));
        for m in [1, 3, 8] {
            let x = random_f32(seed + m as u64, m * K, -1.0, 1.0);
            check_against_separate(&e, &g, &x, m);
            // The grouped dispatch's plan, cached for its concatenated rows.
            assert_four_lane_plan(&e, m, ns.iter().sum(), K);
        }
    }
}

/// Where the adapter has subgroups (the fused kernels need them), the plan cached for a
/// dispatch over `rows` weight rows is the fused GEMV at 4 lanes.
pub(crate) fn assert_four_lane_plan(e: &Engine, m: usize, rows: usize, k: usize) {
    if e.info().features.contains(wgpu::Features::SUBGROUP) {
        assert_eq!(
            e.bitlinear_plan(m, rows, k, true),
            Some(LinearPlan::Fused { lanes: 4 }),
            "{rows} rows, M = {m}"
        );
    }
}

/// A GPU engine of its own (dispatch forced to the GPU) with `tuning`.
pub(crate) fn gpu_engine_with_tuning(tuning: BitnetTuning) -> Engine {
    let e = bitnet_tests::gpu_engine_with(bitnet_wgpu::EngineOptions::default());
    e.set_dispatch_policy(DispatchPolicy::Gpu).unwrap();
    e.set_bitnet_tuning(tuning);
    e
}

#[test]
fn fallbacks_give_the_same_bits() {
    let e = gpu_engine();
    e.set_dispatch_policy(DispatchPolicy::Gpu).unwrap();
    // Four matrices: more than the kernel binds.
    let four = group(&e, &layers(&e, &[64, 32, 32, 16], 30));
    assert!(!four.grouped());
    check_against_separate(&e, &four, &random_f32(31, 2 * K, -1.0, 1.0), 2);
    // A row count that is not a multiple of 4 (a row block would straddle two matrices).
    let odd = group(&e, &layers(&e, &[64, 6], 40));
    assert!(!odd.grouped());
    check_against_separate(&e, &odd, &random_f32(41, K, -1.0, 1.0), 1);
    // M > 8: the fused GEMV does not apply; the group runs one BitLinear per matrix.
    let g = group(&e, &layers(&e, &[128, 32, 32], 50));
    assert!(g.grouped());
    check_against_separate(&e, &g, &random_f32(51, 9 * K, -1.0, 1.0), 9);
    let xt = e
        .upload_f32(&random_f32(52, 9 * K, -1.0, 1.0), &[9, K])
        .unwrap();
    if let Some(runs) = grouped_dispatches(&e, || drop(g.forward_tensor(&xt).unwrap())) {
        assert_eq!(runs, 0, "M = 9 is no grouped dispatch");
    }
    // Input of the wrong K: bitlinear_tensor's error for the first matrix.
    let bad = e
        .upload_f32(&random_f32(53, 128, -1.0, 1.0), &[1, 128])
        .unwrap();
    let w0 = e.upload_ternary(g.linears()[0].weights()).unwrap();
    assert_eq!(
        g.forward_tensor(&bad).unwrap_err(),
        e.bitlinear_tensor(&bad, &w0).unwrap_err()
    );
    // Matrices whose K differ make no group.
    let a = Linear::new(&e, weights(8, K, 60, 0.05));
    let b = Linear::new(&e, weights(8, 2 * K, 61, 0.05));
    assert!(matches!(
        e.linear_group(&[&a, &b]),
        Err(Error::ShapeMismatch { .. })
    ));
    assert!(matches!(
        e.linear_group(&[]),
        Err(Error::ShapeMismatch { .. })
    ));
}

/// On a device where the fused GEMV cannot run (no subgroups), or a K past it, groups and
/// gated layers hold no copy of their weights they could never use (each was a second copy of
/// its matrices: about 340 MB for 2B4T), and their outputs are the separate calls' bits.
#[test]
fn layers_that_cannot_fuse_upload_no_copy() {
    let e = bitnet_tests::gpu_engine_with(bitnet_wgpu::EngineOptions {
        disabled_features: wgpu::Features::SUBGROUP,
        ..bitnet_wgpu::EngineOptions::default()
    });
    let live = || e.pool_stats().live_bytes;
    let ls = layers(&e, &[64, 32, 32], 70);
    let before = live();
    let g = group(&e, &ls);
    assert!(!g.grouped());
    let (gate, up) = (weights(64, K, 72, 0.05), weights(64, K, 73, 0.05));
    let gated = e
        .gated_linear(
            &Linear::new(&e, gate),
            &Linear::new(&e, up),
            bitnet_wgpu::UnaryOp::Relu,
        )
        .unwrap();
    assert!(!gated.fused());
    assert_eq!(live(), before, "no weight copy uploaded");
    check_against_separate(&e, &g, &random_f32(71, 2 * K, -1.0, 1.0), 2);
    // K past the fused GEMV's (15360) on a device that has subgroups.
    let e = gpu_engine();
    let k = 16384;
    let ls: Vec<Linear> = [8, 8]
        .iter()
        .map(|&n| Linear::new(&e, weights(n, k, 74, 0.05)))
        .collect();
    assert!(!group(&e, &ls).grouped());
}

#[test]
fn nonfinite_input_and_overflow_fail_the_group_launch() {
    let e = gpu_engine();
    e.set_dispatch_policy(DispatchPolicy::Gpu).unwrap();
    // Scales ≈ 1e-30, ≈ 40, ≈ 1e-30: only matrix 1 overflows on inputs near f32::MAX.
    let ls = vec![
        Linear::new(&e, weights(32, K, 70, 1e-30)),
        Linear::new(&e, weights(64, K, 71, 50.0)),
        Linear::new(&e, weights(16, K, 72, 1e-30)),
    ];
    let g = group(&e, &ls);
    assert!(g.grouped());
    // Row 0 ordinary, row 1 near f32::MAX: the error indexes matrix 1's own [2, 64] output.
    let mut x = random_f32(73, 2 * K, -1.0, 1.0);
    for (i, v) in x[K..].iter_mut().enumerate() {
        *v = if i % 3 == 0 { -3e38 } else { 3e38 };
    }
    let want = Error::from(cpu_ref::bitlinear(&x, 2, ls[1].weights()).unwrap_err());
    assert!(matches!(want, Error::NonFinite { index, .. } if index >= 64));
    let xt = e.upload_f32(&x, &[2, K]).unwrap();
    let outs = g.forward_tensor(&xt).unwrap();
    for (j, out) in outs.iter().enumerate() {
        // Documented difference: one launch, one status slot — every output reports it.
        assert_eq!(out.read_f32().unwrap_err(), want, "output {j}");
        if j != 1 {
            assert!(cpu_ref::bitlinear(&x, 2, ls[j].weights()).is_ok());
        }
    }
    // A non-finite x: every output fails as each separate call does.
    let mut x = random_f32(74, 3 * K, -1.0, 1.0);
    x[K + 5] = f32::NAN;
    let want = Error::from(cpu_ref::bitlinear(&x, 3, ls[0].weights()).unwrap_err());
    assert!(matches!(want, Error::NonFinite { tensor: "x", index, .. } if index == K + 5));
    let outs = g
        .forward_tensor(&e.upload_f32(&x, &[3, K]).unwrap())
        .unwrap();
    for (j, out) in outs.iter().enumerate() {
        assert_eq!(out.read_f32().unwrap_err(), want, "output {j}");
    }
}

#[test]
fn cpu_engine_runs_the_host_matrices() {
    let e = Engine::cpu();
    let g = group(&e, &layers(&e, &[64, 16, 16], 80));
    assert!(!g.grouped());
    for m in [1, 3] {
        let x = random_f32(81 + m as u64, m * K, -1.0, 1.0);
        let outs: Vec<Tensor> = g
            .forward_tensor(&e.upload_f32(&x, &[m, K]).unwrap())
            .unwrap();
        for (out, l) in outs.iter().zip(g.linears()) {
            let want = cpu_ref::bitlinear(&x, m, l.weights()).unwrap();
            assert_eq!(bits(&out.read_f32().unwrap()), bits(&want));
        }
    }
}

/// A CPU group whose largest matrix splits into rayon tasks: cpu-ref's values and a NaN input's
/// error, called from outside the pool and from one of its workers (as a caller running its
/// whole step inside the pool does, see the crate docs' "CPU threads").
#[test]
fn a_cpu_group_of_split_matrices_matches_cpu_ref_inside_and_outside_the_pool() {
    const SPLIT_K: usize = 1024;
    // The first matrix splits; the others do not.
    const { assert!(768 * SPLIT_K >= cpu_ref::BITLINEAR_SPLIT_MACS) };
    let e = Engine::cpu();
    let ls: Vec<Linear> = [768, 64, 64]
        .iter()
        .enumerate()
        .map(|(j, &n)| Linear::new(&e, weights(n, SPLIT_K, 90 + j as u64, 0.05)))
        .collect();
    let g = group(&e, &ls);
    let x = random_f32(95, SPLIT_K, -1.0, 1.0);
    let xt = e.upload_f32(&x, &[1, SPLIT_K]).unwrap();
    let mut nan = x.clone();
    nan[7] = f32::NAN;
    let nan_t = e.upload_f32(&nan, &[1, SPLIT_K]).unwrap();
    let want_err = Error::from(cpu_ref::bitlinear(&nan, 1, ls[0].weights()).unwrap_err());
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(2)
        .build()
        .unwrap();
    for on_worker in [false, true] {
        let run = |t: &Tensor| {
            if on_worker {
                pool.install(|| g.forward_tensor(t))
            } else {
                g.forward_tensor(t)
            }
        };
        for (out, l) in run(&xt).unwrap().iter().zip(&ls) {
            let want = cpu_ref::bitlinear(&x, 1, l.weights()).unwrap();
            assert_eq!(
                bits(&out.read_f32().unwrap()),
                bits(&want),
                "on a worker: {on_worker}"
            );
        }
        assert_eq!(
            run(&nan_t).unwrap_err(),
            want_err,
            "on a worker: {on_worker}"
        );
    }
}
