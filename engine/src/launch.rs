//! The one kernel-launch helper, and the kernel author's guide.
//!
//! # Kernel author's guide
//!
//! ## 1. Write the WGSL (in `kernels-wgsl/shaders/`)
//!
//! ```wgsl
//! struct Params { n: u32, alpha: f32 }            // ≤ 128 bytes (PARAMS_MAX_BYTES)
//! @group(0) @binding(0) var<storage, read> x: array<f32>;          // your buffers: group 0,
//! @group(0) @binding(1) var<storage, read_write> y: array<f32>;    // bindings 0, 1, 2, ...
//! var<immediate> params: Params;                                   // exactly this line (or the
//! // uniform form: `@group(1) @binding(0) var<uniform> params: Params;` — either is accepted)
//! @group(1) @binding(1) var<storage, read_write> nonfinite: array<atomic<u32>, 4>; // optional
//!
//! @compute @workgroup_size(256)
//! fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
//!         @builtin(local_invocation_index) lid: u32) {
//!     let i = (wid.x + wid.y * nwg.x) * 256u + lid;   // linear grid (see 4.)
//!     if i >= params.n { return; }                     // always bounds-check
//!     let v = x[i];
//!     if (bitcast<u32>(v) & 0x7f800000u) == 0x7f800000u { atomicMin(&nonfinite[0], i); }
//!     y[i] = v * params.alpha;
//! }
//! ```
//!
//! * **Params**: one struct named `Params`, one variable named `params`, declared with exactly one
//!   of the two lines above. The pipeline cache rewrites that line to what the device uses:
//!   immediates (`set_immediates`) when `Features::IMMEDIATES` and `max_immediate_size ≥ 128`, else
//!   a slot of the engine's uniform arena (group 1, binding 0, dynamic offset). Kernels are written
//!   once and run both ways; tests cover both (`EngineOptions::force_uniform_params`). Params are
//!   the only per-call scalars: no per-call uniform buffers.
//! * **Group 1 is the engine's**: binding 0 = params (uniform mode), binding 1 = this launch's
//!   non-finite status slot. Never declare other group-1 bindings.
//! * Keep storage bindings ≤ 7 per kernel (WebGPU's floor is 8 per stage; the status slot is one).
//! * Register the source in `kernels-wgsl` (a `KernelSource` const in its module's `ALL`).
//!
//! ## 2. Declare the kernel (in `engine/src/ops/<family>.rs`)
//!
//! ```ignore
//! const SCALE: Kernel = Kernel::new(kernels::tensor::SCALE, "main", &[Access::Read, Access::ReadWrite]);
//! const SCALE_SG: Kernel = Kernel::new(kernels::tensor::SCALE_SG, "main", &[..])
//!     .requiring(wgpu::Features::SUBGROUP);
//! ```
//!
//! `bindings` lists group 0 in binding order. Each (kernel name, entry, override constants) is
//! compiled once, inside error scopes; a broken shader is `Error::PipelineCreation`.
//!
//! ## 3. Launch it
//!
//! ```ignore
//! let gpu = engine.gpu_context().ok_or(...)?;          // or branch to the CPU path
//! let y = engine.empty(gpu, "scale", x.shape(), DType::F32)?; // pooled output (op name for errors)
//! Launch::new(gpu, &SCALE)
//!     .input(x)                                         // binding 0 (whole data buffer)
//!     .output(&y)                                       // binding 1
//!     .params(&Params { n, alpha })                     // any bytemuck::Pod, ≤ 128 bytes
//!     .check_finite(NonFiniteCheck::new("scale", "x"))  // only if the kernel flags
//!     .workgroups(n.div_ceil(256) as u64)               // linear grid
//!     .run()?;                                          // records; no submit, no wait
//! Ok(y)
//! ```
//!
//! `run` hands the dispatch to the engine's submission thread (`scheduler.rs`), which records it
//! into the pending batch; it returns at once. Work is submitted at sync points — read-back,
//! upload, `Engine::sync` — when the batch is full (`EngineOptions::first_batch_dispatches`, then
//! doubling up to `EngineOptions::batch_dispatches`), or when the engine is idle (`EngineOptions::idle_flush`). Ops therefore chain on the device with no read-back. Scales of packed tensors
//! bind with `input_scales` / `output_scales`; sub-ranges with `input_range` / `output_range`.
//! Every launch gets a fate (`fate.rs`); its outputs inherit the fates of its inputs plus its own.
//! A flagged value or a failed submission poisons exactly the tensors computed from that launch:
//! reading them, or launching with them as inputs once the failure is known, returns that error —
//! never stale bytes, and never another caller's error. The reference use of
//! all of this is `ops/util.rs` (`fill`, `copy`).
//!
//! ## 4. Workgroup counts above 65535
//!
//! `workgroups(n)` takes a *linear* count and folds it into `(x, y, 1)` with `x, y ≤
//! max_compute_workgroups_per_dimension` (`y = ceil(n / max)`, `x = ceil(n / y)`), so `x · y ≥ n`.
//! Kernels compute `wid.x + wid.y * nwg.x` and bounds-check (a few extra workgroups may run).
//! `grid([x, y, z])` dispatches exactly and rejects a dimension above the limit with
//! `Error::LimitExceeded`.
//!
//! ## 5. Buffers above `max_storage_buffer_binding_size`
//!
//! Every binding is checked: one above the limit is `Error::LimitExceeded` naming
//! `max_storage_buffer_binding_size` — never a wrong result. Ops that must handle such tensors split
//! them with [`binding_chunks`] (aligned element ranges that fit) and launch per chunk with
//! `input_range` / `output_range`, passing the chunk's first index in params and as
//! `NonFiniteCheck::at(base)` (or `at_each([..])` when the checked tensors' chunks start at
//! different flat indices), and mark every chunk with `chunk_of(group)` (one `gpu.next_seq()`
//! per call) so flags in several chunks are reported as one launch reports them. Use
//! [`check_binding`] to fail early with a clear error.
//!
//! ## 6. Variants by features
//!
//! Read `gpu.caps` (`has(Features::SUBGROUP)`, `subgroup_min_size`/`subgroup_max_size` — 8 on
//! lavapipe, 32 on NVIDIA; never assume — `limits`) and pick the `Kernel` const, or pass override
//! constants with `.constant("WG", 256.0)` (part of the cache key). Gate with `.requiring(..)`.
//!
//! ## 7. Reporting non-finite input
//!
//! Declare `@group(1) @binding(1) var<storage, read_write> nonfinite: array<atomic<u32>, 4>;`.
//! Word `t` belongs to the `t`-th tensor named in the launch's `NonFiniteCheck` (e.g.
//! `NonFiniteCheck::tensors("softmax", ["x", "output", "", ""])`); on NaN/Inf at flat index `i`
//! (relative to the binding; the check's base for word `t` is added) do
//! `atomicMin(&nonfinite[t], i)`. The
//! read of a tensor computed from the launch returns `Error::NonFinite { op, tensor, index }` (the
//! earliest flagged launch of its lineage), the same error cpu-ref returns — use cpu-ref's op and tensor names. Flags need no extra buffers.

use bytemuck::Pod;

use crate::context::Gpu;
use crate::device::PARAMS_MAX_BYTES;
use crate::error::Error;
use crate::pipelines::Kernel;
use crate::status::NonFiniteCheck;
use crate::tensor::{Storage, Tensor};

#[path = "launch_run.rs"]
mod run;

pub(crate) use crate::chunk::{binding_chunks, check_binding, check_grid, fold_workgroups};

/// One buffer binding of a launch.
struct Bound<'a> {
    buffer: &'a wgpu::Buffer,
    marks: &'a crate::hazard::UseMarks,
    offset: u64,
    size: u64,
    writes: bool,
}

/// A kernel launch being built; `run` records it. Errors found while building are returned by
/// `run`, so the chain never panics.
#[must_use = "a launch does nothing until `run` is called"]
pub struct Launch<'a> {
    gpu: &'a Gpu,
    kernel: &'a Kernel,
    constants: Vec<(&'static str, f64)>,
    bound: Vec<Bound<'a>>,
    params: [u8; PARAMS_MAX_BYTES as usize],
    groups: Option<[u32; 3]>,
    check: Option<NonFiniteCheck>,
    /// The op call this launch is one chunk of ([`Launch::chunk_of`]).
    group: Option<u64>,
    err: Option<Error>,
    inputs: Vec<&'a Tensor>,
    outputs: Vec<&'a Tensor>,
}

/// The bytes a tensor is bound with when the kernel names no range: its whole buffer, except
/// for a view over a buffer above the binding limit (a KV cache's keys or values, whose buffer
/// holds the cache's capacity): that is bound from its start over as much as a binding may
/// hold, when its own bytes fit there. Binding the whole buffer failed every attention over such
/// a cache with `LimitExceeded`, even at one position. The binding's size stays the same from
/// step to step, so the bind-group cache still serves it.
fn whole_binding(gpu: &Gpu, t: &Tensor, scales: bool, buf: &crate::pool::PooledBuffer) -> u64 {
    let whole = buf.bytes();
    if scales || whole <= gpu.caps.max_binding || !t.is_view() {
        return whole;
    }
    // Whole vec4s (a kernel may read the view as vec4 words), within the limit.
    let cap = gpu.caps.max_binding / 16 * 16;
    match t.dtype().data_bytes(t.shape()) {
        Some(own) if own.next_multiple_of(16) <= cap => cap,
        _ => whole,
    }
}

impl<'a> Launch<'a> {
    /// Starts a launch of `kernel` on `gpu`.
    pub fn new(gpu: &'a Gpu, kernel: &'a Kernel) -> Launch<'a> {
        Launch {
            gpu,
            kernel,
            constants: Vec::new(),
            bound: Vec::new(),
            params: [0; PARAMS_MAX_BYTES as usize],
            groups: None,
            check: None,
            group: None,
            err: None,
            inputs: Vec::new(),
            outputs: Vec::new(),
        }
    }

    fn fail(&mut self, e: Error) {
        self.err.get_or_insert(e);
    }

    fn misuse(&mut self, message: String) {
        self.fail(Error::KernelMisuse {
            kernel: self.kernel.name(),
            message,
        });
    }

    /// Binds `storage` (bytes `range`, or all of it) as the next binding.
    fn bind(
        mut self,
        t: &'a Tensor,
        scales: bool,
        range: Option<(u64, u64)>,
        writes: bool,
    ) -> Self {
        if self.err.is_some() {
            return self;
        }
        if t.engine().gpu_id() != Some(self.gpu.id) {
            self.fail(Error::EngineMismatch {
                op: self.kernel.name(),
            });
            return self;
        }
        let storage = if scales { t.scales() } else { Some(t.data()) };
        let buf = match storage {
            Some(Storage::Device(b)) => b,
            Some(Storage::Host(_) | Storage::HostTernary(_)) => {
                self.fail(Error::Unsupported(format!(
                    "kernel `{}`: tensor lives on the host; upload it first",
                    self.kernel.name()
                )));
                return self;
            }
            None => {
                self.misuse(format!(
                    "tensor of dtype {} has no scales buffer",
                    t.dtype()
                ));
                return self;
            }
        };
        let (offset, size) = range.unwrap_or_else(|| (0, whole_binding(self.gpu, t, scales, buf)));
        let align = u64::from(self.gpu.caps.limits.min_storage_buffer_offset_alignment);
        if !offset.is_multiple_of(align)
            || !size.is_multiple_of(4)
            || size == 0
            || offset.checked_add(size).is_none_or(|end| end > buf.bytes())
        {
            self.misuse(format!(
                "binding range {offset}+{size} of a {}-byte buffer (offset alignment {align})",
                buf.bytes()
            ));
            return self;
        }
        if size > self.gpu.caps.max_binding {
            // Named only on the error path (formatting cost every launch otherwise).
            let what = format!(
                "kernel `{}` binding {}",
                self.kernel.name(),
                self.bound.len()
            );
            if let Err(e) = check_binding(self.gpu, &what, size) {
                self.fail(e);
                return self;
            }
        }
        self.bound.push(Bound {
            buffer: buf.buffer(),
            marks: buf.marks(),
            offset,
            size,
            writes,
        });
        if writes {
            self.outputs.push(t)
        } else {
            self.inputs.push(t)
        }
        self
    }

    /// Binds a tensor's data (read-only use; allowed for `Read` and `ReadWrite` slots).
    pub fn input(self, t: &'a Tensor) -> Self {
        self.bind(t, false, None, false)
    }

    /// Binds a tensor's data for writing (a `ReadWrite` slot).
    pub fn output(self, t: &'a Tensor) -> Self {
        self.bind(t, false, None, true)
    }

    /// Binds an engine-owned working buffer the kernel reads and writes but no caller reads
    /// (counters, flags): ordered against other launches like an output, but it takes no
    /// lineage, so a buffer reused by every run does not collect every run's fate.
    pub fn scratch(self, t: &'a Tensor) -> Self {
        let n = self.outputs.len();
        let mut l = self.bind(t, false, None, true);
        l.outputs.truncate(n);
        l
    }

    /// Binds a packed tensor's scales buffer for reading.
    pub fn input_scales(self, t: &'a Tensor) -> Self {
        self.bind(t, true, None, false)
    }

    /// Binds a packed tensor's scales buffer for writing.
    pub fn output_scales(self, t: &'a Tensor) -> Self {
        self.bind(t, true, None, true)
    }

    /// Binds bytes `[offset, offset + size)` of a packed tensor's scales for reading (offset
    /// aligned as [`Launch::input_range`]'s; see `ops::bitnet::scale_rows`).
    pub fn input_scales_range(self, t: &'a Tensor, offset: u64, size: u64) -> Self {
        self.bind(t, true, Some((offset, size)), false)
    }

    /// Binds bytes `[offset, offset + size)` of a packed tensor's scales for writing.
    pub fn output_scales_range(self, t: &'a Tensor, offset: u64, size: u64) -> Self {
        self.bind(t, true, Some((offset, size)), true)
    }

    /// Binds bytes `[offset, offset + size)` of a tensor's data for reading (offset aligned to
    /// `min_storage_buffer_offset_alignment`; see [`binding_chunks`]).
    pub fn input_range(self, t: &'a Tensor, offset: u64, size: u64) -> Self {
        self.bind(t, false, Some((offset, size)), false)
    }

    /// Binds bytes `[offset, offset + size)` of a tensor's data for writing.
    pub fn output_range(self, t: &'a Tensor, offset: u64, size: u64) -> Self {
        self.bind(t, false, Some((offset, size)), true)
    }

    /// Sets the params (a `#[repr(C)]` Pod struct matching the WGSL `Params`, ≤ 128 bytes).
    pub fn params<P: Pod>(mut self, p: &P) -> Self {
        let bytes = bytemuck::bytes_of(p);
        if bytes.len() > self.params.len() {
            self.misuse(format!(
                "params are {} bytes, the limit is {PARAMS_MAX_BYTES}",
                bytes.len()
            ));
        } else {
            self.params[..bytes.len()].copy_from_slice(bytes);
        }
        self
    }

    /// Sets a pipeline-overridable constant (`override NAME: T;` in WGSL); part of the cache key.
    pub fn constant(mut self, name: &'static str, value: f64) -> Self {
        self.constants.push((name, value));
        self
    }

    /// Linear workgroup count, folded into x and y when above the per-dimension limit.
    pub fn workgroups(mut self, n: u64) -> Self {
        match fold_workgroups(self.gpu, n) {
            Ok(g) => self.groups = Some(g),
            Err(e) => self.fail(e),
        }
        self
    }

    /// Exact 3-D grid; a dimension above `max_compute_workgroups_per_dimension` is an error.
    pub fn grid(mut self, groups: [u32; 3]) -> Self {
        let max = self.gpu.caps.limits.max_compute_workgroups_per_dimension;
        if groups.iter().all(|&d| d <= max) {
            self.groups = Some(groups);
            return self;
        }
        // Named only on the error path (formatting cost every launch otherwise).
        let what = format!("kernel `{}` grid {groups:?}", self.kernel.name());
        if let Err(e) = check_grid(self.gpu, &what, groups) {
            self.fail(e);
        }
        self
    }

    /// Reports NaN/Inf flagged by the kernel through its status slot (see the guide, section 7).
    pub fn check_finite(mut self, check: NonFiniteCheck) -> Self {
        self.check = Some(check);
        self
    }

    /// Marks the launch as one chunk of an op call split over the binding limit; every chunk of
    /// the call passes the same `group`, a number from `Gpu::next_seq` taken once per call. Their
    /// non-finite flags are then reported as one unchunked launch would report them (lowest status
    /// word, then lowest index; `fate::first_error`), not by which chunk ran first.
    pub fn chunk_of(mut self, group: u64) -> Self {
        self.group = Some(group);
        self
    }
}

#[cfg(test)]
#[path = "record_cost_tests.rs"]
pub(crate) mod record_cost_tests;
