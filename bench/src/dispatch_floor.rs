//! The dispatch floor: what one compute dispatch costs on the adapter, measured with plain wgpu
//! (no engine), so the engine's per-op times can be read against what the driver allows.
//!
//! Four cases, each a long run of dispatches in one compute pass between two timestamps:
//! * `tiny dependent`: a one-workgroup kernel whose dispatches all write the same buffer, so wgpu
//!   puts a barrier between each pair (what a chain of dependent ops pays);
//! * `tiny independent`: the same kernel writing a different buffer each time (no barriers: the
//!   GPU may overlap the dispatches);
//! * `read dependent` / `read independent`: a grid that reads `READ_BYTES` (a decode GEMV's weight
//!   traffic) and writes one word per workgroup, with and without barriers.

use crate::pass_timer::{PassTimer, time_pass};

const PROBE_WGSL: &str = r#"
@group(0) @binding(0) var<storage, read> src: array<vec4<u32>>;
@group(0) @binding(1) var<storage, read_write> dst: array<u32>;

@compute @workgroup_size(256)
fn main(@builtin(local_invocation_index) t: u32,
        @builtin(workgroup_id) wid: vec3<u32>,
        @builtin(num_workgroups) groups: vec3<u32>) {
    let n = arrayLength(&src);
    var acc = vec4<u32>();
    for (var i = wid.x * 256u + t; i < n; i += groups.x * 256u) {
        acc ^= src[i];
    }
    let v = acc.x ^ acc.y ^ acc.z ^ acc.w;
    // Never true for the zeroed source, but the compiler cannot drop the loads.
    if (v == 0xdeadbeefu) {
        dst[wid.x] = v;
    }
    if (t == 0u && wid.x == 0u) {
        dst[0] = dst[0] + 1u;
    }
}
"#;

impl std::fmt::Display for DispatchFloor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "one workgroup: {:.2} µs behind a barrier, {:.2} µs without; {} MiB read: {:.2} µs \
             behind a barrier, {:.2} µs without (per dispatch, {DISPATCHES} in one pass)",
            self.tiny_dependent_us,
            self.tiny_independent_us,
            READ_BYTES >> 20,
            self.read_dependent_us,
            self.read_independent_us
        )
    }
}

/// Dispatches per timed pass.
const DISPATCHES: usize = 512;
/// Bytes each `read` dispatch reads: about a 2B4T q/o decode GEMV's packed weights.
pub const READ_BYTES: u64 = 2 << 20;

/// Microseconds per dispatch in each case (median of repeats).
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct DispatchFloor {
    /// One workgroup, a barrier before every dispatch.
    pub tiny_dependent_us: f64,
    /// One workgroup, no barriers.
    pub tiny_independent_us: f64,
    /// `READ_BYTES` read per dispatch, a barrier before every dispatch.
    pub read_dependent_us: f64,
    /// `READ_BYTES` read per dispatch, no barriers.
    pub read_independent_us: f64,
}

/// Runs the four cases on `device` (which must have `TIMESTAMP_QUERY`), `repeats` passes each.
pub fn measure(
    device: &wgpu::Device,
    queue: &wgpu::Queue,
    repeats: usize,
) -> Result<DispatchFloor, String> {
    let module = device.create_shader_module(wgpu::ShaderModuleDescriptor {
        label: Some("dispatch floor"),
        source: wgpu::ShaderSource::Wgsl(PROBE_WGSL.into()),
    });
    let pipeline = device.create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
        label: Some("dispatch floor"),
        layout: None,
        module: &module,
        entry_point: Some("main"),
        compilation_options: Default::default(),
        cache: None,
    });
    let buffer = |size: u64, usage| {
        device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("dispatch floor"),
            size,
            usage,
            mapped_at_creation: false,
        })
    };
    let storage = wgpu::BufferUsages::STORAGE;
    let tiny_src = buffer(16, storage);
    let read_src = buffer(READ_BYTES, storage);
    let outs: Vec<wgpu::Buffer> = (0..DISPATCHES).map(|_| buffer(4096, storage)).collect();
    let group = |src: &wgpu::Buffer, dst: &wgpu::Buffer| {
        device.create_bind_group(&wgpu::BindGroupDescriptor {
            label: Some("dispatch floor"),
            layout: &pipeline.get_bind_group_layout(0),
            entries: &[
                wgpu::BindGroupEntry {
                    binding: 0,
                    resource: src.as_entire_binding(),
                },
                wgpu::BindGroupEntry {
                    binding: 1,
                    resource: dst.as_entire_binding(),
                },
            ],
        })
    };
    let tiny: Vec<_> = outs.iter().map(|o| group(&tiny_src, o)).collect();
    let read: Vec<_> = outs.iter().map(|o| group(&read_src, o)).collect();
    let timer = PassTimer::new(device);
    // 132 SMs x 4 workgroups on an H100/H200; harmless elsewhere.
    let read_groups = 528u32.min((READ_BYTES / 16 / 256) as u32);
    let run = |groups: &[wgpu::BindGroup], dependent: bool, wgs: u32| -> Result<f64, String> {
        let mut samples = Vec::new();
        for _ in 0..repeats.max(1) + 1 {
            let ns = time_pass(device, queue, Some(&timer), |pass| {
                pass.set_pipeline(&pipeline);
                for (i, _) in outs.iter().enumerate() {
                    pass.set_bind_group(0, &groups[if dependent { 0 } else { i }], &[]);
                    pass.dispatch_workgroups(wgs, 1, 1);
                }
            })?;
            samples.push(ns * 1e-3 / DISPATCHES as f64);
        }
        // The first pass warms clocks and caches; the median of the rest.
        samples.remove(0);
        samples.sort_by(f64::total_cmp);
        Ok(samples[samples.len() / 2])
    };
    Ok(DispatchFloor {
        tiny_dependent_us: run(&tiny, true, 1)?,
        tiny_independent_us: run(&tiny, false, 1)?,
        read_dependent_us: run(&read, true, read_groups)?,
        read_independent_us: run(&read, false, read_groups)?,
    })
}
