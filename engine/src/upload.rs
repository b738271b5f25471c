//! Creating tensors: uploads from host slices, and uninitialised device outputs for ops.

use bitnet_cpu_ref::{QuantizedActivations, TernaryMatrix};
use half::f16;

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
    /// One buffer of `bytes` bytes holding `data` (host or device per backend).
    fn store(&self, what: &str, bytes: u64, data: Option<&[u8]>) -> Result<Storage> {
        match self.gpu_context() {
            None => Ok(Storage::Host(match data {
                Some(d) => to_words(what, d)?,
                None => host_words(what, bytes, 0)?,
            })),
            Some(g) => {
                crate::chunk::check_buffer(g, what, bytes)?;
                let buf = g.pool.alloc(BufferKind::Storage, bytes, what)?;
                if let Some(d) = data {
                    crate::transfer::write(g, buf.buffer(), 0, d)?;
                }
                Ok(Storage::Device(Box::new(buf)))
            }
        }
    }

    /// A tensor from raw little-endian bytes (and scale bytes for packed dtypes).
    pub(crate) fn tensor_from_bytes(
        &self,
        op: &'static str,
        shape: &[usize],
        dtype: DType,
        data: &[u8],
        scales: Option<&[u8]>,
    ) -> Result<Tensor> {
        check_shape(op, shape, dtype, data.len())?;
        let data = self.store(op, data.len() as u64, Some(data))?;
        let scales = match scales {
            Some(s) => Some(self.store(op, s.len() as u64, Some(s))?),
            None => None,
        };
        Ok(Tensor::from_parts(self.clone(), shape, dtype, data, scales))
    }

    /// An uninitialised tensor (device: a pooled buffer, contents unspecified) for op outputs.
    pub(crate) fn empty(&self, op: &'static str, shape: &[usize], dtype: DType) -> Result<Tensor> {
        let bytes = output_bytes(op, shape, dtype)?;
        let data = self.store(op, bytes, None)?;
        let sb = dtype.scale_bytes(shape);
        let scales = if sb > 0 {
            Some(self.store(op, sb, None)?)
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
        if self.gpu_context().is_none() {
            return self.ternary_tensor(&std::sync::Arc::new(w.clone()));
        }
        let scale = [w.scale()];
        self.tensor_from_bytes(
            "upload_ternary",
            &[w.n(), w.k()],
            DType::Ternary,
            bytemuck::cast_slice(w.words()),
            Some(bytemuck::cast_slice(&scale)),
        )
    }

    /// [`Engine::upload_ternary`] of a shared matrix: the CPU engine's tensor *is* the matrix
    /// (`Storage::HostTernary`: no copy, and its BitLinear reads the words without converting
    /// them back); a GPU engine uploads it.
    pub(crate) fn ternary_tensor(&self, w: &std::sync::Arc<TernaryMatrix>) -> Result<Tensor> {
        if self.gpu_context().is_some() {
            return self.upload_ternary(w);
        }
        Ok(Tensor::from_parts(
            self.clone(),
            &[w.n(), w.k()],
            DType::Ternary,
            Storage::HostTernary(std::sync::Arc::clone(w)),
            Some(Storage::Host(vec![w.scale().to_bits()])),
        ))
    }

    /// Uploads quantized activations `[M, K]` (packed rows) and their per-row absmax.
    pub fn upload_activations(&self, x: &QuantizedActivations) -> Result<Tensor> {
        let packed = x.packed();
        self.tensor_from_bytes(
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
        if self.gpu_context().is_none() {
            return no_device();
        }
        if t.engine().gpu_id() == self.gpu_id() && t.location() == Location::Device {
            return Ok(t.clone());
        }
        let data = t.read_bytes()?;
        let scales = t.read_scale_bytes()?;
        let out =
            self.tensor_from_bytes("to_device", t.shape(), t.dtype(), &data, scales.as_deref())?;
        // The device may have been lost (or the policy set to Cpu) since the check above, and
        // the upload then made a host tensor: never hand that out as the device copy.
        if out.location() != Location::Device {
            return no_device();
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::linear::Linear;
    use crate::tensor::Location;

    /// Host words are the bytes little-endian, the last word zero-padded, for every tail length.
    #[test]
    fn host_words_pad_the_last_word_with_zeros() {
        let bytes: Vec<u8> = (1..=11).collect();
        for len in 0..=bytes.len() {
            let mut padded = bytes[..len].to_vec();
            padded.resize(len.div_ceil(4) * 4, 0);
            let expected: Vec<u32> = padded
                .chunks_exact(4)
                .map(|w| u32::from_le_bytes([w[0], w[1], w[2], w[3]]))
                .collect();
            assert_eq!(
                to_words("t", &bytes[..len]).unwrap(),
                expected,
                "{len} bytes"
            );
        }
        assert_eq!(host_words("t", 9, 7).unwrap(), vec![7; 3]);
        assert!(matches!(
            host_words("t", u64::MAX, 0),
            Err(Error::LimitExceeded { .. })
        ));
    }

    fn matrix(n: usize, k: usize) -> TernaryMatrix {
        let codes: Vec<i8> = (0..n * k).map(|i| ((i * 7) % 3) as i8 - 1).collect();
        TernaryMatrix::from_i8(&codes, n, k, 0.25).unwrap()
    }

    /// The CPU engine's ternary tensors hold the matrix itself: reads, host copies and BitLinear
    /// see exactly the uploaded words, and a layer's tensor shares the layer's matrix.
    #[test]
    fn cpu_ternary_tensors_are_the_matrix() {
        let e = Engine::cpu();
        let w = matrix(6, 40);
        let t = e.upload_ternary(&w).unwrap();
        assert_eq!(t.location(), Location::Host);
        assert!(matches!(t.data(), Storage::HostTernary(_)));
        assert_eq!(t.read_ternary().unwrap(), w);
        assert_eq!(t.to_host().unwrap().read_ternary().unwrap(), w);
        let bytes = t.read_bytes().unwrap();
        assert_eq!(bytes, bytemuck::cast_slice::<u32, u8>(w.words()));
        let x: Vec<f32> = (0..2 * 40).map(|i| (i as f32 * 0.37).sin()).collect();
        let got = e
            .bitlinear_tensor(&e.upload_f32(&x, &[2, 40]).unwrap(), &t)
            .unwrap()
            .read_f32()
            .unwrap();
        assert_eq!(got, bitnet_cpu_ref::bitlinear(&x, 2, &w).unwrap());
        let layer = Linear::new(&e, w.clone());
        let dw = layer.device_weights().unwrap();
        match dw.data() {
            Storage::HostTernary(m) => assert!(std::ptr::eq(&**m, layer.weights())),
            _ => panic!("a CPU layer's tensor is its matrix"),
        }
    }
}
