//! Attention errors: a NaN or infinity in q, k or v (in whole and split mode, the tiled and the
//! decode kernels, in any chunk), a score or weighted sum beyond f32's range, bad shapes, scales
//! and dtypes, and the causal mask with more queries than keys — each the very error cpu-ref returns. Uses its own engine so the
//! deferred non-finite flags stay inside this test.

use bitnet_tests::gpu_engine;
use bitnet_wgpu::cpu_ref::ops as cpu;
use bitnet_wgpu::{DType, Engine, Error};

use super::common::{cpu_error, gpu_error, host, up, values};

/// An argument case: q, k and v shapes, scale, causal.
type ArgCase = (
    &'static [usize],
    &'static [usize],
    &'static [usize],
    f32,
    bool,
);

/// q, k, v values of `[Tq, Hq, D]` and `[Tk, Hkv, D]`, with `poison` (tensor 0 = q, 1 = k,
/// 2 = v; flat index; value) written in.
fn operands(dims: [usize; 5], poison: &[(usize, usize, f32)]) -> [Vec<f32>; 3] {
    let [tq, tk, hq, hkv, d] = dims;
    let mut t = [
        values(1, tq * hq * d, -1.0, 1.0),
        values(2, tk * hkv * d, -1.0, 1.0),
        values(3, tk * hkv * d, -4.0, 4.0),
    ];
    for &(which, at, bad) in poison {
        t[which][at] = bad;
    }
    t
}

/// Asserts that the GPU engine `e` and cpu-ref fail alike on these operands.
fn same_error(e: &Engine, what: &str, dims: [usize; 5], ops: &[Vec<f32>; 3], causal: bool) {
    let [tq, tk, hq, hkv, d] = dims;
    let (qs, ks) = ([tq, hq, d], [tk, hkv, d]);
    let [q, k, v] = ops;
    let want = cpu_error(cpu::attention(
        &host(q, &qs),
        &host(k, &ks),
        &host(v, &ks),
        0.25,
        causal,
    ));
    let got = e.attention(&up(e, q, &qs), &up(e, k, &ks), &up(e, v, &ks), 0.25, causal);
    assert_eq!(gpu_error(got), want, "{what}");
}

#[test]
fn non_finite_operands_give_cpu_ref_errors() {
    let e = gpu_engine();
    let (nan, inf) = (f32::NAN, f32::INFINITY);
    // (dims [Tq, Tk, Hq, Hkv, D], causal): one chunk (whole mode), split mode (3 chunks), and
    // whole mode with 2 chunks (1024 pairs); D = 64 and 128 take the kernel's eight-lanes-per-key
    // scoring and sixteen-keys-per-step sums; the last two take the query-tiled kernel (GQA 4,
    // causal, two chunks; GQA 1 without the mask).
    let shapes = [
        ([3, 5, 4, 2, 3], true),
        ([1, 600, 8, 2, 16], true),
        ([256, 300, 4, 1, 2], false),
        ([1, 600, 4, 2, 64], true),
        ([2, 300, 2, 1, 128], false),
        ([64, 300, 16, 4, 64], true),
        ([70, 40, 1, 1, 128], false),
        // The decode kernel: records merged by the combine (GQA 4), one workgroup per (row, kv
        // head) over one chunk (GQA 8), several rows over two chunks (GQA 1, D = 32).
        ([1, 300, 8, 2, 128], true),
        ([2, 40, 16, 2, 64], true),
        ([3, 70, 4, 4, 32], false),
    ];
    for (dims, causal) in shapes {
        let [_, tk, _, hkv, d] = dims;
        let kv_last = tk * hkv * d - 1;
        // q alone; k in its last chunk; v alone; all three (q wins); k and v (k wins); an
        // infinity in v's first element and a NaN later.
        for poison in [
            vec![(0, 5, nan)],
            vec![(1, kv_last - 1, -inf)],
            vec![(2, kv_last / 2, nan)],
            vec![(0, 2, inf), (1, 0, nan), (2, 1, nan)],
            vec![(1, kv_last, nan), (2, 0, nan)],
            vec![(2, 0, inf), (2, kv_last, nan)],
        ] {
            let ops = operands(dims, &poison);
            let what = format!("{dims:?} causal {causal}: {poison:?}");
            same_error(&e, &what, dims, &ops, causal);
        }
    }
}

#[test]
fn overflowing_scores_and_sums_give_cpu_ref_errors() {
    let e = gpu_engine();
    // Whole mode, split mode, and the query-tiled kernel (128 rows of D = 32 per kv head).
    for (dims, causal) in [
        ([2, 5, 2, 1, 4], true),
        ([1, 600, 2, 1, 4], false),
        ([32, 40, 4, 1, 32], false),
    ] {
        let [_, tk, _, _, d] = dims;
        // Query 1 head 1 (flat row 12 .. 16 of [2, 2, 4]) against a key of 1e20s: its score
        // overflows, and cpu-ref reports its output row's first element. Decode: query 0 head 1;
        // tiled: query 1 head 1 (flat row 160 of [32, 4, 32]).
        let row = match dims[0] {
            2 => 12,
            1 => 4,
            _ => 160,
        };
        let mut ops = operands(dims, &[]);
        ops[0][row] = 1e20;
        ops[1][(tk - 1) * d] = 1e20;
        same_error(&e, &format!("{dims:?}: score overflow"), dims, &ops, causal);
        // Values near f32::MAX in one dimension: the weighted sum overflows there.
        let mut ops = operands(dims, &[]);
        for j in 0..tk {
            ops[2][j * d + 2] = 3e38;
        }
        same_error(&e, &format!("{dims:?}: sum overflow"), dims, &ops, causal);
    }
    // The decode kernel (D = 32, GQA 4): one workgroup over two chunks, and records. Query 0
    // head 1's row starts at flat index 32.
    for tk in [100, 600] {
        let dims = [1, tk, 4, 1, 32];
        let mut ops = operands(dims, &[]);
        ops[0][32] = 1e20;
        ops[1][(tk - 1) * 32] = 1e20;
        same_error(&e, &format!("{dims:?}: score overflow"), dims, &ops, false);
        let mut ops = operands(dims, &[]);
        for j in 0..tk {
            ops[2][j * 32 + 2] = 3e38;
        }
        same_error(&e, &format!("{dims:?}: sum overflow"), dims, &ops, false);
    }
    // After those errors the engine is clean: a good call reads back fine.
    let ops = operands([1, 3, 1, 1, 2], &[]);
    let (q, k) = (up(&e, &ops[0], &[1, 1, 2]), up(&e, &ops[1], &[3, 1, 2]));
    let y = e.attention(&q, &k, &up(&e, &ops[2], &[3, 1, 2]), 0.5, false);
    assert!(y.unwrap().read_f32().is_ok());
}

/// Split mode with causal rows of different lengths: queries 30 .. 49 of `[50, 1, 16]` attend
/// key 280 of 300, whose score (1e20 · 1e20) overflows, while rows 0 .. 29 end before it, in an
/// earlier chunk. A split workgroup past a row's last chunk must contribute nothing: cpu-ref
/// reports query 30's output row (flat 480), the first row that reaches the overflowing key.
#[test]
fn an_overflow_past_earlier_rows_last_chunk_gives_the_cpu_ref_error() {
    let e = gpu_engine();
    let (qs, ks) = ([50, 1, 16], [300, 1, 16]);
    let mut q = vec![0.0; 50 * 16];
    for i in 0..50 {
        q[i * 16] = 1e20;
    }
    let mut k = vec![0.0; 300 * 16];
    k[280 * 16] = 1e20;
    let v = values(4, 300 * 16, -4.0, 4.0);
    let want = cpu_error(cpu::attention(
        &host(&q, &qs),
        &host(&k, &ks),
        &host(&v, &ks),
        1.0,
        true,
    ));
    assert!(
        matches!(
            want,
            Error::NonFinite {
                op: "attention",
                tensor: "output",
                index: 480
            }
        ),
        "{want:?}"
    );
    let got = e.attention(
        &up(&e, &q, &qs),
        &up(&e, &k, &ks),
        &up(&e, &v, &ks),
        1.0,
        true,
    );
    assert_eq!(gpu_error(got), want);
}

#[test]
fn bad_shapes_scales_and_dtypes_give_cpu_ref_errors() {
    let e = gpu_engine();
    let v = values(9, 128, -1.0, 1.0);
    let t = |s: &[usize]| up(&e, &v[..s.iter().product::<usize>()], s);
    let h = |s: &[usize]| host(&v[..s.iter().product::<usize>()], s);
    let cases: [ArgCase; 11] = [
        (&[2, 4], &[3, 2, 4], &[3, 2, 4], 1.0, false), // q rank
        (&[1, 4, 8], &[3, 2, 6], &[3, 2, 6], 1.0, false), // D differs
        (&[1, 4, 8], &[3, 16], &[3, 16], 1.0, false),  // k rank
        (&[1, 4, 8], &[3, 2, 8], &[4, 2, 8], 1.0, false), // v is not k's shape
        (&[1, 4, 8], &[3, 2, 8], &[3, 16], 1.0, false), // v rank
        (&[1, 4, 8], &[3, 3, 8], &[3, 3, 8], 1.0, false), // Hq % Hkv
        (&[4, 1, 8], &[3, 1, 8], &[3, 1, 8], 1.0, true), // causal Tq > Tk
        (&[1, 1, 8], &[3, 1, 8], &[3, 1, 8], 0.0, false),
        (&[1, 1, 8], &[3, 1, 8], &[3, 1, 8], -0.5, false),
        (&[1, 1, 8], &[3, 1, 8], &[3, 1, 8], f32::NAN, false),
        (&[1, 1, 8], &[3, 1, 8], &[3, 1, 8], f32::INFINITY, false),
    ];
    for (qs, ks, vs, scale, causal) in cases {
        let want = cpu_error(cpu::attention(&h(qs), &h(ks), &h(vs), scale, causal));
        let got = gpu_error(e.attention(&t(qs), &t(ks), &t(vs), scale, causal));
        assert_eq!(
            got, want,
            "{qs:?} {ks:?} {vs:?} scale {scale} causal {causal}"
        );
    }
    // The expected shape of a k whose D differs is k's own [Tk, Hkv] with q's D.
    let err = gpu_error(e.attention(&t(&[1, 4, 8]), &t(&[3, 2, 6]), &t(&[3, 2, 6]), 1.0, false));
    assert!(
        format!("{err:?}").contains("expected: [3, 2, 8], got: [3, 2, 6]"),
        "{err:?}"
    );
    // Tq > Tk is valid without the mask.
    let y = e.attention(&t(&[4, 1, 8]), &t(&[3, 1, 8]), &t(&[3, 1, 8]), 1.0, false);
    assert_eq!(y.unwrap().shape(), &[4, 1, 8]);

    // Engine-level checks: dtypes (each operand), tensors of another engine.
    let (q, k) = (t(&[1, 2, 4]), t(&[3, 1, 4]));
    let wrong = e.upload_u32(&[1; 12], &[3, 1, 4]).unwrap();
    for (a, b, c) in [(&wrong, &k, &k), (&q, &wrong, &k), (&q, &k, &wrong)] {
        assert!(matches!(
            e.attention(a, b, c, 1.0, false),
            Err(Error::DTypeMismatch {
                op: "attention",
                expected: DType::F32,
                ..
            })
        ));
    }
    let other = Engine::cpu();
    let foreign = other.upload_f32(&v[..12], &[3, 1, 4]).unwrap();
    assert!(matches!(
        e.attention(&q, &foreign, &k, 1.0, false),
        Err(Error::EngineMismatch { .. })
    ));
}
