//! `bitnet-wgpu`: BitNet b1.58 (ternary weights, int8 activations) on any GPU through wgpu
//! (Metal / Vulkan / DX12), and on the CPU through the pure-Rust reference engine
//! `bitnet-cpu-ref` — bit-exact integer results on every backend.
//!
//! ```no_run
//! use bitnet_wgpu::Engine;
//! let engine = Engine::new(); // best GPU, else the CPU engine
//! println!("{}", engine.info());
//! let x = engine.upload_f32(&[1.0, 2.0, 3.0], &[3])?;
//! let y = engine.copy(&x)?; // recorded on the device, no read-back
//! assert_eq!(y.read_f32()?, vec![1.0, 2.0, 3.0]); // sync point
//! # Ok::<(), bitnet_wgpu::Error>(())
//! ```
//!
//! Structure (see `docs/ARCHITECTURE.md`): [`Engine`] (constructors, info, pool, sync, profiler),
//! [`Tensor`] (device or host storage, pooled buffers), one buffer pool, one pipeline cache,
//! one launch helper (`launch.rs`, whose module docs are the kernel author's guide), ops in `ops/`.
//!
//! Errors are reported, never panicked: bad input, device limits, lost devices, out of memory,
//! validation and pipeline failures and NaN/Inf inputs all become [`Error`] variants.
//!
//! **Sync points.** GPU ops are recorded into a pending batch and return at once; the batch is
//! submitted at sync points ([`Tensor::read_f32`] and the other read-backs, uploads,
//! [`Engine::sync`]) or every `EngineOptions::batch_dispatches` dispatches. Errors that only the
//! device can see — NaN/Inf inputs (`Error::NonFinite`, the same value cpu-ref returns), failed
//! submissions, a lost device — are returned by the next sync point. Outputs of a failed
//! submission are poisoned: reading them returns the error, never stale bytes.

mod batch;
mod chunk;
mod context;
mod device;
mod engine;
mod error;
mod fate;
mod group;
mod info;
mod launch;
#[cfg(test)]
mod launch_tests;
mod msl;
mod ops;
mod pipelines;
mod poller;
mod pool;
mod profiler;
mod readback;
mod scheduler;
mod status;
mod tensor;
mod transfer;
mod upload;

/// cpu-ref's host tensor (`Tensor<T>`: shape + data), the input/output type of its float ops.
pub use bitnet_cpu_ref::Tensor as CpuTensor;
/// The float-op selectors, shared with cpu-ref so both backends take the same values.
pub use bitnet_cpu_ref::ops::{BinaryOp, ReduceOp, UnaryOp};
pub use bitnet_cpu_ref::{QuantizedActivations, TernaryMatrix};
pub use device::{PARAMS_MAX_BYTES, ParamsMode};
pub use engine::{BackendKind, Engine, EngineOptions};
pub use error::{Error, Result};
pub use info::{EngineInfo, KeyLimits};
pub use msl::{HotPaths, KernelPath, MSL_ENV};
pub use ops::{AUTOTUNE_ENV, AUTOTUNE_MIN_BYTES, BitnetTuning, LinearPlan};
pub use pipelines::{Access, Kernel, PipelineStats};
pub use pool::{PoolStats, size_class};
pub use profiler::ProfileReport;
pub use status::{NonFiniteCheck, STATUS_WORDS};
pub use tensor::{DType, Location, Tensor};

/// The CPU reference engine, re-exported (oracle for tests, CPU backend).
pub use bitnet_cpu_ref as cpu_ref;
/// `half`, re-exported for `f16` uploads and read-backs.
pub use half;
/// wgpu, re-exported so applications use the same version for `from_adapter` / `from_device`.
pub use wgpu;
