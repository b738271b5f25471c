//! Gated activation on resident `F32` tensors: `act(gate) · up` in one dispatch
//! (`elementwise_gated.wgsl`).
//!
//! A transformer's feed-forward block gates one projection with the activation of another
//! (ReLU² for BitNet b1.58, SiLU for SwiGLU, GELU for GeGLU): as [`Engine::unary`] then
//! [`Engine::binary`]'s `Mul`, two dependent dispatches (each behind a barrier on the GPU, each
//! recorded by the caller) and an intermediate tensor; fused, one dispatch and no intermediate.
//! The kernel runs the unary kernel's activation code (`activation_common.wgsl`) and one f32
//! multiply, so the result is bit for bit the two ops in sequence.

use bitnet_cpu_ref::ops::{self as cpu, UnaryOp};
use bitnet_kernels_wgsl::tensor as kernels;

use super::elementwise::{UnaryParams, unary_code};
use super::float_args::{self, host_f32, store_f32};
use crate::engine::Engine;
use crate::error::{Error, Result};
use crate::pipelines::{Access, Kernel};
use crate::status::NonFiniteCheck;
use crate::tensor::{DType, Tensor};

const OP: &str = "gated";

const GATED: Kernel = Kernel::new(
    kernels::ELEMENTWISE_GATED,
    "main",
    &[Access::Read, Access::Read, Access::ReadWrite],
);

impl Engine {
    /// `act(gate) · up` elementwise on two `F32` tensors of the same shape: a feed-forward
    /// block's gated linear unit (`Relu2` for BitNet b1.58, `Silu` for SwiGLU, `Gelu` for GeGLU;
    /// every [`UnaryOp`]), one GPU dispatch where [`Engine::unary`] and [`Engine::binary`]'s
    /// `Mul` take two. Bit for bit those two ops in sequence, on either backend. Same as
    /// `bitnet_cpu_ref::ops::gated`, whose docs give the errors: shapes that differ (no
    /// broadcasting), a non-finite `gate` or `up`, and `"output"` for a non-finite product —
    /// an activation that overflows included (ReLU² of 1e20 is never a silent `inf`).
    pub fn gated(&self, act: UnaryOp, gate: &Tensor, up: &Tensor) -> Result<Tensor> {
        float_args::operand(self, OP, gate, DType::F32)?;
        float_args::operand(self, OP, up, DType::F32)?;
        if gate.shape() != up.shape() {
            return Err(Error::from(bitnet_cpu_ref::Error::ShapeMismatch {
                op: OP,
                what: "up (must have gate's shape)",
                expected: gate.shape().to_vec(),
                got: up.shape().to_vec(),
            }));
        }
        let on_host = || -> Result<Tensor> {
            store_f32(
                self,
                cpu::gated(act, host_f32(gate)?.view()?, host_f32(up)?.view()?)?,
            )
        };
        self.tensor_op(
            &[gate, up],
            0,
            |gpu| {
                // gate, up and out share their layout: the same element range of each per launch.
                let check = NonFiniteCheck::tensors(OP, ["gate", "up", "output", ""]);
                let inputs = [("gate", gate), ("up", up)];
                self.map_launches(gpu, OP, &GATED, &inputs, check, |r| UnaryParams {
                    len: (r.end - r.start) as u32,
                    op: unary_code(act),
                    base: r.start as u32,
                    pad: 0,
                })
            },
            on_host,
        )
    }
}
