//! `bitnet-cpu-ref`: the pure-Rust CPU reference engine of bitnet-wgpu.
//!
//! It is the correctness oracle every GPU kernel is checked against, and a fast CPU backend in its
//! own right (rayon over rows, AVX2 / AVX-512 VNNI / NEON inner loops with a bit-identical scalar
//! path).
//!
//! * Bit layouts and rounding rules: [`layout`] — the single source of truth for every backend.
//! * BitNet b1.58: [`quantize_weights`] (absmean ternary, packed 2 bits per weight),
//!   [`quantize_activations`] (absmax int8 per row), [`bitlinear`], [`bitlinear_quantized`],
//!   [`bitlinear_accumulate`] (exact `i32` accumulators), [`dequantize_weights`],
//!   [`canonical_abs_sum`].
//! * Float tensors: [`Tensor`] (dense row-major f32 / f16 / i8) and the decoder-block ops in
//!   [`ops`] (matmul, broadcasting elementwise, activations, reductions, RMSNorm, softmax, RoPE, and
//!   the shape ops slice and concat).
//! * Errors: one [`Error`] enum; bad input is reported, never a panic or a NaN.
//!
//! # Results in your own error type
//!
//! Each BitNet op also comes as an `_as` twin, generic over the caller's error type
//! ([`quantize_weights_as`], [`quantize_activations_as`], [`bitlinear_as`],
//! [`bitlinear_quantized_as`], [`bitlinear_accumulate_as`]): same result, errors converted
//! with `From`, for a crate that wraps these errors in its own (bitnet-wgpu does).
//!
//! The two quantizers build their result straight into the caller's `Result`. Converting a
//! `Result` afterwards moves the output through the stack just after the op stored it, and the
//! CPU cannot forward those narrow stores to the move's wider loads: a stall of about 8 ns, 6 %
//! of a 256-value `quantize_activations`. The BitLinear twins convert after the op (a move is
//! nothing next to their work), because a generic body is compiled in the caller's crate, where
//! this crate's kernel helpers are not inlined: built that way, a 1 × 256 × 256 `bitlinear`
//! through bitnet-wgpu ran 6 % slower (H200 host, 2026-12-01).
//!
//! The tensor ops have `_values_as` twins too ([`ops::unary_values_as`],
//! [`ops::binary_values_as`], [`ops::rms_norm_values_as`]): the values alone, with no shape
//! allocated, for an engine that wraps them in a tensor of its own. The maps build their result
//! in the caller's error type; RMSNorm wraps a body compiled here, for the reason above (its rows
//! ran about 10 % slower compiled in bitnet-wgpu).
//!
//! ```
//! let w = [0.5f32, -1.0, 0.0, 2.0]; // [N = 2, K = 2]
//! let wq = bitnet_cpu_ref::quantize_weights(&w, 2, 2)?;
//! assert_eq!(wq.scale(), 0.875); // (0.5 + 1 + 0 + 2) / 4
//! assert_eq!(wq.to_i8(), vec![1, -1, 0, 1]);
//! let y = bitnet_cpu_ref::bitlinear(&[1.0, 1.0], 1, &wq)?;
//! assert_eq!(y.len(), 2);
//! # Ok::<(), bitnet_cpu_ref::Error>(())
//! ```
#![warn(missing_docs)]

mod activations;
mod alloc;
mod bitlinear;
mod canonical_sum;
mod check;
mod error;
mod kernels;
pub mod layout;
pub mod ops;
mod quantize;
mod tensor;
mod ternary;

pub use activations::QuantizedActivations;
pub use bitlinear::{
    BITLINEAR_SPLIT_MACS, bitlinear, bitlinear_accumulate, bitlinear_accumulate_as,
    bitlinear_accumulate_with_isa, bitlinear_as, bitlinear_quantized, bitlinear_quantized_as,
    bitlinear_quantized_with_isa,
};
pub use canonical_sum::{canonical_abs_sum, canonical_abs_sum_with_isa};
pub use error::{Error, Result};
pub use kernels::Isa;
pub use quantize::{
    dequantize_weights, quantize_activations, quantize_activations_as,
    quantize_activations_with_isa, quantize_weights, quantize_weights_as,
    quantize_weights_with_isa,
};
pub use tensor::{Tensor, TensorRef};
pub use ternary::TernaryMatrix;
