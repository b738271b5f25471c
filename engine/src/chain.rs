//! [`LinearChain`]: the linear layers of one decode step — M = 1 BitLinears, each reading the
//! step's input vector or an earlier linear's output — as one GPU dispatch.
//!
//! A decode step is a chain of small dependent GEMVs. Run as one dispatch each, every dependent
//! dispatch waits behind a pipeline barrier for the whole GPU to drain (about 2 µs on the H200,
//! plus the ramp-up of the next), and for BitNet-2B4T that is 120 dependent steps per token:
//! barriers, not bandwidth, set the time. PyTorch's answer is a CUDA graph; ours is
//! `bitlinear_chain_subgroup.wgsl`: one dispatch in which each linear's workgroups wait only for
//! the workgroups that produce their input, with their first weights already loaded.
//!
//! The results are bit for bit those of [`Engine::bitlinear_tensor`] (and cpu-ref) per linear.
//! When the chain kernel cannot run it — no subgroups, a K that is not a multiple of 64 or above
//! the fused GEMV's limit, arenas above the storage-binding limit — or a run was aborted (its
//! in-dispatch waits are bounded, see [`Error::Aborted`]), the chain runs linear by linear through
//! [`Engine::bitlinear_tensor`]. Like [`Linear`], a chain keeps the host weights: CPU runs and the
//! fall-back after a GPU fault use cpu-ref.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use crate::dispatch::{Route, Workload};
use crate::engine::Engine;
use crate::error::{Error, Result};
use crate::linear::Linear;
use crate::ops::bitnet_chain::{ChainDevice, fusable};
use crate::tensor::{DType, Tensor};

const OP: &str = "linear_chain";

/// What one linear of a [`LinearChain`] reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChainInput {
    /// The chain's input vector.
    Input,
    /// The output of the chain's linear with this index (an earlier one).
    Output(usize),
}

/// A chain of M = 1 BitLinears run as one dispatch (see the module docs); cheap to clone,
/// shareable between threads.
#[derive(Debug, Clone)]
pub struct LinearChain {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    engine: Engine,
    input_len: usize,
    links: Vec<(Linear, ChainInput)>,
    /// The arenas, once a fused GPU run needed them (released when runs stop fusing).
    device: Mutex<Option<Arc<ChainDevice>>>,
    /// Runs use the chain kernel (cleared when it cannot run here or a run was aborted).
    fused: AtomicBool,
}

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
    reruns: std::sync::atomic::AtomicUsize,
}

#[derive(Debug)]
enum Outputs {
    /// The fused run: every output in one arena, linear i at `offsets[i]`.
    Arena { all: Tensor, offsets: Vec<usize> },
    /// Linear by linear: one tensor each, or the non-finite value that linear failed on.
    Each(Vec<Result<Tensor>>),
}

impl Engine {
    /// A chain of `links` (linear, what it reads) on an input vector of `input_len` values: every
    /// linear must read the input or an earlier linear's output, and its K must equal that
    /// vector's length. Nothing is uploaded yet.
    pub fn linear_chain(
        &self,
        input_len: usize,
        links: Vec<(Linear, ChainInput)>,
    ) -> Result<LinearChain> {
        if links.is_empty() || input_len == 0 {
            return Err(Error::EmptyTensor {
                op: OP,
                shape: vec![input_len, links.len()],
            });
        }
        for (i, (l, input)) in links.iter().enumerate() {
            self.expect_same(l.engine(), OP)?;
            let len = match *input {
                ChainInput::Input => input_len,
                ChainInput::Output(j) if j < i => links[j].0.weights().n(),
                ChainInput::Output(j) => {
                    return Err(Error::ShapeMismatch {
                        op: OP,
                        detail: format!("linear {i} reads output {j}, which is not earlier"),
                    });
                }
            };
            if l.weights().k() != len {
                return Err(Error::ShapeMismatch {
                    op: OP,
                    detail: format!(
                        "linear {i} has K = {} but reads a vector of {len}",
                        l.weights().k()
                    ),
                });
            }
        }
        Ok(LinearChain {
            inner: Arc::new(Inner {
                engine: self.clone(),
                input_len,
                links,
                device: Mutex::new(None),
                fused: AtomicBool::new(true),
            }),
        })
    }
}

impl LinearChain {
    /// Number of linears.
    pub fn len(&self) -> usize {
        self.inner.links.len()
    }

    /// Always false: a chain has at least one linear.
    pub fn is_empty(&self) -> bool {
        self.inner.links.is_empty()
    }

    /// Length of the input vector.
    pub fn input_len(&self) -> usize {
        self.inner.input_len
    }

    /// Whether GPU runs use the one-dispatch chain kernel (false once it could not run here).
    pub fn is_fused(&self) -> bool {
        self.inner.fused.load(Ordering::Acquire)
    }

    /// Every linear's output for input `x` (`input_len` values), on the backend the engine's
    /// dispatch policy picks; the same bits as cpu-ref's `bitlinear` per linear. A GPU fault
    /// re-runs the chain on the CPU (logged).
    pub fn forward(&self, x: &[f32]) -> Result<Vec<Vec<f32>>> {
        let e = &self.inner.engine;
        let work = self.workload();
        match e.route(work) {
            Route::Cpu => self.forward_cpu(x),
            route => e.off_cpu(
                route,
                OP,
                &work,
                || x.len() == self.inner.input_len,
                || self.forward_cpu(x),
                || {
                    let xt = e.upload_f32(x, &[x.len()])?;
                    self.forward_tensor(&xt)?.read_all()
                },
            ),
        }
    }

    /// Runs the chain on a resident `F32` input of `input_len` values: a device input on an
    /// engine that takes GPU work is recorded on the GPU (one dispatch when the chain kernel
    /// runs, else one per linear; no submit, no wait); otherwise it runs linear by linear through
    /// [`Engine::bitlinear_tensor`] (a host input — the CPU engine, the `Cpu` policy — on the
    /// CPU, now). Read the outputs with [`ChainOutputs::read`] / [`ChainOutputs::read_all`].
    /// A tensor of another engine is [`Error::EngineMismatch`]; another dtype is
    /// [`Error::DTypeMismatch`], another length [`Error::ShapeMismatch`].
    pub fn forward_tensor(&self, x: &Tensor) -> Result<ChainOutputs> {
        let e = &self.inner.engine;
        e.expect_same(x.engine(), OP)?;
        x.expect_dtype(OP, DType::F32)?;
        if x.len() != self.inner.input_len {
            return Err(Error::ShapeMismatch {
                op: OP,
                detail: format!(
                    "input has {} values, the chain takes {}",
                    x.len(),
                    self.inner.input_len
                ),
            });
        }
        // A host input (CPU engine or policy) runs where it lives, as every tensor op does.
        let on_gpu = e.gpu_for(&[x]);
        let kind = match (on_gpu, self.device()?) {
            (Some(gpu), Some(dev)) => {
                let all = e.empty(OP, &[dev.out_len], DType::F32)?;
                dev.record(gpu, x, &all)?;
                Outputs::Arena {
                    all,
                    offsets: dev.offsets.clone(),
                }
            }
            _ => Outputs::Each(self.forward_each(x)?),
        };
        Ok(ChainOutputs {
            chain: self.clone(),
            x: x.clone(),
            kind,
            rerun: Mutex::new(None),
            #[cfg(test)]
            reruns: Default::default(),
        })
    }

    /// The fused run's device state, built on first use; `None` when the chain runs linear by
    /// linear (no GPU to take the work, or the chain kernel cannot run on this one).
    fn device(&self) -> Result<Option<Arc<ChainDevice>>> {
        let e = &self.inner.engine;
        let Some(gpu) = e.gpu_context().filter(|_| self.is_fused()) else {
            return Ok(None);
        };
        let mut slot = self.inner.device.lock().unwrap_or_else(|p| p.into_inner());
        // Checked again under the lock: a read that found its run aborted clears `fused` and
        // then takes the arenas under this lock; a run that passed the check above before the
        // clear would otherwise build them again, and keep them for the chain's lifetime.
        if !self.is_fused() {
            return Ok(None);
        }
        if let Some(d) = slot.as_ref() {
            return Ok(Some(Arc::clone(d)));
        }
        if !fusable(gpu, &self.inner.links) {
            self.inner.fused.store(false, Ordering::Release);
            return Ok(None);
        }
        match ChainDevice::build(e, gpu, &self.inner.links) {
            Ok(d) => Ok(Some(Arc::clone(slot.insert(Arc::new(d))))),
            Err(Error::LimitExceeded { .. }) => {
                self.inner.fused.store(false, Ordering::Release);
                Ok(None)
            }
            Err(err) => Err(err),
        }
    }

    /// The chain linear by linear (on the GPU one fused GEMV dispatch each; host tensors on the
    /// CPU). A non-finite value fails only the linears it reaches, as on the GPU, where it is
    /// reported at the read: on the CPU (or for an input already known to be flagged) it is
    /// found now, and kept as that linear's — and its readers' — result. Any other error fails
    /// the run.
    fn forward_each(&self, x: &Tensor) -> Result<Vec<Result<Tensor>>> {
        let e = &self.inner.engine;
        let mut outs: Vec<Result<Tensor>> = Vec::with_capacity(self.len());
        for (l, input) in &self.inner.links {
            let v = match *input {
                ChainInput::Input => x,
                ChainInput::Output(j) => match &outs[j] {
                    Ok(v) => v,
                    Err(err) => {
                        outs.push(Err(err.clone()));
                        continue;
                    }
                },
            };
            let y = match e.bitlinear_tensor(&v.reshape(&[1, v.len()])?, &l.device_weights()?) {
                Ok(y) => Ok(y.reshape(&[l.weights().n()])?),
                Err(err @ Error::NonFinite { .. }) => Err(err),
                Err(err) => return Err(err),
            };
            outs.push(y);
        }
        Ok(outs)
    }

    /// The chain on the CPU (cpu-ref, linear by linear).
    fn forward_cpu(&self, x: &[f32]) -> Result<Vec<Vec<f32>>> {
        let mut outs: Vec<Vec<f32>> = Vec::with_capacity(self.len());
        for (l, input) in &self.inner.links {
            let v = match *input {
                ChainInput::Input => x,
                ChainInput::Output(j) => &outs[j],
            };
            outs.push(bitnet_cpu_ref::bitlinear(v, 1, l.weights())?);
        }
        Ok(outs)
    }

    /// The dispatch decision's size: every weight read once, one input, every output.
    fn workload(&self) -> Workload {
        let links = &self.inner.links;
        let n: usize = links.iter().map(|(l, _)| l.weights().n()).sum();
        let nk: usize = links
            .iter()
            .map(|(l, _)| l.weights().n() * l.weights().k())
            .sum();
        let resident = self.inner.device.lock().is_ok_and(|d| d.is_some());
        Workload::bitlinear(1, n, nk.div_ceil(n.max(1)), resident)
    }
}

impl ChainOutputs {
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
                log::warn!(
                    "bitnet-wgpu: a {OP} run was aborted on this GPU (workgroups did not run in \
                     order); running chains linear by linear from now on"
                );
                self.chain.inner.fused.store(false, Ordering::Release);
                // Unfused runs never use the arenas again: release them now rather than hold a
                // second copy of every weight for the chain's lifetime.
                let arenas = self
                    .chain
                    .inner
                    .device
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .take();
                drop(arenas);
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

#[cfg(test)]
#[path = "chain_tests.rs"]
mod tests;
