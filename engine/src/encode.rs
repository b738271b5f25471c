//! Encoding a batch's recorded commands into a command buffer, and submitting it inside error
//! scopes (validation and out-of-memory errors become the engine's typed errors; a lost device is
//! reported as such).

use crate::batch::Cmd;
use crate::context::Gpu;
use crate::device::ParamsMode;
use crate::error::{Result, from_wgpu};
use crate::group::STATUS_BYTES;
use crate::profiler::ProfilerState;

/// Encodes `cmds` into one command buffer and submits it inside error scopes.
pub(crate) fn submit(
    gpu: &Gpu,
    cmds: &[Cmd],
    mut profiler: Option<&mut ProfilerState>,
) -> Result<wgpu::SubmissionIndex> {
    let vscope = gpu.device.push_error_scope(wgpu::ErrorFilter::Validation);
    let oscope = gpu.device.push_error_scope(wgpu::ErrorFilter::OutOfMemory);
    let mut encoder = gpu
        .device
        .create_command_encoder(&wgpu::CommandEncoderDescriptor {
            label: Some("bitnet-wgpu batch"),
        });
    for cmd in cmds {
        encode(gpu, &mut encoder, cmd, profiler.as_deref_mut());
    }
    if let Some(p) = profiler {
        p.record_resolve(&mut encoder);
    }
    let index = gpu.queue.submit([encoder.finish()]);
    let oom = pollster::block_on(oscope.pop());
    let validation = pollster::block_on(vscope.pop());
    match validation.or(oom) {
        None => Ok(index),
        Some(e) => Err(gpu
            .check_health()
            .err()
            .unwrap_or_else(|| from_wgpu(e, "submitting a command batch"))),
    }
}

/// Encodes one command.
fn encode(
    gpu: &Gpu,
    enc: &mut wgpu::CommandEncoder,
    cmd: &Cmd,
    profiler: Option<&mut ProfilerState>,
) {
    let status = &gpu.group.status;
    match cmd {
        Cmd::Dispatch {
            d,
            slot,
            reset,
            params_offset,
        } => {
            let at = u64::from(*slot) * status.stride;
            if *reset {
                enc.copy_buffer_to_buffer(&status.ones, at, &status.slots, at, STATUS_BYTES);
            }
            let offsets: Vec<u32> = match gpu.caps.params_mode {
                // Dynamic offsets are ordered by binding number: params (0), then status (1).
                ParamsMode::Uniform => vec![*params_offset as u32, at as u32],
                ParamsMode::Immediates => vec![at as u32],
            };
            let timestamp_writes = profiler.map(|p| p.next_writes(d.kernel));
            let mut pass = enc.begin_compute_pass(&wgpu::ComputePassDescriptor {
                label: Some(d.kernel),
                timestamp_writes,
            });
            pass.set_pipeline(&d.compiled.pipeline);
            pass.set_bind_group(0, &d.group0, &[]);
            pass.set_bind_group(1, &gpu.group.bind_group, &offsets);
            if gpu.caps.params_mode == ParamsMode::Immediates {
                pass.set_immediates(0, &d.params);
            }
            let [x, y, z] = d.groups;
            pass.dispatch_workgroups(x, y, z);
            drop(pass);
            if d.invalid {
                // Injected fault: a copy past the end of the reset buffer, which wgpu rejects.
                let size = status.ones.size();
                enc.copy_buffer_to_buffer(&status.ones, 0, &status.slots, 4, size);
            }
        }
        Cmd::Copy {
            src,
            src_offset,
            dst,
            dst_offset,
            size,
            ..
        } => enc.copy_buffer_to_buffer(src, *src_offset, dst, *dst_offset, *size),
        Cmd::StatusOut {
            slot,
            staging,
            offset,
            ..
        } => {
            let at = u64::from(*slot) * status.stride;
            enc.copy_buffer_to_buffer(&status.slots, at, staging, *offset, STATUS_BYTES);
            enc.copy_buffer_to_buffer(&status.ones, at, &status.slots, at, STATUS_BYTES);
        }
    }
}

/// A command, for logs.
pub(crate) fn describe(cmd: &Cmd) -> String {
    match cmd {
        Cmd::Dispatch { d, .. } => format!("dispatch of kernel `{}`", d.kernel),
        Cmd::Copy { size, .. } => format!("a {size}-byte copy"),
        Cmd::StatusOut { slot, .. } => format!("the copy-out of status slot {slot}"),
    }
}
