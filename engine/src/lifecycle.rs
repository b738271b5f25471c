//! One process-wide lock between the births and deaths of wgpu devices and the queue submissions
//! of every engine.
//!
//! The NVIDIA Vulkan driver (580.159, H200) can deadlock when one thread creates or destroys a
//! device (`vkCreateDevice` with the pipelines wgpu builds inside `request_device`,
//! `vkDestroyDevice`, `vkDestroyInstance`, adapter enumeration) while other threads submit to
//! their own devices: with 16 test threads each opening and dropping its own engine, about one
//! run in four hung forever, every thread parked on a driver or loader mutex and one driver
//! thread spinning (stacks taken with gdb on the H200 machine, 2026-11-28). Serializing creation
//! and destruction alone left one hang in 24 runs (a `vkDestroyDevice` against two submits), so
//! submissions take the same lock shared: submits of different engines still run concurrently,
//! but never while a device is being born or destroyed.
//!
//! The Vulkan spec allows all of this concurrently; the lock is the engine's defence against
//! drivers that do not, and costs an uncontended read lock per submission plus milliseconds per
//! engine created or dropped. [`serialized`] runs creation; a [`Gpu`](crate::context::Gpu)
//! drops its device under the lock ([`hold_for_drop`] in its `Drop`, released by the
//! [`ReleaseAfterFields`] field declared last); [`submitting`] wraps `queue.submit`.
//!
//! The exclusive side is re-entrant per thread (a failure path that drops a half-built device
//! while creating one cannot deadlock itself), and a thread holding it submits without the
//! shared side.

use std::cell::{Cell, RefCell};
use std::sync::{RwLock, RwLockWriteGuard};

static LIFECYCLE: RwLock<()> = RwLock::new(());

thread_local! {
    /// How many nested exclusive holds this thread has.
    static DEPTH: Cell<u32> = const { Cell::new(0) };
    /// The exclusive guard while `DEPTH > 0`.
    static GUARD: RefCell<Option<RwLockWriteGuard<'static, ()>>> = const { RefCell::new(None) };
}

fn acquire() {
    if DEPTH.get() == 0 {
        let guard = LIFECYCLE.write().unwrap_or_else(|e| e.into_inner());
        GUARD.with(|g| *g.borrow_mut() = Some(guard));
    }
    DEPTH.set(DEPTH.get() + 1);
}

fn release() {
    let depth = DEPTH.get().saturating_sub(1);
    DEPTH.set(depth);
    if depth == 0 {
        GUARD.with(|g| g.borrow_mut().take());
    }
}

/// Runs `f` (adapter enumeration, device creation) holding the lifecycle lock exclusively.
pub(crate) fn serialized<T>(f: impl FnOnce() -> T) -> T {
    struct Hold;
    impl Drop for Hold {
        fn drop(&mut self) {
            release();
        }
    }
    acquire();
    let _hold = Hold;
    f()
}

/// Runs `f` (a queue submission) holding the lifecycle lock shared: concurrent with other
/// submissions, never with a device's creation or destruction.
pub(crate) fn submitting<T>(f: impl FnOnce() -> T) -> T {
    if DEPTH.get() > 0 {
        return f();
    }
    let _shared = LIFECYCLE.read().unwrap_or_else(|e| e.into_inner());
    f()
}

/// Takes the lifecycle lock exclusively for the rest of a context's drop: call it from the
/// context's `Drop` impl; the [`ReleaseAfterFields`] field, declared last, releases it once
/// every field (the device among them) has been dropped.
pub(crate) fn hold_for_drop() {
    acquire();
}

/// The last field of a context that drops a device: releases the hold of [`hold_for_drop`].
#[derive(Debug, Default)]
pub(crate) struct ReleaseAfterFields;

impl Drop for ReleaseAfterFields {
    fn drop(&mut self) {
        release();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nested_holds_do_not_deadlock_and_release_fully() {
        serialized(|| {
            serialized(|| assert_eq!(DEPTH.get(), 2));
            // The holder may submit.
            assert_eq!(submitting(|| 7), 7);
            hold_for_drop();
            drop(ReleaseAfterFields);
            assert_eq!(DEPTH.get(), 1);
        });
        assert_eq!(DEPTH.get(), 0);
        // Free again: other threads can take it either way.
        std::thread::spawn(|| serialized(|| ())).join().unwrap();
        let a = std::thread::spawn(|| submitting(|| 1));
        assert_eq!(submitting(|| 2) + a.join().unwrap(), 3);
    }
}
