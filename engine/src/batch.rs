//! The pending command batch: dispatches are recorded into one command encoder and submitted at
//! sync points (read-back, upload into a pooled buffer, `Engine::sync`) or after N dispatches.
//! This is the seam where issue 4's scheduler thread plugs in (it will own a `Batch`).

use crate::context::Gpu;
use crate::device::{PARAMS_MAX_BYTES, ParamsMode};
use crate::error::{Error, Result, from_wgpu};
use crate::pool::{BufferKind, PooledBuffer};
use crate::profiler::ProfilerState;
use crate::status::{NonFiniteCheck, STATUS_WORDS, StatusBuffers, StatusLog};

/// Bytes of one status slot as bound.
const STATUS_BYTES: u64 = 4 * STATUS_WORDS as u64;

/// One recorded dispatch, ready to encode.
pub(crate) struct Dispatch<'a> {
    pub kernel: &'static str,
    pub pipeline: &'a wgpu::ComputePipeline,
    pub group0: &'a wgpu::BindGroup,
    pub params: &'a [u8; PARAMS_MAX_BYTES as usize],
    pub groups: [u32; 3],
    pub check: Option<NonFiniteCheck>,
    /// Tensors the dispatch writes (stamped with the batch generation).
    pub outputs: &'a [&'a crate::tensor::Tensor],
}

/// Group-1 resources shared by every dispatch: params arena (uniform mode) and status slots.
pub(crate) struct EngineGroup {
    pub layout: wgpu::BindGroupLayout,
    pub bind_group: wgpu::BindGroup,
    pub params_arena: Option<wgpu::Buffer>,
    /// Bytes between params slots (uniform mode).
    pub params_stride: u64,
    pub status: StatusBuffers,
}

impl EngineGroup {
    /// Creates the layout, arena (`slots` params slots in uniform mode), status buffers, bind group.
    pub fn new(device: &wgpu::Device, limits: &wgpu::Limits, mode: ParamsMode, slots: u32) -> Self {
        let status = StatusBuffers::new(device, limits.min_storage_buffer_offset_alignment);
        let params_stride = u64::from(
            limits
                .min_uniform_buffer_offset_alignment
                .max(PARAMS_MAX_BYTES),
        );
        let mut entries = vec![wgpu::BindGroupLayoutEntry {
            binding: 1,
            visibility: wgpu::ShaderStages::COMPUTE,
            ty: wgpu::BindingType::Buffer {
                ty: wgpu::BufferBindingType::Storage { read_only: false },
                has_dynamic_offset: true,
                min_binding_size: wgpu::BufferSize::new(STATUS_BYTES),
            },
            count: None,
        }];
        let params_arena = (mode == ParamsMode::Uniform).then(|| {
            entries.push(wgpu::BindGroupLayoutEntry {
                binding: 0,
                visibility: wgpu::ShaderStages::COMPUTE,
                ty: wgpu::BindingType::Buffer {
                    ty: wgpu::BufferBindingType::Uniform,
                    has_dynamic_offset: true,
                    min_binding_size: None,
                },
                count: None,
            });
            device.create_buffer(&wgpu::BufferDescriptor {
                label: Some("bitnet-wgpu params arena"),
                size: params_stride * u64::from(slots),
                usage: wgpu::BufferUsages::UNIFORM | wgpu::BufferUsages::COPY_DST,
                mapped_at_creation: false,
            })
        });
        let layout = device.create_bind_group_layout(&wgpu::BindGroupLayoutDescriptor {
            label: Some("bitnet-wgpu group1"),
            entries: &entries,
        });
        let mut bind = vec![wgpu::BindGroupEntry {
            binding: 1,
            resource: wgpu::BindingResource::Buffer(wgpu::BufferBinding {
                buffer: &status.slots,
                offset: 0,
                size: wgpu::BufferSize::new(STATUS_BYTES),
            }),
        }];
        if let Some(arena) = &params_arena {
            bind.push(wgpu::BindGroupEntry {
                binding: 0,
                resource: wgpu::BindingResource::Buffer(wgpu::BufferBinding {
                    buffer: arena,
                    offset: 0,
                    size: wgpu::BufferSize::new(u64::from(PARAMS_MAX_BYTES)),
                }),
            });
        }
        let bind_group = device.create_bind_group(&wgpu::BindGroupDescriptor {
            label: Some("bitnet-wgpu group1"),
            layout: &layout,
            entries: &bind,
        });
        EngineGroup {
            layout,
            bind_group,
            params_arena,
            params_stride,
            status,
        }
    }
}

/// Status slots copied out by a sync point, to decode once its submission completed.
pub(crate) struct StatusTicket {
    pub checks: Vec<NonFiniteCheck>,
    pub staging: PooledBuffer,
    pub bytes: u64,
}

/// The pending batch (behind the engine's batch lock).
#[derive(Default)]
pub(crate) struct Batch {
    /// Batches submitted so far; the pending batch's generation is `submitted + 1`.
    submitted: u64,
    encoder: Option<wgpu::CommandEncoder>,
    dispatches: u32,
    params: Vec<u8>,
    status: StatusLog,
    /// An error found by a forced status check, reported at the next sync point.
    pub pending_error: Option<Error>,
    pub profiler: Option<ProfilerState>,
}

impl Batch {
    /// The pending encoder (created on first use).
    pub fn encoder(&mut self, gpu: &Gpu) -> &mut wgpu::CommandEncoder {
        self.encoder.get_or_insert_with(|| {
            gpu.device
                .create_command_encoder(&wgpu::CommandEncoderDescriptor {
                    label: Some("bitnet-wgpu batch"),
                })
        })
    }

    /// Records one dispatch; submits first when the batch is full.
    pub fn record(&mut self, gpu: &Gpu, d: Dispatch<'_>) -> Result<()> {
        if d.check.is_some() && self.status.full() {
            self.force_status_check(gpu)?;
        }
        let profiler_full = self
            .profiler
            .as_ref()
            .is_some_and(|p| p.enabled && p.full());
        if self.dispatches >= gpu.options.batch_dispatches || profiler_full {
            self.flush(gpu)?;
        }
        let params_offset = self.dispatches as u64 * gpu.group.params_stride;
        if gpu.caps.params_mode == ParamsMode::Uniform {
            self.params.resize(params_offset as usize, 0);
            self.params.extend_from_slice(d.params);
        }
        let slot = d.check.map_or(0, |c| self.status.push(c));
        let status_offset = u64::from(slot) * gpu.group.status.stride;
        let offsets: Vec<u32> = match gpu.caps.params_mode {
            // Dynamic offsets are ordered by binding number: params (0), then status (1).
            ParamsMode::Uniform => vec![params_offset as u32, status_offset as u32],
            ParamsMode::Immediates => vec![status_offset as u32],
        };
        self.encoder(gpu);
        let (encoder, profiler) = (self.encoder.as_mut(), self.profiler.as_mut());
        let Some(encoder) = encoder else {
            unreachable!("created above")
        };
        let timestamp_writes = profiler
            .filter(|p| p.enabled)
            .map(|p| p.next_writes(d.kernel));
        let mut pass = encoder.begin_compute_pass(&wgpu::ComputePassDescriptor {
            label: Some(d.kernel),
            timestamp_writes,
        });
        pass.set_pipeline(d.pipeline);
        pass.set_bind_group(0, d.group0, &[]);
        pass.set_bind_group(1, &gpu.group.bind_group, &offsets);
        if gpu.caps.params_mode == ParamsMode::Immediates {
            pass.set_immediates(0, d.params);
        }
        let [x, y, z] = d.groups;
        pass.dispatch_workgroups(x, y, z);
        drop(pass);
        self.dispatches += 1;
        for t in d.outputs {
            t.set_producer(self.submitted + 1);
        }
        Ok(())
    }

    /// Records the copy-out and reset of the used status slots (for a sync point).
    pub fn take_status(&mut self, gpu: &Gpu) -> Result<Option<StatusTicket>> {
        if self.status.checks.is_empty() {
            return Ok(None);
        }
        let stride = gpu.group.status.stride;
        let bytes = self.status.checks.len() as u64 * stride;
        let staging = gpu
            .pool
            .alloc(BufferKind::Readback, bytes, "non-finite status read-back")?;
        let (slots, ones) = (&gpu.group.status.slots, &gpu.group.status.ones);
        let enc = self.encoder(gpu);
        enc.copy_buffer_to_buffer(slots, stride, staging.buffer(), 0, bytes);
        enc.copy_buffer_to_buffer(ones, stride, slots, stride, bytes);
        let checks = std::mem::take(&mut self.status.checks);
        Ok(Some(StatusTicket {
            checks,
            staging,
            bytes,
        }))
    }

    /// Submits everything recorded; returns the submission to wait on (None if nothing pending).
    pub fn flush(&mut self, gpu: &Gpu) -> Result<Option<wgpu::SubmissionIndex>> {
        let Some(mut encoder) = self.encoder.take() else {
            return Ok(None);
        };
        gpu.check_health()?;
        if let Some(arena) = &gpu.group.params_arena
            && !self.params.is_empty()
        {
            // Executes before this submission's commands and after every earlier submission.
            gpu.queue.write_buffer(arena, 0, &self.params);
        }
        self.params.clear();
        self.dispatches = 0;
        self.submitted += 1;
        let generation = self.submitted;
        let profiled = self
            .profiler
            .as_ref()
            .is_some_and(|p| p.record_resolve(&mut encoder));
        let vscope = gpu.device.push_error_scope(wgpu::ErrorFilter::Validation);
        let oscope = gpu.device.push_error_scope(wgpu::ErrorFilter::OutOfMemory);
        let index = gpu.queue.submit([encoder.finish()]);
        let oom = pollster::block_on(oscope.pop());
        let validation = pollster::block_on(vscope.pop());
        if let Some(e) = validation.or(oom) {
            // Nothing of this batch ran: its outputs are poisoned, never read as data.
            let err = from_wgpu(e, "submitting a command batch");
            log::error!("bitnet-wgpu: batch {generation} failed: {err}");
            gpu.mark_failed(generation, &err);
            return Err(err);
        }
        if profiled && let Some(p) = self.profiler.as_mut() {
            p.collect(&gpu.device, index.clone());
        }
        Ok(Some(index))
    }

    /// All status slots are used: flush, read them now, keep the first error for the next sync.
    fn force_status_check(&mut self, gpu: &Gpu) -> Result<()> {
        let ticket = self.take_status(gpu)?;
        let index = self.flush(gpu)?;
        if let (Some(t), Some(i)) = (ticket, index) {
            let err = crate::transfer::decode_status(gpu, t, i)?;
            if self.pending_error.is_none() {
                self.pending_error = err;
            }
        }
        Ok(())
    }
}
