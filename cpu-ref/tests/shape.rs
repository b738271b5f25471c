//! `slice` and `concat` against hand-written expectations: every axis of small tensors, any
//! element type, values moved bit for bit (NaN payloads included), and every error with the
//! values it names.

use bitnet_cpu_ref::Error::*;
use bitnet_cpu_ref::Tensor;
use bitnet_cpu_ref::ops::{concat, concat_shape, slice, slice_shape};

/// `[2, 3, 4]` holding 0..24 (the element at `[i, j, k]` is `12 i + 4 j + k`).
fn cube() -> Tensor<u32> {
    Tensor::new((0..24).collect(), &[2, 3, 4]).unwrap()
}

fn t<T>(data: Vec<T>, shape: &[usize]) -> Tensor<T> {
    Tensor::new(data, shape).unwrap()
}

#[test]
fn slice_takes_a_range_of_each_axis() {
    let x = cube();
    assert_eq!(
        slice(&x, 0, 1..2).unwrap(),
        t((12..24).collect(), &[1, 3, 4])
    );
    assert_eq!(
        slice(&x, 1, 1..3).unwrap(),
        t(
            vec![4, 5, 6, 7, 8, 9, 10, 11, 16, 17, 18, 19, 20, 21, 22, 23],
            &[2, 2, 4]
        )
    );
    assert_eq!(
        slice(&x, 2, 3..4).unwrap(),
        t(vec![3, 7, 11, 15, 19, 23], &[2, 3, 1])
    );
    assert_eq!(
        slice(&x, 2, 0..2).unwrap(),
        t(vec![0, 1, 4, 5, 8, 9, 12, 13, 16, 17, 20, 21], &[2, 3, 2])
    );
    // The whole axis is the tensor itself.
    assert_eq!(slice(&x, 1, 0..3).unwrap(), x);
    // Rank 1, and a single element of a rank-4 tensor.
    let v = t(vec![1.5f32, -2.0, 3.0, 4.0, 5.0], &[5]);
    assert_eq!(slice(&v, 0, 1..4).unwrap(), t(vec![-2.0, 3.0, 4.0], &[3]));
    let r4 = t((0..16u32).collect(), &[2, 2, 2, 2]);
    assert_eq!(slice(&r4, 3, 1..2).unwrap().shape(), &[2, 2, 2, 1]);
    assert_eq!(
        slice(&slice(&r4, 0, 1..2).unwrap(), 2, 0..1).unwrap(),
        t(vec![8, 9, 12, 13], &[1, 2, 1, 2])
    );
}

#[test]
fn concat_joins_along_each_axis() {
    let a = t(vec![1u32, 2, 3, 4, 5, 6], &[2, 3]);
    let b = t(vec![7u32, 8, 9], &[1, 3]);
    let c = t(vec![10u32, 11, 12, 13], &[2, 2]);
    assert_eq!(concat(&[&a, &b], 0).unwrap(), t((1..10).collect(), &[3, 3]));
    assert_eq!(
        concat(&[&a, &c, &a], 1).unwrap(),
        t(
            vec![1, 2, 3, 10, 11, 1, 2, 3, 4, 5, 6, 12, 13, 4, 5, 6],
            &[2, 8]
        )
    );
    // One input: a copy.
    assert_eq!(concat(&[&a], 1).unwrap(), a);
    // Slices along an axis concatenate back to the tensor, on every axis.
    let x = cube();
    for axis in 0..3 {
        let n = x.shape()[axis];
        let parts: Vec<_> = (0..n).map(|i| slice(&x, axis, i..i + 1).unwrap()).collect();
        let refs: Vec<_> = parts.iter().collect();
        assert_eq!(concat(&refs, axis).unwrap(), x, "axis {axis}");
        let (lo, hi) = (
            slice(&x, axis, 0..1).unwrap(),
            slice(&x, axis, 1..n).unwrap(),
        );
        assert_eq!(concat(&[&lo, &hi], axis).unwrap(), x, "axis {axis}");
    }
}

#[test]
fn values_move_bit_for_bit() {
    // Non-finite values are not errors here, and NaN payloads and -0.0 survive.
    let odd = [
        f32::from_bits(0x7fc0_1234),
        f32::NEG_INFINITY,
        -0.0,
        f32::from_bits(0xffa0_0001),
    ];
    let x = t(odd.to_vec(), &[2, 2]);
    let bits = |t: &Tensor<f32>| t.data().iter().map(|v| v.to_bits()).collect::<Vec<_>>();
    let s = slice(&x, 1, 1..2).unwrap();
    assert_eq!(bits(&s), vec![odd[1].to_bits(), odd[3].to_bits()]);
    let c = concat(&[&x, &s], 1).unwrap();
    let want = [odd[0], odd[1], odd[1], odd[2], odd[3], odd[3]];
    assert_eq!(bits(&c), want.map(f32::to_bits).to_vec());
}

#[test]
fn slice_errors_name_the_axis_and_range() {
    let x = cube();
    let bad = |axis, start, end, len| InvalidRange {
        op: "slice",
        axis,
        start,
        end,
        len,
    };
    assert_eq!(
        slice(&x, 3, 0..1),
        Err(AxisOutOfRange {
            op: "slice",
            axis: 3,
            rank: 3
        })
    );
    assert_eq!(slice(&x, 1, 2..2), Err(bad(1, 2, 2, 3)));
    #[allow(clippy::reversed_empty_ranges)]
    let reversed = 3..1;
    assert_eq!(slice(&x, 2, reversed), Err(bad(2, 3, 1, 4)));
    assert_eq!(slice(&x, 2, 2..5), Err(bad(2, 2, 5, 4)));
    assert_eq!(slice(&x, 0, 2..3), Err(bad(0, 2, 3, 2)));
    assert_eq!(
        slice(&x, 0, usize::MAX..usize::MAX),
        Err(bad(0, usize::MAX, usize::MAX, 2))
    );
    // A scalar has no axis to slice.
    let scalar = t(vec![1.0f32], &[]);
    assert_eq!(
        slice(&scalar, 0, 0..1),
        Err(AxisOutOfRange {
            op: "slice",
            axis: 0,
            rank: 0
        })
    );
    // Raw shapes are checked as Tensor::new checks them.
    assert_eq!(
        slice_shape(&[2, 0], 0, 0..1),
        Err(ZeroDimension {
            op: "slice",
            dim: "a shape entry"
        })
    );
    assert_eq!(slice_shape(&[5, 7], 1, 2..6), Ok(vec![5, 4]));
}

#[test]
fn concat_errors_name_the_shape_the_input_needs() {
    let a = t(vec![0u32; 6], &[2, 3]);
    let none: [&Tensor<u32>; 0] = [];
    assert_eq!(
        concat(&none, 0),
        Err(InvalidArgument {
            op: "concat",
            what: "xs",
            reason: "no tensors to concatenate (at least one is needed)"
        })
    );
    assert_eq!(
        concat(&[&a, &a], 2),
        Err(AxisOutOfRange {
            op: "concat",
            axis: 2,
            rank: 2
        })
    );
    let mismatch = |expected: Vec<usize>, got: Vec<usize>| ShapeMismatch {
        op: "concat",
        what: "every input needs the first input's rank and dimensions off the axis",
        expected,
        got,
    };
    // b is [4, 2]: along axis 1 it would need a's 2 rows, with its own 2 columns.
    let b = t(vec![0u32; 8], &[4, 2]);
    assert_eq!(concat(&[&a, &b], 1), Err(mismatch(vec![2, 2], vec![4, 2])));
    // Along axis 0 it would need a's 3 columns with its own 4 rows; the third input is named,
    // not the first.
    assert_eq!(
        concat(&[&a, &a, &b], 0),
        Err(mismatch(vec![4, 3], vec![4, 2]))
    );
    // Another rank.
    let r3 = t(vec![0u32; 6], &[2, 3, 1]);
    assert_eq!(
        concat(&[&a, &r3], 1),
        Err(mismatch(vec![2, 3], vec![2, 3, 1]))
    );
    let r1 = t(vec![0u32; 6], &[6]);
    assert_eq!(concat(&[&a, &r1], 1), Err(mismatch(vec![2, 3], vec![6])));
    // Sizes past usize, from shapes alone.
    let big = usize::MAX / 2 + 1;
    assert_eq!(
        concat_shape(&[&[big], &[big]], 0),
        Err(SizeOverflow {
            op: "concat",
            what: "sum of the inputs' lengths along the axis"
        })
    );
    assert_eq!(
        concat_shape(&[&[4, big / 4], &[4, big / 4]], 1),
        Err(SizeOverflow {
            op: "concat",
            what: "product of the shape"
        })
    );
    assert_eq!(
        concat_shape(&[&[2, 3], &[2, 0]], 0),
        Err(ZeroDimension {
            op: "concat",
            dim: "a shape entry"
        })
    );
    assert_eq!(concat_shape(&[&[2, 3], &[5, 3]], 0), Ok(vec![7, 3]));
}
