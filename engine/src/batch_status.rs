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

/// The status slots a read claimed ([`Fate::begin_read`]), until its [`StatusTicket`] takes
/// them over. Dropped before that — an error, or a panic unwinding out of
/// [`Batch::take_status`] (inside wgpu's allocation, an engine bug) — it gives every claim back:
/// left `Reading` under a claim whose `done` channel has disconnected and that no resolver will
/// ever finish, the fates would make every later read of their tensors loop for ever.
struct Claims(Vec<(Arc<Fate>, u32)>);

impl Drop for Claims {
    fn drop(&mut self) {
        for (f, s) in self.0.drain(..) {
            f.revert_read(s);
        }
    }
}

impl Batch {
    /// Records the copy-out of the status slots of `fates` that are pending with a
    /// slot; `None` when there is none. Once the batch is submitted the slots are clean, or dirty
    /// until a later flush's reset pass (`status::copy_out_cleans`).
    pub fn take_status(&mut self, gpu: &Gpu, fates: &[Arc<Fate>]) -> Result<Option<StatusTicket>> {
        let (done_tx, done_rx) = crate::oneshot::channel::<()>();
        // Declared after the channel, so an early exit reverts the claims before `done_tx`
        // drops: readers woken by the disconnect find the fates pending again.
        let mut claims = Claims(Vec::new());
        for f in fates {
            if let Some(s) = f.begin_read(&done_rx) {
                claims.0.push((Arc::clone(f), s));
            }
        }
        if claims.0.is_empty() {
            return Ok(None);
        }
        let bytes = claims.0.len() as u64 * STATUS_BYTES;
        gpu.faults.panic_in_status_if_armed();
        let staging = gpu
            .pool
            .alloc(BufferKind::Readback, bytes, "status read-back")?;
        for (i, (f, s)) in claims.0.iter().enumerate() {
            self.cmds.push(Cmd::StatusOut {
                slot: *s,
                staging: staging.buffer().clone(),
                offset: i as u64 * STATUS_BYTES,
                fate: Arc::clone(f),
            });
        }
        // The ticket's resolver takes the claims over (it fails them if dropped unresolved).
        let entries = std::mem::take(&mut claims.0)
            .into_iter()
            .map(|(f, _)| f)
            .collect();
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
