//! The query-tiled attention kernel's plan (`attention_tiled.wgsl`, prefill): how many query rows
//! a tile takes on this device, and its loop count for CPU adapters.

use bitnet_cpu_ref::ops::AttentionDims;
use bitnet_kernels_wgsl::tensor as kernels;

use super::float_args;
use crate::context::Gpu;

/// Query rows per tile of the tiled kernel for `dims` on `gpu`, or `None` when it does not apply:
/// a head dimension it does not handle (32, 64, 128), fewer query rows per kv head than one tile
/// (decode, short prompts: they would leave most of the tile idle), no tile size whose workgroup
/// memory fits the device, or (CPU adapters) loops that would not fit. The largest tile with at
/// most four rows per invocation in the weighted sums wins: more K/V reuse per load.
pub(super) fn tiled_rows(gpu: &Gpu, dims: &AttentionDims) -> Option<u32> {
    let d = dims.d as u32;
    if ![32, 64, 128].contains(&d) {
        return None;
    }
    let limit = gpu.caps.limits.max_compute_workgroup_storage_size;
    let group_rows = (dims.tq * (dims.hq / dims.hkv)) as u64;
    let bq = [64u32, 32, 16].into_iter().find(|&bq| {
        (1024..=4096).contains(&(bq * d))
            && kernels::attention_tiled_workgroup_bytes(d, bq) <= limit
    })?;
    let fits = float_args::loops_fit(gpu, tiled_loops(d, bq, dims.tk as u64));
    (group_rows >= u64::from(bq) && fits).then_some(bq)
}

/// Loop iterations per invocation of the tiled kernel (for [`float_args::loops_fit`]), from its
/// loops' trip counts per key tile: the K / V loads and stores, the scores (eight parts of
/// `D / 32` steps over the invocation's keys), the row reductions and the mask, the rescale and
/// the weighted sums (four keys per step); plus the q tile and the division per owned element.
fn tiled_loops(d: u32, bq: u32, tk: u64) -> u64 {
    let keys = u64::from(kernels::ATTENTION_TILED_KEYS);
    let (d, bq) = (u64::from(d), u64::from(bq));
    let per_row = 256 / bq;
    let per_thread = keys / per_row;
    let rows = bq * d / 1024;
    let loads = keys * d / 4 / 256;
    let scores = 8 * (d / 32 * (per_thread + 1) + 2 * per_thread + 1);
    let per_tile = 4 * loads
        + scores
        + 4 * per_thread
        + 2 * per_row
        + 2 * rows
        + keys / 4 * (rows + 5 * (rows + 1))
        + 16;
    bq * d / 4 / 256 + 1 + tk.div_ceil(keys) * per_tile + rows * 4 * (float_args::DIV_LOOPS + 2)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The workgroup figures the plan compares with the device limit: D = 32 tiles within
    /// WebGPU's 16 KiB floor, 2B4T's D = 128 at 32 rows needs 40 KiB (the H200 offers 48).
    #[test]
    fn attention_tiled_bytes_and_loops() {
        assert!(kernels::attention_tiled_workgroup_bytes(32, 32) <= 16384);
        assert_eq!(kernels::attention_tiled_workgroup_bytes(128, 32), 40704);
        // Loops grow with the key tiles: on lavapipe a 4096-key prefill at D = 128 tiles, a
        // 16384-key one runs untiled (whole mode fits to about 37k keys).
        assert!(tiled_loops(128, 16, 4096) < 60_000);
        assert!(tiled_loops(128, 16, 16384) > 60_000);
    }
}
