//! [`attention`](super::attention)'s arithmetic, organised for the CPU's memory: the query heads
//! that share a key/value head are computed together, so each key and value row is loaded once
//! for all of them (grouped-query attention read every row once per query head, and decode
//! attention was bound by those re-reads), and the chunks of keys are computed in parallel and
//! merged in order afterwards. Every query head's result is the documented order of operations
//! exactly: the grouping and the parallelism only change when each value is computed.

use rayon::prelude::*;

use super::ATTENTION_CHUNK;
use super::lane_sum;
use crate::alloc;
use crate::kernels::Isa;
use crate::kernels::multiversion::multiversion;

/// One kv head's rows in token-major `k` and `v`: key `j` is `d` values at `j·stride + offset`.
pub(super) struct KvHead<'a> {
    pub k: &'a [f32],
    pub v: &'a [f32],
    pub stride: usize,
    pub offset: usize,
    pub d: usize,
}

impl KvHead<'_> {
    fn key(&self, j: usize) -> &[f32] {
        &self.k[j * self.stride + self.offset..][..self.d]
    }

    fn value(&self, j: usize) -> &[f32] {
        &self.v[j * self.stride + self.offset..][..self.d]
    }
}

/// One chunk's contribution to one query head: the chunk's largest score `m`, its weight sum
/// `l` and weighted values `o`.
pub(super) struct Partial {
    m: f32,
    l: f32,
    o: Vec<f32>,
}

/// Keys whose dot products [`score`] advances together.
const SCORE_KEYS: usize = 8;

/// `e[t] = (q · k_{start+t}) · scale`, each dot product folded from `0.0` over `d` ascending (a
/// multiply, then an add). A dot product is one chain of dependent adds, so [`SCORE_KEYS`]
/// keys' chains advance together: the same roundings, several times one chain's throughput.
#[inline(always)]
fn score(e: &mut [f32], q: &[f32], kv: &KvHead<'_>, start: usize, scale: f32) {
    let mut blocks = e.chunks_exact_mut(SCORE_KEYS);
    let mut first = start;
    for block in &mut blocks {
        let keys: [&[f32]; SCORE_KEYS] = std::array::from_fn(|j| kv.key(first + j));
        let mut acc = [0.0f32; SCORE_KEYS];
        for (i, &a) in q.iter().enumerate() {
            for (s, k) in acc.iter_mut().zip(&keys) {
                *s += a * k[i];
            }
        }
        for (s, dot) in block.iter_mut().zip(acc) {
            *s = dot * scale;
        }
        first += SCORE_KEYS;
    }
    for (t, s) in blocks.into_remainder().iter_mut().enumerate() {
        let dot = q
            .iter()
            .zip(kv.key(first + t))
            .fold(0.0f32, |acc, (&a, &b)| acc + a * b);
        *s = dot * scale;
    }
}

multiversion! {
    /// The chunk of keys `start .. start + len` for every query head of `qs` (`heads` rows of
    /// `d`): per head its [`Partial`], or `None` where a score is not finite (beyond f32's
    /// range). Scores run over [`SCORE_KEYS`]-key blocks, every head on one block before the
    /// next, and the weighted sums take each value row once for every head. Compiled for the
    /// baseline and with AVX2 (`multiversion!`: 8-lane vectors, the same operations; 2.4× at
    /// 8192 keys on two cores).
    fn chunk(
        qs: &[f32],
        kv: &KvHead<'_>,
        start: usize,
        len: usize,
        scale: f32,
    ) -> Vec<Option<Partial>> {
        let heads = qs.len() / kv.d;
        let mut e = alloc::zeros::<f32>(heads * len);
        for block in (0..len).step_by(SCORE_KEYS) {
            let keys = SCORE_KEYS.min(len - block);
            for (h, q) in qs.chunks_exact(kv.d).enumerate() {
                let scores = &mut e[h * len + block..][..keys];
                score(scores, q, kv, start + block, scale);
            }
        }
        // Per head: the maximum, the weights and their sum (softmax's lane tree).
        let mut stats: Vec<Option<(f32, f32)>> = Vec::with_capacity(heads);
        for w in e.chunks_exact_mut(len) {
            if w.iter().any(|s| !s.is_finite()) {
                stats.push(None);
                continue;
            }
            let m = w.iter().copied().fold(f32::NEG_INFINITY, f32::max);
            for s in w.iter_mut() {
                *s = (*s - m).exp();
            }
            stats.push(Some((m, lane_sum(w, |x| x))));
        }
        // Weighted values, keys ascending from 0.0 per head.
        let mut o = alloc::zeros::<f32>(heads * kv.d);
        for t in 0..len {
            let value = kv.value(start + t);
            for (h, acc) in o.chunks_exact_mut(kv.d).enumerate() {
                let w = e[h * len + t];
                for (a, &x) in acc.iter_mut().zip(value) {
                    *a += w * x;
                }
            }
        }
        stats
            .into_iter()
            .zip(o.chunks_exact(kv.d))
            .map(|(s, o)| {
                s.map(|(m, l)| Partial {
                    m,
                    l,
                    o: o.to_vec(),
                })
            })
            .collect()
    }
}

/// The query heads `qs` (rows of `d`, all reading `kv`) over the first `n` keys, written to `o`
/// (the same rows): the chunks in parallel, then each head's chunks merged in order (the
/// flash-attention recurrence) and divided by the weight sum. A head with a non-finite score in
/// any chunk gets a NaN row (its output is undefined; the caller reports it).
pub(super) fn attend_group(o: &mut [f32], qs: &[f32], kv: &KvHead<'_>, n: usize, scale: f32) {
    let isa = Isa::best();
    let chunks: Vec<Vec<Option<Partial>>> = (0..n.div_ceil(ATTENTION_CHUNK))
        .into_par_iter()
        .map(|c| {
            let start = c * ATTENTION_CHUNK;
            chunk(qs, kv, start, ATTENTION_CHUNK.min(n - start), scale, isa)
        })
        .collect();
    for (h, out) in o.chunks_exact_mut(kv.d).enumerate() {
        let mut parts = chunks.iter().map(|c| c[h].as_ref());
        let Some(Some(first)) = parts.next() else {
            out.fill(f32::NAN);
            continue;
        };
        out.copy_from_slice(&first.o);
        let (mut m_run, mut l_run) = (first.m, first.l);
        let mut finite = true;
        for p in parts {
            let Some(p) = p else {
                finite = false;
                break;
            };
            let (a, b) = if p.m > m_run {
                ((m_run - p.m).exp(), 1.0)
            } else {
                (1.0, (p.m - m_run).exp())
            };
            m_run = m_run.max(p.m);
            l_run = l_run * a + p.l * b;
            for (acc, &x) in out.iter_mut().zip(&p.o) {
                *acc = *acc * a + x * b;
            }
        }
        if !finite {
            out.fill(f32::NAN);
            continue;
        }
        for x in out.iter_mut() {
            *x /= l_run;
        }
    }
}
