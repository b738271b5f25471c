//! The bandwidth roofline: a plain WGSL copy kernel (vec4 loads and stores, grid-stride) timed on
//! the same adapter, in the same run, as the engine's kernels.
//!
//! The engine's `util_copy` kernel also checks for non-finite values, which is not a pure copy, so
//! the roofline uses its own minimal kernel on its own device of the same adapter. Timing uses GPU
//! timestamp queries around one compute pass of several back-to-back copies when the adapter has
//! `TIMESTAMP_QUERY`, and submit + wait wall time otherwise (the report says which).

use crate::measure::{Clock, Measurement};
use crate::pass_timer::{PassTimer, probe_pipeline, src_dst_group, time_pass};
use crate::report::Roofline;

/// The bench's plain kernels over a `(src, dst)` pair, grid-stride over `src`: `copy` (the
/// roofline) and `read_all` (the clock keeper, `clock_keeper.rs`: it folds `src`, all zeros as wgpu
/// zero-fills new buffers, and stores only on a fold that cannot happen, so the loads stay and
/// nothing is written).
pub(crate) const PROBE_WGSL: &str = r#"
@group(0) @binding(0) var<storage, read> src: array<vec4<u32>>;
@group(0) @binding(1) var<storage, read_write> dst: array<vec4<u32>>;

@compute @workgroup_size(256)
fn copy(@builtin(global_invocation_id) gid: vec3<u32>,
        @builtin(num_workgroups) groups: vec3<u32>) {
    let n = arrayLength(&src);
    let stride = groups.x * 256u;
    for (var i = gid.x; i < n; i += stride) {
        dst[i] = src[i];
    }
}

@compute @workgroup_size(256)
fn read_all(@builtin(global_invocation_id) gid: vec3<u32>,
        @builtin(num_workgroups) groups: vec3<u32>) {
    let n = arrayLength(&src);
    let stride = groups.x * 256u;
    var fold = vec4<u32>(0u);
    for (var i = gid.x; i < n; i += stride) {
        fold ^= src[i];
    }
    if (fold.x == 0xdeadbeefu) {
        dst[0] = fold;
    }
}
"#;

/// Copies per compute pass: enough back-to-back work that pass start/end costs vanish.
const COPIES_PER_PASS: u32 = 10;

/// Measures copy bandwidth on a device of its own on the adapter the engine chooses
/// (`bitnet_wgpu::open_gpu_device`). `max_bytes` caps the size of each of the two buffers.
pub fn measure(max_bytes: u64, repeats: usize) -> Result<Roofline, String> {
    let (adapter, device, queue) = bitnet_wgpu::open_gpu_device().map_err(|e| e.to_string())?;
    let info = adapter.get_info();
    let timestamps = device.features().contains(wgpu::Features::TIMESTAMP_QUERY);
    let limits = device.limits();
    let size = max_bytes
        .min(limits.max_storage_buffer_binding_size)
        .min(limits.max_buffer_size)
        / 16
        * 16;
    if size < 1 << 20 {
        return Err(format!(
            "storage bindings too small for a copy roofline ({size} bytes)"
        ));
    }
    let probe = CopyProbe::new(&device, &queue, size, timestamps);
    // Several grid sizes: a roofline is the best the device does, not one configuration's luck.
    let vec4s = size / 16;
    let full = vec4s.div_ceil(256).min(65_535) as u32;
    let mut best: Option<Measurement> = None;
    for groups in [full, (full / 4).max(1), (full / 16).max(1)] {
        let mut samples = Vec::with_capacity(repeats);
        probe.run(&device, &queue, groups)?; // warmup
        for _ in 0..repeats.max(1) {
            samples.extend(probe.run(&device, &queue, groups)?);
        }
        let clock = if timestamps {
            Clock::Timestamp
        } else {
            Clock::Wall
        };
        if let Some(m) = Measurement::from_samples(&samples, clock)
            && best.is_none_or(|b| m.median_ms < b.median_ms)
        {
            best = Some(m);
        }
    }
    let time = best.ok_or("copy kernel produced no finite time")?;
    // Not on a software adapter: its dispatches take milliseconds, and the probe would add a
    // minute to the README's main job there while saying nothing about GPUs.
    let dispatch_floor = if timestamps && info.device_type != wgpu::DeviceType::Cpu {
        crate::dispatch_floor::measure(&device, &queue, repeats)
            .map_err(|e| log::warn!("dispatch floor not measured: {e}"))
            .ok()
    } else {
        None
    };
    Ok(Roofline {
        bytes: 2 * size,
        time,
        source: format!("bench copy kernel (vec4<u32>) on {}", info.name),
        dispatch_floor,
    })
}

/// The copy pipeline with its two buffers and the timestamp plumbing.
struct CopyProbe {
    pipeline: wgpu::ComputePipeline,
    bind_group: wgpu::BindGroup,
    timer: Option<PassTimer>,
}

impl CopyProbe {
    fn new(device: &wgpu::Device, queue: &wgpu::Queue, size: u64, timestamps: bool) -> CopyProbe {
        let module = device.create_shader_module(wgpu::ShaderModuleDescriptor {
            label: Some("roofline copy"),
            source: wgpu::ShaderSource::Wgsl(PROBE_WGSL.into()),
        });
        let pipeline = probe_pipeline(device, &module, "copy", "roofline copy");
        let buffer = |label| {
            device.create_buffer(&wgpu::BufferDescriptor {
                label: Some(label),
                size,
                usage: wgpu::BufferUsages::STORAGE,
                mapped_at_creation: false,
            })
        };
        let (src, dst) = (buffer("roofline src"), buffer("roofline dst"));
        let bind_group = src_dst_group(device, &pipeline, &src, &dst);
        CopyProbe {
            pipeline,
            bind_group,
            timer: timestamps.then(|| PassTimer::new(device, queue)),
        }
    }

    /// One pass of [`COPIES_PER_PASS`] copies; returns milliseconds per copy (`None`: a dropped
    /// sample, see `time_pass`).
    fn run(
        &self,
        device: &wgpu::Device,
        queue: &wgpu::Queue,
        groups: u32,
    ) -> Result<Option<f64>, String> {
        let ns = time_pass(device, queue, self.timer.as_ref(), |pass| {
            pass.set_pipeline(&self.pipeline);
            pass.set_bind_group(0, &self.bind_group, &[]);
            for _ in 0..COPIES_PER_PASS {
                pass.dispatch_workgroups(groups, 1, 1);
            }
        })?;
        Ok(ns.map(|ns| ns * 1e-6 / COPIES_PER_PASS as f64))
    }
}
