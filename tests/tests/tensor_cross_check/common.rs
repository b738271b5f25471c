//! Shared helpers: the suite's GPU engine, uploads, cpu-ref tensors, and comparisons that take
//! their tolerance from the one table in `bitnet_tests`.

use std::sync::OnceLock;

use bitnet_tests::{gpu_engine, random_f32, tolerance};
use bitnet_wgpu::cpu_ref::Tensor as Host;
use bitnet_wgpu::half::f16;
use bitnet_wgpu::{DType, Engine, Error, Tensor};

/// One GPU engine shared by the value tests (they raise no non-finite flags, so sharing is safe;
/// error tests use their own engine so a flag can never surface in another test's read-back).
pub fn engine() -> &'static Engine {
    static ENGINE: OnceLock<Engine> = OnceLock::new();
    ENGINE.get_or_init(gpu_engine)
}

/// `n` values uniform in `[lo, hi)` with random signs mixed in by the range itself.
pub fn values(seed: u64, n: usize, lo: f32, hi: f32) -> Vec<f32> {
    random_f32(seed, n, lo, hi)
}

/// Number of elements of `shape`.
/// The bits of `v`, for comparisons that must tell -0 from +0 and NaN payloads apart.
pub fn bits(v: &[f32]) -> Vec<u32> {
    v.iter().map(|x| x.to_bits()).collect()
}

pub fn numel(shape: &[usize]) -> usize {
    shape.iter().product()
}

/// Uploads `v` as an `F32` tensor of `shape` on `e`.
pub fn up(e: &Engine, v: &[f32], shape: &[usize]) -> Tensor {
    e.upload_f32(v, shape).expect("upload")
}

/// The cpu-ref tensor of `v` with `shape`.
pub fn host(v: &[f32], shape: &[usize]) -> Host<f32> {
    Host::new(v.to_vec(), shape).expect("host tensor")
}

/// `v` rounded to f16.
pub fn halves(v: &[f32]) -> Vec<f16> {
    v.iter().map(|&x| f16::from_f32(x)).collect()
}

/// Asserts shape equality and closeness under tolerance `tol` (a key of the table).
pub fn assert_f32(tol: &str, what: &str, got: &Tensor, want: &Host<f32>) {
    assert_eq!(got.shape(), want.shape(), "{what}: shape");
    let g = got
        .read_f32()
        .unwrap_or_else(|e| panic!("{what}: read-back failed: {e}"));
    tolerance(tol).assert_close(what, &g, want.data());
}

/// [`assert_f32`] for `F16` tensors (compared as f32 values).
pub fn assert_f16(tol: &str, what: &str, got: &Tensor, want: &Host<f16>) {
    assert_eq!(got.shape(), want.shape(), "{what}: shape");
    let g: Vec<f32> = got
        .read_f16()
        .expect("read f16")
        .iter()
        .map(|v| v.to_f32())
        .collect();
    let w: Vec<f32> = want.data().iter().map(|v| v.to_f32()).collect();
    tolerance(tol).assert_close(what, &g, &w);
}

/// The error of a GPU result, surfacing deferred (non-finite) errors with a read-back.
pub fn gpu_error(r: bitnet_wgpu::Result<Tensor>) -> Error {
    let t = match r {
        Err(e) => return e,
        Ok(t) => t,
    };
    let read = match t.dtype() {
        DType::F16 => t.read_f16().map(|_| ()),
        _ => t.read_f32().map(|_| ()),
    };
    match read {
        Err(e) => e,
        Ok(()) => panic!(
            "expected an error, the GPU op succeeded (shape {:?})",
            t.shape()
        ),
    }
}

/// The cpu-ref error of a result, as the engine reports it.
pub fn cpu_error<T: std::fmt::Debug>(r: bitnet_wgpu::cpu_ref::Result<T>) -> Error {
    Error::from(r.expect_err("expected cpu-ref to fail"))
}
