//! Tests of `device_hooks.rs`: the lost callback's guard and the engines a device's callbacks
//! reach.

use std::sync::atomic::Ordering;
use std::sync::{Arc, Weak};

use super::{Attached, Health, LostOnUnwind};

/// A list of engines' health attached to one device.
fn attached(engines: &[&Arc<Health>]) -> Arc<Attached> {
    let a = Arc::new(Attached::default());
    a.0.lock()
        .unwrap()
        .extend(engines.iter().map(|h| Arc::downgrade(h)));
    a
}

/// The lost callback's guard, dropped while a panic unwinds: a loss for a live context (a
/// panicking map callback made wgpu drop it), none for a context being dropped (the engine's
/// last owner unwinding, which used to log a device loss that never happened) — per engine of
/// the device.
#[test]
fn a_dropped_lost_callback_is_a_loss_only_for_live_contexts() {
    let (live, closing) = (Arc::new(Health::default()), Arc::new(Health::default()));
    closing.closing.store(true, Ordering::Release);
    let guard = LostOnUnwind(attached(&[&live, &closing]));
    let unwound = std::panic::catch_unwind(std::panic::AssertUnwindSafe(move || {
        let _guard = guard;
        panic!("a callback's panic (expected in this test)");
    }));
    assert!(unwound.is_err());
    assert!(live.is_lost());
    assert!(!closing.is_lost());
    // Dropped without a panic: nothing to report.
    let health = Arc::new(Health::default());
    drop(LostOnUnwind(attached(&[&health])));
    assert!(!health.is_lost());
}

/// The callbacks reach every engine still alive, and skip the dropped ones.
#[test]
fn callbacks_reach_every_live_engine_of_the_device() {
    let (a, b) = (Arc::new(Health::default()), Arc::new(Health::default()));
    let gone = Arc::new(Health::default());
    let list = attached(&[&a, &gone, &b]);
    let gone_weak: Weak<Health> = Arc::downgrade(&gone);
    drop(gone);
    list.each(|h| {
        h.note_uncaptured(crate::Error::Validation {
            context: "test".into(),
            message: "m".into(),
        })
    });
    list.each(|h| h.mark_lost("test".into()));
    for h in [&a, &b] {
        assert!(h.is_lost());
        assert!(matches!(h.lost_error(), Some(crate::Error::DeviceLost(r)) if r == "test"));
        assert!(h.take_uncaptured().is_some());
        assert!(h.take_uncaptured().is_none(), "reported once");
    }
    assert!(gone_weak.upgrade().is_none());
}

/// A lost callback replaced while an engine's closures are being installed hands its engines to
/// the new list (`INSTALLING`); replaced from outside (an application's own callback), it hands
/// them nowhere and marks nothing.
#[test]
fn a_replaced_callback_hands_its_engines_to_the_new_one() {
    let (first, second) = (Arc::new(Health::default()), Arc::new(Health::default()));
    let new = attached(&[&second]);
    let replaced = LostOnUnwind(attached(&[&first]));
    super::INSTALLING.with(|i| *i.borrow_mut() = Some(Arc::clone(&new)));
    drop(replaced);
    super::INSTALLING.with(|i| *i.borrow_mut() = None);
    new.each(|h| h.mark_lost("gone".into()));
    assert!(first.is_lost() && second.is_lost());

    let lone = Arc::new(Health::default());
    drop(LostOnUnwind(attached(&[&lone])));
    assert!(!lone.is_lost());
}
