//! The float ops against their mathematical definitions and the PyTorch / HF conventions they
//! document, with independent oracles: NumPy broadcasting by explicit index mapping, f64 sums,
//! HF's `rotate_half` RoPE, the exact (erf) GELU, RMSNorm's `eps` placement and weight, softmax
//! masking with `-inf` or `f32::MIN`, and f16 rounding of matmul outputs.

use bitnet_cpu_ref::Tensor;
use bitnet_cpu_ref::ops::*;
use half::f16;

mod common;
use common::rnd;

fn t(d: Vec<f32>, s: &[usize]) -> Tensor<f32> {
    Tensor::new(d, s).unwrap()
}

/// The flat index into an operand of `shape` of output element `flat` of the broadcast `out`.
fn source_index(shape: &[usize], out: &[usize], flat: usize) -> usize {
    let mut rem = flat;
    let mut multi = vec![0; out.len()];
    for a in (0..out.len()).rev() {
        multi[a] = rem % out[a];
        rem /= out[a];
    }
    let offset = out.len() - shape.len();
    shape.iter().enumerate().fold(0, |f, (i, &d)| {
        f * d + if d == 1 { 0 } else { multi[offset + i] }
    })
}

#[test]
fn binary_matches_numpy_broadcasting_bit_for_bit() {
    let cases: &[(&[usize], &[usize])] = &[
        (&[2, 1, 3], &[4, 1]),
        (&[], &[2, 3]),
        (&[2, 3], &[]),
        (&[3, 1], &[1, 4]),
        (&[1], &[5, 2, 1]),
        (&[5, 2, 1], &[1]),
        (&[2, 3, 4], &[3, 1]),
        (&[2, 1, 4, 1], &[3, 1, 5]),
        (&[7], &[7]),
    ];
    for (ci, &(sa, sb)) in cases.iter().enumerate() {
        let a = t(rnd(sa.iter().product(), ci as u32 + 1, 3.0), sa);
        let b: Vec<f32> = rnd(sb.iter().product(), ci as u32 + 100, 3.0);
        let b = t(b.into_iter().map(|v| v + 4.0).collect(), sb); // in [1, 7): no division by 0
        let out = broadcast_shape(sa, sb).unwrap();
        for op in [BinaryOp::Add, BinaryOp::Sub, BinaryOp::Mul, BinaryOp::Div] {
            let y = binary(op, &a, &b).unwrap();
            assert_eq!(y.shape(), &out[..]);
            for (f, &got) in y.data().iter().enumerate() {
                let av = a.data()[source_index(sa, &out, f)];
                let bv = b.data()[source_index(sb, &out, f)];
                assert_eq!(got, op.apply(av, bv), "{sa:?} {op:?} {sb:?} at {f}");
            }
        }
    }
}

#[test]
fn reductions_norms_and_softmax_match_f64() {
    let (rows, eps) = (3, 1e-6f32);
    for len in [1usize, 3, 255, 256, 257, 1000, 5000] {
        let x = rnd(rows * len, len as u32, 5.0);
        let tx = t(x.clone(), &[rows, len]);
        let red = |op| reduce_last(op, &tx).unwrap().into_data();
        let (sum, mean) = (red(ReduceOp::Sum), red(ReduceOp::Mean));
        let (max, absmax) = (red(ReduceOp::Max), red(ReduceOp::AbsMax));
        let w = rnd(len, 77, 2.0);
        let rn = rms_norm(&tx, &w, eps).unwrap().into_data();
        let sm = softmax_last(&tx).unwrap().into_data();
        for r in 0..rows {
            let row: Vec<f64> = x[r * len..(r + 1) * len]
                .iter()
                .map(|&v| v.into())
                .collect();
            let exact: f64 = row.iter().sum();
            let abs: f64 = row.iter().map(|v| v.abs()).sum();
            assert!(
                (f64::from(sum[r]) - exact).abs() <= 1e-6 * abs,
                "sum, L = {len}"
            );
            let want_mean = exact / len as f64;
            assert!((f64::from(mean[r]) - want_mean).abs() <= 1e-6 * abs / len as f64);
            let m = row.iter().copied().fold(f64::NEG_INFINITY, f64::max);
            assert_eq!(f64::from(max[r]), m);
            let am = row.iter().fold(0.0f64, |a, v| a.max(v.abs()));
            assert_eq!(f64::from(absmax[r]), am);
            // HF LlamaRMSNorm: x · rsqrt(mean(x²) + eps) · weight.
            let ms = row.iter().map(|v| v * v).sum::<f64>() / len as f64;
            let inv = 1.0 / (ms + f64::from(eps)).sqrt();
            let es: Vec<f64> = row.iter().map(|v| (v - m).exp()).collect();
            let z: f64 = es.iter().sum();
            for i in 0..len {
                let want = row[i] * inv * f64::from(w[i]);
                let got = f64::from(rn[r * len + i]);
                assert!(
                    (got - want).abs() <= 2e-6 * want.abs().max(1e-3),
                    "rms, L = {len}"
                );
                let (got, want) = (f64::from(sm[r * len + i]), es[i] / z);
                assert!(
                    (got - want).abs() <= 1e-6 * want + 1e-12,
                    "softmax, L = {len}"
                );
            }
        }
    }
    // Rank 0 is one row of one element; rank 1 reduces to rank 0 (PyTorch's dim=-1).
    let y = reduce_last(ReduceOp::Mean, &t(vec![2.5], &[])).unwrap();
    assert_eq!((y.shape(), y.data()), (&[][..], &[2.5f32][..]));
    let y = reduce_last(ReduceOp::Sum, &t(vec![1.0, 2.0], &[2])).unwrap();
    assert_eq!((y.shape(), y.data()), (&[][..], &[3.0f32][..]));
    assert_eq!(softmax_last(&t(vec![5.0], &[])).unwrap().data(), &[1.0]);
}

#[test]
fn rms_norm_eps_inside_the_root_and_weight_as_is() {
    // x = 1, eps = 3, weight = 2: 1 / sqrt(1 + 3) · 2 = 1 exactly. `x / (rms + eps)` would give
    // 0.5, `1 + weight` (Gemma) 1.5, and eps outside the root 0.5.
    let y = rms_norm(&t(vec![1.0], &[1, 1]), &[2.0], 3.0).unwrap();
    assert_eq!(y.data(), &[1.0]);
    // No mean subtraction (LayerNorm would give 0 / 0 for a constant row): [2, 2] → [1, 1].
    let y = rms_norm(&t(vec![2.0, 2.0], &[2]), &[1.0, 1.0], 0.0).unwrap();
    assert_eq!(y.data(), &[1.0, 1.0]);
}

#[test]
fn softmax_masks_with_neg_inf_or_f32_min() {
    // `f32::MIN` masks too, and a row of it alone is the uniform distribution.
    let min = f32::MIN;
    let y = softmax_last(&t(vec![0.0, min, -5.0, min, min, min], &[3, 2])).unwrap();
    assert_eq!(y.data(), &[1.0, 0.0, 1.0, 0.0, 0.5, 0.5]);
    // PyTorch's `-inf` mask: masked entries give 0, the rest the softmax of the unmasked alone.
    let ninf = f32::NEG_INFINITY;
    let y = softmax_last(&t(vec![0.0, ninf, ninf, 3.0, 3.0, ninf], &[2, 3])).unwrap();
    assert_eq!(y.data(), &[1.0, 0.0, 0.0, 0.5, 0.5, 0.0]);
    // A row entirely `-inf` has no distribution (PyTorch: NaN): an error naming its first index.
    let e = softmax_last(&t(vec![0.0, 1.0, ninf, ninf], &[2, 2])).unwrap_err();
    assert_eq!(
        e,
        bitnet_cpu_ref::Error::NonFinite {
            op: "softmax_last",
            tensor: SOFTMAX_MASKED_ROW,
            index: 2
        }
    );
}

#[test]
fn rope_is_hf_rotate_half_with_an_f32_angle() {
    let (s, h, d) = (5usize, 3usize, 8usize);
    let theta = 500_000.0f32;
    let x = rnd(s * h * d, 9, 2.0);
    let pos = [0u32, 1, 7, 1000, 123_456];
    let y = rope(&t(x.clone(), &[s, h, d]), &pos, theta).unwrap();
    let freqs = rope_freqs(d, theta).unwrap();
    for (i, &f) in freqs.iter().enumerate() {
        let inv_freq = 1.0 / f64::from(theta).powf((2 * i) as f64 / d as f64);
        assert!(
            (f64::from(f) - inv_freq).abs() <= inv_freq * 6e-8,
            "freq {i}"
        );
    }
    for (si, &p) in pos.iter().enumerate() {
        for hi in 0..h {
            let base = (si * h + hi) * d;
            let xv: Vec<f64> = x[base..base + d].iter().map(|&v| v.into()).collect();
            // HF: emb = cat(freqs, freqs); y = x · cos + rotate_half(x) · sin,
            // rotate_half(x) = cat(-x[D/2..], x[..D/2]); the angle is the f32 product.
            for j in 0..d {
                let angle = f64::from(p as f32 * freqs[j % (d / 2)]);
                let rh = if j < d / 2 {
                    -xv[j + d / 2]
                } else {
                    xv[j - d / 2]
                };
                let want = xv[j] * angle.cos() + rh * angle.sin();
                let got = f64::from(y.data()[base + j]);
                assert!(
                    (got - want).abs() < 2e-6,
                    "s {si} h {hi} j {j}: {got} vs {want}"
                );
            }
        }
    }
}

#[test]
fn matmul_layouts_and_f16_rounding() {
    // K over two chunks (MATMUL_CHUNK), N over ten column blocks of matmul_bt's.
    let (m, k, n) = (67, 137, 700);
    let a = rnd(m * k, 1, 1.0);
    let b = rnd(k * n, 2, 1.0); // [K, N]
    let bt: Vec<f32> = (0..n * k).map(|f| b[(f % k) * n + f / k]).collect(); // [N, K]
    let c = matmul(&t(a.clone(), &[m, k]), &t(b.clone(), &[k, n])).unwrap();
    let c_bt = matmul_bt(&t(a.clone(), &[m, k]), &t(bt.clone(), &[n, k])).unwrap();
    assert_eq!(c.data(), c_bt.data());
    for (f, &got) in c.data().iter().enumerate() {
        let (i, j) = (f / n, f % n);
        let want: f64 = (0..k)
            .map(|kk| f64::from(a[i * k + kk]) * f64::from(b[kk * n + j]))
            .sum();
        assert!((f64::from(got) - want).abs() < 1e-5, "C[{i}, {j}]");
    }
    let h = |v: &[f32], s: &[usize]| {
        Tensor::new(v.iter().map(|&x| f16::from_f32(x)).collect(), s).unwrap()
    };
    let ch = matmul_f16(&h(&a, &[m, k]), &h(&b, &[k, n])).unwrap();
    let ch_bt = matmul_bt_f16(&h(&a, &[m, k]), &h(&bt, &[n, k])).unwrap();
    assert_eq!(ch.data(), ch_bt.data());
    // One product [1, 1] · [1, 1], rounded once to f16 (nearest, ties to even).
    let one =
        |x: f32, y: f32| matmul_f16(&h(&[x], &[1, 1]), &h(&[y], &[1, 1])).map(|c| c.data()[0]);
    let p = |e: i32| 2f32.powi(e);
    // (1 + 2^-10)² = 1 + 2^-9 + 2^-20 → 1 + 2^-9.
    assert_eq!(
        one(1.0 + p(-10), 1.0 + p(-10)).unwrap().to_f32(),
        1.0 + p(-9)
    );
    // 2^-25 is half the smallest f16 subnormal: a tie, to even 0; 1.5 · 2^-24 → 2 · 2^-24.
    assert_eq!(one(p(-12), p(-13)).unwrap().to_f32(), 0.0);
    assert_eq!(one(3.0 * p(-12), p(-13)).unwrap().to_f32(), p(-23));
    // 2047 · 32 = 65504 (the f16 maximum) fits; 1365 · 48 = 65520 is the tie between 65504 and
    // 2^16, rounding to even, i.e. to infinity: an error. (All four factors are exact in f16.)
    assert_eq!(one(2047.0, 32.0).unwrap().to_f32(), 65504.0);
    assert!(one(1365.0, 48.0).is_err());
}

/// The summation order of the matmul: chunks of `MATMUL_CHUNK` k, each summed in order from
/// 0, then the chunks' sums in order. 2^24 + 1 rounds back to 2^24 (a tie, to even), so the ones
/// that follow 2^24 inside its chunk vanish, while the next chunk's 64 ones survive as 64.
#[test]
fn matmul_sums_chunks_of_k_then_the_chunks() {
    assert_eq!(MATMUL_CHUNK, 64);
    let k = 2 * MATMUL_CHUNK + 2;
    let mut b = vec![1.0f32; k];
    b[0] = 2f32.powi(24);
    let a = vec![1.0f32; k];
    let c = matmul(&t(a.clone(), &[1, k]), &t(b.clone(), &[k, 1])).unwrap();
    // Chunk 0: 2^24 (its 63 ones lost); chunk 1: 64; chunk 2: 2; all three exact in the total.
    // Summed in one walk of k, every one would be lost: 2^24.
    assert_eq!(c.data(), &[2f32.powi(24) + 66.0]);
    let c_bt = matmul_bt(&t(a, &[1, k]), &t(b, &[1, k])).unwrap();
    assert_eq!(c_bt.data(), c.data());
}

/// erf in f64 to ~1e-16: Taylor series below 2.5, the erfc continued fraction above.
fn erf64(x: f64) -> f64 {
    let z = x.abs();
    let y = if z < 2.5 {
        let (mut term, mut sum, mut n) = (z, z, 0.0);
        loop {
            n += 1.0;
            term *= -z * z / n;
            let add = term / (2.0 * n + 1.0);
            sum += add;
            if add.abs() < 1e-18 {
                break sum * 2.0 / std::f64::consts::PI.sqrt();
            }
        }
    } else {
        let f = (1..200).rev().fold(0.0, |f, n| (n as f64 / 2.0) / (z + f));
        1.0 - (-z * z).exp() / std::f64::consts::PI.sqrt() / (z + f)
    };
    y.copysign(x)
}

#[test]
fn activations_match_their_definitions() {
    let mut worst = [0.0f64; 4];
    for i in -100_000..=100_000 {
        let x = i as f32 * 2e-4; // -20 .. 20
        let xd = f64::from(x);
        let rel = |got: f32, want: f64| (f64::from(got) - want).abs() / want.abs().max(1.0);
        let gelu = 0.5 * xd * (1.0 + erf64(xd / 2f64.sqrt()));
        worst[0] = worst[0].max(rel(UnaryOp::Gelu.apply(x), gelu));
        worst[1] = worst[1].max(rel(UnaryOp::Silu.apply(x), xd / (1.0 + (-xd).exp())));
        worst[2] = worst[2].max(rel(UnaryOp::Exp.apply(x), xd.exp()) / xd.exp().min(1.0));
        worst[3] = worst[3].max(rel(UnaryOp::Relu2.apply(x), xd.max(0.0).powi(2)));
    }
    assert!(
        worst.iter().all(|&w| w < 3e-7),
        "gelu, silu, exp, relu² {worst:?}"
    );
    // The erf GELU, not the tanh approximation: gelu(1) = 0.8413447 (tanh form: 0.8411920).
    assert!((UnaryOp::Gelu.apply(1.0) - 0.841_344_7).abs() < 1e-7);
    assert_eq!(UnaryOp::Relu.apply(-2.0), 0.0);
}
