//! Elementwise ops on resident `F32` tensors: `binary` (add, sub, mul, div with NumPy
//! broadcasting), `binary_scalar`, and the `unary` activations. Same results and errors as
//! `bitnet_cpu_ref::ops::{binary, binary_scalar, unary}`: binary results are bit-exact (one IEEE
//! operation; division is correctly rounded in the kernel), activations agree within the suite's
//! `unary` tolerance (shader `exp`). "Bit-exact" holds for normal values: subnormal inputs and
//! results follow the device's float mode — Vulkan lets a driver flush them to zero (lavapipe
//! keeps them), where cpu-ref always keeps them.

use std::ops::Range;

use bitnet_cpu_ref::ops::{self as cpu, BinaryOp, UnaryOp};
use bitnet_kernels_wgsl::tensor as kernels;

use super::broadcast::{self, MAX_AXES};
use super::float_args::{self, host_f32, store_result, store_values};
use crate::context::Gpu;
use crate::engine::Engine;
use crate::error::{Error, Result};
use crate::launch::{Launch, binding_chunks, check_binding};
use crate::pipelines::{Access, Kernel};
use crate::status::NonFiniteCheck;
use crate::tensor::{DType, Tensor};

const BINARY: Kernel = Kernel::new(
    kernels::ELEMENTWISE_BINARY,
    "main",
    &[Access::Read, Access::Read, Access::ReadWrite],
);
const SCALAR: Kernel = Kernel::new(
    kernels::ELEMENTWISE_SCALAR,
    "main",
    &[Access::Read, Access::ReadWrite],
);
const UNARY: Kernel = Kernel::new(
    kernels::ELEMENTWISE_UNARY,
    "main",
    &[Access::Read, Access::ReadWrite],
);
/// Values one workgroup of the linear elementwise kernels covers (256 invocations, 4 values each).
pub(super) const GROUP_VALUES: u64 = kernels::ELEMENTWISE_GROUP_VALUES as u64;

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct BinaryParams {
    len: u32,
    op: u32,
    contiguous: u32,
    out_base: u32,
    a_off: u32,
    b_off: u32,
    pad: [u32; 2],
    // Two vec4 each in WGSL; lanes 6 and 7 unused.
    shape: [u32; 8],
    a_strides: [u32; 8],
    b_strides: [u32; 8],
}

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct ScalarParams {
    len: u32,
    op: u32,
    s: f32,
    base: u32,
}

/// The params of the activation kernels (`elementwise_unary.wgsl`, `elementwise_gated.wgsl`):
/// the chunk's length, the activation's code and the chunk's first flat index.
#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
pub(super) struct UnaryParams {
    pub len: u32,
    pub op: u32,
    pub base: u32,
    pub pad: u32,
}

/// The kernels' op codes.
fn binary_code(op: BinaryOp) -> u32 {
    match op {
        BinaryOp::Add => 0,
        BinaryOp::Sub => 1,
        BinaryOp::Mul => 2,
        BinaryOp::Div => 3,
    }
}

/// The unary kernel's activation codes (`activation` in activation_common.wgsl), shared with
/// the gated kernel.
pub(crate) fn unary_code(op: UnaryOp) -> u32 {
    match op {
        UnaryOp::Relu => 0,
        UnaryOp::Relu2 => 1,
        UnaryOp::Silu => 2,
        UnaryOp::Gelu => 3,
        UnaryOp::Exp => 4,
    }
}

/// Right-aligns six values into the kernel's two vec4.
fn lanes(v: &[u32; MAX_AXES]) -> [u32; 8] {
    let mut out = [0; 8];
    out[..MAX_AXES].copy_from_slice(v);
    out
}

impl Engine {
    /// `op(a, b)` elementwise with NumPy broadcasting on `F32` tensors; the output has the
    /// broadcast shape. Same as `bitnet_cpu_ref::ops::binary`, bit for bit. Errors: shapes that
    /// do not broadcast (as cpu-ref reports them), wrong dtype, non-finite inputs or outputs
    /// (overflow, division by zero; on the GPU reported by reading or checking the output, or a
    /// tensor computed from it), and under `Gpu` a broadcast needing more than 6 index axes
    /// after merging contiguous axes (`Unsupported`; `Auto` runs it on the CPU).
    pub fn binary(&self, op: BinaryOp, a: &Tensor, b: &Tensor) -> Result<Tensor> {
        const OP: &str = "binary";
        float_args::operand(self, OP, a, DType::F32)?;
        float_args::operand(self, OP, b, DType::F32)?;
        let on_host = || -> Result<Tensor> { self.binary_on_host(op, a, b) };
        self.tensor_op(
            &[a, b],
            0,
            |gpu| {
                let shape = cpu::broadcast_shape(a.shape(), b.shape()).ok_or_else(|| {
                    Error::from(bitnet_cpu_ref::Error::ShapeMismatch {
                        op: OP,
                        what: "operands do not broadcast",
                        expected: a.shape().to_vec(),
                        got: b.shape().to_vec(),
                    })
                })?;
                // Checked: broadcasting two large operands ([2^32, 1] + [1, 2^32]) may name an output
                // whose element count overflows, which u32_indexable then refuses.
                let n = shape
                    .iter()
                    .try_fold(1u64, |p, &d| p.checked_mul(d as u64))
                    .unwrap_or(u64::MAX);
                float_args::u32_indexable(OP, "output", n)?;
                let plan = broadcast::plan(
                    OP,
                    &shape,
                    &broadcast::strides_in(a.shape(), &shape),
                    &broadcast::strides_in(b.shape(), &shape),
                )?;
                // An operand with as many elements as the output has the output's layout, so it can be
                // chunked with it; a smaller (broadcast) operand is bound whole and must fit.
                let (a_full, b_full) = (a.len() as u64 == n, b.len() as u64 == n);
                for (t, full, name) in [(a, a_full, "a"), (b, b_full, "b")] {
                    if !full {
                        check_binding(
                            gpu,
                            &format!("{OP}: {name} (broadcast)"),
                            4 * t.len() as u64,
                        )?;
                    }
                }
                let out = self.empty(gpu, OP, &shape, DType::F32)?;
                let group = gpu.next_seq();
                for r in binding_chunks(gpu, OP, n, 4)? {
                    let len = r.end - r.start;
                    let (off, size) = (4 * r.start, 4 * len);
                    let launch = Launch::new(gpu, &BINARY);
                    let launch = if a_full {
                        launch.input_range(a, off, size)
                    } else {
                        launch.input(a)
                    };
                    let launch = if b_full {
                        launch.input_range(b, off, size)
                    } else {
                        launch.input(b)
                    };
                    launch
                        .output_range(&out, off, size)
                        .params(&BinaryParams {
                            len: len as u32,
                            op: binary_code(op),
                            contiguous: u32::from(a_full && b_full),
                            out_base: r.start as u32,
                            a_off: if a_full { r.start as u32 } else { 0 },
                            b_off: if b_full { r.start as u32 } else { 0 },
                            pad: [0; 2],
                            shape: lanes(&plan.shape),
                            a_strides: lanes(&plan.a),
                            b_strides: lanes(&plan.b),
                        })
                        .chunk_of(group)
                        .check_finite(NonFiniteCheck::tensors(OP, ["a", "b", "output", ""]))
                        .workgroups(len.div_ceil(GROUP_VALUES))
                        .run()?;
                }
                Ok(out)
            },
            on_host,
        )
    }

    /// `op(a, s)` for every element of an `F32` tensor (the scalar is the right operand: `Sub` is
    /// `a - s`, `Div` is `a / s`). Same as `bitnet_cpu_ref::ops::binary_scalar`, bit for bit.
    /// Errors: wrong dtype, non-finite `a` or `s`, non-finite outputs.
    pub fn binary_scalar(&self, op: BinaryOp, a: &Tensor, s: f32) -> Result<Tensor> {
        const OP: &str = "binary_scalar";
        float_args::operand(self, OP, a, DType::F32)?;
        let on_host = || -> Result<Tensor> {
            store_result(self, cpu::binary_scalar(op, host_f32(a)?.view()?, s))
        };
        self.tensor_op(
            &[a],
            0,
            |gpu| {
                let check = NonFiniteCheck::tensors(OP, ["a", "s", "output", ""]);
                self.map_launches(gpu, OP, &SCALAR, &[("a", a)], check, |r| ScalarParams {
                    len: (r.end - r.start) as u32,
                    op: binary_code(op),
                    s,
                    base: r.start as u32,
                })
            },
            on_host,
        )
    }

    /// [`Engine::binary`] on the CPU reference (out of line, as [`Engine::unary`]'s): operands of
    /// one shape map without a shape of cpu-ref's; cpu-ref checks others' shapes itself (the
    /// same error as the GPU path's).
    #[inline(never)]
    fn binary_on_host(&self, op: BinaryOp, a: &Tensor, b: &Tensor) -> Result<Tensor> {
        let (ha, hb) = (host_f32(a)?, host_f32(b)?);
        if a.shape() == b.shape() {
            let values = cpu::binary_values_as::<Error>(op, ha.values(), hb.values())?;
            return store_values(self, a.shape(), values);
        }
        store_result(self, cpu::binary(op, ha.view()?, hb.view()?))
    }

    /// [`Engine::unary`] on the CPU reference (kept out of line: the GPU path's frame would
    /// otherwise be set up for every small CPU call).
    #[inline(never)]
    fn unary_on_host(&self, op: UnaryOp, a: &Tensor) -> Result<Tensor> {
        let values = cpu::unary_values_as::<Error>(op, host_f32(a)?.values())?;
        store_values(self, a.shape(), values)
    }

    /// `op(a)` elementwise on an `F32` tensor, same shape. Same formulas as
    /// `bitnet_cpu_ref::ops::unary` (`bitnet_cpu_ref::ops::erf`'s two minimax polynomials for
    /// `Gelu`; sigmoid without overflow for `Silu`). Errors: wrong dtype, non-finite input,
    /// non-finite output (`Exp` above ~88.72, `Relu2` above ~1.8e19).
    pub fn unary(&self, op: UnaryOp, a: &Tensor) -> Result<Tensor> {
        const OP: &str = "unary";
        float_args::operand(self, OP, a, DType::F32)?;
        let on_host = || -> Result<Tensor> { self.unary_on_host(op, a) };
        self.tensor_op(
            &[a],
            0,
            |gpu| {
                let check = NonFiniteCheck::tensors(OP, ["a", "output", "", ""]);
                self.map_launches(gpu, OP, &UNARY, &[("a", a)], check, |r| UnaryParams {
                    len: (r.end - r.start) as u32,
                    op: unary_code(op),
                    base: r.start as u32,
                    pad: 0,
                })
            },
            on_host,
        )
    }
}

impl Engine {
    /// The launches of an elementwise op whose `inputs` (named, non-empty) and output share one
    /// shape and layout: the first input's element count checked for 32-bit indexing, then one
    /// launch of `kernel` per binding chunk, each binding the same element range of every
    /// input and of the output, with `params(range)` (unary, tensor-scalar and gated ops).
    pub(super) fn map_launches<P: bytemuck::Pod>(
        &self,
        gpu: &Gpu,
        op: &'static str,
        kernel: &Kernel,
        inputs: &[(&str, &Tensor)],
        check: NonFiniteCheck,
        params: impl Fn(&Range<u64>) -> P,
    ) -> Result<Tensor> {
        let (name, first) = inputs[0];
        let n = first.len() as u64;
        float_args::u32_indexable(op, name, n)?;
        let out = self.empty(gpu, op, first.shape(), DType::F32)?;
        let group = gpu.next_seq();
        for r in binding_chunks(gpu, op, n, 4)? {
            let (off, size) = (4 * r.start, 4 * (r.end - r.start));
            let launch = inputs.iter().fold(Launch::new(gpu, kernel), |l, &(_, t)| {
                l.input_range(t, off, size)
            });
            launch
                .output_range(&out, off, size)
                .params(&params(&r))
                .chunk_of(group)
                .check_finite(check)
                .workgroups((r.end - r.start).div_ceil(GROUP_VALUES))
                .run()?;
        }
        Ok(out)
    }
}
