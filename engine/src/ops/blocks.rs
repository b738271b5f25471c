//! The strided block copy behind slice, concat and the KV cache's append: `blocks` runs of
//! `block_words` 32-bit words, each side with its own start and run stride (in words of the
//! tensors' data buffers). One kernel (`util_copy_blocks.wgsl`) moves the bits; this file binds
//! the smallest aligned byte ranges that hold the runs and splits copies whose ranges exceed
//! `max_storage_buffer_binding_size` (or whose word count would pass the kernel's u32 indices).
//! Two copies that each fit one launch can go as one dispatch: `blocks_pair.rs`.

use bitnet_kernels_wgsl::util as kernels;

use crate::context::Gpu;
use crate::error::Result;
use crate::launch::Launch;
use crate::pipelines::{Access, Kernel};
use crate::tensor::{Storage, Tensor};

const COPY_BLOCKS: Kernel = Kernel::new(
    kernels::COPY_BLOCKS,
    "main",
    &[Access::Read, Access::ReadWrite],
);
/// Words one workgroup of the kernel copies (of either copy of the paired kernel).
pub(super) const GROUP_WORDS: u64 = 1024;
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

/// The binding geometry of copies on `gpu`, in words: the offset alignment, and the words a
/// binding may span past the slack of aligning its start down.
pub(super) fn geometry(gpu: &Gpu) -> (u64, u64) {
    let align = (u64::from(gpu.caps.limits.min_storage_buffer_offset_alignment) / 4).max(1);
    let room = (gpu.caps.max_binding / 4).min(u64::from(u32::MAX)) - (align - 1);
    (align, room)
}

/// Runs of `c` per launch (the bound spans of both sides fit, and so do the kernel's indices),
/// or `None` when one run is longer than a binding (each run then goes in pieces).
fn runs_per_launch(c: &BlockCopy, room: u64) -> Option<u64> {
    let piece = room.min(MAX_LAUNCH_WORDS);
    if c.block_words > piece {
        return None;
    }
    let stride = c.src_stride.max(c.dst_stride);
    let by_span = match stride {
        0 => c.blocks,
        s => (room - c.block_words) / s + 1,
    };
    Some(by_span.min(MAX_LAUNCH_WORDS / c.block_words).max(1))
}

/// Whether [`copy_blocks`] records `c` as exactly one launch: something to copy, and runs whose
/// spans fit a binding on both sides (what `blocks_pair.rs` may fuse).
pub(super) fn one_launch(gpu: &Gpu, c: &BlockCopy) -> bool {
    c.blocks > 0
        && c.block_words > 0
        && runs_per_launch(c, geometry(gpu).1).is_some_and(|per| per >= c.blocks)
}

/// The binding holding one side's runs of `c` (run 0 at word `start`, runs `stride` apart) in
/// `t`: `(byte offset, byte size, run 0's word within the binding)`. The whole buffer where it
/// fits a binding (`room` words): the same binding whatever the runs, so a copy repeated at a
/// moving place — a KV-cache append, a slice at each decode step's position — reuses its bind
/// group (`bind_cache.rs`) instead of creating one per place; else the aligned span of the runs.
pub(super) fn span(
    t: &Tensor,
    c: &BlockCopy,
    (align, room): (u64, u64),
    start: u64,
    stride: u64,
) -> (u64, u64, u32) {
    let end = start + (c.blocks - 1) * stride + c.block_words;
    if let Storage::Device(buf) = t.data()
        && buf.bytes() <= 4 * room
        && end <= u64::from(u32::MAX)
    {
        return (0, buf.bytes(), start as u32);
    }
    let first = start / align * align;
    (4 * first, 4 * (end - first), (start - first) as u32)
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
    let (_, room) = geometry(gpu);
    let Some(per) = runs_per_launch(&c, room) else {
        // Runs longer than a binding: each run in pieces, one launch per piece.
        let piece = room.min(MAX_LAUNCH_WORDS);
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
                launch(gpu, src, dst, one, group)?;
                done += len;
            }
        }
        return Ok(());
    };
    let mut b = 0;
    while b < c.blocks {
        let n = per.min(c.blocks - b);
        let part = BlockCopy {
            blocks: n,
            src_start: c.src_start + b * c.src_stride,
            dst_start: c.dst_start + b * c.dst_stride,
            ..c
        };
        launch(gpu, src, dst, part, group)?;
        b += n;
    }
    Ok(())
}

/// One launch over runs whose spans fit a binding on both sides.
fn launch(gpu: &Gpu, src: &Tensor, dst: &Tensor, c: BlockCopy, group: u64) -> Result<()> {
    let room = geometry(gpu);
    let (src_off, src_size, src_base) = span(src, &c, room, c.src_start, c.src_stride);
    let (dst_off, dst_size, dst_base) = span(dst, &c, room, c.dst_start, c.dst_stride);
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

#[cfg(test)]
mod tests {
    use super::{BlockCopy, copy_blocks};
    use crate::engine::{Engine, EngineOptions};
    use crate::tensor::Tensor;

    /// What `c` leaves in a destination of `dst` words holding `dst[i] = !i`, from `src[i] = i`.
    fn model(c: BlockCopy, dst: usize) -> Vec<u32> {
        let mut d: Vec<u32> = (0..dst as u32).map(|i| !i).collect();
        for b in 0..c.blocks {
            for w in 0..c.block_words {
                d[(c.dst_start + b * c.dst_stride + w) as usize] =
                    (c.src_start + b * c.src_stride + w) as u32;
            }
        }
        d
    }

    /// Runs `c` on `e` between fresh `src` and `dst` tensors; returns dst's words and the
    /// launches the copy took (pipeline lookups: one per launch on an engine doing nothing else).
    fn run(e: &Engine, c: BlockCopy, src: usize, dst: usize) -> (Vec<u32>, u64) {
        let g = e.gpu_context().unwrap();
        let s = e
            .upload_u32(&(0..src as u32).collect::<Vec<_>>(), &[src])
            .unwrap();
        let d: Tensor = e
            .upload_u32(&(0..dst as u32).map(|i| !i).collect::<Vec<_>>(), &[dst])
            .unwrap();
        let lookups = |e: &Engine| e.pipeline_stats().compiled + e.pipeline_stats().hits;
        let before = lookups(e);
        copy_blocks(g, &s, &d, c, g.next_seq()).unwrap();
        let launches = lookups(e) - before;
        (d.read_u32().unwrap(), launches)
    }

    /// Copies with unaligned starts, gaps on both sides, and a read stride of 0 (one run copied
    /// to every destination run) match the host model, bound whole (one launch) and split over a
    /// binding limit that leaves 3 words per binding: runs of more than 3 words are cut into
    /// pieces (one launch each), shorter ones go as many per launch as fit on both sides.
    #[test]
    fn strided_copies_match_the_model_whole_and_split() {
        let whole = crate::test_gpu::gpu();
        let align = whole
            .gpu_context()
            .unwrap()
            .caps
            .limits
            .min_storage_buffer_offset_alignment;
        let align_words = u64::from(align / 4).max(1);
        // 3 words past the slack of aligning a binding's start down.
        let cap = 4 * (align_words - 1) + 12;
        let split = crate::test_gpu::gpu_with(EngineOptions {
            max_binding_bytes: Some(cap),
            ..Default::default()
        });
        let cases = [
            // (blocks, words, src start, src stride, dst start, dst stride), launches when split
            ((1, 37, 3, 0, 65, 0), 13),
            ((5, 7, 1, 9, 130, 11), 5 * 3),
            ((9, 1, 67, 70, 5, 3), 9),
            ((4, 13, 2, 0, 1, 13), 4 * 5),
            ((3, 64, 64, 64, 0, 200), 3 * 22),
            ((6, 1, 0, 1, 3, 2), 3),
            ((8, 1, 4, 1, 9, 1), 3),
            ((5, 3, 0, 3, 1, 3), 5),
        ];
        for ((blocks, block_words, src_start, src_stride, dst_start, dst_stride), pieces) in cases {
            let c = BlockCopy {
                blocks,
                block_words,
                src_start,
                src_stride,
                dst_start,
                dst_stride,
            };
            let src = (src_start + (blocks - 1) * src_stride + block_words) as usize + 5;
            let dst = (dst_start + (blocks - 1) * dst_stride + block_words) as usize + 7;
            let want = model(c, dst);
            let (got, launches) = run(&whole, c, src, dst);
            assert_eq!((got, launches), (want.clone(), 1), "{c:?} bound whole");
            let (got, launches) = run(&split, c, src, dst);
            assert_eq!((got, launches), (want, pieces), "{c:?} split");
        }
    }

    /// A copy repeated at a moving place (a KV-cache append, a slice at each decode position)
    /// binds its buffers whole where they fit, so it reuses one bind group: only the first copy
    /// creates one.
    #[test]
    fn copies_at_moving_places_reuse_one_bind_group() {
        let e = crate::test_gpu::gpu();
        let g = e.gpu_context().unwrap();
        let s = e.upload_u32(&(0..64).collect::<Vec<_>>(), &[64]).unwrap();
        let d = e.upload_u32(&[0; 1024], &[1024]).unwrap();
        let created = || e.pool_stats().bind_groups_created;
        let before = created();
        for step in 0..8u64 {
            let c = BlockCopy {
                blocks: 2,
                block_words: 32,
                src_start: 0,
                src_stride: 32,
                dst_start: 100 * step + 3,
                dst_stride: 40,
            };
            copy_blocks(g, &s, &d, c, g.next_seq()).unwrap();
        }
        assert_eq!(created() - before, 1, "bind groups created by 8 copies");
        let got = d.read_u32().unwrap();
        for step in 0..8usize {
            let at = 100 * step + 3;
            assert_eq!(&got[at..at + 32], &(0..32).collect::<Vec<u32>>()[..]);
            assert_eq!(&got[at + 40..at + 72], &(32..64).collect::<Vec<u32>>()[..]);
        }
    }

    /// Nothing to copy records nothing.
    #[test]
    fn empty_copies_launch_nothing() {
        let e = crate::test_gpu::gpu();
        for (blocks, block_words) in [(0, 4), (4, 0)] {
            let c = BlockCopy {
                blocks,
                block_words,
                src_start: 0,
                src_stride: 4,
                dst_start: 0,
                dst_stride: 4,
            };
            let (got, launches) = run(&e, c, 16, 16);
            assert_eq!((got, launches), (model(c, 16), 0));
        }
    }
}
