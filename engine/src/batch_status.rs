//! The read side of the pending batch: a read records the copy-out of its lineage's status
//! slots ([`Batch::take_status`]) and flushes it with its data copy ([`Batch::flush_read`]).

use std::sync::Arc;

use super::{Batch, Cmd};
use crate::context::Gpu;
use crate::error::Result;
use crate::fate::{Fate, StatusResolver};
use crate::group::STATUS_BYTES;
use crate::pool::{BufferKind, PooledBuffer};

/// Status slots copied out by a read, to decode once its submission completed.
pub(crate) struct StatusTicket {
    pub resolver: StatusResolver,
    pub staging: PooledBuffer,
    pub bytes: u64,
}

impl Batch {
    /// Records the copy-out (and reset) of the status slots of `fates` that are pending with a
    /// slot; `None` when there is none. The slots are clean once the batch is submitted.
    pub fn take_status(&mut self, gpu: &Gpu, fates: &[Arc<Fate>]) -> Result<Option<StatusTicket>> {
        let (done_tx, done_rx) = flume::bounded::<()>(1);
        let mut claimed = Vec::new();
        for f in fates {
            if let Some(s) = f.begin_read(&done_rx) {
                claimed.push((Arc::clone(f), s));
            }
        }
        if claimed.is_empty() {
            return Ok(None);
        }
        let bytes = claimed.len() as u64 * STATUS_BYTES;
        let staging = match gpu
            .pool
            .alloc(BufferKind::Readback, bytes, "status read-back")
        {
            Ok(s) => s,
            Err(e) => {
                for (f, s) in &claimed {
                    f.revert_read(*s);
                }
                return Err(e);
            }
        };
        for (i, (f, s)) in claimed.iter().enumerate() {
            self.cmds.push(Cmd::StatusOut {
                slot: *s,
                staging: staging.buffer().clone(),
                offset: i as u64 * STATUS_BYTES,
                fate: Arc::clone(f),
            });
        }
        let entries = claimed.into_iter().map(|(f, _)| f).collect();
        Ok(Some(StatusTicket {
            resolver: StatusResolver::new(entries, done_tx, &done_rx, STATUS_BYTES),
            staging,
            bytes,
        }))
    }

    /// [`Batch::flush`] for a read that just recorded its status copy-outs (`ticket`) and its
    /// data copy (resolving `owner`). A flush that panics before it took the batch (an engine
    /// bug, or one inside wgpu) leaves those commands recorded, never run: they are taken back,
    /// the copied-out fates pending again, so the panic fails this read alone. Left queued, the
    /// copy-outs would run at the next flush and reset the slots while the dropped ticket failed
    /// their fates as a lost read-back: the tensors would read as that error for good.
    pub fn flush_read(
        &mut self,
        gpu: &Gpu,
        ticket: Option<&StatusTicket>,
        owner: Option<&Arc<Fate>>,
    ) -> Result<Option<wgpu::SubmissionIndex>> {
        match crate::scheduler::guarded(|| self.flush(gpu)) {
            Ok(flushed) => flushed,
            Err(panic) => {
                self.cmds.retain(|c| match c {
                    Cmd::StatusOut {
                        slot,
                        staging,
                        fate,
                        ..
                    } if ticket.is_some_and(|t| t.staging.buffer() == staging) => {
                        fate.revert_read(*slot);
                        false
                    }
                    Cmd::Copy { owner: o, .. } => !owner.is_some_and(|w| Arc::ptr_eq(w, o)),
                    _ => true,
                });
                Err(panic)
            }
        }
    }
}
