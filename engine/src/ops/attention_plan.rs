//! How an attention call runs on the GPU: which kernel (`Mode`), in which query-row launches,
//! and whether its loops fit a CPU adapter (see `attention.rs` for the kernels).

use bitnet_cpu_ref::ops::{self as cpu, AttentionDims};

use super::attention_decode::{DecodePlan, decode_plan};
use super::attention_tiled::tiled_rows;
use super::float_args::{self, RowSplit, row_chunks};
use crate::context::Gpu;
use crate::error::Result;

/// Keys per chunk: cpu-ref's order, and the chunk kernel's workgroup size.
pub(super) const CHUNK: u64 = cpu::ATTENTION_CHUNK as u64;
/// Invocations per workgroup of the combine kernel (one per head-dimension element).
pub(super) const COMBINE_WG: u64 = 128;
/// Below this many (query, head) pairs a workgroup per pair leaves a large GPU idle (an H200 has
/// 132 SMs, each holding several workgroups), so the keys are split across workgroups instead.
const SPLIT_BELOW_PAIRS: u64 = 1024;

/// How one call runs on the GPU (see `attention.wgsl`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Mode {
    /// One workgroup per (query, head) walks every chunk; no scratch.
    Whole,
    /// One workgroup per (query, head, chunk) writes a record; the combine kernel merges them.
    Split,
    /// One workgroup per tile of this many query rows of one kv head (`attention_tiled.wgsl`).
    Tiled(u32),
    /// One workgroup per (query row, kv head, run of chunks) for the kv head's query heads
    /// (`attention_decode.wgsl`), with records for the combine kernel where the plan says.
    Decode(DecodePlan),
}

/// The mode and query-row launches of a call on `gpu`, or `None` when its loops would not fit a
/// CPU adapter's limit in any mode (cpu-ref runs it, as `softmax_last` does with long rows).
/// The decode kernel where it applies and the tiled one does not (few query rows per kv head),
/// or where split mode would be chosen; split mode for few pairs with several chunks (or when
/// whole mode's loops do not fit), unless its records do not fit a binding; the tiled kernel
/// for prefill at the common head sizes; whole mode otherwise.
pub(super) fn plan(gpu: &Gpu, dims: &AttentionDims) -> Result<Option<(Mode, RowSplit)>> {
    let (tq, hq, d) = (dims.tq as u64, dims.hq as u64, dims.d as u64);
    let chunks = dims.chunks() as u64;
    let row_bytes = 4 * hq * d;
    let (whole_loops, split_loops) = loops(d, chunks);
    let whole_fits = float_args::loops_fit(gpu, whole_loops);
    let split_wanted = chunks > 1 && (tq * hq < SPLIT_BELOW_PAIRS || !whole_fits);
    let tiled = tiled_rows(gpu, dims);
    if (tiled.is_none() || split_wanted)
        && let Some(decode) = decode_plan(gpu, dims)
    {
        let record_bytes = decode.record_row_bytes(dims);
        if let Ok(split) = row_chunks(gpu, "attention", tq, &[row_bytes, record_bytes], u64::MAX) {
            return Ok(Some((Mode::Decode(decode), split)));
        }
    }
    if split_wanted && float_args::loops_fit(gpu, split_loops) {
        let record_bytes = 4 * hq * chunks * (d + 2);
        if let Ok(split) = row_chunks(gpu, "attention", tq, &[row_bytes, record_bytes], u64::MAX) {
            return Ok(Some((Mode::Split, split)));
        }
    }
    let split = || row_chunks(gpu, "attention", tq, &[row_bytes], u64::MAX);
    if let Some(bq) = tiled {
        return Ok(Some((Mode::Tiled(bq), split()?)));
    }
    if !whole_fits {
        return Ok(None);
    }
    Ok(Some((Mode::Whole, split()?)))
}

/// Loop iterations per invocation in whole mode and in split mode (the larger of its two kernels),
/// for [`float_args::loops_fit`]: per chunk the dot product (D), two trees of 8 levels and the
/// weighted sums (256 keys per owned d); the q check, and the division (a loop of its own) per
/// owned d; the combine walks every chunk per owned d.
fn loops(d: u64, chunks: u64) -> (u64, u64) {
    let per_d = d.div_ceil(CHUNK);
    let per_chunk = d + 20 + per_d * (CHUNK + 4);
    let whole = per_d + chunks * per_chunk + per_d * (float_args::DIV_LOOPS + 1);
    let combine = d.div_ceil(COMBINE_WG) * (chunks + float_args::DIV_LOOPS + 2);
    (whole, (per_d + per_chunk).max(combine))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dims(tq: usize, tk: usize, hq: usize, hkv: usize, d: usize, causal: bool) -> AttentionDims {
        AttentionDims {
            tq,
            tk,
            hq,
            hkv,
            d,
            causal,
        }
    }

    /// The cross-check suite's tiled cases (`values_attention.rs`, `chunking.rs`; 64 or more
    /// query rows per kv head) take the tiled kernel on the test adapter; decode takes the
    /// decode kernel at the head sizes and groups it handles, split or whole mode beyond.
    #[test]
    fn attention_plans_tiles_for_prefill_only() {
        let e = crate::test_gpu::gpu();
        let g = e.gpu_context().expect("a GPU engine");
        let mode = |d: AttentionDims| plan(g, &d).unwrap().map(|(m, _)| m);
        for d in [
            dims(96, 96, 4, 1, 64, true),
            dims(70, 70, 5, 1, 128, true),
            dims(67, 90, 2, 2, 64, true),
            dims(80, 45, 8, 2, 128, false),
            dims(13, 96, 10, 2, 32, false),
            dims(512, 512, 20, 5, 128, true),
            dims(65, 65, 4, 4, 64, false),
            dims(64, 300, 16, 4, 64, true),
            dims(100, 120, 4, 1, 32, true),
        ] {
            assert!(matches!(mode(d), Some(Mode::Tiled(_))), "{d:?}");
        }
        let decode = |records, walk| Some(Mode::Decode(DecodePlan { records, walk }));
        assert_eq!(mode(dims(1, 300, 32, 8, 128, true)), decode(5, 1));
        assert_eq!(mode(dims(1, 7, 32, 8, 128, true)), decode(0, 1));
        // Fewer query rows per kv head than a tile.
        assert_eq!(mode(dims(8, 8, 1, 1, 128, true)), decode(0, 1));
        // Head sizes and groups the decode kernel does not take.
        assert_eq!(mode(dims(96, 96, 4, 1, 48, true)), Some(Mode::Whole));
        assert_eq!(mode(dims(1, 300, 4, 2, 256, false)), Some(Mode::Split));
        assert_eq!(mode(dims(1, 7, 16, 1, 64, false)), Some(Mode::Whole));
    }
}
