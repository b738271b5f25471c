//! Tests of the kernels that wait inside their dispatch (the linear chain, one-dispatch weight
//! quantization) on a machine that may stall: their waits are bounded by a count of polls, not
//! a time, so a worker thread of lavapipe descheduled for a few hundred milliseconds (another
//! process on every core) can run a waiter out. That run gives up — correctly: the engine
//! reports [`Error::Aborted`](bitnet_wgpu::Error::Aborted) or re-runs the work another way,
//! and the device stops using such kernels — and a test that checks the waiting kernel
//! itself has then tested nothing. [`until_waits_hold`] runs such a test again on a fresh engine
//! (its device has not given up on them); wrong values still fail at once.

use bitnet_wgpu::Engine;

/// Fresh engines [`until_waits_hold`] tries before it fails.
pub const WAIT_ATTEMPTS: usize = 3;

/// Runs `attempt` on fresh engines from `make` until it returns `Some` with every wait on that
/// engine still holding ([`EngineInfo::in_dispatch_waits`](bitnet_wgpu::EngineInfo) true
/// afterwards: a wait that gave up under a call that re-ran quietly, such as the slice API,
/// would leave the attempt's later checks on the kernels that do not wait), at most
/// [`WAIT_ATTEMPTS`] times; `None` means the attempt saw the waiting kernel not run. Panics
/// naming `what` when it did not run although no wait gave up on that engine (something else
/// turned it off), or when every attempt gave up: a kernel whose waits never hold is broken,
/// not slow.
pub fn until_waits_hold<T>(
    what: &str,
    make: impl Fn() -> Engine,
    attempt: impl Fn(&Engine) -> Option<T>,
) -> T {
    for i in 1..=WAIT_ATTEMPTS {
        let e = make();
        let done = attempt(&e);
        let held = e.info().in_dispatch_waits;
        match done {
            Some(done) if held => return done,
            Some(_) => {}
            None => assert!(
                !held,
                "{what}: the waiting kernel did not run, and no wait gave up on its device"
            ),
        }
        eprintln!(
            "{what}: an in-dispatch wait gave up on attempt {i} of {WAIT_ATTEMPTS} (a stalled \
             worker thread?); trying a fresh engine"
        );
    }
    panic!("{what}: in-dispatch waits gave up on {WAIT_ATTEMPTS} fresh engines in a row");
}
