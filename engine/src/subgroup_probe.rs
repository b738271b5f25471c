//! The device self-test that admits the subgroup kernels.
//!
//! Every subgroup kernel numbers its invocations `vt = subgroup_id × subgroup_size + lane` and
//! reduces a 4-row block's lanes with shuffles (`bitlinear_gemv_blocks.wgsl`). That is exact only
//! if the numbering is a bijection onto the workgroup, members of a subgroup agree on its id,
//! subgroups are full and a shuffle reaches the lane `subgroup_invocation_id` names. Vulkan and
//! Metal report the driver's own ids; naga's HLSL derives `subgroup_id` from the local index and
//! the wave size, which holds only where waves are consecutive local indices in lane order (HLSL
//! does not promise it), and a software rasterizer can report one subgroup size and run another
//! (lavapipe at some vector widths: `tests/src/subgroup_rerun.rs`). Where any of it fails the
//! kernels would return wrong numbers without an error, so a new GPU context runs
//! `subgroup_layout_probe.wgsl` once per adapter and driver (the verdict is kept for the
//! process) and, where the layout does not hold, drops `Features::SUBGROUP` from what its kernels
//! may use: every op then takes its workgroup-memory kernels, with a logged warning.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use bitnet_kernels_wgsl::util::SUBGROUP_LAYOUT_PROBE;

/// Invocations per probe workgroup (the subgroup kernels' workgroup size).
const WG: usize = 256;
/// Probe workgroups: enough to spread over a large GPU's cores.
const GROUPS: usize = 64;
/// How long the probe may take before the verdict is "not verified".
const TIMEOUT: Duration = Duration::from_secs(10);

/// What the probe found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// The layout holds on every probed workgroup.
    Holds,
    /// The device ran the probe and the layout does not hold (the reason, for the log).
    Broken(String),
    /// The probe could not run (device lost, out of memory, timeout): not kept for the process.
    Unverified(String),
}

/// Verdicts by adapter and driver, for the process: a driver's subgroup layout does not change
/// between its devices, and tests create many engines.
static VERDICTS: Mutex<Option<HashMap<String, Verdict>>> = Mutex::new(None);

#[cfg(test)]
thread_local! {
    /// Tests: the verdict of the next context this thread creates, instead of probing.
    pub(crate) static FORCED: std::cell::Cell<Option<bool>> = const { std::cell::Cell::new(None) };
}

/// Whether the subgroup kernels may run on `device`: probed once per adapter and driver (the
/// verdict is logged when the layout does not hold). Devices without `Features::SUBGROUP` are
/// not probed.
pub(crate) fn layout_holds(
    device: &wgpu::Device,
    queue: &wgpu::Queue,
    info: &wgpu::AdapterInfo,
) -> bool {
    #[cfg(test)]
    if let Some(forced) = FORCED.with(|f| f.take()) {
        return forced;
    }
    let key = format!(
        "{:?}/{:x}/{:x}/{}/{}/{}",
        info.backend, info.vendor, info.device, info.name, info.driver, info.driver_info
    );
    let known = VERDICTS
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .get_or_insert_with(HashMap::new)
        .get(&key)
        .cloned();
    let verdict = known.unwrap_or_else(|| {
        let verdict = probe(device, queue, 0);
        if !matches!(verdict, Verdict::Unverified(_)) {
            VERDICTS
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .get_or_insert_with(HashMap::new)
                .insert(key, verdict.clone());
        }
        match &verdict {
            Verdict::Holds => {}
            Verdict::Broken(why) | Verdict::Unverified(why) => log::warn!(
                "bitnet-wgpu: subgroup kernels disabled on {}: {why}; ops use their \
                 workgroup-memory kernels",
                info.name
            ),
        }
        verdict
    });
    verdict == Verdict::Holds
}

/// Runs the probe with override `SKEW` (0 on devices; 1, 2 and 3 simulate broken layouts for
/// tests).
pub(crate) fn probe(device: &wgpu::Device, queue: &wgpu::Queue, skew: u32) -> Verdict {
    let scopes = [
        device.push_error_scope(wgpu::ErrorFilter::Validation),
        device.push_error_scope(wgpu::ErrorFilter::OutOfMemory),
        device.push_error_scope(wgpu::ErrorFilter::Internal),
    ];
    let read = dispatch(device, queue, skew);
    // Scopes pop in reverse order of their pushes.
    let errors: Vec<wgpu::Error> = scopes
        .into_iter()
        .rev()
        .filter_map(|s| pollster::block_on(s.pop()))
        .collect();
    if let Some(e) = errors.into_iter().next() {
        // A kernel the driver cannot build is as good as a broken layout; other errors say
        // nothing about the layout.
        let why = format!("the probe failed: {e}");
        return match e {
            wgpu::Error::Validation { .. } => Verdict::Broken(why),
            _ => Verdict::Unverified(why),
        };
    }
    match read {
        Ok(words) => check(&words),
        Err(why) => Verdict::Unverified(why),
    }
}

/// Records, submits and reads back one probe dispatch: the words of every workgroup.
fn dispatch(device: &wgpu::Device, queue: &wgpu::Queue, skew: u32) -> Result<Vec<u32>, String> {
    let bytes = (GROUPS * (WG + 1) * 4) as u64;
    let module = device.create_shader_module(wgpu::ShaderModuleDescriptor {
        label: Some(SUBGROUP_LAYOUT_PROBE.name),
        source: wgpu::ShaderSource::Wgsl(SUBGROUP_LAYOUT_PROBE.source.into()),
    });
    let pipeline = device.create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
        label: Some(SUBGROUP_LAYOUT_PROBE.name),
        layout: None,
        module: &module,
        entry_point: Some("main"),
        compilation_options: wgpu::PipelineCompilationOptions {
            constants: &[("SKEW", f64::from(skew))],
            zero_initialize_workgroup_memory: true,
        },
        cache: None,
    });
    let words = device.create_buffer(&wgpu::BufferDescriptor {
        label: Some("subgroup probe words"),
        size: bytes,
        usage: wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_SRC,
        mapped_at_creation: false,
    });
    let readback = device.create_buffer(&wgpu::BufferDescriptor {
        label: Some("subgroup probe read-back"),
        size: bytes,
        usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
        mapped_at_creation: false,
    });
    let group = device.create_bind_group(&wgpu::BindGroupDescriptor {
        label: Some(SUBGROUP_LAYOUT_PROBE.name),
        layout: &pipeline.get_bind_group_layout(0),
        entries: &[wgpu::BindGroupEntry {
            binding: 0,
            resource: words.as_entire_binding(),
        }],
    });
    let mut encoder = device.create_command_encoder(&Default::default());
    {
        let mut pass = encoder.begin_compute_pass(&Default::default());
        pass.set_pipeline(&pipeline);
        pass.set_bind_group(0, &group, &[]);
        pass.dispatch_workgroups(GROUPS as u32, 1, 1);
    }
    encoder.copy_buffer_to_buffer(&words, 0, &readback, 0, bytes);
    let index = queue.submit([encoder.finish()]);
    let (tx, rx) = flume::bounded(1);
    readback.slice(..).map_async(wgpu::MapMode::Read, move |r| {
        let _ = tx.send(r);
    });
    device
        .poll(wgpu::PollType::Wait {
            submission_index: Some(index),
            timeout: Some(TIMEOUT),
        })
        .map_err(|e| format!("waiting for the probe: {e}"))?;
    match rx.try_recv() {
        Ok(Ok(())) => {}
        Ok(Err(e)) => return Err(format!("reading the probe back: {e}")),
        Err(_) => return Err("the probe's read-back never completed".into()),
    }
    let words = {
        let view = readback
            .slice(..)
            .get_mapped_range()
            .map_err(|e| format!("reading the probe back: {e}"))?;
        bytemuck::cast_slice(&view).to_vec()
    };
    readback.unmap();
    Ok(words)
}

/// The verdict on the probe's words (`GROUPS` workgroups of `WG` hit counts and a flag word).
fn check(words: &[u32]) -> Verdict {
    if words.len() != GROUPS * (WG + 1) {
        return Verdict::Unverified(format!("the probe read back {} words", words.len()));
    }
    for (g, block) in words.chunks_exact(WG + 1).enumerate() {
        let flags = block[WG];
        if flags != 0 {
            return Verdict::Broken(format!("workgroup {g} found {}", describe_flags(flags)));
        }
        if let Some((vt, &n)) = block[..WG].iter().enumerate().find(|&(_, &n)| n != 1) {
            return Verdict::Broken(format!(
                "workgroup {g}: invocation number {vt} taken {n} times \
                 (subgroup_id × size + lane is no bijection)"
            ));
        }
    }
    Verdict::Holds
}

/// The probe's violation bits in words.
fn describe_flags(flags: u32) -> String {
    const WHAT: [&str; 6] = [
        "a lane or number out of range",
        "members of one subgroup naming different subgroup ids",
        "a shuffle reaching another lane than the one named",
        "a partial subgroup",
        "a subgroup size that is no power of two in 4 ..= 128",
        "num_subgroups × size other than the workgroup",
    ];
    let found: Vec<&str> = WHAT
        .iter()
        .enumerate()
        .filter(|&(bit, _)| flags & (1 << bit) != 0)
        .map(|(_, w)| *w)
        .collect();
    found.join(", ")
}

#[cfg(test)]
#[path = "subgroup_probe_tests.rs"]
mod tests;
