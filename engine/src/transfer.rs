//! Host ↔ device transfers: uploads, read-backs and sync points.
//!
//! A read-back is a sync point: the submission thread records the copy into a pooled staging
//! buffer and the copy-out of the status slots of the tensor's lineage (only those: see
//! `fate.rs`), submits, and hands back the submission; the staging buffers are mapped with
//! `map_async` (`staging_map.rs`), whose callbacks (run by the completion thread, `poller.rs`) resolve each launch's
//! fate and deliver the bytes to the read's future. The bytes are returned only if no launch the
//! tensor depends on failed. Read-backs go through staging chunks of at most [`READBACK_CHUNK`]
//! bytes, so staging memory stays bounded.

use std::sync::Arc;

use crate::batch::StatusTicket;
use crate::context::Gpu;
use crate::engine::Engine;
use crate::error::{Error, Result};
use crate::fate::{Fate, Outcome, first_error};
use crate::pool::BufferKind;
use crate::staging_map::map_then;

/// Largest staging buffer of one read-back step.
pub(crate) const READBACK_CHUNK: u64 = 64 << 20;

/// Writes `bytes` at `offset` of `dst`, after submitting what was recorded before (a pooled buffer
/// may still be read by recorded dispatches, and `queue.write_buffer` runs before the next
/// submission's commands). Dispatches recorded later cannot use `dst`: the caller owns it. When
/// the submission thread is drained (`Scheduler::drained`: the usual case after a read, as in a
/// decode loop) there is nothing to submit and the round trip to it is skipped: on the H200 host
/// an upload took 21-26 µs with it and 8-9 µs without.
pub(crate) fn write(gpu: &Gpu, dst: &wgpu::Buffer, offset: u64, bytes: &[u8]) -> Result<()> {
    gpu.check_health()?;
    if !gpu.scheduler.drained() {
        let flush = || gpu.scheduler.call(|b, g| b.flush(g).map(drop));
        match flush() {
            // Another caller's batch panicked (its launches fail with it, `batch.rs`), which
            // says nothing about this upload: a second flush submits whatever that one left
            // recorded, so the write still lands behind every earlier command.
            Err(Error::Panicked(_)) | Ok(Err(Error::Panicked(_))) => flush()??,
            r => r??,
        }
    }
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

/// Reads `len` bytes at `offset` of `src` as little-endian words (the last one zero-padded), then
/// resolves the fates of `lineage` — the launches the bytes depend on — and returns the earliest
/// error among them instead of the bytes if one failed. The first chunk (with the status slots
/// of `lineage`) is posted to the submission thread before this returns — submitted in order
/// behind everything recorded so far, without this thread waiting for it — so several reads
/// started back to back overlap; the future completes them (further chunks of reads above
/// [`READBACK_CHUNK`] are posted by it).
pub(crate) fn read(
    engine: &Engine,
    src: wgpu::Buffer,
    offset: u64,
    len: u64,
    lineage: Vec<Arc<Fate>>,
) -> impl Future<Output = Result<Vec<u32>>> + Send + 'static + use<> {
    let engine = engine.clone();
    let first = match (engine.gpu_raw(), first_error(&lineage)) {
        (_, Some(e)) => Err(e),
        (None, None) => Err(Error::Unsupported("device read on a CPU engine".into())),
        (Some(g), None) => Chunk::start(g, &src, offset, len.min(READBACK_CHUNK), Some(&lineage)),
    };
    async move {
        let Some(gpu) = engine.gpu_raw() else {
            return first.map(|_| Vec::new());
        };
        let rest = async {
            let mut out = first?.finish().await?;
            let mut done = len.min(READBACK_CHUNK);
            while done < len {
                let n = (len - done).min(READBACK_CHUNK);
                out.extend(
                    Chunk::start(gpu, &src, offset + done, n, None)?
                        .finish()
                        .await?,
                );
                done += n;
            }
            resolve(gpu, &lineage).await?;
            Ok(out)
        };
        rest.await.map_err(|e| gpu.explain(e))
    }
}

/// One read-back step: a data copy (and the status copy-out of a lineage), posted to the
/// submission thread, which records, submits and maps it.
struct Chunk {
    /// Whether the chunk copies no bytes (a status-only check).
    empty: bool,
    owner: Arc<Fate>,
    /// The job's reply: the status and data futures (`None`: nothing to wait for — no status
    /// to copy, or a data copy that failed or was not submitted).
    started: ReadFuture<Started>,
}

/// What a chunk's job hands back: the futures of its status copy-out and of its data copy.
type Started = (Option<ReadFuture<()>>, Option<ReadFuture<Vec<u32>>>);

/// A boxed read future.
pub(crate) type ReadFuture<T> = std::pin::Pin<Box<dyn Future<Output = Result<T>> + Send>>;

impl Chunk {
    /// Posts the copy of `n` bytes (and of the status of `lineage`'s pending fates): the
    /// submission thread records it, submits, and registers the map callbacks, so this returns
    /// without waiting for that thread (reads started back to back overlap, and a caller that
    /// streams goes on at once). The maps start in the job itself: a caller that drops the read
    /// before the reply arrives must not drop the ticket of a copy-out that ran (which would fail
    /// the fates as a lost read-back for good).
    fn start(
        gpu: &Gpu,
        src: &wgpu::Buffer,
        at: u64,
        n: u64,
        lineage: Option<&[Arc<Fate>]>,
    ) -> Result<Chunk> {
        let n4 = n.next_multiple_of(4);
        let staging = match n {
            0 => None,
            _ => Some(
                gpu.pool
                    .alloc(BufferKind::Readback, n4, "read-back staging")?,
            ),
        };
        let owner = Fate::new(gpu.next_seq(), None, &gpu.slots);
        let job_owner = Arc::clone(&owner);
        let job_src = src.clone();
        let take = lineage.map(<[_]>::to_vec);
        let started = gpu.scheduler.call_async(move |b, g| {
            // The status first: if its staging cannot be allocated, no data copy may stay in the
            // batch, aimed at a staging buffer this read has already given back to the pool.
            let ticket = match take {
                Some(l) => b.take_status(g, &l)?,
                None => None,
            };
            if let Some(dst) = &staging {
                b.copy(&job_src, at, dst.buffer(), n4, &job_owner);
            }
            let index = b.flush_read(g, ticket.as_ref(), Some(&job_owner))?;
            let status = match (ticket, &index) {
                (Some(t), Some(i)) => {
                    Some(Box::pin(status_future(g, t, i.clone())) as ReadFuture<()>)
                }
                _ => None,
            };
            let data = match (staging, &index) {
                (None, _) => None,
                (Some(s), Some(i)) if first_error(std::slice::from_ref(&job_owner)).is_none() => {
                    Some(Box::pin(map_then(g, s, n, i.clone(), |r| r)) as ReadFuture<Vec<u32>>)
                }
                // The copy failed or was not submitted: `finish` reports why.
                (Some(_), _) => None,
            };
            Ok::<_, Error>((status, data))
        });
        Ok(Chunk {
            empty: n == 0,
            owner,
            started: Box::pin(async move { started.await? }),
        })
    }

    /// Waits for the status and the words.
    async fn finish(self) -> Result<Vec<u32>> {
        let (status, data) = self.started.await?;
        if let Some(st) = status {
            st.await?;
        }
        if self.empty {
            return Ok(Vec::new());
        }
        if let Some(e) = first_error(std::slice::from_ref(&self.owner)) {
            return Err(e);
        }
        match data {
            Some(d) => d.await,
            None => Err(Error::Map("the read-back copy was not submitted".into())),
        }
    }
}

/// Resolves every fate of `lineage` (copying out the status slots still pending, waiting for the
/// ones another read is resolving) and returns the earliest error among them. An
/// [`Error::Aborted`] also marks the device (`Gpu::waits_gave_up`).
pub(crate) async fn resolve(gpu: &Gpu, lineage: &[Arc<Fate>]) -> Result<()> {
    let r = resolve_fates(gpu, lineage).await;
    if matches!(r, Err(Error::Aborted { .. })) {
        gpu.waits_gave_up
            .store(true, std::sync::atomic::Ordering::Relaxed);
    }
    r
}

/// [`resolve`] without marking the device.
async fn resolve_fates(gpu: &Gpu, lineage: &[Arc<Fate>]) -> Result<()> {
    // A fate is pending here only if its launch is still queued or a copy-out did not run;
    // retry a bounded number of times, then report it rather than loop.
    for _ in 0..3 {
        let mut pending = false;
        for f in lineage {
            loop {
                match f.outcome() {
                    // Disconnects once the other read resolved the fate, or gave its claim back
                    // (its copy-out did not run): look again.
                    Outcome::Reading(done) => drop(done.recv_async().await),
                    Outcome::Pending => {
                        pending = true;
                        break;
                    }
                    Outcome::Known(_) => break,
                }
            }
        }
        if !pending {
            return first_error(lineage).map_or(Ok(()), Err);
        }
        let fates = lineage.to_vec();
        // The status is mapped by the job itself: a caller that drops this future before the
        // reply arrives must not drop the ticket of a copy-out that ran (and reset the slots),
        // which would fail the fates as a lost read-back for good.
        let status = gpu
            .scheduler
            .call_async(move |b, g| {
                let ticket = b.take_status(g, &fates)?;
                let index = b.flush_read(g, ticket.as_ref(), None)?;
                Ok::<_, Error>(ticket.zip(index).map(|(t, i)| status_future(g, t, i)))
            })
            .await??;
        if let Some(s) = status {
            s.await?;
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
    // Wait even when this flush had nothing to submit: a batch flushed earlier (full, idle, or
    // by a read) may still be running, and `sync` promises that all earlier work finished.
    gpu.scheduler.call(|b, g| b.flush(g))??;
    wait_all(gpu)?;
    gpu.check_health()?;
    gpu.take_uncaptured().map_or(Ok(()), Err)
}

/// Resolves the fates of `ticket` once `index` completed (in the map callback).
fn status_future(
    gpu: &Gpu,
    ticket: StatusTicket,
    index: wgpu::SubmissionIndex,
) -> impl Future<Output = Result<()>> + Send + 'static + use<> {
    let StatusTicket {
        resolver,
        staging,
        bytes,
    } = ticket;
    map_then(gpu, staging, bytes, index, move |r| match r {
        Ok(words) => {
            resolver.resolve(bytemuck::cast_slice(&words));
            Ok(())
        }
        Err(e) => {
            resolver.fail(&e);
            Err(e)
        }
    })
}

/// Blocking form of [`status_future`] for the submission thread itself (forced status checks).
pub(crate) fn finish_status(
    gpu: &Gpu,
    ticket: StatusTicket,
    index: wgpu::SubmissionIndex,
) -> Result<()> {
    let fut = status_future(gpu, ticket, index);
    wait_all(gpu)?;
    // The callback ran in our polls or in the completion thread's.
    pollster::block_on(fut)
}

/// Blocks until everything submitted so far completed, polling without blocking inside wgpu
/// (`wait.rs`).
fn wait_all(gpu: &Gpu) -> Result<()> {
    let (tx, rx) = flume::bounded(1);
    gpu.queue.on_submitted_work_done(move || {
        let _ = tx.send(());
    });
    let lost = || gpu.check_health().err();
    crate::wait::poll_until(&gpu.device, &lost, None, gpu.spin_wait(), || {
        !rx.is_empty() || rx.is_disconnected()
    })
    .map(drop)
}

#[cfg(test)]
mod tests {
    use std::pin::pin;
    use std::task::{Context, Poll, Waker};

    use super::*;

    /// A read that waits for another read's copy-out of a fate, which then fails (the claim is
    /// reverted, `batch.rs`), copies the slot out itself: the fate's flag is reported, not lost.
    #[test]
    fn a_waiting_read_checks_a_fate_whose_other_copy_out_failed() {
        // A checked launch that flags the NaN; submitted, its fate pending with its slot.
        let (e, _y, fate) = crate::test_gpu::flagged_copy();
        let g = e.gpu_context().unwrap();
        // Another read claims the slot…
        let (other, claim) = crate::oneshot::channel();
        let slot = fate.begin_read(&claim).expect("pending with a slot");
        let lineage = vec![Arc::clone(&fate)];
        let mut read = pin!(resolve(g, &lineage));
        // …this read waits for it…
        let mut cx = Context::from_waker(Waker::noop());
        assert!(matches!(read.as_mut().poll(&mut cx), Poll::Pending));
        // …and its copy-out fails: the claim is reverted and its waiters woken.
        fate.revert_read(slot);
        drop(other);
        let got = pollster::block_on(read);
        assert!(matches!(got, Err(Error::NonFinite { .. })), "{got:?}");
    }

    /// An upload that first submits another caller's recorded work, whose submission then
    /// panics (an application's map callback, which wgpu runs inside `queue.submit`), still
    /// lands: that panic fails the other caller's launches, not this write.
    #[test]
    fn an_upload_survives_a_panic_in_the_submission_before_it() {
        let e = crate::test_gpu::gpu_with(crate::engine::EngineOptions {
            idle_flush: None,
            ..Default::default()
        });
        let g = e.gpu_context().unwrap();
        let t = e.upload_f32(&[1.0; 64], &[64]).unwrap();
        e.sync().unwrap();
        let _recorded = e.copy(&t).unwrap();
        let (_app, fired) = crate::test_gpu::panicking_map(g);
        let up = e.upload_f32(&[2.0; 64], &[64]);
        assert!(fired.load(std::sync::atomic::Ordering::SeqCst));
        assert_eq!(up.unwrap().read_f32().unwrap(), vec![2.0; 64]);
        e.sync().unwrap();
    }

    /// A read whose data copy is rejected (here: past its source's end) while its batch's other
    /// commands run — the batch is re-submitted command by command, and only the copy fails —
    /// returns the copy's own error, not a generic "not submitted".
    #[test]
    fn a_read_whose_copy_failed_reports_the_copys_error() {
        let e = crate::test_gpu::gpu();
        let g = e.gpu_context().unwrap();
        let src = g.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("16-byte source"),
            size: 16,
            usage: wgpu::BufferUsages::COPY_SRC,
            mapped_at_creation: false,
        });
        let got = pollster::block_on(read(&e, src, 0, 32, Vec::new()));
        assert!(
            matches!(&got, Err(Error::Validation { context, .. }) if context == "submitting a command batch"),
            "{got:?}"
        );
        // The engine goes on.
        let t = e.upload_f32(&[3.0; 4], &[4]).unwrap();
        assert_eq!(t.read_f32().unwrap(), vec![3.0; 4]);
    }
}
