//! The result model of one `bitnet-bench` run: what `--json` writes and `merge` reads back.
//!
//! Raw measurements are kept as measured; derived figures (GB/s, TOP/s, roofline %, GPU/CPU) are
//! computed by methods from them, so JSON, table, SVG and RESULTS.md can never disagree.

use crate::measure::Measurement;
use crate::pool::{PoolPeak, PoolSection};
use crate::workload::{OpKind, StackSpec, Workload};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Schema tag of the JSON this module writes.
pub const SCHEMA: &str = "bitnet-bench/1";

/// The adapter that ran the GPU side, as the engine reports it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct DeviceReport {
    /// Adapter name, e.g. `"NVIDIA H100 80GB HBM3"` or `"llvmpipe (LLVM 15.0.6, 256 bits)"`.
    pub name: String,
    /// Graphics API backend, e.g. `"Vulkan"`.
    pub backend: String,
    /// Driver name and version as far as the backend tells.
    pub driver: String,
    /// Everything else worth recording (device type, subgroup size, features, limits …).
    pub details: BTreeMap<String, String>,
}

/// The machine that ran the CPU side.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct HostReport {
    /// CPU model from `/proc/cpuinfo` (or `"unknown"`).
    pub cpu_model: String,
    /// Worker threads the CPU reference used (rayon's pool size).
    pub threads: usize,
    /// `std::env::consts::OS` / `ARCH`.
    pub os: String,
}

/// The bandwidth roofline: a WGSL copy kernel on the same device in the same run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Roofline {
    /// Bytes read + written per timed copy.
    pub bytes: u64,
    /// Time of one copy.
    pub time: Measurement,
    /// Which implementation ran it (engine utility or the bench's own kernel).
    pub source: String,
    /// What one dispatch costs on the same device (`dispatch_floor.rs`; with timestamps only).
    #[serde(default)]
    pub dispatch_floor: Option<crate::dispatch_floor::DispatchFloor>,
}

impl Roofline {
    /// Copy bandwidth in GB/s (read + write, 10^9 bytes).
    pub fn gbps(&self) -> f64 {
        gbps(self.bytes, self.time.median_ms)
    }
}

/// One op on one shape: GPU and CPU timings, or why either is missing.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CaseResult {
    /// Unique id (see [`Workload::id`]).
    pub id: String,
    /// Op family.
    pub op: OpKind,
    /// Shape label.
    pub shape: String,
    /// Activation rows (0 for weight quantization).
    pub m: usize,
    /// Output features.
    pub n: usize,
    /// Input features.
    pub k: usize,
    /// Compulsory bytes moved (see [`Workload::bytes`]).
    pub bytes: u64,
    /// Integer ops (BitLinear) or elements (quantization).
    pub ops: u64,
    /// Whether the copy-kernel bandwidth is this case's roofline.
    pub memory_bound: bool,
    /// GPU time, if measured.
    pub gpu: Option<Measurement>,
    /// Why the GPU time is missing, if it is.
    pub gpu_error: Option<String>,
    /// CPU reference time, if measured.
    pub cpu: Option<Measurement>,
    /// Why the CPU time is missing, if it is.
    pub cpu_error: Option<String>,
    /// The buffer pool's peaks while the GPU case ran (from an empty pool).
    #[serde(default)]
    pub gpu_pool: Option<PoolPeak>,
    /// Memory-bound ops: GPU time per call when calls keep their outputs, so no call waits for
    /// the one before it (`gpu` is the serial latency: each call's output buffer goes back to the
    /// pool and the next call's write waits behind a barrier).
    #[serde(default)]
    pub gpu_overlapped: Option<Measurement>,
    /// BitLinear: the kernel plan the engine ran the shape with (its `LinearPlan`, as text).
    #[serde(default)]
    pub gpu_plan: Option<String>,
}

impl CaseResult {
    /// A case with no timings yet.
    pub fn new(w: &Workload) -> CaseResult {
        CaseResult {
            id: w.id(),
            op: w.op,
            shape: w.shape.to_string(),
            m: w.m,
            n: w.n,
            k: w.k,
            bytes: w.bytes(),
            ops: w.ops(),
            memory_bound: w.memory_bound(),
            gpu: None,
            gpu_error: None,
            cpu: None,
            cpu_error: None,
            gpu_pool: None,
            gpu_overlapped: None,
            gpu_plan: None,
        }
    }

    /// Effective GPU bandwidth in GB/s.
    pub fn gpu_gbps(&self) -> Option<f64> {
        self.gpu.map(|g| gbps(self.bytes, g.median_ms))
    }

    /// Effective GPU bandwidth in GB/s of the overlapped calls.
    pub fn overlapped_gbps(&self) -> Option<f64> {
        self.gpu_overlapped.map(|g| gbps(self.bytes, g.median_ms))
    }

    /// Effective GPU throughput in TOP/s (BitLinear) or G elements/s (quantization) × 10^-3.
    pub fn gpu_tops(&self) -> Option<f64> {
        self.gpu
            .map(|g| self.ops as f64 / (g.median_ms * 1e-3) / 1e12)
    }

    /// Effective CPU bandwidth in GB/s.
    pub fn cpu_gbps(&self) -> Option<f64> {
        self.cpu.map(|c| gbps(self.bytes, c.median_ms))
    }

    /// Percent of the copy-kernel bandwidth, for memory-bound cases only.
    pub fn roofline_pct(&self, roof: Option<&Roofline>) -> Option<f64> {
        let roof = roof?;
        if !self.memory_bound {
            return None;
        }
        Some(100.0 * self.gpu_gbps()? / roof.gbps())
    }

    /// [`Self::roofline_pct`] of the overlapped calls.
    pub fn overlapped_roofline_pct(&self, roof: Option<&Roofline>) -> Option<f64> {
        let roof = roof?;
        if !self.memory_bound {
            return None;
        }
        Some(100.0 * self.overlapped_gbps()? / roof.gbps())
    }

    /// GPU time divided by CPU time (below 1: the GPU is faster).
    pub fn gpu_over_cpu(&self) -> Option<f64> {
        Some(self.gpu?.median_ms / self.cpu?.median_ms)
    }
}

/// The headline: one decode step through all 210 linear layers of BitNet-2B4T.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StackResult {
    /// Layers and tokens.
    pub spec: StackSpec,
    /// Number of distinct weight matrices (210 for the real model).
    pub matrices: usize,
    /// Packed ternary weight bytes.
    pub packed_weight_bytes: u64,
    /// Compulsory bytes per step (weights + activations).
    pub bytes: u64,
    /// GPU time of the whole stack: the profiler's batch span (clock `ts`), or the wall time
    /// below when the adapter has no timestamps.
    pub gpu: Option<Measurement>,
    /// Submit + wait wall time of the stack as one submission with the profiler off (includes
    /// inter-kernel gaps and the submission itself; host-side recording is not timed).
    pub gpu_wall: Option<Measurement>,
    /// `gpu` for the chained stack (a real decode's data flow: 120 dependent steps).
    #[serde(default)]
    pub gpu_chained: Option<Measurement>,
    /// `gpu_wall` for the chained stack.
    #[serde(default)]
    pub gpu_chained_wall: Option<Measurement>,
    /// `gpu` for the chained stack run as one `LinearChain` (one dispatch, M = 1).
    #[serde(default)]
    pub gpu_chain: Option<Measurement>,
    /// `gpu_wall` for the chained stack run as one `LinearChain`.
    #[serde(default)]
    pub gpu_chain_wall: Option<Measurement>,
    /// Whether those `LinearChain` runs used the one-dispatch chain kernel.
    #[serde(default)]
    pub gpu_chain_fused: bool,
    /// `LinearChain` runs back to back in one submission (profiler off): wall time ÷ runs.
    #[serde(default)]
    pub gpu_chain_back_to_back: Option<Measurement>,
    /// Why the GPU time is missing, if it is.
    pub gpu_error: Option<String>,
    /// CPU reference time of the same stack (chained), if measured.
    pub cpu: Option<Measurement>,
    /// Why the CPU time is missing, if it is.
    pub cpu_error: Option<String>,
    /// The buffer pool's peaks while the GPU stack ran (weights resident, from an empty pool).
    #[serde(default)]
    pub gpu_pool: Option<PoolPeak>,
}

impl StackResult {
    /// Effective GPU bandwidth of the step in GB/s.
    pub fn gpu_gbps(&self) -> Option<f64> {
        self.gpu.map(|g| gbps(self.bytes, g.median_ms))
    }
}

/// Everything one run measured, plus where and how.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Report {
    /// Always [`SCHEMA`].
    pub schema: String,
    /// bitnet-bench version.
    pub version: String,
    /// UTC start time, RFC 3339.
    pub date_utc: String,
    /// The exact command line of this run.
    pub command: String,
    /// Whether `--quick` reduced the workload set.
    pub quick: bool,
    /// The GPU adapter (absent when no adapter was found).
    pub device: Option<DeviceReport>,
    /// The host CPU.
    pub host: HostReport,
    /// The copy-kernel roofline, if measured: the fastest of [`Report::copy_probes`].
    pub roofline: Option<Roofline>,
    /// Every copy measured (the bench's plain kernel, the engine's checked `Engine::copy`).
    #[serde(default)]
    pub copy_probes: Vec<Roofline>,
    /// The engine's elementwise ops on the roofline's size (binary add, unary relu; checked
    /// kernels), in GB/s of their compulsory traffic. Never the roofline: not copies.
    #[serde(default)]
    pub elementwise_probes: Vec<Roofline>,
    /// Why the roofline is missing, if it is.
    pub roofline_error: Option<String>,
    /// Per op and shape.
    pub cases: Vec<CaseResult>,
    /// The decode stack, unless filtered out.
    pub stack: Option<StackResult>,
    /// Issue 4: activations streamed through act quant + BitLinear, unless filtered out.
    #[serde(default)]
    pub stream: Option<crate::stream::StreamResult>,
    /// Issue 4: batched decode, time(B = 8) / time(B = 1), unless filtered out.
    #[serde(default)]
    pub batch: Option<crate::batch::BatchResult>,
    /// Issue 4: engine / cpu-ref time of small host-facing ops on the CPU path, unless filtered
    /// out (or `--no-cpu`).
    #[serde(default)]
    pub overhead: Option<crate::overhead::OverheadResult>,
    /// Attention and KV append (decode and prefill), unless filtered out; absent in reports
    /// from before the section existed.
    #[serde(default)]
    pub attention: Option<crate::attention::AttentionResult>,
    /// Buffer-pool peak / live per section (derived from the per-case `gpu_pool` figures by
    /// [`crate::pool::sections`] when the report is written; kept here for readers of the JSON).
    #[serde(default)]
    pub pool: Vec<PoolSection>,
    /// Whether the clock keeper kept the GPU busy between timed batches (`clock_keeper.rs`);
    /// false in reports from before it existed.
    #[serde(default)]
    pub clock_keeper: bool,
    /// Free-form remarks (fallbacks taken, skipped parts).
    pub notes: Vec<String>,
}

impl Report {
    /// Whether any section has a figure (a run that measured nothing — every step skipped or
    /// failed — exits with an error after writing its outputs).
    pub fn measured_anything(&self) -> bool {
        self.cases
            .iter()
            .any(|c| c.gpu.is_some() || c.cpu.is_some())
            || self.stack.as_ref().is_some_and(|s| s.gpu.is_some())
            || self
                .attention
                .as_ref()
                .is_some_and(|a| a.cases.iter().any(|c| c.gpu.is_some() || c.cpu.is_some()))
            || self.stream.is_some()
            || self.batch.is_some()
            || self.overhead.is_some()
    }

    /// The report with every time that measures nothing (zero, negative, not finite; see
    /// [`crate::measure::valid_ms`]) taken out, and one note saying how many: such a figure reads
    /// "not measured", never a bandwidth, a ratio or a verdict. A roofline with no valid time or
    /// no bytes is dropped with it.
    pub fn without_invalid_times(mut self) -> Report {
        let mut dropped = 0;
        let mut keep = |m: &mut Option<Measurement>| {
            if m.is_some_and(|m| !crate::measure::valid_ms(m.median_ms)) {
                *m = None;
                dropped += 1;
            }
        };
        for c in &mut self.cases {
            [&mut c.gpu, &mut c.cpu, &mut c.gpu_overlapped]
                .into_iter()
                .for_each(&mut keep);
        }
        if let Some(s) = &mut self.stack {
            [
                &mut s.gpu,
                &mut s.gpu_wall,
                &mut s.gpu_chained,
                &mut s.gpu_chained_wall,
                &mut s.gpu_chain,
                &mut s.gpu_chain_wall,
                &mut s.gpu_chain_back_to_back,
                &mut s.cpu,
            ]
            .into_iter()
            .for_each(&mut keep);
        }
        if let Some(s) = &mut self.stream {
            [
                &mut s.total,
                &mut s.upload_only,
                &mut s.transfer_only,
                &mut s.compute_only,
            ]
            .into_iter()
            .for_each(&mut keep);
        }
        for s in self.batch.iter_mut().flat_map(|b| &mut b.shapes) {
            [&mut s.b1, &mut s.b8, &mut s.server_b1, &mut s.server_b8]
                .into_iter()
                .for_each(&mut keep);
        }
        for c in self.attention.iter_mut().flat_map(|a| &mut a.cases) {
            [&mut c.gpu, &mut c.cpu, &mut c.append]
                .into_iter()
                .for_each(&mut keep);
        }
        let valid = |r: &Roofline| r.bytes > 0 && crate::measure::valid_ms(r.time.median_ms);
        let probes = self.copy_probes.len() + self.elementwise_probes.len();
        self.copy_probes.retain(valid);
        self.elementwise_probes.retain(valid);
        dropped += probes - self.copy_probes.len() - self.elementwise_probes.len();
        if self.roofline.as_ref().is_some_and(|r| !valid(r)) {
            self.roofline = None;
            self.roofline_error
                .get_or_insert_with(|| "its time or size measures nothing".into());
            dropped += 1;
        }
        if dropped > 0 {
            self.notes.push(format!(
                "{dropped} time(s) of zero or below (or not finite) in this report: not measured"
            ));
        }
        self
    }
}

/// `bytes` over `ms` milliseconds, in GB/s (10^9 bytes per second).
pub fn gbps(bytes: u64, ms: f64) -> f64 {
    bytes as f64 / (ms * 1e-3) / 1e9
}
