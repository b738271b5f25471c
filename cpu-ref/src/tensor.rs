//! `Tensor<T>`: a dense row-major array with a shape, the storage of the float tensor ops.

use crate::check;
use crate::error::{Error, Result};

/// A dense, row-major (C-order) tensor of `T` (`f32`, [`half::f16`] or `i8` in this crate's ops).
///
/// The shape may have any rank; rank 0 (`&[]`) is a scalar with one element. Every dimension must
/// be at least 1: empty tensors are rejected so that no op ever has to invent a value for an
/// empty reduction or a zero-length axis.
#[derive(Debug, Clone, PartialEq)]
pub struct Tensor<T> {
    data: Vec<T>,
    shape: Vec<usize>,
}

impl<T> Tensor<T> {
    /// Wraps `data` with `shape`. Errors: a zero dimension, a shape whose element count overflows
    /// `usize`, or `data.len()` not equal to that count.
    pub fn new(data: Vec<T>, shape: &[usize]) -> Result<Tensor<T>> {
        const OP: &str = "Tensor::new";
        let numel = numel(OP, shape)?;
        check::len(OP, "data", numel, data.len())?;
        Ok(Tensor {
            data,
            shape: shape.to_vec(),
        })
    }

    /// The dimensions, outermost first.
    pub fn shape(&self) -> &[usize] {
        &self.shape
    }

    /// The elements in row-major order.
    pub fn data(&self) -> &[T] {
        &self.data
    }

    /// Consumes the tensor, returning its elements in row-major order.
    pub fn into_data(self) -> Vec<T> {
        self.data
    }

    /// Consumes the tensor, returning its elements and its shape (both allocations kept, for a
    /// caller that wraps them in a tensor type of its own).
    pub fn into_parts(self) -> (Vec<T>, Vec<usize>) {
        (self.data, self.shape)
    }

    /// Number of elements (the product of the shape; 1 for a scalar).
    pub fn numel(&self) -> usize {
        self.data.len()
    }

    /// Number of dimensions.
    pub fn rank(&self) -> usize {
        self.shape.len()
    }

    /// The same elements under another shape with the same element count.
    pub fn reshape(self, shape: &[usize]) -> Result<Tensor<T>> {
        const OP: &str = "Tensor::reshape";
        let numel = numel(OP, shape)?;
        if numel != self.data.len() {
            return Err(Error::ShapeMismatch {
                op: OP,
                what: "element count must not change",
                expected: self.shape,
                got: shape.to_vec(),
            });
        }
        Ok(Tensor {
            data: self.data,
            shape: shape.to_vec(),
        })
    }

    /// Builds a tensor whose shape the crate has already validated.
    pub(crate) fn from_valid(data: Vec<T>, shape: Vec<usize>) -> Tensor<T> {
        debug_assert_eq!(data.len(), shape.iter().product::<usize>());
        Tensor { data, shape }
    }
}

/// A borrowed [`Tensor`]: values that live elsewhere (an engine's storage, a growing cache)
/// under a shape, with `Tensor::new`'s checks, so an op can read them without a copy. Ops that
/// take one also take `&Tensor` (through `From`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TensorRef<'a, T> {
    data: &'a [T],
    shape: &'a [usize],
}

impl<'a, T> TensorRef<'a, T> {
    /// `data` under `shape`. Errors: those of [`Tensor::new`].
    pub fn new(data: &'a [T], shape: &'a [usize]) -> Result<TensorRef<'a, T>> {
        const OP: &str = "TensorRef::new";
        let numel = numel(OP, shape)?;
        check::len(OP, "data", numel, data.len())?;
        Ok(TensorRef { data, shape })
    }

    /// The dimensions, outermost first.
    pub fn shape(&self) -> &'a [usize] {
        self.shape
    }

    /// The elements in row-major order.
    pub fn data(&self) -> &'a [T] {
        self.data
    }

    /// Number of elements (the product of the shape; 1 for a scalar).
    pub fn numel(&self) -> usize {
        self.data.len()
    }
}

impl<'a, T> From<&'a Tensor<T>> for TensorRef<'a, T> {
    fn from(t: &'a Tensor<T>) -> TensorRef<'a, T> {
        TensorRef {
            data: &t.data,
            shape: &t.shape,
        }
    }
}

/// The element count of `shape` (1 for rank 0), rejecting zero dimensions and overflow.
pub(crate) fn numel(op: &'static str, shape: &[usize]) -> Result<usize> {
    shape.iter().try_fold(1usize, |acc, &d| {
        check::nonzero(op, "a shape entry", d)?;
        check::mul(op, "product of the shape", acc, d)
    })
}
