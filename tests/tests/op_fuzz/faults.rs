//! Injected GPU faults in a program (the engine's test-only `Engine::inject_fault`). The
//! contract checked: a host-facing op still returns the right result (it re-runs on the CPU); a
//! tensor's read returns its right value or a fault's error — a value read once is never lost
//! (only a lost device may take it) — and never a wrong value.

use bitnet_wgpu::{Error, InjectedFault};

use super::draw::Fuzz;
use super::program::Mismatch;

/// What a program has injected so far.
#[derive(Debug, Default, Clone, Copy)]
pub struct FaultState {
    /// A fault was injected: a value not yet read may fail with a fault's error.
    pub injected: bool,
    /// The device was destroyed: values on it read as `DeviceLost`, read before or not.
    pub device_lost: bool,
}

/// The errors an injected fault makes (the engine's own list of GPU faults, a failed read-back
/// mapping included).
fn from_a_fault(e: &Error) -> bool {
    matches!(
        e,
        Error::OutOfMemory { .. }
            | Error::Validation { .. }
            | Error::PipelineCreation { .. }
            | Error::Aborted { .. }
            | Error::Panicked(_)
            | Error::Map(_)
            | Error::DeviceLost(_)
    )
}

impl FaultState {
    /// Whether `e` may stand for a value's result: a fault's error after an injection, where the
    /// value is not safe (`Var::safe`) or the device is gone.
    /// Whether `e` is a fault's error that does not outlive the call it hit (all but a lost
    /// device).
    pub fn transient(&self, e: &Error) -> bool {
        self.injected && from_a_fault(e) && !matches!(e, Error::DeviceLost(_))
    }

    pub fn excuses(&self, e: &Error, safe: bool) -> bool {
        self.injected
            && from_a_fault(e)
            && (!safe || (self.device_lost && matches!(e, Error::DeviceLost(_))))
    }
}

/// How often a call that injected faults failed is tried again: each armed fault fails one
/// event, and a few may be armed at once.
pub const RETRIES: usize = 8;

/// The faults drawn, the lost device rarest (it ends the GPU's part of the program).
const KINDS: &[InjectedFault] = &[
    InjectedFault::OutOfMemory,
    InjectedFault::Validation,
    InjectedFault::PipelineCreation,
    InjectedFault::WaitAbort,
    InjectedFault::JobPanic,
    InjectedFault::SubmitPanic,
    InjectedFault::PostSubmitPanic,
    InjectedFault::StatusPanic,
];

impl Fuzz {
    /// Injects a fault into the GPU engine (a lost device one time in 40).
    pub(super) fn inject_fault(&mut self) -> Result<(), Mismatch> {
        self.p.faults.injected = true;
        if self.below(40) == 0 {
            self.p.faults.device_lost = true;
            bitnet_tests::lose_device(&self.p.gpu);
        } else {
            let kind = self.one_of(KINDS);
            self.p.gpu.inject_fault(kind);
        }
        Ok(())
    }
}
