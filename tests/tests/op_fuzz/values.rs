//! What the fuzzer reads and substitutes: tensor contents by dtype, the reads' futures, and
//! stand-ins for values that failed.

use std::future::Future;
use std::pin::Pin;

use bitnet_wgpu::cpu_ref::{QuantizedActivations, TernaryMatrix};
use bitnet_wgpu::{DType, Engine, Error, Tensor};

/// A tensor's contents, read back for comparison.
#[derive(Debug, PartialEq)]
pub enum Value {
    /// `F32` values as bits, every NaN as the one canonical quiet NaN.
    F32(Vec<u32>),
    U32(Vec<u32>),
    Ternary(TernaryMatrix),
    Activations(QuantizedActivations),
}

/// A read whose future is still pending.
pub type PendingRead = Pin<Box<dyn Future<Output = Result<Value, Error>> + Send>>;

/// Bits of `v`, every NaN as the one canonical quiet NaN.
pub fn f32_bits(v: Vec<f32>) -> Vec<u32> {
    v.into_iter()
        .map(|x| if x.is_nan() { 0x7fc0_0000 } else { x.to_bits() })
        .collect()
}

/// Reads `t` as a future, by its dtype.
pub fn read_async(t: &Tensor) -> PendingRead {
    match t.dtype() {
        DType::F32 => {
            let f = t.read_f32_async();
            Box::pin(async move { f.await.map(|v| Value::F32(f32_bits(v))) })
        }
        DType::U32 => {
            let f = t.read_u32_async();
            Box::pin(async move { f.await.map(Value::U32) })
        }
        DType::Ternary => {
            let f = t.read_ternary_async();
            Box::pin(async move { f.await.map(Value::Ternary) })
        }
        DType::QuantizedI8 => {
            let f = t.read_activations_async();
            Box::pin(async move { f.await.map(Value::Activations) })
        }
        other => panic!("the fuzzer makes no {other:?} tensors"),
    }
}

/// An error about values (NaN/Inf inputs, an overflow): the GPU side reports it when the value
/// is read, not when the call is made.
pub fn is_value_error(e: &Error) -> bool {
    matches!(e, Error::NonFinite { .. })
}

/// A CPU engine tensor of `t`'s dtype and shape (zeros), standing in for a value that failed.
pub fn stand_in(cpu: &Engine, t: &Tensor) -> Tensor {
    let len = t.len();
    match t.dtype() {
        DType::F32 => cpu.upload_f32(&vec![0.0; len], t.shape()),
        DType::U32 => cpu.upload_u32(&vec![0; len], t.shape()),
        DType::Ternary => {
            let (n, k) = (t.shape()[0], t.shape()[1]);
            cpu.upload_ternary(
                &bitnet_wgpu::cpu_ref::quantize_weights(&vec![0.0; n * k], n, k).unwrap(),
            )
        }
        DType::QuantizedI8 => {
            let (m, k) = (t.shape()[0], t.shape()[1]);
            let x = bitnet_wgpu::cpu_ref::quantize_activations(&vec![0.0; m * k], m, k).unwrap();
            cpu.upload_activations(&x)
        }
        other => panic!("the fuzzer makes no {other:?} tensors"),
    }
    .unwrap()
}

/// Reads `t` now.
pub fn read_now(t: &Tensor) -> Result<Value, Error> {
    bitnet_tests::block_on(read_async(t))
}

/// Whether `t` (`F32`) holds a nonzero value below 2^-100 in magnitude (see `Var::tiny`).
pub fn holds_tiny(t: &Tensor) -> bool {
    t.dtype() == DType::F32
        && t.read_f32()
            .expect("reading a CPU engine tensor")
            .iter()
            .any(|v| *v != 0.0 && v.abs() < 2f32.powi(-100))
}
