//! A device's health as its engines see it, and the two wgpu callbacks that set it: the
//! device-lost callback and the uncaptured-error handler — heard by every engine on one device.
//!
//! wgpu keeps one of each per device; whoever sets one last replaces the one before. When each
//! engine's closures reached only that engine, a second engine on the same device
//! (`Engine::from_device` twice) silently took them from the first: that one never learned that
//! the device was lost (its reads failed as map errors after their timeouts, its syncs passed,
//! every op tried the GPU first; a reviewer's probe). Devices cannot be told apart reliably
//! from outside wgpu (devices of two `wgpu::Instance`s compare equal: their ids are numbered per
//! instance), so nothing here looks a device up. Instead each engine installs both closures,
//! and the engines the replaced closures reached are reached by the new ones too: wgpu drops a
//! replaced lost callback inside `set_device_lost_callback`, on the installing thread, and its
//! guard's `Drop` hands its engines to the closures being installed ([`INSTALLING`]). An
//! application that sets its own callback or handler on the device afterwards replaces them for
//! every engine (documented on `Engine::from_device`).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, Weak};

use crate::error::Error;

/// Device health: set by the device's lost callback and uncaptured-error handler.
#[derive(Default)]
pub(crate) struct Health {
    lost: AtomicBool,
    reason: Mutex<Option<String>>,
    /// The first error no error scope caught (reported at the next sync point).
    uncaptured: Mutex<Option<Error>>,
    /// The context is being dropped: the device goes with it, and wgpu drops its lost callback
    /// unrun (not a loss to report, even while a panic unwinds the engine's last owner).
    pub(crate) closing: AtomicBool,
}

impl Health {
    /// `Some(DeviceLost)` once the device is lost.
    pub(crate) fn lost_error(&self) -> Option<Error> {
        if !self.is_lost() {
            return None;
        }
        let reason = self
            .reason
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        Some(Error::DeviceLost(
            reason.unwrap_or_else(|| "unknown reason".into()),
        ))
    }

    /// Whether the device is lost (one atomic load).
    #[inline]
    pub(crate) fn is_lost(&self) -> bool {
        self.lost.load(Ordering::Acquire)
    }

    /// Records that the device is lost, and why.
    fn mark_lost(&self, why: String) {
        *self.reason.lock().unwrap_or_else(|e| e.into_inner()) = Some(why);
        self.lost.store(true, Ordering::SeqCst);
    }

    /// Keeps `e` to report at the next sync point, unless an earlier one waits there.
    fn note_uncaptured(&self, e: Error) {
        let mut slot = self.uncaptured.lock().unwrap_or_else(|e| e.into_inner());
        if slot.is_none() {
            *slot = Some(e);
        }
    }

    /// Takes the first uncaptured error, if any (reported once).
    pub(crate) fn take_uncaptured(&self) -> Option<Error> {
        self.uncaptured
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take()
    }
}

/// The engines attached to one device (their health), as the device's callbacks reach them.
#[derive(Default)]
struct Attached(Mutex<Vec<Weak<Health>>>);

impl Attached {
    /// Runs `f` on the health of every engine still attached.
    fn each(&self, f: impl Fn(&Health)) {
        let engines: Vec<Arc<Health>> = {
            let list = self.0.lock().unwrap_or_else(|e| e.into_inner());
            list.iter().filter_map(Weak::upgrade).collect()
        };
        engines.iter().for_each(|h| f(h));
    }
}

thread_local! {
    /// The engines' list whose closures this thread is installing on a device: a replaced lost
    /// callback dropped meanwhile hands its engines to it ([`LostOnUnwind`]'s `Drop`).
    static INSTALLING: std::cell::RefCell<Option<Arc<Attached>>> =
        const { std::cell::RefCell::new(None) };
}

impl Attached {
    /// Reaches the engines of `old` too (closures being replaced), dropping those gone. Copied,
    /// not moved: `old`'s uncaptured-error handler stays installed until the new one replaces it,
    /// and must still reach its engines meanwhile (a reviewer's probe: an error raised there
    /// reached nobody).
    fn adopt(&self, old: &Attached) {
        let copied: Vec<Weak<Health>> = old.0.lock().unwrap_or_else(|e| e.into_inner()).clone();
        let mut list = self.0.lock().unwrap_or_else(|e| e.into_inner());
        list.retain(|h| h.strong_count() > 0);
        list.extend(copied.into_iter().filter(|h| h.strong_count() > 0));
    }
}

/// Installs `device`'s lost callback and uncaptured-error handler for the engine of `health`
/// and every engine the closures they replace reached (see the module docs).
pub(crate) fn attach(device: &wgpu::Device, health: &Arc<Health>) {
    // Both closures of one engine go in together: two engines attaching at once on one device
    // could otherwise leave the first one's error handler installed last, reaching only itself
    // (a reviewer's probe: 207 of 2000 rounds of three threads lost an engine's errors).
    // Neither closure takes this lock, and wgpu calls neither from these two calls.
    static ATTACHING: Mutex<()> = Mutex::new(());
    let _one_at_a_time = ATTACHING.lock().unwrap_or_else(|e| e.into_inner());
    let attached = Arc::new(Attached(Mutex::new(vec![Arc::downgrade(health)])));
    let guard = LostOnUnwind(Arc::clone(&attached));
    let previous = INSTALLING.with(|i| i.replace(Some(Arc::clone(&attached))));
    device.set_device_lost_callback(move |reason, message| {
        log::error!("bitnet-wgpu: GPU device lost ({reason:?}): {message}");
        // A destroyed device comes with no message: the reason kind still says why.
        let why = if message.trim().is_empty() {
            format!("{reason:?}")
        } else {
            message
        };
        guard.0.each(|h| h.mark_lost(why.clone()));
    });
    INSTALLING.with(|i| *i.borrow_mut() = previous);
    #[cfg(test)]
    if let Some(between) = tests::BETWEEN_INSTALLS.take() {
        between();
    }
    let a = Arc::clone(&attached);
    // The default handler panics; the engines log and report at their next sync point instead.
    device.on_uncaptured_error(Arc::new(move |e: wgpu::Error| {
        log::error!("bitnet-wgpu: uncaptured GPU error: {e}");
        let e = crate::error::from_wgpu(e, "an operation outside any error scope");
        a.each(|h| h.note_uncaptured(e.clone()));
    }));
}

/// The device-lost callback's hold on the engines' health. Dropped unrun in two ways:
/// - replaced by another engine's callback (inside `set_device_lost_callback`, on the thread
///   installing it): the new callback's list takes its engines ([`INSTALLING`]), even while a
///   panic unwinds;
/// - while a panic unwinds: wgpu runs the lost callback once, after the map callbacks of the
///   poll that lost the device; when one of those panics, wgpu drops the rest of the poll's
///   closures unrun, this one among them: the device is then marked lost here, or the engines
///   would go on using it as if it were healthy.
struct LostOnUnwind(Arc<Attached>);

impl Drop for LostOnUnwind {
    fn drop(&mut self) {
        // Replaced by an engine's callback being installed on this thread: hand the engines
        // over (an application's own callback replaces it from outside: nothing to hand to).
        // First, even while a panic unwinds: an engine made by a thread that unwinds (in a
        // `Drop`) replaces the callback as any other, and its engines were falsely marked lost.
        let handed_over = INSTALLING.with(|i| match i.borrow().as_ref() {
            Some(new) if !Arc::ptr_eq(new, &self.0) => {
                new.adopt(&self.0);
                true
            }
            _ => false,
        });
        if !handed_over && std::thread::panicking() {
            self.0.each(|h| {
                if !h.closing.load(Ordering::Acquire) && !h.is_lost() {
                    log::error!(
                        "bitnet-wgpu: GPU device lost (its lost callback was dropped unrun)"
                    );
                    h.mark_lost(
                        "its device-lost callback was dropped by a panicking callback".into(),
                    );
                }
            });
        }
    }
}

#[cfg(test)]
#[path = "device_hooks_tests.rs"]
mod tests;
