//! [`Dims`]: a tensor's shape, stored inline up to [`INLINE_AXES`] dimensions.
//!
//! Every tensor carries its shape, and a small op on the CPU engine costs about as much as a
//! heap allocation: a shape vector of its own was one allocation and one free per op output
//! more than the storage needs (a 256-value ReLU takes ~60 ns in cpu-ref). Shapes of up to
//! [`INLINE_AXES`] dimensions — every shape the engine's kernels take — live in the tensor's
//! header; longer ones (the CPU reference accepts any rank) go to the heap.

/// Dimensions held inline.
pub(crate) const INLINE_AXES: usize = 6;

/// A shape: its dimensions, outermost first.
#[derive(Clone, PartialEq, Eq)]
pub(crate) enum Dims {
    /// Up to [`INLINE_AXES`] dimensions; those past `len` are zero.
    Inline { len: u8, dims: [usize; INLINE_AXES] },
    /// More dimensions than fit inline.
    Heap(Box<[usize]>),
}

impl Dims {
    /// The dimensions of `shape`, inline when they fit.
    #[inline]
    pub(crate) fn new(shape: &[usize]) -> Dims {
        if shape.len() <= INLINE_AXES {
            // Axis by axis, not `copy_from_slice`: a copy of a length known only at run time is
            // a `memcpy` call, and the header's stores after it read its bytes back (8 % of a
            // 256-value ReLU on the CPU engine).
            let dims = std::array::from_fn(|i| shape.get(i).copied().unwrap_or(0));
            Dims::Inline {
                len: shape.len() as u8,
                dims,
            }
        } else {
            Dims::Heap(shape.into())
        }
    }
}

impl std::ops::Deref for Dims {
    type Target = [usize];

    #[inline]
    fn deref(&self) -> &[usize] {
        match self {
            Dims::Inline { len, dims } => &dims[..*len as usize],
            Dims::Heap(dims) => dims,
        }
    }
}

impl std::fmt::Debug for Dims {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Debug::fmt(&**self, f)
    }
}

#[cfg(test)]
mod tests {
    use super::{Dims, INLINE_AXES};

    /// Short shapes stay inline, long ones go to the heap; both read back as given, the scalar
    /// shape included.
    #[test]
    fn shapes_read_back_as_given() {
        let cases: [&[usize]; 4] = [&[], &[3], &[1, 2, 3, 4, 5, 6], &[1, 2, 3, 4, 5, 6, 7]];
        for shape in cases {
            let d = Dims::new(shape);
            assert_eq!(&*d, shape);
            assert_eq!(matches!(d, Dims::Inline { .. }), shape.len() <= INLINE_AXES);
            assert_eq!(format!("{d:?}"), format!("{shape:?}"));
        }
    }
}
