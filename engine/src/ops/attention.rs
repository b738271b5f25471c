//! Scaled-dot-product attention on resident `F32` tensors: token-major `[T, H, D]` operands as the
//! q / k / v projections produce them, grouped-query heads, an optional causal mask. The order of
//! operations follows `bitnet_cpu_ref::ops::attention` — keys in chunks of 256, each scored,
//! max-subtracted and summed in softmax's lane order, the chunks merged in order — except that
//! each dot product and each chunk's weighted sum are split into independent partial sums (one
//! serial chain of 128-256 dependent loads per lane made an H200 decode call 130 µs), so results
//! match the CPU reference within the cross-check tolerance. Three kernels share that contract:
//! - few query rows per kv head (decode) at head sizes 32, 64 and 128:
//!   `attention_decode.wgsl`, a workgroup per (row, kv head, run of 64-key chunks) for all of
//!   the kv head's query heads, records merged by a second dispatch for long rows
//!   (flash-decoding; `attention_decode.rs`);
//! - many (prefill) at those sizes: a tile of query rows per workgroup (`attention_tiled.wgsl`:
//!   K/V streamed through workgroup memory once per tile, a running maximum instead of 256-key
//!   chunks; `attention_tiled.rs`);
//! - any other head size: `attention.wgsl`, a workgroup per (query, head), or per (query, head,
//!   chunk) with the same second dispatch when few pairs walk several chunks.

use bitnet_cpu_ref::ops as cpu;
use bitnet_kernels_wgsl::tensor as kernels;

use super::attention_plan::{CHUNK, Mode, plan};
use super::float_args::{self, host_f32, store_f32};
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

/// `Params` of `attention.wgsl` (the decode kernel's are made from them).
#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
pub(super) struct Params {
    pub(super) rows: u32,
    pub(super) heads: u32,
    pub(super) kv_heads: u32,
    pub(super) dim: u32,
    pub(super) attend0: u32,
    pub(super) attend_step: u32,
    pub(super) row_base: u32,
    pub(super) q_shift: u32,
    pub(super) chunks: u32,
    pub(super) scale: f32,
    pub(super) pad: [u32; 2],
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

/// `Params` of `attention_combine.wgsl`.
#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
pub(super) struct CombineParams {
    pub(super) pairs: u32,
    pub(super) heads: u32,
    pub(super) dim: u32,
    pub(super) chunks: u32,
    pub(super) attend0: u32,
    pub(super) attend_step: u32,
    pub(super) row_base: u32,
    pub(super) q_shift: u32,
    pub(super) keys: u32,
    pub(super) pad: [u32; 3],
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
    /// on `output`). Near that edge the two backends may disagree, as their summation orders
    /// differ: a dot product or weighted sum whose partial sums pass f32's range in one order and
    /// not in the other is `NonFinite` on one backend and finite on the other (inputs whose
    /// terms stay below about `f32::MAX / D` agree). `k` or `v` above
    /// `max_storage_buffer_binding_size` runs on the CPU under `Auto` and is `LimitExceeded`
    /// under `Gpu`: every query reads every key, so the kernels bind them whole (`q` and the
    /// output are split by rows).
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
            let (hq, hk, hv) = (host_f32(q)?, host_f32(k)?, host_f32(v)?);
            store_f32(
                self,
                cpu::attention(hq.view()?, hk.view()?, hv.view()?, scale, causal)?,
            )
        };
        self.tensor_op(
            &[q, k, v],
            0,
            |gpu| {
                float_args::u32_indexable(OP, "q", q.len() as u64)?;
                float_args::u32_indexable(OP, "k", k.len() as u64)?;
                for (name, t) in [("k", k), ("v", v)] {
                    let what = format!("{OP}: {name}, bound whole (every query reads every key)");
                    check_binding(gpu, &what, 4 * t.len() as u64)?;
                }
                let Some((mode, split)) = plan(gpu, &dims)? else {
                    return on_cpu();
                };
                let out = self.empty(gpu, OP, q.shape(), DType::F32)?;
                let (hq, d, chunks) = (dims.hq as u64, dims.d as u64, dims.chunks() as u64);
                let check = NonFiniteCheck::tensors(OP, ["q", "k", "v", "output"]);
                // k bound whole twice, as f32 and as vec4 (the scores of D % 32 == 0 read it as vec4,
                // every other D never does): a k smaller than one vec4 binds four words of scratch there.
                let k4 = (k.len() < 4)
                    .then(|| self.empty(gpu, OP, &[4], DType::F32))
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
                    let combine = CombineParams {
                        pairs: pairs as u32,
                        heads: hq as u32,
                        dim: d as u32,
                        chunks: chunks as u32,
                        attend0: params.attend0,
                        attend_step: params.attend_step,
                        row_base: params.row_base,
                        q_shift: params.q_shift,
                        keys: CHUNK as u32,
                        pad: [0; 3],
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
                    if let Mode::Decode(plan) = mode {
                        let operands = (q, k, v, &out);
                        let launch = (gpu, (off, size), group, check);
                        self.attention_decode_rows(launch, operands, &params, plan, combine)?;
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
                    let scratch = self.empty(gpu, OP, &[records as usize], DType::F32)?;
                    launch.output(&scratch).workgroups(pairs * chunks).run()?;
                    self.combine(gpu, &scratch, &out, (off, size), combine, group, check)?;
                }
                Ok(out)
            },
            on_cpu,
        )
    }

    /// The combine dispatch of split and decode modes: merges `scratch`'s records into the
    /// output's `(offset, size)` binding, one workgroup per (query, head) pair.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn combine(
        &self,
        gpu: &Gpu,
        scratch: &Tensor,
        out: &Tensor,
        (off, size): (u64, u64),
        params: CombineParams,
        group: u64,
        check: NonFiniteCheck,
    ) -> Result<()> {
        Launch::new(gpu, &ATTENTION_COMBINE)
            .input(scratch)
            .output_range(out, off, size)
            .params(&params)
            .chunk_of(group)
            .check_finite(check)
            .workgroups(u64::from(params.pairs))
            .run()
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
