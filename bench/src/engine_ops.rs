//! The seam between the benchmark and the engine's resident-tensor BitNet ops.
//!
//! Everything the GPU side times goes through these three functions, so adapting to the engine's
//! op names or signatures is a change in this file only. While the engine has no resident op for
//! a family, the function says so and the table shows "not measured (…)" instead of a number.

use bitnet_wgpu::{Engine, Tensor};

/// Why a resident op could not run.
pub type OpError = String;

/// BitLinear on resident tensors: f32 activations `[M, K]` × packed ternary `[N, K]` → f32
/// `[M, N]`, activation quantization included (what a model's linear layer calls).
pub fn bitlinear(engine: &Engine, x: &Tensor, w: &Tensor) -> Result<Tensor, OpError> {
    let _ = (engine, x, w);
    Err(NOT_YET.into())
}

/// Absmean weight quantization on a resident f32 `[N, K]` tensor → packed ternary `[N, K]`.
pub fn quantize_weights(engine: &Engine, w: &Tensor) -> Result<Tensor, OpError> {
    let _ = (engine, w);
    Err(NOT_YET.into())
}

/// Absmax activation quantization on a resident f32 `[M, K]` tensor → packed int8 `[M, K]`.
pub fn quantize_activations(engine: &Engine, x: &Tensor) -> Result<Tensor, OpError> {
    let _ = (engine, x);
    Err(NOT_YET.into())
}

const NOT_YET: &str = "the engine has no resident-tensor op for this yet";
