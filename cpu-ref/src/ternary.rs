//! `TernaryMatrix`: BitNet b1.58 weights packed at 2 bits each plus one per-tensor scale.

use crate::check;
use crate::error::{Error, Result};
use crate::layout::{WEIGHTS_PER_WORD, code_shift, decode_ternary, unpack_codes, words_per_row};

/// Ternary weights `[N, K]` in the packed layout of `layout.rs` (2-bit codes `w + 1`, 16 per
/// `u32` along K, interleaved, rows padded with weight 0), with the per-tensor scale `s` (the
/// clamped absmean) such that the dequantized weight is `w · s`.
///
/// Built by [`quantize_weights`](crate::quantize_weights) or, from words stored elsewhere (a model
/// file, a GPU read-back), by [`TernaryMatrix::from_packed`], which validates every code.
#[derive(Debug, Clone, PartialEq)]
pub struct TernaryMatrix {
    n: usize,
    k: usize,
    words: Vec<u32>,
    scale: f32,
}

impl TernaryMatrix {
    /// Wraps packed words after validating them: `words.len() == N · ceil(K / 16)`, no code 3,
    /// every padding position (`k >= K` in a row's last word) holds code 1, `N, K > 0`,
    /// `K < 2^24` (exact i32 accumulation) and `scale` finite and `>= 1e-5`
    /// ([`SCALE_EPS`](crate::layout::SCALE_EPS), the quantizer's floor).
    pub fn from_packed(words: Vec<u32>, n: usize, k: usize, scale: f32) -> Result<TernaryMatrix> {
        const OP: &str = "TernaryMatrix::from_packed";
        check_dims(OP, n, k)?;
        let wpr = words_per_row(k);
        check::len(
            OP,
            "words",
            check::mul(OP, "N * words_per_row(K)", n, wpr)?,
            words.len(),
        )?;
        check::scales(OP, "scale", &[scale])?;
        // Code 3 has both bits set: the low bit of every 2-bit field of `w & (w >> 1)`.
        let bad = |w: u32| w & (w >> 1) & 0x5555_5555 != 0;
        let tail = k % WEIGHTS_PER_WORD;
        // Bits of the padding positions of a row's last word, and what they must hold (code 1).
        let (pad_mask, pad_value) = (tail..WEIGHTS_PER_WORD).fold((0u32, 0u32), |(m, v), kk| {
            (m | (3 << code_shift(kk)), v | (1 << code_shift(kk)))
        });
        for (i, &w) in words.iter().enumerate() {
            let last_in_row = tail != 0 && i % wpr == wpr - 1;
            if bad(w) || (last_in_row && w & pad_mask != pad_value) {
                let codes = unpack_codes(w);
                let position = (0..WEIGHTS_PER_WORD)
                    .find(|&p| codes[p] == 3 || (last_in_row && p >= tail && codes[p] != 1))
                    .unwrap_or(0);
                return Err(Error::InvalidPackedCode {
                    op: OP,
                    word: i,
                    position,
                    code: codes[position],
                });
            }
        }
        Ok(TernaryMatrix { n, k, words, scale })
    }

    /// Builds a matrix from explicit ternary values (`n · k` of them, row-major, each in
    /// `-1..=1`) and a scale — handy for tests and for weights already quantized elsewhere.
    pub fn from_i8(values: &[i8], n: usize, k: usize, scale: f32) -> Result<TernaryMatrix> {
        const OP: &str = "TernaryMatrix::from_i8";
        check_dims(OP, n, k)?;
        check::len(OP, "values", check::mul(OP, "N * K", n, k)?, values.len())?;
        if values.iter().any(|v| !(-1..=1).contains(v)) {
            return Err(Error::InvalidArgument {
                op: OP,
                what: "values",
                reason: "every weight must be -1, 0 or +1",
            });
        }
        let wpr = words_per_row(k);
        let mut words = Vec::with_capacity(n * wpr);
        for row in values.chunks_exact(k) {
            for chunk in row.chunks(WEIGHTS_PER_WORD) {
                let mut w = [0i8; WEIGHTS_PER_WORD];
                w[..chunk.len()].copy_from_slice(chunk);
                words.push(crate::layout::pack_word(w));
            }
        }
        TernaryMatrix::from_packed(words, n, k, scale)
    }

    /// Wraps words produced by this crate's own quantizer (already valid).
    pub(crate) fn from_valid(words: Vec<u32>, n: usize, k: usize, scale: f32) -> TernaryMatrix {
        debug_assert_eq!(words.len(), n * words_per_row(k));
        TernaryMatrix { n, k, words, scale }
    }

    /// Output features `N` (rows).
    pub fn n(&self) -> usize {
        self.n
    }

    /// Input features `K` (columns).
    pub fn k(&self) -> usize {
        self.k
    }

    /// The per-tensor scale `s = max(absmean, 1e-5)`; dequantized weights are `w · s`.
    pub fn scale(&self) -> f32 {
        self.scale
    }

    /// `u32` words per packed row: `ceil(K / 16)`.
    pub fn words_per_row(&self) -> usize {
        words_per_row(self.k)
    }

    /// The packed words, `N · ceil(K / 16)` of them, exactly as GPU kernels read them.
    pub fn words(&self) -> &[u32] {
        &self.words
    }

    /// Packed words of row `n` (panics if `n >= N`, like slice indexing).
    pub fn row_words(&self, n: usize) -> &[u32] {
        let wpr = self.words_per_row();
        &self.words[n * wpr..(n + 1) * wpr]
    }

    /// The ternary values `{-1, 0, +1}`, `N · K` of them, row-major (padding dropped).
    pub fn to_i8(&self) -> Vec<i8> {
        let mut out = Vec::with_capacity(self.n * self.k);
        for row in self.words.chunks_exact(self.words_per_row()) {
            for kk in 0..self.k {
                let code = (row[kk / WEIGHTS_PER_WORD] >> code_shift(kk % WEIGHTS_PER_WORD)) & 3;
                // Codes were validated on construction, so this is never the fallback.
                out.push(decode_ternary(code).unwrap_or(0));
            }
        }
        out
    }

    /// Consumes the matrix, returning its packed words.
    pub fn into_words(self) -> Vec<u32> {
        self.words
    }
}

/// The dimension rules shared by every constructor: `N, K > 0`, `K < 2^24`.
pub(crate) fn check_dims(op: &'static str, n: usize, k: usize) -> Result<()> {
    check::nonzero(op, "N", n)?;
    check::nonzero(op, "K", k)?;
    check_k(op, k)
}

/// `K < 2^24`: then `|acc| <= 128 · K < 2^31` fits `i32`, as `layout.rs` requires.
pub(crate) fn check_k(op: &'static str, k: usize) -> Result<()> {
    if k >= 1 << 24 {
        return Err(Error::SizeOverflow {
            op,
            what: "K must be below 2^24 for exact i32 accumulation",
        });
    }
    Ok(())
}
