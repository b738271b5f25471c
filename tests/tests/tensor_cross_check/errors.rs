//! Errors: a NaN or infinity in any input, and an output that overflows, give the GPU engine the
//! very error cpu-ref returns (same op, tensor and first flat index); so do bad shapes and
//! arguments. Uses its own engine so the deferred non-finite flags stay inside this test.

use bitnet_tests::gpu_engine;
use bitnet_wgpu::cpu_ref::ops as cpu;
use bitnet_wgpu::{BinaryOp, CpuTensor, DType, Engine, Error, ReduceOp, UnaryOp};

use super::common::{cpu_error, gpu_error, halves, host, up, values};

/// `v` with `bad` written at `at`.
fn poisoned(mut v: Vec<f32>, at: usize, bad: f32) -> Vec<f32> {
    v[at] = bad;
    v
}

/// One binary error case: op, a's values and shape, b's values and shape.
type BinaryCase = (
    BinaryOp,
    Vec<f32>,
    &'static [usize],
    Vec<f32>,
    &'static [usize],
);

fn same(what: &str, gpu: Error, cpu: Error) {
    assert_eq!(gpu, cpu, "{what}: GPU and cpu-ref errors differ");
}

#[test]
fn non_finite_inputs_and_outputs_give_cpu_ref_errors() {
    let e = gpu_engine();
    let nan = f32::NAN;
    let inf = f32::INFINITY;
    let (m, k, n) = (3, 37, 70);
    let a = values(1, m * k, -1.0, 1.0);
    let b = values(2, k * n, -1.0, 1.0);

    // matmul: NaN in a (row 2), inf in b, both (a reported first), and an overflowing output.
    for (pa, pb) in [
        (Some((80, nan)), None),
        (None, Some((2000, -inf))),
        (Some((40, inf)), Some((5, nan))),
    ] {
        let a = pa.map_or(a.clone(), |(i, v)| poisoned(a.clone(), i, v));
        let b = pb.map_or(b.clone(), |(i, v)| poisoned(b.clone(), i, v));
        let want = cpu_error(cpu::matmul(&host(&a, &[m, k]), &host(&b, &[k, n])));
        same(
            "matmul",
            gpu_error(e.matmul(&up(&e, &a, &[m, k]), &up(&e, &b, &[k, n]))),
            want,
        );
        let want = cpu_error(cpu::matmul_bt(&host(&a, &[m, k]), &host(&b, &[n, k])));
        same(
            "matmul_bt",
            gpu_error(e.matmul_bt(&up(&e, &a, &[m, k]), &up(&e, &b, &[n, k]))),
            want,
        );
    }
    // Row 1 of a is all 3e38 and b all ones: every sum of row 1 overflows (first at index 70).
    let big: Vec<f32> = (0..m * k)
        .map(|i| if i / k == 1 { 3e38 } else { a[i] })
        .collect();
    let ones = vec![1.0; k * n];
    let want = cpu_error(cpu::matmul(&host(&big, &[m, k]), &host(&ones, &[k, n])));
    same(
        "matmul overflow",
        gpu_error(e.matmul(&up(&e, &big, &[m, k]), &up(&e, &ones, &[k, n]))),
        want,
    );

    // matmul_f16: an input infinity, and a finite f32 result beyond the f16 range (37 · 300²).
    if e.info()
        .features
        .contains(bitnet_wgpu::wgpu::Features::SHADER_F16)
    {
        for (a16, b16) in [
            (halves(&poisoned(a.clone(), 7, inf)), halves(&b)),
            (halves(&vec![300.0; m * k]), halves(&vec![300.0; k * n])),
        ] {
            let want = cpu_error(cpu::matmul_f16(
                &CpuTensor::new(a16.clone(), &[m, k]).unwrap(),
                &CpuTensor::new(b16.clone(), &[k, n]).unwrap(),
            ));
            let got = e.matmul_f16(
                &e.upload_f16(&a16, &[m, k]).unwrap(),
                &e.upload_f16(&b16, &[k, n]).unwrap(),
            );
            same("matmul_f16", gpu_error(got), want);
        }
    }

    // binary: NaN in a broadcast operand, inf in b, overflow, division by zero.
    let x = values(3, 24, 0.5, 2.0);
    let cases: [BinaryCase; 4] = [
        (
            BinaryOp::Add,
            poisoned(x[..6].to_vec(), 4, nan),
            &[2, 1, 3],
            x.clone(),
            &[2, 4, 3],
        ),
        (
            BinaryOp::Sub,
            x.clone(),
            &[2, 4, 3],
            poisoned(x[..3].to_vec(), 1, -inf),
            &[3],
        ),
        (
            BinaryOp::Mul,
            poisoned(x.clone(), 13, 3e38),
            &[24],
            vec![2.0],
            &[1],
        ),
        (
            BinaryOp::Div,
            x.clone(),
            &[4, 6],
            poisoned(x[..6].to_vec(), 5, 0.0),
            &[6],
        ),
    ];
    for (op, va, sa, vb, sb) in cases {
        let want = cpu_error(cpu::binary(op, &host(&va, sa), &host(&vb, sb)));
        same(
            &format!("binary {op:?}"),
            gpu_error(e.binary(op, &up(&e, &va, sa), &up(&e, &vb, sb))),
            want,
        );
    }
    // binary_scalar: bad tensor, bad scalar, both (tensor first), division by zero.
    for (va, s, op) in [
        (poisoned(x.clone(), 9, nan), 1.0, BinaryOp::Add),
        (x.clone(), inf, BinaryOp::Mul),
        (poisoned(x.clone(), 3, -inf), nan, BinaryOp::Sub),
        (x.clone(), 0.0, BinaryOp::Div),
    ] {
        let want = cpu_error(cpu::binary_scalar(op, &host(&va, &[24]), s));
        same(
            "binary_scalar",
            gpu_error(e.binary_scalar(op, &up(&e, &va, &[24]), s)),
            want,
        );
    }

    // unary: bad input, exp overflow, relu² overflow.
    for (va, op) in [
        (poisoned(x.clone(), 20, nan), UnaryOp::Gelu),
        (poisoned(x.clone(), 11, 89.0), UnaryOp::Exp),
        (poisoned(x.clone(), 2, 2e19), UnaryOp::Relu2),
    ] {
        let want = cpu_error(cpu::unary(op, &host(&va, &[4, 6])));
        same(
            &format!("unary {op:?}"),
            gpu_error(e.unary(op, &up(&e, &va, &[4, 6]))),
            want,
        );
    }

    // reduce_last: bad input (max), sum overflow.
    for (va, op) in [
        (poisoned(x.clone(), 17, -inf), ReduceOp::Max),
        (
            poisoned(poisoned(x.clone(), 6, 3e38), 7, 3e38),
            ReduceOp::Sum,
        ),
    ] {
        let want = cpu_error(cpu::reduce_last(op, &host(&va, &[4, 6])));
        same(
            &format!("reduce {op:?}"),
            gpu_error(e.reduce_last(op, &up(&e, &va, &[4, 6]))),
            want,
        );
    }

    // rms_norm: bad x, bad weight, sum-of-squares overflow (row 2), zero row with eps = 0.
    let w = values(4, 6, 0.5, 1.5);
    for (vx, vw, eps) in [
        (poisoned(x.clone(), 8, nan), w.clone(), 1e-5),
        (x.clone(), poisoned(w.clone(), 3, inf), 1e-5),
        (poisoned(x.clone(), 14, 2e19), w.clone(), 1e-5),
        ([vec![0.0; 6], x[6..].to_vec()].concat(), w.clone(), 0.0),
    ] {
        let want = cpu_error(cpu::rms_norm(&host(&vx, &[4, 6]), &vw, eps));
        same(
            "rms_norm",
            gpu_error(e.rms_norm(&up(&e, &vx, &[4, 6]), &up(&e, &vw, &[6]), eps)),
            want,
        );
    }

    // softmax and rope: bad input.
    let vx = poisoned(x.clone(), 19, inf);
    let want = cpu_error(cpu::softmax_last(&host(&vx, &[4, 6])));
    same(
        "softmax_last",
        gpu_error(e.softmax_last(&up(&e, &vx, &[4, 6]))),
        want,
    );
    let pos = [0u32, 5];
    let want = cpu_error(cpu::rope(&host(&vx, &[2, 3, 4]), &pos, 10_000.0));
    let gp = e.upload_u32(&pos, &[2]).unwrap();
    same(
        "rope",
        gpu_error(e.rope(&up(&e, &vx, &[2, 3, 4]), &gp, 10_000.0)),
        want,
    );

    // After all those errors the engine is clean: a good op reads back fine.
    let ok = e
        .binary(BinaryOp::Add, &up(&e, &x, &[24]), &up(&e, &x, &[24]))
        .unwrap();
    assert_eq!(
        ok.read_f32().unwrap(),
        x.iter().map(|v| v + v).collect::<Vec<_>>()
    );
}

#[test]
fn bad_shapes_and_arguments_give_cpu_ref_errors() {
    let e = gpu_engine();
    let v = values(9, 24, -1.0, 1.0);
    let t = |shape: &[usize]| up(&e, &v[..shape.iter().product::<usize>()], shape);
    let h = |shape: &[usize]| host(&v[..shape.iter().product::<usize>()], shape);

    same(
        "matmul K",
        gpu_error(e.matmul(&t(&[2, 3]), &t(&[4, 2]))),
        cpu_error(cpu::matmul(&h(&[2, 3]), &h(&[4, 2]))),
    );
    // The decode example's slip: a [1, K] query times itself.
    let k_err = gpu_error(e.matmul(&t(&[1, 4]), &t(&[1, 4])));
    assert!(
        format!("{k_err:?}").contains("expected: [4, 4], got: [1, 4]"),
        "{k_err:?}"
    );
    same(
        "matmul K of a row",
        k_err,
        cpu_error(cpu::matmul(&h(&[1, 4]), &h(&[1, 4]))),
    );
    same(
        "matmul rank",
        gpu_error(e.matmul(&t(&[24]), &t(&[24]))),
        cpu_error(cpu::matmul(&h(&[24]), &h(&[24]))),
    );
    // The operand with the wrong rank is named with its own shape (was: a's shape as the
    // "expected" one).
    let rank_err = gpu_error(e.matmul_bt(&t(&[2, 3]), &t(&[3])));
    assert_eq!(
        rank_err.to_string(),
        "matmul_bt: b must have rank 2, got shape [3]"
    );
    same(
        "matmul_bt rank of b",
        rank_err,
        cpu_error(cpu::matmul_bt(&h(&[2, 3]), &h(&[3]))),
    );
    same(
        "matmul_bt K",
        gpu_error(e.matmul_bt(&t(&[2, 3]), &t(&[3, 2]))),
        cpu_error(cpu::matmul_bt(&h(&[2, 3]), &h(&[3, 2]))),
    );
    let want = cpu_error(cpu::binary(BinaryOp::Add, &h(&[2, 3]), &h(&[4])));
    same(
        "binary broadcast",
        gpu_error(e.binary(BinaryOp::Add, &t(&[2, 3]), &t(&[4]))),
        want,
    );
    let want = cpu_error(cpu::rms_norm(&h(&[4, 6]), &v[..5], 1e-5));
    same(
        "rms_norm weight",
        gpu_error(e.rms_norm(&t(&[4, 6]), &t(&[5]), 1e-5)),
        want,
    );
    let want = cpu_error(cpu::rms_norm(&h(&[4, 6]), &v[..6], -1.0));
    same(
        "rms_norm eps",
        gpu_error(e.rms_norm(&t(&[4, 6]), &t(&[6]), -1.0)),
        want,
    );
    let pos = e.upload_u32(&[0, 1], &[2]).unwrap();
    let want = cpu_error(cpu::rope(&h(&[2, 3, 3]), &[0, 1], 10_000.0));
    same(
        "rope odd D",
        gpu_error(e.rope(&t(&[2, 3, 3]), &pos, 10_000.0)),
        want,
    );
    let want = cpu_error(cpu::rope(&h(&[2, 2, 6]), &[0, 1], -1.0));
    same(
        "rope theta",
        gpu_error(e.rope(&t(&[2, 2, 6]), &pos, -1.0)),
        want,
    );
    let want = cpu_error(cpu::rope(&h(&[3, 2, 4]), &[0, 1], 10_000.0));
    same(
        "rope positions",
        gpu_error(e.rope(&t(&[3, 2, 4]), &pos, 10_000.0)),
        want,
    );
    let want = cpu_error(cpu::rope(&h(&[6, 4]), &[0, 1], 10_000.0));
    same(
        "rope rank",
        gpu_error(e.rope(&t(&[6, 4]), &pos, 10_000.0)),
        want,
    );

    // Engine-level checks: dtype, empty tensors, tensors of another engine.
    let wrong = e.upload_u32(&[1, 2, 3], &[3]).unwrap();
    assert!(matches!(
        e.unary(UnaryOp::Relu, &wrong),
        Err(Error::DTypeMismatch {
            op: "unary",
            expected: DType::F32,
            ..
        })
    ));
    assert!(matches!(
        e.softmax_last(&wrong),
        Err(Error::DTypeMismatch { .. })
    ));
    assert!(matches!(
        e.upload_f32(&[], &[3, 0]),
        Err(Error::EmptyTensor { .. })
    ));
    let other = Engine::cpu();
    let foreign = other.upload_f32(&v, &[24]).unwrap();
    assert!(matches!(
        e.reduce_last(ReduceOp::Sum, &foreign),
        Err(Error::EngineMismatch { .. })
    ));
    assert!(matches!(
        other.binary(BinaryOp::Add, &foreign, &t(&[24])),
        Err(Error::EngineMismatch { .. })
    ));
}
