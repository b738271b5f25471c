//! A key/value cache for autoregressive decoding: appended in place, read as prefix views.
//!
//! A decode step attends over every earlier position's keys and values. Rebuilding them as a
//! new tensor per step (a concat) moves the whole cache each step; a server wants the new
//! position's k and v written once, after the ones already there. A [`KvCache`] owns one
//! `capacity`-position buffer per side and writes each append at the end of what it holds
//! (keys and values in one dispatch, `util_copy_blocks_pair.wgsl`, recorded like any op: no
//! read-back, no wait). `keys()` and `values()` are tensors over the first `len` positions of
//! those buffers — no copy — and feed [`Engine::attention`](crate::Engine) like any tensor.
//!
//! **Views stay immutable.** An append writes only positions at or after `len`, which no view
//! covers, so views handed out earlier keep their values (and dispatches recorded earlier run
//! first, in recording order). After [`KvCache::truncate`], positions a live view still covers
//! would be overwritten: the next append then first moves the kept positions to fresh buffers
//! (copy on write) and the old views keep the old ones. The cache itself keeps the old buffers
//! too until that copy is known good — to redo it if a fault lost it (`kv_cache_rescue.rs`) — and
//! lets them go at its next append or truncate after that: until then a cache that copied holds
//! up to twice its size.
//!
//! **Errors travel with the data.** Each append's rows carry the lineage of the tensors appended
//! (`fate.rs`): a view covering them reads as the error those tensors would (a `NonFinite` from
//! the op that produced a NaN key, a lost device). Truncating drops the lineage of the dropped
//! appends.
//!
//! **Where it lives.** On the device of a GPU engine (while its policy is not `Cpu`), on the
//! host otherwise; an append moves the cache to where the engine now runs ops (host under the
//! `Cpu` policy, back to the device when the policy allows it again; a move to the device waits
//! until its copy is known good, and one that fails leaves the cache on the host, unchanged, and
//! fails the append, which a retry repeats). Host operands are uploaded
//! into a device cache and device operands read back into a host cache. A host cache's views
//! share its storage too (the CPU engine's attention reads them in place); an append while a
//! view lives copies the held positions first, so views never change there either. A device
//! cache is the only copy of its data, as every device tensor is: once the device is lost,
//! appends and views' reads return `DeviceLost`, and the caller rebuilds the cache (re-running
//! the prompt) on the engine's CPU path.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use crate::context::Gpu;
use crate::engine::Engine;
use crate::error::{Error, Result};
use crate::fate::Lineage;
use crate::ops::host_f32;
use crate::tensor::{DType, Location, Tensor};

#[path = "kv_cache_rescue.rs"]
mod rescue;
#[path = "kv_cache_rope.rs"]
mod rope;
#[path = "kv_cache_store.rs"]
mod store;
use rescue::Rescue;
use store::{Store, copy_rows, copy_rows_pair, host_extend, host_reserve, host_side};

const OP: &str = "kv_cache";

/// The GPU context of a device cache's engine (a clone of the engine lets a caller hold it while
/// changing the cache).
fn device_of(engine: &Engine) -> Result<&Gpu> {
    engine
        .gpu_raw()
        .ok_or_else(|| Error::Unsupported("a device KV cache on the CPU engine".into()))
}

/// Keys and values of up to `capacity` positions, `[kv_heads, head_dim]` f32 each; see the
/// module docs. Created by [`Engine::kv_cache`].
#[derive(Debug)]
pub struct KvCache {
    engine: Engine,
    capacity: usize,
    kv_heads: usize,
    head_dim: usize,
    len: usize,
    store: Store,
    /// Each append's first position and the lineage of its rows, in append order.
    segments: Vec<(usize, Lineage)>,
    /// The longest prefix handed out as a view since the buffers were made.
    viewed: AtomicUsize,
    /// The buffers of the last copy on write, until its copy is known good (`kv_cache_store.rs`).
    rescue: Option<Rescue>,
}

impl Engine {
    /// An empty KV cache of `capacity` positions of `[kv_heads, head_dim]` f32 keys and values
    /// (device buffers of `2 · capacity · kv_heads · head_dim · 4` bytes on a GPU engine; twice
    /// that for a while after a copy on write, see the module docs).
    /// Errors: a zero size; on an engine that takes GPU work (a GPU engine whose policy is not
    /// `Cpu`), sizes past the device's buffer limits. A cache made while the engine takes no GPU
    /// work lives on the host and is not checked against the device: should the engine take GPU
    /// work later, the append that would move it to the device fails with `LimitExceeded`
    /// instead (the cache unchanged, still on the host; see the module docs).
    pub fn kv_cache(&self, capacity: usize, kv_heads: usize, head_dim: usize) -> Result<KvCache> {
        if capacity == 0 || kv_heads == 0 || head_dim == 0 {
            return Err(Error::ShapeMismatch {
                op: OP,
                detail: format!(
                    "capacity {capacity}, kv_heads {kv_heads}, head_dim {head_dim}: all must be at least 1"
                ),
            });
        }
        let too_big = capacity
            .checked_mul(kv_heads)
            .and_then(|n| n.checked_mul(head_dim))
            .and_then(|n| n.checked_mul(4))
            .is_none();
        if too_big {
            return Err(Error::ShapeMismatch {
                op: OP,
                detail: format!(
                    "capacity {capacity} × kv_heads {kv_heads} × head_dim {head_dim} f32 values overflow the address space"
                ),
            });
        }
        let mut cache = KvCache {
            engine: self.clone(),
            capacity,
            kv_heads,
            head_dim,
            len: 0,
            store: Store::Host {
                keys: host_side(Vec::new()),
                values: host_side(Vec::new()),
            },
            segments: Vec::new(),
            viewed: AtomicUsize::new(0),
            rescue: None,
        };
        if let Some(gpu) = self.gpu_context() {
            cache.store = cache.device_store(gpu)?;
        }
        Ok(cache)
    }
}

impl KvCache {
    /// Positions held.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether no position is held.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Positions the cache can hold.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Key/value heads per position.
    pub fn kv_heads(&self) -> usize {
        self.kv_heads
    }

    /// Values per head.
    pub fn head_dim(&self) -> usize {
        self.head_dim
    }

    /// Where the cache's bytes live now.
    pub fn location(&self) -> Location {
        match self.store {
            Store::Device { .. } => Location::Device,
            Store::Host { .. } => Location::Host,
        }
    }

    /// Appends `t` positions: `k` and `v` are `F32` `[t, kv_heads, head_dim]` tensors of the
    /// cache's engine (device or host). Both are written or neither; the cache is unchanged on
    /// error. Errors: dtype, shape, more positions than the capacity left (`CacheFull`),
    /// another engine's tensors, a lost device, an error already known in `k`'s or `v`'s lineage.
    pub fn append(&mut self, k: &Tensor, v: &Tensor) -> Result<()> {
        let t = self.check_append(k, v)?;
        self.recover()?;
        self.place()?;
        let row = self.row();
        match &mut self.store {
            Store::Host { keys, values } => {
                // Borrowed from host tensors (a view of this very side included: growing
                // the side then copies it, and the view keeps the old words alive).
                let (kh, vh) = (host_f32(k)?, host_f32(v)?);
                let (kh, vh): (&[u32], &[u32]) = (
                    bytemuck::cast_slice(kh.values()),
                    bytemuck::cast_slice(vh.values()),
                );
                // Both sides or neither: only the reservations can fail, and they keep the
                // cache's positions as they are.
                let kept = self.len * row;
                host_reserve(keys, kept, kh.len())?;
                host_reserve(values, kept, vh.len())?;
                host_extend(keys, kh);
                host_extend(values, vh);
            }
            Store::Device { .. } => {
                self.make_room()?;
                let Store::Device { keys, values } = &self.store else {
                    unreachable!("matched above")
                };
                let gpu = self.gpu()?;
                // On the context chosen above, whatever the policy says by now.
                let (k, v) = (
                    self.engine.to_device_on(gpu, OP, k)?,
                    self.engine.to_device_on(gpu, OP, v)?,
                );
                // A view of this very buffer (the cache's own keys appended again) cannot be
                // bound for reading and for writing in one dispatch: stage it first.
                let stage = |src: Tensor, dst: &Tensor| -> Result<Tensor> {
                    if !std::ptr::eq(src.data(), dst.data()) {
                        return Ok(src);
                    }
                    let tmp = self.engine.empty(gpu, OP, src.shape(), DType::F32)?;
                    let copied = copy_rows(gpu, &src, &tmp, t * row, 0)?;
                    Ok(tmp.prefix_view(src.shape(), &[&copied]))
                };
                let (k, v) = (stage(k, keys)?, stage(v, values)?);
                // Keys and values in one dispatch (separate ones if a source still shares a
                // buffer with the other side's destination, or a copy is split over the binding
                // limit); the segment's lineage is both sides' either way.
                let rows = copy_rows_pair(gpu, (&k, keys), (&v, values), t * row, self.len * row)?;
                self.appended(t, rows);
                return Ok(());
            }
        }
        self.appended(t, Lineage::default());
        Ok(())
    }

    /// `append`'s checks of `k` and `v` (their errors, in their order): the positions appended.
    fn check_append(&self, k: &Tensor, v: &Tensor) -> Result<usize> {
        let t = self.check_operand("k", k)?;
        if self.check_operand("v", v)? != t {
            return Err(Error::ShapeMismatch {
                op: OP,
                detail: format!("k is {:?} but v is {:?}", k.shape(), v.shape()),
            });
        }
        if t > self.capacity - self.len {
            return Err(Error::CacheFull {
                held: self.len,
                appended: t,
                capacity: self.capacity,
            });
        }
        Ok(t)
    }

    /// Records `t` positions written at `len`, whose rows depend on `rows`.
    fn appended(&mut self, t: usize, rows: Lineage) {
        self.segments.push((self.len, rows));
        self.len += t;
        // Appends found clean (by the reads of views covering them) constrain nothing: a decode
        // of thousands of steps keeps only the appends since the last read.
        self.segments.retain(|(_, l)| !l.is_settled());
    }

    /// The keys of every position held, `F32` `[len, kv_heads, head_dim]` (no copy on the
    /// device). Errors: an empty cache (tensors are never empty).
    pub fn keys(&self) -> Result<Tensor> {
        self.view(true)
    }

    /// The values of every position held, `F32` `[len, kv_heads, head_dim]`; see
    /// [`KvCache::keys`].
    pub fn values(&self) -> Result<Tensor> {
        self.view(false)
    }

    /// Keeps the first `len` positions (no effect if `len` is not below [`KvCache::len`]):
    /// speculative decoding's rollback, or a shared prompt prefix. Views already handed out
    /// keep their values.
    pub fn truncate(&mut self, len: usize) {
        if len >= self.len {
            return;
        }
        self.len = len;
        self.segments.retain(|(start, _)| *start < len);
        // A pending copy on write's redo covers only positions still held from before it: it
        // must never write over positions appended after this truncate.
        self.truncate_rescue(len);
        // A host store's words past `len` stay until the next append overwrites them (views
        // may still read them).
    }

    /// Drops every position (a new sequence); the buffers are kept.
    pub fn clear(&mut self) {
        self.truncate(0);
    }

    /// The engine's GPU (a device store exists only on a GPU engine).
    fn gpu(&self) -> Result<&Gpu> {
        device_of(&self.engine)
    }

    /// Values per position and side.
    fn row(&self) -> usize {
        self.kv_heads * self.head_dim
    }

    /// `t` of a `[t, kv_heads, head_dim]` `F32` operand of this cache's engine.
    fn check_operand(&self, name: &str, x: &Tensor) -> Result<usize> {
        x.expect_dtype(OP, DType::F32)?;
        self.engine.expect_same(x.engine(), OP)?;
        match *x.shape() {
            [t, h, d] if h == self.kv_heads && d == self.head_dim => Ok(t),
            _ => Err(Error::ShapeMismatch {
                op: OP,
                detail: format!(
                    "{name} must be [positions, {}, {}], got {:?}",
                    self.kv_heads,
                    self.head_dim,
                    x.shape()
                ),
            }),
        }
    }

    /// The lineages of the first `len` positions: every append starting before `len`.
    fn lineages_of(&self, len: usize) -> Vec<&Lineage> {
        self.segments
            .iter()
            .filter(|(start, _)| *start < len)
            .map(|(_, l)| l)
            .collect()
    }

    fn view(&self, keys_side: bool) -> Result<Tensor> {
        if self.len == 0 {
            return Err(Error::ShapeMismatch {
                op: OP,
                detail: "the cache is empty: append before reading keys or values".into(),
            });
        }
        let shape = [self.len, self.kv_heads, self.head_dim];
        match &self.store {
            Store::Device { keys, values } => {
                let full = if keys_side { keys } else { values };
                self.viewed.fetch_max(self.len, Ordering::Relaxed);
                Ok(full.prefix_view(&shape, &self.lineages_of(self.len)))
            }
            // The storage itself, shared (no copy): appends copy on write while a view lives.
            Store::Host { keys, values } => Ok(Tensor::from_shared(
                self.engine.clone(),
                &shape,
                DType::F32,
                Arc::clone(if keys_side { keys } else { values }),
            )),
        }
    }
}
