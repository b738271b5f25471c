//! The non-finite status buffer: one `u32` word per flagging launch, lowest offending index wins.
//!
//! Each launch that checks tensors for NaN/Inf gets a fresh slot of [`STATUS_WORDS`] words (bound at
//! `@group(1) @binding(1)` through a dynamic offset, so kernels see `array<atomic<u32>, 4>`). Word
//! `t` belongs to the launch's `t`-th checked tensor. Words start at `0xFFFF_FFFF`; a kernel that
//! sees a non-finite value at flat index `i` of checked tensor `t` does
//! `atomicMin(&nonfinite[t], i)`. Slot 0 is a scratch slot bound to launches that do not check
//! (never reported). At a read-back the used slots are copied to a staging
//! buffer and reset (copy from a constant all-ones buffer, in encoder order), then decoded: the
//! first flagged launch in launch order becomes [`Error::NonFinite`].

use crate::error::Error;

/// Number of status slots (slot 0 is scratch). When all are used without a read-back, the engine
/// checks them at once (a sync) and keeps the error for the next read-back.
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

/// Launches whose status slots are in flight, in launch order (slot `i + 1` ↔ `checks[i]`).
#[derive(Debug, Default)]
pub(crate) struct StatusLog {
    /// The checks of the used slots.
    pub checks: Vec<NonFiniteCheck>,
}

impl StatusLog {
    /// Whether every reportable slot is used.
    pub fn full(&self) -> bool {
        self.checks.len() as u32 >= STATUS_SLOTS - 1
    }

    /// Takes a slot for `check`; returns its index.
    pub fn push(&mut self, check: NonFiniteCheck) -> u32 {
        self.checks.push(check);
        self.checks.len() as u32
    }

    /// Decodes read-back slot words (slots `1..=checks.len()`, `stride` bytes apart).
    pub fn decode(checks: &[NonFiniteCheck], bytes: &[u8], stride: u64) -> Option<Error> {
        checks.iter().enumerate().find_map(|(i, c)| {
            (0..STATUS_WORDS).find_map(|t| {
                let at = i * stride as usize + 4 * t;
                let word = u32::from_le_bytes(bytes.get(at..at + 4)?.try_into().ok()?);
                (word != CLEAN).then(|| Error::NonFinite {
                    op: c.op,
                    tensor: c.tensor_name(t),
                    index: usize::try_from(c.base + u64::from(word)).unwrap_or(usize::MAX),
                })
            })
        })
    }
}
