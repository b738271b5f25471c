//! [`DType`]: a tensor's element type and packing, and the byte sizes its buffers need.

use bitnet_cpu_ref::layout::{activation_words_per_row, words_per_row};

/// Element type (and packing) of a tensor.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DType {
    /// 32-bit float.
    F32,
    /// 16-bit float (IEEE half).
    F16,
    /// Signed byte, flat (not row-padded).
    I8,
    /// 32-bit unsigned integer (indices, raw words).
    U32,
    /// Packed ternary weights `[N, K]` with a per-tensor scale (`TernaryMatrix`).
    Ternary,
    /// Packed int8 activations `[M, K]` with per-row absmax (`QuantizedActivations`).
    QuantizedI8,
}

impl DType {
    /// Lower-case name.
    pub const fn name(self) -> &'static str {
        match self {
            DType::F32 => "f32",
            DType::F16 => "f16",
            DType::I8 => "i8",
            DType::U32 => "u32",
            DType::Ternary => "ternary",
            DType::QuantizedI8 => "quantized_i8",
        }
    }

    /// Bytes of the data buffer for `shape` (before padding to 4), or `None` on overflow / a packed
    /// dtype whose shape is not 2-D.
    pub fn data_bytes(self, shape: &[usize]) -> Option<u64> {
        let n = shape
            .iter()
            .try_fold(1u64, |a, &d| a.checked_mul(d as u64))?;
        match self {
            DType::F32 | DType::U32 => n.checked_mul(4),
            DType::F16 => n.checked_mul(2),
            DType::I8 => Some(n),
            // Words per row times 4 can itself pass u64 for a K near usize::MAX: checked too.
            DType::Ternary => match shape {
                [rows, k] => (words_per_row(*k) as u64)
                    .checked_mul(4)
                    .and_then(|row| (*rows as u64).checked_mul(row)),
                _ => None,
            },
            DType::QuantizedI8 => match shape {
                [rows, k] => (activation_words_per_row(*k) as u64)
                    .checked_mul(4)
                    .and_then(|row| (*rows as u64).checked_mul(row)),
                _ => None,
            },
        }
    }

    /// Bytes of the scales buffer for `shape` (0 for plain dtypes). Saturates at `u64::MAX` for
    /// a row count no buffer could hold (such a shape has no [`data_bytes`](Self::data_bytes)).
    pub fn scale_bytes(self, shape: &[usize]) -> u64 {
        match (self, shape) {
            (DType::Ternary, _) => 4,
            (DType::QuantizedI8, [m, _]) => (*m as u64).saturating_mul(4),
            _ => 0,
        }
    }
}

impl std::fmt::Display for DType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

#[cfg(test)]
mod tests {
    use super::DType;

    /// Sizes past u64 are `None` (a typed error upstream), never a wrapped small size or a
    /// panic: for packed rows the row's own byte count is the first to overflow.
    #[test]
    fn packed_sizes_past_u64_are_none() {
        assert_eq!(DType::QuantizedI8.data_bytes(&[1, usize::MAX]), None);
        assert_eq!(DType::QuantizedI8.data_bytes(&[4, 1 << 62]), None);
        assert_eq!(DType::Ternary.data_bytes(&[1 << 62, 16]), None);
        assert_eq!(DType::QuantizedI8.data_bytes(&[3, 5]), Some(3 * 4 * 4));
        assert_eq!(DType::Ternary.data_bytes(&[3, 17]), Some(3 * 4 * 2));
    }

    /// A scales size past u64 saturates (it used to overflow: a panic in debug builds, a wrapped
    /// small size in release ones).
    #[test]
    fn scale_sizes_past_u64_saturate() {
        assert_eq!(DType::QuantizedI8.scale_bytes(&[usize::MAX, 1]), u64::MAX);
        assert_eq!(DType::QuantizedI8.scale_bytes(&[3, 5]), 12);
        assert_eq!(DType::Ternary.scale_bytes(&[usize::MAX, 1]), 4);
        assert_eq!(DType::F32.scale_bytes(&[usize::MAX]), 0);
    }
}
