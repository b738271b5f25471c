//! The strided block copy behind slice, concat and the KV cache's append: `blocks` runs of
//! `block_words` 32-bit words, each side with its own start and run stride (in words of the
//! tensors' data buffers). One kernel (`util_copy_blocks.wgsl`) moves the bits; this file binds
//! the smallest aligned byte ranges that hold the runs and splits copies whose ranges exceed
//! `max_storage_buffer_binding_size` (or whose word count would pass the kernel's u32 indices).

use bitnet_kernels_wgsl::util as kernels;

use crate::context::Gpu;
use crate::error::Result;
use crate::launch::Launch;
use crate::pipelines::{Access, Kernel};
use crate::tensor::Tensor;

const COPY_BLOCKS: Kernel = Kernel::new(
    kernels::COPY_BLOCKS,
    "main",
    &[Access::Read, Access::ReadWrite],
);
/// Words one workgroup of the kernel copies.
const GROUP_WORDS: u64 = 1024;
/// Most words one launch copies: the kernel's flat index stays far below u32::MAX.
const MAX_LAUNCH_WORDS: u64 = 1 << 30;

/// A strided copy of 32-bit words between two tensors' data buffers (all counts in words).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct BlockCopy {
    /// Runs to copy.
    pub blocks: u64,
    /// Consecutive words per run.
    pub block_words: u64,
    /// First word of run 0 in the source, and words from one run's start to the next.
    pub src_start: u64,
    pub src_stride: u64,
    /// The same in the destination.
    pub dst_start: u64,
    pub dst_stride: u64,
}

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct Params {
    blocks: u32,
    block_words: u32,
    src_base: u32,
    src_stride: u32,
    dst_base: u32,
    dst_stride: u32,
}

/// Records `c` from `src` into `dst` (no submit, no wait). `dst` takes `src`'s lineage plus the
/// copy's. Every launch is a chunk of the op call `group` (one `gpu.next_seq()` per call).
pub(crate) fn copy_blocks(
    gpu: &Gpu,
    src: &Tensor,
    dst: &Tensor,
    c: BlockCopy,
    group: u64,
) -> Result<()> {
    if c.blocks == 0 || c.block_words == 0 {
        return Ok(());
    }
    let align = (u64::from(gpu.caps.limits.min_storage_buffer_offset_alignment) / 4).max(1);
    // Words a binding may span, less the slack of aligning its start down.
    let room = (gpu.caps.max_binding / 4).min(u64::from(u32::MAX)) - (align - 1);
    let piece = room.min(MAX_LAUNCH_WORDS);
    if c.block_words > piece {
        // Runs longer than a binding: each run in pieces, one launch per piece.
        for b in 0..c.blocks {
            let mut done = 0;
            while done < c.block_words {
                let len = piece.min(c.block_words - done);
                let one = BlockCopy {
                    blocks: 1,
                    block_words: len,
                    src_start: c.src_start + b * c.src_stride + done,
                    dst_start: c.dst_start + b * c.dst_stride + done,
                    ..c
                };
                launch(gpu, src, dst, one, align, group)?;
                done += len;
            }
        }
        return Ok(());
    }
    // Runs per launch: the bound spans of both sides fit, and so do the kernel's indices.
    let stride = c.src_stride.max(c.dst_stride);
    let by_span = match stride {
        0 => c.blocks,
        s => (room - c.block_words) / s + 1,
    };
    let per = by_span.min(MAX_LAUNCH_WORDS / c.block_words).max(1);
    let mut b = 0;
    while b < c.blocks {
        let n = per.min(c.blocks - b);
        let part = BlockCopy {
            blocks: n,
            src_start: c.src_start + b * c.src_stride,
            dst_start: c.dst_start + b * c.dst_stride,
            ..c
        };
        launch(gpu, src, dst, part, align, group)?;
        b += n;
    }
    Ok(())
}

/// One launch over runs whose spans fit a binding on both sides.
fn launch(
    gpu: &Gpu,
    src: &Tensor,
    dst: &Tensor,
    c: BlockCopy,
    align: u64,
    group: u64,
) -> Result<()> {
    // The aligned word range holding the runs of one side, and run 0's word within it.
    let span = |start: u64, stride: u64| {
        let first = start / align * align;
        let end = start + (c.blocks - 1) * stride + c.block_words;
        (4 * first, 4 * (end - first), (start - first) as u32)
    };
    let (src_off, src_size, src_base) = span(c.src_start, c.src_stride);
    let (dst_off, dst_size, dst_base) = span(c.dst_start, c.dst_stride);
    Launch::new(gpu, &COPY_BLOCKS)
        .input_range(src, src_off, src_size)
        .output_range(dst, dst_off, dst_size)
        .params(&Params {
            blocks: c.blocks as u32,
            block_words: c.block_words as u32,
            src_base,
            src_stride: c.src_stride as u32,
            dst_base,
            dst_stride: c.dst_stride as u32,
        })
        .chunk_of(group)
        .workgroups((c.blocks * c.block_words).div_ceil(GROUP_WORDS))
        .run()
}
