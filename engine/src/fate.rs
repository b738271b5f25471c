//! Launch outcomes ("fates") and tensor lineage: which errors a tensor's bytes carry.
//!
//! Every recorded launch gets a [`Fate`]: pending until known, then resolved to `Ok` or to the
//! error its outputs carry (a non-finite value it flagged, or the failure of its submission). A
//! tensor's [`Lineage`] is the set of fates its bytes depend on: the launches that wrote it and,
//! transitively, the lineages of their inputs — a graph of launch nodes (`lineage.rs`) that share their
//! ancestry, so recording a launch costs the same however long the chain before it. Reading a
//! tensor resolves exactly the fates of its lineage — copying out only *their* status slots — and
//! reports the earliest error among them (launch order, as cpu-ref reports the first error of a
//! chain). So a read reports the errors of its producer chain and never another caller's: a
//! flagged launch poisons its outputs and everything computed from them, while an unrelated tensor
//! read on another thread stays clean.
//!
//! Whoever resolves a fate (a reader of any tensor sharing it, or the forced check when status
//! slots run out) stores the result in the fate itself, so attribution never depends on which
//! thread reads first. Resolved-clean fates are pruned from lineages (a node whose fates and
//! ancestry are all clean drops its ancestry); failed ones stay, so the poison survives any
//! number of reads.
//!
//! Cost: a read copies out one status slot per checked launch of its lineage not yet resolved —
//! one pair of buffer copies each, and wgpu puts a barrier before every copy (H200: about 6 µs
//! per slot, so a read after 600 dependent ops pays about 4 ms). Reading once per decode step
//! keeps that to the step's own launches.

use std::sync::atomic::{AtomicU8, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use crate::error::Error;
pub(crate) use crate::lineage::{Lineage, inputs_lineage};
use crate::status::{NonFiniteCheck, SlotPool, decode_slot};

/// The outcome of one recorded launch (or of one read's copy).
pub(crate) struct Fate {
    /// Launch order: the earliest failed fate of a lineage is the one reported.
    seq: u64,
    /// The launches of one op call split into chunks share a group (see [`first_error`]); a
    /// launch of its own is a group of one (`group == seq`).
    group: u64,
    /// The non-finite check of the launch, if it flags values.
    check: Option<NonFiniteCheck>,
    state: Mutex<State>,
    /// [`SETTLED_CLEAN`] once resolved clean: lineage walks test it without the lock.
    settled: AtomicU8,
    slots: Arc<SlotPool>,
}

/// [`Fate::settled`] of a fate resolved clean.
const SETTLED_CLEAN: u8 = 1;

/// How many fates of this process have resolved with an error. A lineage node found free of known
/// errors at one count stays so until the count moves (`lineage.rs`), so a launch does not
/// walk its inputs' ancestry unless something failed meanwhile.
pub(crate) static FAILURES: AtomicU64 = AtomicU64::new(0);

enum State {
    /// Not known yet; `slot` is the launch's status slot once assigned.
    Pending { slot: Option<u32> },
    /// A read copied the slot out and will resolve the fate; `done` disconnects when it did, or
    /// when its copy-out failed and the fate is pending again (`batch.rs`).
    Reading { done: crate::oneshot::Receiver<()> },
    /// Known: `None` = clean.
    Resolved(Option<Error>),
}

/// What a reader sees of a fate.
pub(crate) enum Outcome {
    /// Resolved, clean or with its error.
    Known(Option<Error>),
    /// Pending (its launch not yet submitted, or its status slot not yet read).
    Pending,
    /// Another read is resolving it: wait until this receiver disconnects.
    Reading(crate::oneshot::Receiver<()>),
}

impl std::fmt::Debug for Fate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Fate(#{})", self.seq)
    }
}

impl Fate {
    /// The launch number.
    pub fn seq(&self) -> u64 {
        self.seq
    }

    /// A pending fate for launch number `seq`.
    pub fn new(seq: u64, check: Option<NonFiniteCheck>, slots: &Arc<SlotPool>) -> Arc<Fate> {
        Fate::in_group(seq, seq, check, slots)
    }

    /// A pending fate for launch number `seq`, one chunk of the op call `group`.
    pub fn in_group(
        seq: u64,
        group: u64,
        check: Option<NonFiniteCheck>,
        slots: &Arc<SlotPool>,
    ) -> Arc<Fate> {
        Arc::new(Fate {
            seq,
            group,
            check,
            state: Mutex::new(State::Pending { slot: None }),
            settled: AtomicU8::new(0),
            slots: Arc::clone(slots),
        })
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The launch's non-finite check.
    pub fn check(&self) -> Option<NonFiniteCheck> {
        self.check
    }

    /// Gives the pending launch its status slot.
    pub fn assign(&self, slot: u32) {
        *self.state() = State::Pending { slot: Some(slot) };
    }

    /// Resolves the fate (no-op if already resolved). A slot still owned goes back dirty.
    pub fn resolve(&self, result: Option<Error>) {
        let mut st = self.state();
        match &*st {
            State::Resolved(_) => return,
            State::Pending { slot: Some(s) } => self.slots.release_dirty(*s),
            _ => {}
        }
        Self::settle(&mut st, &self.settled, result);
    }

    /// Stores `result` (under the state lock) and publishes it to lock-free readers.
    fn settle(st: &mut State, settled: &AtomicU8, result: Option<Error>) {
        if result.is_some() {
            FAILURES.fetch_add(1, Ordering::AcqRel);
        } else {
            settled.store(SETTLED_CLEAN, Ordering::Release);
        }
        *st = State::Resolved(result);
    }

    /// The current outcome.
    pub fn outcome(&self) -> Outcome {
        match &*self.state() {
            State::Resolved(r) => Outcome::Known(r.clone()),
            State::Pending { .. } => Outcome::Pending,
            State::Reading { done } => Outcome::Reading(done.clone()),
        }
    }

    /// Claims the pending slot for a read: `Some(slot)` and the state becomes `Reading`.
    pub fn begin_read(&self, done: &crate::oneshot::Receiver<()>) -> Option<u32> {
        let mut st = self.state();
        let State::Pending { slot: Some(s) } = *st else {
            return None;
        };
        *st = State::Reading { done: done.clone() };
        Some(s)
    }

    /// Resolves a fate claimed by [`Fate::begin_read`] with `claim` (no-op in any other state,
    /// or under another read's claim: a copy-out that failed was reverted, and the slot claimed
    /// again, before its resolver ran).
    pub fn finish_read(&self, result: Option<Error>, claim: &crate::oneshot::Receiver<()>) {
        let mut st = self.state();
        if matches!(&*st, State::Reading { done } if done.same_channel(claim)) {
            Self::settle(&mut st, &self.settled, result);
        }
    }

    /// Undoes [`Fate::begin_read`] when the copy-out was never executed (the slot is untouched).
    /// A fate resolved meanwhile — its own launch failed in the copy-out's batch, which
    /// [`Fate::resolve`] leaves the claimed slot to — has nothing left to report: the copy-out
    /// was the slot's last holder, and the slot goes back dirty (kept, it would be lost to the
    /// pool for good).
    pub fn revert_read(&self, slot: u32) {
        let mut st = self.state();
        match *st {
            State::Reading { .. } => *st = State::Pending { slot: Some(slot) },
            State::Resolved(_) => self.slots.release_dirty(slot),
            State::Pending { .. } => {}
        }
    }

    /// Whether the fate is resolved clean (prunable from lineages).
    pub(crate) fn is_clean(&self) -> bool {
        self.settled.load(Ordering::Acquire) == SETTLED_CLEAN
    }
}

impl Drop for Fate {
    fn drop(&mut self) {
        // Dropped unread: nobody will report its flag; the slot is reusable after the reset
        // that the next flush appends (after this launch's dispatch, wherever it was recorded).
        if let State::Pending { slot: Some(s) } = *self.state() {
            self.slots.release_dirty(s);
        }
    }
}

/// The error of the earliest failed fate among `fates` (sorted by launch order).
///
/// The chunks of one op call (a [`Fate::in_group`] group) count as one launch, whatever their
/// order: among the group's errors the one an unchunked launch would report wins — the lowest
/// status word (inputs before outputs, as cpu-ref checks them), then the lowest index. Until every
/// chunk of that group is known, the error is not known yet (`None`).
pub(crate) fn first_error(fates: &[Arc<Fate>]) -> Option<Error> {
    let first = fates
        .iter()
        .find(|f| matches!(f.outcome(), Outcome::Known(Some(_))))?;
    let mut best: Option<((usize, usize), Error)> = None;
    for f in fates.iter().filter(|f| f.group == first.group) {
        match f.outcome() {
            Outcome::Known(None) => {}
            Outcome::Known(Some(e)) => {
                // Errors other than a flagged value (a failed submission) rank first.
                let rank = match (&e, f.check) {
                    (Error::NonFinite { tensor, index, .. }, Some(c)) => {
                        (c.word_of(tensor), *index)
                    }
                    _ => (0, 0),
                };
                if best.as_ref().is_none_or(|(r, _)| rank < *r) {
                    best = Some((rank, e));
                }
            }
            Outcome::Pending | Outcome::Reading(_) => return None,
        }
    }
    best.map(|(_, e)| e)
}

/// Resolves the fates whose status slots one read copied out. Dropped without
/// [`StatusResolver::resolve`] (the read-back was lost), it resolves them with that failure,
/// so waiting readers never hang.
pub(crate) struct StatusResolver {
    /// The fates, in the order of their slots in the staging bytes.
    entries: Vec<Arc<Fate>>,
    /// Disconnects (waking readers of these fates) when the resolver is dropped.
    _done: crate::oneshot::Sender<()>,
    /// The claim the fates were taken with ([`Fate::begin_read`]): only it is resolved here.
    claim: crate::oneshot::Receiver<()>,
    /// Bytes between two copied-out slots in the staging buffer.
    stride: u64,
}

impl StatusResolver {
    /// A resolver for `entries`, claimed with `claim`; `done` is its sender.
    pub fn new(
        entries: Vec<Arc<Fate>>,
        done: crate::oneshot::Sender<()>,
        claim: &crate::oneshot::Receiver<()>,
        stride: u64,
    ) -> StatusResolver {
        StatusResolver {
            entries,
            _done: done,
            claim: claim.clone(),
            stride,
        }
    }

    /// Decodes the copied-out slots and resolves each fate with its own result.
    pub fn resolve(mut self, bytes: &[u8]) {
        for (i, f) in std::mem::take(&mut self.entries).into_iter().enumerate() {
            let at = i * self.stride as usize;
            let words = bytes.get(at..).unwrap_or(&[]);
            let err = f.check().and_then(|c| decode_slot(&c, words));
            f.finish_read(err, &self.claim);
        }
    }

    /// Resolves every fate with `e` (the read-back failed after the slots were reset).
    pub fn fail(mut self, e: &Error) {
        for f in std::mem::take(&mut self.entries) {
            f.finish_read(Some(e.clone()), &self.claim);
        }
    }
}

impl Drop for StatusResolver {
    fn drop(&mut self) {
        let lost = Error::Map("the status read-back was lost".into());
        for f in self.entries.drain(..) {
            f.finish_read(Some(lost.clone()), &self.claim);
        }
    }
}

#[cfg(test)]
#[path = "fate_tests.rs"]
mod tests;
