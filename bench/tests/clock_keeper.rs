//! The clock keeper (`bench/src/clock_keeper.rs`) on the engine's kind of device: off, it does
//! nothing; on, it keeps the GPU busy for at least the time asked and stops cleanly. (The bench
//! leaves it off on software adapters; here it is forced on lavapipe, so its kernel and waits
//! run in CI.)

use bitnet_bench::clock_keeper;
use std::time::{Duration, Instant};

#[test]
fn the_keeper_runs_only_when_started_and_for_the_time_asked() {
    let (_adapter, device, queue) =
        bitnet_wgpu::open_gpu_device().expect("a GPU adapter (lavapipe in CI)");

    // Without a keeper, heat returns at once.
    let idle = |why: &str| {
        let t = Instant::now();
        clock_keeper::heat(Duration::from_secs(5));
        assert!(t.elapsed() < Duration::from_secs(1), "{why}");
    };
    assert!(!clock_keeper::start(&device, &queue, true));
    assert!(!clock_keeper::running());
    idle("a keeper started off does nothing");

    assert!(clock_keeper::start(&device, &queue, false));
    assert!(clock_keeper::running());
    let asked = Duration::from_millis(30);
    let t = Instant::now();
    clock_keeper::heat(asked);
    assert!(
        t.elapsed() >= asked,
        "heated {:?} of {asked:?}",
        t.elapsed()
    );
    assert!(
        clock_keeper::running(),
        "a pass failed and stopped the keeper"
    );

    clock_keeper::stop();
    assert!(!clock_keeper::running());
    idle("a stopped keeper does nothing");
}
