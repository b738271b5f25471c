//! Ops chain on the device with no read-back in between, and the CPU backend runs the same API
//! through cpu-ref.

use bitnet_tests::random_normal;
use bitnet_wgpu::cpu_ref::ops as cpu;
use bitnet_wgpu::{BinaryOp, Engine, ReduceOp, UnaryOp};

use super::common::{assert_f32, engine, host, up, values};

#[test]
fn a_decoder_like_chain_runs_on_the_device() {
    let e = engine();
    let (s, h, d) = (3, 4, 16);
    let x = values(1, s * h * d, -1.0, 1.0);
    let w = values(2, 2 * h * d * h * d, -0.1, 0.1);
    let norm_w = values(3, h * d, 0.5, 1.5);
    let pos = [0u32, 1, 2];

    // GPU: rms_norm → matmul_bt → rope → softmax → mul → relu² → reduce, one read-back at the end.
    let gx = up(e, &x, &[s, h * d]);
    let n = e.rms_norm(&gx, &up(e, &norm_w, &[h * d]), 1e-5).unwrap();
    let p = e.matmul_bt(&n, &up(e, &w, &[2 * h * d, h * d])).unwrap();
    let q = e.binary_scalar(BinaryOp::Mul, &p, 0.5).unwrap();
    // Reinterpreting a shape needs a copy through the host today, so rope runs on a fresh
    // [S, H, D] upload of the same values as the CPU chain below.
    let r = e
        .rope(
            &up(e, &x, &[s, h, d]),
            &e.upload_u32(&pos, &[s]).unwrap(),
            10_000.0,
        )
        .unwrap();
    let sm = e.softmax_last(&q).unwrap();
    let act = e
        .unary(UnaryOp::Relu2, &e.binary(BinaryOp::Sub, &q, &sm).unwrap())
        .unwrap();
    let red = e.reduce_last(ReduceOp::Sum, &act).unwrap();

    let hn = cpu::rms_norm(&host(&x, &[s, h * d]), &norm_w, 1e-5).unwrap();
    let hp = cpu::matmul_bt(&hn, &host(&w, &[2 * h * d, h * d])).unwrap();
    let hq = cpu::binary_scalar(BinaryOp::Mul, &hp, 0.5).unwrap();
    let hr = cpu::rope(&host(&x, &[s, h, d]), &pos, 10_000.0).unwrap();
    let hsm = cpu::softmax_last(&hq).unwrap();
    let hact = cpu::unary(
        UnaryOp::Relu2,
        &cpu::binary(BinaryOp::Sub, &hq, &hsm).unwrap(),
    )
    .unwrap();
    let hred = cpu::reduce_last(ReduceOp::Sum, &hact).unwrap();

    // Each stage within its own op's tolerance of the CPU chain (errors compound only mildly
    // over these few well-conditioned steps; the matmul stage dominates).
    assert_f32("rope", "chain rope", &r, &hr);
    assert_f32("matmul_f32", "chain matmul", &q, &hq);
    assert_f32("softmax", "chain softmax", &sm, &hsm);
    assert_f32("matmul_f32", "chain reduce", &red, &hred);
}

#[test]
fn attention_chains_on_the_device_after_bitlinear_and_rope() {
    let e = engine();
    // Three tokens of a layer with 8 query heads over 2 kv heads of 16: q / k / v projections
    // (BitLinear), RoPE on q and k (viewed as [T, H, D]), then causal attention, all recorded
    // without a read-back; the residual add consumes the attention output on the device too.
    let (t, hq, hkv, d) = (3, 8, 2, 16);
    let hidden = hq * d;
    let x = values(20, t * hidden, -1.0, 1.0);
    let gx = up(e, &x, &[t, hidden]);
    let proj = |seed, n| {
        let w = e.quantize_weights(&random_normal(seed, n * hidden, 0.05), n, hidden);
        let w = e.upload_ternary(&w.unwrap()).unwrap();
        e.bitlinear_tensor(&gx, &w).unwrap()
    };
    let pos = e.upload_u32(&[5, 6, 7], &[t]).unwrap();
    let q = e.rope(
        &proj(21, hidden).reshape(&[t, hq, d]).unwrap(),
        &pos,
        10_000.0,
    );
    let k = e.rope(
        &proj(22, hkv * d).reshape(&[t, hkv, d]).unwrap(),
        &pos,
        10_000.0,
    );
    let (q, k) = (q.unwrap(), k.unwrap());
    let v = proj(23, hkv * d).reshape(&[t, hkv, d]).unwrap();
    let scale = 1.0 / (d as f32).sqrt();
    let a = e.attention(&q, &k, &v, scale, true).unwrap();
    let out = e
        .binary(BinaryOp::Add, &gx, &a.reshape(&[t, hidden]).unwrap())
        .unwrap();
    // cpu-ref on the very operands the device attention read (read back afterwards).
    let h = |x: &bitnet_wgpu::Tensor| host(&x.read_f32().unwrap(), x.shape());
    let want = cpu::attention(&h(&q), &h(&k), &h(&v), scale, true).unwrap();
    assert_f32("attention", "chain attention", &a, &want);
    let a = host(&a.read_f32().unwrap(), &[t, hidden]);
    let want = cpu::binary(BinaryOp::Add, &host(&x, &[t, hidden]), &a).unwrap();
    assert_f32("elementwise", "chain residual", &out, &want);
}

#[test]
fn the_cpu_backend_runs_the_same_api_through_cpu_ref() {
    let e = Engine::cpu();
    let a = values(4, 6 * 5, -2.0, 2.0);
    let b = values(5, 5 * 3, -2.0, 2.0);
    let (ga, gb) = (up(&e, &a, &[6, 5]), up(&e, &b, &[5, 3]));
    let want = cpu::matmul(&host(&a, &[6, 5]), &host(&b, &[5, 3])).unwrap();
    assert_eq!(e.matmul(&ga, &gb).unwrap().read_f32().unwrap(), want.data());
    let want = cpu::binary(BinaryOp::Div, &host(&a, &[6, 5]), &host(&b[..5], &[5])).unwrap();
    let got = e
        .binary(BinaryOp::Div, &ga, &up(&e, &b[..5], &[5]))
        .unwrap();
    assert_eq!(got.read_f32().unwrap(), want.data());
    let want = cpu::softmax_last(&host(&a, &[6, 5])).unwrap();
    assert_eq!(
        e.softmax_last(&ga).unwrap().read_f32().unwrap(),
        want.data()
    );
    let want = cpu::reduce_last(ReduceOp::Mean, &host(&a, &[6, 5])).unwrap();
    let got = e.reduce_last(ReduceOp::Mean, &ga).unwrap();
    assert_eq!(
        (got.shape(), got.read_f32().unwrap()),
        (want.shape(), want.data().to_vec())
    );
    let bad = e.upload_f32(&[1.0, f32::NAN], &[2]).unwrap();
    let err = e.unary(UnaryOp::Exp, &bad).unwrap_err();
    assert_eq!(
        err,
        bitnet_wgpu::Error::NonFinite {
            op: "unary",
            tensor: "a",
            index: 1
        }
    );
}

#[test]
fn every_op_also_runs_with_params_in_the_uniform_arena() {
    // Devices without immediates get params through the engine's uniform arena instead.
    let e = bitnet_tests::gpu_engine_with(bitnet_wgpu::EngineOptions {
        force_uniform_params: true,
        ..bitnet_wgpu::EngineOptions::default()
    });
    let (r, c) = (5, 67);
    let x = values(11, r * c, -3.0, 3.0);
    let w = values(12, c, 0.5, 1.5);
    let (gx, gw, hx) = (up(&e, &x, &[r, c]), up(&e, &w, &[c]), host(&x, &[r, c]));
    let want = cpu::matmul_bt(&hx, &hx).unwrap();
    assert_f32(
        "matmul_f32",
        "uniform matmul_bt",
        &e.matmul_bt(&gx, &gx).unwrap(),
        &want,
    );
    if e.info()
        .features
        .contains(bitnet_wgpu::wgpu::Features::SHADER_F16)
    {
        let h16 = super::common::halves(&x);
        let t16 = e.upload_f16(&h16, &[r, c]).unwrap();
        let c16 = bitnet_wgpu::CpuTensor::new(h16, &[r, c]).unwrap();
        let want = cpu::matmul_bt_f16(&c16, &c16).unwrap();
        let got = e.matmul_bt_f16(&t16, &t16).unwrap();
        super::common::assert_f16("matmul_f16", "uniform matmul_bt_f16", &got, &want);
    }
    let want = cpu::binary(BinaryOp::Div, &hx, &host(&w, &[c])).unwrap();
    assert_f32(
        "elementwise",
        "uniform binary",
        &e.binary(BinaryOp::Div, &gx, &gw).unwrap(),
        &want,
    );
    let want = cpu::binary_scalar(BinaryOp::Sub, &hx, 0.25).unwrap();
    assert_f32(
        "elementwise",
        "uniform scalar",
        &e.binary_scalar(BinaryOp::Sub, &gx, 0.25).unwrap(),
        &want,
    );
    let want = cpu::unary(UnaryOp::Gelu, &hx).unwrap();
    assert_f32(
        "unary",
        "uniform unary",
        &e.unary(UnaryOp::Gelu, &gx).unwrap(),
        &want,
    );
    for op in [ReduceOp::Mean, ReduceOp::Max] {
        let want = cpu::reduce_last(op, &hx).unwrap();
        assert_f32(
            "reduce_sum",
            "uniform reduce",
            &e.reduce_last(op, &gx).unwrap(),
            &want,
        );
    }
    let want = cpu::rms_norm(&hx, &w, 1e-6).unwrap();
    assert_f32(
        "rms_norm",
        "uniform rms_norm",
        &e.rms_norm(&gx, &gw, 1e-6).unwrap(),
        &want,
    );
    let want = cpu::softmax_last(&hx).unwrap();
    assert_f32(
        "softmax",
        "uniform softmax",
        &e.softmax_last(&gx).unwrap(),
        &want,
    );
    let x3 = &x[..r * 4 * 16];
    let want = cpu::rope(&host(x3, &[r, 4, 16]), &[0, 3, 9, 27, 81], 10_000.0).unwrap();
    let pos = e.upload_u32(&[0, 3, 9, 27, 81], &[r]).unwrap();
    assert_f32(
        "rope",
        "uniform rope",
        &e.rope(&up(&e, x3, &[r, 4, 16]), &pos, 10_000.0).unwrap(),
        &want,
    );
    // Attention in its two modes: whole (one chunk of keys) and split (the combine kernel too).
    for tk in [20, 300] {
        let (qs, ks) = ([2, 4, 8], [tk, 2, 8]);
        let (q, k) = (&x[..64], values(13, tk * 16, -1.0, 1.0));
        let v = values(14, tk * 16, -2.0, 2.0);
        let want = cpu::attention(&host(q, &qs), &host(&k, &ks), &host(&v, &ks), 0.3, true);
        let got = e.attention(
            &up(&e, q, &qs),
            &up(&e, &k, &ks),
            &up(&e, &v, &ks),
            0.3,
            true,
        );
        assert_f32(
            "attention",
            "uniform attention",
            &got.unwrap(),
            &want.unwrap(),
        );
    }
}
