//! Where a batcher's CPU work runs (`cpu_work`).

use std::cell::Cell;
use std::time::Duration;

use rayon::prelude::*;

thread_local! {
    /// Test hook: this thread sees no shared batchers' pool, as where it could not be started.
    pub(super) static NO_SHARED_POOL: Cell<bool> = const { Cell::new(false) };
}

/// Where the batchers' shared pool could not be started, a batcher's CPU work (rayon tasks, as
/// cpu-ref's) still stays off the global pool: with every global worker held by a blocked
/// caller it completes. It ran right on the batcher thread before, whose rayon tasks went to the
/// global pool and waited there for the callers, who waited for the batcher (deadlock).
#[test]
fn batch_work_without_the_shared_pool_stays_off_the_global_pool() {
    let workers = rayon::current_num_threads();
    let (started_tx, started_rx) = flume::unbounded::<()>();
    let (release_tx, release_rx) = flume::unbounded::<()>();
    for _ in 0..workers {
        let (started, release) = (started_tx.clone(), release_rx.clone());
        rayon::spawn(move || {
            started.send(()).unwrap();
            let _ = release.recv();
        });
    }
    for _ in 0..workers {
        started_rx.recv().unwrap();
    }
    let (done_tx, done_rx) = flume::bounded(1);
    let batcher = std::thread::spawn(move || {
        NO_SHARED_POOL.set(true);
        super::ON_BATCHER_THREAD.set(true);
        let sum: u64 = super::cpu_work(|| (0..10_000u64).into_par_iter().sum());
        done_tx.send(sum).unwrap();
    });
    let got = done_rx.recv_timeout(Duration::from_secs(20));
    for _ in 0..workers {
        release_tx.send(()).unwrap();
    }
    batcher.join().unwrap();
    assert_eq!(
        got,
        Ok(10_000 * 9_999 / 2),
        "the batch's work waited for the global pool"
    );
}
