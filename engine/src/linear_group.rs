//! [`LinearGroup`]: BitLinear layers that read the same input (a decode step's q, k and v
//! projections, or gate and up) run in one dispatch.
//!
//! Every BitLinear launch behind a barrier costs the GPU a few µs of idle time; a decode step of
//! BitNet-2B4T runs five M = 1 projections per layer on two inputs. A group uploads its matrices'
//! packed rows concatenated into one weight tensor (with a table of each matrix's scale and end
//! row as its scales) and runs the fused GEMV over all of them at once
//! (`ops/bitnet_group.rs`): each output is bit for bit the matrix's own
//! [`Engine::bitlinear_tensor`].
//!
//! Errors of the grouped dispatch, one launch with one status slot: a non-finite `x` fails every
//! output with `NonFinite { tensor: "x", .. }` (as each separate call would); an output that
//! overflows fails *every* output of the group, each reporting the first flagged matrix's index
//! within that matrix's own `[M, N_j]` output (separate calls would fail only that matrix's
//! output). Where the grouped kernel cannot run, the group runs one `bitlinear_tensor` per
//! matrix (on each [`Linear`]'s own resident weights, uploaded on first use) with exactly
//! those calls' results and errors.
//!
//! Memory: the concatenated copy is the group's own. Decode (M ≤ 8) uses only it; prefill
//! (M > 8) runs the GEMMs on each layer's own device weights, so a model that prefills and
//! decodes through its groups keeps both copies of the grouped matrices resident (BitNet-2B4T:
//! about 340 MB more than its 521 MB of packed weights). H200, the 2B4T decode example with
//! q/k/v and gate/up grouped (and RoPE paired): 4.17-4.44 → 3.96-4.11 ms per step.

use bitnet_cpu_ref::layout::words_per_row;

use crate::engine::Engine;
use crate::error::{Error, Result};
use crate::linear::Linear;
use crate::normed_input::NormedInput;
use crate::ops::bitnet_group::{MAX_MATRICES, group_table};
use crate::tensor::{DType, Location, Tensor};

/// BitLinear layers sharing K (and, per call, an input) run as one dispatch where the fused
/// GEMV applies (see the module docs); cheap to clone, shareable between threads.
#[derive(Debug, Clone)]
pub struct LinearGroup {
    /// The layers (their host weights for CPU runs, their own device weights for fallbacks).
    linears: Vec<Linear>,
    /// The concatenated rows `[ΣN_j, K]` on the device with the group table as scales; `None`
    /// where the grouped kernel can never run (CPU engine, more than 3 matrices, a row count
    /// not a multiple of 4, K not a multiple of 64, no subgroups, K past the fused GEMV's, rows
    /// past a binding) or no GPU took work when the group was made.
    concat: Option<Tensor>,
    /// Each matrix's row count N_j.
    ns: Vec<usize>,
}

impl Engine {
    /// A group of `linears` (at least one, all of this engine, all with the same K) whose
    /// forward runs them in one dispatch where it can. Uploads the concatenated rows once on a
    /// GPU engine (up to 3 matrices, each N a multiple of 4, K a multiple of 64, a device whose
    /// fused GEMV runs that K; otherwise the group always runs one BitLinear per matrix). The
    /// choice is made here: a group made while the engine takes no GPU work (the `Cpu` policy)
    /// never groups, so make groups under the policy they will run with.
    ///
    /// Errors: `ShapeMismatch` for an empty group or matrices whose K differ, `EngineMismatch`
    /// for a layer of another engine, upload errors.
    pub fn linear_group(&self, linears: &[&Linear]) -> Result<LinearGroup> {
        const OP: &str = "linear_group";
        let Some(first) = linears.first() else {
            return Err(Error::ShapeMismatch {
                op: OP,
                detail: "a group needs at least one linear".into(),
            });
        };
        let k = first.weights().k();
        for l in linears {
            self.expect_same(l.engine(), OP)?;
            if l.weights().k() != k {
                return Err(Error::ShapeMismatch {
                    op: OP,
                    detail: format!(
                        "weights [{}, {}] vs [{}, {k}]: K must agree",
                        l.weights().n(),
                        l.weights().k(),
                        first.weights().n()
                    ),
                });
            }
        }
        let ns: Vec<usize> = linears.iter().map(|l| l.weights().n()).collect();
        // The grouped launch's own conditions at one row (`bitlinear_group_launch`): a copy
        // it could never run on is memory for nothing (a device without subgroups, K past the
        // fused GEMV's, weights past a binding).
        let groupable = linears.len() <= MAX_MATRICES
            && ns.iter().all(|&n| n > 0 && n % 4 == 0)
            && k % 64 == 0
            && self
                .gpu_context()
                .is_some_and(|g| crate::ops::bitnet_group::fused_rows_fit(g, ns.iter().sum(), k));
        let concat = if groupable {
            // Packed rows are whole words, so the matrices' words concatenate row for row.
            let mut words = Vec::with_capacity(ns.iter().sum::<usize>() * words_per_row(k));
            for l in linears {
                words.extend_from_slice(l.weights().words());
            }
            let scales: Vec<f32> = linears.iter().map(|l| l.weights().scale()).collect();
            let table = group_table(&scales, &ns);
            let t = self.tensor_from_bytes(
                OP,
                &[ns.iter().sum(), k],
                DType::Ternary,
                bytemuck::cast_slice(&words),
                Some(bytemuck::cast_slice(&table)),
            )?;
            // A host copy (no GPU taking work at upload) could never run the grouped kernel.
            (t.location() == Location::Device).then_some(t)
        } else {
            None
        };
        Ok(LinearGroup {
            linears: linears.iter().map(|&l| l.clone()).collect(),
            concat,
            ns,
        })
    }
}

impl LinearGroup {
    /// The layers, in group order.
    pub fn linears(&self) -> &[Linear] {
        &self.linears
    }

    /// Whether the group holds a device copy of its concatenated rows (the grouped dispatch
    /// can run for suitable inputs).
    pub fn grouped(&self) -> bool {
        self.concat.is_some()
    }

    /// `y_j = x · W_jᵀ` for every matrix j of the group: one `F32` tensor `[M, N_j]` per matrix,
    /// bit for bit [`Engine::bitlinear_tensor`]`(x, W_j)`. One dispatch for `F32` device `x` of
    /// M ≤ 8 rows on a GPU with subgroups (K ≤ 15360); otherwise one `bitlinear_tensor` per
    /// matrix (see the module docs for how the errors of the two paths differ).
    pub fn forward_tensor(&self, x: &Tensor) -> Result<Vec<Tensor>> {
        const OP: &str = "bitlinear";
        if let Some(w) = &self.concat {
            let e = self.linears[0].engine();
            let fused = e.bitlinear_group_fused(OP, x, w, &self.ns);
            if let Some(outs) = crate::fault::unless_unbuildable(fused)? {
                return Ok(outs);
            }
        }
        self.linears
            .iter()
            .map(|l| l.engine().bitlinear_tensor(x, &l.device_weights()?))
            .collect()
    }

    /// [`LinearGroup::forward_tensor`] on the RMSNorm of `input` (see [`NormedInput`]): the
    /// residual stream after the add (`x + residual`, or `x` itself) and the outputs, bit for bit
    /// and error for error `let (h, xn) = engine.add_rms_norm(..)?` (or `rms_norm`) followed by
    /// `forward_tensor(&xn)`. One dispatch where the grouped kernel runs and the norm can join it
    /// (its operands `F32` on this GPU, valid for the norm op; a device with 10 storage bindings
    /// per stage); otherwise those two calls.
    pub fn forward_normed(&self, input: NormedInput<'_>) -> Result<(Tensor, Vec<Tensor>)> {
        const OP: &str = "bitlinear";
        if let Some(w) = &self.concat {
            let e = self.linears[0].engine();
            let fused = e.bitlinear_group_normed(OP, input, (w, None), &self.ns);
            if let Some(done) = crate::fault::unless_unbuildable(fused)? {
                return Ok(done);
            }
        }
        let (h, xn) = input.separately(self.linears[0].engine())?;
        Ok((h, self.forward_tensor(&xn)?))
    }
}
