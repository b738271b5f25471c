//! The non-finite status buffer: one `u32` word per flagging launch, lowest offending index wins.
//!
//! Each launch binds a status slot of [`STATUS_WORDS`] words at `@group(1) @binding(1)` (kernels
//! see `array<atomic<u32>, 4>`). Word `t` belongs to the launch's `t`-th checked tensor. Words
//! start at `0xFFFF_FFFF`; a kernel that sees a non-finite value at flat index `i` of checked
//! tensor `t` does `atomicMin(&nonfinite[t], i)`. Launches that do not check still bind a slot
//! (every pipeline has the binding); theirs is never read and is reset like a dropped one.
//!
//! One buffer per slot: wgpu puts a pipeline barrier between two dispatches of a pass that bind
//! the same buffer read-write, and on the H200 a barrier costs about 2 µs (a dispatch behind one
//! waits for every earlier dispatch to drain; independent dispatches overlap at 0.16 µs each,
//! `bench/src/dispatch_floor.rs`). With the slots in one buffer, every dispatch of the engine was
//! serialized behind the previous one, dependent or not. Within a batch no slot is handed out
//! twice, so distinct slots mean distinct buffers and only real data dependencies cost a barrier.
//! Resets are dispatches of the `status_reset` kernel, one per slot, in one pass at the end of a
//! batch (`encode.rs`): they overlap too, where a copy per slot would pay a barrier each.
//!
//! Attribution is per launch, never engine-wide: the slot belongs to the launch's
//! [`Fate`](crate::fate::Fate), and only a read of a tensor whose lineage contains that fate copies
//! the slot out — 16 slots per dispatch through the status gather, which leaves them clean
//! (`status_gather.rs`), or a copy per slot where the device cannot bind the gather (on CPU
//! adapters also resetting it; see [`copy_out_resets`]) — see `fate.rs`.
//! Slots return to the [`SlotPool`] only after being read, or when their fate is dropped unread.

use crate::error::Error;

/// Without the status gather (`status_gather.rs`): whether a read's copy-out of a slot also
/// resets it, with a second copy in the same command (CPU adapters), or leaves it dirty for the
/// reset pass of a later flush (GPUs). wgpu orders two
/// copies touching one buffer with a barrier, so the reset copy costs a barrier per slot, where
/// the reset pass — a dispatch per slot, each slot's first use in its command buffer — costs none
/// of its own. H200, a read after 600 / 1000 dependent checked ops: 6.3-6.5 / 8.3-8.8 ms with
/// reset copies, 4.8-5.1 / 5.2-5.4 ms deferred. On lavapipe a dispatch costs more than a copy.
pub(crate) fn copy_out_resets(gpu: &crate::context::Gpu) -> bool {
    gpu.adapter_info.device_type == wgpu::DeviceType::Cpu
}

/// Whether a read's copy-out leaves its slot clean: always through the status gather
/// (`status_gather.rs`: it exchanges the words for `CLEAN`), else where [`copy_out_resets`].
pub(crate) fn copy_out_cleans(gpu: &crate::context::Gpu) -> bool {
    gpu.status_gather.is_some() || copy_out_resets(gpu)
}

/// Number of status slots (one buffer each). Every launch takes a clean slot: a launch without
/// a non-finite check holds it until its batch is submitted, a checked one (every BitNet op)
/// while its outputs are alive and unread; a slot given back unread is reset by a later
/// submission (once a quarter of the slots wait for it, or the clean ones run low). So a batch
/// whose launches, together with the earlier checked launches whose outputs are still alive and
/// unread, need more slots than this is submitted in pieces (a flush
/// whenever the clean slots run out), and when every slot is owned by an unread launch, the
/// engine copies them all out at once (a sync) and stores each result in its own launch's fate.
/// The benchmark's overlapped samples stay under half of it (`bench/src/timing.rs`).
pub const STATUS_SLOTS: u32 = 1024;

/// Dirty slots a flush lets gather before it records their resets
/// ([`SlotPool::take_dirty_if_due`]): a quarter of the slots, so three quarters stay clean.
const RESET_BATCH: usize = STATUS_SLOTS as usize / 4;

/// Status words per slot (checked tensors per launch).
pub const STATUS_WORDS: usize = 4;
/// The value of a clean slot.
pub(crate) const CLEAN: u32 = u32::MAX;

/// The tensor name of a status word that flags an aborted run rather than a value: a word named
/// this decodes to [`Error::Aborted`] (see `bitlinear_chain_subgroup.wgsl`).
pub const ABORTED: &str = "(run aborted)";

/// The tensor name of a status word a kernel uses as its own in-dispatch state (it starts clean
/// like every word): never decoded as an error (see `weight_quant_fused.wgsl`).
pub const KERNEL_STATE: &str = "(kernel state)";

/// What a flagging launch reports, and where its index space starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct NonFiniteCheck {
    /// Operation name reported in [`Error::NonFinite`] (use cpu-ref's op name for the same op).
    pub op: &'static str,
    /// Names of the checked tensors, by status word (e.g. `["x", "output"]`, matching cpu-ref).
    /// Unused words are `""`. When several words are flagged, the lowest word wins (list inputs
    /// before outputs, as cpu-ref checks inputs first).
    pub tensors: [&'static str; STATUS_WORDS],
    /// Added to the kernel's index, by status word (for chunked launches: the chunk's first
    /// flat index in that tensor; a launch may check tensors chunked differently).
    pub bases: [u64; STATUS_WORDS],
    /// The op reported for a status word where it is not [`NonFiniteCheck::op`] (`""`: `op`):
    /// a launch that does the work of several ops reports each word as the op that would have
    /// flagged it ([`NonFiniteCheck::word_op`]).
    pub word_ops: [&'static str; STATUS_WORDS],
    /// Tensor names by kind for a *tagged* status word (empty: an untagged word): its kernel
    /// flags `kind << TAG_SHIFT | index` ([`NonFiniteCheck::tagged`]), so one word reports up to
    /// four tensors, lowest kind first, then lowest index — how four words would decode.
    pub tags: [&'static [&'static str]; STATUS_WORDS],
}

/// Where a tagged status word's kind starts (bits 30-31); the index is the bits below.
pub const TAG_SHIFT: u32 = 30;

impl NonFiniteCheck {
    /// A check of one tensor (status word 0) named `tensor`.
    pub const fn new(op: &'static str, tensor: &'static str) -> NonFiniteCheck {
        NonFiniteCheck {
            op,
            tensors: [tensor, "", "", ""],
            bases: [0; STATUS_WORDS],
            word_ops: [""; STATUS_WORDS],
            tags: [&[]; STATUS_WORDS],
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
            bases: [0; STATUS_WORDS],
            word_ops: [""; STATUS_WORDS],
            tags: [&[]; STATUS_WORDS],
        }
    }

    /// The same check with index base `base` for every word (chunked launches).
    pub const fn at(self, base: u64) -> NonFiniteCheck {
        NonFiniteCheck {
            bases: [base; STATUS_WORDS],
            ..self
        }
    }

    /// The same check with one index base per status word (a chunk of tensors whose flat
    /// indices start at different places, e.g. row `r` of `[M, K]` input and `[M, N]` output).
    pub const fn at_each(self, bases: [u64; STATUS_WORDS]) -> NonFiniteCheck {
        NonFiniteCheck { bases, ..self }
    }

    /// The same check with status word `word` reported as op `op`.
    pub const fn word_op(mut self, word: usize, op: &'static str) -> NonFiniteCheck {
        self.word_ops[word] = op;
        self
    }

    /// The same check with status word `word` tagged: its kernel flags kind `k` at index `i` as
    /// `k << TAG_SHIFT | i` (`i < 2^30`), and it decodes to tensor `names[k]` (a kernel that
    /// does the work of two ops reports the first one's four words in one).
    pub const fn tagged(mut self, word: usize, names: &'static [&'static str]) -> NonFiniteCheck {
        self.tags[word] = names;
        self
    }

    /// The op reported for status word `word`.
    fn op_of(&self, word: usize) -> &'static str {
        match self.word_ops[word] {
            "" => self.op,
            op => op,
        }
    }

    /// The status word whose flags decode to `tensor` (the inverse of the decoded name), or
    /// [`STATUS_WORDS`] for a name this check does not report.
    pub(crate) fn word_of(&self, tensor: &str) -> usize {
        (0..STATUS_WORDS)
            .find(|&t| self.tensor_name(t) == tensor || self.tags[t].contains(&tensor))
            .unwrap_or(STATUS_WORDS)
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
    /// One [`STATUS_BYTES`](crate::group::STATUS_BYTES)-byte buffer per slot. Created zeroed
    /// (which reads as "flagged"), so the [`SlotPool`] starts with every slot dirty and the first
    /// flush resets them.
    pub slots: Vec<wgpu::Buffer>,
    /// 16 bytes of `0xFF`: the reset source of a slot copied out by a read.
    pub ones: wgpu::Buffer,
}

impl StatusBuffers {
    /// Creates the slot buffers (dirty) and the reset source.
    pub fn new(device: &wgpu::Device) -> StatusBuffers {
        let bytes = crate::group::STATUS_BYTES;
        let slot_usage = wgpu::BufferUsages::STORAGE
            | wgpu::BufferUsages::COPY_SRC
            | wgpu::BufferUsages::COPY_DST;
        let slots = (0..STATUS_SLOTS)
            .map(|_| {
                device.create_buffer(&wgpu::BufferDescriptor {
                    label: Some("bitnet-wgpu status slot"),
                    size: bytes,
                    usage: slot_usage,
                    mapped_at_creation: false,
                })
            })
            .collect();
        let ones = device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("bitnet-wgpu status reset"),
            size: bytes,
            usage: wgpu::BufferUsages::COPY_SRC,
            mapped_at_creation: true,
        });
        if let Ok(mut view) = ones.get_mapped_range_mut(..) {
            view.copy_from_slice(&[0xFF; crate::group::STATUS_BYTES as usize]);
        }
        ones.unmap();
        StatusBuffers { slots, ones }
    }
}

/// The `status_reset` pipeline and its (empty) group 0, compiled when the engine starts.
pub(crate) struct StatusReset {
    pub compiled: std::sync::Arc<crate::pipelines::Compiled>,
    pub group0: wgpu::BindGroup,
}

impl StatusReset {
    /// Compiles the reset kernel (an error here fails engine creation: no slot could be reset).
    pub fn new(
        pipelines: &crate::pipelines::PipelineCache,
        device: &wgpu::Device,
    ) -> crate::error::Result<StatusReset> {
        const RESET: crate::pipelines::Kernel =
            crate::pipelines::Kernel::new(bitnet_kernels_wgsl::util::STATUS_RESET, "main", &[]);
        let compiled = pipelines.get(&RESET, &[])?;
        let group0 = compiled.bind(device, RESET.source.name, &[])?;
        Ok(StatusReset { compiled, group0 })
    }
}

/// Decodes one status slot's words (`bytes`, at least `4 * STATUS_WORDS` long) for `check`:
/// the lowest flagged word wins (inputs are listed before outputs, as cpu-ref checks them).
pub(crate) fn decode_slot(check: &NonFiniteCheck, bytes: &[u8]) -> Option<Error> {
    (0..STATUS_WORDS).find_map(|t| {
        let word = u32::from_le_bytes(bytes.get(4 * t..4 * t + 4)?.try_into().ok()?);
        let flagged = word != CLEAN && check.tensors[t] != KERNEL_STATE;
        let (tensor, index) = match check.tags[t] {
            [] => (check.tensor_name(t), word),
            names => (
                names
                    .get((word >> TAG_SHIFT) as usize)
                    .copied()
                    .unwrap_or("input"),
                word & ((1 << TAG_SHIFT) - 1),
            ),
        };
        flagged.then(|| match check.tensors[t] {
            ABORTED => Error::Aborted { op: check.op_of(t) },
            _ => Error::NonFinite {
                op: check.op_of(t),
                tensor,
                index: usize::try_from(check.bases[t] + u64::from(index)).unwrap_or(usize::MAX),
            },
        })
    })
}

/// The free status slots. A slot is owned by one launch's [`Fate`](crate::fate::Fate) from the
/// launch until its value was copied out by a read (then clean, or dirty: [`copy_out_cleans`]), or
/// until the fate is dropped unread (or fails); an unchecked launch holds its slot until its batch
/// is submitted. Only *clean* slots (all words `CLEAN` on the GPU timeline of every later
/// submission) are handed out, so a dispatch never needs a reset in front of it, and a slot is
/// never bound twice in one batch. Slots given back unread are *dirty*: a flush takes them all once
/// enough wait ([`SlotPool::take_dirty_if_due`]) and appends their resets at the end of its command
/// buffer — after every dispatch that may still write them, including ones of that same batch — and
/// they turn clean only once that submission is committed. Every slot starts dirty (new buffers are
/// zeroed, not clean).
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
    /// Every slot, dirty (the first flush resets them).
    pub fn new() -> SlotPool {
        SlotPool {
            lists: std::sync::Mutex::new(SlotLists {
                clean: Vec::new(),
                dirty: (0..STATUS_SLOTS).collect(),
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

    /// Every dirty slot, whether or not resetting is due (tests reset them as the first flush
    /// does).
    #[cfg(test)]
    pub fn take_dirty(&self) -> Vec<u32> {
        std::mem::take(&mut self.lists().dirty)
    }

    /// Takes every dirty slot once resetting is due, for resets recorded at the end of the batch
    /// being submitted; the caller gives each back with [`SlotPool::release_clean`] (reset
    /// submitted) or [`SlotPool::release_dirty`] (not). Due: [`RESET_BATCH`] slots are dirty, or
    /// fewer than that are clean (so a launch finding none clean always gets a flush that
    /// resets). Not before: each flush that resets records a compute pass of its own, which a
    /// small submission pays for in full (H200 host, a 4-value add and `sync`, two alternating
    /// rounds: 80.6 / 80.8 µs resetting at every flush, 68.8 / 70.5 µs deferred).
    pub fn take_dirty_if_due(&self) -> Vec<u32> {
        let mut l = self.lists();
        if l.dirty.len() >= RESET_BATCH || l.clean.len() < RESET_BATCH {
            std::mem::take(&mut l.dirty)
        } else {
            Vec::new()
        }
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

    /// Returns a slot whose words may be stale (reset by a later flush).
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

#[cfg(test)]
#[path = "status_tests.rs"]
mod tests;
