//! Elementwise activations.

use super::elementwise::{ALONE_BELOW_TRANSCENDENTAL_VALUES, ALONE_BELOW_VALUES, map1, with_unary};
use super::math::{gelu, silu};
use crate::error::{Error, Result};
use crate::tensor::{Tensor, TensorRef};

/// Which activation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum UnaryOp {
    /// `max(x, 0)`.
    Relu,
    /// Squared ReLU `r · r` with `r = max(x, 0)` (BitNet b1.58's FFN activation).
    Relu2,
    /// SiLU `x · sigmoid(x)` ([`silu`](super::silu)).
    Silu,
    /// GELU, erf form `0.5 · x · (1 + erf(x / √2))` ([`gelu`](super::gelu)); not the tanh
    /// approximation (PyTorch's `approximate = "tanh"`), which differs by up to 4.7e-4.
    Gelu,
    /// `e^x` (f32 `exp`, correctly rounded or nearly so).
    Exp,
}

impl UnaryOp {
    /// Applies the activation to one value.
    #[inline]
    pub fn apply(self, x: f32) -> f32 {
        match self {
            UnaryOp::Relu => relu(x),
            UnaryOp::Relu2 => {
                let r = relu(x);
                r * r
            }
            UnaryOp::Silu => silu(x),
            UnaryOp::Gelu => gelu(x),
            UnaryOp::Exp => x.exp(),
        }
    }
}

impl UnaryOp {
    /// Values below which this activation runs on the calling thread alone (`elementwise.rs`):
    /// ReLU is plain arithmetic, the others evaluate `exp` or `erf`.
    pub(super) fn alone_below(self) -> usize {
        match self {
            UnaryOp::Relu | UnaryOp::Relu2 => ALONE_BELOW_VALUES,
            UnaryOp::Silu | UnaryOp::Gelu | UnaryOp::Exp => ALONE_BELOW_TRANSCENDENTAL_VALUES,
        }
    }
}

/// `max(x, 0)` with a +0 result for every x <= 0, -0 included (`f32::max` leaves a zero
/// result's sign unspecified; the GPU kernels select the same way).
fn relu(x: f32) -> f32 {
    if x > 0.0 { x } else { 0.0 }
}

/// `op(a)` elementwise, same shape. Errors: non-finite input; non-finite output (`Exp` above
/// ~88.72, `Relu2` above ~1.8e19).
pub fn unary<'a>(op: UnaryOp, a: impl Into<TensorRef<'a, f32>>) -> Result<Tensor<f32>> {
    unary_ref(op, a.into())
}

/// [`unary`] on borrowed operands: its body, compiled in this crate (not per caller).
fn unary_ref(op: UnaryOp, a: TensorRef<'_, f32>) -> Result<Tensor<f32>> {
    let out = unary_values::<Error>(op, a.data())?;
    Ok(Tensor::from_valid(out, a.shape().to_vec()))
}

/// [`unary`]'s values alone (`a` flat, its shape the caller's), with the same checks and
/// errors, in the caller's error type: for an engine that wraps the values in a tensor of its
/// own. It allocates no shape, and its result is built in the caller's `Result` rather than
/// converted from this crate's (a copy that cost a 256-value ReLU a tenth of its time).
pub fn unary_values_as<E: From<Error>>(op: UnaryOp, a: &[f32]) -> std::result::Result<Vec<f32>, E> {
    unary_values(op, a)
}

/// [`unary`]'s map: `op` over `a`, checking `a` and the output in the same pass.
fn unary_values<E: From<Error>>(op: UnaryOp, a: &[f32]) -> std::result::Result<Vec<f32>, E> {
    with_unary!(op, |f| map1("unary", "a", a, op.alone_below(), f))
}
