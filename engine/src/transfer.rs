//! Host ↔ device transfers: uploads, read-backs and sync points.
//!
//! Every read-back is a sync point: pending dispatches are submitted together with the copy into
//! a pooled staging buffer and the status-slot copy-out, then the engine waits, checks the
//! non-finite status, uncaptured errors and device health, and only then returns data.
//! Read-backs go through staging chunks of at most [`READBACK_CHUNK`] bytes, so staging memory
//! stays bounded. Issue 4 splits `read` into "record + submit" (a ticket) and "await ticket".

use crate::batch::StatusTicket;
use crate::context::Gpu;
use crate::error::{Error, Result};
use crate::pool::BufferKind;
use crate::status::StatusLog;

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

/// Reads `len` bytes at `offset` of `src` (a sync point; see the module docs).
pub(crate) fn read(gpu: &Gpu, src: &wgpu::Buffer, offset: u64, len: u64) -> Result<Vec<u8>> {
    let mut out = Vec::with_capacity(len as usize);
    let mut done = 0;
    let mut first = true;
    while done < len || first {
        let n = (len - done).min(READBACK_CHUNK);
        let n4 = n.next_multiple_of(4);
        let staging = if n > 0 {
            Some(
                gpu.pool
                    .alloc(BufferKind::Readback, n4, "read-back staging")?,
            )
        } else {
            None
        };
        let (index, ticket) = {
            let mut batch = gpu.batch();
            if let Some(s) = &staging {
                let enc = batch.encoder(gpu);
                enc.copy_buffer_to_buffer(src, offset + done, s.buffer(), 0, n4);
            }
            let ticket = if first { batch.take_status(gpu)? } else { None };
            let pending = if first {
                batch.pending_error.take()
            } else {
                None
            };
            let index = batch.flush(gpu)?;
            if let Some(e) = pending {
                return Err(e);
            }
            (index, ticket)
        };
        first = false;
        if let Some(index) = index.clone() {
            if let Some(t) = ticket
                && let Some(e) = decode_status(gpu, t, index.clone())?
            {
                return Err(e);
            }
            if let Some(s) = &staging {
                let slice = s.buffer().slice(0..n4);
                map_and_wait(gpu, &slice, index)?;
                let view = slice
                    .get_mapped_range()
                    .map_err(|e| Error::Map(e.to_string()))?;
                out.extend_from_slice(&view[..n as usize]);
                drop(view);
                s.buffer().unmap();
            }
        }
        done += n;
    }
    after_sync(gpu)?;
    Ok(out)
}

/// Submits pending work, waits for it, and reports non-finite flags and uncaptured errors.
pub(crate) fn sync(gpu: &Gpu) -> Result<()> {
    let (index, ticket, pending) = {
        let mut batch = gpu.batch();
        let ticket = batch.take_status(gpu)?;
        let pending = batch.pending_error.take();
        (batch.flush(gpu)?, ticket, pending)
    };
    if let Some(e) = pending {
        return Err(e);
    }
    if let Some(index) = index {
        if let Some(t) = ticket
            && let Some(e) = decode_status(gpu, t, index.clone())?
        {
            return Err(e);
        }
        wait(gpu, index)?;
    }
    after_sync(gpu)
}

/// Health and uncaptured-error check that ends every sync point.
fn after_sync(gpu: &Gpu) -> Result<()> {
    gpu.check_health()?;
    gpu.take_uncaptured().map_or(Ok(()), Err)
}

/// Waits for `ticket`'s submission and decodes its status slots.
pub(crate) fn decode_status(
    gpu: &Gpu,
    ticket: StatusTicket,
    index: wgpu::SubmissionIndex,
) -> Result<Option<Error>> {
    let slice = ticket.staging.buffer().slice(0..ticket.bytes);
    map_and_wait(gpu, &slice, index)?;
    let view = slice
        .get_mapped_range()
        .map_err(|e| Error::Map(e.to_string()))?;
    let err = StatusLog::decode(&ticket.checks, &view, gpu.group.status.stride);
    drop(view);
    ticket.staging.buffer().unmap();
    Ok(err)
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
