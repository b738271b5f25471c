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
//!
//! The `read` source is one buffer, so after the first dispatch it comes from L2. The `cold`
//! series reads the decode GEMVs' weight sizes from buffers rotated over more than
//! `COLD_WORKING_SET` bytes, so every dispatch streams from memory as a GEMV on real weights
//! does; behind a barrier, that is the fastest any dependent op of that size can be.

use crate::pass_timer::{PassTimer, probe_pipeline, src_dst_group, time_pass};

const PROBE_WGSL: &str = r#"
@group(0) @binding(0) var<storage, read> src: array<vec4<u32>>;
@group(0) @binding(1) var<storage, read_write> dst: array<u32>;

// Keeps the loads (the condition is never true for the zeroed source, but the compiler cannot
// know) and writes the word every dispatch writes (the `dependent` cases' shared buffer).
fn finish(acc: vec4<u32>, t: u32, group: u32) {
    let v = acc.x ^ acc.y ^ acc.z ^ acc.w;
    if (v == 0xdeadbeefu) {
        dst[group] = v;
    }
    if (t == 0u && group == 0u) {
        dst[0] = dst[0] + 1u;
    }
}

@compute @workgroup_size(256)
fn main(@builtin(local_invocation_index) t: u32,
        @builtin(workgroup_id) wid: vec3<u32>,
        @builtin(num_workgroups) groups: vec3<u32>) {
    let n = arrayLength(&src);
    var acc = vec4<u32>();
    for (var i = wid.x * 256u + t; i < n; i += groups.x * 256u) {
        acc ^= src[i];
    }
    finish(acc, t, wid.x);
}

// Four independent vec4 loads per thread, one pass over the source (no grid-stride loop, so
// every load of the dispatch is issued at once).
@compute @workgroup_size(256)
fn cold(@builtin(local_invocation_index) t: u32,
        @builtin(workgroup_id) wid: vec3<u32>) {
    let n = arrayLength(&src);
    let base = wid.x * 1024u + t;
    var acc = vec4<u32>();
    for (var u = 0u; u < 4u; u += 1u) {
        let i = base + u * 256u;
        if (i < n) {
            acc ^= src[i];
        }
    }
    finish(acc, t, wid.x);
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
        )?;
        for c in self.cold.iter().filter(|c| c.bytes > 0) {
            let gbps = |us: f64| c.bytes as f64 / us * 1e-3;
            write!(
                f,
                "; cold {:.2} MB read: {:.2} µs behind a barrier ({:.0} GB/s), {:.2} µs without \
                 ({:.0} GB/s)",
                c.bytes as f64 * 1e-6,
                c.dependent_us,
                gbps(c.dependent_us),
                c.independent_us,
                gbps(c.independent_us)
            )?;
        }
        Ok(())
    }
}

/// Packed weight bytes the `cold` series reads: the steps of a chained 2B4T decode layer — o
/// (2560 x 2560), q + k + v (2560 x 2560 + 2 x 640 x 2560), down (2560 x 6912, as one gate),
/// gate + up (2 x 6912 x 2560) — and the 8B gate/up GEMV (14336 x 4096).
pub const COLD_BYTES: [u64; 5] = [
    2560 * 2560 / 4,
    (2560 * 2560 + 2 * 640 * 2560) / 4,
    6912 * 2560 / 4,
    2 * 6912 * 2560 / 4,
    14336 * 4096 / 4,
];
/// Bytes the `cold` sources rotate over (beyond any GPU's L2).
pub const COLD_WORKING_SET: u64 = 256 << 20;

/// One size of the `cold` series: µs per dispatch reading `bytes` from memory.
#[derive(Debug, Clone, Copy, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct ColdRead {
    /// Bytes read per dispatch.
    pub bytes: u64,
    /// A barrier before every dispatch.
    pub dependent_us: f64,
    /// No barriers.
    pub independent_us: f64,
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
    /// Cold reads of `COLD_BYTES` (zeros in reports from before the series existed).
    #[serde(default)]
    pub cold: [ColdRead; 5],
}

impl DispatchFloor {
    /// The least GPU time of `layers` chained 2B4T decode layers by the cold reads: each of a
    /// layer's four dependent steps (q/k/v, o, gate/up, down) as one plain read of its weight
    /// bytes behind a barrier. None where the series was not measured.
    pub fn chained_floor_us(&self, layers: usize) -> Option<f64> {
        let step = |bytes: u64| {
            self.cold
                .iter()
                .find(|c| c.bytes == bytes && c.dependent_us > 0.0)
                .map(|c| c.dependent_us)
        };
        let [o, qkv, down, gate_up, _] = COLD_BYTES;
        let layer = step(qkv)? + step(o)? + step(gate_up)? + step(down)?;
        Some(layer * layers as f64)
    }
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
    let pipeline = probe_pipeline(device, &module, "main", "dispatch floor");
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
    let group = |src: &wgpu::Buffer, dst: &wgpu::Buffer| src_dst_group(device, &pipeline, src, dst);
    let tiny: Vec<_> = outs.iter().map(|o| group(&tiny_src, o)).collect();
    let read: Vec<_> = outs.iter().map(|o| group(&read_src, o)).collect();
    let timer = PassTimer::new(device, queue);
    // 132 SMs x 4 workgroups on an H100/H200; harmless elsewhere.
    let read_groups = 528u32.min((READ_BYTES / 16 / 256) as u32);
    // Median µs per dispatch of `binds` (one dispatch of `wgs` workgroups each) in one pass.
    let per_dispatch = |pipeline: &wgpu::ComputePipeline,
                        binds: &[&wgpu::BindGroup],
                        wgs: u32|
     -> Result<f64, String> {
        let mut samples = Vec::new();
        for _ in 0..repeats.max(1) + 1 {
            let ns = time_pass(device, queue, Some(&timer), |pass| {
                pass.set_pipeline(pipeline);
                for b in binds {
                    pass.set_bind_group(0, *b, &[]);
                    pass.dispatch_workgroups(wgs, 1, 1);
                }
            })?;
            samples.push(ns.map(|ns| ns * 1e-3 / binds.len() as f64));
        }
        // The first pass warms clocks and caches; the median of the rest, without dropped ones.
        let mut samples: Vec<f64> = samples.into_iter().skip(1).flatten().collect();
        samples.sort_by(f64::total_cmp);
        samples
            .get(samples.len() / 2)
            .copied()
            .ok_or_else(|| "no pass gave a valid timestamp pair".to_string())
    };
    let run = |groups: &[wgpu::BindGroup], dependent: bool, wgs: u32| {
        let binds: Vec<&wgpu::BindGroup> = (0..DISPATCHES)
            .map(|i| &groups[if dependent { 0 } else { i }])
            .collect();
        per_dispatch(&pipeline, &binds, wgs)
    };
    let mut floor = DispatchFloor {
        tiny_dependent_us: run(&tiny, true, 1)?,
        tiny_independent_us: run(&tiny, false, 1)?,
        read_dependent_us: run(&read, true, read_groups)?,
        read_independent_us: run(&read, false, read_groups)?,
        cold: Default::default(),
    };
    let cold_pipeline = probe_pipeline(device, &module, "cold", "dispatch floor cold");
    for (slot, &bytes) in floor.cold.iter_mut().zip(COLD_BYTES.iter()) {
        let copies = COLD_WORKING_SET.div_ceil(bytes) as usize;
        let sources: Vec<wgpu::Buffer> = (0..copies).map(|_| buffer(bytes, storage)).collect();
        let bind = |i: usize, dst: &wgpu::Buffer| {
            src_dst_group(device, &cold_pipeline, &sources[i % copies], dst)
        };
        let dependent: Vec<_> = (0..DISPATCHES).map(|i| bind(i, &outs[0])).collect();
        let independent: Vec<_> = (0..DISPATCHES).map(|i| bind(i, &outs[i])).collect();
        let groups = (bytes / 16).div_ceil(1024) as u32;
        let time = |binds: &[wgpu::BindGroup]| {
            per_dispatch(&cold_pipeline, &binds.iter().collect::<Vec<_>>(), groups)
        };
        *slot = ColdRead {
            bytes,
            dependent_us: time(&dependent)?,
            independent_us: time(&independent)?,
        };
    }
    Ok(floor)
}
