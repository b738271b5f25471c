//! [`Workload`]: the size of a host-facing op as the dispatch layer sees it.

use crate::calibrate::{GEMV_ROWS, OpClass};

/// The size of one host-facing op, as the dispatch layer sees it: integers only, so building one
/// on the CPU path costs nothing measurable (the float model is evaluated only when needed).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Workload {
    /// The op class.
    pub class: OpClass,
    /// Rows (`M`, or `N` for weight quantization).
    pub rows: usize,
    /// Output features (`N`; 1 for quantization).
    pub n: usize,
    /// Input features (`K`).
    pub k: usize,
    /// Bytes the GPU path uploads beyond the input rows (e.g. weights that are not resident).
    pub extra_upload: usize,
    /// Whether the input rows are quantized activations (`i8` values and one `f32` absmax per
    /// row) rather than `f32` values: a quarter of the bytes to upload.
    pub quantized_input: bool,
}

impl Workload {
    /// Weight quantization of `[n, k]` f32 weights.
    #[inline]
    pub fn quantize_weights(n: usize, k: usize) -> Workload {
        let class = OpClass::QuantizeWeights;
        Workload {
            class,
            rows: n,
            n: 1,
            k,
            extra_upload: 0,
            quantized_input: false,
        }
    }

    /// Activation quantization of `[m, k]` f32 activations.
    #[inline]
    pub fn quantize_activations(m: usize, k: usize) -> Workload {
        let class = OpClass::QuantizeActivations;
        Workload {
            class,
            rows: m,
            n: 1,
            k,
            extra_upload: 0,
            quantized_input: false,
        }
    }

    /// BitLinear of `[m, k]` activations with `[n, k]` weights (uploaded per call unless
    /// `weights_resident`).
    #[inline]
    pub fn bitlinear(m: usize, n: usize, k: usize, weights_resident: bool) -> Workload {
        let class = if m <= GEMV_ROWS {
            OpClass::LinearGemv
        } else {
            OpClass::LinearGemm
        };
        let extra_upload = if weights_resident {
            0
        } else {
            n.saturating_mul(k) / 4
        };
        Workload {
            class,
            rows: m,
            n,
            k,
            extra_upload,
            quantized_input: false,
        }
    }

    /// BitLinear of `[m, k]` already-quantized activations with `[n, k]` weights (uploaded per
    /// call unless `weights_resident`): priced as [`Workload::bitlinear`] but for the input's
    /// bytes, which were priced as `f32` and so sent such ops to the CPU too early.
    #[inline]
    pub fn bitlinear_quantized(m: usize, n: usize, k: usize, weights_resident: bool) -> Workload {
        Workload {
            quantized_input: true,
            ..Workload::bitlinear(m, n, k, weights_resident)
        }
    }

    /// Units of work: elements (quantization) or `M·N·K` (BitLinear).
    #[inline]
    pub fn units(&self) -> u64 {
        (self.rows as u64)
            .saturating_mul(self.n as u64)
            .saturating_mul(self.k as u64)
    }

    /// Bytes the GPU path uploads.
    pub fn upload_bytes(&self) -> f64 {
        // In f64: a workload too large for usize arithmetic is priced, not a panic (the op
        // itself then reports the size error).
        let (rows, elems) = (self.rows as f64, self.rows as f64 * self.k as f64);
        let input = if self.quantized_input {
            elems + 4.0 * rows
        } else {
            4.0 * elems
        };
        input + self.extra_upload as f64
    }

    /// Bytes the GPU path reads back.
    pub fn download_bytes(&self) -> f64 {
        let (rows, elems) = (self.rows as f64, self.rows as f64 * self.k as f64);
        match self.class {
            OpClass::QuantizeWeights => elems / 4.0 + 4.0,
            OpClass::QuantizeActivations => elems + 4.0 * rows,
            OpClass::LinearGemv | OpClass::LinearGemm => 4.0 * rows * self.n as f64,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Quantized activations upload one byte per value and an absmax per row, not four bytes.
    #[test]
    fn quantized_input_is_priced_by_its_own_bytes() {
        let (m, n, k) = (8, 64, 1024);
        let weights = (n * k / 4) as f64;
        let f32_rows = Workload::bitlinear(m, n, k, false);
        let i8_rows = Workload::bitlinear_quantized(m, n, k, false);
        assert_eq!(f32_rows.upload_bytes(), (4 * m * k) as f64 + weights);
        assert_eq!(i8_rows.upload_bytes(), (m * k + 4 * m) as f64 + weights);
        assert_eq!(i8_rows.download_bytes(), f32_rows.download_bytes());
        assert_eq!(
            (i8_rows.class, i8_rows.units()),
            (f32_rows.class, f32_rows.units())
        );
    }
}
