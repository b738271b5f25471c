//! [`KvCache::append_rope`]: a decode step's RoPE on q and k and its KV append as one dispatch
//! on the device (`ops/rope_append.rs`), exactly
//! [`Engine::rope_pair`](crate::Engine::rope_pair) followed by [`KvCache::append`] of the
//! rotated keys, which is what runs wherever the one launch does not apply.

use super::store::{write_views, written_rows};
use super::{KvCache, Store};
use crate::error::Result;
use crate::ops::CacheRows;
use crate::tensor::Tensor;

impl KvCache {
    /// RoPE on a step's queries `q` `[t, Hq, D]` and keys `k` `[t, kv_heads, head_dim]` at
    /// `positions` (a `U32` tensor of `t`), then the rotated keys and `v` appended; returns the
    /// rotated queries. Bit for bit and error for error
    /// `let (q, k) = engine.rope_pair(q, k, positions, theta)?; cache.append(&k, v)?;` — on the
    /// device in one dispatch (a decode step's RoPE and append behind one barrier instead of
    /// two) where every operand is a device tensor, the cache is on the device and the new rows
    /// fit one launch; as those two calls otherwise. Errors: `rope_pair`'s, then `append`'s; the
    /// cache is unchanged on an error returned here. As with any device op, an error found only
    /// when the GPU runs (a NaN in `k`) is not returned here: the rows are appended and the
    /// views covering them read as that error (module docs of `kv_cache.rs`), where a host cache
    /// returns it at once and appends nothing.
    pub fn append_rope(
        &mut self,
        q: &Tensor,
        k: &Tensor,
        v: &Tensor,
        positions: &Tensor,
        theta: f32,
    ) -> Result<Tensor> {
        let engine = self.engine.clone();
        let dims = engine.rope_pair_dims(q, k, positions, theta)?;
        // As the two calls report it: `rope_pair`'s errors (values checked at once on host
        // operands) before the append's checks and its move of the cache.
        let t = match self.check_append(k, v) {
            Ok(t) => t,
            Err(e) => {
                engine.rope_pair(q, k, positions, theta)?;
                return Err(e);
            }
        };
        if let Err(e) = self.place() {
            engine.rope_pair(q, k, positions, theta)?;
            return Err(e);
        }
        let operands = [q, k, v, positions];
        if let (Some(gpu), Store::Device { keys, values }) =
            (engine.gpu_for(&operands), &self.store)
        {
            // An operand in the cache's own buffers cannot be read while the launch writes them.
            let aliased = operands.iter().any(|x| {
                std::ptr::eq(x.data(), keys.data()) || std::ptr::eq(x.data(), values.data())
            });
            if !aliased {
                self.make_room()?;
                let Store::Device { keys, values } = &self.store else {
                    unreachable!("make_room keeps the cache on the device")
                };
                let (tk, tv) = write_views(keys, values);
                let rows = CacheRows {
                    keys: &tk,
                    values: &tv,
                    at: (self.len * self.row()) as u64,
                };
                if let Some(yq) =
                    engine.rope_append_launch(gpu, (q, k, v), positions, theta, dims, rows)?
                {
                    self.appended(t, written_rows(&tk, &tv));
                    return Ok(yq);
                }
            }
        }
        let (yq, yk) = engine.rope_pair(q, k, positions, theta)?;
        self.append(&yk, v)?;
        Ok(yq)
    }
}
