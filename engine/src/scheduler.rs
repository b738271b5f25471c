//! The submission thread: one per GPU engine, fed by a flume channel, owning the pending
//! [`Batch`].
//!
//! Callers never touch the command batch themselves: a launch posts a job that records its
//! dispatch and returns at once (no lock, no wait); sync points post a job that records their
//! copies and submits, and get its result back through a reply channel (blocking with
//! [`Scheduler::call`], or as a future with [`Scheduler::call_async`]). Jobs run in the order
//! they were posted, so a launch recorded before a tensor was handed to another thread is always
//! recorded before anything that thread does with it.
//!
//! Batching: the thread submits when a sync point asks, when the batch reaches
//! `EngineOptions::batch_dispatches`, and — unless `EngineOptions::idle_flush` is `None` — when
//! no job arrived for that long (under load batches grow; an idle engine starts the GPU at once).

use std::panic::AssertUnwindSafe;
use std::sync::Weak;
use std::time::Duration;

use crate::batch::Batch;
use crate::context::Gpu;
use crate::error::{Error, Result};

/// A unit of work for the submission thread.
pub(crate) type Job = Box<dyn FnOnce(&mut Batch, &Gpu) + Send>;

/// The sending side of an engine's submission thread.
pub(crate) struct Scheduler {
    tx: flume::Sender<Job>,
}

fn stopped() -> Error {
    Error::DeviceLost("the engine's submission thread stopped".into())
}

/// The receiving side, until [`spawn`] starts the thread.
pub(crate) struct Queue(flume::Receiver<Job>);

impl Scheduler {
    /// A scheduler and the queue its thread will run ([`spawn`] it once the context exists).
    pub fn channel() -> (Scheduler, Queue) {
        let (tx, rx) = flume::unbounded::<Job>();
        (Scheduler { tx }, Queue(rx))
    }

    /// Queues `job`; returns at once.
    pub fn post(&self, job: Job) -> Result<()> {
        self.tx.send(job).map_err(|_| stopped())
    }

    /// Runs `f` on the submission thread and waits for its result.
    pub fn call<R: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Batch, &Gpu) -> R + Send + 'static,
    ) -> Result<R> {
        let rx = self.request(f)?;
        rx.recv().map_err(|_| stopped())
    }

    /// Runs `f` on the submission thread; the future resolves to its result.
    pub fn call_async<R: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Batch, &Gpu) -> R + Send + 'static,
    ) -> impl Future<Output = Result<R>> + Send + 'static {
        let rx = self.request(f);
        async move { rx?.recv_async().await.map_err(|_| stopped()) }
    }

    fn request<R: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Batch, &Gpu) -> R + Send + 'static,
    ) -> Result<flume::Receiver<R>> {
        let (reply, rx) = flume::bounded(1);
        self.post(Box::new(move |b, g| {
            let _ = reply.send(f(b, g));
        }))?;
        Ok(rx)
    }
}

/// Starts the submission thread for the context `gpu` (held weakly: the thread ends when the
/// context is dropped).
pub(crate) fn spawn(queue: Queue, gpu: Weak<Gpu>, idle_flush: Option<Duration>) -> Result<()> {
    std::thread::Builder::new()
        .name("bitnet-wgpu submit".into())
        .spawn(move || run(&queue.0, &gpu, idle_flush))
        .map(drop)
        .map_err(|e| Error::Unsupported(format!("cannot start the submission thread: {e}")))
}

/// The thread's loop: run jobs in order; submit when idle for `idle_flush`.
fn run(rx: &flume::Receiver<Job>, gpu: &Weak<Gpu>, idle_flush: Option<Duration>) {
    let mut batch = Batch::default();
    loop {
        let job = match (idle_flush, batch.is_empty()) {
            (Some(idle), false) => match rx.recv_timeout(idle) {
                Ok(job) => Some(job),
                Err(flume::RecvTimeoutError::Timeout) => None,
                Err(flume::RecvTimeoutError::Disconnected) => return,
            },
            _ => match rx.recv() {
                Ok(job) => Some(job),
                Err(_) => return,
            },
        };
        let Some(g) = gpu.upgrade() else { return };
        match job {
            Some(job) => {
                // A panicking job must not take every later caller down with it.
                if std::panic::catch_unwind(AssertUnwindSafe(|| job(&mut batch, &g))).is_err() {
                    log::error!("bitnet-wgpu: a job of the submission thread panicked");
                }
            }
            None => {
                if let Err(e) = batch.flush(&g) {
                    log::warn!("bitnet-wgpu: idle submit failed: {e}");
                }
            }
        }
    }
}
