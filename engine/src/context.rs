//! The GPU context behind a GPU [`Engine`](crate::Engine): device, queue, capabilities, pool,
//! pipeline cache, submission and completion threads, and health. One per engine, shared by its clones and tensors.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use crate::device::Caps;
use crate::device_hooks::Health;
use crate::engine::EngineOptions;
use crate::error::{Error, Result};
use crate::group::EngineGroup;
use crate::pipelines::PipelineCache;
use crate::poller::Poller;
use crate::pool::BufferPool;
use crate::scheduler::Scheduler;
use crate::status::SlotPool;

/// Everything a GPU engine owns.
pub(crate) struct Gpu {
    /// Unique id (tensors of other engines are rejected).
    pub id: u64,
    pub adapter_info: wgpu::AdapterInfo,
    pub device: wgpu::Device,
    pub queue: wgpu::Queue,
    pub caps: Caps,
    pub options: EngineOptions,
    pub pool: BufferPool,
    pub pipelines: PipelineCache,
    /// Which hot ops run hand-written MSL (Metal) instead of WGSL (`msl.rs`).
    pub msl: crate::msl::MslState,
    pub group: EngineGroup,
    /// The status-slot reset pipeline (`status.rs`).
    pub status_reset: crate::status::StatusReset,
    /// The status gather of reads (`status_gather.rs`); `None` where the device cannot bind it
    /// (reads copy slot by slot).
    pub status_gather: Option<crate::status_gather::StatusGather>,
    /// Armed fault injections (tests).
    pub faults: Arc<crate::fault::Faults>,
    /// CPU/GPU choice of the host-facing ops: policy, calibration, statistics.
    pub dispatch: crate::predict::Dispatcher,
    /// The free non-finite status slots (each owned by one launch's fate while in use).
    pub slots: Arc<SlotPool>,
    /// Launch counter: orders fates, so a lineage reports its earliest error.
    seq: AtomicU64,
    /// Launches up to here have left the pending batch (`hazard.rs`).
    pub submitted: crate::hazard::Submitted,
    /// A kernel's in-dispatch wait gave up on this device (a read reported `Error::Aborted`):
    /// its workgroups may not start in index order, so the kernels that wait inside a dispatch
    /// (new linear chains, one-dispatch weight quantization) are not used on it again.
    pub waits_gave_up: std::sync::atomic::AtomicBool,
    /// The upload staging ring of streams, between streams.
    pub ring: Mutex<Option<crate::ring::UploadRing>>,
    /// RoPE's frequency tables by (head dim, theta bits), uploaded once (`ops/rope.rs`).
    pub rope_tables: crate::ops::RopeTables,
    /// One measurement (autotune, coop self-test, calibration) at a time
    /// (`ops/measure_gate.rs`).
    pub measure_gate: crate::ops::MeasureGate,
    /// The submission thread (owns the pending batch).
    pub scheduler: Scheduler,
    /// The completion thread (runs map callbacks of reads).
    pub poller: Poller,
    health: Arc<Health>,
    /// Declared last: releases the lifecycle lock taken by `Drop`, after the device and every
    /// other field is gone (`lifecycle.rs`).
    _lifecycle: crate::lifecycle::ReleaseAfterFields,
}

impl Drop for Gpu {
    /// The device is destroyed while this context's fields drop: under the process-wide
    /// lifecycle lock, released by the last field. (The wgpu instance stays: `device.rs`.)
    fn drop(&mut self) {
        self.health.closing.store(true, Ordering::Release);
        LIVE.fetch_sub(1, Ordering::Relaxed);
        crate::ops::forget_tuning(self.id);
        crate::lifecycle::hold_for_drop();
    }
}

static NEXT_ID: AtomicU64 = AtomicU64::new(1);

/// GPU contexts of the process now alive.
static LIVE: AtomicUsize = AtomicUsize::new(0);

/// How many GPU engines (contexts, each with its device) the process holds now: named in the
/// error of a device request that fails, since drivers cap the devices of a process.
pub(crate) fn live_contexts() -> usize {
    LIVE.load(Ordering::Relaxed)
}

impl Gpu {
    /// Builds the context for an existing device and starts its submission and completion
    /// threads.
    pub fn start(
        adapter_info: wgpu::AdapterInfo,
        device: wgpu::Device,
        queue: wgpu::Queue,
        options: EngineOptions,
    ) -> Result<Arc<Gpu>> {
        let mut caps = Caps::new(&device, &adapter_info, &options);
        check_binding_cap(&options, &caps.limits)?;
        check_minimum_limits(&caps.limits)?;
        let health = Arc::new(Health::default());
        crate::device_hooks::attach(&device, &health);
        // After the handlers: nothing the probe does escapes them.
        if caps.has(wgpu::Features::SUBGROUP)
            && !crate::subgroup_probe::layout_holds(&device, &queue, &adapter_info)
        {
            caps.features.remove(wgpu::Features::SUBGROUP);
        }
        let group = EngineGroup::new(
            &device,
            &caps.limits,
            caps.params_mode,
            options.batch_dispatches,
        )?;
        let faults = Arc::new(crate::fault::Faults::default());
        let pipelines = PipelineCache::new(
            device.clone(),
            caps.params_mode,
            caps.features,
            group.layout.clone(),
            Arc::clone(&faults),
        );
        let status_reset = crate::status::StatusReset::new(&pipelines, &device)?;
        let status_gather =
            crate::status_gather::StatusGather::new(&pipelines, &device, &caps.limits)?;
        let msl = crate::msl::MslState::probe(&pipelines, &caps, &adapter_info);
        let h = Arc::clone(&health);
        let spin = spin_wait(&options, adapter_info.device_type);
        let poller = Poller::start(device.clone(), spin, move || h.lost_error())?;
        let (scheduler, queue_rx) = Scheduler::channel();
        let idle = options.idle_flush;
        let gpu = Arc::new(Gpu {
            id: NEXT_ID.fetch_add(1, Ordering::Relaxed),
            pool: BufferPool::new(device.clone(), caps.max_buffer, Arc::clone(&faults)),
            faults,
            dispatch: crate::predict::Dispatcher::new(options.dispatch),
            pipelines,
            msl,
            group,
            status_reset,
            status_gather,
            slots: Arc::new(SlotPool::new()),
            seq: AtomicU64::new(1),
            submitted: Default::default(),
            waits_gave_up: Default::default(),
            ring: Mutex::new(None),
            rope_tables: crate::ops::RopeTables::default(),
            measure_gate: Default::default(),
            scheduler,
            poller,
            health,
            _lifecycle: crate::lifecycle::ReleaseAfterFields,
            adapter_info,
            device,
            queue,
            caps,
            options,
        });
        // Counted once built: its `Drop` uncounts it.
        LIVE.fetch_add(1, Ordering::Relaxed);
        crate::scheduler::spawn(queue_rx, &gpu, idle)?;
        Ok(gpu)
    }

    /// `Err(DeviceLost)` once the device is lost; a lost device is never used again.
    pub fn check_health(&self) -> Result<()> {
        self.health.lost_error().map_or(Ok(()), Err)
    }

    /// Stops the submission and completion threads and waits for them (the engine's last handle
    /// is being dropped; the threads' handles on this context go with them).
    pub fn shutdown(&self) {
        self.scheduler.stop();
        self.poller.stop();
    }

    /// How long a wait for this GPU spins before it backs off (`EngineOptions::spin_wait`).
    pub fn spin_wait(&self) -> std::time::Duration {
        spin_wait(&self.options, self.adapter_info.device_type)
    }

    /// Whether the device is lost (one atomic load).
    #[inline]
    pub fn is_lost(&self) -> bool {
        self.health.is_lost()
    }

    /// `e`, or `DeviceLost` if the device turns out to be lost: a failed map or submission is
    /// often the first sign, before wgpu ran the device-lost callback (which runs once the
    /// queue drained: wait for it, briefly — this is an error path).
    pub fn explain(&self, e: Error) -> Error {
        /// How long the lost callback may take to run once the queue drained.
        const LOST_GRACE: std::time::Duration = std::time::Duration::from_millis(250);
        if matches!(e, Error::Map(_) | Error::Validation { .. }) && !self.is_lost() {
            // Until the queue drained (or a second passed), polling without blocking in wgpu.
            // The poll that finds a destroyed device's queue empty hands the lost callback to
            // whichever thread polled (often the completion thread), which runs it just after:
            // so once the queue is empty, keep watching for a grace period. 25 ms was too short
            // on a loaded 2-core CI machine (the completion thread was descheduled and a
            // destroyed device's read came back as a map error); a wrongly typed error costs
            // more than a quarter second on a path that already failed.
            use std::time::{Duration, Instant};
            let mut deadline = Instant::now() + Duration::from_secs(1);
            let mut backoff = crate::wait::Backoff::default();
            while !self.is_lost() && Instant::now() < deadline {
                if let Ok(wgpu::PollStatus::QueueEmpty) | Err(_) =
                    crate::wait::poll_guarded("caller", &self.device)
                {
                    deadline = deadline.min(Instant::now() + LOST_GRACE);
                }
                backoff.pause();
            }
        }
        self.check_health().err().unwrap_or(e)
    }

    /// The next launch number (fates are ordered by it).
    pub fn next_seq(&self) -> u64 {
        self.seq.fetch_add(1, Ordering::Relaxed)
    }

    /// Takes the first uncaptured error, if any (reported once).
    pub fn take_uncaptured(&self) -> Option<Error> {
        self.health.take_uncaptured()
    }
}

/// `EngineOptions::spin_wait`, or its default for the adapter: none on CPU adapters, whose work
/// runs on the host's cores (a spinning waiter would take one from it).
fn spin_wait(options: &EngineOptions, device_type: wgpu::DeviceType) -> std::time::Duration {
    options.spin_wait.unwrap_or(match device_type {
        wgpu::DeviceType::Cpu => std::time::Duration::ZERO,
        _ => crate::wait::DEFAULT_SPIN_WAIT,
    })
}

/// Rejects an `EngineOptions::max_binding_bytes` below the device's storage offset alignment (or
/// 4 bytes): every chunk of a chunked op starts at an aligned offset, so no op could bind even
/// one chunk and each would fail later with `LimitExceeded`. The engine is not created instead.
fn check_binding_cap(options: &EngineOptions, limits: &wgpu::Limits) -> Result<()> {
    let min = u64::from(limits.min_storage_buffer_offset_alignment).max(4);
    match options.max_binding_bytes {
        Some(cap) if cap < min => Err(Error::from(bitnet_cpu_ref::Error::InvalidArgument {
            op: "EngineOptions",
            what: "max_binding_bytes",
            reason: "below the device's min_storage_buffer_offset_alignment (at most 256 bytes): \
                     no op could bind an aligned chunk",
        })),
        _ => Ok(()),
    }
}

/// The device limits every kernel's layout and workgroup fits in: WebGPU's defaults (the
/// `wgpu::Limits::default()` the cross-check suite runs the BitNet ops at). A device below them —
/// `wgpu::Limits::downlevel_defaults()` has 4 storage buffers per stage — failed most ops one by
/// one as pipeline faults (a reviewer's probe); it is refused when the engine is made instead
/// (`Engine::new` then takes the CPU).
const MINIMUM_LIMITS: [(&str, LimitOf); 5] = [
    ("max_storage_buffers_per_shader_stage", |l| {
        l.max_storage_buffers_per_shader_stage
    }),
    ("max_compute_workgroup_storage_size", |l| {
        l.max_compute_workgroup_storage_size
    }),
    ("max_compute_invocations_per_workgroup", |l| {
        l.max_compute_invocations_per_workgroup
    }),
    ("max_compute_workgroup_size_x", |l| {
        l.max_compute_workgroup_size_x
    }),
    ("max_compute_workgroup_size_y", |l| {
        l.max_compute_workgroup_size_y
    }),
];

/// Reads one limit of a `wgpu::Limits`.
type LimitOf = fn(&wgpu::Limits) -> u32;

/// `LimitExceeded` for the first of [`MINIMUM_LIMITS`] that `limits` falls below.
fn check_minimum_limits(limits: &wgpu::Limits) -> Result<()> {
    let needed = wgpu::Limits::default();
    for (limit, get) in MINIMUM_LIMITS {
        if get(limits) < get(&needed) {
            return Err(Error::LimitExceeded {
                limit,
                requested: u64::from(get(&needed)),
                max: u64::from(get(limits)),
                what: "bitnet-wgpu's kernels (a device needs WebGPU's default limits)".into(),
            });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    /// WebGPU's default limits pass; downlevel ones (4 storage buffers per stage) are refused,
    /// naming the limit.
    #[test]
    fn devices_below_webgpu_default_limits_are_refused() {
        assert!(check_minimum_limits(&wgpu::Limits::default()).is_ok());
        let e = check_minimum_limits(&wgpu::Limits::downlevel_defaults()).unwrap_err();
        assert!(
            matches!(
                e,
                Error::LimitExceeded {
                    limit: "max_storage_buffers_per_shader_stage",
                    requested: 8,
                    max: 4,
                    ..
                }
            ),
            "{e}"
        );
    }

    /// Waits spin on GPUs by default, never on CPU adapters; an explicit option wins on both.
    #[test]
    fn spin_wait_defaults_by_adapter_kind() {
        let default = EngineOptions::default();
        let set = EngineOptions {
            spin_wait: Some(Duration::from_micros(300)),
            ..EngineOptions::default()
        };
        use wgpu::DeviceType::{Cpu, DiscreteGpu, IntegratedGpu};
        assert_eq!(spin_wait(&default, Cpu), Duration::ZERO);
        assert_eq!(
            spin_wait(&default, DiscreteGpu),
            crate::wait::DEFAULT_SPIN_WAIT
        );
        assert_eq!(
            spin_wait(&default, IntegratedGpu),
            crate::wait::DEFAULT_SPIN_WAIT
        );
        assert_eq!(spin_wait(&set, Cpu), Duration::from_micros(300));
        assert_eq!(spin_wait(&set, DiscreteGpu), Duration::from_micros(300));
    }
}
