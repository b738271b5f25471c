//! A task that its waker polls at once, on whichever thread wakes it — an executor that runs
//! tasks on wake, which the `Waker` contract allows. The engine wakes futures on its own threads
//! (submission, completion, batcher), so such a task runs there.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, mpsc};
use std::task::{Context, Wake, Waker};

struct InlineTask {
    future: Mutex<Option<Pin<Box<dyn Future<Output = ()> + Send>>>>,
}

impl Wake for InlineTask {
    fn wake(self: Arc<Self>) {
        // Busy: the task is being polled already (the waker was called from inside that poll).
        let Ok(mut slot) = self.future.try_lock() else {
            return;
        };
        let waker = Waker::from(Arc::clone(&self));
        let mut cx = Context::from_waker(&waker);
        if slot
            .as_mut()
            .is_some_and(|f| f.as_mut().poll(&mut cx).is_ready())
        {
            *slot = None;
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
    });
    Wake::wake(task);
    out
}

/// The name of the current thread ("" when unnamed).
pub fn thread_name() -> String {
    std::thread::current().name().unwrap_or("").to_string()
}
