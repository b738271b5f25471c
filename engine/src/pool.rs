//! The one buffer pool: size-classed reuse of GPU buffers through RAII handles.
//!
//! * **Size classes**: 256 B minimum, then four classes per power of two (`1.25, 1.5, 1.75, 2 ×
//!   2^p`), so a buffer is at most 25 % larger than requested. Sizes whose class would exceed
//!   `max_buffer_size` use the exact size (rounded to 4 bytes).
//! * **Reuse**: dropping a [`PooledBuffer`] (the last clone of the tensor holding it) puts the
//!   wgpu buffer on its class's free list; the next request of that class takes it (a *hit*).
//!   Buffers are never `destroy()`ed — dropping the handle lets wgpu free it once no submitted
//!   work uses it — so a buffer freed while a pending command encoder still reads it stays valid.
//! * **Bounded overhead**: before a new storage buffer is created, least-recently-released free
//!   buffers are dropped until the pool holds at most 1.2 × the bytes in use (+64 KiB), so peak
//!   allocated bytes stay ≤ 1.5 × live tensor bytes (1.25 class rounding × 1.2 cache). Workloads
//!   that repeat their shapes reuse everything and never evict.
//! * **Trimming**: [`BufferPool::trim`] drops every free buffer; free storage is also capped
//!   (`free_cap`, default 1 GiB) and free staging at 128 MiB.
//! * **Stats** ([`PoolStats`]): storage buffers only (tensor memory). Read-back staging buffers
//!   come from the same pool but are counted apart (`staging_bytes`).
//!
//! * **Bind groups** over pooled buffers are cached here too (`bind_cache.rs`): letting a
//!   buffer go (eviction, trim) drops the cached bind groups that bind it at once, so the cache
//!   never keeps memory alive that the stats report freed.
//!
//! Upload ordering: a buffer returned to the pool may still be read by recorded-but-unsubmitted
//! dispatches, so `queue.write_buffer` into a pooled buffer must only happen after the pending
//! encoder was submitted (the transfer path flushes first; see `transfer.rs`).

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};

use crate::error::{Error, Result, from_wgpu};
use crate::hazard::UseMarks;

#[path = "bind_cache.rs"]
pub(crate) mod bind_cache;
#[path = "pooled.rs"]
mod pooled;
use bind_cache::BindCache;
pub(crate) use pooled::PooledBuffer;

/// Smallest buffer the pool hands out.
const MIN_CLASS: u64 = 256;

/// The size class (allocated bytes) for a request of `bytes`.
pub fn size_class(bytes: u64) -> u64 {
    if bytes <= MIN_CLASS {
        return MIN_CLASS;
    }
    // 2^p < bytes <= 2^(p+1); step is a quarter of 2^p.
    let p = 63 - (bytes - 1).leading_zeros();
    let step = (1u64 << p) / 4;
    // Saturates near u64::MAX (above every device's limit, where the pool takes `bytes` as is).
    bytes.div_ceil(step).saturating_mul(step)
}

/// What a pooled buffer is for (its wgpu usages).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum BufferKind {
    /// Tensor storage: `STORAGE | COPY_SRC | COPY_DST`.
    Storage,
    /// Read-back staging: `MAP_READ | COPY_DST`.
    Readback,
}

impl BufferKind {
    fn usages(self) -> wgpu::BufferUsages {
        match self {
            BufferKind::Storage => {
                wgpu::BufferUsages::STORAGE
                    | wgpu::BufferUsages::COPY_SRC
                    | wgpu::BufferUsages::COPY_DST
            }
            BufferKind::Readback => wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
        }
    }
}

/// Memory statistics of the pool (storage buffers; staging counted apart).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct PoolStats {
    /// Bytes of all storage buffers the pool owns (live + free).
    pub allocated_bytes: u64,
    /// Bytes requested by live buffers (logical tensor bytes, before class rounding).
    pub live_bytes: u64,
    /// Allocated bytes of live buffers (after class rounding).
    pub in_use_bytes: u64,
    /// Highest `allocated_bytes` seen since creation (or the last `reset_peaks`).
    pub peak_allocated_bytes: u64,
    /// Highest `live_bytes` seen since creation (or the last `reset_peaks`).
    pub peak_live_bytes: u64,
    /// Requests served from the free list (storage and read-back staging alike).
    pub hits: u64,
    /// Requests that created a new buffer (storage and read-back staging alike).
    pub misses: u64,
    /// Live storage buffers.
    pub live_buffers: u64,
    /// Bytes of read-back staging buffers the pool owns.
    pub staging_bytes: u64,
    /// Bytes of the streams' upload staging ring, kept between streams (its buffers grow to the
    /// largest chunk streamed; [`Engine::trim_pool`](crate::Engine::trim_pool) drops them).
    /// Reads 0 while a stream runs: the stream holds the ring then, and its bytes are live.
    pub upload_staging_bytes: u64,
    /// Launches whose bind group was reused from the bind-group cache (`bind_cache.rs`).
    pub bind_group_hits: u64,
    /// Bind groups the launches created (a cache miss: a few µs of the caller's time each).
    pub bind_groups_created: u64,
}

impl PoolStats {
    /// Peak allocated bytes over peak live tensor bytes (the pool's memory overhead; goal ≤ 1.5).
    /// `None` before anything was allocated.
    pub fn peak_ratio(&self) -> Option<f64> {
        (self.peak_live_bytes > 0)
            .then(|| self.peak_allocated_bytes as f64 / self.peak_live_bytes as f64)
    }
}

/// A free buffer: its release number, its creation number, the buffer, and its launch marks
/// (`hazard.rs`).
type FreeBuffer = (u64, u64, wgpu::Buffer, Arc<UseMarks>);

/// Pool state behind the lock. Free lists are per (kind, class), oldest first; every free buffer
/// carries the sequence number of its release, so eviction drops the least recently used, and
/// its creation number, by which `alloc` picks (lowest first).
struct State {
    free: HashMap<(BufferKind, u64), VecDeque<FreeBuffer>>,
    seq: u64,
    /// Buffers created so far (the next one's creation number).
    created: u64,
    free_storage_bytes: u64,
    free_staging_bytes: u64,
    stats: PoolStats,
    free_cap: u64,
    binds: Arc<BindCache>,
}

impl State {
    fn bump_peaks(&mut self) {
        let s = &mut self.stats;
        s.peak_allocated_bytes = s.peak_allocated_bytes.max(s.allocated_bytes);
        s.peak_live_bytes = s.peak_live_bytes.max(s.live_bytes);
    }

    /// Drops the least recently released free buffer of `kind`; false when there is none.
    fn evict_lru(&mut self, kind: BufferKind) -> bool {
        let oldest = self
            .free
            .iter()
            .filter(|((k, _), list)| *k == kind && !list.is_empty())
            .min_by_key(|(_, list)| list.front().map_or(u64::MAX, |e| e.0))
            .map(|(key, _)| *key);
        let Some(key) = oldest else { return false };
        let evicted = self.free.get_mut(&key).and_then(VecDeque::pop_front);
        // A cached bind group over the buffer would keep it alive: it goes with the buffer (only
        // storage buffers are ever bound).
        if let (Some((_, _, buffer, _)), BufferKind::Storage) = (&evicted, kind) {
            self.binds.forget(buffer);
        }
        match kind {
            BufferKind::Storage => {
                self.free_storage_bytes -= key.1;
                self.stats.allocated_bytes -= key.1;
            }
            BufferKind::Readback => {
                self.free_staging_bytes -= key.1;
                self.stats.staging_bytes -= key.1;
            }
        }
        true
    }

    /// Evicts LRU free storage buffers until at most `cap` bytes stay cached.
    fn shrink_free(&mut self, cap: u64) {
        while self.free_storage_bytes > cap && self.evict_lru(BufferKind::Storage) {}
    }

    /// Before creating a storage buffer of `class` bytes: evicts LRU free buffers so that the
    /// pool stays within [`OVERHEAD_DIVISOR`] of the bytes in use (plus [`OVERHEAD_SLACK`]).
    fn make_room(&mut self, class: u64) {
        let in_use = self.stats.in_use_bytes + class;
        let budget = in_use + (in_use / OVERHEAD_DIVISOR).max(OVERHEAD_SLACK);
        while self.stats.allocated_bytes + class > budget && self.evict_lru(BufferKind::Storage) {}
    }
}

/// Cached free storage may add at most 1/5 of the bytes in use when a new buffer is created, so
/// peak allocated ≤ 1.2 × in-use ≤ 1.2 × 1.25 × live = 1.5 × live tensor bytes.
const OVERHEAD_DIVISOR: u64 = 5;
/// Free bytes always allowed, so tiny workloads do not thrash buffer creation.
const OVERHEAD_SLACK: u64 = 64 << 10;
/// Cap on cached free read-back staging bytes.
const STAGING_FREE_CAP: u64 = 128 << 20;

fn lock(m: &Mutex<State>) -> MutexGuard<'_, State> {
    // A panic elsewhere must not make the pool unusable: the state stays consistent per update.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// The engine's buffer pool (one per GPU engine).
pub(crate) struct BufferPool {
    device: wgpu::Device,
    state: Arc<Mutex<State>>,
    max_buffer: u64,
    faults: Arc<crate::fault::Faults>,
    /// Group-0 bind groups over this pool's buffers.
    pub binds: Arc<BindCache>,
}

/// Default cap on cached free storage bytes (beyond it, least recently used free buffers go).
const DEFAULT_FREE_CAP: u64 = 1 << 30;

impl BufferPool {
    /// An empty pool for `device`; buffers never exceed `max_buffer` bytes.
    pub fn new(
        device: wgpu::Device,
        max_buffer: u64,
        faults: Arc<crate::fault::Faults>,
    ) -> BufferPool {
        let binds = Arc::new(BindCache::default());
        BufferPool {
            device,
            faults,
            binds: Arc::clone(&binds),
            state: Arc::new(Mutex::new(State {
                binds,
                free: HashMap::new(),
                seq: 0,
                created: 0,
                free_storage_bytes: 0,
                free_staging_bytes: 0,
                stats: PoolStats::default(),
                free_cap: DEFAULT_FREE_CAP,
            })),
            max_buffer,
        }
    }

    /// A buffer of at least `bytes` (> 0) bytes for `kind`, reused when one of its class is free.
    pub fn alloc(&self, kind: BufferKind, bytes: u64, what: &str) -> Result<PooledBuffer> {
        // Rounded up to whole words; a size that cannot be rounded is above any device limit.
        let rounded = bytes.max(4).checked_next_multiple_of(4);
        if kind == BufferKind::Storage && self.faults.take_oom() {
            return Err(Error::OutOfMemory {
                context: format!(
                    "allocating {bytes} bytes of GPU memory for {what} (injected fault)"
                ),
            });
        }
        let bytes = match rounded {
            Some(b) if b <= self.max_buffer => b,
            _ => {
                return Err(Error::LimitExceeded {
                    limit: "max_buffer_size",
                    requested: rounded.unwrap_or(bytes),
                    max: self.max_buffer,
                    what: what.to_string(),
                });
            }
        };
        let class = match size_class(bytes) {
            c if c <= self.max_buffer => c,
            _ => bytes,
        };
        let reused = {
            let mut st = lock(&self.state);
            // The free buffer created first. Which buffers are free at a given allocation of a
            // repeated workload (a decode step) is the same set every time, but the order they
            // were released in drifts from step to step; picking by creation number gives every
            // allocation of the step the same buffer each time, so the launches bind the same
            // buffers and their bind groups come from the cache (`bind_cache.rs`). Most recently
            // released first gave a 30-layer decode step 122 bind-group creations, this 32.
            let buf = st.free.get_mut(&(kind, class)).and_then(|list| {
                let first = (0..list.len()).min_by_key(|&i| list[i].1)?;
                list.remove(first)
            });
            match (&buf, kind) {
                (Some(_), BufferKind::Storage) => st.free_storage_bytes -= class,
                (Some(_), BufferKind::Readback) => st.free_staging_bytes -= class,
                (None, BufferKind::Storage) => st.make_room(class),
                (None, BufferKind::Readback) => {}
            }
            if buf.is_some() {
                st.stats.hits += 1;
            }
            buf.map(|(_, id, b, m)| (id, b, m))
        };
        let (id, buffer, marks) = match reused {
            Some(b) => b,
            None => {
                let buffer = self.create(kind, class, what)?;
                let mut st = lock(&self.state);
                st.created += 1;
                (st.created, buffer, Arc::default())
            }
        };
        let mut st = lock(&self.state);
        if kind == BufferKind::Storage {
            st.stats.live_bytes += bytes;
            st.stats.in_use_bytes += class;
            st.stats.live_buffers += 1;
            st.bump_peaks();
        }
        Ok(PooledBuffer {
            buffer,
            id,
            marks,
            kind,
            class,
            bytes,
            state: Arc::clone(&self.state),
        })
    }

    /// Creates a new buffer inside an out-of-memory error scope; on OOM trims and retries once.
    fn create(&self, kind: BufferKind, class: u64, what: &str) -> Result<wgpu::Buffer> {
        for attempt in 0..2 {
            let scope = self.device.push_error_scope(wgpu::ErrorFilter::OutOfMemory);
            let vscope = self.device.push_error_scope(wgpu::ErrorFilter::Validation);
            let buffer = self.device.create_buffer(&wgpu::BufferDescriptor {
                label: Some("bitnet-wgpu pool"),
                size: class,
                usage: kind.usages(),
                mapped_at_creation: false,
            });
            let verr = pollster::block_on(vscope.pop());
            let oom = pollster::block_on(scope.pop());
            let ctx = || format!("allocating {class} bytes of GPU memory for {what}");
            if let Some(e) = verr {
                return Err(from_wgpu(e, ctx()));
            }
            match oom {
                None => {
                    let mut st = lock(&self.state);
                    st.stats.misses += 1;
                    match kind {
                        BufferKind::Storage => st.stats.allocated_bytes += class,
                        BufferKind::Readback => st.stats.staging_bytes += class,
                    }
                    st.bump_peaks();
                    return Ok(buffer);
                }
                Some(e) if attempt == 1 => return Err(from_wgpu(e, ctx())),
                Some(_) => {
                    log::warn!(
                        "GPU out of memory {}; trimming the pool and retrying",
                        ctx()
                    );
                    self.trim();
                }
            }
        }
        unreachable!("the loop returns on its second attempt")
    }

    /// Drops every free buffer (storage and staging), and every cached bind group.
    pub fn trim(&self) {
        // First, so the evictions below find (next to) nothing to prune entry by entry; one
        // cached meanwhile by a concurrent launch is still pruned by the eviction of its buffer.
        self.binds.clear();
        let mut st = lock(&self.state);
        st.shrink_free(0);
        while st.evict_lru(BufferKind::Readback) {}
        st.free.clear();
    }

    /// Caps cached free storage bytes (dropping least recently used free buffers beyond it).
    pub fn set_free_cap(&self, bytes: u64) {
        let mut st = lock(&self.state);
        st.free_cap = bytes;
        st.shrink_free(bytes);
    }

    /// A snapshot of the statistics.
    pub fn stats(&self) -> PoolStats {
        let st = lock(&self.state);
        let (bind_group_hits, bind_groups_created) = st.binds.counts();
        PoolStats {
            bind_group_hits,
            bind_groups_created,
            ..st.stats
        }
    }

    /// Resets the peaks to the current values (to measure one workload).
    pub fn reset_peaks(&self) {
        let mut st = lock(&self.state);
        st.stats.peak_allocated_bytes = st.stats.allocated_bytes;
        st.stats.peak_live_bytes = st.stats.live_bytes;
    }
}

#[cfg(test)]
#[path = "pool_tests.rs"]
mod tests;
