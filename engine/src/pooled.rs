//! The handle of one pooled buffer (child module of `pool.rs`, which owns the free lists): what
//! a tensor holds, and what goes back to its class's free list — with its launch marks — when the
//! handle drops.

use std::sync::{Arc, Mutex};

use super::{BufferKind, STAGING_FREE_CAP, State, lock};
use crate::hazard::UseMarks;

/// A pooled GPU buffer; returns to the pool's free list when dropped.
pub(crate) struct PooledBuffer {
    pub(super) buffer: wgpu::Buffer,
    /// Creation number within the pool (`alloc` reuses the lowest free one first).
    pub(super) id: u64,
    /// The launches that last used it (`hazard.rs`); they travel with the buffer when reused.
    pub(super) marks: Arc<UseMarks>,
    pub(super) kind: BufferKind,
    pub(super) class: u64,
    pub(super) bytes: u64,
    pub(super) state: Arc<Mutex<State>>,
}

impl PooledBuffer {
    /// The wgpu buffer (its size is the class size, ≥ [`Self::bytes`]).
    pub fn buffer(&self) -> &wgpu::Buffer {
        &self.buffer
    }

    /// The launch marks of the buffer (`hazard.rs`).
    pub fn marks(&self) -> &UseMarks {
        &self.marks
    }

    /// Requested bytes (rounded up to 4).
    pub fn bytes(&self) -> u64 {
        self.bytes
    }
}

impl std::fmt::Debug for PooledBuffer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "PooledBuffer({:?}, {} of {} bytes)",
            self.kind, self.bytes, self.class
        )
    }
}

impl Drop for PooledBuffer {
    fn drop(&mut self) {
        let mut st = lock(&self.state);
        match self.kind {
            BufferKind::Storage => {
                st.stats.live_bytes -= self.bytes;
                st.stats.in_use_bytes -= self.class;
                st.stats.live_buffers -= 1;
                st.free_storage_bytes += self.class;
            }
            BufferKind::Readback => st.free_staging_bytes += self.class,
        }
        st.seq += 1;
        let seq = st.seq;
        st.free
            .entry((self.kind, self.class))
            .or_default()
            .push_back((seq, self.id, self.buffer.clone(), Arc::clone(&self.marks)));
        let cap = st.free_cap;
        st.shrink_free(cap);
        while st.free_staging_bytes > STAGING_FREE_CAP && st.evict_lru(BufferKind::Readback) {}
    }
}
