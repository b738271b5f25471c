//! [`ChainOutputs`]: the read side of a [`LinearChain`] run — where its outputs are (one arena
//! for a fused run, one tensor per linear otherwise), and how a read settles them: a flagged or
//! aborted fused run is run again linear by linear, once, and an aborted one stops the chain
//! fusing. The run side is `chain.rs`.

use std::sync::Mutex;
#[cfg(test)]
use std::sync::atomic::Ordering;

use super::{LinearChain, OP};
use crate::error::{Error, Result};
use crate::tensor::Tensor;

/// The outputs of one [`LinearChain::forward_tensor`] run, one vector per linear.
#[derive(Debug)]
pub struct ChainOutputs {
    chain: LinearChain,
    x: Tensor,
    kind: Outputs,
    /// The linear-by-linear re-run of a flagged or aborted fused run, once made (every later
    /// read uses it instead of running the chain again).
    rerun: Mutex<Option<Vec<Result<Tensor>>>>,
    /// How many times that re-run was made (tests).
    #[cfg(test)]
    pub(super) reruns: std::sync::atomic::AtomicUsize,
}

/// Where a run's outputs are, by how the chain ran.
#[derive(Debug)]
pub(super) enum Outputs {
    /// The fused run: every output in one arena, linear i at `offsets[i]`.
    Arena { all: Tensor, offsets: Vec<usize> },
    /// Linear by linear: one tensor each, or the non-finite value that linear failed on.
    Each(Vec<Result<Tensor>>),
}

impl ChainOutputs {
    /// The outputs of a run of `chain` on `x`, found where `kind` says (no re-run made yet).
    pub(super) fn new(chain: LinearChain, x: Tensor, kind: Outputs) -> ChainOutputs {
        ChainOutputs {
            chain,
            x,
            kind,
            rerun: Mutex::new(None),
            #[cfg(test)]
            reruns: Default::default(),
        }
    }

    /// Number of outputs (the chain's linears).
    pub fn len(&self) -> usize {
        self.chain.len()
    }

    /// Always false: a chain has at least one linear.
    pub fn is_empty(&self) -> bool {
        self.chain.is_empty()
    }

    /// Every linear's output, in chain order (waits for the run). An aborted fused run is run
    /// again linear by linear (and the chain stops using the chain kernel), so the values are
    /// always the chain's. A non-finite input or an output that overflowed is
    /// [`Error::NonFinite`] as cpu-ref reports it (op `bitlinear`, the index within the first
    /// failing linear's input or output).
    pub fn read_all(&self) -> Result<Vec<Vec<f32>>> {
        match self.settle()? {
            Settled::Values(v) => Ok(v),
            Settled::Each(ts) => ts.iter().map(|t| t.clone()?.read_f32()).collect(),
        }
    }

    /// Linear `i`'s output (waits for the run; see [`ChainOutputs::read_all`]). It fails only
    /// where linear `i` itself does — its input or output not finite — however the chain ran:
    /// another linear's overflow does not take it down.
    pub fn read(&self, i: usize) -> Result<Vec<f32>> {
        if i >= self.len() {
            return Err(Error::ShapeMismatch {
                op: OP,
                detail: format!("output {i} of a chain of {}", self.len()),
            });
        }
        match self.settle()? {
            Settled::Values(mut v) => Ok(v.swap_remove(i)),
            Settled::Each(mut ts) => ts.swap_remove(i)?.read_f32(),
        }
    }

    /// The run's outputs: a clean fused run's as host vectors, read whole (its outputs share
    /// one buffer); otherwise one tensor per linear, each with its own non-finite flag. A fused
    /// run flags only the first non-finite value of the whole arena, which cannot say which
    /// other linears are sound, so a flagged run is run again linear by linear (only then: the
    /// error path, once per run: later reads use that re-run) — as is an aborted one, after
    /// which the chain stops fusing.
    fn settle(&self) -> Result<Settled> {
        let (all, offsets) = match &self.kind {
            Outputs::Each(ts) => return Ok(Settled::Each(ts.clone())),
            Outputs::Arena { all, offsets } => (all, offsets),
        };
        let mut rerun = self.rerun.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(each) = rerun.as_ref() {
            return Ok(Settled::Each(each.clone()));
        }
        let mut run_each = || -> Result<Settled> {
            let each = self.chain.forward_each(&self.x)?;
            #[cfg(test)]
            self.reruns.fetch_add(1, Ordering::Relaxed);
            *rerun = Some(each.clone());
            Ok(Settled::Each(each))
        };
        match all.read_f32() {
            Ok(v) => Ok(Settled::Values(
                self.chain
                    .inner
                    .links
                    .iter()
                    .zip(offsets)
                    .map(|((l, _), &o)| v[o..o + l.weights().n()].to_vec())
                    .collect(),
            )),
            Err(Error::Aborted { .. }) => {
                self.chain
                    .stop_fusing("a run was aborted on this GPU (workgroups did not run in order)");
                run_each()
            }
            Err(Error::NonFinite { .. }) => run_each(),
            Err(e) => Err(e),
        }
    }
}

/// What [`ChainOutputs::settle`] found.
enum Settled {
    /// Every linear's output, read.
    Values(Vec<Vec<f32>>),
    /// One tensor per linear (or the error it already failed with), to read one by one.
    Each(Vec<Result<Tensor>>),
}
