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

use std::cell::Cell;

use parking_lot::lock_api::RawRwLock as _;

/// A raw lock: no guard to keep in a thread-local with a destructor (a context dropped from a
/// thread-local destructor found that thread-local destroyed, panicked there, and aborted).
static LIFECYCLE: parking_lot::RawRwLock = parking_lot::RawRwLock::INIT;

thread_local! {
    /// How many nested exclusive holds this thread has (no destructor: usable in teardown).
    static DEPTH: Cell<u32> = const { Cell::new(0) };
}

fn acquire() {
    if DEPTH.get() == 0 {
        LIFECYCLE.lock_exclusive();
    }
    DEPTH.set(DEPTH.get() + 1);
}

fn release() {
    let depth = DEPTH.get();
    if depth == 0 {
        return; // no hold to release (a release without its acquire)
    }
    DEPTH.set(depth - 1);
    if depth == 1 {
        // SAFETY: this thread took it exclusively in `acquire` (depth went 0 -> 1).
        unsafe { LIFECYCLE.unlock_exclusive() };
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
    struct Shared;
    impl Drop for Shared {
        fn drop(&mut self) {
            // SAFETY: taken shared just below, by this thread.
            unsafe { LIFECYCLE.unlock_shared() };
        }
    }
    LIFECYCLE.lock_shared();
    let _shared = Shared;
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

    /// A context dropped from an application's thread-local destructor takes and releases the
    /// lock there: the guard used to live in a thread-local of its own, which a thread's
    /// teardown may destroy first (thread-locals die in reverse order of first use). The access
    /// then panicked inside a destructor, which aborts the process.
    #[test]
    fn the_lock_works_inside_thread_local_destructors() {
        struct DropsAContext;
        impl Drop for DropsAContext {
            fn drop(&mut self) {
                // What `Gpu::drop` does, then a creation's and a submission's use.
                hold_for_drop();
                drop(ReleaseAfterFields);
                serialized(|| assert_eq!(submitting(|| 5), 5));
                assert_eq!(submitting(|| 6), 6);
            }
        }
        thread_local! {
            static APP: std::cell::RefCell<Option<DropsAContext>> =
                const { std::cell::RefCell::new(None) };
        }
        std::thread::spawn(|| {
            // The application's thread-local first, the engine's use of the lock after.
            APP.with(|a| *a.borrow_mut() = Some(DropsAContext));
            serialized(|| ());
        })
        .join()
        .unwrap();
        // Released: another thread takes it exclusively.
        std::thread::spawn(|| serialized(|| ())).join().unwrap();
    }
}
