//! Application code the engine runs on its own threads — here a task polled inside its waker —
//! that calls back into the engine. A blocking call that would wait for the very thread making
//! it returns an error (submission thread) or is served there (completion and batcher threads);
//! the engine goes on working for every other caller. Each wait is bounded: a hang fails the
//! test instead of the suite.

use std::sync::mpsc;
use std::time::Duration;

use bitnet_tests::{gpu_engine_with, random_f32, spawn_inline, thread_name};
use bitnet_wgpu::{BatchingLinear, Engine, EngineOptions, Error, InjectedFault, Linear, cpu_ref};

/// Long enough for lavapipe; a deadlock shows as its expiry.
const BOUND: Duration = Duration::from_secs(60);

fn engine() -> Engine {
    gpu_engine_with(EngineOptions {
        idle_flush: None,
        ..EngineOptions::default()
    })
}

/// `rx`'s value; when none came in time, the test binary exits at once with a message naming
/// `what` (a deadlocked engine thread would also hang the engine's drop, and with it a panic's
/// unwinding: the suite would hang instead of failing).
fn within<T>(rx: mpsc::Receiver<T>, what: &str) -> T {
    rx.recv_timeout(BOUND).unwrap_or_else(|_| {
        // Straight to stderr: the test harness's capture would swallow `eprintln!` on exit.
        let message = format!("{what}: no result within {BOUND:?} (a deadlock)\n");
        let _ = std::io::Write::write_all(&mut std::io::stderr(), message.as_bytes());
        std::process::exit(101)
    })
}

/// `sync` on another thread succeeds in time: the engine was not wedged.
fn still_works(e: &Engine) {
    let (tx, rx) = mpsc::channel();
    let e = e.clone();
    std::thread::spawn(move || {
        let _ = tx.send(e.sync());
    });
    within(rx, "a later sync").unwrap();
}

/// A task resumed on the submission thread (its read failed there: the job panicked) that then
/// calls `sync` or a blocking read gets `Unsupported` — before, both waited for the thread
/// itself and every clone of the engine hung.
///
/// The read's job must not fail before the task's first poll (on this thread) is over, or the
/// task resumes here (one run in three did): the submission thread is held meanwhile.
#[test]
fn blocking_calls_on_the_submission_thread_are_refused() {
    let e = engine();
    let z = e.fill(&[64], 1.0).unwrap();
    let y = e.fill(&[64], 2.0).unwrap();
    e.sync().unwrap();
    let release = hold_the_submission_thread(&e);
    e.inject_fault(InjectedFault::JobPanic);
    let e2 = e.clone();
    let task = spawn_inline(async move {
        let read = z.read_f32_async().await;
        (read, thread_name(), e2.sync(), y.read_f32())
    });
    release.send(()).unwrap();
    let (read, on, synced, blocking_read) = within(task, "the resumed task");
    assert!(matches!(read, Err(Error::Panicked(_))), "{read:?}");
    assert!(on.contains("submit"), "resumed on {on:?}");
    assert!(matches!(synced, Err(Error::Unsupported(_))), "{synced:?}");
    assert!(
        matches!(blocking_read, Err(Error::Unsupported(_))),
        "{blocking_read:?}"
    );
    still_works(&e);
}

/// Blocks the submission thread until the returned sender sends (or drops): a read whose job
/// panics there wakes its waker on that thread, and this waker waits there. Retried until the
/// read's first poll is pending (its job may fail before that poll).
fn hold_the_submission_thread(e: &Engine) -> mpsc::Sender<()> {
    use std::sync::{Arc, Mutex};
    use std::task::{Context, Wake, Waker};
    struct Holds {
        holding: mpsc::Sender<String>,
        release: Mutex<mpsc::Receiver<()>>,
    }
    impl Wake for Holds {
        fn wake(self: Arc<Self>) {
            let _ = self.holding.send(thread_name());
            let _ = self.release.lock().unwrap().recv_timeout(BOUND);
        }
    }
    let x = e.fill(&[64], 3.0).unwrap();
    e.sync().unwrap();
    loop {
        let (holding, held) = mpsc::channel();
        let (release, released) = mpsc::channel();
        let waker = Waker::from(Arc::new(Holds {
            holding,
            release: Mutex::new(released),
        }));
        e.inject_fault(InjectedFault::JobPanic);
        let mut read = Box::pin(x.read_f32_async());
        if read
            .as_mut()
            .poll(&mut Context::from_waker(&waker))
            .is_pending()
        {
            let on = within(held, "the holding waker");
            assert!(on.contains("submit"), "held {on:?}");
            return release;
        }
    }
}

/// A task resumed on the completion thread that makes a blocking read there gets its values:
/// the read's wait polls the device itself (before, it parked for a callback only that thread
/// would run, and hung).
#[test]
fn a_blocking_read_on_the_completion_thread_completes() {
    let e = engine();
    let v: Vec<f32> = (0..64).map(|i| i as f32 * 0.5).collect();
    let y = e.copy(&e.upload_f32(&v, &[64]).unwrap()).unwrap();
    let z = e.copy(&y).unwrap();
    let task = spawn_inline(async move {
        let first = y.read_f32_async().await;
        (first, thread_name(), z.read_f32())
    });
    let (first, on, second) = within(task, "the resumed task");
    assert_eq!(first.unwrap(), v);
    assert!(on.contains("complete"), "resumed on {on:?}");
    assert_eq!(second.unwrap(), v);
    still_works(&e);
}

/// A layer and the rows of `m` requests' worth of input.
fn layer(e: &Engine) -> (Linear, Vec<f32>, Vec<f32>, usize) {
    let (n, k, m) = (16, 64, 2);
    let w = cpu_ref::quantize_weights(&random_f32(31, n * k, -1.0, 1.0), n, k).unwrap();
    let x = random_f32(32, m * k, -2.0, 2.0);
    let want = cpu_ref::bitlinear(&x, m, &w).unwrap();
    (Linear::new(e, w), x, want, m)
}

/// A task resumed on the batcher thread: a blocking `forward` there runs the layer at once
/// (before, it waited for a batch of the thread itself, and the batcher hung for all callers),
/// and dropping the batcher's last handle there neither panics (a thread joining itself) nor
/// fails another request of the same batch.
#[test]
fn a_batchers_own_thread_may_call_and_drop_it() {
    let e = engine();
    let (linear, x, want, m) = layer(&e);
    let b = BatchingLinear::new(linear, Duration::from_millis(300), 64).unwrap();
    let (b2, x2) = (b.clone(), x.clone());
    let task = spawn_inline(async move {
        let first = b2.forward_async(x2.clone(), m).await;
        let on = thread_name();
        let again = b2.forward(&x2, m);
        drop(b2); // the last handle, once `b` below is gone
        (first, on, again)
    });
    // In the same batch window: merged with the task's request.
    let other = spawn_inline(b.forward_async(x, m));
    drop(b);
    let other = within(other, "the other request");
    let (first, on, again) = within(task, "the resumed task");
    assert_eq!(first.unwrap(), want);
    assert!(on.contains("batcher"), "resumed on {on:?}");
    assert_eq!(again.unwrap(), want);
    assert_eq!(other.unwrap(), want);
    still_works(&e);
}
