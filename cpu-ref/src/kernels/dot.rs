//! The BitLinear inner product `Σ_k x[k] · w[k]` of one packed ternary row with one quantized
//! activation row, on each SIMD level, exact in `i32`.
//!
//! Every level computes `Σ_k x[k] · code[k]` (codes `0..=2`) and subtracts `Σ_k x[k]` once, the
//! `code = w + 1` trick of `layout.rs`. Activations are first copied into a per-level [`Prepared`]
//! buffer (zero-padded, and for SIMD levels regrouped so each vector lines up with the bytes a
//! shifted-and-masked weight vector yields), which costs `O(M·K)` once per call and makes the
//! `O(M·N·K)` loop shuffle-free.

use super::Isa;
use crate::error::Result;
use crate::layout::{WEIGHTS_PER_WORD, code_shift, words_per_row};
use crate::{alloc, check};

/// Quantized activations laid out for one level's dot kernel.
pub(crate) struct Prepared {
    isa: Isa,
    /// Bytes per prepared row.
    stride: usize,
    data: Vec<i8>,
    /// `Σ_k x[m, k]` per row.
    sums: Vec<i32>,
}

/// Weight words per SIMD block: 16 for AVX-512 (one 512-bit load), 8 for AVX2 (256-bit), 4 for
/// NEON (128-bit); the scalar level uses plain order (block size 1 makes the regrouping the
/// identity).
pub(crate) const fn block_words(isa: Isa) -> usize {
    match isa {
        Isa::Scalar => 1,
        Isa::Avx2 => 8,
        Isa::Avx512 => 16,
        Isa::Neon => 4,
    }
}

impl Prepared {
    /// Regroups `m` rows of `k` activations for `isa`. Within a block of `BW` weight words, byte
    /// `g·4BW + 4j + i` holds `x[16·BW·b + 16 j + 4 g + i]` — group `g` of word `j` — so vector `g`
    /// of a block pairs lane by lane with `(words >> 2g) & 0x03..03`. Rows are padded to whole
    /// blocks (128 bytes on AVX2 even for K = 1), so the buffer can far exceed the activations:
    /// it is sized with checked arithmetic and allocated fallibly (`SizeOverflow`, `OutOfMemory`
    /// for `op`), as outputs are.
    pub(crate) fn new(
        op: &'static str,
        values: &[i8],
        m: usize,
        k: usize,
        isa: Isa,
    ) -> Result<Prepared> {
        // The level as verified: one this CPU lacks is prepared for the scalar kernel (callers
        // check first). Every product below then dispatches on `isa` without detecting the
        // CPU's features again: a decode GEMV calls them once per pair of weight rows.
        let isa = if isa.is_available() { isa } else { Isa::Scalar };
        let bw = block_words(isa);
        let blocks = words_per_row(k).div_ceil(bw);
        let stride = blocks * bw * WEIGHTS_PER_WORD;
        let len = check::mul(op, "M * prepared row bytes", m, stride)?;
        let mut data = alloc::zeroed::<i8>(op, "prepared activations", len)?;
        let mut sums = alloc::with_capacity(op, "activation row sums", m)?;
        for (row, out) in values.chunks_exact(k).zip(data.chunks_exact_mut(stride)) {
            sums.push(row.iter().map(|&v| i32::from(v)).sum());
            // Move 4-byte runs (one group of one word): run `c` is word `j = c / 4`, group
            // `g = c % 4`, landing in block `j / bw` at lane `j % bw` of group vector `g`.
            for (c, run) in row.chunks(4).enumerate() {
                let (j, g) = (c / 4, c % 4);
                let at = (j / bw) * 16 * bw + g * 4 * bw + 4 * (j % bw);
                out[at..at + run.len()].copy_from_slice(run);
            }
        }
        Ok(Prepared {
            isa,
            stride,
            data,
            sums,
        })
    }

    /// `Σ_k x[row, k] · w[k]` for one packed ternary row `w` (`words_per_row(k)` words).
    pub(crate) fn dot(&self, row: usize, w: &[u32]) -> i32 {
        let x = self.row(row);
        // SAFETY (each SIMD arm): `self.isa` passed `is_available()` in `new`, the only
        // constructor, and `x` is a row prepared for that level's blocks, as its `dot_codes`
        // requires.
        let raw = match self.isa {
            #[cfg(target_arch = "x86_64")]
            Isa::Avx512 => unsafe { super::avx512::dot_codes(w, x) },
            #[cfg(target_arch = "x86_64")]
            Isa::Avx2 => unsafe { super::avx2::dot_codes(w, x) },
            #[cfg(target_arch = "aarch64")]
            Isa::Neon => unsafe { super::neon::dot_codes(w, x) },
            _ => dot_codes_scalar(w, x),
        };
        // The code-domain sum Σ x·(w+1) can pass i32 for K > 8.4M (|x·code| ≤ 256) though the
        // result, |Σ x·w| ≤ 128·K < 2^31, cannot: the arithmetic is modular, and exact.
        raw.wrapping_sub(self.sums[row])
    }

    /// Prepared activation row `row`.
    fn row(&self, row: usize) -> &[i8] {
        &self.data[row * self.stride..(row + 1) * self.stride]
    }
}

impl Prepared {
    /// [`Prepared::dot`] of two weight rows against activation row `row` (one pass over the
    /// activations on the SIMD levels of x86_64).
    pub(crate) fn dot2(&self, row: usize, w0: &[u32], w1: &[u32]) -> (i32, i32) {
        let x = self.row(row);
        // SAFETY (each arm): as in `dot`; both rows have `words_per_row(k)` words.
        let (a, b) = match self.isa {
            #[cfg(target_arch = "x86_64")]
            Isa::Avx512 => unsafe { super::avx512::dot_codes2(w0, w1, x) },
            #[cfg(target_arch = "x86_64")]
            Isa::Avx2 => unsafe { super::avx2::dot_codes2(w0, w1, x) },
            _ => return (self.dot(row, w0), self.dot(row, w1)),
        };
        let s = self.sums[row];
        (a.wrapping_sub(s), b.wrapping_sub(s))
    }

    /// Two weight rows against activation rows `r0`, `r1`:
    /// `[w0·x_r0, w1·x_r0, w0·x_r1, w1·x_r1]` (codes decoded once on the SIMD levels of x86_64).
    pub(crate) fn dot2x2(&self, r0: usize, r1: usize, w0: &[u32], w1: &[u32]) -> [i32; 4] {
        let (x0, x1) = (self.row(r0), self.row(r1));
        // SAFETY (each arm): as in `dot`, for both activation rows.
        let d = match self.isa {
            #[cfg(target_arch = "x86_64")]
            Isa::Avx512 => unsafe { super::avx512::dot_codes_2x2(w0, w1, x0, x1) },
            #[cfg(target_arch = "x86_64")]
            Isa::Avx2 => unsafe { super::avx2::dot_codes_2x2(w0, w1, x0, x1) },
            _ => {
                let ((a, b), (c, d)) = (self.dot2(r0, w0, w1), self.dot2(r1, w0, w1));
                return [a, b, c, d];
            }
        };
        let (s0, s1) = (self.sums[r0], self.sums[r1]);
        [
            d[0].wrapping_sub(s0),
            d[1].wrapping_sub(s0),
            d[2].wrapping_sub(s1),
            d[3].wrapping_sub(s1),
        ]
    }
}

/// `Σ x · code` over a plain-order zero-padded row (`x.len() >= 16 · w.len()`), modulo 2^32
/// (see [`Prepared::dot`]).
fn dot_codes_scalar(w: &[u32], x: &[i8]) -> i32 {
    let mut acc = 0i32;
    for (&word, xs) in w.iter().zip(x.chunks_exact(WEIGHTS_PER_WORD)) {
        for (kk, &v) in xs.iter().enumerate() {
            let code = (word >> code_shift(kk)) & 3;
            acc = acc.wrapping_add(code as i32 * i32::from(v));
        }
    }
    acc
}

#[cfg(test)]
mod tests {
    use super::{Isa, Prepared};
    use crate::Error;

    /// A prepared buffer too large to describe is a typed error, not an overflowed size or an
    /// aborting allocation (rows pad to whole blocks: far more bytes than the activations).
    #[test]
    fn an_oversized_prepared_buffer_is_an_error() {
        for isa in [Isa::Scalar, Isa::Avx2, Isa::Avx512, Isa::Neon] {
            for m in [usize::MAX / 8, isize::MAX as usize / 16] {
                match Prepared::new("test", &[], m, 1, isa) {
                    Err(Error::SizeOverflow { .. } | Error::OutOfMemory { .. }) => {}
                    Err(e) => panic!("{isa:?}, M = {m}: {e}"),
                    Ok(_) => panic!("{isa:?}, M = {m}: allocated"),
                }
            }
        }
    }
}
