//! Dynamic proof of the MSL kernels: each kernel runs on the CPU through the Metal compatibility
//! header on an emulated grid (threadgroups of real threads, real barriers, 32-lane simdgroups),
//! built with AddressSanitizer + UndefinedBehaviorSanitizer, and its outputs — codes, scales,
//! quantized activations, accumulators, outputs, non-finite flags — are compared bit for bit with
//! `bitnet-cpu-ref`. One more pass runs every kernel under ThreadSanitizer, which fails on any
//! threadgroup-memory access not ordered by a barrier. Threadgroup memory starts poisoned, as
//! uninitialized as on Metal, and a deliberately broken kernel shows that this catches a read
//! before the first write.

mod support;

use bitnet_cpu_ref::{
    Error, TernaryMatrix, bitlinear, bitlinear_accumulate, canonical_abs_sum, quantize_activations,
    quantize_weights,
};
use bitnet_kernels_msl::{ABS_SUM_BLOCKS, MslKernel, OutputMode, dispatch};
use support::harness::{self, Flavor, Harness, ThreadgroupFill, f32_bytes, to_u32s};
use support::kernels::{
    FOLD, Input, msl_bitlinear, msl_quantize_activations, msl_quantize_weights,
};
use support::{data, probe};

/// The ASan/UBSan harness, or `None` when clang checks were explicitly skipped.
fn asan() -> Option<&'static Harness> {
    harness::get(Flavor::Address)
}

fn bits(v: &[f32]) -> Vec<u32> {
    v.iter().map(|x| x.to_bits()).collect()
}

/// Index and values of the first difference, for readable failures.
fn first_diff<T: PartialEq + std::fmt::Debug>(got: &[T], want: &[T]) -> String {
    assert_eq!(got.len(), want.len(), "lengths differ");
    match got.iter().zip(want).position(|(a, b)| a != b) {
        Some(i) => format!(
            "first difference at {i}: got {:?}, want {:?}",
            got[i], want[i]
        ),
        None => "equal".into(),
    }
}

#[test]
fn exact_f32_routines_match_ieee() {
    let Some(h) = asan() else { return };
    h.selftest(300_000);
}

#[test]
fn weight_quantization_matches_cpu_ref() {
    let Some(h) = asan() else { return };
    // Odd K, K not a multiple of 16, a single weight, two sum levels (N·K > 4096); random, all-zero,
    // subnormal and exact-tie weights.
    let cases = [
        (1, 1, 0),
        (3, 17, 0),
        (5, 33, 1),
        (7, 301, 0),
        (4, 64, 3),
        (6, 50, 2),
        (3, 1500, 0),
        (33, 16, 0),
        (1, 4096, 4),
        (4, 1024, 4),
        (2, 4096, 4),
    ];
    for (i, &(n, k, flavour)) in cases.iter().enumerate() {
        let w = data::weights(n, k, flavour, i as u64);
        let want = quantize_weights(&w, n, k).unwrap();
        let (packed, scale, flag_w, flag_sum) = msl_quantize_weights(h, &w, n, k);
        let at = format!("N={n} K={k} flavour {flavour}");
        assert_eq!(
            packed,
            want.words(),
            "{at}: codes, {}",
            first_diff(&packed, want.words())
        );
        assert_eq!(
            scale.to_bits(),
            want.scale().to_bits(),
            "{at}: scale {scale} vs {}",
            want.scale()
        );
        assert_eq!(
            (flag_w, flag_sum),
            (u32::MAX, u32::MAX),
            "{at}: nothing flagged"
        );
    }
}

#[test]
fn weight_quantization_flags_non_finite() {
    let Some(h) = asan() else { return };
    let mut w = data::weights(3, 40, 0, 9);
    w[77] = f32::NAN;
    w[100] = f32::INFINITY;
    let Err(Error::NonFinite { index, .. }) = quantize_weights(&w, 3, 40) else {
        panic!("cpu-ref accepted NaN")
    };
    let (_, _, flag_w, flag_sum) = msl_quantize_weights(h, &w, 3, 40);
    assert_eq!(
        (flag_w, flag_sum),
        (index as u32, 0),
        "NaN flagged at cpu-ref's index, sum flagged"
    );
    // Finite weights whose |w| sum overflows f32.
    let w = vec![3e38f32; 4];
    let Err(Error::NonFinite { tensor, .. }) = quantize_weights(&w, 2, 2) else {
        panic!("no overflow error")
    };
    assert!(tensor.contains("overflows"));
    let (_, _, flag_w, flag_sum) = msl_quantize_weights(h, &w, 2, 2);
    assert_eq!(
        (flag_w, flag_sum),
        (u32::MAX, 0),
        "overflow flagged as the sum, not as a weight"
    );
}

#[test]
fn activation_quantization_matches_cpu_ref() {
    let Some(h) = asan() else { return };
    let cases = [(1, 1), (1, 17), (3, 301), (6, 64), (7, 100), (2, 1000)];
    for (i, &(m, k)) in cases.iter().enumerate() {
        let x = data::activations(m, k, i as u64);
        let want = quantize_activations(&x, m, k).unwrap();
        let (packed, absmax, flag) = msl_quantize_activations(h, &x, m, k);
        let at = format!("M={m} K={k}");
        assert_eq!(
            packed,
            want.packed(),
            "{at}: packed values, {}",
            first_diff(&packed, &want.packed())
        );
        assert_eq!(bits(&absmax), bits(want.absmax()), "{at}: absmax");
        assert_eq!(flag, u32::MAX, "{at}: nothing flagged");
    }
    // A NaN and an infinity: the smallest flat index is flagged, as cpu-ref reports it.
    let mut x = data::activations(3, 50, 4);
    x[120] = f32::NEG_INFINITY;
    x[61] = f32::NAN;
    let Err(Error::NonFinite { index, .. }) = quantize_activations(&x, 3, 50) else {
        panic!("accepted NaN")
    };
    assert_eq!(msl_quantize_activations(h, &x, 3, 50).2, index as u32);
}

/// Cross-checks one BitLinear kernel on `cases` (M, N, K): outputs against `bitlinear` and
/// accumulators against `bitlinear_accumulate`, bit for bit.
fn check_bitlinear(gemm: bool, cases: &[(usize, usize, usize)]) {
    let Some(h) = asan() else { return };
    let kernel = if gemm { "GEMM" } else { "GEMV" };
    for (i, &(m, n, k)) in cases.iter().enumerate() {
        let w = quantize_weights(&data::weights(n, k, 0, 100 + i as u64), n, k).unwrap();
        let x = data::activations(m, k, 200 + i as u64);
        let at = format!("{kernel} M={m} N={n} K={k}");

        let mut cache = None;
        let input = Input::new(h, gemm, &x, m, k, &mut cache);
        let want_acc = bitlinear_accumulate(&quantize_activations(&x, m, k).unwrap(), &w).unwrap();
        let want_acc: Vec<u32> = want_acc.iter().map(|&a| a as u32).collect();
        let (acc, status) = msl_bitlinear(h, &input, m, &w, OutputMode::Accumulators);
        assert_eq!(
            acc,
            want_acc,
            "{at}: accumulators, {}",
            first_diff(&acc, &want_acc)
        );
        assert_eq!(status, [u32::MAX; 4], "{at}: nothing flagged");

        let want_y = bits(&bitlinear(&x, m, &w).unwrap());
        let (y, status) = msl_bitlinear(h, &input, m, &w, OutputMode::Scaled);
        assert_eq!(y, want_y, "{at}: outputs, {}", first_diff(&y, &want_y));
        assert_eq!(status, [u32::MAX; 4], "{at}: nothing flagged");
    }
}

#[test]
fn gemv_matches_cpu_ref() {
    // M = 1, odd N, odd K, K not a multiple of 16, N not a multiple of the 32 rows per group, and
    // K > 32 · 16 so lanes loop over several words, and K at the threadgroup array's limit.
    check_bitlinear(
        false,
        &[
            (1, 1, 1),
            (1, 33, 17),
            (2, 67, 301),
            (3, 31, 1000),
            (1, 40, 2049),
            (1, 3, dispatch::GEMV_MAX_K),
        ],
    );
}

#[test]
fn gemm_matches_cpu_ref() {
    // Partial tiles in M and N, odd K, an odd number of weight words per row (K step of 32 = two
    // words), M = 1, full tiles, and K long enough for many K steps with partial tiles.
    check_bitlinear(
        true,
        &[
            (1, 5, 7),
            (9, 33, 45),
            (33, 65, 301),
            (40, 17, 16),
            (32, 32, 64),
            (70, 33, 2049),
        ],
    );
}

#[test]
fn gemv_flags_non_finite_input_like_cpu_ref() {
    let Some(h) = asan() else { return };
    let w = quantize_weights(&data::weights(9, 30, 0, 5), 9, 30).unwrap();
    let mut x = data::activations(2, 30, 6);
    x[47] = f32::NAN;
    let Err(Error::NonFinite { index, .. }) = bitlinear(&x, 2, &w) else {
        panic!("accepted NaN")
    };
    let (_, status) = msl_bitlinear(h, &Input::Gemv(&x), 2, &w, OutputMode::Scaled);
    assert_eq!(status[0], index as u32);
}

#[test]
fn weights_quantized_by_msl_feed_the_msl_bitlinear_kernels() {
    // The chain the engine runs on Metal: MSL weight quantization, then both BitLinear kernels
    // reading its packed words and one-float scale buffer.
    let Some(h) = asan() else { return };
    let (m, n, k) = (5, 37, 203);
    let wf = data::weights(n, k, 0, 42);
    let (packed, scale, _, _) = msl_quantize_weights(h, &wf, n, k);
    let w = TernaryMatrix::from_packed(packed, n, k, scale).expect("valid packed weights");
    let x = data::activations(m, k, 43);
    let want = bits(&bitlinear(&x, m, &quantize_weights(&wf, n, k).unwrap()).unwrap());
    for gemm in [false, true] {
        let mut cache = None;
        let input = Input::new(h, gemm, &x, m, k, &mut cache);
        assert_eq!(
            msl_bitlinear(h, &input, m, &w, OutputMode::Scaled).0,
            want,
            "gemm = {gemm}"
        );
    }
}

#[test]
fn kernels_are_race_free_under_thread_sanitizer() {
    let Some(h) = harness::get(Flavor::Thread) else {
        return;
    };
    let (m, n, k) = (3, 40, 150);
    let wf = data::weights(n, k, 0, 7);
    let (packed, scale, _, _) = msl_quantize_weights(h, &wf, n, k);
    let w = quantize_weights(&wf, n, k).unwrap();
    assert_eq!((packed.as_slice(), scale), (w.words(), w.scale()));
    let x = data::activations(m, k, 8);
    let quantized = msl_quantize_activations(h, &x, m, k);
    assert_eq!(
        quantized.0,
        quantize_activations(&x, m, k).unwrap().packed()
    );
    let want = bits(&bitlinear(&x, m, &w).unwrap());
    assert_eq!(
        msl_bitlinear(h, &Input::Gemv(&x), m, &w, OutputMode::Scaled).0,
        want,
        "GEMV"
    );
    assert_eq!(
        msl_bitlinear(h, &Input::Gemm(&quantized), m, &w, OutputMode::Scaled).0,
        want,
        "GEMM"
    );
}

#[test]
fn threadgroup_memory_read_before_write_fails() {
    let Some(h) = asan() else { return };
    // Four blocks: a folded 2 x 2 grid whose threadgroups start with the poison bytes 0xff (f32
    // NaN), 0x7f (3.4e38), 0xa5 (-2.9e-16) and 0xff again.
    let count = 3 * 4096 + 5;
    let values = data::values(count, 12);
    let want: Vec<u32> = values
        .chunks(4096)
        .map(|block| canonical_abs_sum(block).to_bits())
        .collect();
    let d = dispatch::abs_sum_level(count, false).unwrap();
    let sums = |kernel: &MslKernel, fill| {
        let storage = vec![f32_bytes(&values), vec![0; 4 * want.len()]];
        to_u32s(&h.launch_filled(kernel, &d, storage, FOLD, fill).storage[1])
    };
    // The shipped kernel writes threadgroup memory before reading it: right with the poison.
    assert_eq!(sums(&ABS_SUM_BLOCKS, ThreadgroupFill::Poison), want);
    // The probe reads partial[t] before writing it. Zero-filled, as WGSL guarantees (and as the
    // emulation was before the poison, for a single threadgroup), it passes this very check...
    let broken = probe::abs_sum_assumes_zeroed();
    assert_eq!(sums(broken, ThreadgroupFill::Zero), want);
    // ...and poisoned, as on Metal, it fails. (The 0xa5 block may survive: its tiny garbage is
    // absorbed by the sum, which is why the pattern rotates.)
    let got = sums(broken, ThreadgroupFill::Poison);
    for block in [0, 1, 3] {
        assert_ne!(
            got[block], want[block],
            "block {block}: the poison must show the read before the write"
        );
    }
}
