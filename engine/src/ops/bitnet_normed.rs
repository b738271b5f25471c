//! The norm in front of the grouped and gated fused GEMVs (`bitlinear_gemv_fused_norm.wgsl`):
//! what a [`NormedInput`] adds to their launch — the residual, the norm's weight and `h` bound
//! after the kernel's own buffers, the `RESIDUAL` and `EPS` constants, and status word 0 tagged
//! with the norm op's four checks (see [`crate::NormedInput`] for the API).
//!
//! [`NormPrologue::new`] takes the fused path only where the norm op itself would run on this GPU
//! and pass every check it makes on the host (operands, shapes, weight length, `eps`, index
//! range); anywhere else the caller runs the norm op and the layer separately, which then
//! reports exactly those errors.

use super::float_args;
use super::norm::{check_eps, norm_loops};
use crate::context::Gpu;
use crate::engine::Engine;
use crate::error::Result;
use crate::launch::Launch;
use crate::normed_input::NormedInput;
use crate::status::{NonFiniteCheck, TAG_SHIFT};
use crate::tensor::{DType, Location, Tensor};

/// Word 0's tensors by kind with a residual: `add_rms_norm`'s four status words.
const ADD_TAGS: &[&str] = &["x", "residual", "weight", "output"];
/// Word 0's tensors by kind without: `rms_norm`'s four status words.
const NORM_TAGS: &[&str] = &[
    "x",
    "weight",
    "sum of squares of a row (overflows f32)",
    "output",
];

/// The normed variant's share of one launch.
pub(crate) struct NormPrologue<'a> {
    input: NormedInput<'a>,
    /// `x + residual` (`[M, K]`), or 4 floats of scratch without a residual.
    h: Tensor,
    /// Bound for the residual where there is none (4 floats).
    no_residual: Option<Tensor>,
}

impl<'a> NormPrologue<'a> {
    /// The prologue for `input` on `gpu`, or `None` where the fused path does not apply (the
    /// caller then runs the norm op and the layer separately): an operand not `F32` on this GPU,
    /// shapes or a weight length the norm op rejects, an `eps` it rejects, rows of more than
    /// `2^30` elements in all (the tagged word's index bits), loops lavapipe would cut, or a
    /// device without `storage_buffers` storage bindings per stage for the kernel.
    pub(crate) fn new(
        engine: &Engine,
        gpu: &Gpu,
        input: NormedInput<'a>,
        storage_buffers: u32,
    ) -> Result<Option<NormPrologue<'a>>> {
        const OP: &str = "rms_norm";
        let NormedInput {
            x,
            residual,
            weight,
            eps,
        } = input;
        // On this GPU: the caller's `gpu` is the engine's, taking work.
        let f32_here = |t: &Tensor| {
            t.dtype() == DType::F32
                && !t.is_empty()
                && t.location() == Location::Device
                && t.engine().gpu_id() == Some(gpu.id)
        };
        let &[m, k] = x.shape() else {
            return Ok(None);
        };
        let fits = f32_here(x)
            && f32_here(weight)
            && residual.is_none_or(|r| f32_here(r) && r.shape() == x.shape())
            && weight.len() == k
            && check_eps(OP, eps).is_ok()
            && ((m * k) as u64) < 1 << TAG_SHIFT
            && float_args::loops_fit(gpu, norm_loops(k as u64))
            && gpu.caps.limits.max_storage_buffers_per_shader_stage >= storage_buffers;
        if !fits {
            return Ok(None);
        }
        let (h, no_residual) = match residual {
            Some(_) => (engine.empty(gpu, OP, x.shape(), DType::F32)?, None),
            None => (
                engine.empty(gpu, OP, &[4], DType::F32)?,
                Some(engine.empty(gpu, OP, &[4], DType::F32)?),
            ),
        };
        Ok(Some(NormPrologue {
            input,
            h,
            no_residual,
        }))
    }

    /// The rows the layer reads before the norm (the kernel's `x`).
    pub(crate) fn x(&self) -> &'a Tensor {
        self.input.x
    }

    /// Loop iterations the norm adds to an invocation (lavapipe's limit, with the layer's own).
    pub(crate) fn loops(&self) -> u64 {
        norm_loops(self.input.weight.len() as u64)
    }

    /// Whether any buffer the prologue reads or writes waits on earlier work.
    pub(crate) fn waits(&self, gpu: &Gpu) -> bool {
        use crate::hazard::tensor_waits;
        self.input
            .residual
            .is_some_and(|r| tensor_waits(gpu, r, false))
            || tensor_waits(gpu, self.input.weight, false)
            || tensor_waits(gpu, &self.h, true)
    }

    /// `launch` with the norm's bindings (after the kernel's own), constants and status word 0.
    pub(crate) fn apply<'l>(&'l self, launch: Launch<'l>, check: NonFiniteCheck) -> Launch<'l> {
        let (op, tags) = match self.input.residual {
            Some(_) => ("add_rms_norm", ADD_TAGS),
            None => ("rms_norm", NORM_TAGS),
        };
        // Binding order: res, nw, h (scratch words where there is no residual).
        let launch = match (self.input.residual, &self.no_residual) {
            (Some(r), _) => launch.input(r).input(self.input.weight).output(&self.h),
            (None, Some(s)) => launch.input(s).input(self.input.weight).scratch(&self.h),
            (None, None) => unreachable!("a prologue without a residual holds its scratch"),
        };
        launch
            .constant(
                "RESIDUAL",
                f64::from(u8::from(self.input.residual.is_some())),
            )
            .constant("EPS", f64::from(self.input.eps))
            .check_finite(check.word_op(0, op).tagged(0, tags))
    }

    /// The residual stream after the add: `h`, or `x` itself without a residual.
    pub(crate) fn stream(self) -> Tensor {
        match self.input.residual {
            Some(_) => self.h,
            None => self.input.x.clone(),
        }
    }
}
