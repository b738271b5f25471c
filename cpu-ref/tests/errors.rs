//! Every error path of the BitNet API: the right variant, naming the op, what and where.

use bitnet_cpu_ref::Error::{self, *};
use bitnet_cpu_ref::{
    Isa, QuantizedActivations, TernaryMatrix, bitlinear, bitlinear_accumulate,
    bitlinear_accumulate_with_isa, bitlinear_quantized, quantize_activations,
    quantize_activations_with_isa, quantize_weights,
};

const QW: &str = "quantize_weights";
const QA: &str = "quantize_activations";

fn w22() -> TernaryMatrix {
    TernaryMatrix::from_i8(&[1, 0, -1, 1], 2, 2, 1.0).unwrap()
}

#[test]
fn quantize_weights_errors() {
    assert_eq!(
        quantize_weights(&[], 0, 4),
        Err(ZeroDimension { op: QW, dim: "N" })
    );
    assert_eq!(
        quantize_weights(&[], 4, 0),
        Err(ZeroDimension { op: QW, dim: "K" })
    );
    let e = quantize_weights(&[1.0; 5], 2, 3).unwrap_err();
    assert_eq!(
        e,
        LengthMismatch {
            op: QW,
            what: "w",
            expected: 6,
            got: 5
        }
    );
    assert_eq!(
        e.to_string(),
        "quantize_weights: w has length 5, expected 6"
    );
    let e = quantize_weights(&[], usize::MAX, 2).unwrap_err();
    assert_eq!(
        e,
        SizeOverflow {
            op: QW,
            what: "N * K"
        }
    );
    let e = quantize_weights(&[], 1, 1 << 24).unwrap_err();
    assert!(matches!(e, SizeOverflow { op: QW, .. }), "{e}");
    let e = quantize_weights(&[1.0, 2.0, f32::NAN, 4.0], 2, 2).unwrap_err();
    assert_eq!(
        e,
        NonFinite {
            op: QW,
            tensor: "w",
            index: 2
        }
    );
    let e = quantize_weights(&[1.0, f32::NEG_INFINITY, 0.0, 4.0], 2, 2).unwrap_err();
    assert_eq!(
        e,
        NonFinite {
            op: QW,
            tensor: "w",
            index: 1
        }
    );
    // Finite values whose |w| sum overflows f32: 3e38 + 3e38 = inf.
    let e = quantize_weights(&[3e38, -3e38], 1, 2).unwrap_err();
    assert!(
        matches!(
            e,
            NonFinite {
                op: QW,
                index: 0,
                ..
            }
        ),
        "{e}"
    );
}

#[test]
fn quantize_activations_errors() {
    assert_eq!(
        quantize_activations(&[], 0, 4),
        Err(ZeroDimension { op: QA, dim: "M" })
    );
    assert_eq!(
        quantize_activations(&[], 4, 0),
        Err(ZeroDimension { op: QA, dim: "K" })
    );
    let e = quantize_activations(&[1.0; 7], 2, 4).unwrap_err();
    assert_eq!(
        e,
        LengthMismatch {
            op: QA,
            what: "x",
            expected: 8,
            got: 7
        }
    );
    // The first non-finite value in flat order, here in row 1: index 1 · 3 + 1 = 4.
    let x = [1.0, 2.0, 3.0, 4.0, f32::INFINITY, f32::NAN];
    for isa in Isa::available() {
        let e = quantize_activations_with_isa(&x, 2, 3, isa).unwrap_err();
        assert_eq!(
            e,
            NonFinite {
                op: QA,
                tensor: "x",
                index: 4
            }
        );
    }
    // Unavailable SIMD levels are refused, not silently replaced.
    for isa in [Isa::Avx2, Isa::Avx512, Isa::Neon]
        .into_iter()
        .filter(|i| !i.is_available())
    {
        let e = quantize_activations_with_isa(&[1.0], 1, 1, isa).unwrap_err();
        assert!(matches!(e, InvalidArgument { what: "isa", .. }), "{e}");
    }
}

#[test]
fn bitlinear_errors() {
    let w = w22();
    let e = bitlinear(&[1.0; 3], 2, &w).unwrap_err();
    assert_eq!(
        e,
        LengthMismatch {
            op: "bitlinear",
            what: "x",
            expected: 4,
            got: 3
        }
    );
    assert_eq!(
        bitlinear(&[], 0, &w),
        Err(ZeroDimension {
            op: "bitlinear",
            dim: "M"
        })
    );
    let e = bitlinear(&[1.0, f32::NAN], 1, &w).unwrap_err();
    assert_eq!(
        e,
        NonFinite {
            op: "bitlinear",
            tensor: "x",
            index: 1
        }
    );
    // K mismatch between activations (K = 3) and weights (K = 2).
    let xq = QuantizedActivations::from_parts(vec![1, 2, 3], vec![1.0], 1, 3).unwrap();
    let e = bitlinear_quantized(&xq, &w).unwrap_err();
    assert!(
        matches!(
            e,
            LengthMismatch {
                op: "bitlinear",
                expected: 2,
                got: 3,
                ..
            }
        ),
        "{e}"
    );
    let e = bitlinear_accumulate(&xq, &w).unwrap_err();
    assert!(
        matches!(
            e,
            LengthMismatch {
                expected: 2,
                got: 3,
                ..
            }
        ),
        "{e}"
    );
    let e = bitlinear_accumulate_with_isa(&xq, &w, Isa::Scalar).unwrap_err();
    assert!(matches!(e, LengthMismatch { .. }), "{e}");
    // Scales valid on their own whose product overflows: (3e38 · 3e38) · INV_127 = inf, and
    // acc 0 · inf would be NaN — both reported as a non-finite output, first index 0.
    let big = TernaryMatrix::from_i8(&[1, 1, 0, 0], 2, 2, 3e38).unwrap();
    let xq = QuantizedActivations::from_parts(vec![1, 1], vec![3e38], 1, 2).unwrap();
    let e = bitlinear_quantized(&xq, &big).unwrap_err();
    assert!(
        matches!(
            e,
            NonFinite {
                op: "bitlinear",
                index: 0,
                ..
            }
        ),
        "{e}"
    );
}

#[test]
fn constructor_errors() {
    const FP: &str = "TernaryMatrix::from_packed";
    let ok = 0x5555_5555u32;
    assert_eq!(
        TernaryMatrix::from_packed(vec![ok], 1, 17, 1.0),
        Err(LengthMismatch {
            op: FP,
            what: "words",
            expected: 2,
            got: 1
        })
    );
    assert_eq!(
        TernaryMatrix::from_packed(vec![], 0, 16, 1.0),
        Err(ZeroDimension { op: FP, dim: "N" })
    );
    // Code 3 at k = 6 (group 1, lane 2 → bit 8·2 + 2·1 = 18) of word 1.
    let e = TernaryMatrix::from_packed(vec![ok, ok | (3 << 18)], 2, 16, 1.0).unwrap_err();
    assert_eq!(
        e,
        InvalidPackedCode {
            op: FP,
            word: 1,
            position: 6,
            code: 3
        }
    );
    // K = 3: position 3 (bit 24) is padding and must be code 1; code 2 there is rejected.
    let bad_pad = (ok & !(3 << 24)) | (2 << 24);
    let e = TernaryMatrix::from_packed(vec![bad_pad], 1, 3, 1.0).unwrap_err();
    assert_eq!(
        e,
        InvalidPackedCode {
            op: FP,
            word: 0,
            position: 3,
            code: 2
        }
    );
    // Below the quantizer's floor (1e-5): scales it cannot produce, whose products GPUs that
    // flush subnormals would turn into 0.
    for scale in [0.0, -1.0, f32::NAN, f32::INFINITY, 1e-30, 9.999e-6] {
        let e = TernaryMatrix::from_packed(vec![ok], 1, 16, scale).unwrap_err();
        assert!(
            matches!(e, InvalidArgument { what: "scale", .. }),
            "{scale}: {e}"
        );
        let e = TernaryMatrix::from_i8(&[1, 0], 1, 2, scale).unwrap_err();
        assert!(matches!(e, InvalidArgument { what: "scale", .. }), "{e}");
    }
    assert!(TernaryMatrix::from_packed(vec![ok], 1, 16, 1e-5).is_ok());
    let e = TernaryMatrix::from_i8(&[0, 2], 1, 2, 1.0).unwrap_err();
    assert!(matches!(e, InvalidArgument { what: "values", .. }), "{e}");
    let e = TernaryMatrix::from_i8(&[0, 1], 1, 3, 1.0).unwrap_err();
    assert!(
        matches!(
            e,
            LengthMismatch {
                expected: 3,
                got: 2,
                ..
            }
        ),
        "{e}"
    );

    const FA: &str = "QuantizedActivations::from_parts";
    let qa = QuantizedActivations::from_parts;
    assert_eq!(
        qa(vec![1; 3], vec![1.0], 1, 4),
        Err(LengthMismatch {
            op: FA,
            what: "values",
            expected: 4,
            got: 3
        })
    );
    assert_eq!(
        qa(vec![1; 4], vec![1.0], 2, 2),
        Err(LengthMismatch {
            op: FA,
            what: "absmax",
            expected: 2,
            got: 1
        })
    );
    assert_eq!(
        qa(vec![1; 4], vec![1.0, f32::NAN], 2, 2),
        Err(NonFinite {
            op: FA,
            tensor: "absmax",
            index: 1
        })
    );
    for absmax in [0.0, -1.0, 1e-30, 9.999e-6] {
        assert!(matches!(
            qa(vec![1; 4], vec![1.0, absmax], 2, 2),
            Err(InvalidArgument { what: "absmax", .. })
        ));
    }
    assert!(qa(vec![1; 2], vec![1e-5], 1, 2).is_ok());
    assert_eq!(
        qa(vec![], vec![], 0, 2),
        Err(ZeroDimension { op: FA, dim: "M" })
    );
}

#[test]
fn errors_are_std_errors() {
    fn takes(_: &dyn std::error::Error) {}
    let e: Error = quantize_weights(&[], 0, 1).unwrap_err();
    takes(&e);
    assert_eq!(e.to_string(), "quantize_weights: dimension N is zero");
}
