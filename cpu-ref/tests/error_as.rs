//! The `_as` twins of the BitNet ops: the same result as the plain functions, bit for bit, and
//! every error the plain function returns, converted to the caller's type through `From`.

use bitnet_cpu_ref::{
    Error, QuantizedActivations, TernaryMatrix, bitlinear, bitlinear_accumulate,
    bitlinear_accumulate_as, bitlinear_as, bitlinear_quantized, bitlinear_quantized_as,
    quantize_activations, quantize_activations_as, quantize_weights, quantize_weights_as,
};

/// A caller's own error type, wrapping cpu-ref's.
#[derive(Debug, PartialEq)]
struct Wrapped(Error);

impl From<Error> for Wrapped {
    fn from(e: Error) -> Self {
        Wrapped(e)
    }
}

/// `plain` converted the way a caller would, for comparison with the `_as` result.
fn wrapped<T>(plain: Result<T, Error>) -> Result<T, Wrapped> {
    plain.map_err(Wrapped)
}

/// Values in [-2, 2) with a few exact halves, so rounding ties are exercised.
fn floats(len: usize, seed: u32) -> Vec<f32> {
    (0..len)
        .map(|i| {
            let v = (i as u32).wrapping_mul(2_654_435_761).wrapping_add(seed) >> 8;
            (v % 4096) as f32 / 1024.0 - 2.0
        })
        .collect()
}

fn weights(n: usize, k: usize) -> TernaryMatrix {
    quantize_weights(&floats(n * k, 7), n, k).unwrap()
}

#[test]
fn quantize_weights_as_matches_and_wraps_errors() {
    for (n, k) in [(1, 1), (3, 17), (64, 256)] {
        let w = floats(n * k, 1);
        assert_eq!(
            quantize_weights_as::<Wrapped>(&w, n, k),
            wrapped(quantize_weights(&w, n, k))
        );
    }
    let mut bad = floats(12, 2);
    bad[5] = f32::NAN;
    for (w, n, k) in [(&bad[..], 3, 4), (&bad[..11], 3, 4), (&bad[..0], 0, 4)] {
        let e = quantize_weights_as::<Wrapped>(w, n, k).unwrap_err();
        assert_eq!(Err(e), wrapped(quantize_weights(w, n, k)));
    }
    let huge = [f32::MAX; 4];
    let e = quantize_weights_as::<Wrapped>(&huge, 2, 2).unwrap_err();
    assert_eq!(Err(e), wrapped(quantize_weights(&huge, 2, 2)));
}

#[test]
fn quantize_activations_as_matches_and_wraps_errors() {
    for (m, k) in [(1, 1), (1, 256), (5, 33)] {
        let x = floats(m * k, 3);
        let got: Result<QuantizedActivations, Wrapped> = quantize_activations_as(&x, m, k);
        assert_eq!(got, wrapped(quantize_activations(&x, m, k)));
    }
    let mut bad = floats(8, 4);
    bad[6] = f32::INFINITY;
    for (x, m, k) in [(&bad[..], 2, 4), (&bad[..7], 2, 4), (&bad[..], 2, 0)] {
        let e = quantize_activations_as::<Wrapped>(x, m, k).unwrap_err();
        assert_eq!(Err(e), wrapped(quantize_activations(x, m, k)));
    }
}

#[test]
fn bitlinear_as_matches_and_wraps_errors() {
    let w = weights(9, 40);
    for m in [1, 2, 7] {
        let x = floats(m * 40, 5);
        assert_eq!(
            bitlinear_as::<Wrapped>(&x, m, &w),
            wrapped(bitlinear(&x, m, &w))
        );
    }
    let mut bad = floats(80, 6);
    bad[41] = f32::NAN;
    for (x, m) in [(&bad[..], 2), (&bad[..79], 2), (&bad[..0], 0)] {
        let e = bitlinear_as::<Wrapped>(x, m, &w).unwrap_err();
        assert_eq!(Err(e), wrapped(bitlinear(x, m, &w)));
    }
    // An output that overflows f32 in the rescale.
    let big = TernaryMatrix::from_i8(&[1; 4], 1, 4, 1e30).unwrap();
    let x = [1e30f32; 4];
    let e = bitlinear_as::<Wrapped>(&x, 1, &big).unwrap_err();
    assert_eq!(Err(e), wrapped(bitlinear(&x, 1, &big)));
}

#[test]
fn quantized_bitlinear_as_match_and_wrap_errors() {
    let w = weights(9, 40);
    for m in [1, 3] {
        let xq = quantize_activations(&floats(m * 40, 8), m, 40).unwrap();
        assert_eq!(
            bitlinear_quantized_as::<Wrapped>(&xq, &w),
            wrapped(bitlinear_quantized(&xq, &w))
        );
        assert_eq!(
            bitlinear_accumulate_as::<Wrapped>(&xq, &w),
            wrapped(bitlinear_accumulate(&xq, &w))
        );
    }
    // Activations whose K differs from the weights'.
    let xq = quantize_activations(&floats(39, 9), 1, 39).unwrap();
    let e = bitlinear_quantized_as::<Wrapped>(&xq, &w).unwrap_err();
    assert_eq!(Err(e), wrapped(bitlinear_quantized(&xq, &w)));
    let e = bitlinear_accumulate_as::<Wrapped>(&xq, &w).unwrap_err();
    assert_eq!(Err(e), wrapped(bitlinear_accumulate(&xq, &w)));
}
