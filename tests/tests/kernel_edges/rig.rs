//! A bare wgpu device on the engine's adapter for checking WGSL snippets (the correctly rounded
//! division and square root) on the GPU: one bind group layout (a uniform of 4 words — base,
//! stride, count, row — the input words, the result words and 2 stats words), any test shader
//! over it, and a run that dispatches it and reads stats and results back.

use super::*;

/// What every test shader on a [`Rig`] starts with (prepended by [`Rig::pipeline`]): the params
/// (`rp`: first input bits, stride, count, invocations per grid row), the input words, the result
/// words, the stats words (a mismatch count and the lowest mismatching index), and the flat
/// index of an invocation.
const RIG_WGSL: &str = r"
struct RigParams {
    base: u32,
    stride: u32,
    count: u32,
    row: u32,
}

@group(0) @binding(0) var<uniform> rp: RigParams;
@group(0) @binding(1) var<storage, read> inputs: array<u32>;
@group(0) @binding(2) var<storage, read_write> results: array<u32>;
@group(0) @binding(3) var<storage, read_write> stats: array<atomic<u32>, 2>;

fn rig_index(gid: vec3<u32>) -> u32 {
    return gid.x + gid.y * rp.row;
}
";

/// Invocations per workgroup of the test shaders.
const WG: u32 = 256;
/// Workgroups per grid row (the grid folds into y past this).
const ROW_GROUPS: u32 = 32768;

pub(super) struct Rig {
    device: wgpu::Device,
    queue: wgpu::Queue,
    layout: wgpu::BindGroupLayout,
    pipeline_layout: wgpu::PipelineLayout,
}

impl Rig {
    /// A plain device on the engine's adapter (`label` names its objects).
    pub(super) fn new(label: &'static str) -> Rig {
        let info = engine().info();
        let instance =
            wgpu::Instance::new(wgpu::InstanceDescriptor::new_without_display_handle_from_env());
        // The name and the backend: one driver may offer the same device through two backends.
        let adapter = block_on(instance.enumerate_adapters(wgpu::Backends::all()))
            .into_iter()
            .find(|a| {
                let i = a.get_info();
                i.name == info.adapter_name && format!("{:?}", i.backend) == info.backend
            })
            .expect("the engine's adapter is enumerable");
        let (device, queue) = block_on(adapter.request_device(&wgpu::DeviceDescriptor {
            label: Some(label),
            ..Default::default()
        }))
        .expect("device");
        let entry = |binding, ty| wgpu::BindGroupLayoutEntry {
            binding,
            visibility: wgpu::ShaderStages::COMPUTE,
            ty: wgpu::BindingType::Buffer {
                ty,
                has_dynamic_offset: false,
                min_binding_size: None,
            },
            count: None,
        };
        let storage = |read_only| wgpu::BufferBindingType::Storage { read_only };
        let layout = device.create_bind_group_layout(&wgpu::BindGroupLayoutDescriptor {
            label: None,
            entries: &[
                entry(0, wgpu::BufferBindingType::Uniform),
                entry(1, storage(true)),
                entry(2, storage(false)),
                entry(3, storage(false)),
            ],
        });
        let pipeline_layout = device.create_pipeline_layout(&wgpu::PipelineLayoutDescriptor {
            label: None,
            bind_group_layouts: &[Some(&layout)],
            immediate_size: 0,
        });
        Rig {
            device,
            queue,
            layout,
            pipeline_layout,
        }
    }

    /// The pipeline of `entry_point` in WGSL `source` (after the rig's declarations,
    /// `RIG_WGSL`), with override `constants`.
    pub(super) fn pipeline(
        &self,
        source: &str,
        entry_point: &str,
        constants: &[(&str, f64)],
    ) -> wgpu::ComputePipeline {
        let module = self
            .device
            .create_shader_module(wgpu::ShaderModuleDescriptor {
                label: Some(entry_point),
                source: wgpu::ShaderSource::Wgsl(format!("{RIG_WGSL}\n{source}").into()),
            });
        self.device
            .create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
                label: Some(entry_point),
                layout: Some(&self.pipeline_layout),
                module: &module,
                entry_point: Some(entry_point),
                compilation_options: wgpu::PipelineCompilationOptions {
                    constants,
                    ..Default::default()
                },
                cache: None,
            })
    }

    fn buffer(&self, bytes: u64, usage: wgpu::BufferUsages) -> wgpu::Buffer {
        self.device.create_buffer(&wgpu::BufferDescriptor {
            label: None,
            size: bytes.max(16),
            usage,
            mapped_at_creation: false,
        })
    }

    /// Runs `pipeline` over `count` invocations; returns the stats words and `results_words`
    /// words of results.
    pub(super) fn run(
        &self,
        pipeline: &wgpu::ComputePipeline,
        params: [u32; 3],
        inputs: &[u32],
        results_words: u64,
    ) -> (Vec<u32>, Vec<u32>) {
        use wgpu::BufferUsages as U;
        let count = params[2];
        let groups = count.div_ceil(WG);
        let (gx, gy) = (groups.min(ROW_GROUPS), groups.div_ceil(ROW_GROUPS));
        let uniform: Vec<u8> = [params[0], params[1], count, gx * WG]
            .iter()
            .flat_map(|w| w.to_le_bytes())
            .collect();
        let p = self.buffer(16, U::UNIFORM | U::COPY_DST);
        self.queue.write_buffer(&p, 0, &uniform);
        let input = self.buffer(4 * inputs.len() as u64, U::STORAGE | U::COPY_DST);
        if !inputs.is_empty() {
            let bytes: Vec<u8> = inputs.iter().flat_map(|w| w.to_le_bytes()).collect();
            self.queue.write_buffer(&input, 0, &bytes);
        }
        let results = self.buffer(4 * results_words, U::STORAGE | U::COPY_SRC);
        let stats = self.buffer(8, U::STORAGE | U::COPY_DST | U::COPY_SRC);
        self.queue
            .write_buffer(&stats, 0, &[0u8, 0, 0, 0, 0xff, 0xff, 0xff, 0xff]);
        let read = self.buffer(4 * (2 + results_words), U::MAP_READ | U::COPY_DST);
        let bind = self.device.create_bind_group(&wgpu::BindGroupDescriptor {
            label: None,
            layout: &self.layout,
            entries: &[
                wgpu::BindGroupEntry {
                    binding: 0,
                    resource: p.as_entire_binding(),
                },
                wgpu::BindGroupEntry {
                    binding: 1,
                    resource: input.as_entire_binding(),
                },
                wgpu::BindGroupEntry {
                    binding: 2,
                    resource: results.as_entire_binding(),
                },
                wgpu::BindGroupEntry {
                    binding: 3,
                    resource: stats.as_entire_binding(),
                },
            ],
        });
        let mut encoder = self.device.create_command_encoder(&Default::default());
        {
            let mut pass = encoder.begin_compute_pass(&Default::default());
            pass.set_pipeline(pipeline);
            pass.set_bind_group(0, &bind, &[]);
            pass.dispatch_workgroups(gx, gy, 1);
        }
        encoder.copy_buffer_to_buffer(&stats, 0, &read, 0, 8);
        if results_words > 0 {
            encoder.copy_buffer_to_buffer(&results, 0, &read, 8, 4 * results_words);
        }
        self.queue.submit([encoder.finish()]);
        let slice = read.slice(..);
        slice.map_async(wgpu::MapMode::Read, |r| r.expect("map"));
        self.device
            .poll(wgpu::PollType::wait_indefinitely())
            .expect("poll");
        let words: Vec<u32> = slice
            .get_mapped_range()
            .expect("mapped range")
            .chunks_exact(4)
            .map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect();
        (words[..2].to_vec(), words[2..].to_vec())
    }
}
