//! `forward_normed` of `LinearGroup`, `GatedLinear` and `Linear`: the RMSNorm (with or without the
//! residual add) inside the layer's dispatch, bit for bit and error for error `add_rms_norm` /
//! `rms_norm` followed by `forward_tensor` (one launch per forward on the GPU; the fallbacks:
//! M > 8, K not a multiple of 64, the CPU engine, arguments the norm rejects, a fused kernel
//! the driver cannot build), checked against cpu-ref too.

use bitnet_tests::{gpu_engine_with, random_f32, random_normal};
use bitnet_wgpu::cpu_ref::{self, ops as cpu};
use bitnet_wgpu::{
    BackendKind, DispatchPolicy, Engine, EngineOptions, GatedLinear, Linear, LinearGroup,
    NormedInput, Result, Tensor, UnaryOp,
};

use super::{bits, weights};

#[path = "normed_errors.rs"]
mod errors;

const EPS: f32 = 1e-5;

/// Launches recorded on `e` (one pipeline lookup per launch).
fn launches(e: &Engine) -> u64 {
    e.pipeline_stats().compiled + e.pipeline_stats().hits
}

/// A layer under test: a group, a gated layer or one BitLinear, run plainly or on a normed input.
enum Layer {
    Group(LinearGroup),
    Gated(GatedLinear),
    Single(Linear),
}

impl Layer {
    fn group(e: &Engine, ns: &[usize], k: usize, seed: u64) -> Layer {
        let ls: Vec<Linear> = (0..ns.len())
            .map(|j| Linear::new(e, weights(ns[j], k, seed + j as u64, 0.05)))
            .collect();
        Layer::Group(e.linear_group(&ls.iter().collect::<Vec<_>>()).unwrap())
    }

    fn gated(e: &Engine, n: usize, k: usize, seed: u64, spread: f32) -> Layer {
        let gate = Linear::new(e, weights(n, k, seed, spread));
        let up = Linear::new(e, weights(n, k, seed + 1, spread));
        Layer::Gated(e.gated_linear(&gate, &up, UnaryOp::Relu2).unwrap())
    }

    fn single(e: &Engine, n: usize, k: usize, seed: u64) -> Layer {
        Layer::Single(Linear::new(e, weights(n, k, seed, 0.05)))
    }

    fn fused(&self) -> bool {
        match self {
            Layer::Group(g) => g.grouped(),
            Layer::Gated(g) => g.fused(),
            Layer::Single(l) => {
                let w = l.weights();
                w.n() % 4 == 0 && w.k() % 64 == 0 && l.engine().backend_kind() == BackendKind::Gpu
            }
        }
    }

    fn forward(&self, x: &Tensor) -> Result<Vec<Tensor>> {
        match self {
            Layer::Group(g) => g.forward_tensor(x),
            Layer::Gated(g) => Ok(vec![g.forward_tensor(x)?]),
            Layer::Single(l) => Ok(vec![l.engine().bitlinear_tensor(x, &l.device_weights()?)?]),
        }
    }

    fn forward_normed(&self, input: NormedInput<'_>) -> Result<(Tensor, Vec<Tensor>)> {
        match self {
            Layer::Group(g) => g.forward_normed(input),
            Layer::Gated(g) => g.forward_normed(input).map(|(h, y)| (h, vec![y])),
            Layer::Single(l) => l.forward_normed(input).map(|(h, y)| (h, vec![y])),
        }
    }

    /// cpu-ref's outputs for normalized rows `xn` (`[m, k]`).
    fn cpu_ref(&self, xn: &[f32], m: usize) -> Vec<Vec<f32>> {
        match self {
            Layer::Group(g) => g
                .linears()
                .iter()
                .map(|l| cpu_ref::bitlinear(xn, m, l.weights()).unwrap())
                .collect(),
            Layer::Gated(g) => {
                let [gate, up] = g.linears();
                let n = gate.weights().n();
                let gp = cpu_ref::bitlinear(xn, m, gate.weights()).unwrap();
                let upr = cpu_ref::bitlinear(xn, m, up.weights()).unwrap();
                let t = |v: Vec<f32>| cpu_ref::Tensor::new(v, &[m, n]).unwrap();
                let y = cpu::gated(g.activation(), &t(gp), &t(upr)).unwrap();
                vec![y.data().to_vec()]
            }
            Layer::Single(l) => vec![cpu_ref::bitlinear(xn, m, l.weights()).unwrap()],
        }
    }
}

/// The norm op and `forward_tensor`, as `forward_normed` documents it.
fn separately(e: &Engine, layer: &Layer, input: NormedInput<'_>) -> Result<(Tensor, Vec<Tensor>)> {
    let (h, xn) = match input.residual {
        Some(r) => e.add_rms_norm(input.x, r, input.weight, input.eps)?,
        None => (
            input.x.clone(),
            e.rms_norm(input.x, input.weight, input.eps)?,
        ),
    };
    Ok((h, layer.forward(&xn)?))
}

/// Inputs of one case: x, residual, norm weight (host values).
fn values(m: usize, k: usize, seed: u64) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
    (
        random_normal(seed, m * k, 1.0),
        random_normal(seed + 1, m * k, 0.5),
        random_f32(seed + 2, k, -1.5, 1.5),
    )
}

/// Values bit for bit against the two calls and cpu-ref, and one launch per fused forward.
fn check_values(e: &Engine, layer: &Layer, m: usize, k: usize, residual: bool, seed: u64) {
    let (x, r, w) = values(m, k, seed);
    let (xt, rt) = (
        e.upload_f32(&x, &[m, k]).unwrap(),
        e.upload_f32(&r, &[m, k]).unwrap(),
    );
    let wt = e.upload_f32(&w, &[k]).unwrap();
    let input = NormedInput {
        x: &xt,
        residual: residual.then_some(&rt),
        weight: &wt,
        eps: EPS,
    };
    let case = format!("M {m} K {k} residual {residual}");
    let before = launches(e);
    let (h, outs) = layer.forward_normed(input).unwrap();
    let gpu_work =
        e.backend_kind() == BackendKind::Gpu && e.dispatch_policy() != DispatchPolicy::Cpu;
    if layer.fused() && m <= 8 && gpu_work {
        assert_eq!(launches(e) - before, 1, "{case}: one launch");
    }
    let (want_h, want) = separately(e, layer, input).unwrap();
    assert_eq!(
        bits(&h.read_f32().unwrap()),
        bits(&want_h.read_f32().unwrap())
    );
    // cpu-ref: the norm, then the layer on its rows.
    let xc = cpu_ref::Tensor::new(x.clone(), &[m, k]).unwrap();
    let (hc, xn) = if residual {
        let rc = cpu_ref::Tensor::new(r, &[m, k]).unwrap();
        cpu::add_rms_norm(&xc, &rc, &w, EPS).unwrap()
    } else {
        (xc.clone(), cpu::rms_norm(&xc, &w, EPS).unwrap())
    };
    assert_eq!(bits(&h.read_f32().unwrap()), bits(hc.data()), "{case}: h");
    let cpu_outs = layer.cpu_ref(xn.data(), m);
    assert_eq!(outs.len(), want.len());
    for (j, ((got, sep), c)) in outs.iter().zip(&want).zip(&cpu_outs).enumerate() {
        let got = bits(&got.read_f32().unwrap());
        assert_eq!(
            got,
            bits(&sep.read_f32().unwrap()),
            "{case}, output {j}: two calls"
        );
        assert_eq!(got, bits(c), "{case}, output {j}: cpu-ref");
    }
}

#[test]
fn forward_normed_at_four_lanes_is_the_norm_then_the_layer_bit_for_bit() {
    let e = super::gpu_engine_with_tuning(super::four_lanes());
    let group = Layer::group(&e, &[128, 64, 64], 256, 1300);
    let gated = Layer::gated(&e, 96, 256, 1310, 0.05);
    let linear = Layer::single(&e, 64, 256, 1320);
    for m in [1, 8] {
        let s = 1330 + 2 * m as u64;
        check_values(&e, &group, m, 256, true, s);
        check_values(&e, &gated, m, 256, false, s + 50);
        check_values(&e, &linear, m, 256, true, s + 60);
        // The normed dispatches' plans: the group's rows, gate's and up's, the linear's.
        for rows in [256, 2 * 96, 64] {
            super::assert_four_lane_plan(&e, m, rows, 256);
        }
    }
}

#[test]
fn forward_normed_is_the_norm_then_the_layer_bit_for_bit() {
    // An engine of its own: launch counts must not see other tests' launches.
    let e = gpu_engine_with(EngineOptions::default());
    e.set_dispatch_policy(DispatchPolicy::Gpu).unwrap();
    // K = 1088: a row the norm's four-element steps do not divide (clamped lanes); 6912 (2B4T's
    // FFN width): a last partial block of 768 values, its fourth lane past the row (a mutant
    // counting that lane twice survived the other widths).
    for (k, seed) in [(256, 1000), (1088, 1100), (6912, 1300)] {
        let group = Layer::group(&e, &[128, 64, 64], k, seed);
        let gated = Layer::gated(&e, 96, k, seed + 10, 0.05);
        // A group of one, and one BitLinear: a sub-norm in front of a single projection.
        let single = Layer::group(&e, &[64], k, seed + 30);
        let linear = Layer::single(&e, 64, k, seed + 35);
        assert!(group.fused() && gated.fused() && single.fused() && linear.fused());
        for m in [1, 3, 8] {
            for residual in [true, false] {
                let s = seed + 20 + 2 * m as u64 + u64::from(residual);
                check_values(&e, &group, m, k, residual, s);
                check_values(&e, &gated, m, k, residual, s + 50);
            }
        }
        check_values(&e, &single, 1, k, false, seed + 40);
        for m in [1, 8] {
            check_values(&e, &linear, m, k, false, seed + 41 + m as u64);
            check_values(&e, &linear, m, k, true, seed + 51 + m as u64);
        }
    }
    // The fallbacks: M > 8; K not a multiple of 64 (no fused layer at all).
    let group = Layer::group(&e, &[64, 32], 256, 1200);
    check_values(&e, &group, 9, 256, true, 1210);
    let odd = Layer::gated(&e, 32, 96, 1220, 0.05);
    assert!(!odd.fused());
    check_values(&e, &odd, 2, 96, true, 1230);
    let odd = Layer::single(&e, 30, 256, 1232);
    assert!(!odd.fused());
    check_values(&e, &odd, 2, 256, false, 1234);
    // A GPU engine under the Cpu policy: the two calls, on the CPU.
    let policy = gpu_engine_with(EngineOptions::default());
    let layer = Layer::group(&policy, &[64, 32], 256, 1236);
    policy.set_dispatch_policy(DispatchPolicy::Cpu).unwrap();
    check_values(&policy, &layer, 2, 256, true, 1238);
    // The CPU engine.
    let cpu = Engine::cpu();
    check_values(
        &cpu,
        &Layer::group(&cpu, &[64, 32], 256, 1240),
        3,
        256,
        true,
        1250,
    );
    check_values(
        &cpu,
        &Layer::gated(&cpu, 32, 256, 1260, 0.05),
        2,
        256,
        false,
        1270,
    );
}

/// A fused kernel the driver cannot build (an injected `PipelineCreation` at its lookup) runs
/// the unfused ops instead, with their bits: plain and normed, for a group, a gated layer and
/// one BitLinear. Before, the layer returned `PipelineCreation` — at every call, through the
/// pipeline cache, on a driver that never builds the kernel.
#[test]
fn unbuildable_fused_kernels_run_the_unfused_ops() {
    let e = gpu_engine_with(EngineOptions::default());
    e.set_dispatch_policy(DispatchPolicy::Gpu).unwrap();
    let k = 256;
    let layers = [
        Layer::group(&e, &[128, 64, 64], k, 1400),
        Layer::gated(&e, 96, k, 1410, 0.05),
        Layer::single(&e, 64, k, 1420),
    ];
    let (x, r, w) = values(2, k, 1430);
    let xt = e.upload_f32(&x, &[2, k]).unwrap();
    let rt = e.upload_f32(&r, &[2, k]).unwrap();
    let wt = e.upload_f32(&w, &[k]).unwrap();
    let input = NormedInput {
        x: &xt,
        residual: Some(&rt),
        weight: &wt,
        eps: EPS,
    };
    let read = |ts: &[Tensor]| -> Vec<Vec<u32>> {
        ts.iter().map(|t| bits(&t.read_f32().unwrap())).collect()
    };
    for (i, layer) in layers.iter().enumerate() {
        assert!(layer.fused(), "layer {i}");
        let (want_h, want) = separately(&e, layer, input).unwrap();
        e.inject_fault(bitnet_wgpu::InjectedFault::PipelineCreation);
        let (h, outs) = layer.forward_normed(input).unwrap();
        assert_eq!(read(&[h]), read(&[want_h]), "layer {i}: h");
        assert_eq!(read(&outs), read(&want), "layer {i}: normed");
        if matches!(layer, Layer::Single(_)) {
            continue;
        }
        let want = layer.forward(&xt).unwrap();
        e.inject_fault(bitnet_wgpu::InjectedFault::PipelineCreation);
        assert_eq!(read(&layer.forward(&xt).unwrap()), read(&want), "layer {i}");
    }
}
