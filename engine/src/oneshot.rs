//! One-shot channels for the replies that application futures await: a submission-thread
//! job's result (`Scheduler::call_async`), a read's mapped bytes (`poller::Completion`), a
//! batched request's rows (`BatchingLinear::forward_async`) and the end of another read's claim
//! on a launch's status (`fate.rs`).
//!
//! Why not flume's: flume wakes an async receiver while it still holds the channel's lock. A
//! waker that polls its task right there (an executor that runs tasks on wake, which the
//! `Waker` contract allows) re-enters the same channel and deadlocks the sending thread on
//! itself — and that thread is the engine's submission or completion thread, so every clone of
//! the engine hung for good. Here the value is stored under the lock and the wakers are taken
//! out of it; they run after it is released, so a re-entrant poll finds the value.
//!
//! One value, any number of receivers (clones) waiting; the first to receive takes the value,
//! the others see the channel disconnected. A sender dropped without sending disconnects it.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

/// A one-shot channel: its sender and its (first) receiver.
pub(crate) fn channel<T>() -> (Sender<T>, Receiver<T>) {
    let shared = Arc::new(Shared {
        state: Mutex::new(State {
            value: None,
            closed: false,
            wakers: Vec::new(),
        }),
        arrived: Condvar::new(),
    });
    (Sender(Arc::clone(&shared)), Receiver(shared))
}

struct Shared<T> {
    state: Mutex<State<T>>,
    /// Signalled when the value arrives or the sender goes (blocking receivers).
    arrived: Condvar,
}

struct State<T> {
    value: Option<T>,
    /// The sender sent or was dropped: nothing more will arrive.
    closed: bool,
    /// Async receivers waiting.
    wakers: Vec<Waker>,
}

impl<T> Shared<T> {
    /// The state; a panic elsewhere while it was held leaves nothing half-done in it.
    fn state(&self) -> MutexGuard<'_, State<T>> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Closes the channel, with `value` if any, and wakes every receiver after the lock is
    /// released (see the module docs).
    fn close(&self, value: Option<T>) {
        let wakers = {
            let mut st = self.state();
            if st.closed {
                return;
            }
            st.closed = true;
            st.value = value;
            std::mem::take(&mut st.wakers)
        };
        self.arrived.notify_all();
        for w in wakers {
            // An application's waker that panics must not unwind through the engine's thread
            // (into wgpu's poll, dropping other reads' callbacks) nor skip the other wakers.
            if std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| w.wake())).is_err() {
                crate::scheduler::log_quietly(|| {
                    log::error!("bitnet-wgpu: an application waker panicked")
                });
            }
        }
    }
}

/// The sending side: [`Sender::send`] once, or drop it to disconnect.
pub(crate) struct Sender<T>(Arc<Shared<T>>);

impl<T> Sender<T> {
    /// Delivers `value` (kept until a receiver takes it, dropped with the channel if none does).
    pub fn send(self, value: T) {
        self.0.close(Some(value));
    }

    /// Whether every receiver was dropped: nobody can take a value any more (receivers are only
    /// cloned from receivers, so none can appear again).
    pub fn unheard(&self) -> bool {
        Arc::strong_count(&self.0) == 1
    }
}

impl<T> Drop for Sender<T> {
    fn drop(&mut self) {
        self.0.close(None);
    }
}

/// The receiving side; clones wait on the same value.
pub(crate) struct Receiver<T>(Arc<Shared<T>>);

impl<T> Clone for Receiver<T> {
    fn clone(&self) -> Self {
        Receiver(Arc::clone(&self.0))
    }
}

/// The sender went without sending (or another receiver took the value).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Disconnected;

/// Why [`Receiver::recv_timeout`] returned without a value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum RecvTimeoutError {
    /// Nothing yet.
    Timeout,
    /// Nothing will come.
    Disconnected,
}

impl<T> Receiver<T> {
    /// A future of the value.
    pub fn recv_async(self) -> Recv<T> {
        Recv(self)
    }

    /// The value, waiting at most `timeout` for it.
    pub fn recv_timeout(&self, timeout: Duration) -> Result<T, RecvTimeoutError> {
        let deadline = Instant::now() + timeout;
        let mut st = self.0.state();
        loop {
            if let Some(v) = st.value.take() {
                return Ok(v);
            }
            if st.closed {
                return Err(RecvTimeoutError::Disconnected);
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(RecvTimeoutError::Timeout);
            }
            st = self
                .0
                .arrived
                .wait_timeout(st, left)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
    }

    /// Whether `other` receives from the same channel.
    pub fn same_channel(&self, other: &Receiver<T>) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }
}

/// The future of [`Receiver::recv_async`].
pub(crate) struct Recv<T>(Receiver<T>);

impl<T> Future for Recv<T> {
    type Output = Result<T, Disconnected>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut st = (self.0).0.state();
        if let Some(v) = st.value.take() {
            return Poll::Ready(Ok(v));
        }
        if st.closed {
            return Poll::Ready(Err(Disconnected));
        }
        if !st.wakers.iter().any(|w| w.will_wake(cx.waker())) {
            st.wakers.push(cx.waker().clone());
        }
        Poll::Pending
    }
}

#[cfg(test)]
#[path = "oneshot_tests.rs"]
mod tests;
