//! `copy_blocks_pair` against a host model of the two copies (applied in order), with the
//! launches each pair took: one when both fit one launch and nothing aliases, else each copy's
//! own launches.

use super::{Side, copy_blocks_pair};
use crate::engine::{Engine, EngineOptions};
use crate::ops::blocks::BlockCopy;
use crate::tensor::Tensor;

/// Source words `src[i] = base + i`, destinations `!i`; copy `c` applied to `dst` from `src`.
fn apply(c: BlockCopy, src: &[u32], dst: &mut [u32]) {
    for b in 0..c.blocks {
        for w in 0..c.block_words {
            dst[(c.dst_start + b * c.dst_stride + w) as usize] =
                src[(c.src_start + b * c.src_stride + w) as usize];
        }
    }
}

fn copy(spec: (u64, u64, u64, u64, u64, u64)) -> BlockCopy {
    let (blocks, block_words, src_start, src_stride, dst_start, dst_stride) = spec;
    BlockCopy {
        blocks,
        block_words,
        src_start,
        src_stride,
        dst_start,
        dst_stride,
    }
}

/// Words a side of `c` needs (plus slack past the end).
fn extent(c: BlockCopy, src: bool) -> usize {
    let (start, stride) = if src {
        (c.src_start, c.src_stride)
    } else {
        (c.dst_start, c.dst_stride)
    };
    (start + c.blocks.max(1).saturating_sub(1) * stride + c.block_words) as usize + 9
}

fn upload(e: &Engine, v: &[u32]) -> Tensor {
    e.upload_u32(v, &[v.len()]).unwrap()
}

fn lookups(e: &Engine) -> u64 {
    e.pipeline_stats().compiled + e.pipeline_stats().hits
}

/// Runs the pair `a`, `b` on `e` between fresh tensors (four distinct buffers); checks both
/// destinations against the model and returns the launches taken.
fn run_pair(e: &Engine, a: BlockCopy, b: BlockCopy) -> u64 {
    let g = e.gpu_context().unwrap();
    let words = |n: usize, base: u32| (0..n as u32).map(|i| base + i).collect::<Vec<_>>();
    let (sa, sb) = (words(extent(a, true), 0), words(extent(b, true), 1 << 20));
    let nots = |n: usize| (0..n as u32).map(|i| !i).collect::<Vec<_>>();
    let (mut da, mut db) = (nots(extent(a, false)), nots(extent(b, false)));
    let (tsa, tsb, tda, tdb) = (
        upload(e, &sa),
        upload(e, &sb),
        upload(e, &da),
        upload(e, &db),
    );
    let before = lookups(e);
    let side = |src, dst, copy| Side { src, dst, copy };
    copy_blocks_pair(g, side(&tsa, &tda, a), side(&tsb, &tdb, b), g.next_seq()).unwrap();
    let launches = lookups(e) - before;
    apply(a, &sa, &mut da);
    apply(b, &sb, &mut db);
    assert_eq!(tda.read_u32().unwrap(), da, "{a:?} then {b:?}: copy 0");
    assert_eq!(tdb.read_u32().unwrap(), db, "{a:?} then {b:?}: copy 1");
    launches
}

/// Pairs of copies (unaligned starts, gaps, a read stride of 0, more than one workgroup) are
/// one launch on an engine whose bindings hold them, and on one whose bindings hold 3 words
/// are fused only when both copies fit a launch each; the values match the model either way.
#[test]
fn pairs_match_the_model_fused_and_split() {
    let whole = crate::test_gpu::gpu();
    let align = whole
        .gpu_context()
        .unwrap()
        .caps
        .limits
        .min_storage_buffer_offset_alignment;
    let cap = 4 * (u64::from(align / 4).max(1) - 1) + 12;
    let split = crate::test_gpu::gpu_with(EngineOptions {
        max_binding_bytes: Some(cap),
        ..Default::default()
    });
    // (copy 0, copy 1, launches under the 3-word bindings)
    let cases = [
        ((1, 3, 0, 0, 65, 0), (1, 2, 7, 0, 3, 0), 1),
        ((1, 1, 5, 0, 1, 0), (3, 1, 0, 1, 9, 1), 1),
        ((5, 7, 1, 9, 130, 11), (1, 3, 2, 0, 0, 0), 5 * 3 + 1),
        ((1, 2, 0, 0, 0, 0), (4, 13, 2, 0, 1, 13), 1 + 4 * 5),
        ((1, 37, 3, 0, 65, 0), (9, 1, 67, 70, 5, 3), 13 + 9),
        // Nothing to copy on one side: the other's launches only.
        ((0, 4, 0, 4, 0, 4), (1, 3, 1, 0, 2, 0), 1),
    ];
    for (a, b, pieces) in cases {
        let (a, b) = (copy(a), copy(b));
        assert_eq!(run_pair(&whole, a, b), 1, "{a:?}, {b:?} bound whole");
        assert_eq!(run_pair(&split, a, b), pieces, "{a:?}, {b:?} split");
    }
    // Several workgroups per copy (1024 words each): copy 1 starts after copy 0's groups.
    let big = copy((3, 1500, 5, 1600, 70, 1500));
    let small = copy((2, 700, 0, 700, 3, 900));
    assert_eq!(run_pair(&whole, big, small), 1);
    assert_eq!(run_pair(&whole, small, big), 1);
}

/// A source that is a destination (or the same destination twice) cannot be bound for reading
/// and writing in one dispatch: the copies go one after the other, in order (copy 1 reads what
/// copy 0 wrote).
#[test]
fn aliased_pairs_run_in_order() {
    let e = crate::test_gpu::gpu();
    let g = e.gpu_context().unwrap();
    let src: Vec<u32> = (0..16).collect();
    let mid: Vec<u32> = (0..16).map(|i| !i).collect();
    let out: Vec<u32> = (0..16).map(|i| 100 + i).collect();
    let (ts, tm, to) = (upload(&e, &src), upload(&e, &mid), upload(&e, &out));
    let a = copy((1, 4, 0, 0, 2, 0));
    let b = copy((1, 8, 0, 0, 8, 0));
    let before = lookups(&e);
    let side = |src, dst, copy| Side { src, dst, copy };
    copy_blocks_pair(g, side(&ts, &tm, a), side(&tm, &to, b), g.next_seq()).unwrap();
    assert_eq!(lookups(&e) - before, 2);
    let (mut m, mut o) = (mid.clone(), out.clone());
    apply(a, &src, &mut m);
    apply(b, &m, &mut o);
    assert_eq!(tm.read_u32().unwrap(), m);
    assert_eq!(to.read_u32().unwrap(), o);
    // Both into one destination: in order too (copy 1 overwrites the words both write).
    let both = upload(&e, &mid);
    let (c0, c1) = (copy((1, 6, 0, 0, 0, 0)), copy((1, 6, 8, 0, 3, 0)));
    let before = lookups(&e);
    copy_blocks_pair(g, side(&ts, &both, c0), side(&ts, &both, c1), g.next_seq()).unwrap();
    assert_eq!(lookups(&e) - before, 2);
    let mut want = mid.clone();
    apply(c0, &src, &mut want);
    apply(c1, &src, &mut want);
    assert_eq!(both.read_u32().unwrap(), want);
}
