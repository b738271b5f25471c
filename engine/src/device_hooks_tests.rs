//! Tests of `device_hooks.rs`: the lost callback's guard and the engines a device's callbacks
//! reach.

use std::sync::atomic::Ordering;
use std::sync::{Arc, Weak};

use super::{Attached, Health, LostOnUnwind};

thread_local! {
    /// Run by `attach` on this thread between its two installs (once): a test's way to make
    /// another engine attach right there.
    pub(super) static BETWEEN_INSTALLS: std::cell::Cell<Option<Box<dyn FnOnce()>>> =
        const { std::cell::Cell::new(None) };
}

/// Raises an error outside any error scope on `device`: a buffer that may not be both mapped
/// for reading and storage.
fn raise_uncaptured(device: &wgpu::Device) {
    let _bad = device.create_buffer(&wgpu::BufferDescriptor {
        label: Some("device_hooks test: invalid on purpose"),
        size: 16,
        usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::STORAGE,
        mapped_at_creation: false,
    });
}

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

/// A callback replaced on a thread that unwinds (an engine made in a `Drop` during a panic) hands
/// its engines over like any other: they were marked lost, falsely, and reached by nothing.
#[test]
fn a_callback_replaced_while_unwinding_hands_its_engines_over() {
    let (first, second) = (Arc::new(Health::default()), Arc::new(Health::default()));
    let new = attached(&[&second]);
    let replaced = LostOnUnwind(attached(&[&first]));
    let new_in = Arc::clone(&new);
    let unwound = std::panic::catch_unwind(std::panic::AssertUnwindSafe(move || {
        struct InstallOnDrop(Option<LostOnUnwind>, Arc<Attached>);
        impl Drop for InstallOnDrop {
            fn drop(&mut self) {
                super::INSTALLING.with(|i| *i.borrow_mut() = Some(Arc::clone(&self.1)));
                drop(self.0.take());
                super::INSTALLING.with(|i| *i.borrow_mut() = None);
            }
        }
        let _guard = InstallOnDrop(Some(replaced), new_in);
        panic!("a panic unwinding through an engine's creation (expected in this test)");
    }));
    assert!(unwound.is_err());
    assert!(!first.is_lost(), "no loss happened");
    new.each(|h| h.mark_lost("gone".into()));
    assert!(first.is_lost(), "the new callback reaches the first engine");
}

/// Engines attached from three threads at once on one device all hear an error no scope
/// caught: both closures of an engine go in together (the error handler installed last had
/// been one that reached only its own engine, in about 1 round in 10).
#[test]
fn engines_attached_at_once_all_hear_uncaptured_errors() {
    let e = crate::test_gpu::gpu();
    let device = e.gpu_context().expect("a GPU engine").device.clone();
    for round in 0..100 {
        let healths: Vec<Arc<Health>> = (0..3).map(|_| Arc::new(Health::default())).collect();
        let barrier = std::sync::Barrier::new(3);
        std::thread::scope(|s| {
            for h in &healths {
                let (device, barrier) = (&device, &barrier);
                s.spawn(move || {
                    barrier.wait();
                    super::attach(device, h);
                });
            }
        });
        raise_uncaptured(&device);
        for (i, h) in healths.iter().enumerate() {
            assert!(
                h.take_uncaptured().is_some(),
                "round {round}: engine {i} missed the error"
            );
        }
    }
}

/// An engine attaching while another is between its two installs: the first one's error
/// handler, installed last, reached only the list the second had emptied, and no engine heard
/// an uncaptured error (a reviewer's forced interleaving). The second now waits for the first.
#[test]
fn an_engine_attaching_between_anothers_two_installs() {
    let e = crate::test_gpu::gpu();
    let device = e.gpu_context().expect("a GPU engine").device.clone();
    let (first, second) = (Arc::new(Health::default()), Arc::new(Health::default()));
    let (d2, h2) = (device.clone(), Arc::clone(&second));
    let other = std::sync::Arc::new(std::sync::Mutex::new(None));
    let slot = std::sync::Arc::clone(&other);
    BETWEEN_INSTALLS.set(Some(Box::new(move || {
        let t = std::thread::spawn(move || super::attach(&d2, &h2));
        // Time for the other engine to attach right here, if nothing holds it back.
        std::thread::sleep(std::time::Duration::from_millis(100));
        *slot.lock().unwrap() = Some(t);
    })));
    super::attach(&device, &first);
    let t = other.lock().unwrap().take().expect("the hook ran");
    t.join().unwrap();
    raise_uncaptured(&device);
    assert!(
        first.take_uncaptured().is_some(),
        "the first engine missed the error"
    );
    assert!(
        second.take_uncaptured().is_some(),
        "the second engine missed the error"
    );
}
