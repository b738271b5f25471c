//! Where a [`KvCache`]'s bytes live and how they move: the device or host store, the move to
//! where the engine runs ops now (host under the `Cpu` policy, device otherwise), copy on write
//! before an append after a truncate (its recovery from a lost copy: `kv_cache_rescue.rs`), and
//! the row copies behind every device append (keys and values in one dispatch where they can
//! be: `copy_rows_pair`). The cache's API (appends, views,
//! truncation) is `kv_cache.rs`.

use std::sync::Arc;

use super::rescue::{Rescue, Verdict, copied_segments, joined, verdict};
use super::{KvCache, OP};
use crate::context::Gpu;
use crate::error::{Error, Result};
use crate::fate::Lineage;
use crate::ops::blocks::{BlockCopy, copy_blocks};
use crate::ops::blocks_pair::{Side, copy_blocks_pair};
use crate::tensor::{DType, Storage, Tensor};

/// The cache's bytes.
#[derive(Debug)]
pub(super) enum Store {
    /// Capacity-sized device tensors; their own lineage stays empty (appends write through
    /// views carrying their own).
    Device { keys: Tensor, values: Tensor },
    /// Host words (f32 bits) per side: the first `len · row` are the cache's (a truncate leaves
    /// a tail that the next append overwrites). Views share the storage instead of copying the
    /// context ([`host_reserve`] copies on write while one lives).
    Host {
        keys: Arc<Storage>,
        values: Arc<Storage>,
    },
}

/// An empty host side.
pub(super) fn host_side(words: Vec<u32>) -> Arc<Storage> {
    Arc::new(Storage::Host(words))
}

/// The first `len` words of a host side.
pub(super) fn host_prefix(side: &Storage, len: usize) -> &[u32] {
    &side.host_words().expect("a host side holds words")[..len]
}

/// Makes `side` writable for `extra` more words after its first `kept`, so that
/// [`host_extend`] cannot fail: in place when nothing else shares the storage, else (a view
/// lives) as a copy of those words, so the view keeps its values. Either way the cache's first
/// `kept` words are unchanged. Errors: host memory exhausted (`OutOfMemory`).
pub(super) fn host_reserve(side: &mut Arc<Storage>, kept: usize, extra: usize) -> Result<()> {
    let oom = |_| Error::OutOfMemory {
        context: format!("growing a host KV cache side to {} values", kept + extra),
    };
    if let Some(Storage::Host(words)) = Arc::get_mut(side) {
        words.truncate(kept);
        return words.try_reserve(extra).map_err(oom);
    }
    let mut words = Vec::new();
    words.try_reserve(kept + extra).map_err(oom)?;
    words.extend_from_slice(host_prefix(side, kept));
    *side = host_side(words);
    Ok(())
}

/// Appends `new` to a side [`host_reserve`] prepared for it.
pub(super) fn host_extend(side: &mut Arc<Storage>, new: &[u32]) {
    match Arc::get_mut(side) {
        Some(Storage::Host(words)) => words.extend_from_slice(new),
        _ => unreachable!("host_reserve left the side unshared, on the host"),
    }
}

impl KvCache {
    /// Capacity-sized device buffers on `gpu` (pooled; contents unspecified), both sides on
    /// the one context the caller resolved: a policy change between the two allocations must
    /// not leave one side on the host. Errors: `DeviceLost` once the device is lost.
    pub(super) fn device_store(&self, gpu: &Gpu) -> Result<Store> {
        gpu.check_health()?;
        let shape = [self.capacity, self.kv_heads, self.head_dim];
        Ok(Store::Device {
            keys: self.engine.empty(gpu, OP, &shape, DType::F32)?,
            values: self.engine.empty(gpu, OP, &shape, DType::F32)?,
        })
    }

    /// Moves the cache to where the engine runs ops now (see the module docs).
    pub(super) fn place(&mut self) -> Result<()> {
        let on_device = matches!(self.store, Store::Device { .. });
        let gpu_now = self.engine.gpu_context();
        if on_device == gpu_now.is_some() {
            return Ok(());
        }
        // The held rows' lineage after the move: the uploads' copies (a view of the moved rows
        // carries their fates), none for a read back to the host (the reads succeeded).
        let moved = Lineage::default();
        if let Some(gpu) = gpu_now {
            // Host → device: upload what is held, then continue on the device.
            let Store::Host { keys, values } = &self.store else {
                unreachable!("not on the device")
            };
            let store = self.device_store(gpu)?;
            if self.len > 0 {
                let Store::Device {
                    keys: dk,
                    values: dv,
                } = &store
                else {
                    unreachable!("device_store")
                };
                let shape = [self.len, self.kv_heads, self.head_dim];
                let words = self.len * self.row();
                let upload = |side: &Storage| {
                    let bytes = bytemuck::cast_slice(host_prefix(side, words));
                    let engine = &self.engine;
                    engine.tensor_from_bytes_on(Some(gpu), OP, &shape, DType::F32, bytes, None)
                };
                let (sk, sv) = (upload(keys)?, upload(values)?);
                let copied = copy_rows_pair(gpu, (&sk, dk), (&sv, dv), words, 0)?;
                // The host rows go only once their copy is known good (one wait per move, rare):
                // a copy lost to a transient fault would otherwise poison the only copy of rows
                // the host held intact. On failure the cache stays on the host, unchanged.
                crate::wait::block_on(crate::transfer::resolve(gpu, &copied.snapshot()))?;
                moved.share(&copied);
            }
            self.store = store;
        } else {
            // Device → host (the Cpu policy, or a lost device: then the reads of what the cache
            // holds fail; an empty cache, cleared or never appended to, holds nothing to lose
            // and goes on on the host).
            let (keys, values) = if self.len == 0 {
                (Vec::new(), Vec::new())
            } else {
                let bits = |values: Vec<f32>| bytemuck::allocation::cast_vec::<f32, u32>(values);
                (
                    bits(self.keys()?.read_f32()?),
                    bits(self.values()?.read_f32()?),
                )
            };
            self.store = Store::Host {
                keys: host_side(keys),
                values: host_side(values),
            };
        }
        self.segments = vec![(0, moved)];
        *self.viewed.get_mut() = 0;
        Ok(())
    }

    /// Before a device append at `len`: if a live view covers positions from `len` on (after a
    /// truncate), moves the kept positions to fresh buffers so the view keeps its values.
    pub(super) fn make_room(&mut self) -> Result<()> {
        let Store::Device { keys, values } = &self.store else {
            return Ok(());
        };
        let shared = keys.storage_shared() || values.storage_shared();
        if !shared {
            *self.viewed.get_mut() = 0;
            return Ok(());
        }
        if *self.viewed.get_mut() <= self.len {
            return Ok(());
        }
        let engine = self.engine.clone();
        let gpu = super::device_of(&engine)?;
        if let Some(r) = &self.rescue
            && verdict(&r.copy) != Verdict::Good
        {
            // A second copy on write would copy rows whose first copy is not known good yet:
            // settle that one first (rare: a read between the two, as a decode step's attention
            // is, settles it on the way).
            let _ = crate::wait::block_on(crate::transfer::resolve(gpu, &r.copy));
            self.recover()?;
        }
        let Store::Device { keys, values } = &self.store else {
            unreachable!("checked above")
        };
        let (keys, values) = (keys.clone(), values.clone());
        let fresh = self.device_store(gpu)?;
        let Store::Device {
            keys: fk,
            values: fv,
        } = &fresh
        else {
            unreachable!("device_store")
        };
        self.rescue = None;
        if self.len > 0 {
            let words = self.len * self.row();
            let copy = copy_rows_pair(gpu, (&keys, fk), (&values, fv), words, 0)?;
            let kept: Vec<(usize, Lineage)> = self
                .segments
                .iter()
                .filter(|(start, _)| *start < self.len)
                .map(|(start, l)| (*start, joined(&[l])))
                .collect();
            self.segments = copied_segments(&kept, &copy);
            self.rescue = Some(Rescue {
                keys,
                values,
                rows: self.len,
                kept,
                copy: copy.snapshot(),
            });
        }
        self.store = fresh;
        *self.viewed.get_mut() = 0;
        Ok(())
    }
}

/// Records a copy of the first `words` values of `src` to word `at` of `dst` and returns what
/// the copied rows now depend on: `src`'s lineage and the copy's fate. Written through a view
/// of `dst` with an empty lineage, so `dst`'s own stays empty and each append keeps its own.
pub(super) fn copy_rows(
    gpu: &Gpu,
    src: &Tensor,
    dst: &Tensor,
    words: usize,
    at: usize,
) -> Result<Lineage> {
    let target = dst.prefix_view(dst.shape(), &[]);
    copy_blocks(gpu, src, &target, rows_copy(words, at), gpu.next_seq())?;
    let rows = Lineage::default();
    rows.share(target.lineage());
    Ok(rows)
}

/// [`copy_rows`] for both sides at once — `keys.0` into `keys.1` and `values.0` into
/// `values.1`, the same `words` at the same word `at` — in one dispatch when the two copies can
/// be fused (`ops/blocks_pair.rs`: each fits one launch, no source in a destination's buffer),
/// else one copy after the other. Returns what the copied rows of both sides now depend on:
/// both sources' lineages and the copies' fates (a cache's positions carry one lineage for
/// keys and values together, so fusing changes nothing a view reports).
pub(super) fn copy_rows_pair(
    gpu: &Gpu,
    keys: (&Tensor, &Tensor),
    values: (&Tensor, &Tensor),
    words: usize,
    at: usize,
) -> Result<Lineage> {
    let (tk, tv) = write_views(keys.1, values.1);
    let copy = rows_copy(words, at);
    copy_blocks_pair(
        gpu,
        Side {
            src: keys.0,
            dst: &tk,
            copy,
        },
        Side {
            src: values.0,
            dst: &tv,
            copy,
        },
        gpu.next_seq(),
    )?;
    Ok(written_rows(&tk, &tv))
}

/// Views of a device cache's key and value buffers with an empty lineage, to write new rows
/// through: the launch writing them gives them its own lineage, and the buffers' stays empty.
pub(super) fn write_views(keys: &Tensor, values: &Tensor) -> (Tensor, Tensor) {
    (
        keys.prefix_view(keys.shape(), &[]),
        values.prefix_view(values.shape(), &[]),
    )
}

/// What rows written through [`write_views`] now depend on: both views' lineages.
pub(super) fn written_rows(keys: &Tensor, values: &Tensor) -> Lineage {
    let rows = Lineage::default();
    rows.share(keys.lineage());
    rows.share(values.lineage());
    rows
}

/// The first `words` words of a source to word `at` of a destination, as one run.
fn rows_copy(words: usize, at: usize) -> BlockCopy {
    BlockCopy {
        blocks: 1,
        block_words: words as u64,
        src_start: 0,
        src_stride: 0,
        dst_start: at as u64,
        dst_stride: 0,
    }
}

#[cfg(test)]
mod tests {
    use super::Store;
    use crate::engine::Engine;
    use std::sync::Arc;

    /// The CPU engine's views are the cache's storage, not copies of it (a decode step takes
    /// one per layer and side, as long as the context), and an append with no view alive grows
    /// that storage in place.
    #[test]
    fn host_views_share_the_storage_and_appends_grow_it_in_place() {
        let e = Engine::cpu();
        let mut c = e.kv_cache(64, 2, 4).unwrap();
        let kv = |t: usize| e.upload_f32(&vec![1.5; t * 8], &[t, 2, 4]).unwrap();
        c.append(&kv(3), &kv(3)).unwrap();
        let storage = |c: &super::KvCache| match &c.store {
            Store::Host { keys, .. } => Arc::clone(keys),
            Store::Device { .. } => unreachable!("a CPU engine's cache"),
        };
        let view = c.keys().unwrap();
        assert!(std::ptr::eq(view.data(), &*storage(&c)));
        drop(view);
        let before = Arc::as_ptr(&storage(&c));
        c.append(&kv(2), &kv(2)).unwrap();
        assert_eq!(Arc::as_ptr(&storage(&c)), before, "grown in place");
        assert_eq!(c.values().unwrap().read_f32().unwrap(), vec![1.5; 40]);
    }
}
