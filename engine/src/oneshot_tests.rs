//! Tests of the one-shot channel (`oneshot.rs`).

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, Wake, Waker};
use std::time::Duration;

use super::{Disconnected, Receiver, RecvTimeoutError, channel};

// The integration tests' inline-polled task (a task its waker polls at once, on the waking
// thread), shared by path: this crate cannot depend on the test crate.
#[allow(dead_code)]
#[path = "../../tests/src/inline_task.rs"]
mod inline_task;
use inline_task::spawn_inline;

/// Runs `f` on a thread; panics if it gives no result within `secs` (a hang).
fn bounded<T: Send + 'static>(secs: u64, f: impl FnOnce() -> T + Send + 'static) -> T {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(f());
    });
    rx.recv_timeout(Duration::from_secs(secs))
        .expect("no result in time: a hang")
}

/// The value reaches a task polled inside the waker, and the sender returns: the wake-up runs
/// after the channel's lock is released (with flume's channel this sender deadlocked on itself).
#[test]
fn a_waker_that_polls_inline_gets_the_value() {
    let (tx, rx) = channel::<u32>();
    let got = spawn_inline(rx.recv_async());
    assert!(got.try_recv().is_err(), "nothing sent yet");
    bounded(10, move || tx.send(7));
    assert_eq!(got.try_recv(), Ok(Ok(7)));
}

/// The same for a sender dropped unsent, with two receivers (clones) waiting inline.
#[test]
fn inline_wakers_see_a_dropped_sender() {
    let (tx, rx) = channel::<()>();
    let got = [
        spawn_inline(rx.clone().recv_async()),
        spawn_inline(rx.recv_async()),
    ];
    bounded(10, move || drop(tx));
    for g in got {
        assert_eq!(g.try_recv(), Ok(Err(Disconnected)));
    }
}

/// Blocking receives: the value, a timeout while nothing came, and a disconnect; the first of
/// two receivers takes the value.
#[test]
fn blocking_receives_take_the_value_once() {
    let (tx, rx) = channel::<&str>();
    let other: Receiver<&str> = rx.clone();
    assert!(rx.same_channel(&other));
    assert_eq!(
        rx.recv_timeout(Duration::from_millis(5)),
        Err(RecvTimeoutError::Timeout)
    );
    let sender = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(20));
        tx.send("reply");
    });
    assert_eq!(rx.recv_timeout(Duration::from_secs(10)), Ok("reply"));
    assert_eq!(
        other.recv_timeout(Duration::from_millis(5)),
        Err(RecvTimeoutError::Disconnected)
    );
    sender.join().unwrap();
    let (tx, rx) = channel::<u8>();
    drop(tx);
    assert_eq!(pollster::block_on(rx.recv_async()), Err(Disconnected));
}

/// A future polled before the value arrives is woken once it does (an ordinary executor).
#[test]
fn a_pending_future_is_woken() {
    let (tx, rx) = channel::<u64>();
    let mut fut = rx.recv_async();
    let mut cx = Context::from_waker(Waker::noop());
    assert!(matches!(Pin::new(&mut fut).poll(&mut cx), Poll::Pending));
    std::thread::spawn(move || tx.send(42));
    assert_eq!(pollster::block_on(fut), Ok(42));
}

/// A waker that panics (an application's) neither unwinds into the sender — the engine's
/// thread, where it would drop other reads' map callbacks inside wgpu's poll — nor keeps the
/// other receivers from being woken.
#[test]
fn a_panicking_waker_does_not_stop_the_others() {
    struct Panics;
    impl Wake for Panics {
        fn wake(self: Arc<Self>) {
            panic!("an application's waker (expected in this test)");
        }
    }
    let (tx, rx) = channel::<u8>();
    let mut first = rx.clone().recv_async();
    let panicking = Waker::from(Arc::new(Panics));
    assert!(matches!(
        Pin::new(&mut first).poll(&mut Context::from_waker(&panicking)),
        Poll::Pending
    ));
    let got = spawn_inline(rx.recv_async());
    tx.send(3);
    assert_eq!(got.try_recv(), Ok(Ok(3)));
}
