//! Keeps a real GPU at its working clocks while the bench times it.
//!
//! A timed sample is recorded on the host and then submitted; while the host records, the GPU
//! idles. Short calls record slower than they run, so a bench process kept the H200 busy only
//! 2-60 % of each 100 ms (nvidia-smi, 2026-11-30), and whenever that stayed below about a
//! quarter for a second the driver lowered the SM clock from 1980 MHz to 1000-1450 MHz
//! (throttle reason "GPU idle") and raised it again within a second of heavier work. Which case
//! a dip hit was a matter of timing: the same binary timed 2B down M = 1 at 8.0, 10.3, 8.1 and
//! 13.4 µs in four processes, the slow ones under 1050-1400 MHz. A server decoding under load,
//! and the PyTorch peers' back-to-back graph replays, run at the working clock.
//!
//! So before each warm-up batch and timed sample the keeper reads a large buffer for about as
//! long as the host spent recording the batch before it (the GPU is then busy at least half the
//! time), and waits for it: the keeper's work has always finished before timed work is
//! submitted and never shares the GPU with it. It runs on the engine's own device and queue, so
//! that the GPU need not switch between two devices' contexts around the timed work, and its
//! buffers are plain wgpu buffers, not the engine's, so the pool figures do not see them. It
//! only reads, leaving no dirty lines in the L2 for the timed work to write back (a first version
//! copying on a second device put the independent decode stack's span at 170 µs against 165
//! without a keeper; this one, 166.6-167.2). A software adapter has no clocks to keep; the keeper
//! does not start there.

use crate::pass_timer::{probe_pipeline, src_dst_group};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Bytes of the keeper's source buffer (less where the adapter's bindings are smaller): far
/// beyond any L2, and a read of about 30 µs on the H200.
const BUFFER_BYTES: u64 = 128 << 20;

/// Reads of the buffer per submitted pass (between checks of the elapsed time).
const READS_PER_PASS: u32 = 8;

/// Longest a pass may take before the keeper gives up (a lost device never reports it done).
const PASS_DEADLINE: Duration = Duration::from_secs(5);

/// The running keeper, if any: one per process, as the clocks are the device's.
static KEEPER: Mutex<Option<Keeper>> = Mutex::new(None);

/// The read kernel on the engine's device.
struct Keeper {
    device: wgpu::Device,
    queue: wgpu::Queue,
    pipeline: wgpu::ComputePipeline,
    bind_group: wgpu::BindGroup,
    groups: u32,
}

/// Starts the keeper on the engine's `device` and `queue`, unless `off` (a software adapter,
/// or `--no-clock-keeper`). Returns whether it runs.
pub fn start(device: &wgpu::Device, queue: &wgpu::Queue, off: bool) -> bool {
    stop();
    if off {
        return false;
    }
    let limits = device.limits();
    let size = BUFFER_BYTES
        .min(limits.max_storage_buffer_binding_size)
        .min(limits.max_buffer_size)
        / 16
        * 16;
    let module = device.create_shader_module(wgpu::ShaderModuleDescriptor {
        label: Some("clock keeper"),
        source: wgpu::ShaderSource::Wgsl(crate::roofline::PROBE_WGSL.into()),
    });
    let pipeline = probe_pipeline(device, &module, "read_all", "clock keeper");
    let buffer = |size| {
        device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("clock keeper"),
            size,
            usage: wgpu::BufferUsages::STORAGE,
            mapped_at_creation: false,
        })
    };
    let bind_group = src_dst_group(device, &pipeline, &buffer(size), &buffer(16));
    let groups = (size / 16).div_ceil(256).min(65_535) as u32;
    *lock() = Some(Keeper {
        device: device.clone(),
        queue: queue.clone(),
        pipeline,
        bind_group,
        groups,
    });
    true
}

/// Stops the keeper, freeing its device and buffers.
pub fn stop() {
    lock().take();
}

/// Whether a keeper runs.
pub fn running() -> bool {
    lock().is_some()
}

/// Keeps the GPU busy with reads for about `time` (whole passes, until it has elapsed) and
/// returns when they have finished; at once without a keeper. A keeper whose device fails is
/// stopped with a warning: the measurements go on without it.
pub fn heat(time: Duration) {
    let mut guard = lock();
    let Some(k) = guard.as_ref() else { return };
    let started = Instant::now();
    while started.elapsed() < time {
        if let Err(e) = k.pass() {
            log::warn!("bitnet-bench: clock keeper stopped: {e}");
            guard.take();
            return;
        }
    }
}

impl Keeper {
    /// One pass of reads, submitted and waited for.
    fn pass(&self) -> Result<(), String> {
        let mut enc = self.device.create_command_encoder(&Default::default());
        {
            let mut pass = enc.begin_compute_pass(&Default::default());
            pass.set_pipeline(&self.pipeline);
            pass.set_bind_group(0, &self.bind_group, &[]);
            for _ in 0..READS_PER_PASS {
                pass.dispatch_workgroups(self.groups, 1, 1);
            }
        }
        self.queue.submit([enc.finish()]);
        // Polled without blocking, as the engine waits (`engine/src/wait.rs`: a blocking wait
        // holds wgpu's device locks, and the device is the engine's).
        let done = Arc::new(AtomicBool::new(false));
        let flag = done.clone();
        self.queue
            .on_submitted_work_done(move || flag.store(true, Ordering::Release));
        let started = Instant::now();
        while !done.load(Ordering::Acquire) {
            if started.elapsed() > PASS_DEADLINE {
                return Err(format!("a pass did not finish within {PASS_DEADLINE:?}"));
            }
            self.device
                .poll(wgpu::PollType::Poll)
                .map_err(|e| e.to_string())?;
            std::thread::yield_now();
        }
        Ok(())
    }
}

/// The keeper's slot; a panic elsewhere while it was held leaves it usable.
fn lock() -> std::sync::MutexGuard<'static, Option<Keeper>> {
    KEEPER.lock().unwrap_or_else(|p| p.into_inner())
}
