//! Chunking over `max_storage_buffer_binding_size`: with the binding limit capped at 16 KiB, every
//! op splits large tensors into aligned chunks and still matches cpu-ref, reports non-finite
//! values at their flat index in the full tensor, and rejects a row that cannot be split with an
//! error naming the limit.

use bitnet_tests::gpu_engine_with;
use bitnet_wgpu::cpu_ref::ops as cpu;
use bitnet_wgpu::{BinaryOp, EngineOptions, Error, ReduceOp, UnaryOp};

use super::common::{assert_f32, cpu_error, gpu_error, host, up, values};

#[test]
fn ops_chunk_over_a_small_binding_limit() {
    let e = gpu_engine_with(EngineOptions {
        max_binding_bytes: Some(16 << 10),
        ..EngineOptions::default()
    });
    // [100, 80] f32 = 32 000 bytes: three chunks of whole rows (rows of 320 bytes start at
    // 256-byte aligned offsets every 4 rows) for every op below.
    let (r, c) = (100, 80);
    let x = values(1, r * c, -2.0, 2.0);
    let y = values(2, r * c, 0.5, 2.0);
    let row = values(3, c, 0.5, 1.5);
    let (gx, gy, grow) = (up(&e, &x, &[r, c]), up(&e, &y, &[r, c]), up(&e, &row, &[c]));
    let (hx, hy, hrow) = (host(&x, &[r, c]), host(&y, &[r, c]), host(&row, &[c]));

    for op in [BinaryOp::Add, BinaryOp::Div] {
        let want = cpu::binary(op, &hx, &hy).unwrap();
        assert_f32(
            "elementwise",
            "chunked binary",
            &e.binary(op, &gx, &gy).unwrap(),
            &want,
        );
        // The broadcast operand is bound whole, the full-size one chunk by chunk.
        let want = cpu::binary(op, &hx, &hrow).unwrap();
        assert_f32(
            "elementwise",
            "chunked broadcast",
            &e.binary(op, &gx, &grow).unwrap(),
            &want,
        );
        let want = cpu::binary(op, &hrow, &hy).unwrap();
        assert_f32(
            "elementwise",
            "chunked broadcast (left)",
            &e.binary(op, &grow, &gy).unwrap(),
            &want,
        );
    }
    let want = cpu::binary_scalar(BinaryOp::Mul, &hx, -1.5).unwrap();
    assert_f32(
        "elementwise",
        "chunked scalar",
        &e.binary_scalar(BinaryOp::Mul, &gx, -1.5).unwrap(),
        &want,
    );
    let want = cpu::unary(UnaryOp::Silu, &hx).unwrap();
    assert_f32(
        "unary",
        "chunked unary",
        &e.unary(UnaryOp::Silu, &gx).unwrap(),
        &want,
    );
    for op in [ReduceOp::Sum, ReduceOp::AbsMax] {
        let want = cpu::reduce_last(op, &hx).unwrap();
        assert_f32(
            "reduce_sum",
            "chunked reduce",
            &e.reduce_last(op, &gx).unwrap(),
            &want,
        );
    }
    let want = cpu::rms_norm(&hx, &row, 1e-5).unwrap();
    assert_f32(
        "rms_norm",
        "chunked rms_norm",
        &e.rms_norm(&gx, &grow, 1e-5).unwrap(),
        &want,
    );
    let want = cpu::softmax_last(&hx).unwrap();
    assert_f32(
        "softmax",
        "chunked softmax",
        &e.softmax_last(&gx).unwrap(),
        &want,
    );
    let pos: Vec<u32> = (0..r as u32).map(|p| 3 * p + 1).collect();
    let want = cpu::rope(&host(&x, &[r, 5, 16]), &pos, 10_000.0).unwrap();
    let got = e
        .rope(
            &up(&e, &x, &[r, 5, 16]),
            &e.upload_u32(&pos, &[r]).unwrap(),
            10_000.0,
        )
        .unwrap();
    assert_f32("rope", "chunked rope", &got, &want);
    // matmul: rows of A chunked, C ([100, 9]) and B ([80, 9]) bound whole; then C ([100, 48],
    // 19 200 bytes) chunked too.
    for n in [9, 48] {
        let b = values(4, c * n, -1.0, 1.0);
        let want = cpu::matmul(&hx, &host(&b, &[c, n])).unwrap();
        assert_f32(
            "matmul_f32",
            "chunked matmul",
            &e.matmul(&gx, &up(&e, &b, &[c, n])).unwrap(),
            &want,
        );
    }
    // matmul: A ([100, 9], 3 600 bytes) bound whole while C ([100, 80]) is chunked: each chunk
    // reads its own rows of A from the whole binding (a mutant reading from its first row passed
    // the cases above, which chunk A with C).
    let (k, n) = (9, c);
    let (a, b) = (values(6, r * k, -1.0, 1.0), values(7, k * n, -1.0, 1.0));
    let want = cpu::matmul(&host(&a, &[r, k]), &host(&b, &[k, n])).unwrap();
    assert_f32(
        "matmul_f32",
        "chunked matmul, A bound whole",
        &e.matmul(&up(&e, &a, &[r, k]), &up(&e, &b, &[k, n]))
            .unwrap(),
        &want,
    );

    // matmul of few rows (the kernel that shares each output's k chunks): A [4, 2048] (8 KiB
    // rows) in chunks of 2 rows; then a NaN in the second chunk, past the first k chunk, is
    // reported at its index in the full A.
    let (m, k, n) = (4, 2048, 2);
    let (mut a, b) = (values(8, m * k, -1.0, 1.0), values(9, k * n, -1.0, 1.0));
    let want = cpu::matmul(&host(&a, &[m, k]), &host(&b, &[k, n])).unwrap();
    let got = e.matmul(&up(&e, &a, &[m, k]), &up(&e, &b, &[k, n]));
    assert_f32("matmul_f32", "chunked matmul, 4 rows", &got.unwrap(), &want);
    a[3 * k + 1500] = f32::NAN;
    let want = cpu_error(cpu::matmul(&host(&a, &[m, k]), &host(&b, &[k, n])));
    let got = gpu_error(e.matmul(&up(&e, &a, &[m, k]), &up(&e, &b, &[k, n])));
    assert_eq!(got, want, "a NaN at A[3, 1500]");

    // A NaN in the last chunk is reported at its index in the full tensor.
    let bad = {
        let mut v = x.clone();
        v[r * c - 3] = f32::NAN;
        v
    };
    let want = cpu_error(cpu::softmax_last(&host(&bad, &[r, c])));
    assert_eq!(gpu_error(e.softmax_last(&up(&e, &bad, &[r, c]))), want);
    let want = cpu_error(cpu::binary(BinaryOp::Sub, &hx, &host(&bad, &[r, c])));
    assert_eq!(
        gpu_error(e.binary(BinaryOp::Sub, &gx, &up(&e, &bad, &[r, c]))),
        want
    );
    // ... and so is one in a later chunk of RoPE's rows (index 7997 of [100, 5, 16]: the
    // launch's own index plus its chunk's first flat index).
    let mut bad = x.clone();
    bad[7997] = f32::NAN;
    let (gpos, rs) = (e.upload_u32(&pos, &[r]).unwrap(), [r, 5, 16]);
    let want = cpu_error(cpu::rope(&host(&bad, &rs), &pos, 10_000.0));
    assert!(
        matches!(want, Error::NonFinite { index: 7997, .. }),
        "{want:?}"
    );
    assert_eq!(gpu_error(e.rope(&up(&e, &bad, &rs), &gpos, 10_000.0)), want);

    // A single row above the limit cannot be chunked: a clear error naming the limit.
    let long = values(5, 2 * 5000, -1.0, 1.0);
    match e.softmax_last(&up(&e, &long, &[2, 5000])) {
        Err(Error::LimitExceeded { limit, .. }) => {
            assert_eq!(limit, "max_storage_buffer_binding_size")
        }
        other => panic!("expected LimitExceeded, got {other:?}"),
    }
    // ... and so is a broadcast operand above the limit (B of a matmul likewise).
    let wide = up(&e, &long, &[1, 10_000]);
    assert!(matches!(
        e.matmul(&up(&e, &long[..3], &[3, 1]), &wide),
        Err(Error::LimitExceeded { .. })
    ));
    let row = up(&e, &long[..5000], &[1, 5000]);
    assert!(matches!(
        e.binary(BinaryOp::Add, &up(&e, &long, &[2, 5000]), &row),
        Err(Error::LimitExceeded { .. })
    ));
}

/// Several faults in different chunks: the error is the one cpu-ref (and an unchunked launch)
/// reports — inputs before outputs, `a` before `b`, the lowest index — not the first chunk's.
#[test]
fn chunked_ops_report_faults_in_cpu_ref_order() {
    let e = gpu_engine_with(EngineOptions {
        max_binding_bytes: Some(16 << 10),
        ..EngineOptions::default()
    });
    let (r, c) = (100, 80);
    let x = values(11, r * c, 0.5, 2.0);
    let poisoned = |at: &[(usize, f32)]| {
        let mut v = x.clone();
        for &(i, bad) in at {
            v[i] = bad;
        }
        v
    };
    // Chunk 0 overflows (3e38 + 3e38); chunk 1 holds a NaN of `a`: cpu-ref reports the NaN.
    let a = poisoned(&[(0, 3e38), (7000, f32::NAN)]);
    let b = poisoned(&[(0, 3e38)]);
    let want = cpu_error(cpu::binary(
        BinaryOp::Add,
        &host(&a, &[r, c]),
        &host(&b, &[r, c]),
    ));
    let got = gpu_error(e.binary(BinaryOp::Add, &up(&e, &a, &[r, c]), &up(&e, &b, &[r, c])));
    assert_eq!(got, want, "binary");
    // Chunk 0 holds a NaN of `b`, chunk 1 one of `a`: `a` is reported.
    let (a, b) = (poisoned(&[(7000, f32::NAN)]), poisoned(&[(5, f32::NAN)]));
    let want = cpu_error(cpu::binary(
        BinaryOp::Mul,
        &host(&a, &[r, c]),
        &host(&b, &[r, c]),
    ));
    let got = gpu_error(e.binary(BinaryOp::Mul, &up(&e, &a, &[r, c]), &up(&e, &b, &[r, c])));
    assert_eq!(got, want, "binary, two inputs");
    // unary: exp overflows in chunk 0, a NaN input in chunk 1.
    let a = poisoned(&[(3, 100.0), (7000, f32::NAN)]);
    let want = cpu_error(cpu::unary(UnaryOp::Exp, &host(&a, &[r, c])));
    let got = gpu_error(e.unary(UnaryOp::Exp, &up(&e, &a, &[r, c])));
    assert_eq!(got, want, "unary");
    // reduce_last: row 0's sum overflows, a NaN in a later chunk's row.
    let a = poisoned(&[(0, 3e38), (1, 3e38), (7000, f32::NAN)]);
    let want = cpu_error(cpu::reduce_last(ReduceOp::Sum, &host(&a, &[r, c])));
    let got = gpu_error(e.reduce_last(ReduceOp::Sum, &up(&e, &a, &[r, c])));
    assert_eq!(got, want, "reduce_last");
    // reduce_last: only the last chunk's last row (99) overflows: its index in the full tensor.
    let a = poisoned(&[(99 * c, 3e38), (99 * c + 1, 3e38)]);
    let want = cpu_error(cpu::reduce_last(ReduceOp::Sum, &host(&a, &[r, c])));
    assert!(
        matches!(want, Error::NonFinite { index: 99, .. }),
        "{want:?}"
    );
    let got = gpu_error(e.reduce_last(ReduceOp::Sum, &up(&e, &a, &[r, c])));
    assert_eq!(got, want, "reduce_last, last chunk");
    // matmul: a NaN in B (read by every chunk) and one in a later chunk of A: A is reported.
    let n = 9;
    let b = poisoned(&[(4, f32::NAN)])[..c * n].to_vec();
    let a = poisoned(&[(7000, f32::NAN)]);
    let want = cpu_error(cpu::matmul(&host(&a, &[r, c]), &host(&b, &[c, n])));
    let got = gpu_error(e.matmul(&up(&e, &a, &[r, c]), &up(&e, &b, &[c, n])));
    assert_eq!(got, want, "matmul");
    // matmul: only a row of a later chunk (90) overflows, from finite inputs: the output's index
    // in the full tensor (a mutant reporting its chunk's own index passed).
    let a = poisoned(&[(90 * c, 3e38), (90 * c + 1, 3e38)]);
    let b = vec![1.0; c * n];
    let want = cpu_error(cpu::matmul(&host(&a, &[r, c]), &host(&b, &[c, n])));
    assert!(
        matches!(want, Error::NonFinite { index: 810, .. }),
        "{want:?}"
    );
    let got = gpu_error(e.matmul(&up(&e, &a, &[r, c]), &up(&e, &b, &[c, n])));
    assert_eq!(got, want, "matmul, an overflow in the last chunk");
    // copy, and an op reading the copy: NaNs in chunks 0 and 1, the lowest index reported.
    let a = poisoned(&[(7000, f32::NAN), (5, f32::NAN)]);
    let copied = e.copy(&up(&e, &a, &[r, c])).unwrap();
    let got = gpu_error(e.unary(UnaryOp::Relu, &copied));
    assert!(
        matches!(
            got,
            bitnet_wgpu::Error::NonFinite {
                op: "copy",
                index: 5,
                ..
            }
        ),
        "{got:?}"
    );
}

/// RoPE with more positions than one binding holds (x `[5000, 1, 2]` is 40 000 bytes and its
/// positions 20 000, both above the 16 KiB limit): the positions are chunked with x's rows.
#[test]
fn rope_chunks_its_positions_too() {
    let e = gpu_engine_with(EngineOptions {
        max_binding_bytes: Some(16 << 10),
        ..EngineOptions::default()
    });
    let s = 5000;
    let x = values(12, s * 2, -2.0, 2.0);
    let pos: Vec<u32> = (0..s as u32).map(|p| 7 * p + 3).collect();
    let want = cpu::rope(&host(&x, &[s, 1, 2]), &pos, 10_000.0).unwrap();
    let got = e
        .rope(
            &up(&e, &x, &[s, 1, 2]),
            &e.upload_u32(&pos, &[s]).unwrap(),
            10_000.0,
        )
        .unwrap();
    assert_f32("rope", "rope with chunked positions", &got, &want);
}

/// Attention splits q and the output by query rows (k and v are bound whole, every query reading
/// every key), in whole mode and in split mode (whose chunk records are split with them); flat
/// indices stay those of the full tensors; k above the limit is a clear error.
#[test]
fn attention_chunks_its_query_rows() {
    let e = gpu_engine_with(EngineOptions {
        max_binding_bytes: Some(16 << 10),
        ..EngineOptions::default()
    });
    // (Tq, Tk, Hq, Hkv, D): q of 25.6 KB, one chunk of keys; q of 23 KB, 480 pairs over 300
    // keys (split mode, records of 53.7 KB); 1600 pairs over 600 keys (whole mode, 3 chunks);
    // q of 51 KB at D = 32 (the query-tiled kernel, 32 rows per launch).
    for (tq, tk, hq, hkv, d) in [
        (100, 200, 4, 1, 16),
        (60, 300, 8, 1, 12),
        (200, 600, 8, 1, 4),
        (100, 120, 4, 1, 32),
    ] {
        let (qs, ks) = ([tq, hq, d], [tk, hkv, d]);
        let mut q = values(20, tq * hq * d, -1.0, 1.0);
        let k = values(21, tk * hkv * d, -1.0, 1.0);
        let v = values(22, tk * hkv * d, -2.0, 2.0);
        let want = cpu::attention(&host(&q, &qs), &host(&k, &ks), &host(&v, &ks), 0.4, true);
        let (gk, gv) = (up(&e, &k, &ks), up(&e, &v, &ks));
        let got = e.attention(&up(&e, &q, &qs), &gk, &gv, 0.4, true).unwrap();
        assert_f32("attention", "chunked attention", &got, &want.unwrap());
        // A NaN in the last row of q is reported at its index in the full tensor.
        q[tq * hq * d - 2] = f32::NAN;
        let want = cpu_error(cpu::attention(
            &host(&q, &qs),
            &host(&k, &ks),
            &host(&v, &ks),
            0.4,
            true,
        ));
        assert_eq!(
            gpu_error(e.attention(&up(&e, &q, &qs), &gk, &gv, 0.4, true)),
            want
        );
    }
    // k and v of 20 KB cannot be split: every query reads every key.
    let kv = up(&e, &values(23, 5000, -1.0, 1.0), &[1250, 1, 4]);
    let q = up(&e, &[0.5; 4], &[1, 1, 4]);
    match e.attention(&q, &kv, &kv, 0.5, false) {
        Err(Error::LimitExceeded { limit, .. }) => {
            assert_eq!(limit, "max_storage_buffer_binding_size")
        }
        other => panic!("expected LimitExceeded, got {other:?}"),
    }
}
