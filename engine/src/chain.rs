//! [`LinearChain`]: the linear layers of one decode step — M = 1 BitLinears, each reading the
//! step's input vector or an earlier linear's output — as one GPU dispatch.
//!
//! A decode step is a chain of small dependent GEMVs. Run as one dispatch each, every dependent
//! dispatch waits behind a pipeline barrier for the whole GPU to drain (about 2 µs on the H200,
//! plus the ramp-up of the next), and for BitNet-2B4T that is 120 dependent steps per token:
//! barriers, not bandwidth, set the time. PyTorch's answer is a CUDA graph; ours is
//! `bitlinear_chain_subgroup.wgsl`: one dispatch in which each linear's workgroups wait only for
//! the workgroups that produce their input, with their first weights already loaded. (Where
//! storage can be declared coherent they poll the input words themselves, in an output arena a
//! small fill dispatch marks unwritten first; elsewhere they poll their producer's count.)
//!
//! The results are bit for bit those of [`Engine::bitlinear_tensor`] (and cpu-ref) per linear.
//! When the chain kernel cannot run it — no subgroups, a K that is not a multiple of 64 or above
//! the fused GEMV's limit, arenas above the storage-binding limit, a driver that fails to build
//! it — or a run was aborted (its in-dispatch waits are bounded, see [`Error::Aborted`]), the
//! chain runs linear by linear through
//! [`Engine::bitlinear_tensor`]. Like [`Linear`], a chain keeps the host weights: CPU runs and the
//! fall-back after a GPU fault use cpu-ref.
//!
//! This file builds and runs chains; reading a run's outputs ([`ChainOutputs`]) is
//! `chain_outputs.rs`.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use crate::dispatch::{Route, Workload};
use crate::engine::Engine;
use crate::error::{Error, Result};
use crate::linear::Linear;
use crate::ops::bitnet_chain::{ChainDevice, fusable};
use crate::tensor::{DType, Tensor};

#[path = "chain_outputs.rs"]
mod outputs;
pub use outputs::ChainOutputs;
use outputs::Outputs;

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
    /// The chain ran before: its decisions price the weights as resident, as a [`Linear`]'s do.
    called: AtomicBool,
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
                called: AtomicBool::new(false),
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
        match e.route(&work) {
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
        // The arenas are built only for a run that will use them: a host input's run goes
        // linear by linear, and a failed build (out of memory) must not fail it.
        let dev = match on_gpu {
            Some(_) => self.device()?,
            None => None,
        };
        let kind = match (on_gpu, dev) {
            (Some(gpu), Some(dev)) => {
                let all = e.empty(gpu, OP, &[dev.out_len], DType::F32)?;
                match dev.record(gpu, x, &all) {
                    Ok(()) => Outputs::Arena {
                        all,
                        offsets: dev.offsets.clone(),
                    },
                    // A driver that cannot build the chain kernel will not build it later
                    // either, nor will a device bind an input it cannot bind now (x is bound
                    // whole): linear by linear from now on, as after an aborted run.
                    Err(err @ (Error::PipelineCreation { .. } | Error::LimitExceeded { .. })) => {
                        self.stop_fusing(&err.to_string());
                        Outputs::Each(self.forward_each(x)?)
                    }
                    Err(err) => return Err(err),
                }
            }
            _ => Outputs::Each(self.forward_each(x)?),
        };
        Ok(ChainOutputs::new(self.clone(), x.clone(), kind))
    }

    /// Turns the chain kernel off for this chain (`why` is logged) and releases its arenas:
    /// unfused runs never use them again, so the chain would otherwise hold a second copy of
    /// every weight for its lifetime.
    pub(crate) fn stop_fusing(&self, why: &str) {
        log::warn!("bitnet-wgpu: {OP}: {why}; running this chain linear by linear from now on");
        self.inner.fused.store(false, Ordering::Release);
        let arenas = self
            .inner
            .device
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        drop(arenas);
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

    /// The chain on the CPU (cpu-ref, linear by linear), from one of rayon's workers when its
    /// linears split into tasks (`BITLINEAR_SPLIT_MACS`, sized by one row: more rows only add
    /// work) and the caller is not one already. A split started from outside the pool hands its
    /// job to a worker and parks the caller (an empty split over 16 threads: 15 µs on the H200
    /// host, 6 µs from a worker), so the chain pays that once instead of once per linear: four
    /// layers of 2B4T's shapes (28 linears) on the H200 host, median 1.61-1.99 → 1.42-1.78 ms
    /// over six alternating rounds (2026-12-02). Done for the chain only: wrapping a
    /// `LinearGroup`'s or `GatedLinear`'s few linears the same way lost
    /// (`docs/perf/host-and-cpu.md`).
    fn forward_cpu(&self, x: &[f32]) -> Result<Vec<Vec<f32>>> {
        let w = self.inner.links.iter().map(|(l, _)| l.weights());
        let macs = w.map(|w| w.n().saturating_mul(w.k())).max().unwrap_or(0);
        if macs < bitnet_cpu_ref::BITLINEAR_SPLIT_MACS || rayon::current_thread_index().is_some() {
            return self.forward_cpu_links(x);
        }
        rayon::scope(|_| self.forward_cpu_links(x))
    }

    /// [`LinearChain::forward_cpu`]'s loop, on the calling thread.
    fn forward_cpu_links(&self, x: &[f32]) -> Result<Vec<Vec<f32>>> {
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

    /// The dispatch decision's size: every weight read once, one input, every output (the
    /// weights priced as resident once uploaded, and from the chain's second call on).
    fn workload(&self) -> Workload {
        let links = &self.inner.links;
        let n: usize = links.iter().map(|(l, _)| l.weights().n()).sum();
        let nk: usize = links
            .iter()
            .map(|(l, _)| l.weights().n() * l.weights().k())
            .sum();
        let called = crate::linear::set_once(&self.inner.called);
        let resident = called || self.inner.device.lock().is_ok_and(|d| d.is_some());
        Workload::bitlinear(1, n, nk.div_ceil(n.max(1)), resident)
    }
}

#[cfg(test)]
#[path = "chain_tests.rs"]
mod tests;
