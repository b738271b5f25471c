//! `QuantizedActivations`: int8 activation rows plus one clamped absmax per row.

use crate::alloc;
use crate::check;
use crate::error::Result;
use crate::layout::{activation_words_per_row, pack_activation_row};
use crate::ternary::check_k;

/// Quantized activations `[M, K]` (`layout.rs`): `i8` values row-major, and per row the clamped
/// absmax `a_m = max(max_k |x[m, k]|, 1e-5)` such that `x ≈ xq · a_m / 127`.
///
/// Built by [`quantize_activations`](crate::quantize_activations) or, from parts computed
/// elsewhere (a GPU read-back), by [`QuantizedActivations::from_parts`].
#[derive(Debug, Clone, PartialEq)]
pub struct QuantizedActivations {
    m: usize,
    k: usize,
    values: Vec<i8>,
    absmax: Vec<f32>,
}

impl QuantizedActivations {
    /// Wraps values and per-row absmax after validating them: `M, K > 0`, `K < 2^24`,
    /// `values.len() == M · K`, `absmax.len() == M`, every `absmax` finite and `>= 1e-5`
    /// ([`SCALE_EPS`](crate::layout::SCALE_EPS), the quantizer's floor). Any `i8`
    /// is accepted (the quantizer itself only yields `-127..=127`, but `-128` is well defined).
    pub fn from_parts(
        values: Vec<i8>,
        absmax: Vec<f32>,
        m: usize,
        k: usize,
    ) -> Result<QuantizedActivations> {
        const OP: &str = "QuantizedActivations::from_parts";
        check::nonzero(OP, "M", m)?;
        check::nonzero(OP, "K", k)?;
        check_k(OP, k)?;
        check::len(OP, "values", check::mul(OP, "M * K", m, k)?, values.len())?;
        check::len(OP, "absmax", m, absmax.len())?;
        check::finite(OP, "absmax", &absmax)?;
        check::scales(OP, "absmax", &absmax)?;
        Ok(QuantizedActivations {
            m,
            k,
            values,
            absmax,
        })
    }

    /// Wraps parts produced by this crate's own quantizer (already valid).
    pub(crate) fn from_valid(values: Vec<i8>, absmax: Vec<f32>, m: usize, k: usize) -> Self {
        debug_assert_eq!(values.len(), m * k);
        debug_assert_eq!(absmax.len(), m);
        QuantizedActivations {
            m,
            k,
            values,
            absmax,
        }
    }

    /// Rows `M`.
    pub fn m(&self) -> usize {
        self.m
    }

    /// Features per row `K`.
    pub fn k(&self) -> usize {
        self.k
    }

    /// The `i8` values, `M · K`, row-major (the unpadded view).
    pub fn values(&self) -> &[i8] {
        &self.values
    }

    /// The clamped absmax `a_m` of each row, `M` of them.
    pub fn absmax(&self) -> &[f32] {
        &self.absmax
    }

    /// The packed view of `layout.rs` that GPU kernels read: `M · 4 · ceil(K / 16)` words, 4 values
    /// per `u32` little-endian, each row zero-padded to a multiple of 16 values.
    pub fn packed(&self) -> Vec<u32> {
        let wpr = activation_words_per_row(self.k);
        let mut out = alloc::zeros::<u32>(self.m * wpr);
        for (row, words) in self
            .values
            .chunks_exact(self.k)
            .zip(out.chunks_exact_mut(wpr))
        {
            pack_activation_row(row, words);
        }
        out
    }

    /// Consumes the activations, returning `(values, absmax)`.
    pub fn into_parts(self) -> (Vec<i8>, Vec<f32>) {
        (self.values, self.absmax)
    }
}
