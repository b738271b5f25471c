//! `softmax_last` with `-inf` masks: masked entries are exactly 0 and the rest is the softmax of
//! the unmasked entries alone (checked against f64 and, bit for bit, against masking with
//! `f32::MIN`), over row lengths that fill the 256 summation lanes partly, exactly and several
//! times; a row entirely `-inf` is an error naming its first index; NaN and `+inf` stay errors.

use bitnet_cpu_ref::Error::NonFinite;
use bitnet_cpu_ref::Tensor;
use bitnet_cpu_ref::ops::{SOFTMAX_MASKED_ROW, softmax_last};

mod common;
use common::rnd;

const NINF: f32 = f32::NEG_INFINITY;

fn t(d: Vec<f32>, s: &[usize]) -> Tensor<f32> {
    Tensor::new(d, s).unwrap()
}

fn bits(v: &[f32]) -> Vec<u32> {
    v.iter().map(|x| x.to_bits()).collect()
}

/// `x` with every entry `masked` says is masked set to `with`.
fn masked(x: &[f32], masked: impl Fn(usize) -> bool, with: f32) -> Vec<f32> {
    x.iter()
        .enumerate()
        .map(|(i, &v)| if masked(i) { with } else { v })
        .collect()
}

#[test]
fn masked_entries_are_zero_and_the_rest_a_softmax_of_the_unmasked() {
    // [1, -inf, 2, 3] is softmax([1, 2, 3]) = [0.09003057, 0.24472847, 0.66524096] with a 0.
    let y = softmax_last(&t(vec![1.0, NINF, 2.0, 3.0], &[4])).unwrap();
    assert_eq!(y.data()[1].to_bits(), 0);
    for (got, want) in [y.data()[0], y.data()[2], y.data()[3]].iter().zip([
        0.090_030_57,
        0.244_728_47,
        0.665_240_96,
    ]) {
        assert!((got - want).abs() <= 2e-7, "{got} vs {want}");
    }

    let rows = 3;
    for len in [3usize, 7, 255, 256, 257, 1000, 5000] {
        let x = rnd(rows * len, len as u32 + 11, 20.0);
        // Row 0: the first and the last entry masked; row 1: every third; row 2: all but the
        // last three.
        let is_masked = |i: usize| {
            let (r, c) = (i / len, i % len);
            match r {
                0 => c == 0 || c == len - 1,
                1 => c % 3 == 1,
                _ => c + 3 < len,
            }
        };
        let shape = [rows, len];
        let y = softmax_last(&t(masked(&x, is_masked, NINF), &shape)).unwrap();
        // The same as masking with f32::MIN, bit for bit.
        let y_min = softmax_last(&t(masked(&x, is_masked, f32::MIN), &shape)).unwrap();
        assert_eq!(bits(y.data()), bits(y_min.data()), "L = {len}");
        for r in 0..rows {
            let unmasked: Vec<usize> = (r * len..(r + 1) * len)
                .filter(|&i| !is_masked(i))
                .collect();
            let m = unmasked
                .iter()
                .map(|&i| f64::from(x[i]))
                .fold(f64::NEG_INFINITY, f64::max);
            let z: f64 = unmasked.iter().map(|&i| (f64::from(x[i]) - m).exp()).sum();
            for (i, (&v, &out)) in x.iter().zip(y.data()).enumerate() {
                if i / len != r {
                    continue;
                }
                let got = f64::from(out);
                if is_masked(i) {
                    assert_eq!(out.to_bits(), 0, "L = {len}, masked {i}");
                } else {
                    let want = (f64::from(v) - m).exp() / z;
                    assert!(
                        (got - want).abs() <= 1e-6 * want + 1e-12,
                        "L = {len}, {i}: {got} vs {want}"
                    );
                }
            }
        }
    }
}

#[test]
fn one_unmasked_entry_takes_all_the_mass() {
    for len in [1usize, 2, 256, 257, 1000] {
        for keep in [0, len / 2, len - 1] {
            let x: Vec<f32> = (0..len)
                .map(|i| if i == keep { -123.5 } else { NINF })
                .collect();
            let y = softmax_last(&t(x, &[len])).unwrap();
            let want: Vec<f32> = (0..len).map(|i| f32::from(i == keep)).collect();
            assert_eq!(bits(y.data()), bits(&want), "L = {len}, keep {keep}");
        }
    }
}

#[test]
fn a_row_entirely_masked_is_an_error_at_its_first_index() {
    for len in [1usize, 3, 256, 300] {
        // Rows 0 and 3 fine, rows 1 and 2 masked entirely: row 1 is reported.
        let mut x = rnd(4 * len, 5, 3.0);
        x[len..3 * len].fill(NINF);
        let e = softmax_last(&t(x.clone(), &[4, len])).unwrap_err();
        let want = NonFinite {
            op: "softmax_last",
            tensor: SOFTMAX_MASKED_ROW,
            index: len,
        };
        assert_eq!(e, want, "L = {len}");
        assert_eq!(
            e.to_string(),
            format!(
                "softmax_last: non-finite value in x (every entry of the row is -inf) at flat \
                 index {len}"
            )
        );
    }
    // Rank 0: one row of one element.
    let e = softmax_last(&t(vec![NINF], &[])).unwrap_err();
    assert_eq!(
        e,
        NonFinite {
            op: "softmax_last",
            tensor: SOFTMAX_MASKED_ROW,
            index: 0
        }
    );
}

#[test]
fn nan_and_pos_inf_stay_errors_and_are_reported_first() {
    let len = 300;
    for bad in [f32::NAN, f32::INFINITY] {
        // Row 0 masked entirely and a -inf before the bad value: the bad value is reported, at
        // its own index, as an input error of "x".
        let mut x = rnd(3 * len, 9, 3.0);
        x[..len].fill(NINF);
        x[len + 4] = NINF;
        x[2 * len + 7] = bad;
        x[2 * len + 9] = bad;
        let e = softmax_last(&t(x, &[3, len])).unwrap_err();
        assert_eq!(
            e,
            NonFinite {
                op: "softmax_last",
                tensor: "x",
                index: 2 * len + 7
            },
            "{bad}"
        );
    }
}
