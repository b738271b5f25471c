//! Decode attention (`attention_decode.wgsl`): few query rows per kv head — a decode step's one
//! query, or a short chunk of a prompt — at the common head sizes. One workgroup per (query row,
//! kv head, run of 64-key chunks) computes all of the kv head's query heads together, so each
//! key and value is read once for the group instead of once per query head, and it keeps no
//! trees: each invocation's running softmax state is merged once at the end. Rows whose keys fit
//! in a few chunks are finished by one workgroup; longer rows split their keys across
//! workgroups whose records `attention_combine.wgsl` merges (flash-decoding).
//!
//! H200, `bitnet-bench` decode cases (2B4T: 20 query heads over 5 kv heads of 128) against
//! `attention.wgsl`'s per-(query, head) workgroups: see `docs/perf/decode-step.md`
//! ("Decode attention").

use bitnet_cpu_ref::ops::AttentionDims;
use bitnet_kernels_wgsl::tensor as kernels;

use super::attention::{CombineParams, Params};
use super::float_args;
use crate::context::Gpu;
use crate::engine::Engine;
use crate::error::Result;
use crate::launch::Launch;
use crate::pipelines::{Access, Kernel};
use crate::status::NonFiniteCheck;
use crate::tensor::{DType, Tensor};

use Access::{Read, ReadWrite};

/// q, k, v (all read as vec4), then the output or the records.
const ATTENTION_DECODE: Kernel = Kernel::new(
    kernels::ATTENTION_DECODE,
    "main",
    &[Read, Read, Read, ReadWrite],
);

/// Keys per chunk of the kernel.
const KEYS: u64 = kernels::ATTENTION_DECODE_KEYS as u64;
/// Rows attending at most this many chunks are walked whole by one workgroup per (row, kv head),
/// which writes the output: no records and no second dispatch (a decode step at a short
/// context).
const DIRECT_CHUNKS: u64 = 4;
/// The most records per (query, head) pair: longer rows walk more chunks per workgroup, so the
/// combine's in-order merge stays short.
const MAX_RECORDS: u64 = 32;
/// The most query heads per kv head (the kernel keeps a running state per head in registers).
const MAX_GROUP: usize = 8;

/// How a call runs on the decode kernel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct DecodePlan {
    /// Records per (query, head) pair; 0: each workgroup writes its rows' output itself.
    pub records: u32,
    /// Chunks of 64 keys per workgroup.
    pub walk: u32,
}

impl DecodePlan {
    /// Keys one record covers (the combine's `keys`).
    pub fn keys_per_record(&self) -> u32 {
        self.walk * KEYS as u32
    }

    /// Record bytes per query row (none when the kernel writes the output).
    pub fn record_row_bytes(&self, dims: &AttentionDims) -> u64 {
        4 * dims.hq as u64 * u64::from(self.records) * (dims.d as u64 + 2)
    }
}

/// `Params` of `attention_decode.wgsl`.
#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct DecodeParams {
    rows: u32,
    heads: u32,
    kv_heads: u32,
    attend0: u32,
    attend_step: u32,
    row_base: u32,
    q_shift: u32,
    records: u32,
    walk: u32,
    scale: f32,
    pad: [u32; 2],
}

/// Where a decode launch goes: the device, the `(offset, size)` binding of q's and the
/// output's rows, the call's chunk group, its non-finite check.
pub(super) type RowLaunch<'a> = (&'a Gpu, (u64, u64), u64, NonFiniteCheck);

impl Engine {
    /// Runs one query-row launch of `attention.wgsl`'s `params` on the decode kernel: its
    /// output straight into `out` (no records), or records merged into `out` by the combine
    /// (`combine`, with the plan's record count and keys per record).
    pub(super) fn attention_decode_rows(
        &self,
        (gpu, (off, size), group, check): RowLaunch,
        (q, k, v, out): (&Tensor, &Tensor, &Tensor, &Tensor),
        params: &Params,
        plan: DecodePlan,
        combine: CombineParams,
    ) -> Result<()> {
        const OP: &str = "attention";
        let launch = Launch::new(gpu, &ATTENTION_DECODE)
            .input_range(q, off, size)
            .input(k)
            .input(v)
            .params(&DecodeParams {
                rows: params.rows,
                heads: params.heads,
                kv_heads: params.kv_heads,
                attend0: params.attend0,
                attend_step: params.attend_step,
                row_base: params.row_base,
                q_shift: params.q_shift,
                records: plan.records,
                walk: plan.walk,
                scale: params.scale,
                pad: [0; 2],
            })
            .constant("DIM", f64::from(params.dim))
            .constant("GROUP", f64::from(params.heads / params.kv_heads))
            .chunk_of(group)
            .check_finite(check);
        let workgroups =
            u64::from(params.rows) * u64::from(params.kv_heads) * u64::from(plan.records.max(1));
        if plan.records == 0 {
            return launch
                .output_range(out, off, size)
                .workgroups(workgroups)
                .run();
        }
        let pairs = u64::from(params.rows) * u64::from(params.heads);
        let records = pairs * u64::from(plan.records) * (u64::from(params.dim) + 2);
        float_args::u32_indexable(OP, "the chunk records", records)?;
        let scratch = self.empty(gpu, OP, &[records as usize], DType::F32)?;
        launch.output(&scratch).workgroups(workgroups).run()?;
        let combine = CombineParams {
            chunks: plan.records,
            keys: plan.keys_per_record(),
            ..combine
        };
        self.combine(gpu, &scratch, out, (off, size), combine, group, check)
    }
}

/// The decode kernel's plan for `dims` on `gpu`, or `None` where it does not apply: a head
/// dimension other than 32, 64 or 128, more than 8 query heads per kv head, workgroup memory
/// beyond the device's, or (CPU adapters) loops that would not fit.
pub(super) fn decode_plan(gpu: &Gpu, dims: &AttentionDims) -> Option<DecodePlan> {
    let d = dims.d as u32;
    let group = dims.hq / dims.hkv;
    if ![32, 64, 128].contains(&d) || group > MAX_GROUP || dims.tq == 0 {
        return None;
    }
    let limit = gpu.caps.limits.max_compute_workgroup_storage_size;
    if kernels::attention_decode_workgroup_bytes(d, group as u32) > limit {
        return None;
    }
    // The longest row: the last one under the causal mask, every row without it.
    let chunks = (dims.attended(dims.tq - 1) as u64).div_ceil(KEYS);
    let plan = if chunks <= DIRECT_CHUNKS {
        DecodePlan {
            records: 0,
            walk: chunks as u32,
        }
    } else {
        let walk = chunks.div_ceil(MAX_RECORDS);
        DecodePlan {
            records: chunks.div_ceil(walk) as u32,
            walk: walk as u32,
        }
    };
    float_args::loops_fit(gpu, decode_loops(u64::from(d), group as u64, plan)).then_some(plan)
}

/// Loop iterations per invocation of the decode kernel (for [`float_args::loops_fit`]), each
/// loop's exit test counted: the q staging, per chunk the key and value loads, the score parts
/// (per round, per head), the key group's scores and weights, the value checks and the weighted
/// sums (per head); then the merge of the key groups and the division per owned vec4.
fn decode_loops(d: u64, group: u64, plan: DecodePlan) -> u64 {
    let (parts, keys_per_group, key_groups) = (d / 32, d / 16, 1024 / d);
    let owned = (group * d / 4).div_ceil(256);
    let per_chunk = 2 * (parts + 1)
        + (keys_per_group + 1)
        + 2 * (parts + 1 + group * (parts + 2))
        + 2 * (keys_per_group + 1)
        + (keys_per_group + 1)
        + group * (keys_per_group + 2)
        + 4;
    let merge = owned * (2 * (key_groups + 1) + 4 * (float_args::DIV_LOOPS + 2));
    owned + 2 * group + u64::from(plan.walk.max(1)) * per_chunk + group + merge + 8
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dims(tq: usize, tk: usize, hq: usize, hkv: usize, d: usize) -> AttentionDims {
        AttentionDims {
            tq,
            tk,
            hq,
            hkv,
            d,
            causal: true,
        }
    }

    /// Short rows are finished by one workgroup; longer ones split into at most 32 records, each
    /// a whole number of chunks; odd head sizes and wide groups take the other kernels.
    #[test]
    fn decode_plans_records_and_walks() {
        let e = crate::test_gpu::gpu();
        let g = e.gpu_context().expect("a GPU engine");
        let plan = |d: AttentionDims| decode_plan(g, &d);
        let direct = |walk| Some(DecodePlan { records: 0, walk });
        assert_eq!(plan(dims(1, 1, 20, 5, 128)), direct(1));
        assert_eq!(plan(dims(1, 256, 20, 5, 128)), direct(4));
        assert_eq!(
            plan(dims(1, 257, 32, 8, 64)),
            Some(DecodePlan {
                records: 5,
                walk: 1
            })
        );
        assert_eq!(
            plan(dims(1, 4096, 20, 5, 128)),
            Some(DecodePlan {
                records: 32,
                walk: 2
            })
        );
        // 65 chunks: three per workgroup, 22 records.
        assert_eq!(
            plan(dims(1, 4160, 4, 4, 32)),
            Some(DecodePlan {
                records: 22,
                walk: 3
            })
        );
        assert_eq!(plan(dims(1, 64, 4, 4, 96)), None);
        assert_eq!(plan(dims(1, 64, 16, 1, 128)), None);
        assert_eq!(plan(dims(0, 64, 4, 1, 128)), None);
        // Per kv head: the q rows, 256 vec4 of scratch, 64 weights; plus three 1 KiB arrays and
        // eight head maxima.
        assert_eq!(kernels::attention_decode_workgroup_bytes(128, 4), 22560);
        assert!(kernels::attention_decode_workgroup_bytes(128, 2) <= 16384);
    }
}
