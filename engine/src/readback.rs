//! Reading tensors back to the host. Every read is a sync point (see `transfer.rs`) and returns
//! the earliest error of the launches the tensor depends on (`Error::NonFinite` for a flagged
//! NaN/Inf, a failed submission, a lost device) instead of its bytes. Each read has a future form
//! (`*_async`, resolved by the engine's completion thread) and a blocking form (pollster).

use bitnet_cpu_ref::layout::activation_words_per_row;
use bitnet_cpu_ref::{QuantizedActivations, TernaryMatrix};
use half::f16;

use crate::error::{Error, Result};
use crate::tensor::{DType, Storage, Tensor};
use crate::transfer::ReadFuture;

/// The words holding the first `len` bytes of one storage (the last word zero-padded past
/// them); a device read is submitted now.
fn storage_words(t: &Tensor, s: &Storage, len: u64) -> ReadFuture<Vec<u32>> {
    match (s.host_words(), s, t.engine().gpu_raw()) {
        (Some(words), ..) => {
            let v = words[..len.div_ceil(4) as usize].to_vec();
            Box::pin(std::future::ready(Ok(v)))
        }
        (None, Storage::Device(b), Some(_)) => {
            let lineage = t.lineage().snapshot();
            let read = crate::transfer::read(t.engine(), b.buffer().clone(), 0, len, lineage);
            // Chunks after the first are copied when the future runs: the tensor (its pooled
            // buffer) stays checked out until then, or the pool could hand the buffer to another
            // tensor first and the read would return that tensor's bytes.
            let keep = t.clone();
            Box::pin(async move {
                let words = read.await;
                drop(keep);
                words
            })
        }
        _ => Box::pin(std::future::ready(Err(Error::Unsupported(
            "device tensor without a GPU engine".into(),
        )))),
    }
}

/// A future that fails at once.
fn failed<T: Send + 'static>(e: Error) -> ReadFuture<T> {
    Box::pin(std::future::ready(Err(e)))
}

/// The first `len` bytes of little-endian `words`.
fn bytes_of(words: &[u32], len: usize) -> Vec<u8> {
    bytemuck::cast_slice::<u32, u8>(words)[..len].to_vec()
}

/// The `T` values in the first `len` bytes of `words`: 4-byte types take the vector as it is
/// (no copy: a streamed read-back's only copy is the one out of mapped memory), others are
/// copied out.
fn values_of<T: bytemuck::Pod>(mut words: Vec<u32>, len: usize) -> Vec<T> {
    let n = len / size_of::<T>();
    if size_of::<T>() == 4 {
        words.truncate(n);
        match bytemuck::allocation::try_cast_vec::<u32, T>(words) {
            Ok(v) => return v,
            Err((_, w)) => words = w,
        }
    }
    bytemuck::pod_collect_to_vec(&bytemuck::cast_slice::<u32, u8>(&words)[..n * size_of::<T>()])
}

/// Every word of `words` as a 4-byte `T` (scales: whole words).
fn all_values<T: bytemuck::Pod>(words: Vec<u32>) -> Vec<T> {
    let len = 4 * words.len();
    values_of(words, len)
}

impl Tensor {
    /// Waits for the launches this tensor depends on and returns the earliest error among them
    /// (`Error::NonFinite` for a flagged value, the failure of a submission, a lost device) —
    /// exactly what reading it would report, copying one word instead of its bytes. Host
    /// tensors: `Ok`.
    pub fn check_async(&self) -> impl Future<Output = Result<()>> + Send + 'static + use<> {
        let words = match self.data() {
            // One word, not none: mapping its staging buffer is what waits for the launches
            // (unchecked ones resolve at submission) and what notices a lost device.
            Storage::Device(_) => storage_words(self, self.data(), 4),
            Storage::Host(_) | Storage::HostTernary(_) => {
                Box::pin(std::future::ready(Ok(Vec::new())))
            }
        };
        async move { words.await.map(drop) }
    }

    /// Blocking [`Tensor::check_async`].
    pub fn check(&self) -> Result<()> {
        crate::wait::block_on(self.check_async())
    }

    /// The data bytes (logical length, no padding). The read is submitted now; the future
    /// completes it (resolved by the engine's completion thread — no executor needed).
    ///
    /// Every read future shares one exception to not blocking: a failed read-back (a map or
    /// validation error) blocks the poll that sees it for up to a second, typically 250 ms once
    /// the queue drained, while the engine tells a lost device (`DeviceLost`) from a failed map
    /// — the device-lost notice arrives after the failure that betrays it. Only failing reads
    /// pay it; an async server should expect a failing read to hold its executor thread that
    /// long (or run reads on a blocking pool).
    pub fn read_bytes_async(
        &self,
    ) -> impl Future<Output = Result<Vec<u8>>> + Send + 'static + use<> {
        let len = self.data_len();
        let words = storage_words(self, self.data(), len);
        async move { Ok(bytes_of(&words.await?, len as usize)) }
    }

    /// Logical bytes of the data buffer.
    fn data_len(&self) -> u64 {
        self.dtype().data_bytes(self.shape()).unwrap_or(0)
    }

    /// The data bytes (logical length, no padding).
    pub fn read_bytes(&self) -> Result<Vec<u8>> {
        crate::wait::block_on(self.read_bytes_async())
    }

    /// The packed data and the scale bytes of a quantized tensor of `dtype`, both submitted now;
    /// a dtype mismatch fails the data future (the one every caller awaits first).
    fn read_packed_parts(
        &self,
        op: &'static str,
        dtype: DType,
    ) -> (ReadFuture<Vec<u32>>, ReadFuture<Option<Vec<u32>>>) {
        match self.expect_dtype(op, dtype) {
            Ok(()) => (
                storage_words(self, self.data(), self.data_len()),
                self.read_scale_words_async(),
            ),
            Err(e) => (failed(e), Box::pin(std::future::ready(Ok(None)))),
        }
    }

    /// The scale words of a packed tensor (None for plain dtypes).
    fn read_scale_words_async(&self) -> ReadFuture<Option<Vec<u32>>> {
        match self.scales() {
            None => Box::pin(std::future::ready(Ok(None))),
            Some(s) => {
                let f = storage_words(self, s, self.dtype().scale_bytes(self.shape()));
                Box::pin(async move { f.await.map(Some) })
            }
        }
    }

    /// The scales bytes of a packed tensor (None for plain dtypes).
    pub(crate) fn read_scale_bytes(&self) -> Result<Option<Vec<u8>>> {
        let len = self.dtype().scale_bytes(self.shape()) as usize;
        let words = crate::wait::block_on(self.read_scale_words_async())?;
        Ok(words.map(|w| bytes_of(&w, len)))
    }

    /// The values of a plain tensor of `dtype`, as a future (submitted now).
    fn read_values<T: bytemuck::Pod + Send>(
        &self,
        op: &'static str,
        dtype: DType,
    ) -> ReadFuture<Vec<T>> {
        if let Err(e) = self.expect_dtype(op, dtype) {
            return failed(e);
        }
        let len = self.data_len();
        let words = storage_words(self, self.data(), len);
        Box::pin(async move { Ok(values_of(words.await?, len as usize)) })
    }

    /// The values of an `F32` tensor, as a future (submitted now).
    pub fn read_f32_async(
        &self,
    ) -> impl Future<Output = Result<Vec<f32>>> + Send + 'static + use<> {
        self.read_values("read_f32", DType::F32)
    }

    /// The values of a plain tensor of `dtype`, now: a host tensor's copied straight out, a
    /// device tensor's read and waited for. A host read needs no future: driving one (the
    /// waker, the boxed futures, the clock) cost a 256-value read several times its copy, and
    /// the CPU engine's users read every result.
    fn read_values_now<T: bytemuck::Pod + Send>(
        &self,
        op: &'static str,
        dtype: DType,
    ) -> Result<Vec<T>> {
        match self.data().host_words() {
            Some(words) => {
                self.expect_dtype(op, dtype)?;
                let len = self.data_len() as usize;
                Ok(values_of(words[..len.div_ceil(4)].to_vec(), len))
            }
            None => crate::wait::block_on(self.read_values(op, dtype)),
        }
    }

    /// The values of an `F32` tensor.
    pub fn read_f32(&self) -> Result<Vec<f32>> {
        self.read_values_now("read_f32", DType::F32)
    }

    /// The values of an `F16` tensor.
    pub fn read_f16(&self) -> Result<Vec<f16>> {
        self.read_values_now("read_f16", DType::F16)
    }

    /// The values of an `I8` tensor.
    pub fn read_i8(&self) -> Result<Vec<i8>> {
        self.read_values_now("read_i8", DType::I8)
    }

    /// The values of a `U32` tensor, as a future (submitted now).
    pub fn read_u32_async(
        &self,
    ) -> impl Future<Output = Result<Vec<u32>>> + Send + 'static + use<> {
        self.read_values("read_u32", DType::U32)
    }

    /// The values of a `U32` tensor.
    pub fn read_u32(&self) -> Result<Vec<u32>> {
        self.read_values_now("read_u32", DType::U32)
    }

    /// A `Ternary` tensor as a validated [`TernaryMatrix`], as a future (submitted now).
    pub fn read_ternary_async(
        &self,
    ) -> impl Future<Output = Result<TernaryMatrix>> + Send + 'static + use<> {
        let (words, scales) = self.read_packed_parts("read_ternary", DType::Ternary);
        let len = self.data_len() as usize;
        let (n, k) = self.rows_k();
        async move {
            let words: Vec<u32> = values_of(words.await?, len);
            let scale: Vec<f32> = all_values(scales.await?.unwrap_or_default());
            let s = scale.first().copied().unwrap_or(0.0);
            Ok(TernaryMatrix::from_packed(words, n, k, s)?)
        }
    }

    /// A `Ternary` tensor as a validated [`TernaryMatrix`].
    pub fn read_ternary(&self) -> Result<TernaryMatrix> {
        crate::wait::block_on(self.read_ternary_async())
    }

    /// [`Tensor::read_ternary`] for the CPU backend's BitLinear: the matrix itself, shared, where
    /// the tensor holds one (`Storage::HostTernary`: no copy, no validation pass), else read.
    pub(crate) fn ternary_matrix(&self) -> Result<std::sync::Arc<TernaryMatrix>> {
        match self.data() {
            Storage::HostTernary(m)
                if self.dtype() == DType::Ternary && self.shape() == [m.n(), m.k()] =>
            {
                Ok(std::sync::Arc::clone(m))
            }
            _ => Ok(std::sync::Arc::new(self.read_ternary()?)),
        }
    }

    /// A `QuantizedI8` tensor as validated [`QuantizedActivations`], as a future (submitted now).
    pub fn read_activations_async(
        &self,
    ) -> impl Future<Output = Result<QuantizedActivations>> + Send + 'static + use<> {
        let (words, scales) = self.read_packed_parts("read_activations", DType::QuantizedI8);
        let len = self.data_len() as usize;
        let (m, k) = self.rows_k();
        async move {
            let words = words.await?;
            let bytes = &bytemuck::cast_slice::<u32, u8>(&words)[..len];
            let absmax: Vec<f32> = all_values(scales.await?.unwrap_or_default());
            let row_bytes = 4 * activation_words_per_row(k);
            let values: Vec<i8> = bytes
                .chunks_exact(row_bytes)
                .flat_map(|row| row[..k].iter().map(|&b| b as i8))
                .collect();
            Ok(QuantizedActivations::from_parts(values, absmax, m, k)?)
        }
    }

    /// A `QuantizedI8` tensor as validated [`QuantizedActivations`].
    pub fn read_activations(&self) -> Result<QuantizedActivations> {
        crate::wait::block_on(self.read_activations_async())
    }

    /// `(rows, K)` of a packed tensor (`(0, 0)` for other ranks; packed tensors are 2-D).
    fn rows_k(&self) -> (usize, usize) {
        match *self.shape() {
            [rows, k] => (rows, k),
            _ => (0, 0),
        }
    }

    /// A host copy of this tensor (same engine, `Location::Host`).
    pub fn to_host(&self) -> Result<Tensor> {
        let data = storage_words(self, self.data(), self.data_len());
        let scales = self.read_scale_words_async();
        let (data, scales) = (crate::wait::block_on(data)?, crate::wait::block_on(scales)?);
        Ok(Tensor::from_parts(
            self.engine().clone(),
            self.shape(),
            self.dtype(),
            Storage::Host(data),
            scales.map(Storage::Host),
        ))
    }
}
