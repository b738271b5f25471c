//! The BitLinear kernels built as Metal builds them by default — fast math on, so the compiler may
//! assume no float operation yields NaN or infinity — still match cpu-ref bit for bit and still
//! flag outputs whose rescale overflows (clang 19 folded the old bit test of the product away).
//! Compiler: `support::harness::fast_math_compiler` (clang++-19 where installed; `.ci/run`
//! installs it).

mod support;

use bitnet_cpu_ref::{Error, TernaryMatrix, bitlinear, quantize_weights};
use bitnet_kernels_msl::OutputMode;
use support::data;
use support::harness::{self, Flavor, Harness};
use support::kernels::{Input, msl_bitlinear, msl_quantize_activations};

fn fast() -> Option<&'static Harness> {
    harness::get(Flavor::FastMath)
}

/// Activations with absmax exactly 1 per row and weights with a huge scale: the row scale
/// `(s · a) / 127` is finite, but `acc · row_scale` overflows for most outputs.
fn overflow_case(m: usize, n: usize, k: usize) -> (Vec<f32>, TernaryMatrix) {
    let w = quantize_weights(&data::weights(n, k, 0, 11), n, k).unwrap();
    let w = TernaryMatrix::from_packed(w.words().to_vec(), n, k, 3.0e38).unwrap();
    let x: Vec<f32> = (0..m * k)
        .map(|i| if i % 3 == 1 { -0.25 } else { 1.0 })
        .collect();
    (x, w)
}

#[test]
fn gemv_and_gemm_flag_overflowing_outputs_like_cpu_ref() {
    let Some(h) = fast() else { return };
    for (m, gemm, word) in [(2, false, 1), (9, true, 0)] {
        let (n, k) = (40, 64);
        let (x, w) = overflow_case(m, n, k);
        let Err(Error::NonFinite { index, .. }) = bitlinear(&x, m, &w) else {
            panic!("cpu-ref: no overflow")
        };
        let q = gemm.then(|| msl_quantize_activations(h, &x, m, k));
        let input = match &q {
            Some(q) => Input::Gemm(q),
            None => Input::Gemv(&x),
        };
        let (y, status) = msl_bitlinear(h, &input, m, &w, OutputMode::Scaled);
        let first_inf = y.iter().position(|&b| (b & 0x7f80_0000) == 0x7f80_0000);
        assert_eq!(
            first_inf,
            Some(index),
            "gemm {gemm}: overflows where cpu-ref says"
        );
        assert_eq!(
            status[word], index as u32,
            "gemm {gemm}: status {status:x?}"
        );
    }
}

#[test]
fn gemv_and_gemm_match_cpu_ref() {
    let Some(h) = fast() else { return };
    for (m, n, k, gemm) in [
        (1, 37, 301, false),
        (3, 70, 1100, false),
        (9, 65, 529, true),
    ] {
        let x = data::activations(m, k, 5);
        let w = quantize_weights(&data::weights(n, k, 0, 6), n, k).unwrap();
        let want: Vec<u32> = bitlinear(&x, m, &w)
            .unwrap()
            .iter()
            .map(|v| v.to_bits())
            .collect();
        let q = gemm.then(|| msl_quantize_activations(h, &x, m, k));
        let input = match &q {
            Some(q) => Input::Gemm(q),
            None => Input::Gemv(&x),
        };
        let (y, status) = msl_bitlinear(h, &input, m, &w, OutputMode::Scaled);
        assert_eq!(y, want, "({m}, {n}, {k}) gemm {gemm}");
        assert_eq!(status, [u32::MAX; 4]);
    }
}
