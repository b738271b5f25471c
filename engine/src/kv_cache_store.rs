//! Where a [`KvCache`]'s bytes live and how they move: the device or host store, the move to
//! where the engine runs ops now (host under the `Cpu` policy, device otherwise), copy on write
//! before an append after a truncate, and the row copies behind every device append. The cache's
//! API (appends, views, truncation) is `kv_cache.rs`.

use super::{KvCache, OP};
use crate::context::Gpu;
use crate::error::Result;
use crate::fate::Lineage;
use crate::ops::blocks::{BlockCopy, copy_blocks};
use crate::tensor::{DType, Tensor};

/// The cache's bytes.
#[derive(Debug)]
pub(super) enum Store {
    /// Capacity-sized device tensors; their own lineage stays empty (appends write through
    /// views carrying their own).
    Device { keys: Tensor, values: Tensor },
    /// `len · row` values per side.
    Host { keys: Vec<f32>, values: Vec<f32> },
}

impl KvCache {
    /// Capacity-sized device buffers (pooled; contents unspecified).
    pub(super) fn device_store(&self) -> Result<Store> {
        let shape = [self.capacity, self.kv_heads, self.head_dim];
        Ok(Store::Device {
            keys: self.engine.empty(OP, &shape, DType::F32)?,
            values: self.engine.empty(OP, &shape, DType::F32)?,
        })
    }

    /// Moves the cache to where the engine runs ops now (see the module docs).
    pub(super) fn place(&mut self) -> Result<()> {
        let on_device = matches!(self.store, Store::Device { .. });
        let gpu_now = self.engine.gpu_context().is_some();
        if on_device == gpu_now {
            return Ok(());
        }
        // The held rows' lineage after the move: the uploads' copies (a view of the moved rows
        // carries their fates), none for a read back to the host (the reads succeeded).
        let moved = Lineage::default();
        if gpu_now {
            // Host → device: upload what is held, then continue on the device.
            let Store::Host { keys, values } = &self.store else {
                unreachable!("not on the device")
            };
            let store = self.device_store()?;
            if self.len > 0 {
                let Store::Device {
                    keys: dk,
                    values: dv,
                } = &store
                else {
                    unreachable!("device_store")
                };
                let shape = [self.len, self.kv_heads, self.head_dim];
                for (host, dst) in [(keys, dk), (values, dv)] {
                    let src = self.engine.upload_f32(host, &shape)?;
                    moved.share(&copy_rows(self.gpu()?, &src, dst, host.len(), 0)?);
                }
            }
            self.store = store;
        } else {
            // Device → host (the Cpu policy; a lost device fails the reads).
            let (keys, values) = if self.len == 0 {
                if let Some(g) = self.engine.gpu_raw() {
                    g.check_health()?;
                }
                (Vec::new(), Vec::new())
            } else {
                (self.keys()?.read_f32()?, self.values()?.read_f32()?)
            };
            self.store = Store::Host { keys, values };
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
        let fresh = self.device_store()?;
        let Store::Device {
            keys: fk,
            values: fv,
        } = &fresh
        else {
            unreachable!("device_store")
        };
        if self.len > 0 {
            let gpu = self.gpu()?;
            let moved = Lineage::default();
            for (src, dst) in [(keys, fk), (values, fv)] {
                moved.share(&copy_rows(gpu, src, dst, self.len * self.row(), 0)?);
            }
            for (_, l) in self.segments.iter().filter(|(start, _)| *start < self.len) {
                moved.share(l);
            }
            self.segments = vec![(0, moved)];
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
    let copy = BlockCopy {
        blocks: 1,
        block_words: words as u64,
        src_start: 0,
        src_stride: 0,
        dst_start: at as u64,
        dst_stride: 0,
    };
    copy_blocks(gpu, src, &target, copy, gpu.next_seq())?;
    let rows = Lineage::default();
    rows.share(target.lineage());
    Ok(rows)
}
