//! Scaled-dot-product attention on token-major tensors, with grouped-query heads and an optional
//! causal mask, in a fixed order of float operations. The GPU kernel keeps its chunks, trees and
//! merge order but reassociates each dot product and weighted sum into independent partial sums
//! (serial chains were too slow there), so the two agree within a float tolerance.

use rayon::prelude::*;

use super::attention_chunks::{KvHead, attend_group};
use super::{output, scalar};
use crate::alloc;
use crate::check;
use crate::error::{Error, Result};
use crate::tensor::{Tensor, TensorRef};

/// Keys per chunk in [`attention`]'s order of operations: one 256-lane workgroup's worth, since
/// the GPU kernel scores one key per lane and reduces a chunk with softmax's lane tree.
pub const ATTENTION_CHUNK: usize = 256;

/// The validated dimensions of an [`attention`] call ([`attention_dims`]). Its methods assume
/// dimensions that passed [`attention_dims`]; on others (built field by field) they clamp instead
/// of panicking.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AttentionDims {
    /// Query positions `Tq`.
    pub tq: usize,
    /// Key / value positions `Tk`.
    pub tk: usize,
    /// Query heads `Hq`.
    pub hq: usize,
    /// Key / value heads `Hkv` (divides `Hq`).
    pub hkv: usize,
    /// Head dimension `D`.
    pub d: usize,
    /// Whether the causal mask applies.
    pub causal: bool,
}

impl AttentionDims {
    /// Keys query `i` attends, `1..=Tk`: all of them, or under the causal mask the keys up to its
    /// own position `Tk - Tq + i` (the queries are the last `Tq` of the `Tk` positions).
    pub fn attended(&self, i: usize) -> usize {
        if self.causal {
            (self.tk.saturating_sub(self.tq) + i + 1).min(self.tk)
        } else {
            self.tk
        }
    }

    /// The key / value head query head `h` reads: `h / (Hq / Hkv)` (HF's `repeat_kv`: query heads
    /// `g·Hq/Hkv .. (g+1)·Hq/Hkv` share kv head `g`).
    pub fn kv_head(&self, h: usize) -> usize {
        h / self.hq.checked_div(self.hkv).unwrap_or(1).max(1)
    }

    /// Chunks of [`ATTENTION_CHUNK`] keys a query attending all `Tk` keys walks.
    pub fn chunks(&self) -> usize {
        self.tk.div_ceil(ATTENTION_CHUNK)
    }
}

/// Checks the shapes and arguments of [`attention`] as it does (the GPU engine calls this too, so
/// both backends reject bad input with the same error) and returns the dimensions.
///
/// Errors, in this order: `q` or `k` not rank 3 (`RankMismatch`), `k` not `[Tk, Hkv, D]` with
/// `q`'s `D` (`ShapeMismatch`, `expected` `k`'s own `Tk` and `Hkv` with that `D`), `v`'s shape not
/// `k`'s (`ShapeMismatch` expecting `k`'s shape), a zero dimension (`ZeroDimension` naming `D`,
/// `Tq`, `Hq`, `Tk` or `Hkv`), `Hq % Hkv != 0` (`InvalidArgument` on `Hkv`), `causal` with
/// `Tq > Tk` (`InvalidArgument` on `causal`), `scale` non-finite (`NonFinite` on `scale`) or
/// `<= 0` (`InvalidArgument`: a zero or negative scale is a caller's bug, not a mask).
pub fn attention_dims(
    q: &[usize],
    k: &[usize],
    v: &[usize],
    scale: f32,
    causal: bool,
) -> Result<AttentionDims> {
    const OP: &str = "attention";
    let rank3 = |tensor, got: &[usize]| Error::RankMismatch {
        op: OP,
        tensor,
        expected: 3,
        got: got.to_vec(),
    };
    let &[tq, hq, d] = q else {
        return Err(rank3("q", q));
    };
    let &[tk, hkv, _] = k else {
        return Err(rank3("k", k));
    };
    let expected_k = vec![tk, hkv, d];
    if k != expected_k.as_slice() {
        return Err(Error::ShapeMismatch {
            op: OP,
            what: "q is [Tq, Hq, D], k must be [Tk, Hkv, D]",
            expected: expected_k,
            got: k.to_vec(),
        });
    }
    if v != k {
        return Err(Error::ShapeMismatch {
            op: OP,
            what: "v must have k's shape [Tk, Hkv, D]",
            expected: k.to_vec(),
            got: v.to_vec(),
        });
    }
    let (tk, hkv) = (k[0], k[1]);
    for (dim, n) in [("D", d), ("Tq", tq), ("Hq", hq), ("Tk", tk), ("Hkv", hkv)] {
        check::nonzero(OP, dim, n)?;
    }
    let invalid = |what, reason| Error::InvalidArgument {
        op: OP,
        what,
        reason,
    };
    if !hq.is_multiple_of(hkv) {
        return Err(invalid(
            "Hkv",
            "the query heads Hq must be a multiple of the key/value heads Hkv",
        ));
    }
    if causal && tq > tk {
        return Err(invalid(
            "causal",
            "causal attention needs Tq <= Tk: the queries are the last Tq of the Tk key positions",
        ));
    }
    scalar(OP, "scale", scale)?;
    if scale <= 0.0 {
        return Err(invalid("scale", "must be > 0"));
    }
    Ok(AttentionDims {
        tq,
        tk,
        hq,
        hkv,
        d,
        causal,
    })
}

/// Scaled-dot-product attention: `out[i, h] = Σ_j softmax_j(q[i, h] · k[j, g] · scale) · v[j, g]`
/// over the keys `j` query `i` attends, with `g = h / (Hq / Hkv)`.
///
/// Layouts are token-major, as the q / k / v projections produce them (no transposes): `q` is
/// `[Tq, Hq, D]`, `k` and `v` are `[Tk, Hkv, D]`, the output is `[Tq, Hq, D]`. Grouped-query
/// attention (`Hq` a multiple of `Hkv`) follows HF's `repeat_kv`. With `causal`, the queries are
/// the last `Tq` of the `Tk` positions (decode with a KV cache: `Tk = past + Tq`), so query `i`
/// attends keys `j <= Tk - Tq + i`; without it every query attends every key. The usual `scale`
/// is `1 / sqrt(D)`.
///
/// Order of operations, per query `i` and head `h` (f32, IEEE rounding, no fused multiply-add):
/// 1. Scores `s_j = (Σ_d q[d]·k_j[d]) · scale`, the dot product summed from `0.0` over `d`
///    ascending, then one product with `scale`.
/// 2. The `n` attended keys in chunks of [`ATTENTION_CHUNK`]: chunk `c` holds keys
///    `256c .. min(256c + 256, n)`. Per chunk, `m_c = max s_j`, `e_j = exp(s_j - m_c)`,
///    `l_c = Σ e_j` in `softmax_last`'s 256-lane tree (one key per lane, strides 128, ..., 1) and
///    `o_c[d] = Σ_j e_j·v_j[d]` summed from `0.0` over the chunk's keys ascending.
/// 3. The chunks merged in order (the flash-attention recurrence): `(M, L, O) = (m_0, l_0, o_0)`,
///    then for each later chunk, if `m_c > M`: `a = exp(M - m_c)`, `b = 1`, `M = m_c`, else
///    `a = 1`, `b = exp(m_c - M)`; `L = L·a + l_c·b`, `O[d] = O[d]·a + o_c[d]·b`.
/// 4. `out[d] = O[d] / L`, one correctly rounded division.
///
/// With at most 256 attended keys this is `softmax_last`'s computation (max-subtracted weights,
/// their sum in its lane order) with the division moved after the weighted sum:
/// `(Σ_j e_j·v_j) / L` instead of `Σ_j (e_j / L)·v_j`. Longer rows differ from one global softmax
/// only by the rescaling roundings of step 3 (`exp(s_j - m_c)·exp(m_c - M)` for `exp(s_j - M)`),
/// which lets a GPU score chunks in parallel and merge them in this same order. Every `e_j <= 1`
/// and the chunk maximum's is exactly 1, so `L >= 1` and nothing in the weights overflows.
///
/// Errors: those of [`attention_dims`]; then non-finite `q`, `k` or `v` (`NonFinite` naming the
/// tensor and the first flat index, checked in that order); a non-finite output, i.e. a score
/// beyond f32's range (reported at the first element of that query and head's output row, all of
/// which it makes non-finite) or a weighted sum that overflows (values near `f32::MAX`).
///
/// The inputs are `&Tensor`s or [`TensorRef`]s (values borrowed from elsewhere, such as a KV
/// cache's storage: no copy of the context per call).
pub fn attention<'a>(
    q: impl Into<TensorRef<'a, f32>>,
    k: impl Into<TensorRef<'a, f32>>,
    v: impl Into<TensorRef<'a, f32>>,
    scale: f32,
    causal: bool,
) -> Result<Tensor<f32>> {
    const OP: &str = "attention";
    let (q, k, v) = (q.into(), k.into(), v.into());
    let dims = attention_dims(q.shape(), k.shape(), v.shape(), scale, causal)?;
    check::finite(OP, "q", q.data())?;
    check::finite(OP, "k", k.data())?;
    check::finite(OP, "v", v.data())?;
    let (hkv, d) = (dims.hkv, dims.d);
    // The query heads sharing a kv head are consecutive rows: one task per query position and
    // kv head (each key and value row is then read once for all of them).
    let group = dims.hq / hkv;
    let mut out = alloc::zeros::<f32>(q.numel());
    out.par_chunks_mut(group * d)
        .zip(q.data().par_chunks(group * d))
        .enumerate()
        .for_each(|(task, (o, qs))| {
            let (i, g) = (task / hkv, task % hkv);
            let head = KvHead {
                k: k.data(),
                v: v.data(),
                stride: hkv * d,
                offset: g * d,
                d,
            };
            attend_group(o, qs, &head, dims.attended(i), scale);
        });
    output(OP, out, q.shape().to_vec())
}

#[cfg(test)]
mod tests {
    use super::AttentionDims;

    /// Dimensions built field by field that `attention_dims` would refuse (Hkv above Hq or zero,
    /// a causal Tq above Tk) make the helpers clamp, not panic; valid ones give the formulas.
    #[test]
    fn helpers_do_not_panic_on_unvalidated_dimensions() {
        let dims = |tq, tk, hq, hkv| AttentionDims {
            tq,
            tk,
            hq,
            hkv,
            d: 8,
            causal: true,
        };
        let valid = dims(2, 5, 8, 2);
        assert_eq!((valid.attended(0), valid.attended(1)), (4, 5));
        assert_eq!((valid.kv_head(3), valid.kv_head(4)), (0, 1));
        assert_eq!(dims(6, 5, 8, 2).attended(5), 5);
        assert_eq!(dims(1, 5, 2, 4).kv_head(1), 1);
        assert_eq!(dims(1, 5, 2, 0).kv_head(1), 1);
    }
}
