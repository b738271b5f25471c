//! The status gather: a read's status slots copied out by `status_gather` dispatches, 16 slots
//! per dispatch, instead of one buffer copy per slot.
//!
//! A read copies out the slot of every unresolved checked launch in its tensor's lineage
//! (`fate.rs`) — after a decode step, hundreds. Every slot is its own buffer (`status.rs`), and
//! wgpu orders each buffer copy behind a pipeline barrier of its own, so a copy per slot cost
//! about 5 ms for a read after 600 dependent ops on the H200 (and a decode loop that never reads
//! pays it too: when every slot is owned by an unread launch the engine copies them all out).
//! A gather dispatch binds 16 slots — the first as its group-1 status binding, the others in
//! group 0 — exchanges each word for `CLEAN` (so the slots come back clean, with no reset pass)
//! and writes the words to the engine's gather buffer; the gathers of one read then reach its
//! staging buffer in one copy. Consecutive gathers share that buffer, so each still waits behind
//! a barrier: one per 16 slots.
//!
//! Devices that cannot bind 17 storage buffers in one stage (below the limits of every desktop
//! Vulkan, Metal and DX12 device, but WebGPU's default is 8) copy slot by slot
//! (`encode.rs`).

use crate::context::Gpu;
use crate::device::ParamsMode;
use crate::error::Result;
use crate::group::STATUS_BYTES;
use crate::pipelines::{Access, Compiled, Kernel, PipelineCache};
use crate::status::STATUS_SLOTS;

/// Slots one gather dispatch copies out.
pub(crate) const GATHER_SLOTS: usize = 16;

/// Storage buffers one gather binds in its stage: 15 slots and `out` in group 0, the first slot
/// in group 1.
const STORAGE_BINDINGS: u32 = GATHER_SLOTS as u32 + 1;

/// Bytes of gather buffer per dispatch: a multiple of every device's storage offset alignment
/// (WebGPU caps it at 256), so each gather's `out` binding starts aligned.
const GATHER_STRIDE: u64 = 256;

const GATHER: Kernel = Kernel::new(
    bitnet_kernels_wgsl::util::STATUS_GATHER,
    "main",
    &[Access::ReadWrite; GATHER_SLOTS],
);

/// The gather pipeline, its placeholder bindings and the gather buffer (one per engine).
pub(crate) struct StatusGather {
    compiled: std::sync::Arc<Compiled>,
    /// Bound where a gather has fewer than 16 slots (never touched: no workgroup takes them).
    /// Distinct buffers, so no buffer is bound twice writable in one dispatch.
    placeholders: Vec<wgpu::Buffer>,
    /// Where the gathers write, before one copy moves a read's words to its staging buffer:
    /// room for every slot (a read claims each slot at most once), at `GATHER_STRIDE` per gather.
    out: wgpu::Buffer,
}

impl StatusGather {
    /// The gather, or `None` where the device cannot bind its 17 storage buffers (reads then
    /// copy slot by slot). An error compiling it fails engine creation, as the reset's does.
    pub fn new(
        pipelines: &PipelineCache,
        device: &wgpu::Device,
        limits: &wgpu::Limits,
    ) -> Result<Option<StatusGather>> {
        #[cfg(test)]
        if tests::NO_GATHER.load(std::sync::atomic::Ordering::Relaxed) {
            return Ok(None);
        }
        if limits.max_storage_buffers_per_shader_stage < STORAGE_BINDINGS
            || limits.max_bindings_per_bind_group < GATHER_SLOTS as u32
        {
            return Ok(None);
        }
        let compiled = pipelines.get(&GATHER, &[])?;
        let storage = |label, size| {
            device.create_buffer(&wgpu::BufferDescriptor {
                label: Some(label),
                size,
                usage: wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_SRC,
                mapped_at_creation: false,
            })
        };
        let placeholders = (1..GATHER_SLOTS)
            .map(|_| storage("bitnet-wgpu status gather placeholder", STATUS_BYTES))
            .collect();
        let gathers = u64::from(STATUS_SLOTS).div_ceil(GATHER_SLOTS as u64);
        let out = storage("bitnet-wgpu status gather", gathers * GATHER_STRIDE);
        Ok(Some(StatusGather {
            compiled,
            placeholders,
            out,
        }))
    }

    /// Encodes the copy-out of `slots` (at most every slot once) into `staging` from byte
    /// `offset` on, `STATUS_BYTES` per slot in order, leaving every slot clean: one compute pass
    /// of gathers, then one copy.
    pub fn encode(
        &self,
        gpu: &Gpu,
        enc: &mut wgpu::CommandEncoder,
        slots: &[u32],
        staging: &wgpu::Buffer,
        offset: u64,
    ) {
        if slots.is_empty() {
            return;
        }
        let mut pass = enc.begin_compute_pass(&wgpu::ComputePassDescriptor {
            label: Some("bitnet-wgpu status gathers"),
            timestamp_writes: None,
        });
        pass.set_pipeline(&self.compiled.pipeline);
        let offsets: &[u32] = match gpu.caps.params_mode {
            ParamsMode::Uniform => &[0, 0],
            ParamsMode::Immediates => &[0],
        };
        if gpu.caps.params_mode == ParamsMode::Immediates {
            pass.set_immediates(0, &[0; crate::device::PARAMS_MAX_BYTES as usize]);
        }
        let slot_buffers = &gpu.group.status.slots;
        for (g, chunk) in slots.chunks(GATHER_SLOTS).enumerate() {
            let rest = (1..GATHER_SLOTS).map(|i| match chunk.get(i) {
                Some(&s) => &slot_buffers[s as usize],
                None => &self.placeholders[i - 1],
            });
            let mut entries: Vec<wgpu::BindGroupEntry<'_>> = rest
                .enumerate()
                .map(|(b, buffer)| wgpu::BindGroupEntry {
                    binding: b as u32,
                    resource: buffer.as_entire_binding(),
                })
                .collect();
            entries.push(wgpu::BindGroupEntry {
                binding: GATHER_SLOTS as u32 - 1,
                resource: wgpu::BindingResource::Buffer(wgpu::BufferBinding {
                    buffer: &self.out,
                    offset: g as u64 * GATHER_STRIDE,
                    size: wgpu::BufferSize::new(chunk.len() as u64 * STATUS_BYTES),
                }),
            });
            // Inside the submission's validation scope (`encode::submit`), as every command.
            let group0 = gpu.device.create_bind_group(&wgpu::BindGroupDescriptor {
                label: Some("bitnet-wgpu status gather"),
                layout: &self.compiled.group0,
                entries: &entries,
            });
            pass.set_bind_group(0, &group0, &[]);
            pass.set_bind_group(1, &gpu.group.bind_groups[chunk[0] as usize], offsets);
            pass.dispatch_workgroups(chunk.len() as u32, 1, 1);
        }
        drop(pass);
        // The gathers' words are GATHER_STRIDE apart per 16 slots, i.e. contiguous: 16 slots
        // fill exactly 256 bytes.
        const _: () = assert!(GATHER_SLOTS as u64 * STATUS_BYTES == GATHER_STRIDE);
        let bytes = slots.len() as u64 * STATUS_BYTES;
        enc.copy_buffer_to_buffer(&self.out, 0, staging, offset, bytes);
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicBool, Ordering};

    use crate::BinaryOp;
    use crate::engine::{Engine, EngineOptions};
    use crate::error::Error;

    /// Engines created while set have no gather (a device below its binding limits): reads copy
    /// slot by slot. Other tests creating engines meanwhile only take the other correct path.
    pub(super) static NO_GATHER: AtomicBool = AtomicBool::new(false);

    fn engine(gather: bool) -> Engine {
        // The two tests of this module must not see each other's setting.
        static CREATING: std::sync::Mutex<()> = std::sync::Mutex::new(());
        let _creating = CREATING.lock().unwrap_or_else(|p| p.into_inner());
        NO_GATHER.store(!gather, Ordering::Relaxed);
        let e = crate::test_gpu::gpu_with(EngineOptions {
            idle_flush: None,
            ..Default::default()
        });
        NO_GATHER.store(false, Ordering::Relaxed);
        assert_eq!(
            e.gpu_context().unwrap().status_gather.is_some(),
            gather,
            "every test adapter binds 17 storage buffers"
        );
        e
    }

    /// A read after 40 dependent checked launches (through the gather: 16 + 16 + 8 slots)
    /// reports the first flagged launch, whichever it is, so wherever its slot falls in a gather
    /// — the first slot of a gather is bound in group 1, the others in group 0 — and leaves
    /// every slot it copied out clean (on CPU adapters also without the gather): a clean chain
    /// after the flagged ones, on the same slots, reads clean (a stale flag would fail it).
    fn reads_report_the_first_flagged_launch(e: &Engine) {
        let gpu = e.gpu_context().unwrap();
        for flagged in std::iter::once(None)
            .chain((0..40).map(Some))
            .chain(std::iter::once(None))
        {
            // Launch j adds b_j; b_flagged holds an infinity: launch `flagged` is the first to
            // flag (its input "b"), every later one flags its input "a".
            let addends: Vec<_> = (0..40)
                .map(|j| {
                    let mut b = vec![0.5f32; 8];
                    if flagged == Some(j) {
                        b[3] = f32::INFINITY;
                    }
                    e.upload_f32(&b, &[8]).unwrap()
                })
                .collect();
            let mut y = e.upload_f32(&[1.0; 8], &[8]).unwrap();
            e.sync().unwrap();
            for b in &addends {
                y = e.binary(BinaryOp::Add, &y, b).unwrap();
            }
            let got = y.read_f32();
            match flagged {
                None => assert_eq!(got.unwrap(), vec![21.0; 8]),
                Some(j) => assert!(
                    matches!(
                        got,
                        Err(Error::NonFinite {
                            tensor: "b",
                            index: 3,
                            ..
                        })
                    ),
                    "flagged launch {j}: {got:?}"
                ),
            }
            if crate::status::copy_out_cleans(gpu) {
                let (_, dirty) = gpu.slots.free();
                assert_eq!(
                    dirty, 0,
                    "flagged {flagged:?}: the read left slots to reset"
                );
            }
        }
    }

    #[test]
    fn a_read_gathers_every_slot_of_its_lineage_and_leaves_them_clean() {
        reads_report_the_first_flagged_launch(&engine(true));
    }

    #[test]
    fn without_the_gather_reads_copy_slot_by_slot() {
        reads_report_the_first_flagged_launch(&engine(false));
    }
}
