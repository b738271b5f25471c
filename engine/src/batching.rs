//! [`BatchingLinear`]: automatic batching of concurrent requests on the same weights, as a
//! decode server batches.
//!
//! Callers submit `[M, K]` activations from any thread (rayon's workers included: a batch's CPU
//! work runs on a rayon pool of the batchers' own, `BATCH_POOL`); a batcher
//! thread takes the first waiting request, collects every request that arrives within the window
//! (or until the batch reaches `max_rows`), stacks them into one `[ΣM, K]` matrix and runs a
//! single BitLinear through the layer's [`Linear`] (so dispatch, resident weights and CPU
//! fallback apply to the merged op).
//! BitLinear works row by row, so each caller gets exactly the bits a call of its own would give.
//! If the merged op fails (a NaN in one request, say), every request of the batch is re-run on its
//! own, so each caller gets its own result or its own error — never a neighbour's.

use std::panic::AssertUnwindSafe;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::error::{Error, Result};
use crate::linear::Linear;

/// One caller's request.
struct Request {
    x: Vec<f32>,
    m: usize,
    /// When it was submitted: a batch's window runs from its first request's arrival.
    arrived: Instant,
    reply: crate::oneshot::Sender<Result<Vec<f32>>>,
}

/// What the batcher did so far.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct BatchingStats {
    /// Requests run in a batch (answered, or dropped by their caller while the batch ran).
    pub requests: u64,
    /// Requests withdrawn unrun: their caller dropped the future before their batch ran.
    pub withdrawn: u64,
    /// Merged ops run (one per batch).
    pub batches: u64,
    /// Most rows merged into one op.
    pub max_rows: u64,
    /// Batches whose merged op failed and whose requests were re-run one by one.
    pub split_batches: u64,
}

/// A [`Linear`] layer served to many callers, batching concurrent requests (see the module
/// docs). `Clone + Send + Sync`; the batcher thread stops when the last clone is dropped.
#[derive(Clone)]
pub struct BatchingLinear {
    inner: Arc<Batcher>,
}

struct Batcher {
    linear: Linear,
    tx: Mutex<Option<flume::Sender<Request>>>,
    thread: Mutex<Option<JoinHandle<()>>>,
    stats: Arc<Mutex<BatchingStats>>,
}

impl std::fmt::Debug for BatchingLinear {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "BatchingLinear({:?})", self.stats())
    }
}

impl BatchingLinear {
    /// Serves `linear`: requests arriving within `window` of the first waiting one are merged,
    /// up to `max_rows` rows per op (`max_rows ≥ 1`; a request that would pass it opens the next
    /// batch, and a single request above it runs alone). A window of `Duration::MAX` closes a
    /// batch only at `max_rows` (or when the batcher is dropped).
    ///
    /// Errors: `max_rows = 0` is `Error::CpuRef(InvalidArgument { what: "max_rows", .. })`; a
    /// batcher thread, or the batchers' rayon pool, that cannot be started is
    /// [`Error::Unsupported`].
    pub fn new(linear: Linear, window: Duration, max_rows: usize) -> Result<BatchingLinear> {
        if max_rows == 0 {
            return Err(Error::from(bitnet_cpu_ref::Error::InvalidArgument {
                op: "BatchingLinear::new",
                what: "max_rows",
                reason: "must be at least 1",
            }));
        }
        start_batch_pool()?;
        let (tx, rx) = flume::unbounded::<Request>();
        let stats = Arc::new(Mutex::new(BatchingStats::default()));
        let (l, st) = (linear.clone(), Arc::clone(&stats));
        let thread = std::thread::Builder::new()
            .name("bitnet-wgpu batcher".into())
            .spawn(move || serve(&rx, &l, window, max_rows, &st))
            .map_err(|e| Error::Unsupported(format!("cannot start the batcher thread: {e}")))?;
        Ok(BatchingLinear {
            inner: Arc::new(Batcher {
                linear,
                tx: Mutex::new(Some(tx)),
                thread: Mutex::new(Some(thread)),
                stats,
            }),
        })
    }

    /// The served layer.
    pub fn linear(&self) -> &Linear {
        &self.inner.linear
    }

    /// Submits `x[M, K]`; the future resolves to `y[M, N]` once its batch ran (the same bits as
    /// [`Linear::forward`] on `x` alone). The request is queued when this is called; dropping the
    /// future withdraws it unless its batch already runs ([`BatchingStats::withdrawn`]).
    pub fn forward_async(
        &self,
        x: Vec<f32>,
        m: usize,
    ) -> impl Future<Output = Result<Vec<f32>>> + Send + 'static + use<> {
        let k = self.inner.linear.weights().k();
        // Malformed: answered at once with the error a call of its own gives; never batched.
        let malformed =
            (m == 0 || m.checked_mul(k) != Some(x.len())).then(|| self.inner.linear.forward(&x, m));
        let pending = match malformed {
            Some(_) => None,
            None => {
                let (reply, rx) = crate::oneshot::channel();
                let tx = self.inner.tx.lock().unwrap_or_else(|e| e.into_inner());
                let sent = tx.as_ref().is_some_and(|tx| {
                    tx.send(Request {
                        x,
                        m,
                        arrived: Instant::now(),
                        reply,
                    })
                    .is_ok()
                });
                Some(sent.then_some(rx))
            }
        };
        async move {
            match (malformed, pending) {
                (Some(r), _) => r,
                (None, Some(Some(rx))) => rx.recv_async().await.unwrap_or_else(|_| {
                    Err(Error::Unsupported("the batcher dropped a request".into()))
                }),
                _ => Err(Error::Unsupported("the batcher has stopped".into())),
            }
        }
    }

    /// Blocking [`BatchingLinear::forward_async`]. On a batcher thread — any batcher's: a task a
    /// reply woke, polled inside the waker — the layer runs at once, unbatched: waiting for a
    /// batch there could wait for that thread itself, or for another batcher waiting for this one.
    pub fn forward(&self, x: &[f32], m: usize) -> Result<Vec<f32>> {
        if ON_BATCHER_THREAD.get() {
            // Its CPU work on the batchers' pool, as a batch's (`cpu_work`).
            return self.inner.linear.forward(x, m);
        }
        pollster::block_on(self.forward_async(x.to_vec(), m))
    }

    /// Requests, batches and merge sizes so far.
    pub fn stats(&self) -> BatchingStats {
        *self.inner.stats.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Drop for Batcher {
    fn drop(&mut self) {
        // Closing the channel lets the thread answer what is queued, then exit.
        drop(self.tx.lock().unwrap_or_else(|e| e.into_inner()).take());
        // Not from the batcher's own thread (its last handle dropped by a task it woke): a
        // thread cannot join itself, and it exits once the channel is closed. Nor from an
        // engine's submission or completion thread (a waker the engine ran there): the queued
        // requests the batcher still answers need those threads, so the join waited for itself
        // and both engine threads hung for good (a reviewer's probe). The batcher finishes and
        // exits on its own.
        if let Some(h) = self.thread.lock().unwrap_or_else(|e| e.into_inner()).take()
            && h.thread().id() != std::thread::current().id()
            && !crate::engine_thread::on_engine_thread()
        {
            let _ = h.join();
        }
    }
}

thread_local! {
    /// Whether this thread is a batcher thread (the only threads that send replies, so the only
    /// ones a reply's waker runs on; their layers' CPU work goes to the batchers' pool).
    static ON_BATCHER_THREAD: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Runs `f` — a [`Linear`]'s cpu-ref work, which may split into rayon tasks — on the batchers'
/// pool when called on a batcher thread, else right here. Callers wait blocked in
/// [`BatchingLinear::forward`], maybe every worker of rayon's global pool (a server fanning
/// requests out with `par_iter`), so a batch's rayon tasks there would wait for them forever
/// (deadlock). Only the CPU work hops: a batch the GPU runs stays on the batcher thread, as a hop
/// costs a pool wake-up and the batcher's own (13 µs back to back, 35 µs after 100 µs idle, on
/// the 2-core test machine).
pub(crate) fn cpu_work<R: Send>(f: impl FnOnce() -> R + Send) -> R {
    // A batcher thread exists only once its `BatchingLinear::new` started the pool.
    match BATCH_POOL.get().filter(|_| ON_BATCHER_THREAD.get()) {
        Some(pool) => pool.install(f),
        None => f(),
    }
}

/// The batcher thread: collect, merge, run, split.
fn serve(
    rx: &flume::Receiver<Request>,
    linear: &Linear,
    window: Duration,
    max_rows: usize,
    stats: &Mutex<BatchingStats>,
) {
    ON_BATCHER_THREAD.set(true);
    let k = linear.weights().k();
    // A request that did not fit the last batch opens the next one.
    let mut carry: Option<Request> = None;
    // Requests whose caller went (the future dropped) are withdrawn as they are taken, before
    // their rows count: a server's timed-out requests would otherwise be computed, or close
    // batches early and carry live requests into batches of their own (a reviewer's probe).
    let withdraw = |r: &Request| {
        let gone = r.reply.unheard();
        if gone {
            stats.lock().unwrap_or_else(|e| e.into_inner()).withdrawn += 1;
        }
        gone
    };
    while let Some(first) = carry.take().or_else(|| rx.recv().ok()) {
        if withdraw(&first) {
            continue;
        }
        // The window runs from the first request's arrival, not from when the batcher got to it
        // (it may have been running the previous batch meanwhile): a request that already
        // waited its window closes its batch with what is queued. A window too long to add
        // (Duration::MAX: "close at max_rows only") never ends.
        let deadline = first.arrived.checked_add(window);
        let mut batch = vec![first];
        let mut rows = batch[0].m;
        // Withdraws the requests taken so far whose caller went since: their rows make room.
        let purge = |batch: &mut Vec<Request>| {
            batch.retain(|r| !withdraw(r));
            batch.iter().map(|r| r.m).sum::<usize>()
        };
        loop {
            if rows >= max_rows {
                rows = purge(&mut batch);
                if rows >= max_rows {
                    break;
                }
            }
            let next = match deadline {
                Some(d) => rx.recv_deadline(d).ok(),
                None => rx.recv().ok(),
            };
            let Some(r) = next else { break };
            if withdraw(&r) {
                continue;
            }
            // At most max_rows per op (a lone request above it still runs, alone).
            if rows.saturating_add(r.m) > max_rows {
                rows = purge(&mut batch);
                if rows.saturating_add(r.m) > max_rows {
                    carry = Some(r);
                    break;
                }
            }
            rows += r.m;
            batch.push(r);
        }
        // And those whose caller went while the batch was gathered.
        purge(&mut batch);
        // Requests are validated when submitted; keep the invariant explicit here.
        let ok: Vec<Request> = batch
            .into_iter()
            .filter(|r| r.m > 0 && r.m.checked_mul(k) == Some(r.x.len()))
            .collect();
        if ok.is_empty() {
            continue;
        }
        // A panic while running one batch (an engine bug) drops that batch's replies — its
        // callers get an error — and the server goes on with the next. Its CPU work, if any,
        // runs on the batchers' pool (`cpu_work`).
        let ran = std::panic::catch_unwind(AssertUnwindSafe(|| run_batch(linear, &ok, stats)));
        match ran {
            // Replies go out from this thread, never a pool thread: a waker that polls its task
            // there may call `forward` again (answered unbatched here) or drop the last handle
            // (no join of this thread from itself), where on a pool thread it waited for this
            // thread, itself waiting for the pool.
            Ok(results) => {
                for (r, y) in ok.into_iter().zip(results) {
                    // A reply's waker may run application code (its panics, its logger's).
                    let _ = std::panic::catch_unwind(AssertUnwindSafe(|| r.reply.send(y)));
                }
            }
            Err(_) => crate::scheduler::log_quietly(|| {
                log::error!("bitnet-wgpu: a BatchingLinear batch panicked; its requests failed")
            }),
        }
    }
}

/// The rayon pool (as many threads as the global one) that runs every batch's CPU work
/// ([`cpu_work`]), started by the first [`BatchingLinear::new`].
static BATCH_POOL: std::sync::OnceLock<rayon::ThreadPool> = std::sync::OnceLock::new();

/// Starts [`BATCH_POOL`] if it is not running yet. A batcher cannot do without it (its CPU work
/// on the global pool can deadlock against its callers, `cpu_work`), so where the pool cannot
/// be started `BatchingLinear::new` fails with this error; a later call tries again.
fn start_batch_pool() -> Result<()> {
    #[cfg(test)]
    if tests::NO_BATCH_POOL.get() {
        return Err(Error::Unsupported("test: no batchers' pool".into()));
    }
    if BATCH_POOL.get().is_none() {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(rayon::current_num_threads())
            .thread_name(|i| format!("bitnet-wgpu batch {i}"))
            .build()
            .map_err(|e| {
                Error::Unsupported(format!("cannot start the batchers' thread pool: {e}"))
            })?;
        // A pool another thread started meanwhile wins; this one is dropped.
        BATCH_POOL.get_or_init(|| pool);
    }
    Ok(())
}

/// Runs one merged batch: each request's result (each alone if the merged op failed).
fn run_batch(
    linear: &Linear,
    ok: &[Request],
    stats: &Mutex<BatchingStats>,
) -> Vec<Result<Vec<f32>>> {
    let rows: usize = ok.iter().map(|r| r.m).sum();
    let merged: Vec<f32> = ok.iter().flat_map(|r| r.x.iter().copied()).collect();
    let result = linear.forward(&merged, rows);
    let mut st = stats.lock().unwrap_or_else(|e| e.into_inner());
    st.requests += ok.len() as u64;
    st.batches += 1;
    st.max_rows = st.max_rows.max(rows as u64);
    st.split_batches += u64::from(result.is_err());
    drop(st);
    match result {
        Ok(y) => {
            let n = linear.weights().n();
            let mut at = 0;
            ok.iter()
                .map(|r| {
                    at += r.m * n;
                    Ok(y[at - r.m * n..at].to_vec())
                })
                .collect()
        }
        // Each request alone: its own result or its own error.
        Err(_) => ok.iter().map(|r| linear.forward(&r.x, r.m)).collect(),
    }
}

#[cfg(test)]
#[path = "batching_tests.rs"]
mod tests;
