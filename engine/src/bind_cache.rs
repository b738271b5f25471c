//! Reuse of group-0 bind groups (issue #5: creating one was most of a launch's CPU cost).
//!
//! A launch's group 0 is fully determined by the kernel's group-0 layout and its exact bindings
//! (buffer, offset, size); bind groups are immutable, so one created for the same key earlier is
//! reused as is — pooled buffers come back in the same order every step of a repeated workload
//! (a decode loop), so their bind groups repeat too. The cache lives in the buffer pool because
//! the pool decides buffer lifetimes: a cached bind group keeps its buffers alive, so whenever the
//! pool lets a buffer go (eviction, trim) it marks the cache stale, and the cache drops every
//! entry before its next use ([`BindCache::clear`] does it at once, for the pool's
//! out-of-memory retry). The cache is bounded ([`MAX_ENTRIES`]; full means cleared).

// wgpu handles hash and compare by their id, which never changes: not a mutable key.
#![allow(clippy::mutable_key_type)]

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};

use crate::error::Result;

/// Entries kept at most (a decode step of a 2B model needs a few hundred).
pub(crate) const MAX_ENTRIES: usize = 4096;

/// What a bind group was created for.
#[derive(PartialEq, Eq, Hash)]
struct Key {
    layout: wgpu::BindGroupLayout,
    bindings: Vec<(wgpu::Buffer, u64, u64)>,
}

/// Group-0 bind groups by layout and bindings.
#[derive(Default)]
pub(crate) struct BindCache {
    map: Mutex<HashMap<Key, wgpu::BindGroup>>,
    /// Set by the pool when it lets a buffer go: clear before the next lookup.
    stale: AtomicBool,
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
        if self.stale.swap(false, Ordering::AcqRel) {
            self.clear();
        }
        let key = Key {
            layout: layout.clone(),
            bindings: bindings
                .iter()
                .map(|&(b, o, s)| (b.clone(), o, s))
                .collect(),
        };
        if let Some(g) = self.lock().get(&key) {
            return Ok(g.clone());
        }
        // Created outside the lock (it enters wgpu); a racing duplicate is harmless.
        let group = create()?;
        let dropped = {
            let mut map = self.lock();
            let dropped = (map.len() >= MAX_ENTRIES).then(|| std::mem::take(&mut *map));
            map.insert(key, group.clone());
            dropped
        };
        drop(dropped); // bind groups are released outside the lock
        Ok(group)
    }

    /// Marks every entry stale (the pool let a buffer go); cleared before the next lookup.
    pub fn invalidate(&self) {
        self.stale.store(true, Ordering::Release);
    }

    /// Drops every entry now (releasing the buffers they hold).
    pub fn clear(&self) {
        let old = std::mem::take(&mut *self.lock());
        drop(old);
    }

    /// Cached entries.
    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Key, wgpu::BindGroup>> {
        self.map.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use crate::engine::{Engine, EngineOptions};

    #[test]
    fn repeated_bindings_reuse_one_bind_group_until_the_pool_lets_go() {
        let e = Engine::gpu_with(EngineOptions {
            idle_flush: None,
            ..EngineOptions::default()
        })
        .expect("GPU adapter required (CI has lavapipe); failing, not skipping");
        let g = e.gpu_context().expect("a GPU engine");
        let x = e.upload_f32(&[3.0; 64], &[64]).unwrap();
        let y = e.copy(&x).unwrap();
        assert_eq!(y.read_f32().unwrap(), vec![3.0; 64]);
        drop(y);
        let cached = g.pool.binds.len();
        // The output buffer comes back from the pool: same bindings, same bind group.
        let y = e.copy(&x).unwrap();
        assert_eq!(y.read_f32().unwrap(), vec![3.0; 64]);
        assert_eq!(
            g.pool.binds.len(),
            cached,
            "a repeated launch creates no bind group"
        );
        drop(y);
        g.pool.trim();
        assert_eq!(
            g.pool.binds.len(),
            0,
            "trimming the pool drops the cached bind groups"
        );
        assert_eq!(e.copy(&x).unwrap().read_f32().unwrap(), vec![3.0; 64]);
    }
}
