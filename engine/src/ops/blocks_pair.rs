//! Two strided block copies in one dispatch (`util_copy_blocks_pair.wgsl`): a KV-cache append
//! writes a step's keys and its values — two copies of the same shape into two buffers — and as
//! one dispatch pays one barrier and one recording instead of two.
//!
//! Fused only when it is the same work as [`copy_blocks`] twice, in one launch: each copy is one
//! launch of its own (`blocks::one_launch`: its spans fit a binding on both sides, so the paired
//! launch binds exactly the ranges the single ones would), and no source shares a buffer with a
//! destination, nor the destinations with each other (a buffer bound for reading and for writing
//! in one dispatch is invalid). Otherwise each copy goes through [`copy_blocks`] (split over the
//! binding limit as usual) — same bits, more launches.

use bitnet_kernels_wgsl::util as kernels;

use super::blocks::{BlockCopy, GROUP_WORDS, copy_blocks, geometry, one_launch, span};
use crate::context::Gpu;
use crate::error::Result;
use crate::launch::Launch;
use crate::pipelines::{Access, Kernel};
use crate::tensor::Tensor;

const COPY_BLOCKS_PAIR: Kernel = Kernel::new(
    kernels::COPY_BLOCKS_PAIR,
    "main",
    &[
        Access::Read,
        Access::Read,
        Access::ReadWrite,
        Access::ReadWrite,
    ],
);

/// One copy of a pair: `copy` from `src`'s data buffer into `dst`'s.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Side<'a> {
    /// Read from.
    pub src: &'a Tensor,
    /// Written to.
    pub dst: &'a Tensor,
    /// Which words (see [`BlockCopy`]).
    pub copy: BlockCopy,
}

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct Params {
    /// Per copy: blocks, block_words, src_base, src_stride, dst_base, dst_stride.
    copies: [[u32; 6]; 2],
    groups0: u32,
    pad: [u32; 3],
}

/// Records both copies (no submit, no wait): one dispatch when they can be fused (module docs),
/// else [`copy_blocks`] for each, `a` first. Each destination takes the lineage of the sources
/// its launches read plus their fates — fused, both destinations take both sources' lineage and
/// the one launch's fate, so use it where the two copies' results are consumed together (a KV
/// cache's keys and values share one lineage per append). Every launch is a chunk of the op call
/// `group`.
pub(crate) fn copy_blocks_pair(gpu: &Gpu, a: Side, b: Side, group: u64) -> Result<()> {
    if !fusable(gpu, &a, &b) {
        copy_blocks(gpu, a.src, a.dst, a.copy, group)?;
        return copy_blocks(gpu, b.src, b.dst, b.copy, group);
    }
    let room = geometry(gpu);
    let bind = |s: &Side| {
        let c = s.copy;
        (
            span(s.src, &c, room, c.src_start, c.src_stride),
            span(s.dst, &c, room, c.dst_start, c.dst_stride),
        )
    };
    let ((a_src_off, a_src_size, a_src_base), (a_dst_off, a_dst_size, a_dst_base)) = bind(&a);
    let ((b_src_off, b_src_size, b_src_base), (b_dst_off, b_dst_size, b_dst_base)) = bind(&b);
    let words = |c: &BlockCopy| c.blocks * c.block_words;
    let groups0 = words(&a.copy).div_ceil(GROUP_WORDS);
    let fields = |c: &BlockCopy, src_base: u32, dst_base: u32| {
        [
            c.blocks as u32,
            c.block_words as u32,
            src_base,
            c.src_stride as u32,
            dst_base,
            c.dst_stride as u32,
        ]
    };
    Launch::new(gpu, &COPY_BLOCKS_PAIR)
        .input_range(a.src, a_src_off, a_src_size)
        .input_range(b.src, b_src_off, b_src_size)
        .output_range(a.dst, a_dst_off, a_dst_size)
        .output_range(b.dst, b_dst_off, b_dst_size)
        .params(&Params {
            copies: [
                fields(&a.copy, a_src_base, a_dst_base),
                fields(&b.copy, b_src_base, b_dst_base),
            ],
            groups0: groups0 as u32,
            pad: [0; 3],
        })
        .chunk_of(group)
        .workgroups(groups0 + words(&b.copy).div_ceil(GROUP_WORDS))
        .run()
}

/// Whether `a` and `b` go as one dispatch: each one launch, no buffer both read and written,
/// distinct destinations.
fn fusable(gpu: &Gpu, a: &Side, b: &Side) -> bool {
    let same = |x: &Tensor, y: &Tensor| std::ptr::eq(x.data(), y.data());
    let aliased = [a.src, b.src]
        .iter()
        .any(|s| same(s, a.dst) || same(s, b.dst))
        || same(a.dst, b.dst);
    !aliased && one_launch(gpu, &a.copy) && one_launch(gpu, &b.copy)
}

#[cfg(test)]
#[path = "blocks_pair_tests.rs"]
mod tests;
