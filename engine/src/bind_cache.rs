//! Reuse of group-0 bind groups (issue #5: creating one was most of a launch's CPU cost).
//!
//! A launch's group 0 is fully determined by the kernel's group-0 layout and its exact bindings
//! (buffer, offset, size); bind groups are immutable, so one created for the same key earlier is
//! reused as is — pooled buffers come back in the same order every step of a repeated workload
//! (a decode loop), so their bind groups repeat too. The cache lives in the buffer pool because
//! the pool decides buffer lifetimes: a cached bind group keeps its buffers alive, so when the
//! pool lets a buffer go (eviction) it drops the entries that bind it at once
//! ([`BindCache::forget`]), and a trim drops every entry ([`BindCache::clear`]). Not at the next
//! launch: none may come, and until the entries go the memory the pool reports freed is still
//! held (and an eviction made to fit a new buffer would not make room for it). The cache is
//! bounded ([`MAX_ENTRIES`]; full means cleared).

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hash, Hasher};
use std::sync::Mutex;
use std::sync::atomic::Ordering;

use crate::error::Result;

/// Entries kept at most (a decode step of a 2B model needs a few hundred).
pub(crate) const MAX_ENTRIES: usize = 4096;

/// What a bind group was created for.
struct Key {
    layout: wgpu::BindGroupLayout,
    bindings: Vec<(wgpu::Buffer, u64, u64)>,
}

impl Key {
    fn matches(
        &self,
        layout: &wgpu::BindGroupLayout,
        bindings: &[(&wgpu::Buffer, u64, u64)],
    ) -> bool {
        self.layout == *layout
            && self.bindings.len() == bindings.len()
            && self
                .bindings
                .iter()
                .zip(bindings)
                .all(|((b, o, s), (b2, o2, s2))| b == *b2 && o == o2 && s == s2)
    }

    /// Whether the bind group binds `buffer`.
    fn binds(&self, buffer: &wgpu::Buffer) -> bool {
        self.bindings.iter().any(|(b, _, _)| b == buffer)
    }
}

/// Entries by a hash of their key (computed from borrowed bindings: a hit clones nothing).
type Map = HashMap<u64, Vec<(Key, wgpu::BindGroup)>, BuildHasherDefault<Prehashed>>;

/// Group-0 bind groups by layout and bindings.
#[derive(Default)]
pub(crate) struct BindCache {
    map: Mutex<Map>,
    /// Entries in `map`.
    len: std::sync::atomic::AtomicUsize,
    /// Lookups served from the cache, and bind groups created ([`PoolStats`](crate::PoolStats)).
    hits: std::sync::atomic::AtomicU64,
    created: std::sync::atomic::AtomicU64,
}

impl BindCache {
    /// The bind group of `layout` over `bindings` (`buffer, offset, size` at bindings 0, 1, ...):
    /// a cached one, or the one `create` makes (cached when it succeeds).
    pub fn get_or_create(
        &self,
        layout: &wgpu::BindGroupLayout,
        bindings: &[(&wgpu::Buffer, u64, u64)],
        create: impl FnOnce() -> Result<wgpu::BindGroup>,
    ) -> Result<wgpu::BindGroup> {
        let hash = key_hash(layout, bindings);
        if let Some(list) = self.lock().get(&hash)
            && let Some((_, g)) = list.iter().find(|(k, _)| k.matches(layout, bindings))
        {
            self.hits.fetch_add(1, Ordering::Relaxed);
            return Ok(g.clone());
        }
        // Created outside the lock (it enters wgpu); a racing duplicate is harmless.
        let group = create()?;
        self.created.fetch_add(1, Ordering::Relaxed);
        let key = Key {
            layout: layout.clone(),
            bindings: bindings
                .iter()
                .map(|&(b, o, s)| (b.clone(), o, s))
                .collect(),
        };
        let dropped = {
            let mut map = self.lock();
            let full = self.len.load(Ordering::Relaxed) >= MAX_ENTRIES;
            let dropped = full.then(|| std::mem::take(&mut *map));
            if full {
                self.len.store(0, Ordering::Relaxed);
            }
            map.entry(hash).or_default().push((key, group.clone()));
            self.len.fetch_add(1, Ordering::Relaxed);
            dropped
        };
        drop(dropped); // bind groups are released outside the lock
        Ok(group)
    }

    /// Drops the entries that bind `buffer` now (the pool let it go), so that no cached bind
    /// group keeps its memory alive. A launch only binds buffers of live tensors, so no entry
    /// over `buffer` can be added after the pool freed it.
    pub fn forget(&self, buffer: &wgpu::Buffer) {
        if self.len.load(Ordering::Relaxed) == 0 {
            return;
        }
        let mut dropped = Vec::new();
        {
            let mut map = self.lock();
            map.retain(|_, list| {
                dropped.extend(list.extract_if(.., |(k, _)| k.binds(buffer)));
                !list.is_empty()
            });
            self.len.fetch_sub(dropped.len(), Ordering::Relaxed);
        }
        drop(dropped); // bind groups are released outside the lock
    }

    /// Drops every entry now (releasing the buffers they hold).
    pub fn clear(&self) {
        let old = {
            let mut map = self.lock();
            self.len.store(0, Ordering::Relaxed);
            std::mem::take(&mut *map)
        };
        drop(old);
    }

    /// Lookups served from the cache, and bind groups created, since the engine started.
    pub fn counts(&self) -> (u64, u64) {
        (
            self.hits.load(Ordering::Relaxed),
            self.created.load(Ordering::Relaxed),
        )
    }

    /// Cached entries.
    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.len.load(Ordering::Relaxed)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Map> {
        self.map.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// A cheap multiplicative hash of the key (wgpu handles hash their small integer ids; SipHash
/// was a tenth of a launch's cost).
fn key_hash(layout: &wgpu::BindGroupLayout, bindings: &[(&wgpu::Buffer, u64, u64)]) -> u64 {
    let mut h = Mixer(0);
    layout.hash(&mut h);
    for (b, o, s) in bindings {
        b.hash(&mut h);
        h.write_u64(*o);
        h.write_u64(*s);
    }
    h.finish()
}

/// Fx-style mixing hasher (not DoS-resistant; keys are the engine's own handles).
struct Mixer(u64);

impl Hasher for Mixer {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for c in bytes.chunks(8) {
            let mut w = [0u8; 8];
            w[..c.len()].copy_from_slice(c);
            self.write_u64(u64::from_le_bytes(w));
        }
    }
    fn write_u64(&mut self, v: u64) {
        self.0 = (self.0.rotate_left(5) ^ v).wrapping_mul(0x51_7c_c1_b7_27_22_0a_95);
    }
}

/// The map's keys are already hashes: pass them through.
#[derive(Default)]
struct Prehashed(u64);

impl Hasher for Prehashed {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0 << 8) | u64::from(b);
        }
    }
    fn write_u64(&mut self, v: u64) {
        self.0 = v;
    }
}

#[cfg(test)]
mod tests {
    use crate::engine::EngineOptions;

    #[test]
    fn repeated_bindings_reuse_one_bind_group_until_the_pool_lets_go() {
        let e = crate::test_gpu::gpu_with(EngineOptions {
            idle_flush: None,
            ..EngineOptions::default()
        });
        let g = e.gpu_context().expect("a GPU engine");
        let x = e.upload_f32(&[3.0; 64], &[64]).unwrap();
        let y = e.copy(&x).unwrap();
        assert_eq!(y.read_f32().unwrap(), vec![3.0; 64]);
        drop(y);
        let cached = g.pool.binds.len();
        let before = e.pool_stats();
        // The output buffer comes back from the pool: same bindings, same bind group.
        let y = e.copy(&x).unwrap();
        assert_eq!(y.read_f32().unwrap(), vec![3.0; 64]);
        assert_eq!(
            g.pool.binds.len(),
            cached,
            "a repeated launch creates no bind group"
        );
        let after = e.pool_stats();
        assert_eq!(
            (
                after.bind_group_hits - before.bind_group_hits,
                after.bind_groups_created - before.bind_groups_created
            ),
            (1, 0),
            "the pool's statistics count the reuse"
        );
        drop(y);
        g.pool.trim();
        assert_eq!(
            g.pool.binds.len(),
            0,
            "trimming the pool drops the cached bind groups"
        );
        assert_eq!(e.copy(&x).unwrap().read_f32().unwrap(), vec![3.0; 64]);
        assert_eq!(
            e.pool_stats().bind_groups_created,
            after.bind_groups_created + 1,
            "after the trim the launch created its bind group again"
        );
    }

    /// A buffer the pool evicts is released at once — its device memory goes when the pool's
    /// `allocated_bytes` says it went — not kept alive by a cached bind group until a later
    /// launch (which may never come: here none does).
    /// The cache is bounded: the entry past [`MAX_ENTRIES`] finds it full and clears it (each
    /// entry keeps its buffers alive, so an unbounded cache would hold memory the pool let go).
    #[test]
    fn a_full_cache_is_cleared_before_it_grows_past_its_bound() {
        use super::{BindCache, MAX_ENTRIES};
        use crate::pipelines::{Access, Kernel};
        const FILL: Kernel = Kernel::new(
            bitnet_kernels_wgsl::util::FILL,
            "main",
            &[Access::ReadWrite],
        );
        let e = crate::test_gpu::gpu();
        let g = e.gpu_context().expect("a GPU engine");
        let compiled = g.pipelines.get(&FILL, &[]).unwrap();
        let t = e
            .empty(g, "t", &[MAX_ENTRIES + 1], crate::DType::F32)
            .unwrap();
        let crate::tensor::Storage::Device(b) = t.data() else {
            panic!("a GPU engine's output is a device tensor")
        };
        let cache = BindCache::default();
        for i in 1..=MAX_ENTRIES as u64 + 1 {
            let bindings = [(b.buffer(), 0, 4 * i)];
            cache
                .get_or_create(&compiled.group0, &bindings, || {
                    compiled.bind(&g.device, "fill", &bindings)
                })
                .unwrap();
            let expected = if i > MAX_ENTRIES as u64 { 1 } else { i };
            assert_eq!(cache.len() as u64, expected, "after {i} entries");
        }
    }

    #[test]
    fn an_evicted_buffer_is_not_kept_alive_by_a_cached_bind_group() {
        let e = crate::test_gpu::gpu_with(EngineOptions {
            idle_flush: None,
            ..EngineOptions::default()
        });
        let g = e.gpu_context().expect("a GPU engine");
        // What the device really holds, once finished work has let go of its resources.
        let device_bytes = || {
            let _ = g.device.poll(wgpu::PollType::wait_indefinitely());
            g.device
                .generate_allocator_report()
                .map(|r| r.total_allocated_bytes)
        };
        // 4 MiB tensors: larger than everything else the engine allocates.
        const N: usize = 1 << 20;
        let x = e.upload_f32(&vec![1.0; N], &[N]).unwrap();
        let y = e.copy(&x).unwrap(); // one cached bind group over both buffers
        assert_eq!(y.read_f32().unwrap().len(), N);
        e.sync().unwrap();
        drop((x, y)); // both buffers free in the pool (under its 1 GiB cap)
        assert!(g.pool.binds.len() > 0);
        let before = (e.pool_stats().allocated_bytes, device_bytes());
        e.set_pool_free_cap(0); // the pool lets both buffers go; no launch follows
        let after = (e.pool_stats().allocated_bytes, device_bytes());
        let released = before.0 - after.0;
        assert!(released >= 8 << 20, "the pool released {released} bytes");
        assert_eq!(g.pool.binds.len(), 0, "a bind group over an evicted buffer");
        // Where the backend reports its allocations (Vulkan does), the memory really went.
        if let (Some(b), Some(a)) = (before.1, after.1) {
            assert!(
                b.saturating_sub(a) >= released,
                "the device still holds the {released} bytes the pool released ({b} -> {a})"
            );
        }
    }
}
