//! [`NormedInput`]: a pre-norm sublayer's input — the RMSNorm of the residual stream (after
//! adding the last sublayer's output) — handed to the layer that reads it, so the norm runs
//! inside that layer's dispatch.
//!
//! A decode step normalizes the residual stream twice per layer, and only the q/k/v projections
//! and the gate/up projections read the normalized rows. As ops of their own the norms are two
//! dependent dispatches per layer, each behind a barrier; given to
//! [`LinearGroup::forward_normed`](crate::LinearGroup::forward_normed) and
//! [`GatedLinear::forward_normed`](crate::GatedLinear::forward_normed) (or
//! [`Linear::forward_normed`](crate::Linear::forward_normed)), every workgroup of the
//! projections' fused GEMV normalizes its own row (`bitlinear_gemv_fused_norm.wgsl`) and the
//! norm's dispatch goes (`ops/bitnet_normed.rs`). The results are bit for bit, and the errors
//! error for error, those of [`Engine::add_rms_norm`] (or [`Engine::rms_norm`]) followed by the
//! layer's `forward_tensor`; where the fused kernel cannot run, that is what runs. One difference,
//! as between a [`LinearGroup`](crate::LinearGroup) and separate BitLinears: `h` comes from the
//! layer's launch, so where a layer output overflows, a read of `h` reports that error too.
//!
//! A norm in front of a single BitLinear (BitNet b1.58 2B4T's sub-norms before the o and down
//! projections) joins that BitLinear's dispatch the same way:
//! [`Linear::forward_normed`](crate::Linear::forward_normed) runs the grouped kernel on the
//! layer's own device weights, with an 8-word table of its own.

use crate::engine::Engine;
use crate::error::Result;
use crate::tensor::Tensor;

/// The RMSNorm of `x + residual` (of `x` alone where `residual` is `None`) over its last axis
/// with `weight` and `eps` — [`Engine::add_rms_norm`]'s (or [`Engine::rms_norm`]'s) arguments —
/// as the input of a layer's `forward_normed`.
#[derive(Debug, Clone, Copy)]
pub struct NormedInput<'a> {
    /// The residual stream, `F32` `[M, K]`.
    pub x: &'a Tensor,
    /// The last sublayer's output, added to `x` before the norm (same shape), if any.
    pub residual: Option<&'a Tensor>,
    /// The norm's weight, `K` `F32` elements.
    pub weight: &'a Tensor,
    /// Added to the mean square inside the square root.
    pub eps: f32,
}

impl NormedInput<'_> {
    /// The residual stream after the add (`x + residual`, or `x` itself) and the normalized
    /// rows, by the norm op on `engine`: what a layer's `forward_normed` computes where its
    /// fused kernel cannot run.
    pub(crate) fn separately(&self, engine: &Engine) -> Result<(Tensor, Tensor)> {
        match self.residual {
            Some(r) => engine.add_rms_norm(self.x, r, self.weight, self.eps),
            None => Ok((
                self.x.clone(),
                engine.rms_norm(self.x, self.weight, self.eps)?,
            )),
        }
    }
}
