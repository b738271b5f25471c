//! The GPU side: resident inputs uploaded once, ops timed through the engine's public API.
//!
//! GPU time is the engine profiler's batch span (two timestamps around a batch of back-to-back
//! calls, divided by the calls; [`crate::timing::time_calls`]), median of repeats. Without
//! `TIMESTAMP_QUERY` it falls back to submit + wait wall time per repeat, and every figure is
//! tagged with the clock that made it.
//!
//! Per-case inputs rotate through several resident copies (`--cold-bytes`) so that repeats read
//! from DRAM, not from a warm L2 — the same rule the PyTorch peers follow.

use crate::data;
use crate::engine_ops as ops;
use crate::measure::{Measurement, RepeatPolicy};
use crate::pool::PoolPeak;
use crate::report::{DeviceReport, Roofline};
use crate::timing::{calls_per_sample, time_calls};
use crate::workload::{OpKind, Workload};
use bitnet_wgpu::{
    BackendKind, BinaryOp, Engine, EngineOptions, ProfileGranularity, Tensor, UnaryOp,
};
use std::collections::BTreeMap;

/// Copies of a rotated input at most (bounds memory on small working sets).
pub(crate) const MAX_COPIES: u64 = 512;

/// Dispatches per submission: large enough that the decode stack (210 BitLinears) is one batch.
const BATCH_DISPATCHES: u32 = 4096;

/// A GPU engine prepared for timing.
pub struct GpuBench {
    engine: Engine,
    timestamps: bool,
    /// The engine's device and queue, shared with the clock keeper.
    device: wgpu::Device,
    queue: wgpu::Queue,
    /// Whether the adapter is a software one (no clocks to keep).
    software: bool,
}

impl GpuBench {
    /// Opens the best GPU adapter (the engine's own choice) and turns the profiler on if it can.
    pub fn open(tuning: Option<bitnet_wgpu::BitnetTuning>) -> Result<GpuBench, String> {
        let options = EngineOptions {
            batch_dispatches: BATCH_DISPATCHES,
            // Fixed batches: a timed sample is one submission (no small first batch).
            first_batch_dispatches: BATCH_DISPATCHES,
            // Recorded work is submitted at `sync` only: a timed batch is exactly the calls of
            // one sample (an idle flush could submit part of it before the wall clock starts).
            idle_flush: None,
            ..Default::default()
        };
        // The device is opened here and shared, so that the clock keeper's work runs on it.
        let (adapter, device, queue) = bitnet_wgpu::open_gpu_device().map_err(|e| e.to_string())?;
        let engine = Engine::from_device_with(&adapter, device.clone(), queue.clone(), options)
            .map_err(|e| e.to_string())?;
        if engine.backend_kind() != BackendKind::Gpu {
            return Err("the engine found no GPU adapter".into());
        }
        // Only the environment sets another policy here: every op would run on the CPU, and
        // the GPU figures would be errors.
        if engine.dispatch_policy() == bitnet_wgpu::DispatchPolicy::Cpu {
            return Err(
                "BITNET_DISPATCH=cpu sends every op to the CPU: unset it for the GPU benchmark"
                    .into(),
            );
        }
        if let Some(t) = tuning {
            engine.set_bitnet_tuning(t);
        }
        // Whole-batch spans: per-dispatch timestamps perturb what they time (`profiler.rs`).
        let timestamps = engine.set_profiling(true).is_ok()
            && engine
                .set_profiling_granularity(ProfileGranularity::Batch)
                .is_ok();
        Ok(GpuBench {
            engine,
            timestamps,
            device,
            queue,
            software: adapter.get_info().device_type == wgpu::DeviceType::Cpu,
        })
    }

    /// Starts the clock keeper on the engine's device (see `clock_keeper.rs`) unless `off` or the
    /// adapter is a software one (no clocks to keep); returns whether it runs.
    pub fn start_clock_keeper(&self, off: bool) -> bool {
        crate::clock_keeper::start(&self.device, &self.queue, off || self.software)
    }

    /// The engine being measured.
    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    /// Whether GPU times come from timestamp queries (else submit + wait wall time).
    pub fn timestamps(&self) -> bool {
        self.timestamps
    }

    /// What the engine says about its adapter.
    pub fn device_report(&self) -> DeviceReport {
        let i = self.engine.info();
        let mut details = BTreeMap::new();
        details.insert("device_type".into(), i.device_type.clone());
        details.insert("driver_info".into(), i.driver_info.clone());
        details.insert(
            "subgroup_sizes".into(),
            format!("{}..={}", i.subgroup_min_size, i.subgroup_max_size),
        );
        details.insert("features".into(), format!("{:?}", i.features));
        if let Some(l) = i.limits {
            details.insert(
                "max_storage_binding".into(),
                l.max_storage_buffer_binding_size.to_string(),
            );
            details.insert("max_buffer".into(), l.max_buffer_size.to_string());
        }
        details.insert("timestamps".into(), self.timestamps.to_string());
        DeviceReport {
            name: i.adapter_name,
            backend: i.backend,
            driver: format!("{} {}", i.driver, i.driver_info).trim().to_string(),
            details,
        }
    }

    /// Runs `f` from an empty pool (free buffers trimmed, peaks reset) and returns its result with
    /// the pool's peaks over it. `f`'s tensors must be dropped when it returns (they are, for
    /// every timing method here), so the pool is back to its baseline afterwards.
    pub fn with_pool<T>(
        &self,
        f: impl FnOnce() -> Result<T, String>,
    ) -> Result<(T, PoolPeak), String> {
        let e = &self.engine;
        e.sync().map_err(|x| x.to_string())?;
        e.trim_pool();
        e.reset_pool_peaks();
        let before = e.pool_stats();
        let r = f()?;
        Ok((r, PoolPeak::from_stats(&e.pool_stats(), &before)))
    }

    /// Largest storage binding the engine allows (bytes).
    pub fn max_binding(&self) -> u64 {
        self.engine
            .info()
            .limits
            .map_or(0, |l| l.max_storage_buffer_binding_size)
    }

    /// Times one of the engine's elementwise ops on `bytes` of f32 per operand (the checked
    /// kernels every model step runs: copies, residual adds, activations), in GB/s of its
    /// compulsory traffic. `Engine::copy` is also a second copy-bandwidth probe.
    pub fn engine_elementwise(
        &self,
        op: ElementwiseProbe,
        bytes: u64,
        policy: RepeatPolicy,
    ) -> Result<Roofline, String> {
        let e = &self.engine;
        let n = (bytes / 4) as usize;
        let x = e.fill(&[n], 1.5).map_err(|x| x.to_string())?;
        // The add's second operand is a tensor of its own: `x + x` read one buffer twice at the
        // same addresses, one memory stream where three were counted.
        let y = match op {
            ElementwiseProbe::Add => Some(e.fill(&[n], 0.25).map_err(|x| x.to_string())?),
            _ => None,
        };
        let (streams, source) = match op {
            ElementwiseProbe::Copy => (2, "engine Engine::copy (util_copy, checked)"),
            ElementwiseProbe::Add => (
                3,
                "engine Engine::binary (add of two tensors, same shape, checked)",
            ),
            ElementwiseProbe::Relu => (2, "engine Engine::unary (relu, checked)"),
        };
        let time = self.time(policy, 1, |_| {
            match op {
                ElementwiseProbe::Copy => e.copy(&x),
                ElementwiseProbe::Add => e.binary(BinaryOp::Add, &x, y.as_ref().unwrap_or(&x)),
                ElementwiseProbe::Relu => e.unary(UnaryOp::Relu, &x),
            }
            .map(drop)
            .map_err(|x| x.to_string())
        })?;
        Ok(Roofline {
            bytes: streams * 4 * n as u64,
            time,
            source: source.into(),
            dispatch_floor: None,
        })
    }

    /// Times one workload: uploads its inputs (rotated copies), then runs the op `policy` times.
    /// `overlap`: each call's output lives until the batch's last call (a ring of one batch),
    /// so no call waits for the one before it; else outputs drop at once (serial latency).
    pub fn time_case(
        &self,
        w: &Workload,
        policy: RepeatPolicy,
        cold_bytes: u64,
        overlap: bool,
    ) -> Result<Measurement, String> {
        let e = &self.engine;
        let kept = std::cell::RefCell::new(std::collections::VecDeque::new());
        // Holds `t` for one batch of `calls` when overlapping (the oldest output is from the
        // previous, finished batch), else drops it.
        let hold = |t: Tensor, calls: usize| {
            if overlap {
                let mut k = kept.borrow_mut();
                if k.len() >= calls {
                    k.pop_front();
                }
                k.push_back(t);
            }
        };
        let seed = crate::cpu::seed(w);
        let err = |x: bitnet_wgpu::Error| x.to_string();
        match w.op {
            OpKind::Bitlinear => {
                let wq = data::ternary(w.n, w.k, seed).map_err(|x| x.to_string())?;
                let copies = copies(cold_bytes, w.n as u64 * w.k.div_ceil(16) as u64 * 4);
                let ws = (0..copies)
                    .map(|_| e.upload_ternary(&wq))
                    .collect::<Result<Vec<_>, _>>()
                    .map_err(err)?;
                let x = e
                    .upload_f32(&data::floats(w.m * w.k, seed + 1), &[w.m, w.k])
                    .map_err(err)?;
                let calls = calls_per_sample(ws.len(), w.bytes(), overlap);
                self.time(policy, calls, |i| {
                    ops::bitlinear(e, &x, &ws[i % ws.len()]).map(|y| hold(y, calls))
                })
            }
            OpKind::WeightQuant => {
                let host = data::floats(w.n * w.k, seed);
                let copies = copies(cold_bytes, (w.n * w.k * 4) as u64);
                let ws = (0..copies)
                    .map(|_| e.upload_f32(&host, &[w.n, w.k]))
                    .collect::<Result<Vec<_>, _>>()
                    .map_err(err)?;
                let calls = calls_per_sample(ws.len(), w.bytes(), overlap);
                self.time(policy, calls, |i| {
                    ops::quantize_weights(e, &ws[i % ws.len()]).map(|q| hold(q, calls))
                })
            }
            OpKind::ActQuant => {
                let host = data::floats(w.m * w.k, seed);
                let copies = copies(cold_bytes, (w.m * w.k * 4) as u64);
                let xs = (0..copies)
                    .map(|_| e.upload_f32(&host, &[w.m, w.k]))
                    .collect::<Result<Vec<_>, _>>()
                    .map_err(err)?;
                let calls = calls_per_sample(xs.len(), w.bytes(), overlap);
                self.time(policy, calls, |i| {
                    ops::quantize_activations(e, &xs[i % xs.len()]).map(|q| hold(q, calls))
                })
            }
        }
    }

    /// Warmup, then timed repeats of `f(i)` (see [`time_calls`]), `group` calls per sample.
    pub(crate) fn time(
        &self,
        policy: RepeatPolicy,
        group: usize,
        f: impl FnMut(usize) -> Result<(), String>,
    ) -> Result<Measurement, String> {
        time_calls(&self.engine, self.timestamps, policy, group, f)
    }

    /// Warmup, then timed repeats by wall clock: `f(i)` records the work (untimed), then the
    /// submit + wait of `Engine::sync` is timed.
    pub(crate) fn time_wall(
        &self,
        policy: RepeatPolicy,
        f: impl FnMut(usize) -> Result<(), String>,
    ) -> Result<Measurement, String> {
        time_calls(&self.engine, false, policy, 1, f)
    }
}

/// The elementwise ops [`GpuBench::engine_elementwise`] times.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ElementwiseProbe {
    /// `Engine::copy(x)`: one read, one write per value (a copy-bandwidth probe too).
    Copy,
    /// `Engine::binary(Add, x, x)`: two reads, one write per value.
    Add,
    /// `Engine::unary(Relu, x)`: one read, one write per value.
    Relu,
}

/// The BitLinear plan `e` ran an `[m, k] × [n, k]ᵀ` shape with, as text: the f32-input plan
/// where the shape had one (fused kernels), else the quantized-input plan.
pub fn plan_name(e: &Engine, m: usize, n: usize, k: usize) -> Option<String> {
    e.bitlinear_plan(m, n, k, true)
        .or_else(|| e.bitlinear_plan(m, n, k, false))
        .map(|p| p.to_string())
}

/// Copies of an input of `bytes` needed for the rotation set to exceed `cold_bytes`.
fn copies(cold_bytes: u64, bytes: u64) -> usize {
    cold_bytes.div_ceil(bytes.max(1)).clamp(1, MAX_COPIES) as usize
}
