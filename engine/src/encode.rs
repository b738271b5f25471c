//! Encoding a batch's recorded commands into a command buffer, and submitting it inside error
//! scopes (validation and out-of-memory errors become the engine's typed errors; a lost device is
//! reported as such).
//!
//! Pass structure: each run of consecutive dispatches is encoded into *one* compute pass (a copy,
//! a status copy-out or a reset ends the run). wgpu still inserts the barriers that data
//! dependencies between the dispatches need, but a pass per dispatch cost a pass begin/end (and,
//! on some drivers, a full barrier) for every op. The status-slot resets of a flush are
//! [`Cmd::Reset`] commands appended at the end of the batch (`batch.rs`), so they never split a run.
//!
//! Profiling (`profiler.rs`) keeps this structure when it times whole batches (two pass-boundary
//! timestamps per batch) or the device has `Features::TIMESTAMP_QUERY_INSIDE_PASSES`
//! (timestamps written inside the pass around each dispatch); without either every timed
//! dispatch gets its own pass with `timestamp_writes`.

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
    gpu.faults.panic_in_submit_if_armed();
    let vscope = gpu.device.push_error_scope(wgpu::ErrorFilter::Validation);
    let oscope = gpu.device.push_error_scope(wgpu::ErrorFilter::OutOfMemory);
    #[cfg(test)]
    let started = std::time::Instant::now();
    let mut encoder = gpu
        .device
        .create_command_encoder(&wgpu::CommandEncoderDescriptor {
            label: Some("bitnet-wgpu batch"),
        });
    let in_pass = profiler
        .as_ref()
        .is_none_or(|p| p.inside_passes || !p.per_dispatch());
    // A batch span runs from the first dispatch pass's beginning to the last one's end.
    let is_dispatch = |c: &Cmd| matches!(c, Cmd::Dispatch { .. });
    let first = cmds.iter().position(is_dispatch);
    let last = cmds.iter().rposition(is_dispatch);
    let mut i = 0;
    while i < cmds.len() {
        let run = cmds[i..].iter().take_while(|c| is_dispatch(c)).count();
        let gathered = status_run(gpu, &cmds[i..]);
        if gathered > 0 {
            encode_gather(gpu, &mut encoder, &cmds[i..i + gathered]);
            i += gathered;
        } else if run == 0 {
            encode_transfer(gpu, &mut encoder, &cmds[i]);
            i += 1;
        } else if in_pass {
            let span = (first == Some(i), last == Some(i + run - 1));
            encode_run(
                gpu,
                &mut encoder,
                &cmds[i..i + run],
                profiler.as_deref_mut(),
                span,
            );
            i += run;
        } else {
            // Timed without in-pass timestamps: one pass per dispatch (pass-boundary writes).
            for c in &cmds[i..i + run] {
                encode_run(
                    gpu,
                    &mut encoder,
                    std::slice::from_ref(c),
                    profiler.as_deref_mut(),
                    (false, false),
                );
            }
            i += run;
        }
    }
    if let Some(p) = profiler {
        p.record_resolve(&mut encoder);
    }
    let buffer = encoder.finish();
    #[cfg(test)]
    crate::launch::record_cost_tests::ENCODE_NS.fetch_add(
        started.elapsed().as_nanos() as u64,
        std::sync::atomic::Ordering::Relaxed,
    );
    let index = crate::lifecycle::submitting(|| gpu.queue.submit([buffer]));
    gpu.faults.panic_after_submit_if_armed();
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

/// Encodes a run of dispatches into one compute pass (ended early, and a new one begun, only
/// after an injected invalid dispatch, whose fault copy must sit outside any pass). `span`: the
/// run is the first / last dispatch run of the batch (where a batch span's timestamps go).
fn encode_run(
    gpu: &Gpu,
    enc: &mut wgpu::CommandEncoder,
    run: &[Cmd],
    mut profiler: Option<&mut ProfilerState>,
    span: (bool, bool),
) {
    let status = &gpu.group.status;
    let per_dispatch = profiler.as_ref().is_some_and(|p| p.per_dispatch());
    let inside = per_dispatch && profiler.as_ref().is_some_and(|p| p.inside_passes);
    if let Some(p) = profiler.as_deref_mut() {
        run.iter().for_each(|_| p.count_dispatch());
    }
    let timestamp_writes = match (&mut profiler, run) {
        (Some(p), _) if !p.per_dispatch() => p.span_writes(span.0, span.1),
        // Pass-boundary timestamps: only for a pass of exactly one dispatch (the fallback).
        (Some(p), [Cmd::Dispatch { d, .. }]) if !inside => Some(p.next_writes(d.kernel)),
        _ => None,
    };
    let mut pass = enc.begin_compute_pass(&wgpu::ComputePassDescriptor {
        label: Some("bitnet-wgpu dispatches"),
        timestamp_writes,
    });
    let mut current: Option<&wgpu::ComputePipeline> = None;
    for cmd in run {
        let Cmd::Dispatch {
            d,
            slot,
            params_offset,
        } = cmd
        else {
            continue;
        };
        // Dynamic offsets are ordered by binding number: params (0), then status (1; each slot
        // is its own buffer, at offset 0).
        let offsets = [*params_offset as u32, 0];
        let offsets = match gpu.caps.params_mode {
            ParamsMode::Uniform => &offsets[..],
            ParamsMode::Immediates => &offsets[1..],
        };
        let pipeline = &d.compiled.pipeline;
        if current != Some(pipeline) {
            pass.set_pipeline(pipeline);
            current = Some(pipeline);
        }
        pass.set_bind_group(0, &d.group0, &[]);
        pass.set_bind_group(1, &gpu.group.bind_groups[*slot as usize], offsets);
        if gpu.caps.params_mode == ParamsMode::Immediates {
            pass.set_immediates(0, &d.params);
        }
        let pair = match profiler.as_deref_mut() {
            Some(p) if inside => Some(p.next_pair(d.kernel)),
            _ => None,
        };
        if let (Some(p), Some((begin, _))) = (profiler.as_deref(), pair) {
            pass.write_timestamp(p.query_set(), begin);
        }
        let [x, y, z] = d.groups;
        pass.dispatch_workgroups(x, y, z);
        if let (Some(p), Some((_, end))) = (profiler.as_deref(), pair) {
            pass.write_timestamp(p.query_set(), end);
        }
        if d.invalid {
            // Injected fault: a copy past the end of the reset buffer, which wgpu rejects.
            drop(pass);
            let size = status.ones.size();
            enc.copy_buffer_to_buffer(&status.ones, 0, &status.slots[0], 4, size);
            pass = enc.begin_compute_pass(&wgpu::ComputePassDescriptor {
                label: Some("bitnet-wgpu dispatches"),
                timestamp_writes: None,
            });
            current = None;
        }
    }
}

/// Encodes one command that is not a dispatch.
fn encode_transfer(gpu: &Gpu, enc: &mut wgpu::CommandEncoder, cmd: &Cmd) {
    let status = &gpu.group.status;
    match cmd {
        Cmd::Dispatch { .. } => {}
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
            // Without a gather (`status_gather.rs`). On GPUs the slot goes back dirty and a
            // later flush's reset pass cleans it (see `status::copy_out_resets`).
            let buffer = &status.slots[*slot as usize];
            enc.copy_buffer_to_buffer(buffer, 0, staging, *offset, STATUS_BYTES);
            if crate::status::copy_out_resets(gpu) {
                enc.copy_buffer_to_buffer(&status.ones, 0, buffer, 0, STATUS_BYTES);
            }
        }
        Cmd::Reset { slots } => encode_resets(gpu, enc, slots),
    }
}

/// How many status copy-outs at the start of `cmds` go out as one gather (`status_gather.rs`):
/// consecutive ones into consecutive places of one staging buffer (a read's, in slot order); 0
/// where the device has no gather, or `cmds` does not start with a copy-out.
fn status_run(gpu: &Gpu, cmds: &[Cmd]) -> usize {
    let Some(Cmd::StatusOut {
        staging: first,
        offset: start,
        ..
    }) = cmds.first()
    else {
        return 0;
    };
    if gpu.status_gather.is_none() {
        return 0;
    }
    cmds.iter()
        .enumerate()
        .take_while(|(i, c)| {
            matches!(c, Cmd::StatusOut { staging, offset, .. }
                if staging == first && *offset == start + *i as u64 * STATUS_BYTES)
        })
        .count()
}

/// Encodes a [`status_run`] as gathers into its staging buffer (the slots come back clean).
fn encode_gather(gpu: &Gpu, enc: &mut wgpu::CommandEncoder, run: &[Cmd]) {
    let (
        Some(gather),
        Some(Cmd::StatusOut {
            staging, offset, ..
        }),
    ) = (&gpu.status_gather, run.first())
    else {
        return;
    };
    let slots: Vec<u32> = run
        .iter()
        .filter_map(|c| match c {
            Cmd::StatusOut { slot, .. } => Some(*slot),
            _ => None,
        })
        .collect();
    gather.encode(gpu, enc, &slots, staging, *offset);
}

/// One compute pass of `status_reset` dispatches, one per slot: distinct buffers, so they overlap
/// (a copy per slot would pay a pipeline barrier each).
fn encode_resets(gpu: &Gpu, enc: &mut wgpu::CommandEncoder, slots: &[u32]) {
    let reset = &gpu.status_reset;
    let mut pass = enc.begin_compute_pass(&wgpu::ComputePassDescriptor {
        label: Some("bitnet-wgpu status resets"),
        timestamp_writes: None,
    });
    pass.set_pipeline(&reset.compiled.pipeline);
    pass.set_bind_group(0, &reset.group0, &[]);
    let offsets: &[u32] = match gpu.caps.params_mode {
        ParamsMode::Uniform => &[0, 0],
        ParamsMode::Immediates => &[0],
    };
    if gpu.caps.params_mode == ParamsMode::Immediates {
        pass.set_immediates(0, &[0; crate::device::PARAMS_MAX_BYTES as usize]);
    }
    for &s in slots {
        pass.set_bind_group(1, &gpu.group.bind_groups[s as usize], offsets);
        pass.dispatch_workgroups(1, 1, 1);
    }
}

/// A command, for logs.
pub(crate) fn describe(cmd: &Cmd) -> String {
    match cmd {
        Cmd::Dispatch { d, .. } => format!("dispatch of kernel `{}`", d.kernel),
        Cmd::Copy { size, .. } => format!("a {size}-byte copy"),
        Cmd::StatusOut { slot, .. } => format!("the copy-out of status slot {slot}"),
        Cmd::Reset { slots } => {
            format!("the reset of {} status slots", slots.len())
        }
    }
}
