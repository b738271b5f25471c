//! Which of the engine's own threads this is, for the blocking calls that must not wait on it.
//!
//! The engine runs application code on its threads: a future's waker is called on the thread
//! that completes the future (the submission or the completion thread; an executor may poll the
//! task right there), and the application's logger runs wherever the engine logs. A blocking
//! call made from there waits for work that only this same thread would do:
//! - on a submission thread, a call to its scheduler (`Scheduler::call`: `sync`, uploads,
//!   host-facing ops) or a blocking read (whose first step is a job for that thread) would wait
//!   for itself; it returns [`Error::Unsupported`](crate::Error) instead;
//! - on a completion thread, a blocking read would park until a map callback that only this
//!   thread's polls run; its wait polls the thread's device itself instead.
//!
//! (A blocking `BatchingLinear::forward` on its own batcher thread runs the layer directly, and
//! a `BatchingLinear` dropped on an engine thread does not wait for its batcher: `batching.rs`.)

use std::cell::RefCell;

use crate::error::{Error, Result};

/// An engine thread's role (none on the application's threads).
enum Role {
    /// A submission thread, by the address of its `Scheduler`.
    Submission(usize),
    /// A completion thread and the device it polls.
    Completion(wgpu::Device),
}

thread_local! {
    static ROLE: RefCell<Option<Role>> = const { RefCell::new(None) };
}

/// Marks this thread as the submission thread of the scheduler at `scheduler` (its address).
pub(crate) fn enter_submission(scheduler: usize) {
    ROLE.with(|r| *r.borrow_mut() = Some(Role::Submission(scheduler)));
}

/// Marks this thread as a completion thread polling `device`.
pub(crate) fn enter_completion(device: wgpu::Device) {
    ROLE.with(|r| *r.borrow_mut() = Some(Role::Completion(device)));
}

/// The error of a blocking call that would wait for the thread making it.
fn waits_for_itself(what: &str) -> Error {
    Error::Unsupported(format!(
        "{what} on the engine's own submission thread (from a waker, logger or drop the engine \
         ran there) would wait for itself; use the async form, or call it from another thread"
    ))
}

/// `Err` when this is the submission thread of the scheduler at `scheduler`.
pub(crate) fn check_not_submission_of(scheduler: usize, what: &str) -> Result<()> {
    ROLE.with(|r| match &*r.borrow() {
        Some(Role::Submission(s)) if *s == scheduler => Err(waits_for_itself(what)),
        _ => Ok(()),
    })
}

/// `Err` when this is any engine's submission thread (a blocking read does not say whose work
/// it waits for; blocking one engine's submissions on another's is refused too).
pub(crate) fn check_not_submission(what: &str) -> Result<()> {
    ROLE.with(|r| match &*r.borrow() {
        Some(Role::Submission(_)) => Err(waits_for_itself(what)),
        _ => Ok(()),
    })
}

/// Whether this is one of an engine's own threads (submission or completion), where the
/// application's wakers may run: nothing there may wait for work that needs those threads.
pub(crate) fn on_engine_thread() -> bool {
    ROLE.with(|r| r.borrow().is_some())
}

/// The device this thread polls for reads, when it is a completion thread.
pub(crate) fn completion_device() -> Option<wgpu::Device> {
    ROLE.with(|r| match &*r.borrow() {
        Some(Role::Completion(d)) => Some(d.clone()),
        _ => None,
    })
}
