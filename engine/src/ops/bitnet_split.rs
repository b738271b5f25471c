//! Split-K GEMMs: a BitLinear GEMM whose grid is too small to fill the GPU takes as long as one
//! workgroup's walk over K, however few tiles there are. Splitting K into `splits` slices (the
//! grid's z) multiplies the workgroups and divides that walk: each slice writes its exact i32
//! accumulators to its own `[M, N]` plane of a scratch tensor, and `bitlinear_split_sum` adds the
//! planes (exact integers, so in any order) and rescales them exactly as the unsplit GEMM does —
//! the same bits.

use bitnet_kernels_wgsl::bitnet as kernels;

use super::bitnet::{chunk_limit, scale_rows};
use super::bitnet_record::{LinearCall, LinearParams, OUTPUT};
use crate::context::Gpu;
use crate::error::Result;
use crate::launch::Launch;
use crate::pipelines::{Access, Kernel};
use crate::status::NonFiniteCheck;
use crate::tensor::{DType, Tensor};

use Access::{Read, ReadWrite};

/// K slices a GEMM plan may use (1 = no split).
pub const K_SPLITS: [u32; 4] = [1, 2, 4, 8];

/// Largest scratch tensor of a split (`splits · M · N` accumulators).
const SCRATCH_MAX_BYTES: u64 = 256 << 20;

/// weight scale, activation absmax, the slices' accumulators, output.
const SPLIT_SUM: Kernel = Kernel::new(
    kernels::BITLINEAR_SPLIT_SUM,
    "main",
    &[Read, Read, Read, ReadWrite],
);

/// Whether a GEMM of `m × n` outputs can split K into `splits` slices on `gpu`: a [`K_SPLITS`]
/// value whose scratch (`splits · M · N` words) fits one binding and [`SCRATCH_MAX_BYTES`].
pub(crate) fn split_ok(gpu: &Gpu, splits: u32, m: usize, n: usize) -> bool {
    let bytes = 4 * u64::from(splits) * m as u64 * n as u64;
    K_SPLITS.contains(&splits)
        && (splits == 1 || (bytes <= chunk_limit(gpu) && bytes <= SCRATCH_MAX_BYTES))
}

/// Whether splitting K of length `k` into `splits` slices leaves each slice enough work to be
/// worth a candidate: at least 4 K steps of 64 per slice.
pub(crate) fn split_worth(splits: u32, k: usize) -> bool {
    splits == 1 || (k as u64).div_ceil(64) >= 4 * u64::from(splits)
}

/// The scratch tensor of one M chunk of `rows` rows: `splits` planes of `[rows, N]` words.
pub(crate) fn partials(gpu: &Gpu, call: &LinearCall<'_>, splits: u32, rows: u64) -> Result<Tensor> {
    let n = call.shape.1;
    let shape = [splits as usize * rows as usize, n];
    call.out.engine().empty(gpu, call.op, &shape, DType::U32)
}

/// Records the sum of `partials` (the K slices of rows `first .. first + rows` of the call) into
/// the call's output: y, checked for non-finite values where the call checks, or the exact
/// accumulators. `group`: the call's chunk group (`Launch::chunk_of`).
pub(crate) fn record_sum(
    gpu: &Gpu,
    call: &LinearCall<'_>,
    partials: &Tensor,
    (first, rows): (u64, u64),
    group: u64,
) -> Result<()> {
    let n = call.shape.1 as u64;
    let x_scales = scale_rows(gpu, &(first..first + rows));
    let params = LinearParams {
        m: rows as u32,
        n: n as u32,
        words_per_row: 0,
        out_stride: n as u32,
        out_base: 0,
        mode: u32::from(call.acc),
        tiles_n: 0,
        m_base: x_scales.base,
        zero: 0,
        k_splits: call.plan.k_splits(),
    };
    let mut launch = Launch::new(gpu, &SPLIT_SUM)
        .input_scales(call.w)
        .input_scales_range(call.x, x_scales.offset, x_scales.size)
        .input(partials)
        .output_range(call.out, 4 * n * first, 4 * n * rows)
        .params(&params)
        .workgroups((rows * n).div_ceil(256))
        .chunk_of(group);
    if call.check && !call.acc {
        launch = launch.check_finite(NonFiniteCheck::new(call.op, OUTPUT).at(first * n));
    }
    launch.run()
}
