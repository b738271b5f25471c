//! `ops::attention` follows its documented order of operations bit for bit: a literal,
//! one-query-head-at-a-time transcription of the steps in its docs (serial dot products, chunks
//! of `ATTENTION_CHUNK` keys, the lane-tree weight sum, the in-order merge) against the
//! implementation, which groups the heads sharing a kv head, advances several keys' dot products
//! together and computes chunks in parallel.

use bitnet_cpu_ref::ops::{ATTENTION_CHUNK, attention};
use bitnet_cpu_ref::{Error, Tensor, TensorRef};

mod common;
use common::rnd;

/// `Σ v` in the documented lane order: lane `t < 256` folds `v[t], v[t + 256], …` from 0.0,
/// then a pairwise tree over the lanes (strides 128, …, 1).
fn lane_sum(values: &[f32]) -> f32 {
    let mut lanes = [0.0f32; 256];
    for (i, &v) in values.iter().enumerate() {
        lanes[i % 256] += v;
    }
    let mut stride = 128;
    while stride >= 1 {
        for t in 0..stride {
            lanes[t] += lanes[t + stride];
        }
        stride /= 2;
    }
    lanes[0]
}

/// One attention call's inputs, flat, with `[Tq, Tk, Hq, Hkv, D]`.
struct Inputs<'a> {
    q: &'a [f32],
    k: &'a [f32],
    v: &'a [f32],
    dims: [usize; 5],
    scale: f32,
    causal: bool,
}

/// The documented steps for query `i`, head `h`; `None` where a score is not finite.
fn one_row(x: &Inputs<'_>, i: usize, h: usize) -> Option<Vec<f32>> {
    let Inputs {
        q,
        k,
        v,
        dims,
        scale,
        causal,
    } = *x;
    let [tq, tk, hq, hkv, d] = dims;
    let g = h / (hq / hkv);
    let n = if causal { tk - tq + i + 1 } else { tk };
    let qv = &q[(i * hq + h) * d..][..d];
    let row = |t: &[f32], j: usize| t[(j * hkv + g) * d..][..d].to_vec();
    let (mut m_run, mut l_run, mut o) = (0.0f32, 0.0f32, vec![0.0f32; d]);
    for (c, start) in (0..n).step_by(ATTENTION_CHUNK).enumerate() {
        let keys = start..n.min(start + ATTENTION_CHUNK);
        let mut e: Vec<f32> = keys
            .clone()
            .map(|j| {
                let mut dot = 0.0f32;
                for (a, b) in qv.iter().zip(row(k, j)) {
                    dot += a * b;
                }
                dot * scale
            })
            .collect();
        if e.iter().any(|s| !s.is_finite()) {
            return None;
        }
        let m = e.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        for s in &mut e {
            *s = (*s - m).exp();
        }
        let l = lane_sum(&e);
        let mut oc = vec![0.0f32; d];
        for (w, j) in e.iter().zip(keys) {
            for (acc, x) in oc.iter_mut().zip(row(v, j)) {
                *acc += w * x;
            }
        }
        if c == 0 {
            (m_run, l_run, o) = (m, l, oc);
            continue;
        }
        let (a, b) = if m > m_run {
            ((m_run - m).exp(), 1.0)
        } else {
            (1.0, (m - m_run).exp())
        };
        m_run = m_run.max(m);
        l_run = l_run * a + l * b;
        for (acc, x) in o.iter_mut().zip(oc) {
            *acc = *acc * a + x * b;
        }
    }
    Some(o.iter().map(|x| x / l_run).collect())
}

#[test]
fn attention_follows_its_documented_order_bit_for_bit() {
    // (Tq, Tk, Hq, Hkv, D, causal): decode over 1 to 3 chunks and key counts that are not a
    // multiple of the keys scored together, GQA groups of 1 to 5 (2B4T's 20 / 5 heads of 128),
    // prefill, odd D.
    let cases = [
        (1, 1, 1, 1, 1, false),
        (1, 7, 4, 4, 3, true),
        (1, 13, 5, 1, 9, false),
        (1, 256, 4, 1, 8, true),
        (1, 263, 2, 2, 5, false),
        (1, 700, 20, 5, 128, true),
        (3, 300, 4, 2, 16, false),
        (40, 40, 6, 2, 32, true),
        (300, 300, 2, 1, 8, true),
    ];
    for (c, &(tq, tk, hq, hkv, d, causal)) in cases.iter().enumerate() {
        let seed = 7 * c as u32;
        let q = rnd(tq * hq * d, seed + 1, 1.0);
        let k = rnd(tk * hkv * d, seed + 2, 1.0);
        let v = rnd(tk * hkv * d, seed + 3, 4.0);
        let scale = 3.0 / (d as f32).sqrt();
        let (qs, ks) = ([tq, hq, d], [tk, hkv, d]);
        let got = attention(
            TensorRef::new(&q, &qs).unwrap(),
            TensorRef::new(&k, &ks).unwrap(),
            &Tensor::new(v.clone(), &ks).unwrap(),
            scale,
            causal,
        )
        .unwrap();
        let inputs = Inputs {
            q: &q,
            k: &k,
            v: &v,
            dims: [tq, tk, hq, hkv, d],
            scale,
            causal,
        };
        for i in 0..tq {
            for h in 0..hq {
                let want = one_row(&inputs, i, h).unwrap();
                let row = &got.data()[(i * hq + h) * d..][..d];
                let bits = |x: &[f32]| x.iter().map(|v| v.to_bits()).collect::<Vec<_>>();
                assert_eq!(bits(row), bits(&want), "case {c}, query {i}, head {h}");
            }
        }
    }
}

/// A score beyond f32's range in any chunk makes that query head's output undefined: the op
/// reports it at the first element of the first such row, whichever chunk it is in.
#[test]
fn a_score_overflow_in_a_later_chunk_is_reported_at_its_row() {
    let (tk, hq, hkv, d) = (600, 4, 2, 2);
    let q = vec![1.0f32; hq * d];
    let mut k = vec![0.5f32; tk * hkv * d];
    // Key 530 (third chunk) of kv head 1 overflows the dot product of heads 2 and 3.
    k[(530 * hkv + 1) * d] = f32::MAX;
    k[(530 * hkv + 1) * d + 1] = f32::MAX;
    let v = vec![1.0f32; tk * hkv * d];
    let ks = [tk, hkv, d];
    let r = attention(
        TensorRef::new(&q, &[1, hq, d]).unwrap(),
        TensorRef::new(&k, &ks).unwrap(),
        TensorRef::new(&v, &ks).unwrap(),
        1.0,
        false,
    );
    assert_eq!(
        r.unwrap_err(),
        Error::NonFinite {
            op: "attention",
            tensor: "output",
            index: 2 * d,
        }
    );
    let inputs = Inputs {
        q: &q,
        k: &k,
        v: &v,
        dims: [1, tk, hq, hkv, d],
        scale: 1.0,
        causal: false,
    };
    assert!(one_row(&inputs, 0, 2).is_none());
    assert!(one_row(&inputs, 0, 1).is_some());
}

#[test]
fn tensor_refs_check_their_shape() {
    let v = [1.0f32; 6];
    assert!(TensorRef::new(&v, &[2, 3]).is_ok());
    assert!(matches!(
        TensorRef::new(&v, &[2, 2]),
        Err(Error::LengthMismatch { .. })
    ));
    assert!(matches!(
        TensorRef::new(&v, &[0, 6]),
        Err(Error::ZeroDimension { .. })
    ));
}
