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
//! **Sync points.** GPU ops hand their dispatches to the engine's submission thread and return
//! at once; the batch is submitted at sync points ([`Tensor::read_f32`] and the other read-backs,
//! uploads, [`Engine::sync`]), when a batch is full (`EngineOptions::first_batch_dispatches`
//! dispatches after a sync point, doubling per batch up to `EngineOptions::batch_dispatches`),
//! when the engine is idle (`EngineOptions::idle_flush`), or when its [`STATUS_SLOTS`] status
//! slots run out (a checked launch holds one while its outputs are alive and unread: a batch of
//! more such launches is submitted in pieces). Reads have future forms (`*_async`, `Send +
//! 'static`, submitted when called, completed by the engine's completion thread — no executor
//! needed; their wakers are called with no engine lock held, so an executor may poll a task
//! inside `wake` — the task then runs on the engine's thread, where a blocking engine call that
//! would wait for that same thread is refused with `Error::Unsupported` (submission thread) or
//! served there (completion and batcher threads), and a panicking waker is caught and logged)
//! and blocking forms. A thread waiting for the GPU (the completion thread while reads are
//! outstanding, the caller of [`Engine::sync`]) polls it back to back for its first 2 ms, then
//! sleeps between polls (`EngineOptions::spin_wait`; by default CPU adapters never spin): a wait ends within
//! microseconds of the GPU's work, at the cost of a host core while it spins.
//!
//! **Errors follow the data.** Errors only the device can see — NaN/Inf inputs
//! (`Error::NonFinite`, the same value cpu-ref returns), failed submissions, a lost device — are
//! returned by reading a tensor computed from the launch that hit them (its *lineage*), and only
//! by those: another thread's NaN never shows up in your read. A poisoned tensor stays poisoned:
//! reading it, or launching with it, returns the error, never stale bytes. [`Tensor::check`]
//! reports a tensor's error without reading it; [`Engine::sync`] reports device errors only.
//!
//! **Tensor ops.** Ops on resident [`Tensor`]s read tensors and return new ones, recorded with no
//! read-back: [`Engine::fill`] and [`Engine::copy`]; the float ops [`Engine::matmul`] (and its
//! `_bt` / `f16` forms), [`Engine::binary`], [`Engine::binary_scalar`], [`Engine::unary`],
//! [`Engine::reduce_last`], [`Engine::rms_norm`], [`Engine::softmax_last`], [`Engine::rope`],
//! [`Engine::attention`] (grouped-query, optionally causal, on token-major `[T, H, D]`; decode
//! splits the keys across workgroups); the BitNet ops [`Engine::bitlinear_tensor`], [`Engine::bitlinear_accumulate_tensor`],
//! [`Engine::quantize_activations_tensor`], [`Engine::quantize_weights_tensor`]; and the shape
//! ops [`Tensor::reshape`] (a view, no copy), [`Engine::slice`] (a range along one axis: split a
//! fused projection, pick heads) and [`Engine::concat`] (join along one axis: append to a cache,
//! gather heads), which move `F32` / `U32` values bit for bit. Each matches its
//! `bitnet_cpu_ref` counterpart (bit for bit where integer or a move, else within the cross-check
//! suite's stated tolerance) and rejects bad input with the same error.
//!
//! **Subnormal floats.** Drivers that flush subnormal `f32` values to zero do so in the float
//! ops' arithmetic: on the H200 (NVIDIA's Vulkan driver; lavapipe keeps them) adding two
//! subnormals gave 0, an `rms_norm` read subnormal inputs as 0, and one with `eps = 0` over a row
//! whose squares are all subnormal (every |x| below about 1e-19) divided by zero and returned
//! `Error::NonFinite` where cpu-ref returns values. The BitNet ops do not depend on it: their
//! scales are at least 1e-5 (the quantizers floor them there, and [`cpu_ref::TernaryMatrix`] and
//! [`cpu_ref::QuantizedActivations`] refuse smaller ones with `InvalidArgument`), so a value that
//! is or becomes subnormal on its way to an integer rounds to 0 either way, and their output
//! scales `s · a / 127` are normal.
//!
//! **Dispatch** ([`DispatchPolicy`]). The host-facing ops — [`Engine::bitlinear`],
//! [`Engine::quantize_weights`] and the other cpu-ref-compatible methods, [`Linear`],
//! [`LinearChain`], [`BatchingLinear`], [`Engine::stream_bitlinear`] — run per call on the CPU or
//! the GPU:
//! * `Auto` ([`Engine::new`]): the backend predicted faster for this op and size, counting what
//!   must be transferred (weights already resident on the GPU are free). Predictions come from a
//!   calibration ([`Engine::calibrate`], or lazily at the first decision) cached per adapter +
//!   driver + crate version in the user's cache directory (`BITNET_CALIBRATION_CACHE=off` opts
//!   out, a path relocates it), and adapt to measured times. Small ops stay on the CPU at the
//!   cost of a few nanoseconds over calling cpu-ref. If the lazy calibration fails — any GPU
//!   fault while measuring, transient ones (out of memory, a caught panic) included — a warning
//!   is logged, nothing is cached, and that engine's `Auto` sends every op to the CPU
//!   ([`EngineInfo::calibration_failed`] is true and [`Engine::calibration`] `None` meanwhile)
//!   until a model is installed: by [`Engine::calibrate`], [`Engine::set_calibration`], or
//!   a retry the engine starts itself on a background thread, from a sampled op (one CPU run in
//!   [`SAMPLE_EVERY`]) under `Auto` once 30 s have passed (then 1 min, 2 min, ... up to an hour
//!   after each failure; none once the device is lost; an engine that runs no ops under `Auto`
//!   starts none), so a transient fault does not keep a long-running server on the CPU. A
//!   calibration measured while the device was lost is never installed or cached.
//! * `Gpu` (default of [`Engine::gpu`], [`Engine::from_device`], ...): every op on the GPU.
//! * `Cpu`: nothing touches the GPU (new tensors are host tensors).
//!
//! `BITNET_DISPATCH=auto|cpu|gpu` overrides the policy of every engine created while it is set;
//! [`Engine::set_dispatch_policy`] changes it at run time. Ops on resident [`Tensor`]s are not
//! dispatched: they run on the GPU when every input is a device tensor and the engine takes GPU
//! work (any policy but `Cpu`, device not lost; on software adapters, shapes past their loop limit
//! aside), else on the CPU, device inputs read back. A shape the device cannot take (an operand
//! row or a bound-whole operand past `max_storage_buffer_binding_size`, a broadcast past the
//! kernel's six axes: `Error::LimitExceeded`, `Error::Unsupported`) runs on the CPU under `Auto`
//! and is that error under `Gpu`; an output past `max_buffer_size` is that error under both
//! (a CPU run's output is uploaded too). New tensors, outputs of CPU runs included,
//! are device tensors whenever the engine takes GPU work.
//!
//! **Chains of linears as one dispatch.** A [`LinearChain`] ([`Engine::linear_chain`]) runs M = 1
//! BitLinears where each reads the chain's input or an earlier one's output directly — nothing in
//! between, so a real layer's norms, RoPE and attention are not part of it — as one GPU dispatch
//! whose workgroups wait for the workgroups producing their input, instead of a dispatch per
//! linear and a pipeline barrier per dependency. Same bits as cpu-ref per linear; where the chain
//! kernel cannot run, or a run is aborted, it runs linear by linear. The waits are bounded: one
//! that runs out (workgroups the GPU did not start in order) aborts that run, and the device
//! takes the kernels that do not wait from then on ([`EngineInfo::in_dispatch_waits`] turns
//! false; one-dispatch weight quantization waits the same way). Consumers read their
//! producers' outputs through storage declared coherent where the device has
//! `MEMORY_DECORATION_COHERENT` (Vulkan, DX12, Metal 3.2+), polling the words themselves in an
//! output arena a small fill dispatch marks unwritten first, and through atomics behind their
//! producers' counts elsewhere (H200, 2B4T decode stack: 836 µs against 720 for the coherent form
//! as it came, 656-686 µs with counters, about 620-626 µs polling the data;
//! [`EngineOptions::disabled_features`] selects the atomic form). A full prefill and decode
//! through device tensors and a [`KvCache`] per layer is `engine/examples/decode_step.rs`.
//!
//! **Decoding state.** A [`KvCache`] ([`Engine::kv_cache`]) holds a sequence's keys and values
//! on the device: each step appends its new positions in place (no read-back, no re-upload of
//! what is held) and reads the cache as prefix views, which never change once handed out.
//! [`KvCache::append_rope`] rotates a step's queries and keys and appends the keys and values in
//! one dispatch (bit for bit `rope_pair` then `append`). On the CPU engine the views share the
//! cache's host storage, so attention reads the context in place.
//!
//! **CPU threads.** CPU work runs on rayon's global pool (size it with `RAYON_NUM_THREADS` or
//! `rayon::ThreadPoolBuilder::build_global`). A BitLinear large enough to split into tasks
//! (`cpu_ref::BITLINEAR_SPLIT_MACS`) called from a thread outside the pool hands its job to a
//! worker and waits to be woken, about 9 µs more per call on a 16-thread host than from a
//! worker. A [`LinearChain`] on the CPU runs its linears from one worker; a caller running a
//! whole decode step on the CPU engine can do the same for all of it by running the step inside
//! `rayon::scope(|_| ...)`: the 2B4T decode example's CPU step (four layers, H200 host) took
//! 2.71-2.85 ms that way against 2.92-3.21 ms from the caller's thread.
//!
//! **Faults.** If the GPU fails — device lost, out of memory, validation or pipeline-creation
//! errors — a host-facing op re-runs on the CPU from the caller's inputs: the caller gets the
//! correct result and a warning is logged ([`Engine::dispatch_stats`] counts fallbacks). A
//! pipeline that failed to build is not compiled again: its later calls fail over at once
//! ([`PipelineStats::failed`] counts such pipelines, through [`Engine::pipeline_stats`]). A device
//! limit or a missing feature (`Error::LimitExceeded`, `Error::Unsupported`) is no fault: under
//! `Auto` the op runs on the CPU (tensor ops too, as the Dispatch paragraph says; a
//! [`KvCache`]'s move to the device and [`Engine::fill`] return it), under `Gpu` the error is
//! returned. A fused layer or chain past a limit runs its unfused ops. A lost device is never used
//! again; resident tensors whose only copy was on it read as `Error::DeviceLost`. A panic on the
//! engine's submission thread (an engine bug, or one inside wgpu) is caught: it is
//! `Error::Panicked` for the call it hit (a host-facing op re-runs on the CPU), and the device
//! stays in use.
//!
//! **Threads.** [`Engine`] is `Send + Sync` and cheap to clone (an `Arc`); clones share the
//! device, pool, pipeline cache and submission thread. Any number of threads may record, read
//! and dispatch at once. Device creation and destruction are serialized process-wide, and held
//! apart from every engine's submissions (`lifecycle.rs`: a driver deadlock defence). One
//! cost follows each thread: wgpu 30 keeps a device's error scopes per thread in a map whose
//! entries it never removes, and uploads, new buffers and pipeline compiles open scopes on the
//! calling thread, so every distinct thread that ever did so holds about 300 bytes until the
//! device drops — use long-lived threads (a pool) rather than a thread per request.
//! Before the process exits, `sync` the engines that still have work in flight (or drop them:
//! a drop waits for the queued work, but at most 2 s — a thread stuck in a driver call must not
//! hang it — so after a long queue it returns with work still running): `std::process::exit`
//! runs the driver's static destructors while its own threads may still compile or execute that
//! work (lavapipe crashed there in about 1 exit in 12 with 20 softmax launches pending, a
//! reviewer's probe, 2026-12-04; 0 in 12 after a sync, a read or a drop). A lazy calibration
//! (an `Auto` engine's first ops, or its retry in the background) is such work too.
//!
//! **Kernels and tuning.** BitLinear picks its kernel per shape ([`LinearPlan`]); GEMM shapes
//! (M > 8) whose packed weights reach [`AUTOTUNE_MIN_BYTES`] are measured once per bucket of M
//! (the next power of two) on discrete GPUs (autotune, cached on disk: tile size, the cooperative-matrix GEMMs — f16, and int8 through
//! SPIR-V passthrough on Vulkan — and how many slices K is split into), GEMV shapes use the
//! heuristic unless `BITNET_AUTOTUNE=1` (`0` turns tuning off; [`BitnetTuning`] forces plans).
//! WGSL modules keep wgpu's bounds checks but not its forced loop bounding
//! (`BITNET_SHADER_CHECKS=full` restores it). [`Engine::set_profiling`] times every dispatch, or
//! with [`ProfileGranularity::Batch`] every submitted batch as a whole (unperturbed).
//!
//! **Latency on a mostly idle GPU.** A decode loop through per-op calls leaves the GPU idle
//! most of the time while the host records the next step, and GPU drivers lower the clock of an
//! idle GPU: on an H200 (driver 580) a second under about a quarter utilization took the SM
//! clock from 1980 to 1000-1450 MHz, and every latency-bound kernel ran up to 1.7× longer until
//! heavier work raised it again. The engine does not keep the GPU busy on its own (that would
//! burn power for every user); a latency-sensitive server can submit more work per sync (a
//! [`LinearChain`], [`Engine::linear_group`], [`BatchingLinear`]), lock the clocks through the
//! vendor's tools, or keep the GPU busy itself, as `bitnet-bench` does while it measures
//! (`bench/src/clock_keeper.rs`: a plain read-only kernel between timed batches).
//!
//! **Environment.** Every `BITNET_*` value is read one way: surrounding blanks and case are
//! ignored, unset or blank means no say, and a value not listed here is logged at `warn` and
//! ignored (the cache variables take any other value as a path).
//!
//! | Variable | Values | Effect |
//! |---|---|---|
//! | `BITNET_DISPATCH` | `auto`, `cpu`, `gpu` | every new engine's policy (over `EngineOptions::dispatch`) |
//! | `BITNET_AUTOTUNE` | on / off | BitLinear autotune on for every shape whose packed weights reach [`AUTOTUNE_MIN_BYTES`], GEMVs included / off (over the default; [`BitnetTuning::autotune`] wins over it) |
//! | `BITNET_MSL` | on / off | off: WGSL instead of the MSL hot paths on Metal (on: MSL where it can run) |
//! | `BITNET_SHADER_CHECKS` | `full` | keep wgpu's forced loop bounding |
//! | `BITNET_CALIBRATION_CACHE` | off, on, a directory | calibration cache: none, default place, there |
//! | `BITNET_TUNE_CACHE` | off, on, a file | autotuned-plan cache: none, default place, there |
//! | `BITNET_KERNEL_OVERRIDE_DIR` | a directory | only with the development feature `kernel-override`: its `<kernel name>.wgsl` files replace those kernels' WGSL ([`KERNEL_OVERRIDE_ENV`]) |
//! | `WGPU_BACKEND` | comma list: `vulkan`, `metal`, `dx12`, `gl`, ... | backends searched for an adapter (unset: Vulkan, Metal, DX12; GL only when named) |
//! | `WGPU_ADAPTER_NAME` | text | only adapters whose name contains it (case-insensitive) |
//!
//! On is `1`, `true`, `on`, `yes`; off is `0`, `false`, `off`, `no`. `WGPU_BACKEND` (and
//! wgpu's other instance variables, such as `WGPU_DEBUG`) are parsed by wgpu: unknown backend
//! names are logged by wgpu and dropped, and no valid name (a blank value included) leaves no
//! backend. An adapter filter that leaves no adapter makes [`Engine::gpu`] and the other GPU
//! constructors `Err(NoAdapter)` (naming the adapters found), and [`Engine::new`] the CPU engine
//! (logged).
//!
//! The engines of a process share one wgpu instance per set of those variables, made with the
//! first engine and kept until the process exits: the GPU driver stays loaded between engines.
//! (Dropping the last instance unloads it, and on the NVIDIA Vulkan driver the 30th load of a
//! process found no adapter.)
#![warn(missing_docs)]

mod batch;
mod batching;
mod cache_file;
mod calibrate;
mod chain;
mod chunk;
mod context;
mod counted;
mod device;
mod device_hooks;
mod dims;
mod dispatch;
mod dtype;
mod encode;
mod engine;
mod engine_thread;
mod error;
mod fate;
mod fault;
mod gated_linear;
mod group;
mod hazard;
mod info;
mod kernel;
mod kernel_override;
mod kv_cache;
mod launch;
#[cfg(test)]
mod launch_tests;
mod lifecycle;
mod lineage;
mod linear;
mod linear_group;
mod msl;
mod normed_input;
mod oneshot;
mod ops;
mod pipelines;
mod poller;
mod pool;
mod predict;
mod profiler;
mod readback;
mod recalibrate;
mod ring;
mod scheduler;
mod spirv;
mod staging_map;
mod status;
mod status_gather;
mod stream;
mod subgroup_probe;
mod tensor;
#[cfg(test)]
mod test_gpu;
mod transfer;
mod upload;
mod wait;
mod workload;

pub use batching::{BatchingLinear, BatchingStats};
/// cpu-ref's host tensor (`Tensor<T>`: shape + data), the input/output type of its float ops.
pub use bitnet_cpu_ref::Tensor as CpuTensor;
/// The float-op selectors, shared with cpu-ref so both backends take the same values.
pub use bitnet_cpu_ref::ops::{BinaryOp, ReduceOp, UnaryOp};
pub use bitnet_cpu_ref::{QuantizedActivations, TernaryMatrix};
pub use calibrate::{CALIBRATION_CACHE_ENV, Calibration, Cost, OpClass};
pub use chain::{ChainInput, ChainOutputs, LinearChain};
pub use device::{PARAMS_MAX_BYTES, ParamsMode};
pub use dispatch::{DISPATCH_ENV, DispatchPolicy, DispatchStats, SAMPLE_EVERY, Workload};
pub use engine::{BackendKind, Engine, EngineOptions, open_gpu_device};
pub use error::{Error, Result};
#[doc(hidden)]
pub use fault::InjectedFault;
pub use gated_linear::GatedLinear;
pub use info::{EngineInfo, KeyLimits};
pub use kernel_override::KERNEL_OVERRIDE_ENV;
pub use kv_cache::KvCache;
pub use linear::Linear;
pub use linear_group::LinearGroup;
pub use msl::{HotPaths, KernelPath, MSL_ENV};
pub use normed_input::NormedInput;
pub use ops::{
    AUTOTUNE_ENV, AUTOTUNE_MIN_BYTES, BitnetTuning, CoopKind, LinearPlan, TUNE_CACHE_ENV,
};
pub use pipelines::{Access, Kernel, PipelineStats};
pub use pool::{PoolStats, size_class};
pub use profiler::{
    BATCH_SPAN, ProfileGranularity, ProfileReport, timestamp_ticks, timestamp_valid_bits,
};
pub use spirv::kernel_spirv;
pub use status::{ABORTED, KERNEL_STATE, NonFiniteCheck, STATUS_SLOTS, STATUS_WORDS, TAG_SHIFT};
pub use stream::{IN_FLIGHT, StreamStats};
pub use tensor::{DType, Location, Tensor};

/// The CPU reference engine, re-exported (oracle for tests, CPU backend).
pub use bitnet_cpu_ref as cpu_ref;
/// `half`, re-exported for `f16` uploads and read-backs.
pub use half;
/// wgpu, re-exported so applications use the same version for `from_adapter` / `from_device`.
pub use wgpu;
