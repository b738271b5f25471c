//! `Engine::add_rms_norm` (residual add fused with RMSNorm) against cpu-ref: the sum bit for
//! bit, the norm too (rms_norm's exact tolerance), on whole and chunked launches and the CPU backend;
//! and the same errors, for each status word of the fused launch.

use bitnet_tests::{gpu_engine, gpu_engine_with};
use bitnet_wgpu::cpu_ref::ops as cpu;
use bitnet_wgpu::{Engine, EngineOptions, Error, Tensor};

use super::common::{assert_f32, cpu_error, engine, host, numel, up, values};

/// Both outputs of one case against cpu-ref, bit for bit.
fn check(e: &Engine, what: &str, x: &[f32], r: &[f32], w: &[f32], shape: &[usize], eps: f32) {
    let len = *shape.last().unwrap_or(&1);
    let (want_h, want_y) = cpu::add_rms_norm(&host(x, shape), &host(r, shape), w, eps).unwrap();
    let (h, y) = e
        .add_rms_norm(&up(e, x, shape), &up(e, r, shape), &up(e, w, &[len]), eps)
        .unwrap();
    assert_eq!(h.shape(), shape, "{what}");
    assert_eq!(h.read_f32().unwrap(), want_h.data(), "{what}: the sum");
    assert_f32("rms_norm", what, &y, &want_y);
}

#[test]
fn add_rms_norm_matches_cpu_ref() {
    let e = engine();
    let shapes: &[&[usize]] = &[
        &[1],
        &[3, 7],
        &[5, 300],
        &[2, 4096],
        &[2, 3, 64],
        &[1, 2560],
        // A last partial block of 768-1023 values (see rms_norm_matches_cpu_ref).
        &[2, 800],
        &[1, 6912],
    ];
    for (i, &shape) in shapes.iter().enumerate() {
        let len = *shape.last().unwrap();
        let x = values(160 + i as u64, numel(shape), -3.0, 3.0);
        let r = values(180 + i as u64, numel(shape), -3.0, 3.0);
        let w = values(190 + i as u64, len, 0.5, 1.5);
        for eps in [1e-5f32, 0.0] {
            check(e, &format!("{shape:?} eps {eps}"), &x, &r, &w, shape, eps);
        }
    }
    // A row that sums to zero (eps > 0), and rows of large magnitude with finite squares.
    let x = [1.0, -2.0, 0.5, 1e18, -2e18, 3e18];
    let r = [-1.0, 2.0, -0.5, 1e18, 0.0, -1e18];
    check(e, "edge rows", &x, &r, &[1.0, -2.0, 0.5], &[2, 3], 1e-6);
}

#[test]
fn add_rms_norm_chunks_and_runs_on_the_cpu_backend() {
    let (r, c) = (100, 80);
    let x = values(1, r * c, -2.0, 2.0);
    let res = values(2, r * c, -2.0, 2.0);
    let w = values(3, c, 0.5, 1.5);
    // 32 000 bytes per tensor under a 16 KiB binding limit: three launches of whole rows.
    let chunked = gpu_engine_with(EngineOptions {
        max_binding_bytes: Some(16 << 10),
        ..EngineOptions::default()
    });
    check(&chunked, "chunked", &x, &res, &w, &[r, c], 1e-5);
    check(&Engine::cpu(), "CPU backend", &x, &res, &w, &[r, c], 1e-5);
    // A NaN in the last launch is reported at its index in the full tensor (row 99, element 77).
    let mut bad = x.clone();
    bad[7997] = f32::NAN;
    let want = cpu_error(cpu::add_rms_norm(
        &host(&bad, &[r, c]),
        &host(&res, &[r, c]),
        &w,
        1e-5,
    ));
    assert!(
        matches!(want, Error::NonFinite { index: 7997, .. }),
        "{want:?}"
    );
    let (gx, gr) = (up(&chunked, &bad, &[r, c]), up(&chunked, &res, &[r, c]));
    let got = fused_error(chunked.add_rms_norm(&gx, &gr, &up(&chunked, &w, &[c]), 1e-5));
    assert_eq!(got, want, "chunked, a NaN in x");
}

/// The error of both outputs (they fail together: one launch).
fn fused_error(r: bitnet_wgpu::Result<(Tensor, Tensor)>) -> Error {
    match r {
        Err(e) => e,
        Ok((h, y)) => {
            let (eh, ey) = (h.read_f32().unwrap_err(), y.read_f32().unwrap_err());
            assert_eq!(eh, ey, "the sum and the norm report one error");
            ey
        }
    }
}

#[test]
fn add_rms_norm_errors_match_cpu_ref() {
    // Its own engine: the flags raised here must not reach another test's reads.
    let e = gpu_engine();
    let x = values(4, 24, -2.0, 2.0);
    let w = values(5, 6, 0.5, 1.5);
    let at = |mut v: Vec<f32>, i: usize, bad: f32| {
        v[i] = bad;
        v
    };
    let cases = [
        ("x", at(x.clone(), 8, f32::NAN), x.clone(), w.clone(), 1e-5),
        (
            "residual",
            x.clone(),
            at(x.clone(), 13, f32::INFINITY),
            w.clone(),
            1e-5,
        ),
        (
            "weight",
            x.clone(),
            x.clone(),
            at(w.clone(), 3, f32::NAN),
            1e-5,
        ),
        // Row 2's sum overflows: reported at its first element (12).
        (
            "sum",
            at(x.clone(), 14, 3e38),
            at(x.clone(), 14, 3e38),
            w.clone(),
            1e-5,
        ),
        // Row 1's squares overflow with a finite sum.
        (
            "squares",
            at(x.clone(), 9, 2e19),
            x.clone(),
            w.clone(),
            1e-5,
        ),
        // Row 3 sums to zero with eps = 0: 0 · inf.
        (
            "zero row",
            x.clone(),
            [x[..18].to_vec(), x[18..].iter().map(|v| -v).collect()].concat(),
            w.clone(),
            0.0,
        ),
        ("eps", x.clone(), x.clone(), w.clone(), -1.0),
    ];
    for (what, vx, vr, vw, eps) in cases {
        let want = cpu_error(cpu::add_rms_norm(
            &host(&vx, &[4, 6]),
            &host(&vr, &[4, 6]),
            &vw,
            eps,
        ));
        let got = fused_error(e.add_rms_norm(
            &up(&e, &vx, &[4, 6]),
            &up(&e, &vr, &[4, 6]),
            &up(&e, &vw, &[6]),
            eps,
        ));
        assert_eq!(got, want, "{what}");
    }
    // A single row: a NaN weight is still found (by row 0, the row that checks the weights).
    // And a weight of 3e38 overflows y at element 3 of row 0 (h = 10 there, |h| · inv > 1.8),
    // not at its first element: the output is reported at the element, flat index 3.
    let one_row = (
        at(x[..6].to_vec(), 3, 5.0),
        at(w.clone(), 3, f32::NAN),
        [1, 6],
    );
    let huge_w = (at(x.clone(), 3, 5.0), at(w.clone(), 3, 3e38), [4, 6]);
    for (what, (vx, vw, s)) in [("one row, weight", one_row), ("weight overflow", huge_w)] {
        let want = cpu_error(cpu::add_rms_norm(&host(&vx, &s), &host(&vx, &s), &vw, 1e-5));
        assert!(
            matches!(want, Error::NonFinite { index: 3, .. }),
            "{what}: {want:?}"
        );
        let (gx, gw) = (up(&e, &vx, &s), up(&e, &vw, &[6]));
        let got = fused_error(e.add_rms_norm(&gx, &gx, &gw, 1e-5));
        assert_eq!(got, want, "{what}");
    }
    let shape = e.add_rms_norm(
        &up(&e, &x, &[4, 6]),
        &up(&e, &x, &[6, 4]),
        &up(&e, &w, &[6]),
        1e-5,
    );
    assert_eq!(
        fused_error(shape),
        cpu_error(cpu::add_rms_norm(
            &host(&x, &[4, 6]),
            &host(&x, &[6, 4]),
            &w,
            1e-5
        )),
        "shapes"
    );
}
