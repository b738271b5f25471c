//! `forward_normed`'s errors: each of the norm's checks and a layer output's, their precedence,
//! and the arguments the norm rejects, as the norm op followed by the layer reports them.

use bitnet_tests::{gpu_engine, gpu_engine_with, lose_device, random_f32};
use bitnet_wgpu::{DispatchPolicy, Engine, EngineOptions, Error, NormedInput, Tensor};

use super::{EPS, Layer, separately, values};

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
