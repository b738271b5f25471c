//! Streaming: f32 activations in chunks through activation quantization + BitLinear against a
//! resident [`Linear`], with upload, compute and read-back overlapped.
//!
//! Per chunk *i*: the host writes it into a slot of the upload staging ring (`ring.rs`), records
//! the staging → device copy, the quantization and the BitLinear, and submits together with the
//! read-back copy of the output (whose future completes on the engine's completion thread). The
//! host then moves on to chunk *i + 1* while the GPU works on *i*; results are delivered, in
//! order, once [`IN_FLIGHT`] chunks are queued behind them. So the upload of chunk *i + 1* (host
//! writes into mapped memory, then the copy) and the read-back of chunk *i − 1* overlap the
//! compute on chunk *i*.
//!
//! Dispatch: each chunk runs on the GPU unless the engine's policy (`Auto`: the prediction for
//! the chunk's size with resident weights) says CPU; a GPU fault re-runs the chunk on the CPU from
//! the caller's slice and the layer's host weights (see `fault.rs`).

use std::collections::VecDeque;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::context::Gpu;
use crate::dispatch::Workload;
use crate::engine::{BackendKind, Engine};
use crate::error::{Error, Result};
use crate::fate::{Fate, first_error};
use crate::fault::is_gpu_fault;
use crate::linear::Linear;
use crate::ring::UploadRing;
use crate::tensor::{DType, Storage, Tensor};

/// Chunks submitted ahead of the oldest undelivered one (two in flight behind the current).
pub const IN_FLIGHT: usize = 2;

/// What a stream did and where its host time went.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
#[non_exhaustive]
pub struct StreamStats {
    /// Chunks streamed.
    pub chunks: usize,
    /// Activation rows streamed.
    pub rows: usize,
    /// f32 activation bytes consumed.
    pub input_bytes: u64,
    /// f32 output bytes delivered.
    pub output_bytes: u64,
    /// Chunks computed on the GPU.
    pub gpu_chunks: usize,
    /// Chunks computed on the CPU (policy, prediction or fallback).
    pub cpu_chunks: usize,
    /// Chunks re-run on the CPU after a GPU fault.
    pub fallbacks: usize,
    /// Wall time of the whole stream.
    pub wall: Duration,
    /// Host time writing chunks into the mapped staging ring.
    pub staging: Duration,
    /// Host time waiting for a free staging slot (the GPU was behind).
    pub slot_wait: Duration,
    /// Host time blocked on results (the GPU or the read-back was behind).
    pub result_wait: Duration,
}

impl StreamStats {
    /// Input bytes per second of wall time (the stream's end-to-end host→GPU rate).
    pub fn input_bytes_per_s(&self) -> f64 {
        self.input_bytes as f64 / self.wall.as_secs_f64().max(1e-12)
    }

    /// Input bytes per second of host time spent writing into the staging ring.
    pub fn staging_bytes_per_s(&self) -> f64 {
        self.input_bytes as f64 / self.staging.as_secs_f64().max(1e-12)
    }
}

type Pending = Pin<Box<dyn Future<Output = Result<Vec<f32>>> + Send>>;

/// One chunk between submission and delivery.
struct InFlight<'a> {
    index: usize,
    x: &'a [f32],
    rows: usize,
    /// The GPU read-back, or `None` to compute on the CPU.
    gpu: Option<Pending>,
    /// The chunk was headed for the GPU and failed there before its read-back.
    fell_back: bool,
    /// Its GPU path ran (part of) it on cpu-ref (a CPU adapter's loop limit,
    /// `dispatch::ran_on_host`): a CPU chunk in the counts.
    on_host: bool,
}

impl Engine {
    /// Streams `chunks` (each `[rows_i, K]` f32 activations, row-major) through activation
    /// quantization + BitLinear against `layer` (`[N, K]`), overlapping upload, compute and
    /// read-back (see the module docs). `sink(i, y_i)` receives chunk *i*'s `[rows_i, N]` output,
    /// in order. Errors: a `layer` of another engine (`EngineMismatch`, before any chunk), a
    /// chunk that is not whole rows (`ShapeMismatch`), and the first chunk whose values cpu-ref
    /// rejects (`NonFinite`, index within that chunk) — whichever comes first, every chunk
    /// before it was delivered (so the failing chunk is the one after the last `sink` call; an
    /// error returns no [`StreamStats`]). Each chunk's bits equal [`bitnet_cpu_ref::bitlinear`]
    /// on it.
    pub fn stream_bitlinear<'a, I, F>(
        &self,
        chunks: I,
        layer: &Linear,
        mut sink: F,
    ) -> Result<StreamStats>
    where
        I: IntoIterator<Item = &'a [f32]>,
        F: FnMut(usize, &[f32]) -> Result<()>,
    {
        let started = Instant::now();
        // A layer of another engine would run the chunks dispatched to the CPU and fail the
        // others: rejected up front, as `Engine::linear_chain` rejects one.
        self.expect_same(layer.engine(), "stream_bitlinear")?;
        let (n, k) = (layer.weights().n(), layer.weights().k());
        let mut st = StreamStats::default();
        let mut lent = LentRing(self.gpu_context().map(|g| (g, g.take_ring())));
        let mut ring = lent.0.as_mut().map(|(_, r)| r);
        let mut queue: VecDeque<InFlight<'a>> = VecDeque::new();
        let result = (|| {
            for (index, x) in chunks.into_iter().enumerate() {
                if k == 0 || x.is_empty() || !x.len().is_multiple_of(k) {
                    let e = Error::ShapeMismatch {
                        op: "stream_bitlinear",
                        detail: format!(
                            "chunk {index} has {} values, not whole rows of K = {k}",
                            x.len()
                        ),
                    };
                    // The chunks before this one are delivered first (or fail first).
                    deliver_all(&mut queue, layer, n, &mut st, &mut sink)?;
                    return Err(e);
                }
                let rows = x.len() / k;
                st.chunks += 1;
                st.rows += rows;
                st.input_bytes += 4 * x.len() as u64;
                let work = Workload::bitlinear(rows, n, k, true);
                let mut fell_back = false;
                let mut on_host = false;
                let gpu = match (self.gpu_context(), ring.as_deref_mut()) {
                    (Some(g), Some(r)) if self.choose_backend(&work) == BackendKind::Gpu => {
                        let (submitted, host) = crate::dispatch::noting_host_runs(|| {
                            self.submit_chunk(g, r, x, rows, layer, &mut st)
                        });
                        on_host = host;
                        match submitted {
                            Ok(f) => Some(f),
                            Err(e) if falls_back(self, &e, &work) => {
                                log::log!(
                                    crate::fault::log_level(&e, crate::fault::CPU_RERUN),
                                    "bitnet-wgpu: stream chunk {index} failed on the GPU ({e}); running it on the CPU"
                                );
                                st.fallbacks += 1;
                                fell_back = true;
                                None
                            }
                            Err(e) => {
                                deliver_all(&mut queue, layer, n, &mut st, &mut sink)?;
                                return Err(e);
                            }
                        }
                    }
                    _ => None,
                };
                queue.push_back(InFlight {
                    index,
                    x,
                    rows,
                    gpu,
                    fell_back,
                    on_host,
                });
                while queue.len() > IN_FLIGHT
                    && let Some(c) = queue.pop_front()
                {
                    deliver(c, layer, n, &mut st, &mut sink)?;
                }
            }
            deliver_all(&mut queue, layer, n, &mut st, &mut sink)
        })();
        drop(lent);
        st.wall = started.elapsed();
        result.map(|()| st)
    }

    /// Uploads chunk `x` through the ring, records quantization + BitLinear and submits with
    /// the read-back; returns the read-back's future.
    fn submit_chunk(
        &self,
        g: &Gpu,
        ring: &mut UploadRing,
        x: &[f32],
        rows: usize,
        layer: &Linear,
        st: &mut StreamStats,
    ) -> Result<Pending> {
        let k = layer.weights().k();
        let w = layer.device_weights()?;
        let t = Instant::now();
        let mut waited = Duration::ZERO;
        let (slot, staging) = ring.write(g, bytemuck::cast_slice(x), &mut waited)?;
        st.slot_wait += waited;
        st.staging += t.elapsed() - waited;
        let submitted = self.copy_and_compute(g, &staging, rows, k, &w);
        // Mapped again by the submission thread once the copy is submitted: this thread goes
        // on to the next chunk's staging write meanwhile. (A failed submission fails the
        // chunk's read, whose error takes the fault path in `deliver`.)
        ring.recycle_after_submit(g, slot)?;
        submitted
    }

    /// Records staging → device copy, BitLinear, and starts the read-back (which submits).
    fn copy_and_compute(
        &self,
        g: &Gpu,
        staging: &wgpu::Buffer,
        rows: usize,
        k: usize,
        w: &Tensor,
    ) -> Result<Pending> {
        // A device lost since the chunk was routed to it fails this allocation (`DeviceLost`):
        // a GPU fault, which re-runs the chunk on the CPU.
        let xt = self.empty(g, "stream_bitlinear", &[rows, k], DType::F32)?;
        let Storage::Device(dst) = xt.data() else {
            unreachable!("Engine::empty makes device tensors")
        };
        let owner = Fate::new(g.next_seq(), None, &g.slots);
        dst.marks().stamp(owner.seq(), true);
        xt.lineage().extend(std::slice::from_ref(&owner));
        let (src, dst, size) = (staging.clone(), dst.buffer().clone(), 4 * (rows * k) as u64);
        g.scheduler
            .post(Box::new(move |b, _| b.copy(&src, 0, &dst, size, &owner)))?;
        let y = self.bitlinear_tensor(&xt, w)?;
        Ok(Box::pin(y.read_f32_async()))
    }
}

impl Engine {
    /// Uploads `chunks` through the staging ring into two rotating device buffers, submitting per
    /// chunk, and waits for the last: the host→GPU leg of [`Engine::stream_bitlinear`] alone (its
    /// `input_bytes_per_s` is the ring's upload throughput). `Err(Unsupported)` on the CPU engine
    /// and under [`DispatchPolicy::Cpu`](crate::DispatchPolicy), `Err(DeviceLost)` once the
    /// device is lost. An empty chunk is `EmptyTensor`; a chunk whose copy the GPU rejected is
    /// that error (chunks before it were uploaded).
    pub fn stream_upload<'a, I>(&self, chunks: I) -> Result<StreamStats>
    where
        I: IntoIterator<Item = &'a [f32]>,
    {
        let started = Instant::now();
        let Some(g) = self.gpu_context() else {
            // A lost device is reported as such (as `to_device` does), not as a missing GPU.
            if let Some(g) = self.gpu_raw() {
                g.check_health()?;
            }
            return Err(Error::Unsupported(
                "stream_upload needs a GPU engine whose policy is not Cpu".into(),
            ));
        };
        let mut lent = LentRing(Some((g, g.take_ring())));
        let Some((_, ring)) = lent.0.as_mut() else {
            unreachable!("just lent")
        };
        let mut st = StreamStats::default();
        let mut targets: [Option<Tensor>; 2] = [None, None];
        let result = (|| {
            for (i, x) in chunks.into_iter().enumerate() {
                if x.is_empty() {
                    return Err(Error::EmptyTensor {
                        op: "stream_upload",
                        shape: vec![0],
                    });
                }
                // The target first: a failure leaves no written staging slot behind.
                let target = &mut targets[i % 2];
                if target.as_ref().is_none_or(|t| t.len() < x.len()) {
                    *target = Some(self.empty(g, "stream_upload", &[x.len()], DType::F32)?);
                }
                let t = Instant::now();
                let mut waited = Duration::ZERO;
                let (slot, staging) = ring.write(g, bytemuck::cast_slice(x), &mut waited)?;
                st.slot_wait += waited;
                st.staging += t.elapsed() - waited;
                let Some(Storage::Device(dst)) = target.as_ref().map(Tensor::data) else {
                    g.check_health()?; // lost meanwhile: say so
                    return Err(Error::Unsupported(
                        "stream_upload needs device tensors".into(),
                    ));
                };
                let owner = Fate::new(g.next_seq(), None, &g.slots);
                let copied = Arc::clone(&owner);
                let (dst, size) = (dst.buffer().clone(), 4 * x.len() as u64);
                let flushed = g.scheduler.call(move |b, g| {
                    b.copy(&staging, 0, &dst, size, &owner);
                    b.flush(g).map(drop)
                });
                match &flushed {
                    Ok(Ok(())) => ring.recycle(slot),
                    // The job may have failed before its flush took the copy (a panic): the
                    // slot is mapped again only behind a submission of what is still recorded.
                    _ => ring.recycle_after_submit(g, slot)?,
                }
                flushed??;
                // The flush resolved the copy: one rejected even on its own (`batch.rs`) fails
                // the upload, as it fails the reads of a tensor it wrote.
                if let Some(e) = first_error(std::slice::from_ref(&copied)) {
                    return Err(e);
                }
                st.chunks += 1;
                st.input_bytes += size;
            }
            self.sync()
        })();
        drop(lent);
        st.wall = started.elapsed();
        result.map(|()| st)
    }
}

/// Whether a chunk's GPU error re-runs it on the CPU, as an op's does (`reruns_on_cpu`, which
/// also remembers a shape the device cannot take).
fn falls_back(engine: &Engine, e: &Error, work: &Workload) -> bool {
    match engine.gpu_raw() {
        Some(g) => crate::dispatch::reruns_on_cpu(g, e, work),
        None => is_gpu_fault(e),
    }
}

/// Delivers every queued chunk, oldest first (stopping at the first error).
fn deliver_all<F: FnMut(usize, &[f32]) -> Result<()>>(
    queue: &mut VecDeque<InFlight<'_>>,
    layer: &Linear,
    n: usize,
    st: &mut StreamStats,
    sink: &mut F,
) -> Result<()> {
    while let Some(c) = queue.pop_front() {
        deliver(c, layer, n, st, sink)?;
    }
    Ok(())
}

/// Delivers the oldest chunk: its GPU result, or the CPU's (by choice or after a GPU fault).
fn deliver<F: FnMut(usize, &[f32]) -> Result<()>>(
    c: InFlight<'_>,
    layer: &Linear,
    n: usize,
    st: &mut StreamStats,
    sink: &mut F,
) -> Result<()> {
    let cpu = || Ok::<_, Error>(bitnet_cpu_ref::bitlinear(c.x, c.rows, layer.weights())?);
    // Each chunk counts in `dispatch_stats` as the op it is, once its backend is known: a CPU
    // run, a GPU run, or a fallback as `Engine::off_cpu` counts one (not timed: chunks overlap,
    // so no chunk's own time is seen).
    let count = |i: usize| {
        if let Some(g) = layer.engine().gpu_raw() {
            g.dispatch.count(i);
        }
    };
    let y = match c.gpu {
        None => {
            count(if c.fell_back { 2 } else { 0 });
            st.cpu_chunks += 1;
            cpu()?
        }
        Some(f) => {
            let t = Instant::now();
            let r = pollster::block_on(f);
            st.result_wait += t.elapsed();
            match r {
                Ok(y) if c.on_host => {
                    count(0);
                    st.cpu_chunks += 1;
                    y
                }
                Ok(y) => {
                    count(1);
                    st.gpu_chunks += 1;
                    y
                }
                Err(e)
                    if falls_back(
                        layer.engine(),
                        &e,
                        &Workload::bitlinear(c.rows, n, layer.weights().k(), true),
                    ) =>
                {
                    count(2);
                    log::log!(
                        crate::fault::log_level(&e, crate::fault::CPU_RERUN),
                        "bitnet-wgpu: stream chunk {} failed on the GPU ({e}); re-running it on the CPU",
                        c.index
                    );
                    st.fallbacks += 1;
                    st.cpu_chunks += 1;
                    cpu()?
                }
                Err(e) => return Err(e),
            }
        }
    };
    st.output_bytes += 4 * (c.rows * n) as u64;
    sink(c.index, &y)
}

/// The ring a stream borrowed, given back on every exit: unwinding included (a panicking sink
/// or chunk iterator left the engine without its ring, so later streams built new ones).
struct LentRing<'g>(Option<(&'g Gpu, UploadRing)>);
impl Drop for LentRing<'_> {
    fn drop(&mut self) {
        if let Some((g, r)) = self.0.take() {
            g.return_ring(r);
        }
    }
}

impl Gpu {
    /// The engine's upload ring (a fresh one if another stream holds it).
    pub(crate) fn take_ring(&self) -> UploadRing {
        self.ring
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take()
            .unwrap_or_default()
    }

    /// Gives the ring back for the next stream.
    pub(crate) fn return_ring(&self, ring: UploadRing) {
        let mut slot = self.ring.lock().unwrap_or_else(|e| e.into_inner());
        if slot.is_none() {
            *slot = Some(ring);
        }
    }
}

#[cfg(test)]
#[path = "stream_tests.rs"]
mod tests;
