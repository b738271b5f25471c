//! Bad input gives the same error on both paths: NaN/Inf (same op, tensor and first index),
//! overflowing sums and outputs, and shape errors.

use bitnet_tests::random_normal;
use bitnet_wgpu::Error;
use bitnet_wgpu::cpu_ref::{self, QuantizedActivations, TernaryMatrix};

use crate::support::{assert_same_result, check_acts, engine, engines};

#[test]
fn non_finite_inputs_give_the_same_error() {
    for (name, e) in engines() {
        for bad in [f32::NAN, f32::INFINITY, f32::NEG_INFINITY] {
            let ctx = format!("{name}: {bad}");
            // Two bad values; the first (lowest flat index) is reported. Large enough that the
            // chunked engine splits both the weight sum and the activation rows.
            let (n, k) = (40, 1000);
            let mut w = random_normal(21, n * k, 0.02);
            w[31_000] = bad;
            w[17_321] = bad;
            let want = cpu_ref::quantize_weights(&w, n, k)
                .map_err(Error::from)
                .unwrap_err();
            assert_eq!(
                e.quantize_weights(&w, n, k).unwrap_err(),
                want,
                "{ctx}: weights"
            );
            let mut x = random_normal(22, n * k, 1.0);
            x[29_999] = bad;
            x[20_001] = bad;
            let want = cpu_ref::quantize_activations(&x, n, k)
                .map_err(Error::from)
                .unwrap_err();
            assert_eq!(
                e.quantize_activations(&x, n, k).unwrap_err(),
                want,
                "{ctx}: activations"
            );
            let wq = cpu_ref::quantize_weights(&random_normal(23, 9 * k, 0.02), 9, k).unwrap();
            for m in [1, 40] {
                let want = cpu_ref::bitlinear(&x[..m * k], m, &wq);
                let got = e.bitlinear(&x[..m * k], m, &wq);
                if m == 40 {
                    let want = Error::from(want.unwrap_err());
                    assert_eq!(got.unwrap_err(), want, "{ctx}: bitlinear x");
                } else {
                    assert_same_result(got, want, &format!("{ctx}: bitlinear, finite row"));
                }
            }
            // The engine stays usable after an error.
            check_acts(e, &x[..k], 1, k, &format!("{ctx}: after the error"));
        }
    }
}

#[test]
fn overflows_give_the_same_error() {
    for (name, e) in engines() {
        // Finite weights whose |w| sum overflows f32.
        let w = vec![3.0e38f32, -3.0e38, 1.0, 2.0];
        let want = cpu_ref::quantize_weights(&w, 2, 2)
            .map_err(Error::from)
            .unwrap_err();
        assert_eq!(
            e.quantize_weights(&w, 2, 2).unwrap_err(),
            want,
            "{name}: sum overflow"
        );
        // The same through more than one level of the canonical sum (K % 16 != 0 and 126
        // blocks of 4096): the later levels read the overflowing block sums, which are not
        // weights (a mutant flagging them as non-finite weights survived the case above).
        let (n, k) = (513, 1000);
        let w: Vec<f32> = (0..n * k)
            .map(|i| if i % 2 == 0 { 3.0e38 } else { -3.0e38 })
            .collect();
        let want = cpu_ref::quantize_weights(&w, n, k)
            .map_err(Error::from)
            .unwrap_err();
        assert_eq!(
            e.quantize_weights(&w, n, k).unwrap_err(),
            want,
            "{name}: sum overflow over several levels"
        );
        // A rescale that overflows: huge weight scale times huge activation absmax.
        let wq = TernaryMatrix::from_i8(&[1, -1, 0, 1, 1, 1], 2, 3, 3.0e38).unwrap();
        let xq =
            QuantizedActivations::from_parts(vec![0, 0, 0, 127, -127, 5], vec![1.0, 3.0e38], 2, 3)
                .unwrap();
        let want = cpu_ref::bitlinear_quantized(&xq, &wq);
        assert_same_result(
            e.bitlinear_quantized(&xq, &wq),
            want,
            &format!("{name}: output overflow"),
        );
    }
}

#[test]
fn bad_shapes_give_the_same_error() {
    let e = engine();
    let w = vec![0.5f32; 12];
    for (n, k) in [(0, 12), (12, 0), (3, 5), (1, 1 << 24)] {
        let want = cpu_ref::quantize_weights(&w, n, k)
            .map_err(Error::from)
            .unwrap_err();
        assert_eq!(
            e.quantize_weights(&w, n, k).unwrap_err(),
            want,
            "weights [{n}, {k}]"
        );
        let want = cpu_ref::quantize_activations(&w, n, k)
            .map_err(Error::from)
            .unwrap_err();
        assert_eq!(
            e.quantize_activations(&w, n, k).unwrap_err(),
            want,
            "activations [{n}, {k}]"
        );
    }
    let wq = cpu_ref::quantize_weights(&w, 3, 4).unwrap();
    let want = cpu_ref::bitlinear(&w, 2, &wq)
        .map_err(Error::from)
        .unwrap_err();
    assert_eq!(
        e.bitlinear(&w, 2, &wq).unwrap_err(),
        want,
        "bitlinear length"
    );
    let xq = cpu_ref::quantize_activations(&w, 2, 6).unwrap();
    let want = cpu_ref::bitlinear_accumulate(&xq, &wq)
        .map_err(Error::from)
        .unwrap_err();
    assert_eq!(
        e.bitlinear_accumulate(&xq, &wq).unwrap_err(),
        want,
        "accumulate K mismatch"
    );
}

/// The fused f32 plans (fused, batched, lean GEMV) split M when the output outgrows one binding
/// even though x fits: a NaN in x or an overflowing output in a later M chunk is reported at its
/// index in the whole tensor, as cpu-ref reports it.
#[test]
fn fused_plans_report_indices_of_later_m_chunks() {
    let e = bitnet_tests::gpu_engine_with(bitnet_wgpu::EngineOptions {
        max_binding_bytes: Some(16 << 10), // 4 KiB output rows: M chunks of 4 rows
        ..Default::default()
    });
    e.set_dispatch_policy(bitnet_wgpu::DispatchPolicy::Gpu)
        .unwrap();
    let (m, n, k) = (8usize, 1024usize, 64usize);
    let wf = random_normal(7, n * k, 0.05);
    let w = cpu_ref::quantize_weights(&wf, n, k).unwrap();
    let big: Vec<f32> = wf.iter().map(|v| v * 1e31).collect();
    let big = cpu_ref::quantize_weights(&big, n, k).unwrap();
    let mut x_nan = random_normal(8, m * k, 1.0);
    x_nan[5 * k + 3] = f32::NAN; // row 5: the second M chunk
    let mut x_big = random_normal(9, m * k, 1.0);
    x_big[6 * k + 1] = 1e10; // s · a overflows in row 6 only
    let tuning = bitnet_wgpu::BitnetTuning {
        autotune: Some(false),
        ..Default::default()
    };
    for forced in [
        tuning,
        bitnet_wgpu::BitnetTuning {
            batch_gemv: Some(true),
            ..tuning
        },
        bitnet_wgpu::BitnetTuning {
            lean_gemv: Some(true),
            ..tuning
        },
    ] {
        e.set_bitnet_tuning(forced);
        let plan = e.bitlinear_plan(m, n, k, true);
        let want = Error::from(cpu_ref::bitlinear(&x_nan, m, &w).unwrap_err());
        assert_eq!(e.bitlinear(&x_nan, m, &w).unwrap_err(), want, "{plan:?}");
        let want = Error::from(cpu_ref::bitlinear(&x_big, m, &big).unwrap_err());
        assert_eq!(e.bitlinear(&x_big, m, &big).unwrap_err(), want, "{plan:?}");
    }
}

/// A BitLinear split over N (weights larger than one binding) with overflowing outputs in two N
/// chunks: the error names the lowest flat index, as cpu-ref does, not the first chunk's flag
/// (row 1 of chunk 0 comes after row 0 of chunk 1 in the output).
#[test]
fn n_chunked_bitlinear_reports_the_lowest_flagged_index() {
    let e = bitnet_tests::gpu_engine_with(bitnet_wgpu::EngineOptions {
        max_binding_bytes: Some(16 << 10), // 256-byte weight rows: N chunks of 64 rows
        ..Default::default()
    });
    e.set_dispatch_policy(bitnet_wgpu::DispatchPolicy::Gpu)
        .unwrap();
    let (m, n, k) = (2usize, 128usize, 1024usize);
    // Row 0 of x lives in the first half of K, row 1 in the second; s · a is finite but large.
    let mut x = vec![0.0f32; m * k];
    x[..k / 2].fill(1e8);
    x[k + k / 2..].fill(1e8);
    // Weight row 0 (chunk 0) meets x row 1 only, weight row 100 (chunk 1) x row 0 only: y[1, 0]
    // and y[0, 100] overflow, every other output is 0.
    let mut w = vec![0i8; n * k];
    w[k / 2..k].fill(1);
    w[100 * k..100 * k + k / 2].fill(1);
    let w = TernaryMatrix::from_i8(&w, n, k, 1e30).unwrap();
    let want = cpu_ref::bitlinear(&x, m, &w).map_err(Error::from);
    assert!(
        matches!(&want, Err(Error::NonFinite { index: 100, .. })),
        "{want:?}"
    );
    for tuning in [
        bitnet_wgpu::BitnetTuning {
            autotune: Some(false),
            ..Default::default()
        },
        bitnet_wgpu::BitnetTuning {
            autotune: Some(false),
            fuse_decode: Some(false),
            ..Default::default()
        },
    ] {
        e.set_bitnet_tuning(tuning);
        let got = e.bitlinear(&x, m, &w);
        let plan = e.bitlinear_plan(m, n, k, true);
        assert_same_result(got, cpu_ref::bitlinear(&x, m, &w), &format!("{plan:?}"));
    }
}

/// Autotuning a shape it cannot measure is a typed error before anything is allocated for it
/// (it had sized a host copy of the activations from the unchecked `m * k` first: 2^40 values
/// aborted the process).
#[test]
fn autotune_rejects_shapes_it_cannot_measure() {
    let e = engine();
    for (m, n, k) in [(0, 8, 64), (1, 0, 64), (1, 8, 0)] {
        let got = e.autotune_bitlinear(m, n, k, true);
        assert!(
            matches!(
                got,
                Err(Error::CpuRef(cpu_ref::Error::InvalidArgument { .. }))
            ),
            "{m}x{n}x{k}: {got:?}"
        );
    }
    let got = e.autotune_bitlinear(1, 8, 1 << 24, true);
    assert!(
        matches!(got, Err(Error::CpuRef(cpu_ref::Error::SizeOverflow { .. }))),
        "K = 2^24: {got:?}"
    );
    for (m, n, k) in [
        (1 << 20, 4096, 1 << 20),
        (1, 1 << 40, 64),
        (usize::MAX, 2, 64),
    ] {
        let got = e.autotune_bitlinear(m, n, k.min((1 << 24) - 64), false);
        assert!(
            matches!(got, Err(Error::LimitExceeded { .. })),
            "{m}x{n}x{k}: {got:?}"
        );
    }
}
