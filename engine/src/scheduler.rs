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
//! Waiting: after each job the thread polls the queue for a few tens of µs ([`SPIN`]) before it
//! blocks, so back-to-back launches never pay for waking it.
//!
//! Batching: the thread submits when a sync point asks, when the batch is full (`batch.rs`:
//! small right after a sync point, so the GPU starts early, then growing to
//! `EngineOptions::batch_dispatches`), and — unless `EngineOptions::idle_flush` is `None` — when
//! no job arrived for that long (under load batches grow; an idle engine starts the GPU at once).
//!
//! Drained: the scheduler counts the jobs posted and, after each job (or idle submit) that left
//! the batch empty, the jobs finished so far ([`Scheduler::drained`]). When the two agree, every
//! command any job recorded has been submitted, so an upload into a buffer the caller just took
//! from the pool can go straight to `queue.write_buffer` (which runs before the *next*
//! submission) without a round trip to this thread (`transfer.rs`).
//!
//! Backpressure: the queue is unbounded, and posting a launch (~0.1 µs) is faster than
//! recording it (µs), so callers that launch without ever reading or syncing can queue work
//! ahead of this thread. Nothing waits on that queue's length: each queued launch already holds
//! its output's pooled buffer, so device memory bounds it (allocation fails with `OutOfMemory`
//! long before the queue's boxed jobs matter), and any read or sync waits behind it. A bounded
//! queue would make a launch block its caller, where a launch promises to return at once.
//!
//! Panics: a job that panics (an engine bug, or a panic inside wgpu) is caught ([`guarded`]), and
//! its caller gets [`Error::Panicked`] — a call's reply, a launch's fate — never a lost device:
//! the thread and the device go on with the next job.

use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicU8, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::batch::Batch;
use crate::context::Gpu;
use crate::error::{Error, Result};
use crate::oneshot::{self, RecvTimeoutError};

/// A unit of work for the submission thread.
pub(crate) type Job = Box<dyn FnOnce(&mut Batch, &Gpu) + Send>;

/// What the thread receives.
enum Msg {
    Job(Job),
    /// Finish the queued jobs, then exit.
    Stop,
}

/// The sending side of an engine's submission thread.
pub(crate) struct Scheduler {
    tx: flume::Sender<Msg>,
    thread: Mutex<Option<JoinHandle<()>>>,
    /// What the thread is doing (an index into [`ACTIVITY`]), for the slow-call log.
    activity: Arc<AtomicU8>,
    /// Jobs posted (counted before they are sent).
    posted: AtomicU64,
    /// Jobs finished by the thread (written by the thread only).
    finished: AtomicU64,
    /// `finished` as of the last moment the batch was empty after a job or an idle submit: those
    /// jobs' commands were all submitted (or failed) by then.
    submitted_jobs: AtomicU64,
}

/// A blocking call to the submission thread logs a warning after this long (and again after
/// each further period).
pub(crate) const SLOW_CALL: Duration = Duration::from_secs(10);

/// What the submission thread can be doing.
const ACTIVITY: [&str; 4] = [
    "waiting for work",
    "running a job (recording, or a submit)",
    "submitting an idle batch",
    "stopping",
];

fn stopped() -> Error {
    Error::DeviceLost("the engine's submission thread stopped".into())
}

/// Runs `f`, turning a panic into [`Error::Panicked`] with the panic's message (logged), so that
/// whoever waits on `f`'s work gets a typed error naming it. Catching is free unless `f` panics.
pub(crate) fn guarded<R>(f: impl FnOnce() -> R) -> Result<R> {
    guarded_on("submission", f)
}

/// [`guarded`] for work of the engine thread named `thread` (in the log line).
pub(crate) fn guarded_on<R>(thread: &str, f: impl FnOnce() -> R) -> Result<R> {
    std::panic::catch_unwind(AssertUnwindSafe(f)).map_err(|payload| {
        let message = payload
            .downcast_ref::<&str>()
            .map(|s| (*s).to_owned())
            .or_else(|| payload.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "a panic without a message".into());
        log_quietly(|| {
            log::error!("bitnet-wgpu: a job of the {thread} thread panicked: {message}")
        });
        Error::Panicked(message)
    })
}

/// Runs a log call on an engine thread (or in a drop) whose application logger may panic: the
/// panic stays here. A logger's panic outside a catch ended the submission thread for good
/// (every later call of every clone: `DeviceLost`), or a batcher.
pub(crate) fn log_quietly(f: impl FnOnce()) {
    let _ = std::panic::catch_unwind(AssertUnwindSafe(f));
}

/// The receiving side, until [`spawn`] starts the thread.
pub(crate) struct Queue(flume::Receiver<Msg>, Arc<AtomicU8>);

impl Scheduler {
    /// A scheduler and the queue its thread will run ([`spawn`] it once the context exists).
    pub fn channel() -> (Scheduler, Queue) {
        let (tx, rx) = flume::unbounded::<Msg>();
        let thread = Mutex::new(None);
        let activity = Arc::new(AtomicU8::new(0));
        let queue = Queue(rx, Arc::clone(&activity));
        (
            Scheduler {
                tx,
                thread,
                activity,
                posted: AtomicU64::new(0),
                finished: AtomicU64::new(0),
                submitted_jobs: AtomicU64::new(0),
            },
            queue,
        )
    }

    /// Queues `job`; returns at once.
    pub fn post(&self, job: Job) -> Result<()> {
        // Counted first: a job is never finished before it is counted here (see `drained`).
        self.posted.fetch_add(1, Ordering::SeqCst);
        self.tx.send(Msg::Job(job)).map_err(|_| stopped())
    }

    /// Whether every job posted before this call has run and had its commands submitted (or
    /// failed): nothing recorded so far is still waiting for a submission. A buffer the caller
    /// took from the pool after its last user's job was posted is then used by no unsubmitted
    /// command, so `queue.write_buffer` into it is ordered after all of them. False while any
    /// job is queued or running, or its commands wait in the batch (then a caller flushes).
    pub fn drained(&self) -> bool {
        // Submitted first: it only trails `posted`, so a match means both were equal since.
        let submitted = self.submitted_jobs.load(Ordering::SeqCst);
        submitted == self.posted.load(Ordering::SeqCst)
    }

    /// Counts a finished job; `batch_empty`: nothing recorded waits for a submission.
    fn job_finished(&self, batch_empty: bool) {
        let finished = self.finished.fetch_add(1, Ordering::SeqCst) + 1;
        self.batch_settled(batch_empty, finished);
    }

    /// After an idle submit, or a job: every job finished so far is submitted if the batch is
    /// empty.
    fn batch_settled(&self, batch_empty: bool, finished: u64) {
        if batch_empty {
            self.submitted_jobs.store(finished, Ordering::SeqCst);
        }
    }

    /// Lets the thread finish the queued jobs and waits for it to exit (it drops its handle on
    /// the context, so the device is torn down by the caller's thread, never concurrently).
    pub fn stop(&self) {
        let _ = self.tx.send(Msg::Stop);
        let handle = self.thread.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(h) = handle {
            join_bounded(h, "submission");
        }
    }

    /// Runs `f` on the submission thread and waits for its result (`Err(Panicked)` if `f`
    /// panicked). A wait longer than [`SLOW_CALL`] is logged (with what the thread is doing)
    /// every [`SLOW_CALL`], to diagnose a stuck driver call; it is never turned into an error (a
    /// slow GPU is not a failure).
    pub fn call<R: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Batch, &Gpu) -> R + Send + 'static,
    ) -> Result<R> {
        crate::engine_thread::check_not_submission_of(
            self as *const Scheduler as usize,
            "a blocking engine call",
        )?;
        let rx = self.request(f)?;
        let mut waited = Duration::ZERO;
        loop {
            match rx.recv_timeout(SLOW_CALL) {
                Ok(r) => return r,
                Err(RecvTimeoutError::Disconnected) => return Err(stopped()),
                Err(RecvTimeoutError::Timeout) => {
                    waited += SLOW_CALL;
                    log::warn!(
                        "bitnet-wgpu: waited {waited:?} for the submission thread (it is {})",
                        ACTIVITY[usize::from(self.activity.load(Ordering::Relaxed))]
                    );
                }
            }
        }
    }

    /// Runs `f` on the submission thread; the future resolves to its result (`Err(Panicked)` if
    /// `f` panicked).
    pub fn call_async<R: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Batch, &Gpu) -> R + Send + 'static,
    ) -> impl Future<Output = Result<R>> + Send + 'static {
        let rx = self.request(f);
        async move { rx?.recv_async().await.map_err(|_| stopped())? }
    }

    /// Posts `f`; the receiver gets its result, or the panic that `f` raised.
    fn request<R: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Batch, &Gpu) -> R + Send + 'static,
    ) -> Result<oneshot::Receiver<Result<R>>> {
        let (reply, rx) = oneshot::channel();
        self.post(Box::new(move |b, g| {
            reply.send(guarded(|| f(b, g)));
        }))?;
        Ok(rx)
    }
}

/// How long dropping the last engine handle waits for one of its threads to exit.
const JOIN_BOUND: Duration = Duration::from_secs(2);

/// Joins an engine thread, but never hangs the caller: a thread stuck in a driver call (seen on
/// NVIDIA while another engine's device was being destroyed) is detached with a warning after
/// [`JOIN_BOUND`] instead of blocking the drop of the last engine handle forever.
pub(crate) fn join_bounded(h: JoinHandle<()>, what: &str) {
    if h.thread().id() == std::thread::current().id() {
        return;
    }
    let deadline = std::time::Instant::now() + JOIN_BOUND;
    while !h.is_finished() {
        if std::time::Instant::now() >= deadline {
            log_quietly(|| {
                log::warn!(
                    "bitnet-wgpu: the {what} thread did not stop within {JOIN_BOUND:?}; detached"
                )
            });
            return;
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    if h.join().is_err() {
        log_quietly(|| log::error!("bitnet-wgpu: the {what} thread panicked"));
    }
}

/// Starts the submission thread for the context `gpu`; it runs until [`Scheduler::stop`].
pub(crate) fn spawn(queue: Queue, gpu: &Arc<Gpu>, idle_flush: Option<Duration>) -> Result<()> {
    let g = Arc::clone(gpu);
    let handle = std::thread::Builder::new()
        .name("bitnet-wgpu submit".into())
        .spawn(move || run(&queue.0, &queue.1, &g, idle_flush))
        .map_err(|e| Error::Unsupported(format!("cannot start the submission thread: {e}")))?;
    *gpu.scheduler
        .thread
        .lock()
        .unwrap_or_else(|e| e.into_inner()) = Some(handle);
    Ok(())
}

/// The thread's loop: run jobs in order; submit when idle for `idle_flush`.
fn run(rx: &flume::Receiver<Msg>, activity: &AtomicU8, g: &Gpu, idle_flush: Option<Duration>) {
    crate::engine_thread::enter_submission(&g.scheduler as *const Scheduler as usize);
    let mut batch = Batch::default();
    loop {
        let msg = match spin_recv(rx) {
            Some(m) => Some(m),
            // An idle flush too far away to add to now (`Duration::MAX`: flume's `recv_timeout`
            // would panic, killing the thread) never comes: wait as without one.
            None => match (
                idle_flush.and_then(|d| Instant::now().checked_add(d)),
                batch.is_empty(),
            ) {
                (Some(deadline), false) => match rx.recv_deadline(deadline) {
                    Ok(m) => Some(m),
                    Err(flume::RecvTimeoutError::Timeout) => None,
                    Err(flume::RecvTimeoutError::Disconnected) => Some(Msg::Stop),
                },
                _ => Some(rx.recv().unwrap_or(Msg::Stop)),
            },
        };
        activity.store(
            match msg {
                Some(Msg::Job(_)) => 1,
                None => 2,
                Some(Msg::Stop) => 3,
            },
            Ordering::Relaxed,
        );
        match msg {
            // A panic must not take the thread, and every later caller, down with it. Jobs
            // catch their own (to report it to their caller); this is the backstop.
            Some(Msg::Job(job)) => {
                drop(guarded(|| job(&mut batch, g)));
                g.scheduler.job_finished(batch.is_empty());
            }
            Some(Msg::Stop) => {
                if let Err(e) = guarded(|| batch.flush(g)).and_then(|r| r) {
                    log_quietly(|| log::warn!("bitnet-wgpu: final submit failed: {e}"));
                }
                return;
            }
            None => {
                if let Err(e) = guarded(|| batch.flush(g)).and_then(|r| r) {
                    log_quietly(|| log::warn!("bitnet-wgpu: idle submit failed: {e}"));
                }
                let finished = g.scheduler.finished.load(Ordering::SeqCst);
                g.scheduler.batch_settled(batch.is_empty(), finished);
            }
        }
        activity.store(0, Ordering::Relaxed);
    }
}

/// How long the thread polls for the next job before it blocks. While it polls, a caller's post
/// is a plain queue push; once it blocked, every post must wake it (a futex syscall, and on a VM
/// an inter-processor interrupt: about a quarter of a launch's caller-side cost when launches come
/// back to back). Short, so an idle engine stops burning a core almost at once.
const SPIN: Duration = Duration::from_micros(50);

/// The next message if one arrives within [`SPIN`] (`Stop` once every sender is gone).
fn spin_recv(rx: &flume::Receiver<Msg>) -> Option<Msg> {
    let start = std::time::Instant::now();
    loop {
        match rx.try_recv() {
            Ok(m) => return Some(m),
            Err(flume::TryRecvError::Disconnected) => return Some(Msg::Stop),
            Err(flume::TryRecvError::Empty) if start.elapsed() >= SPIN => return None,
            Err(flume::TryRecvError::Empty) => {
                for _ in 0..32 {
                    std::hint::spin_loop();
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use crate::engine::EngineOptions;
    use crate::fault::InjectedFault;

    /// A panic in a submission the thread makes on its own (an idle flush: no caller to report
    /// it to) is logged, and the thread lives on: later calls are served, the device is used.
    #[test]
    fn a_panic_in_an_idle_submission_does_not_stop_the_thread() {
        let e = crate::test_gpu::gpu_with(EngineOptions {
            idle_flush: Some(Duration::from_millis(20)),
            ..EngineOptions::default()
        });
        let g = e.gpu_context().expect("a GPU engine");
        let x = e.upload_f32(&[2.0; 64], &[64]).unwrap();
        let y = e.copy(&x).unwrap();
        // Armed by a job, after the copy's recording: no job follows, so the idle flush of the
        // batch holding the copy is what panics.
        g.scheduler
            .call(|_, g| g.faults.arm(InjectedFault::JobPanic))
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(30);
        while g.faults.job_panic_armed() {
            assert!(Instant::now() < deadline, "the idle flush never ran");
            std::thread::sleep(Duration::from_millis(5));
        }
        // On another thread, bounded: a call posted while a dying thread unwinds would wait
        // forever for a reply that the dead thread's queue still holds.
        let (tx, rx) = std::sync::mpsc::channel();
        let other = e.clone();
        std::thread::spawn(move || tx.send(other.sync()));
        let synced = rx.recv_timeout(Duration::from_secs(30));
        assert!(
            matches!(synced, Ok(Ok(()))),
            "sync after the panic: {synced:?}"
        );
        assert_eq!(y.read_f32().unwrap(), vec![2.0; 64]);
        assert_eq!(e.copy(&x).unwrap().read_f32().unwrap(), vec![2.0; 64]);
        assert!(!g.is_lost());
    }
}

#[cfg(test)]
#[path = "drain_tests.rs"]
mod drain_tests;
