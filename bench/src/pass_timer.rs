//! One compute pass timed on the GPU: the pass-boundary timestamp plumbing (a query set of two,
//! resolve and read-back buffers) shared by the copy roofline and the dispatch floor, with a
//! submit + wait wall-clock fallback for adapters without `TIMESTAMP_QUERY` — and the pipeline
//! and `(src, dst)` bind group that both probes' plain-wgpu kernels are built from.

use std::time::Instant;

/// Timestamp queries around one compute pass (the device must have `TIMESTAMP_QUERY`).
pub struct PassTimer {
    set: wgpu::QuerySet,
    resolve: wgpu::Buffer,
    readback: wgpu::Buffer,
    /// The counter's width, where known (its pairs are read modulo it).
    valid_bits: Option<u32>,
}

impl PassTimer {
    /// The query set and its two buffers, for passes submitted to `queue`.
    pub fn new(device: &wgpu::Device, queue: &wgpu::Queue) -> PassTimer {
        let buffer = |usage| {
            device.create_buffer(&wgpu::BufferDescriptor {
                label: Some("bench pass timer"),
                size: 16,
                usage,
                mapped_at_creation: false,
            })
        };
        PassTimer {
            set: device.create_query_set(&wgpu::QuerySetDescriptor {
                label: Some("bench pass timer"),
                ty: wgpu::QueryType::Timestamp,
                count: 2,
            }),
            resolve: buffer(wgpu::BufferUsages::QUERY_RESOLVE | wgpu::BufferUsages::COPY_SRC),
            readback: buffer(wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST),
            valid_bits: bitnet_wgpu::timestamp_valid_bits(device, queue),
        }
    }
}

/// Records one compute pass with `record`, submits it and waits; returns nanoseconds: the pass's
/// GPU time with a `timer`, else the submit + wait wall time. `None`: the timestamp pair was no
/// measurement (`bitnet_wgpu::timestamp_ticks`), a sample to drop — read as 0 ns it would be
/// an infinitely fast pass.
pub fn time_pass(
    device: &wgpu::Device,
    queue: &wgpu::Queue,
    timer: Option<&PassTimer>,
    record: impl FnOnce(&mut wgpu::ComputePass<'_>),
) -> Result<Option<f64>, String> {
    let mut enc = device.create_command_encoder(&Default::default());
    {
        let mut pass = enc.begin_compute_pass(&wgpu::ComputePassDescriptor {
            label: Some("bench timed pass"),
            timestamp_writes: timer.map(|t| wgpu::ComputePassTimestampWrites {
                query_set: &t.set,
                beginning_of_pass_write_index: Some(0),
                end_of_pass_write_index: Some(1),
            }),
        });
        record(&mut pass);
    }
    if let Some(t) = timer {
        enc.resolve_query_set(&t.set, 0..2, &t.resolve, 0);
        enc.copy_buffer_to_buffer(&t.resolve, 0, &t.readback, 0, 16);
    }
    let wait = || {
        device
            .poll(wgpu::PollType::wait_indefinitely())
            .map(drop)
            .map_err(|e| e.to_string())
    };
    let started = Instant::now();
    queue.submit([enc.finish()]);
    wait()?;
    let wall_ns = started.elapsed().as_secs_f64() * 1e9;
    let Some(t) = timer else {
        return Ok(Some(wall_ns));
    };
    t.readback.map_async(wgpu::MapMode::Read, .., |_| {});
    wait()?;
    let ticks = {
        let view = t.readback.get_mapped_range(..).map_err(|e| e.to_string())?;
        let at = |i: usize| u64::from_le_bytes(view[8 * i..8 * i + 8].try_into().unwrap_or([0; 8]));
        bitnet_wgpu::timestamp_ticks(at(0), at(1), t.valid_bits)
    };
    t.readback.unmap();
    Ok(ticks.map(|ticks| ticks as f64 * f64::from(queue.get_timestamp_period())))
}

/// A compute pipeline of `entry` in `module` with the layout derived from the shader.
pub fn probe_pipeline(
    device: &wgpu::Device,
    module: &wgpu::ShaderModule,
    entry: &str,
    label: &str,
) -> wgpu::ComputePipeline {
    device.create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
        label: Some(label),
        layout: None,
        module,
        entry_point: Some(entry),
        compilation_options: Default::default(),
        cache: None,
    })
}

/// Group 0 of a probe kernel: binding 0 the source, binding 1 the destination.
pub fn src_dst_group(
    device: &wgpu::Device,
    pipeline: &wgpu::ComputePipeline,
    src: &wgpu::Buffer,
    dst: &wgpu::Buffer,
) -> wgpu::BindGroup {
    device.create_bind_group(&wgpu::BindGroupDescriptor {
        label: Some("bench probe"),
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
}
