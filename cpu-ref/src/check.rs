//! Small input validators shared by every operation, so each error is reported the same way.

use crate::error::{Error, Result};
use crate::kernels::{Isa, float};

/// `a * b`, or [`Error::SizeOverflow`] naming `what`.
pub(crate) fn mul(op: &'static str, what: &'static str, a: usize, b: usize) -> Result<usize> {
    a.checked_mul(b).ok_or(Error::SizeOverflow { op, what })
}

/// Rejects a zero dimension.
pub(crate) fn nonzero(op: &'static str, dim: &'static str, value: usize) -> Result<()> {
    if value == 0 {
        Err(Error::ZeroDimension { op, dim })
    } else {
        Ok(())
    }
}

/// Rejects a buffer whose length is not `expected`.
pub(crate) fn len(op: &'static str, what: &'static str, expected: usize, got: usize) -> Result<()> {
    if expected == got {
        Ok(())
    } else {
        Err(Error::LengthMismatch {
            op,
            what,
            expected,
            got,
        })
    }
}

/// Rejects a quantization scale (a weight scale, an activation row's absmax) below the floor
/// every quantizer applies ([`SCALE_EPS`](crate::layout::SCALE_EPS)), or not finite, with
/// [`Error::InvalidArgument`]. Scales the quantizers cannot produce can make `s · a / 127`
/// subnormal, which GPUs that flush subnormals turn into 0 where the CPU keeps the value.
pub(crate) fn scales(op: &'static str, what: &'static str, values: &[f32]) -> Result<()> {
    let floor = crate::layout::SCALE_EPS;
    if !values.iter().all(|&v| v.is_finite() && v >= floor) {
        return Err(Error::InvalidArgument {
            op,
            what,
            reason: "must be finite and >= 1e-5 (SCALE_EPS, the quantizers' floor)",
        });
    }
    Ok(())
}

/// Index of the first NaN or infinity in `values`, if any.
pub(crate) fn first_non_finite(values: &[f32]) -> Option<usize> {
    values.iter().position(|v| !v.is_finite())
}

/// Rejects the first NaN or infinity in `values` with [`Error::NonFinite`].
///
/// One branch-free scan of the whole slice (`float::any_non_finite`, 8-lane with AVX2) decides;
/// the exact index is located only on the error path. Baseline 4-lane chunks had been a third of
/// a 256-value RMSNorm's time (its row and its weight checked: 512 values).
pub(crate) fn finite(op: &'static str, tensor: &'static str, values: &[f32]) -> Result<()> {
    if !float::any_non_finite(values, Isa::best()) {
        return Ok(());
    }
    let index = first_non_finite(values).unwrap_or(0);
    Err(Error::NonFinite { op, tensor, index })
}

/// Rejects the first NaN or `+inf` in `values` with [`Error::NonFinite`], letting `-inf` through
/// (softmax's mask value). Scans like [`finite`].
pub(crate) fn finite_or_neg_inf(
    op: &'static str,
    tensor: &'static str,
    values: &[f32],
) -> Result<()> {
    if !float::any_nan_or_pos_inf(values, Isa::best()) {
        return Ok(());
    }
    let index = values
        .iter()
        .position(|v| v.is_nan() || *v == f32::INFINITY)
        .unwrap_or(0);
    Err(Error::NonFinite { op, tensor, index })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every special value at every position of short and vector-length slices, on every ISA
    /// this CPU has: the scans say whether a value is rejected, and the checks name the first.
    #[test]
    fn scans_reject_exactly_nan_and_infinities_at_their_first_index() {
        let nan_neg = f32::from_bits(f32::NAN.to_bits() | 0x8000_0000);
        let nan_low = f32::from_bits(0x7f80_0001);
        let rejected = [f32::NAN, nan_neg, nan_low, f32::INFINITY, f32::NEG_INFINITY];
        let accepted = [
            0.0,
            -0.0,
            f32::MAX,
            f32::MIN,
            f32::MIN_POSITIVE,
            1e-45,
            -1e-45,
        ];
        for isa in Isa::available() {
            for len in [1, 7, 8, 31, 32, 33, 70] {
                let clean: Vec<f32> = (0..len).map(|i| i as f32 - 3.5).collect();
                assert!(!float::any_non_finite(&clean, isa));
                for at in 0..len {
                    for &v in &accepted {
                        let mut x = clean.clone();
                        x[at] = v;
                        assert!(!float::any_non_finite(&x, isa), "{v:e} at {at} of {len}");
                        assert!(!float::any_nan_or_pos_inf(&x, isa));
                    }
                    for &v in &rejected {
                        let mut x = clean.clone();
                        x[at] = v;
                        x[len - 1] = f32::NAN;
                        assert!(float::any_non_finite(&x, isa), "{v:e} at {at} of {len}");
                        let err = finite("t", "x", &x).unwrap_err();
                        assert_eq!(
                            err,
                            Error::NonFinite {
                                op: "t",
                                tensor: "x",
                                index: at
                            }
                        );
                        let mut y = clean.clone();
                        y[at] = v;
                        let masked = v == f32::NEG_INFINITY;
                        assert_eq!(float::any_nan_or_pos_inf(&y, isa), !masked);
                        assert_eq!(finite_or_neg_inf("t", "x", &y).is_ok(), masked);
                    }
                }
            }
        }
    }
}
