//! Creating tensors: uploads from host slices, and uninitialised device outputs for ops.

use bitnet_cpu_ref::{QuantizedActivations, TernaryMatrix};
use half::f16;

use crate::context::Gpu;
use crate::engine::Engine;
use crate::error::{Error, Result};
use crate::pool::BufferKind;
use crate::tensor::{DType, Storage, Tensor};

/// `bytes` as little-endian words, zero-padded to a whole word, in a vector allocated with
/// [`word_capacity`]'s errors. Built by extending rather than by copying into a zeroed vector:
/// that wrote every word twice, and a small zeroed vector comes from glibc's `calloc`, which
/// skips the per-thread cache (cpu-ref's `alloc::zeros` has the measurements).
fn to_words(what: &str, bytes: &[u8]) -> Result<Vec<u32>> {
    let mut words = word_capacity(what, bytes.len() as u64)?;
    let whole = bytes.chunks_exact(4);
    let tail = whole.remainder();
    words.extend(whole.map(|w| u32::from_le_bytes([w[0], w[1], w[2], w[3]])));
    if !tail.is_empty() {
        let mut last = [0u8; 4];
        last[..tail.len()].copy_from_slice(tail);
        words.push(u32::from_le_bytes(last));
    }
    Ok(words)
}

/// `bytes` bytes of host words, every word `word` ([`word_capacity`]'s errors).
fn host_words(what: &str, bytes: u64, word: u32) -> Result<Vec<u32>> {
    let mut words = word_capacity(what, bytes)?;
    // Fits usize: `word_capacity` reserved it.
    words.resize(bytes.div_ceil(4) as usize, word);
    Ok(words)
}

/// An empty vector with room for exactly `bytes` bytes of whole words: the host's counterpart
/// of the device's `max_buffer_size` check, so a size the host cannot hold is a typed error —
/// `LimitExceeded` past `isize::MAX` bytes, `OutOfMemory` when the allocator refuses — never a
/// capacity-overflow panic or an allocation abort.
fn word_capacity(what: &str, bytes: u64) -> Result<Vec<u32>> {
    const HOST_MAX: u64 = isize::MAX as u64;
    if bytes > HOST_MAX {
        return Err(Error::LimitExceeded {
            limit: "isize::MAX (host allocation)",
            requested: bytes,
            max: HOST_MAX,
            what: what.to_string(),
        });
    }
    // Fits usize: at most isize::MAX bytes.
    let len = bytes.div_ceil(4) as usize;
    let mut words = Vec::new();
    words
        .try_reserve_exact(len)
        .map_err(|_| Error::OutOfMemory {
            context: format!("allocating {bytes} bytes of host memory for {what}"),
        })?;
    Ok(words)
}

/// Checks that `shape` is non-empty and describes `dtype` data of `bytes` bytes.
fn check_shape(op: &'static str, shape: &[usize], dtype: DType, bytes: usize) -> Result<()> {
    if shape.contains(&0) {
        return Err(Error::EmptyTensor {
            op,
            shape: shape.to_vec(),
        });
    }
    match dtype.data_bytes(shape) {
        Some(b) if b == bytes as u64 => Ok(()),
        Some(b) => Err(Error::ShapeMismatch {
            op,
            detail: format!("shape {shape:?} of {dtype} needs {b} bytes, got {bytes}"),
        }),
        None => Err(Error::ShapeMismatch {
            op,
            detail: format!("shape {shape:?} is not valid for {dtype} (overflow or wrong rank)"),
        }),
    }
}

/// Data bytes of an op's output of `shape`: `ShapeMismatch` when they overflow (or a packed
/// dtype's shape is not 2-D), `EmptyTensor` when zero.
fn output_bytes(op: &'static str, shape: &[usize], dtype: DType) -> Result<u64> {
    let bytes = dtype
        .data_bytes(shape)
        .ok_or_else(|| Error::ShapeMismatch {
            op,
            detail: format!("shape {shape:?} is not valid for {dtype}"),
        })?;
    if bytes == 0 {
        return Err(Error::EmptyTensor {
            op,
            shape: shape.to_vec(),
        });
    }
    Ok(bytes)
}

impl Engine {
    /// One buffer of `bytes` bytes holding `data`: on `gpu` when given, else on the host.
    ///
    /// The context is the caller's, resolved once per tensor: a tensor's data and scales (and
    /// a KV cache's keys and values) must land on the same side even when the policy changes
    /// or the device is lost between their stores — a device tensor with host scales could be
    /// neither launched nor moved.
    fn store(gpu: Option<&Gpu>, what: &str, bytes: u64, data: Option<&[u8]>) -> Result<Storage> {
        match gpu {
            None => Ok(Storage::Host(match data {
                Some(d) => to_words(what, d)?,
                None => host_words(what, bytes, 0)?,
            })),
            Some(g) => {
                // A device lost since the caller resolved the context: `DeviceLost` (a GPU
                // fault, which ops answer by re-running on the CPU), not a dead buffer.
                g.check_health()?;
                crate::chunk::check_buffer(g, what, bytes)?;
                let buf = g.pool.alloc(BufferKind::Storage, bytes, what)?;
                if let Some(d) = data {
                    crate::transfer::write(g, buf.buffer(), 0, d)?;
                }
                Ok(Storage::Device(Box::new(buf)))
            }
        }
    }

    /// A tensor from raw little-endian bytes (and scale bytes for packed dtypes), where the
    /// engine runs ops now.
    pub(crate) fn tensor_from_bytes(
        &self,
        op: &'static str,
        shape: &[usize],
        dtype: DType,
        data: &[u8],
        scales: Option<&[u8]>,
    ) -> Result<Tensor> {
        self.tensor_from_bytes_on(self.gpu_context(), op, shape, dtype, data, scales)
    }

    /// [`Engine::tensor_from_bytes`] on `gpu` (`None`: the host), data and scales alike.
    pub(crate) fn tensor_from_bytes_on(
        &self,
        gpu: Option<&Gpu>,
        op: &'static str,
        shape: &[usize],
        dtype: DType,
        data: &[u8],
        scales: Option<&[u8]>,
    ) -> Result<Tensor> {
        debug_assert!(
            gpu.is_none_or(|g| self.gpu_id() == Some(g.id)),
            "another engine's GPU"
        );
        check_shape(op, shape, dtype, data.len())?;
        let data = Self::store(gpu, op, data.len() as u64, Some(data))?;
        let scales = match scales {
            Some(s) => Some(Self::store(gpu, op, s.len() as u64, Some(s))?),
            None => None,
        };
        Ok(Tensor::from_parts(self.clone(), shape, dtype, data, scales))
    }

    /// An uninitialised device tensor on `gpu` (a pooled buffer, contents unspecified, scales
    /// too for packed dtypes): an op's output on the context the op resolved, never the host
    /// even if the policy changed since (its launch would then fail to bind it).
    pub(crate) fn empty(
        &self,
        gpu: &Gpu,
        op: &'static str,
        shape: &[usize],
        dtype: DType,
    ) -> Result<Tensor> {
        debug_assert_eq!(self.gpu_id(), Some(gpu.id), "another engine's GPU");
        let bytes = output_bytes(op, shape, dtype)?;
        let data = Self::store(Some(gpu), op, bytes, None)?;
        let sb = dtype.scale_bytes(shape);
        let scales = if sb > 0 {
            Some(Self::store(Some(gpu), op, sb, None)?)
        } else {
            None
        };
        Ok(Tensor::from_parts(self.clone(), shape, dtype, data, scales))
    }

    /// A host tensor of a plain `dtype` whose every word is `word` (the CPU side of `fill`,
    /// written once, with the size checks of [`Engine::empty`]).
    pub(crate) fn host_filled(
        &self,
        op: &'static str,
        shape: &[usize],
        dtype: DType,
        word: u32,
    ) -> Result<Tensor> {
        let words = host_words(op, output_bytes(op, shape, dtype)?, word)?;
        let data = Storage::Host(words);
        Ok(Tensor::from_parts(self.clone(), shape, dtype, data, None))
    }

    /// Uploads `values` as a plain `dtype` tensor of `shape` on `gpu`, whatever the policy says
    /// by now: for engine internals that bind the tensor on the context they resolved (an
    /// upload that a concurrent `set_dispatch_policy(Cpu)` turned into a host tensor could not
    /// be bound).
    pub(crate) fn upload_on<T: bytemuck::Pod>(
        &self,
        gpu: &Gpu,
        op: &'static str,
        values: &[T],
        shape: &[usize],
        dtype: DType,
    ) -> Result<Tensor> {
        let bytes = bytemuck::cast_slice(values);
        self.tensor_from_bytes_on(Some(gpu), op, shape, dtype, bytes, None)
    }

    /// Uploads `f32` values of `shape` (row-major).
    pub fn upload_f32(&self, values: &[f32], shape: &[usize]) -> Result<Tensor> {
        self.tensor_from_bytes(
            "upload_f32",
            shape,
            DType::F32,
            bytemuck::cast_slice(values),
            None,
        )
    }

    /// Uploads `f16` values of `shape`.
    pub fn upload_f16(&self, values: &[f16], shape: &[usize]) -> Result<Tensor> {
        self.tensor_from_bytes(
            "upload_f16",
            shape,
            DType::F16,
            bytemuck::cast_slice(values),
            None,
        )
    }

    /// Uploads `i8` values of `shape` (flat, 4 per word).
    pub fn upload_i8(&self, values: &[i8], shape: &[usize]) -> Result<Tensor> {
        self.tensor_from_bytes(
            "upload_i8",
            shape,
            DType::I8,
            bytemuck::cast_slice(values),
            None,
        )
    }

    /// Uploads `u32` values of `shape`.
    pub fn upload_u32(&self, values: &[u32], shape: &[usize]) -> Result<Tensor> {
        self.tensor_from_bytes(
            "upload_u32",
            shape,
            DType::U32,
            bytemuck::cast_slice(values),
            None,
        )
    }

    /// Uploads packed ternary weights `[N, K]` and their scale.
    pub fn upload_ternary(&self, w: &TernaryMatrix) -> Result<Tensor> {
        match self.gpu_context() {
            None => Ok(self.host_ternary(std::sync::Arc::new(w.clone()))),
            Some(g) => self.upload_ternary_on(g, w),
        }
    }

    /// [`Engine::upload_ternary`] of a shared matrix: the CPU engine's tensor *is* the matrix
    /// (`Storage::HostTernary`: no copy, and its BitLinear reads the words without converting
    /// them back); a GPU engine uploads it.
    pub(crate) fn ternary_tensor(&self, w: &std::sync::Arc<TernaryMatrix>) -> Result<Tensor> {
        match self.gpu_context() {
            None => Ok(self.host_ternary(std::sync::Arc::clone(w))),
            Some(g) => self.upload_ternary_on(g, w),
        }
    }

    /// The device copy of `w`'s words and scale on `gpu`, whatever the policy says by now (for
    /// engine internals that bind it on the context they resolved).
    pub(crate) fn upload_ternary_on(&self, gpu: &Gpu, w: &TernaryMatrix) -> Result<Tensor> {
        let scale = [w.scale()];
        self.tensor_from_bytes_on(
            Some(gpu),
            "upload_ternary",
            &[w.n(), w.k()],
            DType::Ternary,
            bytemuck::cast_slice(w.words()),
            Some(bytemuck::cast_slice(&scale)),
        )
    }

    /// The host tensor that is `w` itself (`Storage::HostTernary`).
    fn host_ternary(&self, w: std::sync::Arc<TernaryMatrix>) -> Tensor {
        let scale = Storage::Host(vec![w.scale().to_bits()]);
        let shape = [w.n(), w.k()];
        Tensor::from_parts(
            self.clone(),
            &shape,
            DType::Ternary,
            Storage::HostTernary(w),
            Some(scale),
        )
    }

    /// Uploads quantized activations `[M, K]` (packed rows) and their per-row absmax.
    pub fn upload_activations(&self, x: &QuantizedActivations) -> Result<Tensor> {
        self.upload_activations_in(self.gpu_context(), x)
    }

    /// [`Engine::upload_activations`] on `gpu`, whatever the policy says by now: for engine
    /// internals that bind the tensor on the context they resolved.
    pub(crate) fn upload_activations_on(
        &self,
        gpu: &Gpu,
        x: &QuantizedActivations,
    ) -> Result<Tensor> {
        self.upload_activations_in(Some(gpu), x)
    }

    /// [`Engine::upload_activations`] on `gpu` (`None`: the host).
    fn upload_activations_in(&self, gpu: Option<&Gpu>, x: &QuantizedActivations) -> Result<Tensor> {
        let packed = x.packed();
        self.tensor_from_bytes_on(
            gpu,
            "upload_activations",
            &[x.m(), x.k()],
            DType::QuantizedI8,
            bytemuck::cast_slice(&packed),
            Some(bytemuck::cast_slice(x.absmax())),
        )
    }

    /// This engine's copy of `t` on the device (`t` itself if it already is; an upload if it is a
    /// host tensor; a read-back + upload if it belongs to another engine).
    ///
    /// Errors: `DeviceLost` once the engine's device is lost; `Unsupported` on the CPU engine
    /// and under [`DispatchPolicy::Cpu`](crate::DispatchPolicy::Cpu) (no device to copy to).
    pub fn to_device(&self, t: &Tensor) -> Result<Tensor> {
        use crate::tensor::Location;
        let no_device = || -> Result<Tensor> {
            if let Some(g) = self.gpu_raw() {
                g.check_health()?;
            }
            Err(Error::Unsupported(
                "to_device needs a GPU engine whose policy is not Cpu".into(),
            ))
        };
        let Some(gpu) = self.gpu_context() else {
            return no_device();
        };
        let out = self.to_device_on(gpu, "to_device", t)?;
        // The device may have been lost since the check above, and the upload then made a host
        // tensor: never hand that out as the device copy.
        if out.location() != Location::Device {
            return no_device();
        }
        Ok(out)
    }

    /// [`Engine::to_device`] onto `gpu`, a context the caller already resolved, whatever the
    /// policy says by now: an op that chose the device (a KV cache append) must not fail because
    /// another thread set the policy to `Cpu` in between (it returned `Unsupported`).
    pub(crate) fn to_device_on(&self, gpu: &Gpu, op: &'static str, t: &Tensor) -> Result<Tensor> {
        use crate::tensor::Location;
        if t.engine().gpu_id() == Some(gpu.id) && t.location() == Location::Device {
            return Ok(t.clone());
        }
        let data = t.read_bytes()?;
        let scales = t.read_scale_bytes()?;
        self.tensor_from_bytes_on(
            Some(gpu),
            op,
            t.shape(),
            t.dtype(),
            &data,
            scales.as_deref(),
        )
    }
}

#[cfg(test)]
#[path = "upload_tests.rs"]
mod tests;
