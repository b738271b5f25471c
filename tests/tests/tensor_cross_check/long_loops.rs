//! Rows and inner dimensions long enough that one invocation's loops run tens of thousands of
//! iterations: a reduction fold over a 16.8M-element row, RMSNorm's two passes, softmax's three
//! (the last with a correctly rounded division, itself a loop, per element), a matmul over
//! K = 65 536, and attention over 60 000 and 15.4M keys. lavapipe (llvmpipe) silently ends a
//! shader's loops after 65 535 iterations in all, so there these sizes returned truncated sums —
//! no error — until the engine ran them on the CPU reference (or, for attention over 60 000 keys,
//! in its split mode); on other adapters they run on the GPU. Either way they must match cpu-ref.

use bitnet_wgpu::ReduceOp;
use bitnet_wgpu::cpu_ref::ops as cpu;

use super::common::{assert_f16, assert_f32, engine, halves, host, up, values};

#[test]
fn a_reduction_over_a_very_long_row_matches_cpu_ref() {
    let e = engine();
    // 65 536 + 256 elements per invocation's fold.
    let shape = [1, (1 << 24) + (1 << 16)];
    let a = values(81, shape[1], -1.0, 1.0);
    let ga = up(e, &a, &shape);
    for (op, tol) in [(ReduceOp::Sum, "reduce_sum"), (ReduceOp::Max, "reduce_max")] {
        let want = cpu::reduce_last(op, &host(&a, &shape)).unwrap();
        let got = e.reduce_last(op, &ga).unwrap();
        assert_f32(tol, &format!("{op:?} {shape:?}"), &got, &want);
    }
}

#[test]
fn rms_norm_and_softmax_over_long_rows_match_cpu_ref() {
    let e = engine();
    // RMSNorm: two passes of 34 000 iterations each.
    let shape = [1, 34_000 * 256];
    let x = values(82, shape[1], -2.0, 2.0);
    let w = values(83, shape[1], 0.5, 1.5);
    let want = cpu::rms_norm(&host(&x, &shape), &w, 1e-5).unwrap();
    let got = e.rms_norm(&up(e, &x, &shape), &up(e, &w, &[shape[1]]), 1e-5);
    assert_f32("rms_norm", "rms_norm [1, 8 704 000]", &got.unwrap(), &want);
    // Softmax: three passes of 2 400 iterations, the last dividing once per element.
    let shape = [2, 2_400 * 256];
    let x = values(84, 2 * shape[1], -4.0, 4.0);
    let want = cpu::softmax_last(&host(&x, &shape)).unwrap();
    let got = e.softmax_last(&up(e, &x, &shape)).unwrap();
    assert_f32("softmax", "softmax [2, 614 400]", &got, &want);
}

#[test]
fn matmul_over_a_long_inner_dimension_matches_cpu_ref() {
    let e = engine();
    // 2 rows: the few-row kernel, 64 rounds of 16 chunks of 64 k (about 43 000 loop iterations
    // per invocation: on the GPU even on lavapipe). 40 rows: the 16 × 64 tile, 4 096 steps of
    // 16 k (about 115 000: on cpu-ref there).
    for m in [2, 40] {
        let (k, n) = (1 << 16, 3);
        let a = values(85, m * k, -1.0, 1.0);
        let b = values(86, k * n, -1.0, 1.0);
        let want = cpu::matmul(&host(&a, &[m, k]), &host(&b, &[k, n])).unwrap();
        let got = e.matmul(&up(e, &a, &[m, k]), &up(e, &b, &[k, n])).unwrap();
        assert_f32(
            "matmul_f32",
            &format!("matmul M = {m}, K = 65 536"),
            &got,
            &want,
        );
        let want = cpu::matmul_bt(&host(&a, &[m, k]), &host(&b, &[n, k])).unwrap();
        let got = e
            .matmul_bt(&up(e, &a, &[m, k]), &up(e, &b, &[n, k]))
            .unwrap();
        assert_f32(
            "matmul_f32",
            &format!("matmul_bt M = {m}, K = 65 536"),
            &got,
            &want,
        );
        if e.info()
            .features
            .contains(bitnet_wgpu::wgpu::Features::SHADER_F16)
        {
            // Small values so the f16 sums stay well inside f16's range.
            let (a16, b16) = (halves(&a), halves(&values(87, k * n, -0.01, 0.01)));
            let ca = bitnet_wgpu::CpuTensor::new(a16.clone(), &[m, k]).unwrap();
            let cb = bitnet_wgpu::CpuTensor::new(b16.clone(), &[k, n]).unwrap();
            let want = cpu::matmul_f16(&ca, &cb).unwrap();
            let got = e.matmul_f16(
                &e.upload_f16(&a16, &[m, k]).unwrap(),
                &e.upload_f16(&b16, &[k, n]).unwrap(),
            );
            let what = format!("matmul_f16 M = {m}, K = 65 536");
            assert_f16("matmul_f16", &what, &got.unwrap(), &want);
        }
    }
}

#[test]
fn attention_over_many_chunks_matches_cpu_ref() {
    let e = engine();
    // 1024 query rows over 60 000 keys (235 chunks; D = 1 keeps the work small): whole mode's
    // loops (about 66 000 per invocation) do not fit lavapipe, so it runs in split mode there,
    // whose invocations walk one chunk, or every chunk's record once (the combine).
    let (tq, tk) = (1024, 60_000);
    let q = values(88, tq, -1.0, 1.0);
    let k = values(89, tk, -1.0, 1.0);
    let v = values(90, tk, -2.0, 2.0);
    let (qs, ks) = ([tq, 1, 1], [tk, 1, 1]);
    let want = cpu::attention(&host(&q, &qs), &host(&k, &ks), &host(&v, &ks), 2.0, false);
    let got = e.attention(
        &up(e, &q, &qs),
        &up(e, &k, &ks),
        &up(e, &v, &ks),
        2.0,
        false,
    );
    assert_f32(
        "attention",
        "attention over 60 000 keys",
        &got.unwrap(),
        &want.unwrap(),
    );
    // One query over 15.4M keys: even the combine's walk over 60 000 records passes lavapipe's
    // limit, so there it runs on cpu-ref; elsewhere on the GPU.
    let tk = 15_400_000;
    let k = values(91, tk, -1.0, 1.0);
    let v = values(92, tk, -2.0, 2.0);
    let (qs, ks) = ([1, 1, 1], [tk, 1, 1]);
    let want = cpu::attention(
        &host(&q[..1], &qs),
        &host(&k, &ks),
        &host(&v, &ks),
        2.0,
        false,
    );
    let got = e.attention(
        &up(e, &q[..1], &qs),
        &up(e, &k, &ks),
        &up(e, &v, &ks),
        2.0,
        false,
    );
    assert_f32(
        "attention",
        "attention over 15.4M keys",
        &got.unwrap(),
        &want.unwrap(),
    );
}
