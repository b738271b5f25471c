//! One measurement at a time per GPU context: autotune, the cooperative-matrix self-test and
//! calibration each swap a private profiler in for the engine's while they measure
//! ([`TuneProfiler`](super::TuneProfiler)), and put the engine's back when done. Two threads
//! measuring at once would interleave those swaps (A saves the engine's, B saves A's, A puts
//! the engine's back, B puts A's back: the tuner's profiler stays installed for good, the
//! user's is lost) and time each other's work. The gate makes them take turns.
//!
//! It is re-entrant per thread: a measurement that runs another inside it (calibration's
//! BitLinear timing an autotune, an autotune running the coop self-test) nests, and the
//! swaps of one thread restore in order.

use std::sync::{Condvar, Mutex, MutexGuard};
use std::thread::ThreadId;

/// The gate of one GPU context (see the module docs).
#[derive(Default)]
pub(crate) struct MeasureGate {
    /// The measuring thread and how many holds it has nested.
    owner: Mutex<Option<(ThreadId, u32)>>,
    /// Signalled when the owner's last hold goes.
    freed: Condvar,
}

/// A hold on the gate; released when dropped.
pub(crate) struct MeasureHold<'a> {
    gate: &'a MeasureGate,
    /// Whether no other hold of this thread was live when it was taken.
    outermost: bool,
}

impl MeasureHold<'_> {
    /// Whether this is the thread's outermost hold (not nested in another measurement).
    pub(crate) fn is_outermost(&self) -> bool {
        self.outermost
    }
}

impl MeasureGate {
    fn owner(&self) -> MutexGuard<'_, Option<(ThreadId, u32)>> {
        self.owner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Waits until no other thread measures on this context, then holds the gate (again, if
    /// this thread already does).
    pub(crate) fn hold(&self) -> MeasureHold<'_> {
        let me = std::thread::current().id();
        let mut owner = self.owner();
        let outermost = loop {
            match &mut *owner {
                None => {
                    *owner = Some((me, 1));
                    break true;
                }
                Some((thread, depth)) if *thread == me => {
                    *depth += 1;
                    break false;
                }
                Some(_) => owner = self.freed.wait(owner).unwrap_or_else(|e| e.into_inner()),
            }
        };
        MeasureHold {
            gate: self,
            outermost,
        }
    }
}

impl Drop for MeasureHold<'_> {
    fn drop(&mut self) {
        let mut owner = self.gate.owner();
        if let Some((_, depth)) = &mut *owner {
            *depth -= 1;
            if *depth == 0 {
                *owner = None;
                self.gate.freed.notify_all();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::MeasureGate;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::time::Duration;

    /// Nested holds of one thread do not wait; another thread waits until the last is gone.
    #[test]
    fn holds_nest_per_thread_and_exclude_other_threads() {
        let gate = MeasureGate::default();
        let entered = AtomicBool::new(false);
        std::thread::scope(|s| {
            let outer = gate.hold();
            let inner = gate.hold();
            let other = s.spawn(|| {
                let _h = gate.hold();
                entered.store(true, Ordering::SeqCst);
            });
            drop(inner);
            std::thread::sleep(Duration::from_millis(50));
            assert!(
                !entered.load(Ordering::SeqCst),
                "entered during the outer hold"
            );
            drop(outer);
            other.join().unwrap();
        });
        assert!(entered.load(Ordering::SeqCst));
        drop(gate.hold());
    }
}
