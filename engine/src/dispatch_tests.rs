//! `BITNET_DISPATCH` parsing; re-entering the calibration lock.

use super::*;
use crate::cache_file::tests::warnings;

/// A blank `BITNET_DISPATCH` (as `BITNET_DISPATCH= cmd` leaves it) says nothing, as an unset
/// one: it was logged as an invalid policy.
#[test]
fn a_blank_setting_says_nothing() {
    warnings();
    for blank in ["", " ", "\t\n"] {
        assert_eq!(DispatchPolicy::from_setting(Some(blank)), None);
    }
    assert_eq!(DispatchPolicy::from_setting(None), None);
    let gpu = DispatchPolicy::from_setting(Some(" GPU "));
    assert_eq!(gpu, Some(DispatchPolicy::Gpu));
    assert_eq!(DispatchPolicy::from_setting(Some("fast")), None);
    let logged = warnings();
    let about = |v: &str| {
        logged
            .iter()
            .any(|w| w.contains(&format!("{DISPATCH_ENV}={v:?}")))
    };
    assert!(!about("") && !about(" ") && !about("\t\n"), "{logged:?}");
    assert!(about("fast"), "{logged:?}");
}

/// Code the engine runs on a thread while it holds this engine's calibration lock (an
/// application's logger, called for the calibration's own log lines) that re-enters the engine
/// there: an Auto decision takes the CPU (no model yet) and `calibrate` is refused, where both
/// locked the same mutex again and hung every thread that made an Auto decision.
#[test]
fn re_entering_calibration_on_the_calibrating_thread_does_not_hang() {
    let e = crate::test_gpu::gpu_with(crate::engine::EngineOptions::default());
    e.set_dispatch_policy(DispatchPolicy::Auto).unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    let e2 = e.clone();
    std::thread::spawn(move || {
        let g = e2.gpu_raw().expect("a GPU engine");
        let held = g.dispatch.lock_calibrating(g.id);
        let again = g.dispatch.lock_calibrating(g.id).is_none();
        let w = crate::workload::Workload::bitlinear(1, 64, 64, true);
        let choice = e2.choose_backend(&w);
        let calibrated = e2.calibrate().map(drop);
        drop(held);
        let _ = tx.send((again, choice, calibrated));
    });
    let (again, choice, calibrated) = rx
        .recv_timeout(std::time::Duration::from_secs(60))
        .expect("no hang");
    assert!(again, "the lock is this thread's already");
    assert_eq!(choice, BackendKind::Cpu);
    assert!(
        matches!(calibrated, Err(Error::Unsupported(_))),
        "{calibrated:?}"
    );
    // The lock is free again: a calibration from another thread runs.
    e.calibrate().unwrap();
}
