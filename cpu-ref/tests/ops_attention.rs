//! `ops::attention` against an independent f64 oracle (per query and head: every score, a masked
//! softmax, the weighted sum of values; no chunks), its GQA and causal conventions, hand-computed
//! cases, and every error it reports.

use bitnet_cpu_ref::Error::*;
use bitnet_cpu_ref::Tensor;
use bitnet_cpu_ref::ops::{ATTENTION_CHUNK, attention, attention_dims};

mod common;
use common::rnd;

fn t(d: &[f32], s: &[usize]) -> Tensor<f32> {
    Tensor::new(d.to_vec(), s).unwrap()
}

/// Attention in f64 straight from the definition: query `i` of `Tq` attends keys `j` with
/// `j <= Tk - Tq + i` when causal (all keys otherwise); query head `h` uses kv head
/// `h / (Hq / Hkv)`; one softmax over all attended scores.
fn oracle(q: &[f32], k: &[f32], v: &[f32], dims: [usize; 5], scale: f32, causal: bool) -> Vec<f64> {
    let [tq, tk, hq, hkv, d] = dims;
    let mut out = vec![0.0f64; tq * hq * d];
    for i in 0..tq {
        for h in 0..hq {
            let g = h * hkv / hq;
            let keys: Vec<usize> = (0..tk).filter(|&j| !causal || j + tq <= tk + i).collect();
            let scores: Vec<f64> = keys
                .iter()
                .map(|&j| {
                    let dot: f64 = (0..d)
                        .map(|x| {
                            f64::from(q[(i * hq + h) * d + x]) * f64::from(k[(j * hkv + g) * d + x])
                        })
                        .sum();
                    dot * f64::from(scale)
                })
                .collect();
            let m = scores.iter().copied().fold(f64::NEG_INFINITY, f64::max);
            let w: Vec<f64> = scores.iter().map(|s| (s - m).exp()).collect();
            let z: f64 = w.iter().sum();
            for x in 0..d {
                out[(i * hq + h) * d + x] = keys
                    .iter()
                    .zip(&w)
                    .map(|(&j, &wj)| wj / z * f64::from(v[(j * hkv + g) * d + x]))
                    .sum();
            }
        }
    }
    out
}

#[test]
fn attention_matches_an_f64_oracle() {
    // (Tq, Tk, Hq, Hkv, D, causal): decode (Tq = 1) with short, chunk-sized and multi-chunk
    // caches, GQA ratios 1, 2 and 4, odd D, prefill (Tq = Tk), and a few queries over a cache.
    let cases = [
        (1, 1, 1, 1, 1, false),
        (1, 7, 4, 4, 3, true),
        (1, 256, 4, 1, 8, true),
        (1, 257, 2, 2, 5, false),
        (1, 700, 8, 2, 64, true),
        (3, 300, 4, 1, 16, true),
        (3, 300, 4, 2, 16, false),
        (5, 5, 2, 1, 7, true),
        (40, 40, 2, 2, 32, true),
        (300, 300, 2, 1, 8, true),
        (2, 1000, 4, 4, 128, false),
    ];
    let mut worst = 0.0f64;
    for (c, &(tq, tk, hq, hkv, d, causal)) in cases.iter().enumerate() {
        let seed = 10 * c as u32;
        let q = rnd(tq * hq * d, seed + 1, 1.0);
        let k = rnd(tk * hkv * d, seed + 2, 1.0);
        let v = rnd(tk * hkv * d, seed + 3, 4.0);
        let scale = 1.0 / (d as f32).sqrt() * 3.0; // sharper than usual: weights far from uniform
        let got = attention(
            &t(&q, &[tq, hq, d]),
            &t(&k, &[tk, hkv, d]),
            &t(&v, &[tk, hkv, d]),
            scale,
            causal,
        )
        .unwrap();
        assert_eq!(got.shape(), &[tq, hq, d]);
        let want = oracle(&q, &k, &v, [tq, tk, hq, hkv, d], scale, causal);
        for (f, (&g, &w)) in got.data().iter().zip(&want).enumerate() {
            let err = (f64::from(g) - w).abs();
            worst = worst.max(err);
            // Measured at most 7.1e-7 (|v| < 4: a few f32 roundings of such values); 5x margin.
            assert!(err <= 4e-6, "case {c} [{f}]: {g} vs {w}");
        }
    }
    assert!(
        worst > 0.0,
        "an f32 computation should differ from f64 somewhere"
    );
}

/// The in-order merge of chunks keeps the running maximum: chunk 0's scores lie near 0, chunk 1's
/// near -8 (below it: the maximum must stay chunk 0's) and chunk 2's near `level`, above chunk
/// 1's. Had the merge taken chunk 1's maximum as the running one, chunk 2 would be weighed
/// against the wrong reference (off by about `exp(8)`); the f64 oracle has no chunks to get
/// wrong.
#[test]
fn attention_merge_keeps_the_running_max_across_chunks() {
    let (tk, d) = (3 * ATTENTION_CHUNK - 68, 4);
    let q = [1.0, 0.0, 0.0, 0.0];
    let v = rnd(tk * d, 71, 4.0);
    for level in [-3.0f32, 2.0] {
        let mut k = rnd(tk * d, 72, 1.0);
        for j in 0..tk {
            k[j * d] += match j / ATTENTION_CHUNK {
                0 => 0.0,
                1 => -8.0,
                _ => level,
            };
        }
        let dims = [1, tk, 1, 1, d];
        let got = attention(
            &t(&q, &[1, 1, d]),
            &t(&k, &[tk, 1, d]),
            &t(&v, &[tk, 1, d]),
            1.0,
            false,
        )
        .unwrap();
        let want = oracle(&q, &k, &v, dims, 1.0, false);
        for (f, (&g, &w)) in got.data().iter().zip(&want).enumerate() {
            // attention_matches_an_f64_oracle's bound (|v| < 4).
            assert!(
                (f64::from(g) - w).abs() <= 4e-6,
                "level {level} [{f}]: {g} vs {w}"
            );
        }
    }
}

#[test]
fn attention_hand_computed() {
    let (q, k) = (t(&[1.0], &[1, 1, 1]), t(&[0.5, 0.5], &[2, 1, 1]));
    // Equal scores: the mean of the two values, exactly.
    let y = attention(&q, &k, &t(&[4.0, 8.0], &[2, 1, 1]), 1.0, false).unwrap();
    assert_eq!(y.data(), &[6.0]);
    // Scores 0 and ln 3 (scale 1): weights 1/4 and 3/4, so 4/4 + 3·8/4 = 7.
    let k = t(&[0.0, 3f32.ln()], &[2, 1, 1]);
    let y = attention(&q, &k, &t(&[4.0, 8.0], &[2, 1, 1]), 1.0, false).unwrap();
    assert!((y.data()[0] - 7.0).abs() < 1e-6, "{}", y.data()[0]);
    // Causal prefill of two positions: query 0 sees key 0 only (its value, exactly); query 1
    // sees both. Non-causal, query 0 sees both too.
    let q = t(&[1.0, 1.0], &[2, 1, 1]);
    let k = t(&[0.5, 0.5], &[2, 1, 1]);
    let v = t(&[4.0, 8.0], &[2, 1, 1]);
    assert_eq!(
        attention(&q, &k, &v, 1.0, true).unwrap().data(),
        &[4.0, 6.0]
    );
    assert_eq!(
        attention(&q, &k, &v, 1.0, false).unwrap().data(),
        &[6.0, 6.0]
    );
    // GQA: 4 query heads over 2 kv heads; heads 0, 1 read kv head 0 and heads 2, 3 kv head 1.
    let q = t(&[1.0; 4], &[1, 4, 1]);
    let k = t(&[0.0; 2], &[1, 2, 1]);
    let v = t(&[3.0, -5.0], &[1, 2, 1]);
    let y = attention(&q, &k, &v, 1.0, false).unwrap();
    assert_eq!(y.data(), &[3.0, 3.0, -5.0, -5.0]);
    // One key far above the others in a later chunk takes all the weight (the merge rescales the
    // earlier chunks to 0): the output is that key's value.
    let tk = 3 * ATTENTION_CHUNK;
    let mut kk = vec![0.0; tk];
    kk[600] = 200.0;
    let vv: Vec<f32> = (0..tk).map(|j| j as f32).collect();
    let y = attention(
        &t(&[1.0], &[1, 1, 1]),
        &t(&kk, &[tk, 1, 1]),
        &t(&vv, &[tk, 1, 1]),
        1.0,
        false,
    );
    assert_eq!(y.unwrap().data(), &[600.0]);
}

#[test]
fn attention_errors() {
    let x = |s: &[usize]| t(&vec![0.5; s.iter().product()], s);
    let run = |q: &[usize], k: &[usize], v: &[usize], scale: f32, causal: bool| {
        attention(&x(q), &x(k), &x(v), scale, causal).unwrap_err()
    };
    let shape = |what: &'static str, expected: &[usize], got: &[usize]| ShapeMismatch {
        op: "attention",
        what,
        expected: expected.to_vec(),
        got: got.to_vec(),
    };
    let invalid = |what| InvalidArgument {
        op: "attention",
        what,
        reason: "",
    };
    let same_kind = |got: bitnet_cpu_ref::Error, want: bitnet_cpu_ref::Error| match (&got, &want) {
        (InvalidArgument { what: a, .. }, InvalidArgument { what: b, .. }) => assert_eq!(a, b),
        _ => assert_eq!(got, want),
    };
    let k_rule = "q is [Tq, Hq, D], k must be [Tk, Hkv, D]";
    same_kind(
        run(&[2, 4], &[3, 2, 4], &[3, 2, 4], 1.0, false),
        RankMismatch {
            op: "attention",
            tensor: "q",
            expected: 3,
            got: vec![2, 4],
        },
    );
    // k's D differs from q's: expected is k's own Tk and Hkv with q's D.
    same_kind(
        run(&[1, 4, 8], &[3, 2, 6], &[3, 2, 6], 1.0, false),
        shape(k_rule, &[3, 2, 8], &[3, 2, 6]),
    );
    same_kind(
        run(&[1, 4, 8], &[3, 16], &[3, 16], 1.0, false),
        RankMismatch {
            op: "attention",
            tensor: "k",
            expected: 3,
            got: vec![3, 16],
        },
    );
    same_kind(
        run(&[1, 4, 8], &[3, 2, 8], &[4, 2, 8], 1.0, false),
        shape("v must have k's shape [Tk, Hkv, D]", &[3, 2, 8], &[4, 2, 8]),
    );
    same_kind(
        run(&[1, 4, 8], &[3, 3, 8], &[3, 3, 8], 1.0, false),
        invalid("Hkv"),
    );
    same_kind(
        run(&[4, 1, 8], &[3, 1, 8], &[3, 1, 8], 1.0, true),
        invalid("causal"),
    );
    // Tq > Tk is fine without the mask: every query attends every key.
    assert!(attention(&x(&[4, 1, 8]), &x(&[3, 1, 8]), &x(&[3, 1, 8]), 1.0, false).is_ok());
    for bad in [0.0, -0.125] {
        same_kind(
            run(&[1, 1, 8], &[3, 1, 8], &[3, 1, 8], bad, false),
            invalid("scale"),
        );
    }
    for bad in [f32::NAN, f32::INFINITY] {
        let e = run(&[1, 1, 8], &[3, 1, 8], &[3, 1, 8], bad, false);
        assert_eq!(
            e,
            NonFinite {
                op: "attention",
                tensor: "scale",
                index: 0
            }
        );
    }
    // A zero dimension (only reachable through the shape check itself: tensors have none).
    for (q, k, dim) in [
        (&[1, 1, 0][..], &[3, 1, 0][..], "D"),
        (&[1, 2, 4], &[3, 0, 4], "Hkv"),
        (&[0, 2, 4], &[3, 1, 4], "Tq"),
    ] {
        assert_eq!(
            attention_dims(q, k, k, 1.0, false).unwrap_err(),
            ZeroDimension {
                op: "attention",
                dim
            }
        );
    }

    // Non-finite q, k, v: the first flat index, q before k before v.
    let (q, k, v) = (
        rnd(2 * 4 * 3, 1, 1.0),
        rnd(5 * 2 * 3, 2, 1.0),
        rnd(5 * 2 * 3, 3, 1.0),
    );
    let poison = |mut a: Vec<f32>, at: usize| {
        a[at] = f32::NAN;
        a
    };
    let go = |q: &[f32], k: &[f32], v: &[f32]| {
        attention(
            &t(q, &[2, 4, 3]),
            &t(k, &[5, 2, 3]),
            &t(v, &[5, 2, 3]),
            0.5,
            true,
        )
        .unwrap_err()
    };
    let nf = |tensor, index| NonFinite {
        op: "attention",
        tensor,
        index,
    };
    assert_eq!(
        go(&poison(q.clone(), 17), &poison(k.clone(), 2), &v),
        nf("q", 17)
    );
    assert_eq!(
        go(&q, &poison(poison(k.clone(), 29), 8), &poison(v.clone(), 0)),
        nf("k", 8)
    );
    assert_eq!(go(&q, &k, &poison(v.clone(), 21)), nf("v", 21));

    // A score beyond f32's range poisons its whole output row, reported at the row's start:
    // query 1, head 0 (flat element 2 of [2, 1, 2]) has dot 1e20 · 1e20.
    let q = t(&[1.0, 1.0, 1e20, 1.0], &[2, 1, 2]);
    let k = t(&[1.0, 0.0, 1e20, 0.0], &[2, 1, 2]);
    let v = t(&[1.0; 4], &[2, 1, 2]);
    assert_eq!(
        attention(&q, &k, &v, 1.0, false).unwrap_err(),
        nf("output", 2)
    );
    // A weighted sum that overflows: two equal weights of 3e38 values (element 1 of the row).
    let v = t(&[1.0, 3e38, 1.0, 3e38], &[2, 1, 2]);
    let q2 = t(&[1.0, 1.0], &[1, 1, 2]);
    let k2 = t(&[1.0, 1.0, 1.0, 1.0], &[2, 1, 2]);
    assert_eq!(
        attention(&q2, &k2, &v, 1.0, false).unwrap_err(),
        nf("output", 1)
    );
}
