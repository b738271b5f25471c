//! Shape ops: [`slice()`] (a sub-range along one axis) and [`concat()`] (tensors joined along one
//! axis), and the shape rules they validate with ([`slice_shape`], [`concat_shape`]), which the
//! GPU engine applies too so both backends reject bad input with the same error.
//!
//! They move elements and never compute with them, so unlike the float ops they take any `Copy`
//! element type and do not reject NaN or infinity: every element is copied bit for bit, and the
//! op that computes with a value reports it.

use std::ops::Range;

use crate::alloc;
use crate::error::{Error, Result};
use crate::tensor::{Tensor, numel};

/// `(outer, len, inner)` of a validated `shape` around `axis < rank`: the product of the
/// dimensions before the axis, its length, and the product of those after it.
fn around(shape: &[usize], axis: usize) -> (usize, usize, usize) {
    // Factors of a shape whose product was checked: no overflow.
    let outer = shape[..axis].iter().product();
    let inner = shape[axis + 1..].iter().product();
    (outer, shape[axis], inner)
}

/// The shape of [`slice()`]`(x, axis, range)` for `x` of `shape`: `shape` with `range.len()` along
/// `axis`.
///
/// Errors: a zero dimension or an overflowing element count in `shape` (as [`Tensor::new`]),
/// [`Error::AxisOutOfRange`] for `axis ≥ rank` (a scalar has no axis), [`Error::InvalidRange`] for
/// a range that is empty (`start == end`: tensors are never empty), reversed, or ends past the
/// axis length.
pub fn slice_shape(shape: &[usize], axis: usize, range: Range<usize>) -> Result<Vec<usize>> {
    const OP: &str = "slice";
    numel(OP, shape)?;
    let Some(&len) = shape.get(axis) else {
        return Err(Error::AxisOutOfRange {
            op: OP,
            axis,
            rank: shape.len(),
        });
    };
    if range.start >= range.end || range.end > len {
        return Err(Error::InvalidRange {
            op: OP,
            axis,
            start: range.start,
            end: range.end,
            len,
        });
    }
    let mut out = shape.to_vec();
    out[axis] = range.end - range.start;
    Ok(out)
}

/// The shape of [`concat()`] of tensors of `shapes` along `axis`: the first shape with the sum of
/// the inputs' lengths along `axis`.
///
/// Errors, in this order: no shapes ([`Error::InvalidArgument`], `what: "xs"`),
/// [`Error::AxisOutOfRange`] for `axis` not below the first shape's rank, then per input in order:
/// a zero dimension or an overflowing element count (as [`Tensor::new`]), and
/// [`Error::ShapeMismatch`] for a rank or a dimension off the axis that differs from the first
/// input's — `expected` is the shape that input would need (the first shape with the input's own
/// length along `axis`), `got` its shape. A sum of lengths or an output element count that
/// overflows `usize` is [`Error::SizeOverflow`].
pub fn concat_shape(shapes: &[&[usize]], axis: usize) -> Result<Vec<usize>> {
    const OP: &str = "concat";
    let Some(&first) = shapes.first() else {
        return Err(Error::InvalidArgument {
            op: OP,
            what: "xs",
            reason: "no tensors to concatenate (at least one is needed)",
        });
    };
    if axis >= first.len() {
        return Err(Error::AxisOutOfRange {
            op: OP,
            axis,
            rank: first.len(),
        });
    }
    let mut len = 0usize;
    for &s in shapes {
        numel(OP, s)?;
        let fits = s.len() == first.len()
            && s.iter()
                .zip(first)
                .enumerate()
                .all(|(i, (a, b))| i == axis || a == b);
        if !fits {
            let mut expected = first.to_vec();
            if let Some(&own) = s.get(axis) {
                expected[axis] = own;
            }
            return Err(Error::ShapeMismatch {
                op: OP,
                what: "every input needs the first input's rank and dimensions off the axis",
                expected,
                got: s.to_vec(),
            });
        }
        len = len.checked_add(s[axis]).ok_or(Error::SizeOverflow {
            op: OP,
            what: "sum of the inputs' lengths along the axis",
        })?;
    }
    let mut out = first.to_vec();
    out[axis] = len;
    numel(OP, &out)?;
    Ok(out)
}

/// The elements of `x` whose index along `axis` lies in `range`, all other axes whole:
/// NumPy's `x[:, .., range, ..]`. Same rank as `x`; elements copied bit for bit.
///
/// Errors: those of [`slice_shape`].
pub fn slice<T: Copy>(x: &Tensor<T>, axis: usize, range: Range<usize>) -> Result<Tensor<T>> {
    let shape = slice_shape(x.shape(), axis, range.clone())?;
    let (_, len, inner) = around(x.shape(), axis);
    // Per index before the axis, one contiguous run of `range.len() · inner` elements.
    let (from, run) = (range.start * inner, (range.end - range.start) * inner);
    // At most the input's size: plain allocation, as for other input-sized buffers.
    let mut data = Vec::with_capacity(x.numel() / len * (range.end - range.start));
    for block in x.data().chunks_exact(len * inner) {
        data.extend_from_slice(&block[from..from + run]);
    }
    Ok(Tensor::from_valid(data, shape))
}

/// The tensors `xs` joined along `axis`, in order: NumPy's `concatenate(xs, axis)`. Every input
/// has the first one's rank and dimensions except along `axis`, where the output has the sum of
/// their lengths; elements copied bit for bit. One input gives a copy of it.
///
/// Errors: those of [`concat_shape`]; an output the host cannot allocate
/// ([`Error::OutOfMemory`]).
pub fn concat<T: Copy>(xs: &[&Tensor<T>], axis: usize) -> Result<Tensor<T>> {
    const OP: &str = "concat";
    let shapes: Vec<&[usize]> = xs.iter().map(|x| x.shape()).collect();
    let shape = concat_shape(&shapes, axis)?;
    let (outer, len, inner) = around(&shape, axis);
    // Several inputs may add up to more than the host holds: a fallible allocation.
    let mut data = alloc::with_capacity(OP, "output", outer * len * inner)?;
    // Per index before the axis, each input's run of `len_i · inner` elements in turn.
    let runs: Vec<usize> = xs.iter().map(|x| x.shape()[axis] * inner).collect();
    for o in 0..outer {
        for (x, &run) in xs.iter().zip(&runs) {
            data.extend_from_slice(&x.data()[o * run..(o + 1) * run]);
        }
    }
    Ok(Tensor::from_valid(data, shape))
}
