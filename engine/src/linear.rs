//! [`Linear`]: a BitLinear layer whose ternary weights stay resident, and batched BitNet ops over
//! `[B, M, K]` in one dispatch.
//!
//! A `Linear` keeps its weights on the host (for CPU runs, and to re-run on the CPU after a GPU
//! fault) and, from the first call dispatched to the GPU, on the device — uploaded once, so later
//! GPU calls move only activations and outputs. `Auto` dispatch counts the weights as resident
//! once they are, and from the layer's second call on: a layer is called again and again, and
//! charging the one-time upload to every decision kept a layer whose GPU run won only without
//! that upload on the CPU for good (its weights never went up).
//!
//! Batches: activation quantization is per row and BitLinear per output row, so `[B, M, K]`
//! inputs are `B·M` independent rows; the batched ops view them as one `[B·M, K]` matrix (no copy)
//! and run one quantization dispatch and one BitLinear dispatch for the whole batch (chunked only
//! past the storage-binding limit) — or, for up to 8 rows, one fused dispatch (the batched GEMV
//! quantizes the rows itself and reads each weight once for all of them) — bit-identical to `B`
//! separate calls.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use bitnet_cpu_ref::TernaryMatrix;

use crate::dispatch::{Route, Workload};
use crate::engine::Engine;
use crate::error::{Error, Result};
use crate::normed_input::NormedInput;
use crate::ops::bitnet_group::group_table;
use crate::ops::bitnet_stable::bitlinear_input_ok;
use crate::tensor::{DType, Location, Tensor};

/// A BitLinear layer (`y = x · Wᵀ`) with resident ternary weights; cheap to clone, shareable
/// between threads (see the module docs).
#[derive(Debug, Clone)]
pub struct Linear {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    engine: Engine,
    w: Arc<TernaryMatrix>,
    /// The device copy, once a GPU call needed it.
    device: Mutex<Option<Tensor>>,
    /// Whether `device` holds the copy or the layer was called before: the dispatch decision
    /// then prices the weights as resident (read without the lock; see the module docs).
    resident: AtomicBool,
    /// The grouped GEMV's table for this one matrix (`forward_normed`), once needed.
    table: Mutex<Option<Tensor>>,
}

/// Whether `flag` was already set; sets it. A load first, so that calls after the first one
/// leave the flag's cache line shared between threads (a swap would write it every call).
pub(crate) fn set_once(flag: &AtomicBool) -> bool {
    flag.load(Ordering::Acquire) || {
        flag.store(true, Ordering::Release);
        false
    }
}

impl Linear {
    /// A layer of `engine` with weights `w` (`[N, K]`). Nothing is uploaded yet.
    pub fn new(engine: &Engine, w: TernaryMatrix) -> Linear {
        Linear {
            inner: Arc::new(Inner {
                engine: engine.clone(),
                w: Arc::new(w),
                device: Mutex::new(None),
                resident: AtomicBool::new(false),
                table: Mutex::new(None),
            }),
        }
    }

    /// The host weights.
    pub fn weights(&self) -> &TernaryMatrix {
        &self.inner.w
    }

    /// The engine the layer runs on.
    pub fn engine(&self) -> &Engine {
        &self.inner.engine
    }

    /// The device copy of the weights, uploaded on first use (a failed upload is retried at
    /// the next call). While the engine takes no GPU work (the CPU engine, its device lost, or
    /// the `Cpu` policy), a host copy instead: the layer keeps its host weights, so the dead device's copy
    /// (which reads as `Error::DeviceLost`) is replaced, and tensor ops on the weights run on the
    /// CPU. A host copy is replaced by a device upload once the engine takes GPU work again.
    pub fn device_weights(&self) -> Result<Tensor> {
        let e = &self.inner.engine;
        let mut slot = self.inner.device.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(t) = slot.as_ref().filter(|t| !stale(e, t)) {
            return Ok(t.clone());
        }
        let t = e.ternary_tensor(&self.inner.w)?;
        *slot = Some(t.clone());
        if t.location() == Location::Device {
            self.inner.resident.store(true, Ordering::Release);
        }
        Ok(t)
    }

    /// `y = x · Wᵀ` on the RMSNorm of `input` (see [`NormedInput`]; a BitNet b1.58 sub-norm in
    /// front of the o or down projection): the residual stream after the add (`x + residual`,
    /// or `x` itself) and `y` (`F32` `[M, N]`), bit for bit and error for error
    /// `let (h, xn) = engine.add_rms_norm(..)?` (or `rms_norm`) followed by
    /// `engine.bitlinear_tensor(&xn, &self.device_weights()?)`. One dispatch where the grouped
    /// fused GEMV runs on the layer's own device weights (N a multiple of 4, K of 64, M ≤ 8,
    /// the norm's conditions: [`crate::LinearGroup::forward_normed`]); otherwise those two calls.
    pub fn forward_normed(&self, input: NormedInput<'_>) -> Result<(Tensor, Tensor)> {
        const OP: &str = "bitlinear";
        let (e, w) = (&self.inner.engine, &*self.inner.w);
        let fusable = w.n() % 4 == 0 && w.k() % 64 == 0 && e.gpu_context().is_some();
        let weights = self.device_weights()?;
        if fusable && weights.location() == Location::Device {
            let table = self.group_table()?;
            let fused = e.bitlinear_group_normed(OP, input, (&weights, Some(&table)), &[w.n()]);
            let run = crate::fault::unless_unbuildable(fused)?;
            if let Some((h, mut ys)) = run {
                return Ok((h, ys.remove(0)));
            }
        }
        let (h, xn) = input.separately(e)?;
        Ok((h, e.bitlinear_tensor(&xn, &weights)?))
    }

    /// The grouped GEMV's table for this one matrix (its scale and N) on the engine's device,
    /// uploaded on first use and again after a lost device.
    fn group_table(&self) -> Result<Tensor> {
        let e = &self.inner.engine;
        let mut slot = self.inner.table.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(t) = slot.as_ref().filter(|t| !stale(e, t)) {
            return Ok(t.clone());
        }
        let w = &self.inner.w;
        let t = e.upload_u32(&group_table(&[w.scale()], &[w.n()]), &[8])?;
        *slot = Some(t.clone());
        Ok(t)
    }

    /// Whether a dispatch decision prices the weights as resident (they are, or this layer ran
    /// before); marks the layer as called.
    fn resident(&self) -> bool {
        set_once(&self.inner.resident)
    }

    /// `y[M, N] = x[M, K] · Wᵀ` for f32 activations (quantized per row); the same bits as
    /// [`bitnet_cpu_ref::bitlinear`], on the backend the engine's dispatch policy picks.
    pub fn forward(&self, x: &[f32], m: usize) -> Result<Vec<f32>> {
        let (e, w) = (&self.inner.engine, &*self.inner.w);
        let work = Workload::bitlinear(m, w.n(), w.k(), self.resident());
        match e.route(&work) {
            Route::Cpu => {
                crate::batching::cpu_work(|| bitnet_cpu_ref::bitlinear(x, m, w)).map_err(Into::into)
            }
            route => self.forward_off_cpu(route, work, x, m),
        }
    }

    /// [`Linear::forward`] on every route but the plain CPU one (see `dispatch.rs`).
    #[inline(never)]
    pub(crate) fn forward_off_cpu(
        &self,
        route: Route<'_>,
        work: Workload,
        x: &[f32],
        m: usize,
    ) -> Result<Vec<f32>> {
        let (e, w) = (&self.inner.engine, &*self.inner.w);
        e.off_cpu(
            route,
            "bitlinear",
            &work,
            || bitlinear_input_ok(x, m, w),
            || {
                Ok(crate::batching::cpu_work(|| {
                    bitnet_cpu_ref::bitlinear(x, m, w)
                })?)
            },
            || {
                let xt = e.upload_f32(x, &[m, w.k()])?;
                e.bitlinear_tensor(&xt, &self.device_weights()?)?.read_f32()
            },
        )
    }

    /// [`Linear::forward`] over a batch `x[B, M, K]` → `y[B, M, N]` (one dispatch for the batch).
    pub fn forward_batched(&self, x: &[f32], b: usize, m: usize) -> Result<Vec<f32>> {
        let rows = b.checked_mul(m).ok_or_else(|| Error::ShapeMismatch {
            op: "bitlinear",
            detail: format!("batch {b} x {m} rows overflows"),
        })?;
        self.forward(x, rows)
    }
}

/// Whether a tensor the layer keeps for `e` must be made again: a device copy while the engine
/// takes no GPU work (its device lost, or the `Cpu` policy: the tensor ops' CPU paths would read
/// the whole matrix back from the device on every call), or a host copy made while no GPU took
/// work, now that one does.
fn stale(e: &Engine, t: &Tensor) -> bool {
    match t.location() {
        Location::Device => e.gpu_context().is_none(),
        Location::Host => e.gpu_context().is_some(),
    }
}

impl Engine {
    /// `[B, M, K]` (or any `[.., K]`) `F32` activations as `[rows, K]` rows.
    fn batch_rows(op: &'static str, x: &Tensor) -> Result<(usize, usize)> {
        match *x.shape() {
            [.., k] if x.shape().len() >= 2 => Ok((x.len() / k.max(1), k)),
            ref s => Err(Error::ShapeMismatch {
                op,
                detail: format!(
                    "expected [B, M, K] (or any [.., K] of rank 2 or more) activations, got {s:?}"
                ),
            }),
        }
    }

    /// Activation quantization of a batch `x[B, M, K]` (`F32`) in one dispatch: a `QuantizedI8`
    /// tensor of `[B·M, K]` rows (row `b·M + m` is `x[b, m, ..]`), bit-identical to quantizing
    /// each `[M, K]` slice separately. Any `[.., K]` of rank 2 or more is taken as its rows (more
    /// leading axes are flattened like `B` and `M`).
    pub fn quantize_activations_batched_tensor(&self, x: &Tensor) -> Result<Tensor> {
        const OP: &str = "quantize_activations";
        x.expect_dtype(OP, DType::F32)?;
        let (rows, k) = Engine::batch_rows(OP, x)?;
        self.quantize_activations_tensor(&x.reshape(&[rows, k])?)
    }

    /// BitLinear of a batch `x[B, M, K]` (`F32`) with ternary `w[N, K]` in one quantization and
    /// one BitLinear dispatch: `F32` `[B, M, N]`, bit-identical to `B` calls of
    /// [`Engine::bitlinear_tensor`]. Any `[.., K]` of rank 2 or more works alike (`[.., N]` out).
    pub fn bitlinear_batched_tensor(&self, x: &Tensor, w: &Tensor) -> Result<Tensor> {
        const OP: &str = "bitlinear";
        x.expect_dtype(OP, DType::F32)?;
        let (rows, k) = Engine::batch_rows(OP, x)?;
        let y = self.bitlinear_tensor(&x.reshape(&[rows, k])?, w)?;
        let mut shape = x.shape().to_vec();
        if let (Some(last), Some(&n)) = (shape.last_mut(), y.shape().get(1)) {
            *last = n;
        }
        y.reshape(&shape)
    }
}
