//! Float tensor ops: hand-computed values, broadcasting shapes, f16 rounding, error paths.

use bitnet_cpu_ref::Error::*;
use bitnet_cpu_ref::Tensor;
use bitnet_cpu_ref::ops::*;
use half::f16;

fn t(data: &[f32], shape: &[usize]) -> Tensor<f32> {
    Tensor::new(data.to_vec(), shape).unwrap()
}

fn h(data: &[f32], shape: &[usize]) -> Tensor<f16> {
    Tensor::new(data.iter().map(|&v| f16::from_f32(v)).collect(), shape).unwrap()
}

fn close(got: &[f32], want: &[f64], tol: f64) {
    assert_eq!(got.len(), want.len());
    for (i, (&g, &w)) in got.iter().zip(want).enumerate() {
        assert!((f64::from(g) - w).abs() <= tol, "[{i}]: {g} vs {w}");
    }
}

#[test]
fn tensor_basics_and_errors() {
    let a = t(&[1.0, 2.0, 3.0, 4.0, 5.0, 6.0], &[2, 3]);
    assert_eq!((a.shape(), a.numel(), a.rank()), (&[2usize, 3][..], 6, 2));
    assert_eq!(a.clone().reshape(&[3, 2]).unwrap().shape(), &[3, 2]);
    assert!(matches!(a.clone().reshape(&[4]), Err(ShapeMismatch { .. })));
    assert_eq!(
        a.clone().into_parts(),
        (vec![1.0, 2.0, 3.0, 4.0, 5.0, 6.0], vec![2, 3])
    );
    assert_eq!(a.into_data().len(), 6);
    assert_eq!(Tensor::new(vec![7i8], &[]).unwrap().numel(), 1);
    assert!(matches!(
        Tensor::new(vec![0.0f32; 2], &[3]),
        Err(LengthMismatch {
            expected: 3,
            got: 2,
            ..
        })
    ));
    assert!(matches!(
        Tensor::<f32>::new(vec![], &[2, 0]),
        Err(ZeroDimension { .. })
    ));
    assert!(matches!(
        Tensor::<f32>::new(vec![], &[usize::MAX, 2]),
        Err(SizeOverflow { .. })
    ));
}

#[test]
fn matmul_hand_computed() {
    // [[1,2,3],[4,5,6]] · [[7,8],[9,10],[11,12]]:
    // [1·7+2·9+3·11, 1·8+2·10+3·12] = [58, 64]; [4·7+5·9+6·11, 4·8+5·10+6·12] = [139, 154].
    let a = [1.0, 2.0, 3.0, 4.0, 5.0, 6.0];
    let b = [7.0, 8.0, 9.0, 10.0, 11.0, 12.0];
    let bt = [7.0, 9.0, 11.0, 8.0, 10.0, 12.0];
    let want = [58.0, 64.0, 139.0, 154.0];
    let c = matmul(&t(&a, &[2, 3]), &t(&b, &[3, 2])).unwrap();
    assert_eq!((c.shape(), c.data()), (&[2usize, 2][..], &want[..]));
    let c = matmul_bt(&t(&a, &[2, 3]), &t(&bt, &[2, 3])).unwrap();
    assert_eq!(c.data(), &want);
    let c = matmul_f16(&h(&a, &[2, 3]), &h(&b, &[3, 2])).unwrap();
    assert_eq!(
        c.data().iter().map(|v| v.to_f32()).collect::<Vec<_>>(),
        want
    );
    let c = matmul_bt_f16(&h(&a, &[2, 3]), &h(&bt, &[2, 3])).unwrap();
    assert_eq!(
        c.data().iter().map(|v| v.to_f32()).collect::<Vec<_>>(),
        want
    );
}

#[test]
fn matmul_f16_accumulates_in_f32_and_rounds_once() {
    // [1, 1, 1] · [2048, 1, 1]^T = 2050 in f32, exactly representable in f16 (spacing 2 there).
    // An f16 accumulator would lose each +1 (2048 + 1 ties to the even 2048).
    let c = matmul_f16(
        &h(&[1.0, 1.0, 1.0], &[1, 3]),
        &h(&[2048.0, 1.0, 1.0], &[3, 1]),
    )
    .unwrap();
    assert_eq!(c.data()[0].to_f32(), 2050.0);
    // [1, 1] · [2048, 1] = 2049 in f32, a tie between f16 2048 and 2050: rounds to even, 2048.
    let c = matmul_bt_f16(&h(&[1.0, 1.0], &[1, 2]), &h(&[2048.0, 1.0], &[1, 2])).unwrap();
    assert_eq!(c.data()[0].to_f32(), 2048.0);
    // 300 · 300 = 90000 > 65504: f16 overflow is an output error.
    let e = matmul_f16(&h(&[300.0], &[1, 1]), &h(&[300.0], &[1, 1])).unwrap_err();
    assert_eq!(
        e,
        NonFinite {
            op: "matmul_f16",
            tensor: "output",
            index: 0
        }
    );
}

#[test]
fn matmul_large_matches_f64() {
    // Spans several column tasks (N > 512) and odd sizes; f32 accumulation of K = 300 products
    // of magnitude <= 1 stays within 1e-4 of the f64 result.
    let (m, k, n) = (3, 300, 1030);
    let a: Vec<f32> = (0..m * k)
        .map(|i| ((i * 37 % 101) as f32 - 50.0) / 50.0)
        .collect();
    let b: Vec<f32> = (0..k * n)
        .map(|i| ((i * 53 % 97) as f32 - 48.0) / 48.0)
        .collect();
    let c = matmul(&t(&a, &[m, k]), &t(&b, &[k, n])).unwrap();
    let want: Vec<f64> = (0..m * n)
        .map(|idx| {
            let (i, j) = (idx / n, idx % n);
            (0..k)
                .map(|kk| f64::from(a[i * k + kk]) * f64::from(b[kk * n + j]))
                .sum()
        })
        .collect();
    close(c.data(), &want, 1e-4);
    let bt: Vec<f32> = (0..n * k).map(|idx| b[(idx % k) * n + idx / k]).collect();
    assert_eq!(matmul_bt(&t(&a, &[m, k]), &t(&bt, &[n, k])).unwrap(), c);
}

#[test]
fn matmul_errors() {
    let a = t(&[1.0; 6], &[2, 3]);
    assert!(matches!(
        matmul(&a, &t(&[1.0; 6], &[2, 3])),
        Err(ShapeMismatch { op: "matmul", .. })
    ));
    // The operand with the wrong rank is named, with its own shape.
    let e = matmul(&a, &t(&[1.0; 3], &[3])).unwrap_err();
    assert_eq!(
        e,
        RankMismatch {
            op: "matmul",
            tensor: "b",
            expected: 2,
            got: vec![3]
        }
    );
    assert_eq!(e.to_string(), "matmul: b must have rank 2, got shape [3]");
    assert!(matches!(
        matmul_bt(&t(&[1.0; 6], &[1, 2, 3]), &a),
        Err(RankMismatch { tensor: "a", got, .. }) if got == [1, 2, 3]
    ));
    assert!(matches!(
        matmul_bt(&a, &t(&[1.0; 4], &[2, 2])),
        Err(ShapeMismatch {
            op: "matmul_bt",
            ..
        })
    ));
    // A K mismatch reports the shape b needs (a's K, b's N) against b's: it used to report a's
    // shape as the expected one, which reads "expected shape [1, 4], got [1, 4]" for [1, 4]².
    let e = matmul(&t(&[1.0; 4], &[1, 4]), &t(&[1.0; 4], &[1, 4])).unwrap_err();
    assert_eq!(
        e,
        ShapeMismatch {
            op: "matmul",
            what: "a is [M, K], b must be [K, N]",
            expected: vec![4, 4],
            got: vec![1, 4]
        }
    );
    assert_eq!(
        e.to_string(),
        "matmul: a is [M, K], b must be [K, N]: expected shape [4, 4], got [1, 4]"
    );
    assert_eq!(
        matmul_bt(&a, &t(&[1.0; 4], &[2, 2])),
        Err(ShapeMismatch {
            op: "matmul_bt",
            what: "a is [M, K], b must be [N, K]",
            expected: vec![2, 3],
            got: vec![2, 2]
        })
    );
    assert_eq!(
        matmul_f16(&h(&[1.0; 6], &[2, 3]), &h(&[1.0; 4], &[2, 2])),
        Err(ShapeMismatch {
            op: "matmul_f16",
            what: "a is [M, K], b must be [K, N]",
            expected: vec![3, 2],
            got: vec![2, 2]
        })
    );
    let e = matmul(&a, &t(&[1.0, 1.0, f32::NAN], &[3, 1])).unwrap_err();
    assert_eq!(
        e,
        NonFinite {
            op: "matmul",
            tensor: "b",
            index: 2
        }
    );
    let e = matmul(&t(&[1e30], &[1, 1]), &t(&[1e30], &[1, 1])).unwrap_err();
    assert_eq!(
        e,
        NonFinite {
            op: "matmul",
            tensor: "output",
            index: 0
        }
    );
    let e = matmul_f16(&h(&[1.0, f32::INFINITY], &[1, 2]), &h(&[1.0, 1.0], &[2, 1])).unwrap_err();
    assert_eq!(
        e,
        NonFinite {
            op: "matmul_f16",
            tensor: "a",
            index: 1
        }
    );
}

#[test]
fn binary_broadcasting() {
    let a = t(&[1.0, 2.0, 3.0, 4.0, 5.0, 6.0], &[2, 3]);
    // [2,3] + [3]: the row [10, 20, 30] is added to each row.
    let c = binary(BinaryOp::Add, &a, &t(&[10.0, 20.0, 30.0], &[3])).unwrap();
    assert_eq!(
        (c.shape(), c.data()),
        (&[2usize, 3][..], &[11.0, 22.0, 33.0, 14.0, 25.0, 36.0][..])
    );
    // [2,1] · [1,3]: outer product [[1·1, 1·2, 1·3], [2·1, 2·2, 2·3]].
    let c = binary(
        BinaryOp::Mul,
        &t(&[1.0, 2.0], &[2, 1]),
        &t(&[1.0, 2.0, 3.0], &[1, 3]),
    )
    .unwrap();
    assert_eq!(
        (c.shape(), c.data()),
        (&[2usize, 3][..], &[1.0, 2.0, 3.0, 2.0, 4.0, 6.0][..])
    );
    // [3] - [2,1]: [[1-10, 2-10, 3-10], [1-20, 2-20, 3-20]].
    let c = binary(
        BinaryOp::Sub,
        &t(&[1.0, 2.0, 3.0], &[3]),
        &t(&[10.0, 20.0], &[2, 1]),
    )
    .unwrap();
    assert_eq!(c.data(), &[-9.0, -8.0, -7.0, -19.0, -18.0, -17.0]);
    // [2,1,2] / [] (rank-0 scalar 2): every element halved, shape kept.
    let c = binary(
        BinaryOp::Div,
        &t(&[2.0, 4.0, 6.0, 8.0], &[2, 1, 2]),
        &t(&[2.0], &[]),
    )
    .unwrap();
    assert_eq!(
        (c.shape(), c.data()),
        (&[2usize, 1, 2][..], &[1.0, 2.0, 3.0, 4.0][..])
    );
    // [2,1,3] + [2,1]: broadcast to [2,2,3]; out[i,j,k] = a[i,0,k] + b[j,0].
    let c = binary(
        BinaryOp::Add,
        &t(&[0.0, 1.0, 2.0, 3.0, 4.0, 5.0], &[2, 1, 3]),
        &t(&[10.0, 20.0], &[2, 1]),
    )
    .unwrap();
    assert_eq!(c.shape(), &[2, 2, 3]);
    assert_eq!(
        c.data(),
        &[
            10.0, 11.0, 12.0, 20.0, 21.0, 22.0, 13.0, 14.0, 15.0, 23.0, 24.0, 25.0
        ]
    );
    assert_eq!(
        broadcast_shape(&[8, 1, 6, 1], &[7, 1, 5]),
        Some(vec![8, 7, 6, 5])
    );
    assert_eq!(broadcast_shape(&[2, 3], &[2]), None);
    let e = binary(BinaryOp::Add, &a, &t(&[1.0, 2.0], &[2])).unwrap_err();
    assert!(matches!(e, ShapeMismatch { op: "binary", .. }), "{e}");
    // Division by zero: 1 / 0 = inf at flat index 1 is an output error.
    let e = binary(BinaryOp::Div, &t(&[1.0, 1.0], &[2]), &t(&[1.0, 0.0], &[2])).unwrap_err();
    assert_eq!(
        e,
        NonFinite {
            op: "binary",
            tensor: "output",
            index: 1
        }
    );
    let e = binary(BinaryOp::Add, &a, &t(&[f32::NAN], &[1])).unwrap_err();
    assert_eq!(
        e,
        NonFinite {
            op: "binary",
            tensor: "b",
            index: 0
        }
    );
}

#[test]
fn binary_scalar_forms() {
    let a = t(&[1.0, -2.0, 4.0], &[3]);
    assert_eq!(
        binary_scalar(BinaryOp::Add, &a, 1.0).unwrap().data(),
        &[2.0, -1.0, 5.0]
    );
    assert_eq!(
        binary_scalar(BinaryOp::Sub, &a, 1.0).unwrap().data(),
        &[0.0, -3.0, 3.0]
    );
    assert_eq!(
        binary_scalar(BinaryOp::Mul, &a, -2.0).unwrap().data(),
        &[-2.0, 4.0, -8.0]
    );
    assert_eq!(
        binary_scalar(BinaryOp::Div, &a, 4.0).unwrap().data(),
        &[0.25, -0.5, 1.0]
    );
    let e = binary_scalar(BinaryOp::Div, &a, 0.0).unwrap_err();
    assert_eq!(
        e,
        NonFinite {
            op: "binary_scalar",
            tensor: "output",
            index: 0
        }
    );
    let e = binary_scalar(BinaryOp::Add, &a, f32::INFINITY).unwrap_err();
    assert_eq!(
        e,
        NonFinite {
            op: "binary_scalar",
            tensor: "s",
            index: 0
        }
    );
}
