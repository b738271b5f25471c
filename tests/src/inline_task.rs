//! A task that its waker polls at once, on whichever thread wakes it — an executor that runs
//! tasks on wake, which the `Waker` contract allows. The engine wakes futures on its own threads
//! (submission, completion, batcher), so such a task runs there.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::task::{Context, Wake, Waker};

struct InlineTask {
    future: Mutex<Option<Pin<Box<dyn Future<Output = ()> + Send>>>>,
    /// A wake that came while the task was being polled: the poller polls again.
    woken_meanwhile: AtomicBool,
}

impl Wake for InlineTask {
    fn wake(self: Arc<Self>) {
        self.woken_meanwhile.store(true, Ordering::SeqCst);
        // Busy: the thread polling the task now polls it again (the flag), or the wake came
        // from inside that poll. A wake dropped here left the task unpolled for good.
        let Ok(mut slot) = self.future.try_lock() else {
            return;
        };
        let waker = Waker::from(Arc::clone(&self));
        let mut cx = Context::from_waker(&waker);
        while self.woken_meanwhile.swap(false, Ordering::SeqCst) {
            if slot
                .as_mut()
                .is_none_or(|f| f.as_mut().poll(&mut cx).is_ready())
            {
                *slot = None;
                return;
            }
        }
        drop(slot);
        // A wake between the last check and the unlock found the lock still held.
        if self.woken_meanwhile.load(Ordering::SeqCst) {
            self.wake();
        }
    }
}

/// Starts `future` as an inline-polled task (its first poll on this thread); its output arrives
/// on the returned channel.
pub fn spawn_inline<T: Send + 'static>(
    future: impl Future<Output = T> + Send + 'static,
) -> mpsc::Receiver<T> {
    let (done, out) = mpsc::channel();
    let task = Arc::new(InlineTask {
        future: Mutex::new(Some(Box::pin(async move {
            let _ = done.send(future.await);
        }))),
        woken_meanwhile: AtomicBool::new(false),
    });
    Wake::wake(task);
    out
}

/// The name of the current thread ("" when unnamed).
pub fn thread_name() -> String {
    std::thread::current().name().unwrap_or("").to_string()
}
