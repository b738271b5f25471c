//! [`GatedLinear`]: a feed-forward block's gate and up projections with its gated activation
//! (BitNet b1.58's `ReLU²(x·W_gateᵀ) · (x·W_upᵀ)`, SwiGLU's SiLU, GeGLU's GELU) as one dispatch.
//!
//! A decode step runs, per layer, the gate and up BitLinears (one grouped dispatch) and then the
//! gated op (another, behind a barrier). A `GatedLinear` uploads the two matrices' packed rows
//! interleaved two by two, so one 4-row block of the fused GEMV holds both projections of two
//! output rows, and its store applies the activation (`ops/bitnet_gated.rs`): the output is bit
//! for bit [`Engine::gated`] of the two [`Engine::bitlinear_tensor`]s, and its errors are theirs
//! (a non-finite `x` or projection as the BitLinear reports it, an activation or product that
//! overflows as the gated op does). Where that kernel cannot run (CPU engine, M > 8, K not a
//! multiple of 64, N odd, no subgroups), [`GatedLinear::forward_tensor`] runs those three ops,
//! on each [`Linear`]'s own resident weights.
//!
//! Memory: the interleaved copy is the layer's own, like a [`crate::LinearGroup`]'s
//! concatenated one (it replaces the gate/up group of a decode step).

use bitnet_cpu_ref::layout::words_per_row;

use crate::UnaryOp;
use crate::engine::Engine;
use crate::error::{Error, Result};
use crate::linear::Linear;
use crate::normed_input::NormedInput;
use crate::ops::bitnet_gated::interleave_rows;
use crate::tensor::{DType, Location, Tensor};

/// Gate and up BitLinears with their activation, one dispatch where the fused GEMV applies (see
/// the module docs); cheap to clone, shareable between threads.
#[derive(Debug, Clone)]
pub struct GatedLinear {
    gate: Linear,
    up: Linear,
    act: UnaryOp,
    /// The interleaved rows `[2N, K]` on the device with gate's and up's scales as its scales;
    /// `None` where the fused kernel can never run (CPU engine, N odd, K not a multiple of 64).
    interleaved: Option<Tensor>,
}

impl Engine {
    /// `act(x·gateᵀ) · (x·upᵀ)` as one layer ([`GatedLinear`]): `gate` and `up` of this engine
    /// with the same `[N, K]`. Uploads the interleaved rows once on a GPU engine (N even, K a
    /// multiple of 64, a device whose fused GEMV runs that K; otherwise every forward runs the
    /// two BitLinears and [`Engine::gated`]). The choice is made here: a layer made while the
    /// engine takes no GPU work (the `Cpu` policy) never fuses.
    ///
    /// Errors: `ShapeMismatch` for matrices of different shapes, `EngineMismatch` for a layer
    /// of another engine, upload errors.
    pub fn gated_linear(&self, gate: &Linear, up: &Linear, act: UnaryOp) -> Result<GatedLinear> {
        const OP: &str = "gated_linear";
        self.expect_same(gate.engine(), OP)?;
        self.expect_same(up.engine(), OP)?;
        let (g, u) = (gate.weights(), up.weights());
        if (g.n(), g.k()) != (u.n(), u.k()) {
            return Err(Error::ShapeMismatch {
                op: OP,
                detail: format!(
                    "gate [{}, {}] and up [{}, {}] must have the same shape",
                    g.n(),
                    g.k(),
                    u.n(),
                    u.k()
                ),
            });
        }
        let (n, k) = (g.n(), g.k());
        // The fused launch's own conditions at one row (`bitlinear_gated_launch`): a copy it
        // could never run on is memory for nothing.
        let fusable = n % 2 == 0
            && k % 64 == 0
            && self
                .gpu_context()
                .is_some_and(|g| crate::ops::bitnet_group::fused_rows_fit(g, 2 * n, k));
        let interleaved = if fusable {
            let words = interleave_rows(g.words(), u.words(), words_per_row(k));
            let scales = [g.scale().to_bits(), u.scale().to_bits()];
            let t = self.tensor_from_bytes(
                OP,
                &[2 * n, k],
                DType::Ternary,
                bytemuck::cast_slice(&words),
                Some(bytemuck::cast_slice(&scales)),
            )?;
            // A host copy (no GPU taking work at upload) could never run the fused kernel.
            (t.location() == Location::Device).then_some(t)
        } else {
            None
        };
        Ok(GatedLinear {
            gate: gate.clone(),
            up: up.clone(),
            act,
            interleaved,
        })
    }
}

impl GatedLinear {
    /// The gate and up layers.
    pub fn linears(&self) -> [&Linear; 2] {
        [&self.gate, &self.up]
    }

    /// The activation applied to the gate projection.
    pub fn activation(&self) -> UnaryOp {
        self.act
    }

    /// Whether the layer holds a device copy of its interleaved rows (the one dispatch can run
    /// for suitable inputs).
    pub fn fused(&self) -> bool {
        self.interleaved.is_some()
    }

    /// `act(x·gateᵀ) · (x·upᵀ)`: an `F32` tensor `[M, N]`, bit for bit and error for error
    /// `engine.gated(act, &engine.bitlinear_tensor(x, gate)?, &engine.bitlinear_tensor(x, up)?)`.
    /// One dispatch for `F32` device `x` of M ≤ 8 rows on a GPU with subgroups (K ≤ 15360).
    pub fn forward_tensor(&self, x: &Tensor) -> Result<Tensor> {
        let e = self.gate.engine();
        if let Some(w) = &self.interleaved
            && let Some(y) =
                crate::fault::unless_unbuildable(e.bitlinear_gated_fused(x, w, self.act))?
        {
            return Ok(y);
        }
        let g = e.bitlinear_tensor(x, &self.gate.device_weights()?)?;
        let u = e.bitlinear_tensor(x, &self.up.device_weights()?)?;
        e.gated(self.act, &g, &u)
    }

    /// [`GatedLinear::forward_tensor`] on the RMSNorm of `input` (see [`NormedInput`]): the
    /// residual stream after the add (`x + residual`, or `x` itself) and the output, bit for bit
    /// and error for error `let (h, xn) = engine.add_rms_norm(..)?` (or `rms_norm`) followed by
    /// `forward_tensor(&xn)`. One dispatch where the fused kernel runs and the norm can join it
    /// (its operands `F32` on this GPU, valid for the norm op; a device with 8 storage bindings
    /// per stage); otherwise those two calls.
    pub fn forward_normed(&self, input: NormedInput<'_>) -> Result<(Tensor, Tensor)> {
        let e = self.gate.engine();
        if let Some(w) = &self.interleaved
            && let Some(done) =
                crate::fault::unless_unbuildable(e.bitlinear_gated_normed(input, w, self.act))?
        {
            return Ok(done);
        }
        let (h, xn) = input.separately(e)?;
        Ok((h, self.forward_tensor(&xn)?))
    }
}
