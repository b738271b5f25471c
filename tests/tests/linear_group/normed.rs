//! `forward_normed` of `LinearGroup`, `GatedLinear` and `Linear`: the RMSNorm (with or without the
//! residual add) inside the layer's dispatch, bit for bit and error for error `add_rms_norm` /
//! `rms_norm` followed by `forward_tensor` (one launch per forward on the GPU; the fallbacks:
//! M > 8, K not a multiple of 64, the CPU engine, arguments the norm rejects), checked against
//! cpu-ref too.

use bitnet_tests::{gpu_engine, gpu_engine_with, lose_device, random_f32, random_normal};
use bitnet_wgpu::cpu_ref::{self, ops as cpu};
use bitnet_wgpu::{
    BackendKind, DispatchPolicy, Engine, EngineOptions, Error, GatedLinear, Linear, LinearGroup,
    NormedInput, Result, Tensor, UnaryOp,
};

use super::{bits, weights};

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
    if layer.fused() && m <= 8 && e.backend_kind() == BackendKind::Gpu {
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
fn forward_normed_is_the_norm_then_the_layer_bit_for_bit() {
    // An engine of its own: launch counts must not see other tests' launches.
    let e = gpu_engine_with(EngineOptions::default());
    e.set_dispatch_policy(DispatchPolicy::Gpu).unwrap();
    // K = 1088: a row the norm's four-element steps do not divide (clamped lanes).
    for (k, seed) in [(256, 1000), (1088, 1100)] {
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

/// The first error a read of `t` reports.
fn read_err(t: &Tensor) -> Error {
    t.read_f32().expect_err("expected an error")
}

/// Every output of `forward_normed` fails as the two calls' outputs do; `op` is the op named.
fn check_error(e: &Engine, layer: &Layer, xs: [&[f32]; 3], residual: bool, op: &str, case: &str) {
    let k = xs[2].len();
    let m = xs[0].len() / k;
    let xt = e.upload_f32(xs[0], &[m, k]).unwrap();
    let rt = e.upload_f32(xs[1], &[m, k]).unwrap();
    let wt = e.upload_f32(xs[2], &[k]).unwrap();
    let input = NormedInput {
        x: &xt,
        residual: residual.then_some(&rt),
        weight: &wt,
        eps: EPS,
    };
    let (h, outs) = layer.forward_normed(input).unwrap();
    let (want_h, want) = separately(e, layer, input).unwrap();
    if residual {
        // The norm's errors fail h as add_rms_norm's do; a layer output's fails it too (one
        // launch: the documented difference), where add_rms_norm's h is fine.
        match op {
            "bitlinear" => assert!(want_h.read_f32().is_ok(), "{case}"),
            _ => assert_eq!(read_err(&h), read_err(&want_h), "{case}: h"),
        }
        if layer.fused() {
            assert!(h.read_f32().is_err(), "{case}: h of the failed launch");
        }
    }
    for (j, (got, want)) in outs.iter().zip(&want).enumerate() {
        let (got, want) = (read_err(got), read_err(want));
        assert_eq!(got, want, "{case}, output {j}");
        assert!(
            matches!(got, Error::NonFinite { op: o, .. } if o == op),
            "{case}: {got:?}"
        );
    }
}

/// A case's name, its x / residual / weight values, and the op it reports with the residual and
/// without it (None: no error then).
type ErrorCase = (
    &'static str,
    [Vec<f32>; 3],
    &'static str,
    Option<&'static str>,
);

/// Each of the norm's checks (x, residual, weight, an overflowing row, a non-finite normalized
/// element, the precedence between them) and an overflowing layer output fail as the two calls
/// do, for the group and the gated layer, with and without the residual.
#[test]
fn forward_normed_errors_are_the_two_calls_errors() {
    let e = gpu_engine();
    e.set_dispatch_policy(DispatchPolicy::Gpu).unwrap();
    let (m, k) = (2, 256);
    let group = Layer::group(&e, &[64, 32, 32], k, 2000);
    // Weight spread 50: the layer's outputs overflow on rows normalized to about 1e37.
    let gated = Layer::gated(&e, 32, k, 2010, 50.0);
    let linear = Layer::single(&e, 32, k, 2015);
    let (x, r, w) = values(m, k, 2020);
    let with = |f: &dyn Fn(&mut [Vec<f32>; 3])| {
        let mut v = [x.clone(), r.clone(), w.clone()];
        f(&mut v);
        v
    };
    let cases: Vec<ErrorCase> = vec![
        (
            "x",
            with(&|v| v[0][k + 5] = f32::NAN),
            "add_rms_norm",
            Some("rms_norm"),
        ),
        (
            "residual",
            with(&|v| v[1][3] = f32::INFINITY),
            "add_rms_norm",
            None,
        ),
        (
            "weight",
            with(&|v| v[2][7] = f32::NAN),
            "add_rms_norm",
            Some("rms_norm"),
        ),
        (
            "x before weight",
            with(&|v| {
                v[0][k + 1] = f32::NAN;
                v[2][0] = f32::NAN;
            }),
            "add_rms_norm",
            Some("rms_norm"),
        ),
        (
            // h = x + residual overflows (the row has no finite norm), and the weight is NaN:
            // the weight is checked first.
            "weight before overflow",
            with(&|v| {
                v[0][k + 9] = 3e38;
                v[1][k + 9] = 3e38;
                v[2][200] = f32::NAN;
            }),
            "add_rms_norm",
            Some("rms_norm"),
        ),
        (
            // Without the residual the squares overflow (rms_norm's own kind, by row).
            "overflowing row",
            with(&|v| {
                v[0][k + 9] = 3e30;
                v[1][k + 9] = 3e38;
            }),
            "add_rms_norm",
            Some("rms_norm"),
        ),
        (
            // One large element: its normalized value is about √K, times a weight of 3e38.
            "normalized element",
            with(&|v| {
                v[0][k + 4] = 1e6;
                v[1][k + 4] = 0.0;
                v[2][4] = 3e38;
            }),
            "add_rms_norm",
            Some("rms_norm"),
        ),
        (
            // Normalized rows about 1e37: finite, but the layer's outputs overflow.
            "layer output",
            with(&|v| v[2].iter_mut().for_each(|w| *w = 1e37)),
            "bitlinear",
            Some("bitlinear"),
        ),
    ];
    for (case, v, op_add, op_norm) in &cases {
        let xs = [&v[0][..], &v[1][..], &v[2][..]];
        for (name, layer) in [("group", &group), ("gated", &gated), ("linear", &linear)] {
            // The group's weights are small: its outputs stay finite where the gated one's do not.
            if *case == "layer output" && name != "gated" {
                continue;
            }
            check_error(&e, layer, xs, true, op_add, &format!("{name}: {case}"));
            if let Some(op) = op_norm {
                check_error(
                    &e,
                    layer,
                    xs,
                    false,
                    op,
                    &format!("{name}: {case}, no residual"),
                );
            }
        }
    }
}

/// Arguments the norm rejects (eps, the weight's length, a residual of another shape) and an
/// input of another K fail as the two calls do; a lost device fails the forward.
#[test]
fn forward_normed_rejects_what_the_two_calls_reject() {
    let e = gpu_engine();
    e.set_dispatch_policy(DispatchPolicy::Gpu).unwrap();
    let layer = Layer::group(&e, &[64, 32], 256, 3000);
    let up = |v: &[f32], shape: &[usize]| e.upload_f32(v, shape).unwrap();
    let x = up(&random_f32(3001, 512, -1.0, 1.0), &[2, 256]);
    let w = up(&[1.0; 256], &[256]);
    let short = up(&[1.0; 128], &[128]);
    let r3 = up(&[0.5; 768], &[3, 256]);
    let x128 = up(&[0.5; 256], &[2, 128]);
    let cases = [
        (&x, Some(&x), &w, -1.0),
        (&x, Some(&x), &w, f32::NAN),
        (&x, None, &short, EPS),
        (&x, Some(&r3), &w, EPS),
        (&x128, None, &short, EPS),
    ];
    for (i, (x, residual, weight, eps)) in cases.into_iter().enumerate() {
        let input = NormedInput {
            x,
            residual,
            weight,
            eps,
        };
        let got = layer.forward_normed(input).map(|_| ()).unwrap_err();
        let want = separately(&e, &layer, input).map(|_| ()).unwrap_err();
        assert_eq!(got, want, "case {i}");
    }
    let lost = gpu_engine_with(EngineOptions::default());
    let layer = Layer::gated(&lost, 32, 256, 3010, 0.05);
    let x = lost.upload_f32(&[0.5; 256], &[1, 256]).unwrap();
    let w = lost.upload_f32(&[1.0; 256], &[256]).unwrap();
    lose_device(&lost);
    let input = NormedInput {
        x: &x,
        residual: Some(&x),
        weight: &w,
        eps: EPS,
    };
    let r = layer
        .forward_normed(input)
        .and_then(|(_, y)| y[0].read_f32());
    assert!(matches!(r, Err(Error::DeviceLost(_))), "{r:?}");
}
