//! Reading tensors back to the host. Every read is a sync point (see `transfer.rs`): it returns
//! `Error::NonFinite` if any launch since the last sync flagged NaN/Inf, and device errors.

use bitnet_cpu_ref::layout::activation_words_per_row;
use bitnet_cpu_ref::{QuantizedActivations, TernaryMatrix};
use half::f16;

use crate::error::Result;
use crate::tensor::{DType, Storage, Tensor};

/// Bytes of one storage (logical length `len`).
fn storage_bytes(t: &Tensor, s: &Storage, len: u64) -> Result<Vec<u8>> {
    match s {
        Storage::Host(words) => Ok(bytemuck::cast_slice::<u32, u8>(words)[..len as usize].to_vec()),
        Storage::Device(b) => {
            let gpu = t.engine().gpu_context().ok_or_else(|| {
                crate::error::Error::Unsupported("device tensor without a GPU engine".into())
            })?;
            crate::transfer::read(gpu, b.buffer(), 0, len, &t.lineage().snapshot())
        }
    }
}

/// Reinterprets little-endian bytes as `T` values.
fn cast_vec<T: bytemuck::Pod>(bytes: &[u8]) -> Vec<T> {
    let n = bytes.len() / size_of::<T>();
    let mut out = vec![T::zeroed(); n];
    bytemuck::cast_slice_mut::<T, u8>(&mut out).copy_from_slice(&bytes[..n * size_of::<T>()]);
    out
}

impl Tensor {
    /// Waits for the launches this tensor depends on and returns the earliest error among them
    /// (`Error::NonFinite` for a flagged value, the failure of a submission, a lost device) —
    /// exactly what reading it would report, without copying its bytes. Host tensors: `Ok`.
    pub fn check(&self) -> Result<()> {
        match (self.data(), self.engine().gpu_context()) {
            (Storage::Device(_), Some(gpu)) => {
                crate::transfer::resolve(gpu, &self.lineage().snapshot())
            }
            _ => Ok(()),
        }
    }

    /// The data bytes (logical length, no padding).
    pub fn read_bytes(&self) -> Result<Vec<u8>> {
        let len = self.dtype().data_bytes(self.shape()).unwrap_or(0);
        storage_bytes(self, self.data(), len)
    }

    /// The scales bytes of a packed tensor (None for plain dtypes).
    pub(crate) fn read_scale_bytes(&self) -> Result<Option<Vec<u8>>> {
        match self.scales() {
            None => Ok(None),
            Some(s) => storage_bytes(self, s, self.dtype().scale_bytes(self.shape())).map(Some),
        }
    }

    /// The values of an `F32` tensor.
    pub fn read_f32(&self) -> Result<Vec<f32>> {
        self.expect_dtype("read_f32", DType::F32)?;
        Ok(cast_vec(&self.read_bytes()?))
    }

    /// The values of an `F16` tensor.
    pub fn read_f16(&self) -> Result<Vec<f16>> {
        self.expect_dtype("read_f16", DType::F16)?;
        Ok(cast_vec(&self.read_bytes()?))
    }

    /// The values of an `I8` tensor.
    pub fn read_i8(&self) -> Result<Vec<i8>> {
        self.expect_dtype("read_i8", DType::I8)?;
        Ok(cast_vec(&self.read_bytes()?))
    }

    /// The values of a `U32` tensor.
    pub fn read_u32(&self) -> Result<Vec<u32>> {
        self.expect_dtype("read_u32", DType::U32)?;
        Ok(cast_vec(&self.read_bytes()?))
    }

    /// A `Ternary` tensor as a validated [`TernaryMatrix`].
    pub fn read_ternary(&self) -> Result<TernaryMatrix> {
        self.expect_dtype("read_ternary", DType::Ternary)?;
        let words: Vec<u32> = cast_vec(&self.read_bytes()?);
        let scale: Vec<f32> = cast_vec(&self.read_scale_bytes()?.unwrap_or_default());
        let (n, k) = (self.shape()[0], self.shape()[1]);
        Ok(TernaryMatrix::from_packed(
            words,
            n,
            k,
            scale.first().copied().unwrap_or(0.0),
        )?)
    }

    /// A `QuantizedI8` tensor as validated [`QuantizedActivations`].
    pub fn read_activations(&self) -> Result<QuantizedActivations> {
        self.expect_dtype("read_activations", DType::QuantizedI8)?;
        let bytes = self.read_bytes()?;
        let absmax: Vec<f32> = cast_vec(&self.read_scale_bytes()?.unwrap_or_default());
        let (m, k) = (self.shape()[0], self.shape()[1]);
        let row_bytes = 4 * activation_words_per_row(k);
        let values: Vec<i8> = bytes
            .chunks_exact(row_bytes)
            .flat_map(|row| row[..k].iter().map(|&b| b as i8))
            .collect();
        Ok(QuantizedActivations::from_parts(values, absmax, m, k)?)
    }

    /// A host copy of this tensor (same engine, `Location::Host`).
    pub fn to_host(&self) -> Result<Tensor> {
        let data = self.read_bytes()?;
        let scales = self.read_scale_bytes()?;
        let words = |b: &[u8]| {
            let mut w = vec![0u32; b.len().div_ceil(4)];
            bytemuck::cast_slice_mut::<u32, u8>(&mut w)[..b.len()].copy_from_slice(b);
            w
        };
        Ok(Tensor::from_parts(
            self.engine().clone(),
            self.shape().to_vec(),
            self.dtype(),
            Storage::Host(words(&data)),
            scales.as_deref().map(|s| Storage::Host(words(s))),
        ))
    }
}
