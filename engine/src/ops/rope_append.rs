//! The launch behind [`KvCache::append_rope`](crate::KvCache::append_rope): RoPE on a step's
//! queries and keys with the rotated keys and the values written straight into the cache's
//! buffers (`rope_append.wgsl`), one dispatch where [`Engine::rope_pair`] and the cache's append
//! took two, each behind a barrier. The bits are theirs: the rotation is `rope_pair.wgsl`'s, the
//! values move unchanged, and the launch flags the status words `rope_pair` flags.

use bitnet_kernels_wgsl::tensor as kernels;

use super::blocks::{BlockCopy, geometry, span};
use super::rope::RopeDims;
use crate::context::Gpu;
use crate::engine::Engine;
use crate::error::Result;
use crate::launch::Launch;
use crate::pipelines::{Access, Kernel};
use crate::status::NonFiniteCheck;
use crate::tensor::{DType, Tensor};

const ROPE_APPEND: Kernel = Kernel::new(
    kernels::ROPE_APPEND,
    "main",
    &[
        Access::Read,
        Access::Read,
        Access::Read,
        Access::Read,
        Access::Read,
        Access::ReadWrite,
        Access::ReadWrite,
        Access::ReadWrite,
    ],
);
/// Invocations per workgroup (one per rotated pair).
const WG: u64 = 256;

/// `rope_append.wgsl`'s params.
#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct Params {
    pairs_q: u32,
    pairs_k: u32,
    half_dim: u32,
    heads_q: u32,
    heads_k: u32,
    cache_base: u32,
    pad: [u32; 2],
}

/// Where the appended rows go: views of the cache's key and value buffers (written through, so
/// their lineage becomes the rows'), and the word where the rows start in both.
pub(crate) struct CacheRows<'a> {
    pub keys: &'a Tensor,
    pub values: &'a Tensor,
    pub at: u64,
}

impl Engine {
    /// Records `rope_append.wgsl` for operands that passed `rope_pair`'s checks (`dims`: q's and
    /// k's) and the cache's (`v` shaped as `k`, room for the rows): returns the rotated queries,
    /// or `None` — nothing recorded — where the one launch does not apply (q and k of different
    /// `D`, a device with too few storage buffers per stage, an operand or the new rows past a
    /// binding, indices past `u32`).
    pub(crate) fn rope_append_launch(
        &self,
        gpu: &Gpu,
        (q, k, v): (&Tensor, &Tensor, &Tensor),
        positions: &Tensor,
        theta: f32,
        (dq, dk): (RopeDims, RopeDims),
        rows: CacheRows<'_>,
    ) -> Result<Option<Tensor>> {
        const OP: &str = "rope_pair";
        let fits = |bytes: u64| bytes <= gpu.caps.max_binding;
        let words = dk.s * dk.h * 2 * dk.half;
        let (pairs_q, pairs_k) = (dq.s * dq.h * dq.half, dk.s * dk.h * dk.half);
        let copy = BlockCopy {
            blocks: 1,
            block_words: words,
            src_start: 0,
            src_stride: 0,
            dst_start: rows.at,
            dst_stride: 0,
        };
        let (off, size, base) = span(rows.keys, &copy, geometry(gpu), rows.at, 0);
        let indexable = u64::from(base) + words <= u64::from(u32::MAX)
            && 2 * pairs_q <= u64::from(u32::MAX)
            && pairs_q + pairs_k <= u64::from(u32::MAX);
        // Its 8 bindings and the status slot exceed WebGPU's default of 8 storage buffers per
        // stage: there the two-dispatch form runs (it failed to build on every call).
        let storage = ROPE_APPEND.bindings.len() as u32 + crate::group::ENGINE_STORAGE_BUFFERS;
        if dq.half != dk.half
            || gpu.caps.limits.max_storage_buffers_per_shader_stage < storage
            || !fits(4 * 2 * pairs_q)
            || !fits(4 * words)
            || !fits(4 * dq.s)
            || !fits(size)
            || !indexable
        {
            return Ok(None);
        }
        let freqs = self.rope_table(gpu, (2 * dq.half) as usize, theta)?;
        let yq = self.empty(gpu, OP, q.shape(), DType::F32)?;
        Launch::new(gpu, &ROPE_APPEND)
            .input(q)
            .input(k)
            .input(v)
            .input(positions)
            .input(&freqs)
            .output(&yq)
            .output_range(rows.keys, off, size)
            .output_range(rows.values, off, size)
            .params(&Params {
                pairs_q: pairs_q as u32,
                pairs_k: pairs_k as u32,
                half_dim: dq.half as u32,
                heads_q: dq.h as u32,
                heads_k: dk.h as u32,
                cache_base: base,
                pad: [0; 2],
            })
            .check_finite(NonFiniteCheck::tensors(
                OP,
                ["q", "q output", "k", "k output"],
            ))
            .workgroups((pairs_q + pairs_k).div_ceil(WG))
            .run()?;
        Ok(Some(yq))
    }
}
