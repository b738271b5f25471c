//! Tensor lineage: the graph of launches a tensor's bytes depend on (see `fate.rs` for the fates
//! themselves and what a read does with them).
//!
//! Each launch is a [`Node`] holding its fate and pointing at its inputs' nodes; a tensor's
//! [`Lineage`] is the nodes of the launches that wrote it. Sharing instead of copying keeps
//! recording a launch O(inputs) however long the chain before it; reads walk the graph
//! ([`Lineage::snapshot`]) and prune what they find wholly clean.

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use crate::error::Error;
use crate::fate::{FAILURES, Fate, Outcome, first_error};

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
    /// The nodes (tests build graphs through it).
    pub(crate) fn nodes(&self) -> MutexGuard<'_, Vec<Arc<Node>>> {
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
    out.sort_by_key(|f| f.seq());
    out.dedup_by_key(|f| f.seq());
    out
}

/// Merges two lists sorted by launch order, dropping duplicates.
#[cfg(test)]
pub(crate) fn merge(a: &[Arc<Fate>], b: &[Arc<Fate>]) -> Vec<Arc<Fate>> {
    let mut out = Vec::with_capacity(a.len() + b.len());
    let (mut i, mut j) = (0, 0);
    while i < a.len() || j < b.len() {
        let take_a = j == b.len() || (i < a.len() && a[i].seq() <= b[j].seq());
        let next = if take_a { &a[i] } else { &b[j] };
        if out.last().is_none_or(|l: &Arc<Fate>| l.seq() != next.seq()) {
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
pub(crate) fn ancestry_of(lineages: &[&Lineage]) -> Result<Ancestry, Error> {
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
