//! The kernels built as Metal builds them by default — fast math on, so the compiler may assume no
//! float parameter, value or operation is NaN or infinity — still match cpu-ref bit for bit and
//! still flag outputs whose rescale overflows (clang 19 folded the old bit test of the product
//! away); the exact_f32 routines still give IEEE results, overflow to infinity and NaN included.
//! Compiler: `support::harness::fast_math_compiler` (clang++-19 where installed; `.ci/run`
//! installs it).

mod support;

use bitnet_cpu_ref::{Error, TernaryMatrix, bitlinear, quantize_activations, quantize_weights};
use bitnet_kernels_msl::OutputMode;
use support::data;
use support::harness::{self, Flavor, Harness};
use support::kernels::{Input, msl_bitlinear, msl_quantize_activations, msl_quantize_weights};

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

/// A binary f32 operation of the host (Rust's, IEEE-754).
type BinOp = fn(f32, f32) -> f32;

/// The IEEE result of `op` on the magnitudes of `a` and `b`, as bits; NaN as the canonical quiet
/// NaN the exact_f32 routines return.
fn ieee(a: u32, b: u32, op: BinOp) -> u32 {
    let r = op(
        f32::from_bits(a & 0x7fff_ffff),
        f32::from_bits(b & 0x7fff_ffff),
    );
    if r.is_nan() { 0x7fc0_0000 } else { r.to_bits() }
}

#[test]
fn exact_f32_routines_match_ieee() {
    let Some(h) = fast() else { return };
    let records = h.exact_results(20_000);
    let ops: [(&str, BinOp); 3] = [
        ("exact_abs_add", |x, y| x + y),
        ("exact_mul", |x, y| x * y),
        ("exact_div", |x, y| x / y),
    ];
    let finite = |v: u32| v & 0x7f80_0000 != 0x7f80_0000;
    let (mut overflows, mut nan_inputs) = (0, 0);
    for r in &records {
        let [a, b] = [r[0], r[1]];
        for (i, (name, op)) in ops.iter().enumerate() {
            let want = ieee(a, b, *op);
            assert_eq!(
                r[2 + i],
                want,
                "{name}({a:#010x}, {b:#010x}): got {:#010x}, IEEE {want:#010x}",
                r[2 + i]
            );
            overflows += usize::from(finite(a) && finite(b) && want == 0x7f80_0000);
        }
        nan_inputs +=
            usize::from((a & 0x7fff_ffff) > 0x7f80_0000 || (b & 0x7fff_ffff) > 0x7f80_0000);
    }
    // The cases fast math lets a compiler get wrong were really exercised.
    assert!(overflows > 100, "{overflows} overflows to infinity");
    assert!(nan_inputs > 100, "{nan_inputs} NaN operands");
}

#[test]
fn quantization_matches_cpu_ref_and_flags_non_finite() {
    let Some(h) = fast() else { return };
    // Weights: two abs-sum levels, then a NaN weight, then finite weights whose sum overflows.
    let (n, k) = (3, 1500);
    let w = data::weights(n, k, 0, 21);
    let want = quantize_weights(&w, n, k).unwrap();
    let (packed, scale, flag_w, flag_sum) = msl_quantize_weights(h, &w, n, k);
    assert_eq!(packed, want.words());
    assert_eq!(scale.to_bits(), want.scale().to_bits());
    assert_eq!((flag_w, flag_sum), (u32::MAX, u32::MAX));
    let mut bad = w.clone();
    bad[77] = f32::NAN;
    bad[100] = f32::INFINITY;
    let (_, _, flag_w, flag_sum) = msl_quantize_weights(h, &bad, n, k);
    assert_eq!((flag_w, flag_sum), (77, 0), "NaN weight and sum flagged");
    let huge = vec![3e38f32; 4];
    let (_, scale, flag_w, flag_sum) = msl_quantize_weights(h, &huge, 2, 2);
    assert_eq!((flag_w, flag_sum), (u32::MAX, 0), "overflowing sum flagged");
    assert_eq!(scale.to_bits(), 0x7f80_0000, "s = sum / count = infinity");

    let (m, k) = (3, 301);
    let x = data::activations(m, k, 22);
    let want = quantize_activations(&x, m, k).unwrap();
    let (packed, absmax, flag) = msl_quantize_activations(h, &x, m, k);
    assert_eq!(packed, want.packed());
    let absmax: Vec<u32> = absmax.iter().map(|a| a.to_bits()).collect();
    let want_absmax: Vec<u32> = want.absmax().iter().map(|a| a.to_bits()).collect();
    assert_eq!(absmax, want_absmax);
    assert_eq!(flag, u32::MAX);
}
