//! The upload staging ring: `depth` (≥ 2) host-mapped `MAP_WRITE | COPY_SRC` buffers that take
//! turns. The host writes chunk *i* into a mapped slot while the GPU still copies from (and
//! computes on) the slots of earlier chunks; after the submission that copies slot *s* out, the
//! slot is mapped again (`map_async`) and is ready for chunk *i + depth* once that submission
//! completed. Large writes are split across CPU threads (mapped memory is written in place).
//!
//! One ring is kept per engine (buffers are reused across streams) and lent to one stream at a
//! time; a concurrent stream builds its own.

use std::time::{Duration, Instant};

use rayon::prelude::*;

use crate::context::Gpu;
use crate::error::{Error, Result};

/// Slots of a ring.
pub(crate) const RING_DEPTH: usize = 3;
/// Below this many bytes a slot is written by one thread.
const PARALLEL_COPY_MIN: usize = 4 << 20;
/// Most threads writing one slot: on the H200 host (16 cores) 16 threads wrote the staging ring
/// slower than 8 (22-23 against 24-25 GB/s, and less steady).
const COPY_THREADS: usize = 8;

/// One staging buffer.
struct Slot {
    buffer: wgpu::Buffer,
    /// Pending re-map after a submission; `None` when mapped and writable, or when `written`.
    remap: Option<flume::Receiver<std::result::Result<(), wgpu::BufferAsyncError>>>,
    /// Unmapped by a write and not recycled yet. A caller that failed between its write and
    /// its recycle leaves a slot this way; the next write to the slot maps it again.
    written: bool,
}

/// The ring (see the module docs).
#[derive(Default)]
pub(crate) struct UploadRing {
    slots: Vec<Slot>,
    next: usize,
}

impl UploadRing {
    /// Bytes of the ring's staging buffers (each as large as the largest chunk it carried).
    pub fn bytes(&self) -> u64 {
        self.slots.iter().map(|s| s.buffer.size()).sum()
    }

    /// Writes `bytes` (a multiple of 4) into the next slot and unmaps it; returns the slot index
    /// and its buffer, to be copied from by the next submission and then [`Self::recycle`]d.
    /// `waited` accumulates the time spent waiting for the slot to be free.
    pub fn write(
        &mut self,
        gpu: &Gpu,
        bytes: &[u8],
        waited: &mut Duration,
    ) -> Result<(usize, wgpu::Buffer)> {
        let i = self.next;
        let need = (bytes.len() as u64)
            .next_multiple_of(wgpu::COPY_BUFFER_ALIGNMENT)
            .max(4);
        if self.slots.len() <= i {
            self.slots.push(Slot::new(gpu, need)?);
        }
        // Only once slot `i` exists: a failed creation must not skip an index (slots are pushed
        // in order, so `next` never passes their count).
        self.next = (i + 1) % RING_DEPTH;
        if self.slots[i].written {
            // Left written by a caller that failed before recycling it: a copy out of it may
            // still be recorded, so it is mapped again only behind a submission.
            self.recycle_after_submit(gpu, i)?;
        }
        let slot = &mut self.slots[i];
        let t = Instant::now();
        let mapped = slot.wait_mapped(gpu);
        *waited += t.elapsed();
        if let Err(e) = mapped {
            // The re-map failed or never ran (its job panicked, or the submission thread
            // stopped): the buffer is not mapped, and handing it out would fail this copy and
            // unmap an unmapped buffer (an uncaptured validation error that fails some later,
            // unrelated sync). A fresh slot replaces it, unless the device is gone.
            gpu.check_health()?;
            log::warn!("bitnet-wgpu: upload staging slot {i} replaced ({e})");
            *slot = Slot::new(gpu, need)?;
        }
        if slot.buffer.size() < need {
            // The new buffer first: if it cannot be made, the old slot stays mapped and usable.
            *slot = Slot::new(gpu, need)?;
        }
        if let Err(e) = copy_parallel(&slot.buffer, bytes) {
            // Not mapped after all (never unmap it then): once more into a fresh slot.
            gpu.check_health()?;
            log::warn!("bitnet-wgpu: upload staging slot {i} replaced ({e})");
            *slot = Slot::new(gpu, need)?;
            copy_parallel(&slot.buffer, bytes)?;
        }
        slot.buffer.unmap();
        slot.written = true;
        Ok((i, slot.buffer.clone()))
    }

    /// Slot `i` mapped again for its next chunk once its copy is submitted, without waiting for
    /// that here: a job posted behind the chunk's commands submits everything recorded so far
    /// and then maps the slot (`map_async` may not see an unsubmitted use of the buffer). The
    /// writer goes on to its next chunk meanwhile; the slot's next write waits for the map as
    /// it waits for any recycled slot. A failed submission is reported by the reads of what the
    /// chunk computed (their fates), not here; a stopped submission thread is an error, and the
    /// slot is then left to the next write's own recycle.
    pub fn recycle_after_submit(&mut self, gpu: &Gpu, i: usize) -> Result<()> {
        let Some(slot) = self.slots.get_mut(i).filter(|s| s.written) else {
            return Ok(());
        };
        let (tx, rx) = flume::bounded(1);
        let buffer = slot.buffer.clone();
        gpu.scheduler.post(Box::new(move |b, g| {
            // Whether or not the flush succeeded, nothing recorded is pending any more.
            if let Err(e) = b.flush(g) {
                log::debug!("bitnet-wgpu: staging slot recycled after a failed submit ({e})");
            }
            map_for_write(&buffer, tx);
        }))?;
        slot.written = false;
        slot.remap = Some(rx);
        Ok(())
    }

    /// After the submission that copies slot `i` out: map it again for its next chunk. Only a
    /// written slot is mapped again (recycling twice is harmless).
    pub fn recycle(&mut self, i: usize) {
        let Some(slot) = self.slots.get_mut(i).filter(|s| s.written) else {
            return;
        };
        slot.written = false;
        let (tx, rx) = flume::bounded(1);
        map_for_write(&slot.buffer, tx);
        slot.remap = Some(rx);
    }
}

/// Maps a staging slot's buffer for writing again; `done` gets the map's outcome.
fn map_for_write(
    buffer: &wgpu::Buffer,
    done: flume::Sender<std::result::Result<(), wgpu::BufferAsyncError>>,
) {
    buffer.map_async(wgpu::MapMode::Write, .., move |r| {
        let _ = done.send(r);
    });
}

impl Slot {
    /// A slot of `size` bytes, mapped at creation.
    fn new(gpu: &Gpu, size: u64) -> Result<Slot> {
        crate::chunk::check_buffer(gpu, "upload staging", size)?;
        let scope = gpu.device.push_error_scope(wgpu::ErrorFilter::OutOfMemory);
        let buffer = gpu.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("bitnet-wgpu upload ring"),
            size,
            usage: wgpu::BufferUsages::MAP_WRITE | wgpu::BufferUsages::COPY_SRC,
            mapped_at_creation: true,
        });
        if let Some(e) = pollster::block_on(scope.pop()) {
            return Err(crate::error::from_wgpu(
                e,
                format!("allocating {size} bytes of upload staging"),
            ));
        }
        Ok(Slot {
            buffer,
            remap: None,
            written: false,
        })
    }

    /// Blocks until the slot is mapped again (polling the device so its callback runs).
    fn wait_mapped(&mut self, gpu: &Gpu) -> Result<()> {
        let Some(rx) = self.remap.take() else {
            return Ok(());
        };
        loop {
            match rx.recv_timeout(Duration::from_millis(1)) {
                Ok(Ok(())) => return Ok(()),
                Ok(Err(e)) => return Err(gpu.explain(Error::Map(e.to_string()))),
                Err(flume::RecvTimeoutError::Disconnected) => {
                    return Err(gpu.explain(Error::Map("staging re-map was dropped".into())));
                }
                Err(flume::RecvTimeoutError::Timeout) => {
                    gpu.check_health()?;
                    let _ = crate::wait::poll_guarded("caller", &gpu.device);
                }
            }
        }
    }
}

/// Copies `src` (a multiple of 4 bytes) into the mapped `buffer`, split across up to
/// [`COPY_THREADS`] threads of rayon's pool when large (each maps its own disjoint, 64-byte
/// aligned range). The pool's threads are already running: on the H200 host uploads through the
/// ring ran at 25.8-27.0 GB/s this way against 23.7-24.4 GB/s with eight threads spawned per
/// chunk.
fn copy_parallel(buffer: &wgpu::Buffer, src: &[u8]) -> Result<()> {
    let copy = |at: usize, part: &[u8]| -> Result<()> {
        let range = at as u64..(at + part.len()) as u64;
        let mut view = buffer
            .slice(range)
            .get_mapped_range_mut()
            .map_err(|e| Error::Map(e.to_string()))?;
        view.copy_from_slice(part);
        Ok(())
    };
    let threads = rayon::current_num_threads().min(COPY_THREADS);
    if src.len() < PARALLEL_COPY_MIN || threads < 2 {
        return copy(0, src);
    }
    let part = src.len().div_ceil(threads).next_multiple_of(64);
    src.par_chunks(part)
        .enumerate()
        .try_for_each(|(i, chunk)| copy(i * part, chunk))
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::UploadRing;
    use crate::engine::EngineOptions;
    use crate::error::Error;

    /// A GPU engine that submits only when asked (no idle flush).
    fn engine() -> crate::Engine {
        crate::test_gpu::gpu_with(EngineOptions {
            idle_flush: None,
            ..Default::default()
        })
    }

    /// A write whose slot cannot be made (here: above `max_buffer_size`) is an error, and the
    /// ring stays usable: the next write gets a slot instead of indexing past the slots made.
    #[test]
    fn a_failed_slot_creation_leaves_the_ring_usable() {
        let e = engine();
        let g = e.gpu_context().unwrap();
        let mut ring = UploadRing::default();
        let mut waited = Duration::ZERO;
        // Zeroed and never touched: only its length matters.
        let too_big = vec![0u8; usize::try_from(g.caps.max_buffer + 4).unwrap()];
        let got = ring.write(g, &too_big, &mut waited);
        assert!(
            matches!(got, Err(Error::LimitExceeded { .. })),
            "{:?}",
            got.map(|(i, _)| i)
        );
        drop(too_big);
        let (slot, buffer) = ring.write(g, &[7u8; 64], &mut waited).unwrap();
        assert!(buffer.size() >= 64);
        ring.recycle(slot);
    }

    /// A slot whose re-map never ran — its recycle job panicked (an injected job panic in the
    /// flush before the map) — is replaced by its next write, which succeeds and uploads the
    /// bytes; nothing unmaps an unmapped buffer, so the next sync reports no validation error.
    #[test]
    fn a_slot_whose_remap_never_ran_is_replaced() {
        let e = engine();
        let g = e.gpu_context().unwrap();
        let mut ring = UploadRing::default();
        let mut waited = Duration::ZERO;
        let (slot, _) = ring.write(g, &[1u8; 64], &mut waited).unwrap();
        e.inject_fault(crate::fault::InjectedFault::JobPanic);
        ring.recycle_after_submit(g, slot).unwrap();
        ring.next = slot;
        let bytes: Vec<u8> = (0..64).collect();
        let (again, buffer) = ring.write(g, &bytes, &mut waited).unwrap();
        assert_eq!(again, slot);
        // The write landed: copy the slot into a device tensor and read it back.
        let t = e.upload_u32(&[0; 16], &[16]).unwrap();
        let crate::tensor::Storage::Device(dst) = t.data() else {
            panic!("a GPU engine's upload is a device tensor")
        };
        let mut enc = g.device.create_command_encoder(&Default::default());
        enc.copy_buffer_to_buffer(&buffer, 0, dst.buffer(), 0, 64);
        g.queue.submit([enc.finish()]);
        ring.recycle(again);
        assert_eq!(t.read_bytes().unwrap(), bytes);
        e.sync().unwrap();
        // And the slot goes on working.
        ring.next = slot;
        ring.write(g, &[9u8; 64], &mut waited).unwrap();
        ring.recycle(slot);
        e.sync().unwrap();
    }
}
