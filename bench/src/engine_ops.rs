//! The seam between the benchmark and the engine's resident-tensor BitNet ops.
//!
//! Everything the GPU side times goes through these three functions, so adapting to the engine's
//! op names or signatures is a change in this file only.

use bitnet_wgpu::{Engine, Tensor};

/// Why a resident op could not run (the engine's error, as text for the report).
pub type OpError = String;

/// BitLinear on resident tensors: f32 activations `[M, K]` × packed ternary `[N, K]` → f32
/// `[M, N]`, activation quantization included (what a model's linear layer calls).
pub fn bitlinear(engine: &Engine, x: &Tensor, w: &Tensor) -> Result<Tensor, OpError> {
    engine.bitlinear_tensor(x, w).map_err(|e| e.to_string())
}

/// Absmean weight quantization on a resident f32 `[N, K]` tensor → packed ternary `[N, K]`.
pub fn quantize_weights(engine: &Engine, w: &Tensor) -> Result<Tensor, OpError> {
    engine.quantize_weights_tensor(w).map_err(|e| e.to_string())
}

/// Absmax activation quantization on a resident f32 `[M, K]` tensor → packed int8 `[M, K]`.
pub fn quantize_activations(engine: &Engine, x: &Tensor) -> Result<Tensor, OpError> {
    engine
        .quantize_activations_tensor(x)
        .map_err(|e| e.to_string())
}
