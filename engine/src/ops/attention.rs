//! Scaled-dot-product attention on resident `F32` tensors: token-major `[T, H, D]` operands as the
//! q / k / v projections produce them, grouped-query heads, an optional causal mask. The order of
//! operations follows `bitnet_cpu_ref::ops::attention` — keys in chunks of 256, each scored,
//! max-subtracted and summed in softmax's lane order, the chunks merged in order — except that
//! each dot product and each chunk's weighted sum are split into independent partial sums (one
//! serial chain of 128-256 dependent loads per lane made an H200 decode call 130 µs), so results
//! match the CPU reference within the cross-check tolerance. Few (query, head)
//! pairs (decode) split their keys across workgroups and merge in a second dispatch
//! (flash-decoding); many (prefill) take a tile of query rows per workgroup when the head
//! dimension allows (`attention_tiled.wgsl`: K/V streamed through workgroup memory once per tile,
//! a running maximum instead of 256-key chunks), one workgroup per pair otherwise. See
//! `attention.wgsl`.

use bitnet_cpu_ref::ops::{self as cpu, AttentionDims};
use bitnet_kernels_wgsl::tensor as kernels;

use super::float_args::{self, RowSplit, row_chunks, store_f32, with_host_f32};
use crate::context::Gpu;
use crate::engine::Engine;
use crate::error::Result;
use crate::launch::{Launch, check_binding};
use crate::pipelines::{Access, Kernel};
use crate::status::NonFiniteCheck;
use crate::tensor::{DType, Tensor};

use Access::{Read, ReadWrite};

/// q, k, v, k again (read as vec4 where D allows), then the output or the records.
const ATTENTION: Kernel = Kernel::new(
    kernels::ATTENTION,
    "main",
    &[Read, Read, Read, Read, ReadWrite],
);
const ATTENTION_TILED: Kernel = Kernel::new(
    kernels::ATTENTION_TILED,
    "main",
    &[Read, Read, Read, ReadWrite],
);
const ATTENTION_COMBINE: Kernel =
    Kernel::new(kernels::ATTENTION_COMBINE, "main", &[Read, ReadWrite]);

/// Keys per chunk: cpu-ref's order, and the chunk kernel's workgroup size.
const CHUNK: u64 = cpu::ATTENTION_CHUNK as u64;
/// Invocations per workgroup of the combine kernel (one per head-dimension element).
const COMBINE_WG: u64 = 128;
/// Below this many (query, head) pairs a workgroup per pair leaves a large GPU idle (an H200 has
/// 132 SMs, each holding several workgroups), so the keys are split across workgroups instead.
const SPLIT_BELOW_PAIRS: u64 = 1024;

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct Params {
    rows: u32,
    heads: u32,
    kv_heads: u32,
    dim: u32,
    attend0: u32,
    attend_step: u32,
    row_base: u32,
    q_shift: u32,
    chunks: u32,
    scale: f32,
    pad: [u32; 2],
}

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct TiledParams {
    rows: u32,
    heads: u32,
    kv_heads: u32,
    attend0: u32,
    attend_step: u32,
    row_base: u32,
    q_shift: u32,
    scale: f32,
}

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct CombineParams {
    pairs: u32,
    heads: u32,
    dim: u32,
    chunks: u32,
    attend0: u32,
    attend_step: u32,
    row_base: u32,
    q_shift: u32,
}

/// How one call runs on the GPU (see `attention.wgsl`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// One workgroup per (query, head) walks every chunk; no scratch.
    Whole,
    /// One workgroup per (query, head, chunk) writes a record; the combine kernel merges them.
    Split,
    /// One workgroup per tile of this many query rows of one kv head (`attention_tiled.wgsl`).
    Tiled(u32),
}

impl Engine {
    /// Scaled-dot-product attention of `F32` tensors: `q` `[Tq, Hq, D]`, `k` and `v`
    /// `[Tk, Hkv, D]` (token-major, as the projections produce them: no transposes), output
    /// `[Tq, Hq, D]`, `out[i, h] = Σ_j softmax_j(q[i, h] · k[j, g] · scale) · v[j, g]` with
    /// `g = h / (Hq / Hkv)` (grouped-query attention, HF's `repeat_kv`). With `causal` the queries
    /// are the last `Tq` of the `Tk` positions (decode over a KV cache: `Tk = past + Tq`) and
    /// query `i` attends keys `j <= Tk - Tq + i`; without it, every key. `scale` is usually
    /// `1 / sqrt(D)`. Same as `bitnet_cpu_ref::ops::attention` within a float tolerance (the
    /// kernel reassociates the dot products and weighted sums; see the module docs).
    ///
    /// Errors (as cpu-ref reports them): wrong dtype; shapes that do not fit (rank, `D`, `v` not
    /// `k`'s shape, `Hq` not a multiple of `Hkv`); `causal` with `Tq > Tk`; `scale` non-finite or
    /// `<= 0`; non-finite `q`, `k` or `v` (`NonFinite` naming the tensor and first flat index,
    /// surfaced when the result is read); a score or weighted sum beyond f32's range (`NonFinite`
    /// on `output`). `k` or `v` above `max_storage_buffer_binding_size` is `LimitExceeded`: every
    /// query reads every key, so they are bound whole (`q` and the output are split by rows).
    pub fn attention(
        &self,
        q: &Tensor,
        k: &Tensor,
        v: &Tensor,
        scale: f32,
        causal: bool,
    ) -> Result<Tensor> {
        const OP: &str = "attention";
        for t in [q, k, v] {
            float_args::operand(self, OP, t, DType::F32)?;
        }
        let dims = cpu::attention_dims(q.shape(), k.shape(), v.shape(), scale, causal)?;
        let on_cpu = || {
            with_host_f32(q, |hq| {
                with_host_f32(k, |hk| {
                    with_host_f32(v, |hv| {
                        store_f32(self, cpu::attention(hq, hk, hv, scale, causal)?)
                    })
                })
            })
        };
        let Some(gpu) = self.gpu_for(&[q, k, v]) else {
            return on_cpu();
        };
        float_args::u32_indexable(OP, "q", q.len() as u64)?;
        float_args::u32_indexable(OP, "k", k.len() as u64)?;
        for (name, t) in [("k", k), ("v", v)] {
            let what = format!("{OP}: {name}, bound whole (every query reads every key)");
            check_binding(gpu, &what, 4 * t.len() as u64)?;
        }
        let Some((mode, split)) = plan(gpu, &dims)? else {
            return on_cpu();
        };
        let out = self.empty(OP, q.shape(), DType::F32)?;
        let (hq, d, chunks) = (dims.hq as u64, dims.d as u64, dims.chunks() as u64);
        let check = NonFiniteCheck::tensors(OP, ["q", "k", "v", "output"]);
        // k bound whole twice, as f32 and as vec4 (the scores of D % 32 == 0 read it as vec4,
        // every other D never does): a k smaller than one vec4 binds four words of scratch there.
        let k4 = (k.len() < 4)
            .then(|| self.empty(OP, &[4], DType::F32))
            .transpose()?;
        let group = gpu.next_seq();
        for r in &split.chunks {
            let (off, size, first_row) = split.binding(0, r);
            let rows = r.end - r.start;
            let pairs = rows * hq;
            let params = Params {
                rows: rows as u32,
                heads: hq as u32,
                kv_heads: dims.hkv as u32,
                dim: d as u32,
                attend0: dims.attended(r.start as usize) as u32,
                attend_step: u32::from(causal),
                row_base: r.start as u32,
                q_shift: (r.start - first_row) as u32,
                chunks: if mode == Mode::Split {
                    chunks as u32
                } else {
                    0
                },
                scale,
                pad: [0; 2],
            };
            if let Mode::Tiled(bq) = mode {
                let group_rows = rows * (hq / dims.hkv as u64);
                Launch::new(gpu, &ATTENTION_TILED)
                    .input_range(q, off, size)
                    .input(k)
                    .input(v)
                    .output_range(&out, off, size)
                    .params(&TiledParams {
                        rows: rows as u32,
                        heads: hq as u32,
                        kv_heads: dims.hkv as u32,
                        attend0: params.attend0,
                        attend_step: params.attend_step,
                        row_base: params.row_base,
                        q_shift: params.q_shift,
                        scale,
                    })
                    .constant("DIM", d as f64)
                    .constant("BQ", f64::from(bq))
                    .chunk_of(group)
                    .check_finite(check)
                    .workgroups(dims.hkv as u64 * group_rows.div_ceil(u64::from(bq)))
                    .run()?;
                continue;
            }
            let launch = Launch::new(gpu, &ATTENTION)
                .input_range(q, off, size)
                .input(k)
                .input(v)
                .input(k4.as_ref().unwrap_or(k))
                .params(&params)
                .constant("DIM", constant_dim(d))
                .chunk_of(group)
                .check_finite(check);
            if mode == Mode::Whole {
                launch
                    .output_range(&out, off, size)
                    .workgroups(pairs)
                    .run()?;
                continue;
            }
            // The records (D + 2 floats per pair and chunk) carry the chunk launch's lineage to
            // the combine's output, so a flagged q, k or v poisons the result.
            let records = pairs * chunks * (d + 2);
            float_args::u32_indexable(OP, "the chunk records", records)?;
            let scratch = self.empty(OP, &[records as usize], DType::F32)?;
            launch.output(&scratch).workgroups(pairs * chunks).run()?;
            Launch::new(gpu, &ATTENTION_COMBINE)
                .input(&scratch)
                .output_range(&out, off, size)
                .params(&CombineParams {
                    pairs: pairs as u32,
                    heads: hq as u32,
                    dim: d as u32,
                    chunks: chunks as u32,
                    attend0: params.attend0,
                    attend_step: params.attend_step,
                    row_base: params.row_base,
                    q_shift: params.q_shift,
                })
                .chunk_of(group)
                .check_finite(check)
                .workgroups(pairs)
                .run()?;
        }
        Ok(out)
    }
}

/// `attention.wgsl`'s `DIM` override for head dimension `d`: the common head sizes compiled
/// with D constant (the driver drops the paths they never take), 0 (D from the params) for the
/// rest, so a model compiles one pipeline and odd sizes share the generic one.
fn constant_dim(d: u64) -> f64 {
    match d {
        32 | 64 | 128 => d as f64,
        _ => 0.0,
    }
}

/// The mode and query-row launches of a call on `gpu`, or `None` when its loops would not fit a
/// CPU adapter's limit in any mode (cpu-ref runs it, as `softmax_last` does with long rows).
/// Split mode for few pairs with several chunks (or when whole mode's loops do not fit), unless
/// its records do not fit a binding; whole mode otherwise.
fn plan(gpu: &Gpu, dims: &AttentionDims) -> Result<Option<(Mode, RowSplit)>> {
    let (tq, hq, d) = (dims.tq as u64, dims.hq as u64, dims.d as u64);
    let chunks = dims.chunks() as u64;
    let row_bytes = 4 * hq * d;
    let (whole_loops, split_loops) = loops(d, chunks);
    let whole_fits = float_args::loops_fit(gpu, whole_loops);
    if chunks > 1
        && (tq * hq < SPLIT_BELOW_PAIRS || !whole_fits)
        && float_args::loops_fit(gpu, split_loops)
    {
        let record_bytes = 4 * hq * chunks * (d + 2);
        if let Ok(split) = row_chunks(gpu, "attention", tq, &[row_bytes, record_bytes], u64::MAX) {
            return Ok(Some((Mode::Split, split)));
        }
    }
    let split = || row_chunks(gpu, "attention", tq, &[row_bytes], u64::MAX);
    if let Some(bq) = tiled_rows(gpu, dims) {
        return Ok(Some((Mode::Tiled(bq), split()?)));
    }
    if !whole_fits {
        return Ok(None);
    }
    Ok(Some((Mode::Whole, split()?)))
}

/// Query rows per tile of the tiled kernel for `dims` on `gpu`, or `None` when it does not apply:
/// a head dimension it does not handle (32, 64, 128), fewer query rows per kv head than one tile
/// (decode, short prompts: they would leave most of the tile idle), no tile size whose workgroup
/// memory fits the device, or (CPU adapters) loops that would not fit. The largest tile with at
/// most four rows per invocation in the weighted sums wins: more K/V reuse per load.
fn tiled_rows(gpu: &Gpu, dims: &AttentionDims) -> Option<u32> {
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
    /// query rows per kv head) take the tiled kernel on the test adapter, decode and unsupported
    /// head sizes do not.
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
        assert_eq!(mode(dims(1, 300, 32, 8, 128, true)), Some(Mode::Split));
        assert_eq!(mode(dims(1, 7, 32, 8, 128, true)), Some(Mode::Whole));
        assert_eq!(mode(dims(96, 96, 4, 1, 48, true)), Some(Mode::Whole));
        // Fewer query rows per kv head than a tile.
        assert_eq!(mode(dims(8, 8, 1, 1, 128, true)), Some(Mode::Whole));
    }

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
