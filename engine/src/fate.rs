//! Launch outcomes ("fates") and tensor lineage: which errors a tensor's bytes carry.
//!
//! Every recorded launch gets a [`Fate`]: pending until known, then resolved to `Ok` or to the
//! error its outputs carry (a non-finite value it flagged, or the failure of its submission). A
//! tensor's [`Lineage`] is the set of fates its bytes depend on: the launches that wrote it and,
//! transitively, the lineages of their inputs — a graph of launch [`Node`]s that share their
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

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use crate::error::Error;
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
/// errors at one count stays so until the count moves ([`inputs_lineage`]), so a launch does not
/// walk its inputs' ancestry unless something failed meanwhile.
static FAILURES: AtomicU64 = AtomicU64::new(0);

enum State {
    /// Not known yet; `slot` is the launch's status slot once assigned.
    Pending { slot: Option<u32> },
    /// A read copied the slot out and will resolve the fate; `done` disconnects when it did, or
    /// when its copy-out failed and the fate is pending again (`batch.rs`).
    Reading { done: flume::Receiver<()> },
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
    Reading(flume::Receiver<()>),
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
    pub fn begin_read(&self, done: &flume::Receiver<()>) -> Option<u32> {
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
    pub fn finish_read(&self, result: Option<Error>, claim: &flume::Receiver<()>) {
        let mut st = self.state();
        if matches!(&*st, State::Reading { done } if done.same_channel(claim)) {
            Self::settle(&mut st, &self.settled, result);
        }
    }

    /// Undoes [`Fate::begin_read`] when the copy-out was never executed (the slot is untouched).
    pub fn revert_read(&self, slot: u32) {
        let mut st = self.state();
        if matches!(*st, State::Reading { .. }) {
            *st = State::Pending { slot: Some(slot) };
        }
    }

    /// Whether the fate is resolved clean (prunable from lineages).
    fn is_clean(&self) -> bool {
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

/// One launch's place in the lineage graph: its fates and the nodes its inputs carried. A
/// tensor's lineage is a few such nodes (the launches that wrote it); their ancestry is shared,
/// not copied, so recording a launch costs the same however long the chain before it — a
/// decode step's hundreds of dependent ops, none read until the step ends, would otherwise copy
/// an ever longer list at every launch.
pub(crate) struct Node {
    fates: Vec<Arc<Fate>>,
    /// The inputs' nodes; dropped (and the node marked clean) once everything below is clean.
    parents: Mutex<Vec<Arc<Node>>>,
    /// This node's fates and all its ancestors' resolved clean: it reports nothing.
    clean: AtomicBool,
    /// [`FAILURES`] when the node's ancestry was last found free of known errors.
    verified: AtomicU64,
}

impl std::fmt::Debug for Node {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Node({:?})", self.fates)
    }
}

impl Drop for Node {
    /// Drops the ancestry this node alone holds iteratively: a chain of a million launches
    /// never read (nothing pruned it) would otherwise drop recursively and overflow the stack.
    fn drop(&mut self) {
        let mut stack = std::mem::take(self.parents.get_mut().unwrap_or_else(|e| e.into_inner()));
        while let Some(p) = stack.pop() {
            if let Ok(mut only) = Arc::try_unwrap(p) {
                stack.append(only.parents.get_mut().unwrap_or_else(|e| e.into_inner()));
            }
        }
    }
}

impl Node {
    fn new(fates: Vec<Arc<Fate>>, parents: Vec<Arc<Node>>, verified: u64) -> Arc<Node> {
        Arc::new(Node {
            fates,
            parents: Mutex::new(parents),
            clean: AtomicBool::new(false),
            verified: AtomicU64::new(verified),
        })
    }

    fn parents(&self) -> MutexGuard<'_, Vec<Arc<Node>>> {
        self.parents.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn is_clean(&self) -> bool {
        self.clean.load(Ordering::Acquire)
    }
}

/// The fates a tensor's bytes depend on: the nodes of the launches that wrote it (see [`Node`]).
#[derive(Debug, Default)]
pub(crate) struct Lineage {
    nodes: Mutex<Vec<Arc<Node>>>,
}

impl Lineage {
    fn nodes(&self) -> MutexGuard<'_, Vec<Arc<Node>>> {
        self.nodes.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The fates not yet known to be clean, sorted by launch order (the graph is pruned on the
    /// way: wholly clean nodes drop their ancestry).
    pub fn snapshot(&self) -> Vec<Arc<Fate>> {
        let roots = self.nodes().clone();
        let fates = pending_fates(&roots);
        self.nodes().retain(|n| !n.is_clean());
        fates
    }

    /// Adds `more` (fates of launches that wrote these bytes) as a node of its own.
    pub fn extend(&self, more: &[Arc<Fate>]) {
        if !more.is_empty() {
            let verified = FAILURES.load(Ordering::Acquire);
            self.nodes()
                .push(Node::new(more.to_vec(), Vec::new(), verified));
        }
    }

    /// Adds every node of `other` (a view of the same bytes shares their ancestry).
    pub fn share(&self, other: &Lineage) {
        let theirs: Vec<_> = other
            .nodes()
            .iter()
            .filter(|n| !n.is_clean())
            .cloned()
            .collect();
        self.nodes().extend(theirs);
    }

    /// Whether nothing is left to report (every node found wholly clean by an earlier walk): a
    /// check that walks nothing.
    pub fn is_settled(&self) -> bool {
        let mut nodes = self.nodes();
        nodes.retain(|n| !n.is_clean());
        nodes.is_empty()
    }

    /// Adds the node of a launch.
    pub(crate) fn push(&self, node: &Arc<Node>) {
        self.nodes().push(Arc::clone(node));
    }

    /// The earliest error already known in this lineage (no GPU work).
    #[cfg(test)]
    pub fn known_error(&self) -> Option<Error> {
        first_error(&self.snapshot())
    }
}

/// The fates not known clean below `roots`, sorted by launch order without duplicates; marks
/// wholly clean nodes clean and drops their parents (an explicit stack: chains run thousands of
/// launches deep).
fn pending_fates(roots: &[Arc<Node>]) -> Vec<Arc<Fate>> {
    let mut out: Vec<Arc<Fate>> = Vec::new();
    let mut seen: HashSet<*const Node> = HashSet::new();
    let mut stack: Vec<(Arc<Node>, bool)> =
        roots.iter().rev().map(|n| (Arc::clone(n), false)).collect();
    while let Some((n, expanded)) = stack.pop() {
        if n.is_clean() {
            continue;
        }
        if !expanded {
            if !seen.insert(Arc::as_ptr(&n)) {
                continue;
            }
            let parents: Vec<_> = n
                .parents()
                .iter()
                .filter(|p| !p.is_clean())
                .cloned()
                .collect();
            stack.push((n, true));
            stack.extend(parents.into_iter().map(|p| (p, false)));
            continue;
        }
        let mut clean = true;
        for f in n.fates.iter().filter(|f| !f.is_clean()) {
            out.push(Arc::clone(f));
            clean = false;
        }
        let mut parents = n.parents();
        parents.retain(|p| !p.is_clean());
        if clean && parents.is_empty() {
            n.clean.store(true, Ordering::Release);
        }
    }
    out.sort_by_key(|f| f.seq);
    out.dedup_by_key(|f| f.seq);
    out
}

/// Merges two lists sorted by launch order, dropping duplicates.
#[cfg(test)]
pub(crate) fn merge(a: &[Arc<Fate>], b: &[Arc<Fate>]) -> Vec<Arc<Fate>> {
    let mut out = Vec::with_capacity(a.len() + b.len());
    let (mut i, mut j) = (0, 0);
    while i < a.len() || j < b.len() {
        let take_a = j == b.len() || (i < a.len() && a[i].seq <= b[j].seq);
        let next = if take_a { &a[i] } else { &b[j] };
        if out.last().is_none_or(|l: &Arc<Fate>| l.seq != next.seq) {
            out.push(Arc::clone(next));
        }
        if take_a { i += 1 } else { j += 1 }
    }
    out
}

/// What a launch's outputs inherit from its inputs: their lineage nodes, checked free of known
/// errors at failure count `verified`.
pub(crate) struct Ancestry {
    parents: Vec<Arc<Node>>,
    verified: u64,
}

impl Ancestry {
    /// The node of the launch whose fate is `fate`.
    pub fn with(self, fate: Arc<Fate>) -> Arc<Node> {
        Node::new(vec![fate], self.parents, self.verified)
    }
}

/// The lineage a launch's outputs take from its `inputs`; `Err` with the earliest known error
/// if an input is already known to be poisoned (a flagged value, a failed submission): the
/// launch fails now. An input's ancestry is walked only when a fate failed somewhere since it
/// was last found clean of errors, so recording stays O(inputs).
pub(crate) fn inputs_lineage(inputs: &[&crate::tensor::Tensor]) -> Result<Ancestry, Error> {
    let lineages: Vec<&Lineage> = inputs.iter().map(|t| t.lineage()).collect();
    ancestry_of(&lineages)
}

/// [`inputs_lineage`] of the inputs' lineages.
fn ancestry_of(lineages: &[&Lineage]) -> Result<Ancestry, Error> {
    let verified = FAILURES.load(Ordering::Acquire);
    let mut parents: Vec<Arc<Node>> = Vec::new();
    for l in lineages {
        let nodes: Vec<_> = l
            .nodes()
            .iter()
            .filter(|n| !n.is_clean())
            .cloned()
            .collect();
        if nodes
            .iter()
            .any(|n| n.verified.load(Ordering::Acquire) != verified)
        {
            let fates = pending_fates(&nodes);
            if let Some(e) = first_error(&fates) {
                return Err(e);
            }
            // A failed chunk whose op call still has chunks pending is no error yet, but will
            // be one when they resolve, clean or not — which may not move the failure count:
            // such an ancestry is not verified, so the next launch walks it again.
            let failed = fates
                .iter()
                .any(|f| matches!(f.outcome(), Outcome::Known(Some(_))));
            if !failed {
                nodes
                    .iter()
                    .for_each(|n| n.verified.store(verified, Ordering::Release));
            }
        }
        for n in nodes {
            if !parents.iter().any(|p| Arc::ptr_eq(p, &n)) {
                parents.push(n);
            }
        }
    }
    Ok(Ancestry { parents, verified })
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
    _done: flume::Sender<()>,
    /// The claim the fates were taken with ([`Fate::begin_read`]): only it is resolved here.
    claim: flume::Receiver<()>,
    /// Bytes between two copied-out slots in the staging buffer.
    stride: u64,
}

impl StatusResolver {
    /// A resolver for `entries`, claimed with `claim`; `done` is its sender.
    pub fn new(
        entries: Vec<Arc<Fate>>,
        done: flume::Sender<()>,
        claim: &flume::Receiver<()>,
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
