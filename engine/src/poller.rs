//! The completion thread: polls the device for submissions that reads wait on, so their
//! `map_async` callbacks run and their futures resolve without the caller polling.
//!
//! Each read registers a [`Completion`] (the one-shot its future awaits). While any is outstanding
//! the thread polls the device non-blockingly with a backoff (`wait.rs`: it never parks inside
//! wgpu or the driver), and checks the device's health each round: when the device is lost every
//! outstanding completion resolves with `Error::DeviceLost` — a future never waits on a callback
//! that a dead device will not run.

use std::sync::{Arc, Mutex, Weak};

use crate::error::{Error, Result};
use crate::wait::Backoff;

/// A one-shot result shared by a map callback and the completion thread: whichever completes
/// it first wins.
pub(crate) struct Completion<T> {
    tx: Mutex<Option<crate::oneshot::Sender<Result<T>>>>,
}

impl<T> Completion<T> {
    /// A completion and the receiver its future awaits.
    pub fn new() -> (Arc<Completion<T>>, crate::oneshot::Receiver<Result<T>>) {
        let (tx, rx) = crate::oneshot::channel();
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
            tx.send(r);
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
    /// Starts the thread for `device`, spinning for `spin` after each completion (see
    /// `wait.rs`); `lost` says whether (and why) the device is lost.
    pub fn start(
        device: wgpu::Device,
        spin: std::time::Duration,
        lost: impl Fn() -> Option<Error> + Send + 'static,
    ) -> Result<Poller> {
        let (tx, rx) = flume::unbounded::<Msg>();
        let handle = std::thread::Builder::new()
            .name("bitnet-wgpu complete".into())
            .spawn(move || run(&rx, &device, spin, &lost))
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

    /// Polls until `waiter`'s map callback ran (it holds the only strong handle on it).
    pub fn watch(&self, waiter: &Arc<dyn Abort>) {
        let w = Watch {
            waiter: Arc::downgrade(waiter),
        };
        if self.tx.send(Some(w)).is_err() {
            waiter.abort(&Error::DeviceLost("the completion thread stopped".into()));
        }
    }
}

fn run(
    rx: &flume::Receiver<Msg>,
    device: &wgpu::Device,
    spin: std::time::Duration,
    lost: &dyn Fn() -> Option<Error>,
) {
    crate::engine_thread::enter_completion(device.clone());
    let mut outstanding: Vec<Weak<dyn Abort>> = Vec::new();
    let mut backoff = Backoff::spinning(spin);
    loop {
        // Block for work only when nothing is outstanding; otherwise take what arrived.
        if outstanding.is_empty() {
            match rx.recv() {
                Ok(Some(w)) => outstanding.push(w.waiter),
                _ => return,
            }
        }
        loop {
            match rx.try_recv() {
                Ok(Some(w)) => outstanding.push(w.waiter),
                Err(flume::TryRecvError::Empty) => break,
                Ok(None) | Err(flume::TryRecvError::Disconnected) => return,
            }
        }
        let before = outstanding.len();
        // Non-blocking: never holds wgpu's locks while the GPU works (see `wait.rs`). The poll
        // runs every ready map callback, an application's too on a shared device
        // (`Engine::from_device`): one that panics must not take this thread down, or every
        // read still waiting would wait for a poll that never comes. wgpu drops the rest of
        // that poll's callbacks; their reads fail with a typed error (their senders dropped)
        // and return their staging buffers unmapped (`staging_map.rs`, `Staging`).
        let polled = crate::wait::poll_guarded("completion", device);
        // A waiter is done once its map callback ran and dropped its handle.
        outstanding.retain(|o| o.strong_count() > 0);
        let failed = lost().or_else(|| {
            polled
                .err()
                .map(|e| Error::DeviceLost(format!("device poll failed: {e}")))
        });
        if let Some(e) = failed {
            for o in outstanding.drain(..).filter_map(|o| o.upgrade()) {
                o.abort(&e);
            }
        }
        if outstanding.len() < before {
            backoff.reset();
        } else if !outstanding.is_empty() {
            backoff.pause();
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::time::{Duration, Instant};

    use super::Abort;
    use crate::error::Error;

    /// A waiter that only keeps the completion thread polling.
    struct Keep;
    impl Abort for Keep {
        fn abort(&self, _: &Error) {}
    }

    /// Has the completion thread poll (nothing else does) until `fired`.
    fn completion_thread_runs(g: &crate::context::Gpu, fired: &AtomicBool) {
        let keep: Arc<dyn Abort> = Arc::new(Keep);
        g.poller.watch(&keep);
        let deadline = Instant::now() + Duration::from_secs(10);
        while !fired.load(Ordering::SeqCst) {
            assert!(Instant::now() < deadline, "the callback never ran");
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    /// An engine whose pending work is done, flushing only when asked.
    fn quiet_engine() -> crate::engine::Engine {
        let e = crate::test_gpu::gpu_with(crate::engine::EngineOptions {
            idle_flush: None,
            ..Default::default()
        });
        e.sync().unwrap();
        e
    }

    /// A map callback that panics on the completion thread leaves the thread running: reads after
    /// it complete. Before, the thread died with it and every later read failed as if the device
    /// were lost.
    #[test]
    fn a_callback_panicking_on_the_completion_thread_does_not_stop_it() {
        let e = crate::test_gpu::gpu();
        let g = e.gpu_context().unwrap();
        let (_buf, fired) = crate::test_gpu::panicking_map(g);
        completion_thread_runs(g, &fired);
        let x: Vec<f32> = (0..1000).map(|i| i as f32 * 0.5).collect();
        for _ in 0..4 {
            let t = e.upload_f32(&x, &[1000]).unwrap();
            assert_eq!(e.copy(&t).unwrap().read_f32().unwrap(), x);
        }
    }

    /// A map callback panicking in the poll that finds a destroyed device's queue empty makes
    /// wgpu drop that poll's remaining closures, the device-lost callback among them (it runs
    /// after the map callbacks, once): the engine must still learn that the device is lost.
    #[test]
    fn a_panicking_callback_does_not_hide_a_lost_device() {
        let e = quiet_engine();
        let g = e.gpu_context().unwrap();
        let (_buf, fired) = crate::test_gpu::panicking_map(g);
        // Destroyed with nothing in flight: the next poll finds the queue empty, fires the map
        // callback (which panics), then would run the device-lost callback.
        g.device.destroy();
        completion_thread_runs(g, &fired);
        let deadline = Instant::now() + Duration::from_secs(3);
        while !g.is_lost() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(5));
        }
        assert!(
            g.is_lost(),
            "the device was destroyed, but the engine does not know it"
        );
        assert!(matches!(e.sync(), Err(Error::DeviceLost(_))));
    }

    /// An application's map callback that panics inside a poll the engine runs on the caller's
    /// thread (here `sync`'s wait) stays inside the engine: `sync` returns, and the engine still
    /// works. Before, the panic came out of `Engine::sync`.
    #[test]
    fn a_callback_panicking_in_a_callers_poll_does_not_escape() {
        let e = quiet_engine();
        let g = e.gpu_context().unwrap();
        let (_buf, fired) = crate::test_gpu::panicking_map(g);
        let synced = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| e.sync()));
        assert!(synced.is_ok(), "the application's panic came out of sync");
        assert!(fired.load(Ordering::SeqCst), "sync's poll ran the callback");
        let x = [1.5f32, -2.0, 3.25, 0.0];
        let t = e.upload_f32(&x, &[4]).unwrap();
        assert_eq!(e.copy(&t).unwrap().read_f32().unwrap(), x);
    }
}
