//! The pending command batch (owned by the submission thread, `scheduler.rs`): dispatches and copies are recorded as a list of commands and encoded
//! into one command encoder when the batch is submitted (at sync points, or when it is full:
//! `EngineOptions::first_batch_dispatches` after a sync point, doubling per full batch up to
//! `EngineOptions::batch_dispatches`).
//!
//! Keeping the commands (not only an encoder) is what lets a failed submission lose nothing that
//! did not fail: when the whole batch is rejected (validation, out of memory), every command is
//! re-submitted on its own, so only the commands that fail by themselves fail — their launches'
//! fates carry the error to exactly the tensors computed from them (`fate.rs`), and everything
//! else in the batch (other callers' work) runs as if nothing happened.
//!
//! Status slots (`status.rs`): dispatches only ever get clean slots, so no reset sits between
//! them, and no slot is bound twice in a batch. A flush takes the dirty slots (given back
//! unread, or held by unchecked launches) once resetting is due — a quarter of the slots dirty,
//! or few clean (`SlotPool::take_dirty_if_due`) — and appends their resets at the end of its
//! batch ([`Cmd::Reset`], one pass of reset dispatches): after every dispatch that may still
//! write them. They turn clean when that submission is committed; a reset that fails (in
//! isolation) leaves its slots dirty for a later flush.

use std::sync::Arc;

use crate::context::Gpu;
use crate::device::{PARAMS_MAX_BYTES, ParamsMode};
use crate::encode::{describe, submit};
use crate::error::{Error, Result};
use crate::fate::Fate;
use crate::pipelines::Compiled;
use crate::profiler::ProfilerState;

#[path = "batch_status.rs"]
mod status_out;
pub(crate) use status_out::StatusTicket;

/// One dispatch, ready to record.
pub(crate) struct Dispatch {
    pub kernel: &'static str,
    pub compiled: Arc<Compiled>,
    pub group0: wgpu::BindGroup,
    pub params: [u8; PARAMS_MAX_BYTES as usize],
    pub groups: [u32; 3],
    /// The launch's fate (its status slot is assigned when recorded, if it checks values).
    pub fate: Arc<Fate>,
    /// Fault injection: follow the dispatch with an out-of-bounds copy (a real validation error).
    pub invalid: bool,
}

impl Dispatch {
    /// Hands the dispatch to the submission thread, which records it; a failure to record
    /// (the device was lost meanwhile, say, or the recording panicked) fails the launch's fate.
    pub fn post(self, gpu: &Gpu) -> Result<()> {
        let fate = Arc::clone(&self.fate);
        gpu.scheduler.post(Box::new(move |batch, g| {
            let recorded = crate::scheduler::guarded(|| batch.record(g, self));
            if let Err(e) = recorded.and_then(|r| r) {
                fate.resolve(Some(e));
            }
        }))
    }
}

/// A recorded command (encoded at submit time by `encode.rs`).
pub(crate) enum Cmd {
    Dispatch {
        d: Dispatch,
        /// Status slot bound (its own buffer); always clean when recorded.
        slot: u32,
        params_offset: u64,
    },
    Copy {
        src: wgpu::Buffer,
        src_offset: u64,
        dst: wgpu::Buffer,
        dst_offset: u64,
        size: u64,
        /// Resolved with the copy's success (a read's fate).
        owner: Arc<Fate>,
    },
    /// Copy a status slot out to `staging`, leaving it clean where `status::copy_out_cleans`
    /// (consecutive copy-outs of one read go out as one gather: `status_gather.rs`).
    StatusOut {
        slot: u32,
        staging: wgpu::Buffer,
        offset: u64,
        fate: Arc<Fate>,
    },
    /// Reset these status slots (dirty ones; clean once submitted).
    Reset { slots: Vec<u32> },
}

/// The launch number of a command's fate (status resets have none).
fn launch_seq(c: &Cmd) -> Option<u64> {
    match c {
        Cmd::Dispatch { d, .. } => Some(d.fate.seq()),
        Cmd::Copy { owner, .. } => Some(owner.seq()),
        Cmd::StatusOut { fate, .. } => Some(fate.seq()),
        Cmd::Reset { .. } => None,
    }
}

/// The pending batch (behind the engine's batch lock).
#[derive(Default)]
pub(crate) struct Batch {
    cmds: Vec<Cmd>,
    dispatches: u32,
    /// Size of the next full batch (`EngineOptions::first_batch_dispatches`, doubled per full
    /// batch; 0 after any other flush: the GPU has run dry, so the next batch starts small).
    ramp: u32,
    params: Vec<u8>,
    /// The profiler that times submitted batches: the engine's, or a measurement's own while
    /// calibration or autotune runs (`ops::TuneProfiler`).
    pub profiler: Option<ProfilerState>,
    /// The engine's profiler while a measurement's own stands in [`Batch::profiler`]: the
    /// public profiling calls act on it ([`Batch::user_profiler`]), so a setting changed or a
    /// report read meanwhile is the engine's, not the measurement's.
    pub stashed_profiler: Option<Option<ProfilerState>>,
}

impl Batch {
    /// The engine's own profiler (the one the public profiling calls configure, read and
    /// reset), wherever it is while a measurement runs.
    pub fn user_profiler(&mut self) -> &mut Option<ProfilerState> {
        match &mut self.stashed_profiler {
            Some(stashed) => stashed,
            None => &mut self.profiler,
        }
    }

    /// Whether nothing is recorded.
    pub fn is_empty(&self) -> bool {
        self.cmds.is_empty()
    }

    /// Records one dispatch; submits first when the batch is full.
    pub fn record(&mut self, gpu: &Gpu, d: Dispatch) -> Result<()> {
        gpu.faults.panic_if_armed();
        let profiler_full = self
            .profiler
            .as_ref()
            .is_some_and(|p| p.enabled && p.per_dispatch())
            && self.dispatches >= crate::profiler::PROFILE_PAIRS;
        let limit = self
            .ramp
            .max(gpu.options.first_batch_dispatches)
            .min(gpu.options.batch_dispatches)
            .max(1);
        if self.dispatches >= limit || profiler_full {
            self.make_room(gpu)?;
            // The GPU has this batch to run while the next one is recorded: let it grow.
            self.ramp = limit.saturating_mul(2);
        }
        // Unchecked launches bind a slot too (distinct buffers keep independent dispatches free
        // of barriers); it goes back dirty once the batch is submitted (`commit`).
        let slot = self.clean_slot(gpu, d.kernel)?;
        if d.fate.check().is_some() {
            d.fate.assign(slot);
            gpu.slots.set_owner(slot, &d.fate);
        }
        let params_offset = u64::from(self.dispatches) * gpu.group.params_stride;
        if gpu.caps.params_mode == ParamsMode::Uniform {
            self.params.resize(params_offset as usize, 0);
            self.params.extend_from_slice(&d.params);
        }
        self.dispatches += 1;
        self.cmds.push(Cmd::Dispatch {
            d,
            slot,
            params_offset,
        });
        Ok(())
    }

    /// A clean status slot. None free: flush (which resets the dirty ones); when every slot is
    /// owned by an unread launch, copy them all out (the forced check), then reset the slots
    /// that submission freed.
    fn clean_slot(&mut self, gpu: &Gpu, kernel: &'static str) -> Result<u32> {
        if let Some(s) = gpu.slots.take() {
            return Ok(s);
        }
        if gpu.slots.has_dirty() {
            self.make_room(gpu)?;
            if let Some(s) = gpu.slots.take() {
                return Ok(s);
            }
        }
        self.force_status_check(gpu)?;
        if let Some(s) = gpu.slots.take() {
            return Ok(s);
        }
        // Unchecked launches of the pending batch held the slots: its submission (in the forced
        // check) left them dirty, and the next flush appends their resets.
        if gpu.slots.has_dirty() {
            self.make_room(gpu)?;
        }
        gpu.slots.take().ok_or_else(|| Error::KernelMisuse {
            kernel,
            message: "no status slot is free after a full status check".into(),
        })
    }

    /// Submits the batch to make room for the command being recorded. Only a lost device fails
    /// that command too: a submission that panicked failed its own commands with the panic
    /// (`flush`), and the next command goes into the new, empty batch.
    fn make_room(&mut self, gpu: &Gpu) -> Result<()> {
        match self.flush(gpu) {
            Ok(_) | Err(Error::Panicked(_)) => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// Records a buffer copy whose success resolves `owner`.
    pub fn copy(
        &mut self,
        src: &wgpu::Buffer,
        src_offset: u64,
        dst: &wgpu::Buffer,
        size: u64,
        owner: &Arc<Fate>,
    ) {
        self.cmds.push(Cmd::Copy {
            src: src.clone(),
            src_offset,
            dst: dst.clone(),
            dst_offset: 0,
            size,
            owner: Arc::clone(owner),
        });
    }

    /// Submits everything recorded; returns the submission to wait on (None if nothing was
    /// pending or nothing could be submitted). A rejected batch is re-submitted command by
    /// command (see the module docs); `Err` only when the device is lost, or when the submission
    /// panicked (every command of the batch then fails with `Error::Panicked`).
    pub fn flush(&mut self, gpu: &Gpu) -> Result<Option<wgpu::SubmissionIndex>> {
        gpu.faults.panic_if_armed();
        // Resets last: after every dispatch of this batch or earlier ones that used the slots;
        // and only once enough slots wait for one (`SlotPool::take_dirty_if_due`).
        let dirty = gpu.slots.take_dirty_if_due();
        if !dirty.is_empty() {
            self.cmds.push(Cmd::Reset { slots: dirty });
        }
        if self.cmds.is_empty() {
            return Ok(None);
        }
        let cmds = std::mem::take(&mut self.cmds);
        self.dispatches = 0;
        self.ramp = 0;
        // Every launch of the batch leaves it now, submitted or failed (`hazard.rs`).
        if let Some(last) = cmds.iter().filter_map(launch_seq).max() {
            gpu.submitted.advance(last);
        }
        let params = std::mem::take(&mut self.params);
        if let Err(e) = gpu.check_health() {
            cmds.iter().for_each(|c| fail(gpu, c, &e));
            return Err(e);
        }
        let profiler = self.profiler.as_mut().filter(|p| p.enabled);
        let submission = || {
            if let Some(arena) = &gpu.group.params_arena
                && !params.is_empty()
            {
                // Executes before this submission's commands and after every earlier one.
                gpu.queue.write_buffer(arena, 0, &params);
            }
            submit(gpu, &cmds, profiler)
        };
        // Guarded from the params write on: the commands are taken, so a panic that escaped
        // would drop them, and with them the slots of their launches, copy-outs and resets.
        match crate::scheduler::guarded(submission) {
            // A panic inside the submission (the engine's or wgpu's): whether any of it ran is
            // unknown, so nothing is re-submitted and none of its launches is trusted — each
            // command fails with the panic, as on a lost device (dropped with its commands, a
            // launch's outputs would read as whatever their buffers held before).
            Err(e) => {
                if let Some(p) = self.profiler.as_mut() {
                    p.discard();
                }
                cmds.iter().for_each(|c| fail(gpu, c, &e));
                Err(e)
            }
            Ok(Ok(index)) => {
                commit(gpu, &cmds);
                if let Some(p) = self.profiler.as_mut().filter(|p| p.has_pending()) {
                    p.collect(&gpu.device, &|| gpu.check_health().err(), index.clone());
                }
                Ok(Some(index))
            }
            Ok(Err(e)) => {
                log::warn!(
                    "bitnet-wgpu: a batch of {} commands failed ({e}); re-submitting them one by one",
                    cmds.len()
                );
                if let Some(p) = self.profiler.as_mut() {
                    p.discard();
                }
                self.isolate(gpu, cmds)
            }
        }
    }

    /// Re-submits each command of a rejected batch alone; failing ones fail their fates.
    fn isolate(&mut self, gpu: &Gpu, cmds: Vec<Cmd>) -> Result<Option<wgpu::SubmissionIndex>> {
        let mut last = None;
        for cmd in cmds {
            let one = std::slice::from_ref(&cmd);
            let submitted = || crate::scheduler::guarded(|| submit(gpu, one, None))?;
            match gpu.check_health().and_then(|()| submitted()) {
                Ok(index) => {
                    commit(gpu, one);
                    last = Some(index);
                }
                Err(e) => {
                    log::error!("bitnet-wgpu: {} failed: {e}", describe(&cmd));
                    fail(gpu, &cmd, &e);
                }
            }
        }
        gpu.check_health()?;
        Ok(last)
    }

    /// Every status slot is owned by an unread launch: copy them all out now (a sync) and store
    /// each result in its own launch's fate.
    fn force_status_check(&mut self, gpu: &Gpu) -> Result<()> {
        let owners = gpu.slots.owners();
        let ticket = self.take_status(gpu, &owners)?;
        // As a read flushes: a panicking flush takes the copy-outs back (their fates pending
        // again) instead of leaving them queued behind a dropped ticket.
        let index = self.flush_read(gpu, ticket.as_ref(), None)?;
        if let (Some(t), Some(i)) = (ticket, index) {
            crate::transfer::finish_status(gpu, t, i)?;
        }
        Ok(())
    }
}

/// After a successful submission: unchecked launches and copies are done (their slots go back
/// dirty, for a later flush's reset pass), and so are copy-outs (clean where
/// `status::copy_out_cleans`, else dirty); reset slots are clean again (checked
/// launches stay pending until a read copies their slot out).
fn commit(gpu: &Gpu, cmds: &[Cmd]) {
    let mut clean = Vec::new();
    for cmd in cmds {
        match cmd {
            Cmd::Dispatch { d, slot, .. } if d.fate.check().is_none() => {
                d.fate.resolve(None);
                gpu.slots.release_dirty(*slot);
            }
            Cmd::Dispatch { .. } => {}
            Cmd::Copy { owner, .. } => owner.resolve(None),
            // Copied out; reset in the same command only on CPU adapters, else by a later flush.
            Cmd::StatusOut { slot, .. } if crate::status::copy_out_cleans(gpu) => clean.push(*slot),
            Cmd::StatusOut { slot, .. } => gpu.slots.release_dirty(*slot),
            Cmd::Reset { slots } => clean.extend_from_slice(slots),
        }
    }
    gpu.slots.release_clean(clean);
}

/// A command that did not run — or, after a panic, may have: its launch (or copy) fails with
/// `e`; slots whose reset did not run stay dirty. A rejected copy-out did not touch its slot, so
/// its fate is pending again. A panicked one may have run, copying the flags out where no ticket
/// will decode them: its launch fails with the panic instead, and the slot goes back dirty (the
/// reset pass of a later flush cleans it).
fn fail(gpu: &Gpu, cmd: &Cmd, e: &Error) {
    match cmd {
        Cmd::Dispatch { d, slot, .. } => {
            if d.fate.check().is_none() {
                gpu.slots.release_dirty(*slot);
            }
            d.fate.resolve(Some(e.clone()))
        }
        Cmd::Copy { owner, .. } => owner.resolve(Some(e.clone())),
        Cmd::StatusOut { slot, fate, .. } if matches!(e, Error::Panicked(_)) => {
            fate.resolve(Some(e.clone()));
            gpu.slots.release_dirty(*slot);
        }
        Cmd::StatusOut { slot, fate, .. } => fate.revert_read(*slot),
        Cmd::Reset { slots } => slots.iter().for_each(|&s| gpu.slots.release_dirty(s)),
    }
}

#[cfg(test)]
#[path = "batch_tests.rs"]
mod tests;
