//! The completion thread: polls the device for submissions that reads wait on, so their
//! `map_async` callbacks run and their futures resolve without the caller polling.
//!
//! Each read registers a [`Completion`] (the one-shot its future awaits) with the submission
//! index it needs. The thread waits for that submission with a timeout, so a lost device is
//! noticed: then every outstanding completion resolves with `Error::DeviceLost` — a future
//! never waits on a callback that a dead device will not run.

use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use crate::error::{Error, Result};

/// How long one device wait lasts before the thread checks device health again.
const WAIT_SLICE: Duration = Duration::from_millis(250);

/// A one-shot result shared by a map callback and the completion thread: whichever completes
/// it first wins.
pub(crate) struct Completion<T> {
    tx: Mutex<Option<flume::Sender<Result<T>>>>,
}

impl<T> Completion<T> {
    /// A completion and the receiver its future awaits.
    pub fn new() -> (Arc<Completion<T>>, flume::Receiver<Result<T>>) {
        let (tx, rx) = flume::bounded(1);
        (
            Arc::new(Completion {
                tx: Mutex::new(Some(tx)),
            }),
            rx,
        )
    }

    /// Delivers `r` unless already completed.
    pub fn complete(&self, r: Result<T>) {
        let tx = self.tx.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(tx) = tx {
            let _ = tx.send(r);
        }
    }
}

/// Something the completion thread can fail when the device is lost.
pub(crate) trait Abort: Send + Sync {
    /// Completes with `e` (no-op if already complete).
    fn abort(&self, e: &Error);
}

impl<T: Send> Abort for Completion<T> {
    fn abort(&self, e: &Error) {
        self.complete(Err(e.clone()));
    }
}

struct Watch {
    index: wgpu::SubmissionIndex,
    waiter: Weak<dyn Abort>,
}

/// What the thread receives (`None`: stop).
type Msg = Option<Watch>;

/// The sending side of the completion thread.
pub(crate) struct Poller {
    tx: flume::Sender<Msg>,
    thread: Mutex<Option<std::thread::JoinHandle<()>>>,
}

impl Poller {
    /// Starts the thread for `device`; `lost` says whether (and why) the device is lost.
    pub fn start(
        device: wgpu::Device,
        lost: impl Fn() -> Option<Error> + Send + 'static,
    ) -> Result<Poller> {
        let (tx, rx) = flume::unbounded::<Msg>();
        let handle = std::thread::Builder::new()
            .name("bitnet-wgpu complete".into())
            .spawn(move || run(&rx, &device, &lost))
            .map_err(|e| Error::Unsupported(format!("cannot start the completion thread: {e}")))?;
        Ok(Poller {
            tx,
            thread: Mutex::new(Some(handle)),
        })
    }

    /// Stops the thread and waits for it (after the submission thread stopped).
    pub fn stop(&self) {
        let _ = self.tx.send(None);
        let handle = self.thread.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(h) = handle {
            crate::scheduler::join_bounded(h, "completion");
        }
    }

    /// Polls until `index` completed (running the map callbacks of `waiter`'s read).
    pub fn watch(&self, index: wgpu::SubmissionIndex, waiter: &Arc<dyn Abort>) {
        let w = Watch {
            index,
            waiter: Arc::downgrade(waiter),
        };
        if self.tx.send(Some(w)).is_err() {
            waiter.abort(&Error::DeviceLost("the completion thread stopped".into()));
        }
    }
}

fn run(rx: &flume::Receiver<Msg>, device: &wgpu::Device, lost: &dyn Fn() -> Option<Error>) {
    let mut outstanding: Vec<Weak<dyn Abort>> = Vec::new();
    while let Ok(Some(w)) = rx.recv() {
        outstanding.retain(|o| o.strong_count() > 0);
        outstanding.push(w.waiter.clone());
        loop {
            let r = device.poll(wgpu::PollType::Wait {
                submission_index: Some(w.index.clone()),
                timeout: Some(WAIT_SLICE),
            });
            if let Some(e) = lost() {
                for o in outstanding.drain(..).filter_map(|o| o.upgrade()) {
                    o.abort(&e);
                }
                break;
            }
            match r {
                Err(wgpu::PollError::Timeout) => continue,
                Err(e) => {
                    log::warn!("bitnet-wgpu: device poll failed: {e}");
                    if let Some(o) = w.waiter.upgrade() {
                        o.abort(&Error::Map(format!("device poll failed: {e}")));
                    }
                    break;
                }
                Ok(_) => break,
            }
        }
    }
}
