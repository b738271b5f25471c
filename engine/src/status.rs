//! The non-finite status buffer: one `u32` word per flagging launch, lowest offending index wins.
//!
//! Each launch that checks tensors for NaN/Inf owns a slot of [`STATUS_WORDS`] words (bound at
//! `@group(1) @binding(1)` through a dynamic offset, so kernels see `array<atomic<u32>, 4>`). Word
//! `t` belongs to the launch's `t`-th checked tensor. Words start at `0xFFFF_FFFF`; a kernel that
//! sees a non-finite value at flat index `i` of checked tensor `t` does
//! `atomicMin(&nonfinite[t], i)`. Slot 0 is a scratch slot bound to launches that do not check
//! (never reported).
//!
//! Attribution is per launch, never engine-wide: the slot belongs to the launch's
//! [`Fate`](crate::fate::Fate), and only a read of a tensor whose lineage contains that fate copies
//! the slot out (and resets it, in the same submission) — see `fate.rs`. Slots return to the
//! [`SlotPool`] only after being read, or when their fate is dropped unread.

use crate::error::Error;

/// Number of status slots (slot 0 is scratch). When every slot is owned by an unread launch, the
/// engine copies them all out at once (a sync) and stores each result in its own launch's fate.
pub(crate) const STATUS_SLOTS: u32 = 1024;
/// Status words per slot (checked tensors per launch).
pub const STATUS_WORDS: usize = 4;
/// The value of a clean slot.
pub(crate) const CLEAN: u32 = u32::MAX;

/// What a flagging launch reports, and where its index space starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NonFiniteCheck {
    /// Operation name reported in [`Error::NonFinite`] (use cpu-ref's op name for the same op).
    pub op: &'static str,
    /// Names of the checked tensors, by status word (e.g. `["x", "output"]`, matching cpu-ref).
    /// Unused words are `""`. When several words are flagged, the lowest word wins (list inputs
    /// before outputs, as cpu-ref checks inputs first).
    pub tensors: [&'static str; STATUS_WORDS],
    /// Added to the kernel's index (for chunked launches: the chunk's first flat index).
    pub base: u64,
}

impl NonFiniteCheck {
    /// A check of one tensor (status word 0) named `tensor`.
    pub const fn new(op: &'static str, tensor: &'static str) -> NonFiniteCheck {
        NonFiniteCheck {
            op,
            tensors: [tensor, "", "", ""],
            base: 0,
        }
    }

    /// A check of up to four tensors, by status word.
    pub const fn tensors(
        op: &'static str,
        tensors: [&'static str; STATUS_WORDS],
    ) -> NonFiniteCheck {
        NonFiniteCheck {
            op,
            tensors,
            base: 0,
        }
    }

    /// The same check with index base `base` (chunked launches).
    pub const fn at(self, base: u64) -> NonFiniteCheck {
        NonFiniteCheck { base, ..self }
    }

    fn tensor_name(&self, word: usize) -> &'static str {
        match self.tensors[word] {
            "" => "input",
            t => t,
        }
    }
}

/// The engine-side status buffers (created once per engine).
pub(crate) struct StatusBuffers {
    /// `STATUS_SLOTS * stride` bytes of slots.
    pub slots: wgpu::Buffer,
    /// Same size, all `0xFF` bytes: the reset source.
    pub ones: wgpu::Buffer,
    /// Bytes between slots (the device's storage offset alignment).
    pub stride: u64,
}

impl StatusBuffers {
    /// Creates the slot and reset buffers, slots already clean.
    pub fn new(device: &wgpu::Device, min_storage_offset_alignment: u32) -> StatusBuffers {
        let stride = u64::from(min_storage_offset_alignment).max(4 * STATUS_WORDS as u64);
        let size = stride * u64::from(STATUS_SLOTS);
        let make = |label, usage| {
            device.create_buffer(&wgpu::BufferDescriptor {
                label: Some(label),
                size,
                usage,
                mapped_at_creation: true,
            })
        };
        let slots = make(
            "bitnet-wgpu status",
            wgpu::BufferUsages::STORAGE
                | wgpu::BufferUsages::COPY_SRC
                | wgpu::BufferUsages::COPY_DST,
        );
        let ones = make("bitnet-wgpu status reset", wgpu::BufferUsages::COPY_SRC);
        for b in [&slots, &ones] {
            if let Ok(mut view) = b.get_mapped_range_mut(..) {
                view.copy_from_slice(&vec![0xFF; size as usize]);
            }
            b.unmap();
        }
        StatusBuffers {
            slots,
            ones,
            stride,
        }
    }
}

/// Decodes one status slot's words (`bytes`, at least `4 * STATUS_WORDS` long) for `check`:
/// the lowest flagged word wins (inputs are listed before outputs, as cpu-ref checks them).
pub(crate) fn decode_slot(check: &NonFiniteCheck, bytes: &[u8]) -> Option<Error> {
    (0..STATUS_WORDS).find_map(|t| {
        let word = u32::from_le_bytes(bytes.get(4 * t..4 * t + 4)?.try_into().ok()?);
        (word != CLEAN).then(|| Error::NonFinite {
            op: check.op,
            tensor: check.tensor_name(t),
            index: usize::try_from(check.base + u64::from(word)).unwrap_or(usize::MAX),
        })
    })
}

/// The free status slots. A slot is owned by one launch's [`Fate`](crate::fate::Fate) from the
/// launch until its value was copied out (and reset, in the same command) by a read, or until the
/// fate is dropped unread (or fails). Only *clean* slots (all words `CLEAN` on the GPU timeline
/// of every later submission) are handed out, so a dispatch never needs a reset in front of it.
/// Slots given back unread are *dirty*: the next flush takes them all ([`SlotPool::take_dirty`])
/// and appends their resets, coalesced into one copy per contiguous range, at the end of its
/// command buffer — after every dispatch that may still write them, including ones of that same
/// batch — and they turn clean only once that submission is committed.
#[derive(Debug)]
pub(crate) struct SlotPool {
    lists: std::sync::Mutex<SlotLists>,
}

#[derive(Debug)]
struct SlotLists {
    /// Sorted descending, so `pop` hands out the lowest slot: slots used together stay
    /// contiguous, and so do their resets.
    clean: Vec<u32>,
    dirty: Vec<u32>,
    /// The fate each slot was last assigned to (for the forced check when none is free).
    owners: Vec<std::sync::Weak<crate::fate::Fate>>,
}

impl SlotPool {
    /// Every reportable slot (`1..STATUS_SLOTS`; slot 0 is scratch), clean.
    pub fn new() -> SlotPool {
        SlotPool {
            lists: std::sync::Mutex::new(SlotLists {
                clean: (1..STATUS_SLOTS).rev().collect(),
                dirty: Vec::new(),
                owners: (0..STATUS_SLOTS).map(|_| std::sync::Weak::new()).collect(),
            }),
        }
    }

    fn lists(&self) -> std::sync::MutexGuard<'_, SlotLists> {
        self.lists.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A clean slot; `None` when every slot is owned or waiting for its reset.
    pub fn take(&self) -> Option<u32> {
        self.lists().clean.pop()
    }

    /// Whether some slot waits for a reset (a flush would make it clean).
    pub fn has_dirty(&self) -> bool {
        !self.lists().dirty.is_empty()
    }

    /// Takes every dirty slot, for resets recorded at the end of the batch being submitted; the
    /// caller gives each back with [`SlotPool::release_clean`] (reset submitted) or
    /// [`SlotPool::release_dirty`] (not).
    pub fn take_dirty(&self) -> Vec<u32> {
        std::mem::take(&mut self.lists().dirty)
    }

    /// Returns slots whose reset was submitted (after any use of them).
    pub fn release_clean(&self, slots: impl IntoIterator<Item = u32>) {
        let mut l = self.lists();
        let before = l.clean.len();
        l.clean.extend(slots);
        if l.clean.len() != before {
            l.clean.sort_unstable_by(|a, b| b.cmp(a));
        }
    }

    /// Returns a slot whose words may be stale (reset by the next flush).
    pub fn release_dirty(&self, slot: u32) {
        self.lists().dirty.push(slot);
    }

    /// Records that `slot` now belongs to `fate`.
    pub fn set_owner(&self, slot: u32, fate: &std::sync::Arc<crate::fate::Fate>) {
        if let Some(o) = self.lists().owners.get_mut(slot as usize) {
            *o = std::sync::Arc::downgrade(fate);
        }
    }

    /// The live fates that own slots (some may have been read meanwhile; callers filter).
    pub fn owners(&self) -> Vec<std::sync::Arc<crate::fate::Fate>> {
        let weak: Vec<_> = self.lists().owners.clone();
        // Upgraded outside the lock: dropping the last handle of a fate takes the lock.
        weak.iter().filter_map(std::sync::Weak::upgrade).collect()
    }

    /// Free slots: (clean, dirty).
    #[cfg(test)]
    pub fn free(&self) -> (usize, usize) {
        let l = self.lists();
        (l.clean.len(), l.dirty.len())
    }
}

/// Coalesces `slots` into `(first, count)` runs of consecutive slots (one reset copy each).
pub(crate) fn slot_ranges(mut slots: Vec<u32>) -> Vec<(u32, u32)> {
    slots.sort_unstable();
    slots.dedup();
    let mut out: Vec<(u32, u32)> = Vec::new();
    for s in slots {
        match out.last_mut() {
            Some((first, count)) if *first + *count == s => *count += 1,
            _ => out.push((s, 1)),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dirty_slots_coalesce_into_contiguous_ranges() {
        assert_eq!(slot_ranges(vec![]), vec![]);
        assert_eq!(
            slot_ranges(vec![7, 3, 4, 5, 9, 8, 1, 4]),
            vec![(1, 1), (3, 3), (7, 3)]
        );
    }

    #[test]
    fn only_clean_slots_are_handed_out_lowest_first() {
        let pool = SlotPool::new();
        assert_eq!(pool.take(), Some(1));
        assert_eq!(pool.take(), Some(2));
        pool.release_dirty(1);
        assert_eq!(pool.take(), Some(3), "a dirty slot is never handed out");
        let dirty = pool.take_dirty();
        assert_eq!(dirty, vec![1]);
        assert!(!pool.has_dirty());
        pool.release_clean(dirty);
        assert_eq!(
            pool.take(),
            Some(1),
            "clean again once its reset was submitted"
        );
    }
}
