//! The engine's group-1 resources (bind group 1 of every kernel): the params arena (uniform
//! params mode) and the non-finite status slots.

use crate::device::{PARAMS_MAX_BYTES, ParamsMode};
use crate::error::{Error, Result};
use crate::status::{STATUS_WORDS, StatusBuffers};

/// Bytes of one status slot as bound.
pub(crate) const STATUS_BYTES: u64 = 4 * STATUS_WORDS as u64;

/// Group-1 resources shared by every dispatch: params arena (uniform mode) and status slots.
pub(crate) struct EngineGroup {
    pub layout: wgpu::BindGroupLayout,
    /// One bind group per status slot (`status.rs`: one buffer per slot), index = slot.
    pub bind_groups: Vec<wgpu::BindGroup>,
    pub params_arena: Option<wgpu::Buffer>,
    /// Bytes between params slots (uniform mode).
    pub params_stride: u64,
    pub status: StatusBuffers,
}

impl EngineGroup {
    /// Creates the layout, arena (`slots` params slots in uniform mode), status buffers and one
    /// bind group per status slot.
    /// `Err(LimitExceeded)` when the arena of `slots` params slots (uniform mode:
    /// `EngineOptions::batch_dispatches`) exceeds the device's `max_buffer_size`.
    pub fn new(
        device: &wgpu::Device,
        limits: &wgpu::Limits,
        mode: ParamsMode,
        slots: u32,
    ) -> Result<Self> {
        let params_stride = u64::from(
            limits
                .min_uniform_buffer_offset_alignment
                .max(PARAMS_MAX_BYTES),
        );
        let arena_bytes = params_stride * u64::from(slots);
        if mode == ParamsMode::Uniform && arena_bytes > limits.max_buffer_size {
            return Err(Error::LimitExceeded {
                limit: "max_buffer_size",
                requested: arena_bytes,
                max: limits.max_buffer_size,
                what: format!(
                    "the params arena of EngineOptions::batch_dispatches = {slots} \
                     ({params_stride} bytes per dispatch in uniform params mode)"
                ),
            });
        }
        let status = StatusBuffers::new(device);
        let params_arena = (mode == ParamsMode::Uniform).then(|| {
            device.create_buffer(&wgpu::BufferDescriptor {
                label: Some("bitnet-wgpu params arena"),
                size: arena_bytes,
                usage: wgpu::BufferUsages::UNIFORM | wgpu::BufferUsages::COPY_DST,
                mapped_at_creation: false,
            })
        });
        let layout = device.create_bind_group_layout(&wgpu::BindGroupLayoutDescriptor {
            label: Some("bitnet-wgpu group1"),
            entries: &layout_entries(mode),
        });
        let bind_groups = status
            .slots
            .iter()
            .map(|slot| {
                let mut bind = vec![wgpu::BindGroupEntry {
                    binding: 1,
                    resource: wgpu::BindingResource::Buffer(wgpu::BufferBinding {
                        buffer: slot,
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
                device.create_bind_group(&wgpu::BindGroupDescriptor {
                    label: Some("bitnet-wgpu group1"),
                    layout: &layout,
                    entries: &bind,
                })
            })
            .collect();
        Ok(EngineGroup {
            layout,
            bind_groups,
            params_arena,
            params_stride,
            status,
        })
    }
}

/// Storage buffers of the engine's group 1 that every kernel binds besides its own: the status
/// slot ([`layout_entries`]).
pub(crate) const ENGINE_STORAGE_BUFFERS: u32 = 1;

/// The group-1 layout entries in `mode`: the status slot (binding 1) and, in uniform params mode
/// only, the params arena (binding 0). Also what the MSL kernels' buffer indices are derived from
/// (`msl_tests.rs`): in immediates mode the status slot is the group's only entry.
pub(crate) fn layout_entries(mode: ParamsMode) -> Vec<wgpu::BindGroupLayoutEntry> {
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
    if mode == ParamsMode::Uniform {
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
    }
    entries
}
