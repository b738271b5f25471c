//! Small input validators shared by every operation, so each error is reported the same way.

use crate::error::{Error, Result};

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

/// Index of the first NaN or infinity in `values`, if any.
pub(crate) fn first_non_finite(values: &[f32]) -> Option<usize> {
    values.iter().position(|v| !v.is_finite())
}

/// Rejects the first NaN or infinity in `values` with [`Error::NonFinite`].
///
/// Scans in 1024-value chunks with a branch-free test per chunk so the common all-finite case
/// vectorizes; the exact index is located only on the error path.
pub(crate) fn finite(op: &'static str, tensor: &'static str, values: &[f32]) -> Result<()> {
    let bad_chunk = values
        .chunks(1024)
        .position(|chunk| chunk.iter().fold(false, |bad, v| bad | !v.is_finite()));
    match bad_chunk {
        None => Ok(()),
        Some(c) => {
            let index = c * 1024 + first_non_finite(&values[c * 1024..]).unwrap_or(0);
            Err(Error::NonFinite { op, tensor, index })
        }
    }
}

/// Rejects the first NaN or `+inf` in `values` with [`Error::NonFinite`], letting `-inf` through
/// (softmax's mask value). Scans like [`finite`]: a branch-free test per 1024-value chunk.
pub(crate) fn finite_or_neg_inf(
    op: &'static str,
    tensor: &'static str,
    values: &[f32],
) -> Result<()> {
    let bad = |v: &f32| v.is_nan() || *v == f32::INFINITY;
    let bad_chunk = values
        .chunks(1024)
        .position(|chunk| chunk.iter().fold(false, |b, v| b | bad(v)));
    match bad_chunk {
        None => Ok(()),
        Some(c) => {
            let index = c * 1024 + values[c * 1024..].iter().position(bad).unwrap_or(0);
            Err(Error::NonFinite { op, tensor, index })
        }
    }
}
