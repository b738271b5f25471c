//! A [`KvCache`]'s copy on write (`kv_cache_store.rs`, `make_room`) survives a lost copy: the
//! buffers it copied are kept until the copy is known good, and a copy known to have failed is
//! redone from them at the next append. Positions keep one lineage per append through the copy,
//! so that a truncate below an append that failed still drops its error.

use std::sync::Arc;

use super::KvCache;
use super::store::{Store, copy_rows_pair};
use crate::error::Result;
use crate::fate::{Fate, Lineage, Outcome};
use crate::tensor::Tensor;

/// The buffers a copy on write ([`KvCache::make_room`]) moved the cache away from, kept until the
/// copy of their first `rows` positions is known good: a copy lost to a transient fault (a
/// failed submission) is then redone from them at the next append, where it poisoned the kept
/// positions for good (`truncate` keeps them, so only `clear` got the cache going again).
#[derive(Debug)]
pub(super) struct Rescue {
    pub(super) keys: Tensor,
    pub(super) values: Tensor,
    pub(super) rows: usize,
    /// The kept positions' segments (first position, lineage) before the copy.
    pub(super) kept: Vec<(usize, Lineage)>,
    /// The copy's own fates.
    pub(super) copy: Vec<Arc<Fate>>,
}

impl KvCache {
    /// Keeps the pending copy on write's redo within the first `len` positions (a truncate):
    /// positions from `len` on may be appended again, and a redo must not write the old rows
    /// over them (it did, with a lineage that read good: silently stale values). A copy already
    /// known good frees the old buffers here rather than at the next append (a cache truncated
    /// and then left alone held them).
    pub(super) fn truncate_rescue(&mut self, len: usize) {
        if let Some(r) = &mut self.rescue {
            r.rows = r.rows.min(len);
            r.kept.retain(|(start, _)| *start < len);
            if r.rows == 0 || verdict(&r.copy) == Verdict::Good {
                self.rescue = None;
            }
        }
    }

    /// Before a device append: forgets the buffers of the last copy on write once its copy is
    /// known good, and redoes the copy from them once it is known to have failed (the positions
    /// still held of those it moved get its new lineage).
    pub(super) fn recover(&mut self) -> Result<()> {
        let Some(r) = &self.rescue else {
            return Ok(());
        };
        match verdict(&r.copy) {
            Verdict::Good => self.rescue = None,
            Verdict::Unknown => {}
            Verdict::Failed => {
                let Store::Device { keys, values } = &self.store else {
                    self.rescue = None;
                    return Ok(());
                };
                let rows = r.rows.min(self.len);
                if rows == 0 {
                    self.rescue = None;
                    return Ok(());
                }
                let engine = self.engine.clone();
                let gpu = super::device_of(&engine)?;
                let words = rows * self.row();
                let copy = copy_rows_pair(gpu, (&r.keys, keys), (&r.values, values), words, 0)?;
                let fates = copy.snapshot();
                // The copy wrote the positions below `rows`: the segments starting there are the
                // failed copy's; later appends keep their own.
                let mut segments = copied_segments(&r.kept, &copy);
                segments.extend(self.segments.drain(..).filter(|(start, _)| *start >= rows));
                self.segments = segments;
                if let Some(r) = &mut self.rescue {
                    r.copy = fates;
                }
            }
        }
        Ok(())
    }
}

/// One lineage holding everything `parts` hold.
pub(super) fn joined(parts: &[&Lineage]) -> Lineage {
    let l = Lineage::default();
    parts.iter().for_each(|p| l.share(p));
    l
}

/// The segments of positions a copy moved: each kept segment's own lineage plus the copy's, and
/// the copy's alone from position 0 where no segment starts there (appends found clean leave
/// none). Per segment, so that a truncate below an append that failed still drops its error
/// (one merged segment from 0 kept it: every position read it until `clear`).
pub(super) fn copied_segments(kept: &[(usize, Lineage)], copy: &Lineage) -> Vec<(usize, Lineage)> {
    let mut out = Vec::with_capacity(kept.len() + 1);
    if kept.first().is_none_or(|(start, _)| *start != 0) {
        out.push((0, joined(&[copy])));
    }
    out.extend(kept.iter().map(|(start, l)| (*start, joined(&[l, copy]))));
    out
}

/// What is known of a copy's fates.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Verdict {
    Good,
    Failed,
    Unknown,
}

/// [`Verdict`] of `fates`, without waiting.
pub(super) fn verdict(fates: &[Arc<Fate>]) -> Verdict {
    let mut all_known = true;
    for f in fates {
        match f.outcome() {
            Outcome::Known(Some(_)) => return Verdict::Failed,
            Outcome::Known(None) => {}
            Outcome::Pending | Outcome::Reading(_) => all_known = false,
        }
    }
    if all_known {
        Verdict::Good
    } else {
        Verdict::Unknown
    }
}
