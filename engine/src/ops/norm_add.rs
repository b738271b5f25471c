//! Residual add fused with RMSNorm on resident `F32` tensors: `h = x + residual` and
//! `rms_norm(h)` in one dispatch, one workgroup per row (`norm_rms_add.wgsl`).
//!
//! A pre-norm transformer block adds each sublayer's output to the residual stream and
//! normalizes the sum for the next sublayer: as two ops, two dependent dispatches (each behind a
//! barrier on the GPU, each recorded by the caller); fused, one. `h` is bit for bit
//! [`Engine::binary`]'s `Add`, and the norm is [`Engine::rms_norm`]'s of `h`.

use bitnet_cpu_ref::ops as cpu;
use bitnet_kernels_wgsl::tensor as kernels;

use super::float_args::{self, host_f32, store_f32};
use super::norm::{Params, gpu_rows, norm_loops, norm_rows};
use crate::engine::Engine;
use crate::error::{Error, Result};
use crate::launch::Launch;
use crate::pipelines::{Access, Kernel};
use crate::status::NonFiniteCheck;
use crate::tensor::{DType, Tensor};

const OP: &str = "add_rms_norm";

const ADD_RMS_NORM: Kernel = Kernel::new(
    kernels::NORM_RMS_ADD,
    "main",
    &[
        Access::Read,
        Access::Read,
        Access::Read,
        Access::ReadWrite,
        Access::ReadWrite,
    ],
);

impl Engine {
    /// `h = x + residual` (`F32`, same shape) and the RMSNorm of `h` over its last axis (length
    /// `L`) with `weight` (`L` elements, any shape), both returned as `(h, normed)`: the step
    /// between a pre-norm transformer block's sublayers (the residual stream and the next
    /// sublayer's input), one GPU dispatch where [`Engine::binary`] and [`Engine::rms_norm`] take
    /// two. Bit for bit `bitnet_cpu_ref::ops::add_rms_norm`, whose docs give the errors: shapes,
    /// `weight` length, non-finite `x`, `residual`, `weight` or `eps`, negative `eps`, and
    /// `"output"` for a row whose sum or sum of squares overflows (at the row's first element)
    /// or a non-finite normalized element. Both outputs fail together (one launch). On the GPU,
    /// `eps` is checked before the tensors, as [`Engine::rms_norm`] does.
    pub fn add_rms_norm(
        &self,
        x: &Tensor,
        residual: &Tensor,
        weight: &Tensor,
        eps: f32,
    ) -> Result<(Tensor, Tensor)> {
        float_args::operand(self, OP, x, DType::F32)?;
        float_args::operand(self, OP, residual, DType::F32)?;
        float_args::operand(self, OP, weight, DType::F32)?;
        if x.shape() != residual.shape() {
            return Err(Error::from(bitnet_cpu_ref::Error::ShapeMismatch {
                op: OP,
                what: "residual (must have x's shape)",
                expected: x.shape().to_vec(),
                got: residual.shape().to_vec(),
            }));
        }
        let (rows, len) = norm_rows(OP, x, weight)?;
        let loops = norm_loops(len);
        let on_host = || -> Result<(Tensor, Tensor)> {
            let (h, y) = cpu::add_rms_norm(
                host_f32(x)?.view()?,
                host_f32(residual)?.view()?,
                host_f32(weight)?.values(),
                eps,
            )?;
            Ok((store_f32(self, h)?, store_f32(self, y)?))
        };
        self.tensor_op(
            &[x, residual, weight],
            loops,
            |gpu| {
                // x, residual, h and y have the same rows.
                let split = gpu_rows(gpu, OP, eps, rows, len)?;
                let h = self.empty(gpu, OP, x.shape(), DType::F32)?;
                let y = self.empty(gpu, OP, x.shape(), DType::F32)?;
                let group = gpu.next_seq();
                for r in &split.chunks {
                    let (off, size, _) = split.binding(0, r);
                    let n = r.end - r.start;
                    Launch::new(gpu, &ADD_RMS_NORM)
                        .input_range(x, off, size)
                        .input_range(residual, off, size)
                        .input(weight)
                        .output_range(&h, off, size)
                        .output_range(&y, off, size)
                        .params(&Params::chunk(r, len, eps))
                        .chunk_of(group)
                        .check_finite(NonFiniteCheck::tensors(
                            OP,
                            ["x", "residual", "weight", "output"],
                        ))
                        .workgroups(n)
                        .run()?;
                }
                Ok((h, y))
            },
            on_host,
        )
    }
}
