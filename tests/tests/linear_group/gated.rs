//! `GatedLinear`: gate and up with the gated activation in one dispatch, bit for bit and error
//! for error `Engine::gated` of the two `bitlinear_tensor`s (GPU engine, one dispatch per
//! forward; CPU engine; the fallbacks: M > 8, N odd, K not a multiple of 64), for ReLU² and SiLU.

use bitnet_tests::{gpu_engine, gpu_engine_with, lose_device, random_f32};
use bitnet_wgpu::{DispatchPolicy, Engine, EngineOptions, Error, Linear, Tensor, UnaryOp};

use super::{bits, weights};

/// Launches recorded on `e` (one pipeline lookup per launch).
fn launches(e: &Engine) -> u64 {
    e.pipeline_stats().compiled + e.pipeline_stats().hits
}

/// The three ops `forward_tensor` stands for.
fn three_ops(e: &Engine, gate: &Linear, up: &Linear, act: UnaryOp, x: &Tensor) -> Tensor {
    let g = e.bitlinear_tensor(x, &e.upload_ternary(gate.weights()).unwrap());
    let u = e.bitlinear_tensor(x, &e.upload_ternary(up.weights()).unwrap());
    e.gated(act, &g.unwrap(), &u.unwrap()).unwrap()
}

fn pair(e: &Engine, n: usize, k: usize, seed: u64) -> (Linear, Linear) {
    (
        Linear::new(e, weights(n, k, seed, 0.05)),
        Linear::new(e, weights(n, k, seed + 1, 0.05)),
    )
}

/// Values, bit for bit, and (where `one_launch`) a single launch per forward.
fn check(e: &Engine, n: usize, k: usize, m: usize, act: UnaryOp, fused: bool, seed: u64) {
    let (gate, up) = pair(e, n, k, seed);
    let layer = e.gated_linear(&gate, &up, act).unwrap();
    assert_eq!(layer.fused(), fused, "n {n}, k {k}");
    let x = e
        .upload_f32(&random_f32(seed + 7, m * k, -1.0, 1.0), &[m, k])
        .unwrap();
    let want = bits(&three_ops(e, &gate, &up, act, &x).read_f32().unwrap());
    let before = launches(e);
    let got = layer.forward_tensor(&x).unwrap();
    let took = launches(e) - before;
    assert_eq!(got.shape(), &[m, n]);
    assert_eq!(
        bits(&got.read_f32().unwrap()),
        want,
        "{act:?} n {n} k {k} M {m}"
    );
    if fused && m <= 8 {
        assert_eq!(took, 1, "{act:?} n {n} k {k} M {m}: one launch");
    }
}

#[test]
fn gated_linear_is_the_three_ops_bit_for_bit() {
    // An engine of its own: launch counts must not see other tests' launches.
    let e = gpu_engine_with(EngineOptions::default());
    e.set_dispatch_policy(DispatchPolicy::Gpu).unwrap();
    for (i, act) in [UnaryOp::Relu2, UnaryOp::Silu].into_iter().enumerate() {
        for m in [1, 3, 8] {
            check(&e, 96, 256, m, act, true, 100 + 10 * i as u64 + m as u64);
        }
        // The fallbacks: M > 8; N odd (no 4-row blocks of two and two); K not a multiple of 64.
        check(&e, 96, 256, 9, act, true, 200);
        check(&e, 33, 256, 2, act, false, 210);
        check(&e, 32, 96, 2, act, false, 220);
    }
    let cpu = Engine::cpu();
    check(&cpu, 96, 256, 3, UnaryOp::Relu2, false, 230);
    // Gate and up large enough to split into rayon tasks, called from outside rayon's pool and
    // from one of its workers (a caller running its whole step inside the pool).
    const { assert!(512 * 1024 >= bitnet_wgpu::cpu_ref::BITLINEAR_SPLIT_MACS) };
    check(&cpu, 512, 1024, 1, UnaryOp::Silu, false, 240);
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(2)
        .build()
        .unwrap();
    pool.install(|| check(&cpu, 512, 1024, 2, UnaryOp::Relu2, false, 250));
}

#[test]
fn gated_linear_at_four_lanes_is_the_three_ops_bit_for_bit() {
    // The three ops run the fused GEMV at 4 lanes too, checked against cpu-ref by the
    // cross-check suite's variants.
    let e = super::gpu_engine_with_tuning(super::four_lanes());
    for m in [1, 3, 8] {
        check(&e, 96, 256, m, UnaryOp::Relu2, true, 300 + m as u64);
        // The gated dispatch's plan, cached for gate's and up's rows together.
        super::assert_four_lane_plan(&e, m, 2 * 96, 256);
    }
}

/// A non-finite x, an overflowing projection and an overflowing activation fail the output as
/// the three ops fail theirs (op, tensor and index).
#[test]
fn gated_linear_errors_are_the_three_ops_errors() {
    let e = gpu_engine();
    e.set_dispatch_policy(DispatchPolicy::Gpu).unwrap();
    let (n, k, m) = (64, 256, 2);
    let (gate, up) = pair(&e, n, k, 300);
    let layer = e.gated_linear(&gate, &up, UnaryOp::Relu2).unwrap();
    assert!(layer.fused());
    let read_err = |t: bitnet_wgpu::Result<Tensor>| match t.and_then(|t| t.read_f32()) {
        Err(e) => e,
        Ok(_) => panic!("expected an error"),
    };
    let mut nan = random_f32(301, m * k, -1.0, 1.0);
    nan[k + 5] = f32::NAN;
    // Rows shaped like up's row 3 (signs of its codes, near f32::MAX) overflow that output
    // of the up projection (about s · 170 · 3e38); rows of 1e18 keep the projections finite
    // (up to about 1e18 · s · 256) but their ReLU² and product overflow.
    let codes = up.weights().to_i8();
    let huge: Vec<f32> = (0..m * k)
        .map(|i| f32::from(codes[3 * k + i % k]) * 3.0e38)
        .collect();
    let big = vec![1.0e18f32; m * k];
    // Row 0 shaped like up's row 3, row 1 like gate's row 5: both projections overflow, up
    // first at the lower index, and the layer reports gate's (the op the sequence runs first).
    let gate_codes = gate.weights().to_i8();
    let both: Vec<f32> = (0..m * k)
        .map(|i| {
            let row = if i < k {
                &codes[3 * k..]
            } else {
                &gate_codes[5 * k..]
            };
            f32::from(row[i % k]) * 3.0e38
        })
        .collect();
    {
        let x = e.upload_f32(&both, &[m, k]).unwrap();
        let first = |w: &Linear| match read_err(
            e.bitlinear_tensor(&x, &e.upload_ternary(w.weights()).unwrap()),
        ) {
            Error::NonFinite { index, .. } => index,
            other => panic!("{other:?}"),
        };
        assert!(
            first(&up) < first(&gate),
            "both overflow, up at the lower index"
        );
    }
    for (case, xs, op) in [
        ("nan", nan, "bitlinear"),
        ("projection", huge, "bitlinear"),
        ("both projections", both, "bitlinear"),
        ("activation", big, "gated"),
    ] {
        let x = e.upload_f32(&xs, &[m, k]).unwrap();
        let got = read_err(layer.forward_tensor(&x));
        let g = e.bitlinear_tensor(&x, &e.upload_ternary(gate.weights()).unwrap());
        let u = e.bitlinear_tensor(&x, &e.upload_ternary(up.weights()).unwrap());
        let want = read_err(g.and_then(|g| e.gated(UnaryOp::Relu2, &g, &u?)));
        assert_eq!(got, want, "{case}");
        assert!(
            matches!(got, Error::NonFinite { op: o, .. } if o == op),
            "{case}: {got:?}"
        );
    }
}

#[test]
fn gated_linear_rejects_mismatched_layers() {
    let e = gpu_engine();
    let (gate, _) = pair(&e, 64, 256, 400);
    let (up, _) = pair(&e, 32, 256, 410);
    assert!(matches!(
        e.gated_linear(&gate, &up, UnaryOp::Relu2),
        Err(Error::ShapeMismatch { .. })
    ));
    let other = Linear::new(&Engine::cpu(), gate.weights().clone());
    assert!(matches!(
        e.gated_linear(&gate, &other, UnaryOp::Relu2),
        Err(Error::EngineMismatch { .. })
    ));
    // An input of another K fails as the gate BitLinear would.
    let (g2, u2) = pair(&e, 64, 256, 420);
    let layer = e.gated_linear(&g2, &u2, UnaryOp::Relu2).unwrap();
    let x = e.upload_f32(&[0.5; 2 * 128], &[2, 128]).unwrap();
    let want = e.bitlinear_tensor(&x, &e.upload_ternary(g2.weights()).unwrap());
    assert_eq!(layer.forward_tensor(&x).unwrap_err(), want.unwrap_err());
}

/// A lost device fails the forward (the call or its output's read) with `DeviceLost`.
#[test]
fn a_lost_device_fails_gated_linear() {
    let e = gpu_engine_with(EngineOptions::default());
    let (gate, up) = pair(&e, 64, 256, 500);
    let layer = e.gated_linear(&gate, &up, UnaryOp::Relu2).unwrap();
    let x = e
        .upload_f32(&random_f32(501, 256, -1.0, 1.0), &[1, 256])
        .unwrap();
    lose_device(&e);
    let r = layer.forward_tensor(&x).and_then(|y| y.read_f32());
    assert!(matches!(r, Err(Error::DeviceLost(_))), "{r:?}");
}
