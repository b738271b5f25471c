//! The resident-tensor API: chained ops with one sync, uploaded weights, dtype/shape/engine
//! errors, and every chunked path under a tiny binding cap.

use bitnet_tests::random_normal;
use bitnet_wgpu::cpu_ref;
use bitnet_wgpu::{DType, Engine, Error};

use crate::support::{
    assert_acts_eq, assert_bits_eq, assert_ternary_eq, check_acts, check_linear, check_weights,
    chunked_engine, engine, plain_engine,
};

#[test]
fn resident_tensor_ops_chain_without_read_back() {
    let cpu = Engine::cpu();
    for (name, e) in [
        ("default", engine()),
        ("plain", plain_engine()),
        ("cpu", &cpu),
    ] {
        let (m, k, n) = (7, 300, 45);
        let (w, x) = (
            random_normal(31, n * k, 0.02),
            random_normal(32, m * k, 1.0),
        );
        let want_w = cpu_ref::quantize_weights(&w, n, k).unwrap();
        let want_x = cpu_ref::quantize_activations(&x, m, k).unwrap();
        let want_y = cpu_ref::bitlinear(&x, m, &want_w).unwrap();
        let want_acc = cpu_ref::bitlinear_accumulate(&want_x, &want_w).unwrap();
        // Everything below is recorded on the device; the first read is the only sync.
        let wq = e
            .quantize_weights_tensor(&e.upload_f32(&w, &[n, k]).unwrap())
            .unwrap();
        let x_t = e.upload_f32(&x, &[m, k]).unwrap();
        let xq = e.quantize_activations_tensor(&x_t).unwrap();
        let y_from_f32 = e.bitlinear_tensor(&x_t, &wq).unwrap();
        let y_from_q = e.bitlinear_tensor(&xq, &wq).unwrap();
        // Weights quantized elsewhere, uploaded once and kept resident.
        let resident = e.upload_ternary(&want_w).unwrap();
        let y_resident = e.bitlinear_tensor(&xq, &resident).unwrap();
        let acc = e.bitlinear_accumulate_tensor(&xq, &resident).unwrap();
        assert_eq!(
            (wq.dtype(), wq.shape()),
            (DType::Ternary, &[n, k][..]),
            "{name}"
        );
        assert_eq!(
            (xq.dtype(), xq.shape()),
            (DType::QuantizedI8, &[m, k][..]),
            "{name}"
        );
        assert_eq!(
            (acc.dtype(), y_from_q.shape()),
            (DType::U32, &[m, n][..]),
            "{name}"
        );
        assert_ternary_eq(&wq.read_ternary().unwrap(), &want_w, name);
        assert_acts_eq(&xq.read_activations().unwrap(), &want_x, name);
        for y in [&y_from_f32, &y_from_q, &y_resident] {
            assert_bits_eq(&y.read_f32().unwrap(), &want_y, name);
        }
        let acc: Vec<i32> = acc
            .read_u32()
            .unwrap()
            .into_iter()
            .map(|v| v as i32)
            .collect();
        assert_eq!(acc, want_acc, "{name}: accumulators");
    }
}

#[test]
fn tensor_api_rejects_bad_operands() {
    let e = engine();
    let w = e
        .upload_ternary(&cpu_ref::quantize_weights(&[0.5; 12], 3, 4).unwrap())
        .unwrap();
    let x5 = e.upload_f32(&[1.0; 10], &[2, 5]).unwrap();
    let raw = e.upload_u32(&[1; 8], &[2, 4]).unwrap();
    let flat = e.upload_f32(&[1.0; 8], &[8]).unwrap();
    let other = plain_engine().upload_f32(&[1.0; 8], &[2, 4]).unwrap();
    assert!(matches!(
        e.bitlinear_tensor(&x5, &w),
        Err(Error::ShapeMismatch { .. })
    ));
    assert!(matches!(
        e.bitlinear_tensor(&raw, &w),
        Err(Error::DTypeMismatch { .. })
    ));
    assert!(matches!(
        e.bitlinear_tensor(&w, &w),
        Err(Error::DTypeMismatch { .. })
    ));
    assert!(matches!(
        e.bitlinear_tensor(&flat, &w),
        Err(Error::ShapeMismatch { .. })
    ));
    assert!(matches!(
        e.bitlinear_tensor(&other, &w),
        Err(Error::EngineMismatch { .. })
    ));
    assert!(matches!(
        e.quantize_weights_tensor(&raw),
        Err(Error::DTypeMismatch { .. })
    ));
    assert!(matches!(
        e.quantize_weights_tensor(&flat),
        Err(Error::ShapeMismatch { .. })
    ));
    assert!(matches!(
        e.quantize_activations_tensor(&other),
        Err(Error::EngineMismatch { .. })
    ));
    let xq = e.quantize_activations_tensor(&x5).unwrap();
    assert!(matches!(
        e.bitlinear_accumulate_tensor(&x5, &w),
        Err(Error::DTypeMismatch { .. })
    ));
    assert!(matches!(
        e.bitlinear_accumulate_tensor(&xq, &w),
        Err(Error::ShapeMismatch { .. })
    ));
    // Non-finite input through the tensor API: reported at the read (the sync point).
    let nan = e.upload_f32(&[1.0, f32::NAN, 2.0, 3.0], &[2, 2]).unwrap();
    let err = e
        .quantize_weights_tensor(&nan)
        .unwrap()
        .read_ternary()
        .unwrap_err();
    assert_eq!(
        err,
        Error::NonFinite {
            op: "quantize_weights",
            tensor: "w",
            index: 1
        }
    );
}

#[test]
fn chunked_paths_and_binding_limit_errors() {
    // With 64 KiB bindings: weights [300, 2560] are 3 MB of f32 and 192 KB packed, activations
    // [64, 2560] are 164 KB packed and the output [64, 300] 77 KB, so the weight sum, the pack, the
    // activation rows, BitLinear's N (GEMV and GEMM) and M (GEMM) are all split.
    let e = chunked_engine();
    let (n, k) = (300, 2560);
    let w = check_weights(e, &random_normal(41, n * k, 0.02), n, k, "chunked weights");
    for m in [3, 64] {
        let x = random_normal(42 + m as u64, m * k, 1.0);
        check_acts(e, &x, m, k, &format!("chunked activations M {m}"));
        check_linear(e, &x, m, &w, &format!("chunked bitlinear M {m}"));
    }
    // A single row larger than the binding limit cannot be split: a clear error, never output.
    let k = 20_000;
    let err = e.quantize_activations(&vec![1.0; k], 1, k).unwrap_err();
    assert!(
        matches!(
            err,
            Error::LimitExceeded {
                limit: "max_storage_buffer_binding_size",
                ..
            }
        ),
        "{err:?}"
    );
}
