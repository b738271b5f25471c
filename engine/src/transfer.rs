//! Host ↔ device transfers: uploads, read-backs and sync points.
//!
//! Every read-back is a sync point: pending dispatches are submitted together with the copy into
//! a pooled staging buffer and the copy-out of the status slots of the tensor's lineage (only
//! those: see `fate.rs`), then the engine waits, stores each launch's result in its fate, and
//! returns the data only if no launch the tensor depends on failed.
//! Read-backs go through staging chunks of at most [`READBACK_CHUNK`] bytes, so staging memory
//! stays bounded. Issue 4 splits `read` into "record + submit" (a ticket) and "await ticket".

use std::sync::Arc;

use crate::batch::StatusTicket;
use crate::context::Gpu;
use crate::error::{Error, Result};
use crate::fate::{Fate, Outcome, first_error};
use crate::pool::BufferKind;

/// Largest staging buffer of one read-back step.
pub(crate) const READBACK_CHUNK: u64 = 64 << 20;

/// Writes `bytes` at `offset` of `dst`, after submitting pending work (a pooled buffer may still be
/// read by recorded dispatches, and `queue.write_buffer` runs before the next submit's commands).
pub(crate) fn write(gpu: &Gpu, dst: &wgpu::Buffer, offset: u64, bytes: &[u8]) -> Result<()> {
    gpu.check_health()?;
    let mut batch = gpu.batch();
    batch.flush(gpu)?;
    let scope = gpu.device.push_error_scope(wgpu::ErrorFilter::OutOfMemory);
    if bytes.len().is_multiple_of(4) {
        gpu.queue.write_buffer(dst, offset, bytes);
    } else {
        let mut padded = bytes.to_vec();
        padded.resize(bytes.len().next_multiple_of(4), 0);
        gpu.queue.write_buffer(dst, offset, &padded);
    }
    match pollster::block_on(scope.pop()) {
        Some(e) => Err(crate::error::from_wgpu(
            e,
            format!("uploading {} bytes", bytes.len()),
        )),
        None => Ok(()),
    }
}

/// Reads `len` bytes at `offset` of `src` (a sync point; see the module docs), then resolves the
/// fates of `lineage` — the launches the bytes depend on — and returns the earliest error among
/// them instead of the bytes if one failed. The status slots of `lineage` are copied out in the
/// same submission as the first chunk of data; fates another read is resolving are waited for.
pub(crate) fn read(
    gpu: &Gpu,
    src: &wgpu::Buffer,
    offset: u64,
    len: u64,
    lineage: &[Arc<Fate>],
) -> Result<Vec<u8>> {
    if let Some(e) = first_error(lineage) {
        return Err(e);
    }
    let mut out = Vec::with_capacity(len as usize);
    let mut done = 0;
    let mut first = true;
    while done < len || first {
        let n = (len - done).min(READBACK_CHUNK);
        let n4 = n.next_multiple_of(4);
        let staging = match n {
            0 => None,
            _ => Some(
                gpu.pool
                    .alloc(BufferKind::Readback, n4, "read-back staging")?,
            ),
        };
        let owner = Fate::new(gpu.next_seq(), None, &gpu.slots);
        let (index, ticket) = {
            let mut batch = gpu.batch();
            if let Some(s) = &staging {
                batch.copy(src, offset + done, s.buffer(), n4, &owner);
            }
            let ticket = match first {
                true => batch.take_status(gpu, lineage)?,
                false => None,
            };
            (batch.flush(gpu)?, ticket)
        };
        first = false;
        if let Some(index) = index {
            if let Some(t) = ticket {
                finish_status(gpu, t, index.clone())?;
            }
            if let Some(s) = &staging {
                if let Some(e) = first_error(std::slice::from_ref(&owner)) {
                    return Err(e);
                }
                out.extend_from_slice(&map_bytes(gpu, s.buffer(), n, index)?);
            }
        }
        done += n;
    }
    resolve(gpu, lineage)?;
    Ok(out)
}

/// Resolves every fate of `lineage` (copying out the status slots still pending, waiting for the
/// ones another read is resolving) and returns the earliest error among them.
pub(crate) fn resolve(gpu: &Gpu, lineage: &[Arc<Fate>]) -> Result<()> {
    // A fate can only be pending here if a copy-out was not executed; retry a bounded number of
    // times, then report it rather than loop.
    for _ in 0..3 {
        let mut pending = false;
        for f in lineage {
            match f.outcome() {
                Outcome::Reading(done) => {
                    // Disconnects once the other read stored the result in the fate.
                    let _ = done.recv();
                }
                Outcome::Pending => pending = true,
                Outcome::Known(_) => {}
            }
        }
        if !pending {
            return first_error(lineage).map_or(Ok(()), Err);
        }
        let (index, ticket) = {
            let mut batch = gpu.batch();
            let ticket = batch.take_status(gpu, lineage)?;
            (batch.flush(gpu)?, ticket)
        };
        if let (Some(t), Some(i)) = (ticket, index) {
            finish_status(gpu, t, i)?;
        }
    }
    first_error(lineage).map_or(
        Err(Error::Map(
            "the status of a launch could not be read back".into(),
        )),
        Err,
    )
}

/// Submits pending work, waits for it, and reports device errors: a lost device, and errors
/// no error scope caught (which belong to no tensor). Non-finite values are reported by reading
/// the tensors they flowed into, never here.
pub(crate) fn sync(gpu: &Gpu) -> Result<()> {
    let index = gpu.batch().flush(gpu)?;
    if let Some(index) = index {
        wait(gpu, index)?;
    }
    gpu.check_health()?;
    gpu.take_uncaptured().map_or(Ok(()), Err)
}

/// Waits for `ticket`'s submission and stores each copied-out slot's result in its own fate.
pub(crate) fn finish_status(
    gpu: &Gpu,
    ticket: StatusTicket,
    index: wgpu::SubmissionIndex,
) -> Result<()> {
    match map_bytes(gpu, ticket.staging.buffer(), ticket.bytes, index) {
        Ok(bytes) => {
            ticket.resolver.resolve(&bytes);
            Ok(())
        }
        Err(e) => {
            ticket.resolver.fail(&e);
            Err(e)
        }
    }
}

/// Maps the first `len` bytes of `buffer` once `index` completed, copies them out and unmaps.
fn map_bytes(
    gpu: &Gpu,
    buffer: &wgpu::Buffer,
    len: u64,
    index: wgpu::SubmissionIndex,
) -> Result<Vec<u8>> {
    let len4 = len.next_multiple_of(4);
    let slice = buffer.slice(0..len4);
    map_and_wait(gpu, &slice, index)?;
    let view = slice
        .get_mapped_range()
        .map_err(|e| Error::Map(e.to_string()))?;
    let out = view[..len as usize].to_vec();
    drop(view);
    buffer.unmap();
    Ok(out)
}

/// Blocks until `index` completed.
fn wait(gpu: &Gpu, index: wgpu::SubmissionIndex) -> Result<()> {
    gpu.device
        .poll(wgpu::PollType::Wait {
            submission_index: Some(index),
            timeout: None,
        })
        .map(|_| ())
        .map_err(|e| {
            gpu.check_health()
                .err()
                .unwrap_or_else(|| Error::DeviceLost(format!("poll failed: {e}")))
        })
}

/// Maps `slice` for reading once `index` completed.
fn map_and_wait(
    gpu: &Gpu,
    slice: &wgpu::BufferSlice<'_>,
    index: wgpu::SubmissionIndex,
) -> Result<()> {
    let (tx, rx) = flume::bounded(1);
    slice.map_async(wgpu::MapMode::Read, move |r| {
        let _ = tx.send(r);
    });
    wait(gpu, index)?;
    // On a shared engine another thread's poll may be the one running this callback, a moment
    // after our wait returned: give it time instead of reporting a spurious failure.
    match rx.recv_timeout(std::time::Duration::from_secs(10)) {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => Err(Error::Map(e.to_string())),
        Err(_) => {
            gpu.check_health()?;
            Err(Error::Map("map callback did not run after the wait".into()))
        }
    }
}
