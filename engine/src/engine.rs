//! [`Engine`]: the entry point — constructors, backend choice, pool, sync and profiler access.

use std::sync::Arc;

use crate::context::Gpu;
use crate::device;
use crate::dispatch::DispatchPolicy;
use crate::error::{Error, Result};
use crate::info::EngineInfo;
use crate::pipelines::PipelineStats;
use crate::pool::PoolStats;
use crate::profiler::{ProfileGranularity, ProfileReport, ProfilerState};
use crate::tensor::{Location, Tensor};

/// Which backend an engine runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum BackendKind {
    /// The pure-Rust CPU reference engine (`bitnet-cpu-ref`).
    Cpu,
    /// A wgpu device.
    Gpu,
}

/// Options of a GPU engine (tests use them to exercise paths the hardware would not reach).
#[derive(Debug, Clone, PartialEq)]
pub struct EngineOptions {
    /// Cap the storage-binding size below the device's (exercises chunking cheaply). A cap below
    /// the device's `min_storage_buffer_offset_alignment` (at most 256 bytes; 4 at least) leaves no
    /// op a chunk it could bind: engine creation rejects it with
    /// `Error::CpuRef(InvalidArgument { what: "max_binding_bytes", .. })`. Ops split their work
    /// to fit a cap down to one row (or one aligned group of rows) of their operands; a row
    /// larger than the cap is `LimitExceeded` under `Gpu` (a CPU run under `Auto`). Weight
    /// quantization's sum reads whole blocks of 4096 values: on the GPU it needs a cap of
    /// 16 KiB.
    pub max_binding_bytes: Option<u64>,
    /// Pass params through the uniform arena even when immediates are available.
    pub force_uniform_params: bool,
    /// Dispatches recorded before a batch is submitted without a sync point (0 acts as 1). The
    /// GPU starts a batch only once it is recorded, encoded and submitted, so small batches
    /// overlap the host's work with the GPU's, and each costs a submit (about 45 µs of the
    /// submission thread on the H200 machine). Default 48: a 2B4T decode step that reads its
    /// output (about 300 dispatches; the submission thread spends 5-12 µs per dispatch, the
    /// GPU about 8) took 3.12-3.22 ms per step with 48, 3.23-3.84 with 64, 3.30-3.70 with 32
    /// and 3.65-3.83 with 128 (three interleaved rounds). In uniform params mode each dispatch
    /// takes a params slot (256 bytes) of one arena: a count whose arena would exceed
    /// `max_buffer_size` makes engine creation `Err(LimitExceeded)`.
    pub batch_dispatches: u32,
    /// Dispatches in the first batch after a sync point or an idle flush, when the GPU has
    /// nothing left to run: that batch is submitted once it holds this many, and each later
    /// batch that fills up doubles the count, up to `batch_dispatches`. The GPU then starts
    /// within a few launches of a step's beginning instead of a whole batch's recording and
    /// encoding later (the decode step above, 128-dispatch batches: 3.86 ms per step starting
    /// with 128, 3.58 starting with 16; the GPU is busy 2.4 ms of it). 0 acts as 1; a count of
    /// `batch_dispatches` or more gives fixed-size batches.
    pub first_batch_dispatches: u32,
    /// Submit what was recorded once the engine saw no new work for this long (`None`: only at
    /// sync points and full batches — deterministic batching, for tests; a window too long to
    /// add to the current time, such as `Duration::MAX`, acts as `None`).
    pub idle_flush: Option<std::time::Duration>,
    /// Where host-facing ops run (see [`DispatchPolicy`]); `BITNET_DISPATCH` overrides it.
    /// Default `Gpu` (an engine built on an explicit GPU); [`Engine::new`] uses `Auto`.
    pub dispatch: DispatchPolicy,
    /// How long a thread waiting for the GPU — the completion thread while reads are
    /// outstanding, the caller in [`Engine::sync`] — polls it back to back (every few
    /// microseconds, no syscall) before it backs off to yields and then sleeps of up to 100 µs.
    /// A sleep wakes late by up to its length plus the kernel's timer slack, which on a
    /// millisecond-long wait is a tenth of it; spinning costs a host core while it lasts.
    /// `None`: 2 ms on GPUs, zero on CPU adapters (lavapipe), whose work runs on the host's
    /// cores. H200, one `LinearChain` run of the 2B4T decode stack (GPU 834-837 µs): submit +
    /// wait 1.109 / 1.165 ms without spinning, 1.003 / 0.959 ms with 2 ms (two rounds).
    pub spin_wait: Option<std::time::Duration>,
    /// Device features the engine must not use even where the adapter has them: their kernels
    /// give way to the portable ones (e.g. without `MEMORY_DECORATION_COHERENT` a `LinearChain`
    /// runs the chain kernel with atomic outputs, as on Metal before 3.2). For tests of those
    /// paths, and to route around a driver bug. Default none.
    pub disabled_features: wgpu::Features,
}

impl Default for EngineOptions {
    fn default() -> Self {
        EngineOptions {
            max_binding_bytes: None,
            force_uniform_params: false,
            batch_dispatches: 48,
            first_batch_dispatches: 16,
            idle_flush: Some(std::time::Duration::from_micros(200)),
            dispatch: DispatchPolicy::Gpu,
            spin_wait: None,
            disabled_features: wgpu::Features::empty(),
        }
    }
}

/// The engines' (and their tensors') handle on a GPU context: when the last one goes, the
/// context's threads are stopped and joined here, so the device is torn down by this thread and
/// never while a background thread still uses it.
#[derive(Debug)]
struct GpuOwner(Arc<Gpu>);

impl Drop for GpuOwner {
    fn drop(&mut self) {
        self.0.shutdown();
    }
}

/// The compute engine: CPU reference or one wgpu device. `Clone + Send + Sync`; clones share
/// the device, pool, pipeline cache and pending batch.
#[derive(Debug, Clone)]
pub struct Engine {
    /// `None` on the CPU engine: every tensor holds its engine, and a CPU engine's handle then
    /// clones and drops without touching a shared count (two atomic operations fewer per
    /// tensor: a 256-value ReLU on engine tensors took 145 → 133 ns, lavapipe host).
    gpu: Option<Arc<GpuOwner>>,
}

impl std::fmt::Debug for Gpu {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "Gpu({}, id {})",
            device::describe(&self.adapter_info),
            self.id
        )
    }
}

impl Default for Engine {
    fn default() -> Self {
        Engine::new()
    }
}

impl Engine {
    /// The best available backend with automatic dispatch: the best GPU adapter (discrete >
    /// integrated > software, honouring `WGPU_BACKEND` and `WGPU_ADAPTER_NAME`) with
    /// [`DispatchPolicy::Auto`] — each host-facing op runs where it is predicted to be faster —
    /// else the CPU engine (logged at `warn`).
    pub fn new() -> Engine {
        let auto = EngineOptions {
            dispatch: DispatchPolicy::Auto,
            ..EngineOptions::default()
        };
        match Engine::gpu_with(auto) {
            Ok(e) => e,
            Err(e) => {
                log::warn!("bitnet-wgpu: using the CPU backend: {e}");
                Engine::cpu()
            }
        }
    }

    /// The CPU reference engine.
    pub fn cpu() -> Engine {
        Engine { gpu: None }
    }

    /// The best GPU adapter, or `Err(NoAdapter)` — what tests use, so they fail loudly.
    pub fn gpu() -> Result<Engine> {
        Engine::gpu_with(EngineOptions::default())
    }

    /// Like [`Engine::gpu`], with options.
    pub fn gpu_with(options: EngineOptions) -> Result<Engine> {
        let (adapter, device, queue) = open_gpu_device()?;
        Engine::from_device_with(&adapter, device, queue, options)
    }

    /// An engine on a chosen adapter (requests its real limits and wanted features).
    pub fn from_adapter(adapter: &wgpu::Adapter) -> Result<Engine> {
        Engine::from_adapter_with(adapter, EngineOptions::default())
    }

    /// Like [`Engine::from_adapter`], with options.
    pub fn from_adapter_with(adapter: &wgpu::Adapter, options: EngineOptions) -> Result<Engine> {
        let (device, queue) = device::request_device(adapter)?;
        Engine::from_device_with(adapter, device, queue, options)
    }

    /// An engine on a device the application already owns, made from `adapter` (the device's
    /// own: its subgroup sizes and name key the kernels' choices and the caches). The engine uses
    /// the device's enabled features and limits — at least WebGPU's defaults
    /// (`wgpu::Limits::default()`) for storage buffers per stage, workgroup memory and workgroup
    /// size, or the engine is refused with `LimitExceeded` — and shares the queue with the
    /// application.
    ///
    /// wgpu keeps one device-lost callback and one uncaptured-error handler per device: each
    /// engine installs both, and the engines the replaced ones reached move over to them, so
    /// every engine on a device hears them (a loss marks each lost; an error outside any error
    /// scope — the application's own work included — is reported as `Error::Validation` or
    /// `OutOfMemory` at each one's next sync point). An
    /// application handler set before is replaced, and stays replaced after the engines are
    /// gone (wgpu cannot restore it; the engine's handler then only logs). Setting either on the
    /// device while an engine uses it takes them from the engine: it then learns of a loss only
    /// through failing reads. To catch your own errors, wrap your work in error scopes.
    ///
    /// Each engine's own threads count as the threads of the crate docs' error-scope note: on a
    /// device that outlives many engines, each engine made on it holds about 0.4 KiB until the
    /// device drops (a reviewer measured 1,000 engines); keep one engine per device instead.
    pub fn from_device(
        adapter: &wgpu::Adapter,
        device: wgpu::Device,
        queue: wgpu::Queue,
    ) -> Result<Engine> {
        Engine::from_device_with(adapter, device, queue, EngineOptions::default())
    }

    /// Like [`Engine::from_device`], with options.
    pub fn from_device_with(
        adapter: &wgpu::Adapter,
        device: wgpu::Device,
        queue: wgpu::Queue,
        mut options: EngineOptions,
    ) -> Result<Engine> {
        options.batch_dispatches = options.batch_dispatches.max(1);
        let info = adapter.get_info();
        log::info!("bitnet-wgpu: using {}", device::describe(&info));
        let gpu = Gpu::start(info, device, queue, options)?;
        Ok(Engine {
            gpu: Some(Arc::new(GpuOwner(gpu))),
        })
    }

    /// Which backend this engine runs on.
    pub fn backend_kind(&self) -> BackendKind {
        match self.gpu {
            None => BackendKind::Cpu,
            Some(_) => BackendKind::Gpu,
        }
    }

    /// Adapter, backend, driver, features in use and key limits.
    pub fn info(&self) -> EngineInfo {
        match self.gpu_raw() {
            None => EngineInfo::cpu(),
            Some(g) => EngineInfo::gpu(g),
        }
    }

    /// The GPU context for new work: None on the CPU engine, under [`DispatchPolicy::Cpu`]
    /// (except on a thread calibrating this engine, which times the GPU whatever the policy),
    /// and once the device is lost (a lost device is never used again: ops take their CPU
    /// paths). For op implementations.
    #[inline]
    pub(crate) fn gpu_context(&self) -> Option<&Gpu> {
        match self.gpu_raw() {
            Some(g)
                if !g.is_lost()
                    && (g.dispatch.policy() != DispatchPolicy::Cpu
                        || crate::calibrate::measuring(g)) =>
            {
                Some(g)
            }
            _ => None,
        }
    }

    /// The GPU context for a tensor op on `inputs`: `None` — run on the CPU — on the CPU engine,
    /// under the CPU policy, or when an input lives on the host (a tensor op runs where its data
    /// lives, as `LinearChain::forward_tensor` does; reading a host input back costs nothing).
    #[inline]
    pub(crate) fn gpu_for(&self, inputs: &[&Tensor]) -> Option<&Gpu> {
        self.gpu_context()
            .filter(|_| inputs.iter().all(|t| t.location() == Location::Device))
    }

    /// The GPU context even when it should not take new work (reads of existing tensors).
    #[inline]
    pub(crate) fn gpu_raw(&self) -> Option<&Gpu> {
        self.gpu.as_deref().map(|owner| &*owner.0)
    }

    /// Id of the GPU context (None on the CPU engine); tensors of other engines are rejected.
    pub(crate) fn gpu_id(&self) -> Option<u64> {
        self.gpu_raw().map(|g| g.id)
    }

    /// `EngineMismatch { op }` unless `other` is this engine (the same GPU context, or both on
    /// the CPU): the one check behind every "tensor / layer of another engine" error.
    pub(crate) fn expect_same(&self, other: &Engine, op: &'static str) -> Result<()> {
        if other.gpu_id() != self.gpu_id() {
            return Err(Error::EngineMismatch { op });
        }
        Ok(())
    }

    /// Buffer-pool statistics (all zero on the CPU engine).
    pub fn pool_stats(&self) -> PoolStats {
        self.gpu_raw().map_or_else(PoolStats::default, |g| {
            let ring = g.ring.lock().unwrap_or_else(|e| e.into_inner());
            PoolStats {
                upload_staging_bytes: ring.as_ref().map_or(0, |r| r.bytes()),
                ..g.pool.stats()
            }
        })
    }

    /// Drops every cached free buffer, the streams' upload staging ring between streams (the
    /// next stream makes a new ring) and RoPE's cached frequency tables (uploaded again on next
    /// use; they counted as live tensor bytes after every tensor of the caller's was dropped).
    /// Live tensors are untouched.
    pub fn trim_pool(&self) {
        if let Some(g) = self.gpu_raw() {
            g.rope_tables.clear();
            g.pool.trim();
            let ring = g.ring.lock().unwrap_or_else(|e| e.into_inner()).take();
            drop(ring);
        }
    }

    /// Caps the bytes of free buffers the pool keeps cached (default 1 GiB); beyond it the
    /// least recently used free buffers are dropped.
    pub fn set_pool_free_cap(&self, bytes: u64) {
        if let Some(g) = self.gpu_raw() {
            g.pool.set_free_cap(bytes);
        }
    }

    /// Resets the pool's peak counters to the current values (to measure one workload).
    pub fn reset_pool_peaks(&self) {
        if let Some(g) = self.gpu_raw() {
            g.pool.reset_peaks();
        }
    }

    /// Pipeline-cache statistics (compiled pipelines, hits).
    pub fn pipeline_stats(&self) -> PipelineStats {
        self.gpu_raw()
            .map(|g| g.pipelines.stats())
            .unwrap_or_default()
    }

    /// Submits pending work and waits until everything submitted so far has finished (also work
    /// an earlier flush submitted). Reports device errors only — a lost device, or an error no
    /// op caught; non-finite values are reported by reading the tensors they flowed into (or by
    /// [`Tensor::check`](crate::Tensor::check)).
    pub fn sync(&self) -> Result<()> {
        match self.gpu_raw() {
            None => Ok(()),
            Some(g) => crate::transfer::sync(g),
        }
    }

    /// Test-only fault injection: makes the next matching GPU event fail through the engine's
    /// real error paths (see `fault.rs`). No-op on the CPU engine.
    #[doc(hidden)]
    pub fn inject_fault(&self, fault: crate::fault::InjectedFault) {
        let Some(g) = self.gpu_raw() else { return };
        match fault {
            crate::fault::InjectedFault::DeviceLost => g.device.destroy(),
            f => g.faults.arm(f),
        }
    }

    /// Turns per-kernel GPU timing on or off. `Err(Unsupported)` without `TIMESTAMP_QUERY` (and on
    /// the CPU engine); `Err(DeviceLost)` once the device is lost.
    pub fn set_profiling(&self, enabled: bool) -> Result<()> {
        self.configure_profiler(move |p| p.enabled = enabled)
    }

    /// What the profiler's timestamp pairs bracket: every dispatch (the default; per-kernel
    /// times, perturbed by the timestamps) or every submitted batch (its whole GPU span,
    /// unperturbed). Submits pending work first. `Err(Unsupported)` as for [`Engine::set_profiling`].
    pub fn set_profiling_granularity(&self, granularity: ProfileGranularity) -> Result<()> {
        self.configure_profiler(move |p| p.granularity = granularity)
    }

    /// Submits pending work, then applies `set` to the profiler (created on first use).
    fn configure_profiler(
        &self,
        set: impl FnOnce(&mut ProfilerState) + Send + 'static,
    ) -> Result<()> {
        // The profiler belongs to the GPU context whatever the dispatch policy (`gpu_context`
        // is None under `Cpu`, which would leave profiling stuck on); a lost device is an error.
        let g = self
            .gpu_raw()
            .ok_or_else(|| Error::Unsupported("profiling needs a GPU engine".into()))?;
        g.check_health()?;
        if !g.caps.has(wgpu::Features::TIMESTAMP_QUERY) {
            return Err(Error::Unsupported(
                "profiling needs Features::TIMESTAMP_QUERY".into(),
            ));
        }
        g.scheduler.call(move |batch, g| {
            batch.flush(g)?;
            set(batch
                .user_profiler()
                .get_or_insert_with(|| ProfilerState::new(&g.device, &g.queue, g.caps.features)));
            Ok(())
        })?
    }

    /// Per-kernel GPU time recorded so far (submits pending work first). Empty when never enabled.
    /// Work submitted while the engine measures itself (a calibration, including the lazy one
    /// of `Auto`'s first decision, or the autotune of a new GEMM shape) is timed by the
    /// measurement's own profiler and is missing here; profiling calls made meanwhile still act
    /// on this report and its settings.
    pub fn profile_report(&self) -> Result<ProfileReport> {
        // Not `gpu_context`: under the `Cpu` policy or after a lost device the totals gathered
        // before are still the engine's and must not read as an empty report.
        let Some(g) = self.gpu_raw() else {
            return Ok(ProfileReport::default());
        };
        g.scheduler.call(|batch, g| {
            batch.flush(g)?;
            Ok(batch
                .user_profiler()
                .as_ref()
                .map(|p| p.report())
                .unwrap_or_default())
        })?
    }

    /// Clears the profiler's totals, after submitting pending work (so a report after the reset
    /// covers exactly the work recorded after it).
    pub fn reset_profile(&self) {
        // Under every policy (see `profile_report`): a skipped reset leaves old totals behind.
        if let Some(g) = self.gpu_raw() {
            let r = g.scheduler.call(|batch, g| {
                if let Err(e) = batch.flush(g) {
                    log::warn!("bitnet-wgpu: submit before profiler reset failed: {e}");
                }
                if let Some(p) = batch.user_profiler().as_mut() {
                    p.reset();
                }
            });
            if let Err(e) = r {
                log::warn!("bitnet-wgpu: profiler reset failed: {e}");
            }
        }
    }
}

/// The adapter [`Engine::gpu`] would choose (honouring `WGPU_BACKEND` and `WGPU_ADAPTER_NAME`)
/// and a device on it with the features and limits the engine uses: for an application that
/// shares one device between the engine ([`Engine::from_device`]) and its own wgpu work, so
/// that the GPU never switches between two devices' contexts.
pub fn open_gpu_device() -> Result<(wgpu::Adapter, wgpu::Device, wgpu::Queue)> {
    // Instances are enumerated under the process-wide lifecycle lock, as devices are born
    // (`lifecycle.rs`: concurrent device creation and destruction can deadlock a driver).
    let instance = device::instance_from_env();
    let adapter = crate::lifecycle::serialized(|| device::choose_adapter(&instance))?;
    let (device, queue) = device::request_device(&adapter)?;
    Ok((adapter, device, queue))
}
