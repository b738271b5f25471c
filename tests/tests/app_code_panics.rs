//! Application code that panics around the engine — its logger, its wakers, its stream sinks —
//! must not take an engine thread down or lose the engine's resources: later calls of every
//! clone work and give cpu-ref's bits.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll, Wake, Waker};
use std::time::{Duration, Instant};

use bitnet_tests::{gpu_engine, random_f32};
use bitnet_wgpu::{BatchingLinear, Linear, cpu_ref};

/// A logger that panics on warnings and errors while armed.
struct PanickingLogger;

static ARMED: AtomicBool = AtomicBool::new(false);

impl log::Log for PanickingLogger {
    fn enabled(&self, _: &log::Metadata) -> bool {
        true
    }
    fn log(&self, r: &log::Record) {
        if r.level() <= log::Level::Warn && ARMED.load(Ordering::SeqCst) {
            panic!("the application's logger failed on: {}", r.args());
        }
    }
    fn flush(&self) {}
}

/// A waker that panics when woken.
struct PanickingWaker;

impl Wake for PanickingWaker {
    fn wake(self: Arc<Self>) {
        panic!("the application's waker failed")
    }
}

/// Polls `f` with a panicking waker until it is ready (20 s at most).
fn poll_with_a_panicking_waker<T>(f: impl Future<Output = T>) -> Option<T> {
    let waker = Waker::from(Arc::new(PanickingWaker));
    let mut cx = Context::from_waker(&waker);
    let mut f = std::pin::pin!(f);
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(20) {
        if let Poll::Ready(v) = f.as_mut().poll(&mut cx) {
            return Some(v);
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    None
}

/// A waker that panics, whose engine then logs the panic to a logger that panics too: the
/// engine caught the first panic and logged it outside the catch, so the second ended the
/// submission thread (every later call of every clone: `DeviceLost`) or the batcher (its
/// neighbours' computed results dropped, every later `forward` refused). Run in a child
/// process: the logger is the process's.
#[test]
fn a_panicking_logger_does_not_stop_engine_threads() {
    const NAME: &str = "a_panicking_logger_does_not_stop_engine_threads";
    if !bitnet_tests::in_child_process(NAME, "BITNET_TEST_PANICKING_LOGGER", &[]) {
        return;
    }
    log::set_logger(&PanickingLogger).unwrap();
    log::set_max_level(log::LevelFilter::Trace);
    let e = gpu_engine();
    let v = random_f32(1, 4096, -1.0, 1.0);
    let t = e.upload_f32(&v, &[4096]).unwrap();
    let (n, k) = (16, 64);
    let w = cpu_ref::quantize_weights(&random_f32(3, n * k, -1.0, 1.0), n, k).unwrap();
    let batcher =
        BatchingLinear::new(Linear::new(&e, w.clone()), Duration::from_millis(20), 64).unwrap();
    let x = random_f32(4, 2 * k, -1.0, 1.0);
    let want = cpu_ref::bitlinear(&x, 2, &w).unwrap();
    assert_eq!(batcher.forward(&x, 2).unwrap(), want);

    ARMED.store(true, Ordering::SeqCst);
    // A read whose waker panics on the engine's thread.
    let read = poll_with_a_panicking_waker(e.copy(&t).unwrap().read_f32_async());
    // Two requests of one batch, the first's waker panicking on the batcher thread.
    let neighbour = batcher.forward_async(x.clone(), 2);
    let first = poll_with_a_panicking_waker(batcher.forward_async(x.clone(), 2));
    ARMED.store(false, Ordering::SeqCst);

    assert_eq!(read.expect("the read completed").unwrap(), v);
    assert_eq!(first.expect("the request completed").unwrap(), want);
    assert_eq!(bitnet_tests::block_on(neighbour).unwrap(), want);
    // Every thread still serves.
    assert_eq!(e.copy(&t).unwrap().read_f32().unwrap(), v);
    e.sync().unwrap();
    assert_eq!(batcher.forward(&x, 2).unwrap(), want);
}

/// A stream whose sink panics, or whose chunk iterator does, gives the upload ring back to the
/// engine: unwinding skipped the return, so every such stream left the engine without its ring.
#[test]
fn a_panicking_stream_sink_or_iterator_gives_the_ring_back() {
    let e = gpu_engine();
    e.set_dispatch_policy(bitnet_wgpu::DispatchPolicy::Gpu)
        .unwrap();
    let (n, k) = (32, 128);
    let w = cpu_ref::quantize_weights(&random_f32(5, n * k, -1.0, 1.0), n, k).unwrap();
    let layer = Linear::new(&e, w.clone());
    let data: Vec<Vec<f32>> = (0..6)
        .map(|i| random_f32(100 + i, 3 * k, -2.0, 2.0))
        .collect();
    let stream_ok = || {
        let st = e
            .stream_bitlinear(data.iter().map(Vec::as_slice), &layer, |i, y| {
                assert_eq!(y, &cpu_ref::bitlinear(&data[i], 3, &w).unwrap()[..]);
                Ok(())
            })
            .unwrap();
        assert_eq!(st.gpu_chunks, 6);
    };
    stream_ok();
    let ring = e.pool_stats().upload_staging_bytes;
    assert!(ring > 0, "the stream used the ring");
    let sink_panicked = catch_unwind(AssertUnwindSafe(|| {
        e.stream_bitlinear(data.iter().map(Vec::as_slice), &layer, |i, _| {
            assert!(i != 1, "the application's sink failed");
            Ok(())
        })
    }));
    assert!(sink_panicked.is_err());
    assert_eq!(
        e.pool_stats().upload_staging_bytes,
        ring,
        "stream_bitlinear's sink"
    );
    let chunks = data.iter().enumerate().map(|(i, c)| {
        assert!(i != 2, "the application's iterator failed");
        c.as_slice()
    });
    assert!(catch_unwind(AssertUnwindSafe(|| e.stream_upload(chunks.clone()))).is_err());
    assert_eq!(
        e.pool_stats().upload_staging_bytes,
        ring,
        "stream_upload's iterator"
    );
    let panicked = catch_unwind(AssertUnwindSafe(|| {
        e.stream_bitlinear(chunks, &layer, |_, _| Ok(()))
    }));
    assert!(panicked.is_err());
    assert_eq!(
        e.pool_stats().upload_staging_bytes,
        ring,
        "stream_bitlinear's iterator"
    );
    stream_ok();
}
