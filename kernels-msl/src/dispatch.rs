//! Params and grids of every kernel, with the shape checks that keep each kernel exact.
//!
//! Each function returns the 16-byte params struct the kernel declares (four `u32`, set as wgpu
//! immediates) and its grid, or a [`DispatchError`] for a shape the kernel cannot handle: a zero
//! dimension, K above a kernel's limit, a flattened size beyond `u32` indexing, or a grid
//! dimension above 65535 (WebGPU's guaranteed `max_compute_workgroups_per_dimension`).

use crate::error::DispatchError;

/// Values per block of the canonical absolute-value sum (`layout::SUM_BLOCK`).
pub const SUM_BLOCK: u64 = 4096;
/// Largest K of [`bitlinear_gemv`]: the quantized row lives in a 16 KiB threadgroup array.
pub const GEMV_MAX_K: usize = 16384;
/// Weight rows per threadgroup of [`bitlinear_gemv`].
pub const GEMV_ROWS_PER_GROUP: usize = 32;
/// Largest K of [`bitlinear_gemm`]: every f32 partial sum is an exact integer while
/// `128 · K < 2^24`.
pub const GEMM_MAX_K: usize = 131_071;
/// Output tile edge (M and N) of [`bitlinear_gemm`].
pub const GEMM_TILE: usize = 32;
/// Largest K of the quantizers (`bitnet_cpu_ref` rejects `K >= 2^24`).
pub const QUANT_MAX_K: usize = (1 << 24) - 1;
/// Largest flattened size (elements or words) of any buffer: kernels index with `u32`, and a
/// folded linear grid may overshoot by up to one row of threadgroups, so half the range is kept.
pub const MAX_ELEMENTS: u64 = i32::MAX as u64;
/// Largest grid dimension every WebGPU device supports.
pub const MAX_GRID_DIM: usize = 65_535;

/// What the BitLinear kernels write to `y`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum OutputMode {
    /// `y = float(acc) · ((s · a_m) · INV_127)`, as `bitnet_cpu_ref::bitlinear`.
    #[default]
    Scaled = 0,
    /// `y` holds the exact `i32` accumulators' bits, as `bitnet_cpu_ref::bitlinear_accumulate`.
    Accumulators = 1,
}

/// How many threadgroups to launch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Workgroups {
    /// A linear count: the kernel linearizes `group.x + group.y · groups.x` and ignores extra
    /// groups, so the launcher may fold it into x and y (the engine's `Launch::workgroups`).
    Linear(u64),
    /// An exact 3-D grid (the engine's `Launch::grid`).
    Grid([u32; 3]),
}

/// One launch: the params struct and the grid.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Dispatch {
    /// The kernel's params struct as four `u32` (field order of the `.metal` struct).
    pub params: [u32; 4],
    /// The grid.
    pub workgroups: Workgroups,
}

impl Dispatch {
    /// The params as the little-endian bytes the kernel reads.
    pub fn params_bytes(&self) -> [u8; 16] {
        let mut out = [0u8; 16];
        for (chunk, word) in out.chunks_exact_mut(4).zip(self.params) {
            chunk.copy_from_slice(&word.to_le_bytes());
        }
        out
    }
}

/// Rejects a zero dimension.
fn nonzero(kernel: &'static str, dim: &'static str, v: usize) -> Result<(), DispatchError> {
    if v == 0 {
        Err(DispatchError::ZeroDimension { kernel, dim })
    } else {
        Ok(())
    }
}

/// Rejects `value > max`.
fn at_most(
    kernel: &'static str,
    what: &'static str,
    value: u64,
    max: u64,
) -> Result<(), DispatchError> {
    if value > max {
        Err(DispatchError::TooLarge {
            kernel,
            what,
            value,
            max,
        })
    } else {
        Ok(())
    }
}

/// `a · b` as u64 (saturating: anything that saturates is rejected anyway).
fn product(a: usize, b: usize) -> u64 {
    (a as u64).saturating_mul(b as u64)
}

/// `u32` words per packed ternary row: `ceil(k / 16)`.
fn words_per_row(k: usize) -> usize {
    k.div_ceil(16)
}

/// The input count of each level of [`abs_sum_level`] for `count` values: `count`, then the
/// number of block sums of the previous level, until a level produces a single value.
pub fn abs_sum_levels(count: usize) -> Result<Vec<usize>, DispatchError> {
    abs_sum_level(count, true)?;
    let mut levels = vec![count];
    let mut n = count;
    while n as u64 > SUM_BLOCK {
        n = n.div_ceil(SUM_BLOCK as usize);
        levels.push(n);
    }
    Ok(levels)
}

/// One level of [`crate::ABS_SUM_BLOCKS`] over `count` values (`first`: the weights themselves,
/// whose NaN/inf are flagged). Output: `ceil(count / 4096)` sums.
pub fn abs_sum_level(count: usize, first: bool) -> Result<Dispatch, DispatchError> {
    const K: &str = "abs_sum_blocks";
    nonzero(K, "count", count)?;
    // Block bases and per-thread indices stay below 2^32.
    at_most(K, "count", count as u64, (1u64 << 32) - SUM_BLOCK)?;
    Ok(Dispatch {
        params: [count as u32, u32::from(first), 0, 0],
        workgroups: Workgroups::Linear((count as u64).div_ceil(SUM_BLOCK)),
    })
}

/// [`crate::QUANTIZE_WEIGHTS`] for an `[n, k]` weight matrix (after [`abs_sum_levels`]).
pub fn quantize_weights(n: usize, k: usize) -> Result<Dispatch, DispatchError> {
    const K: &str = "quantize_weights";
    nonzero(K, "N", n)?;
    nonzero(K, "K", k)?;
    at_most(K, "K", k as u64, QUANT_MAX_K as u64)?;
    at_most(K, "N * K", product(n, k), MAX_ELEMENTS)?;
    let words = product(n, words_per_row(k));
    // (N·K) rounded to f32 exactly as bitnet-cpu-ref computes the count.
    let count = (n as u64 * k as u64) as f32;
    Ok(Dispatch {
        params: [n as u32, k as u32, count.to_bits(), 0],
        workgroups: Workgroups::Linear(words.div_ceil(256)),
    })
}

/// [`crate::QUANTIZE_ACTIVATIONS`] for `[rows, k]` activations.
pub fn quantize_activations(rows: usize, k: usize) -> Result<Dispatch, DispatchError> {
    const K: &str = "quantize_activations";
    nonzero(K, "M", rows)?;
    nonzero(K, "K", k)?;
    at_most(K, "K", k as u64, QUANT_MAX_K as u64)?;
    at_most(K, "M * K", product(rows, k), MAX_ELEMENTS)?;
    at_most(
        K,
        "M * packed words per row",
        product(rows, 4 * words_per_row(k)),
        MAX_ELEMENTS,
    )?;
    Ok(Dispatch {
        params: [rows as u32, k as u32, 0, 0],
        workgroups: Workgroups::Linear(rows as u64),
    })
}

/// Shape checks shared by both BitLinear kernels.
fn bitlinear_checks(
    kernel: &'static str,
    m: usize,
    n: usize,
    k: usize,
    max_k: usize,
) -> Result<(), DispatchError> {
    nonzero(kernel, "M", m)?;
    nonzero(kernel, "N", n)?;
    nonzero(kernel, "K", k)?;
    at_most(kernel, "K", k as u64, max_k as u64)?;
    at_most(
        kernel,
        "M * K (padded to 16)",
        product(m, 16 * words_per_row(k)),
        MAX_ELEMENTS,
    )?;
    at_most(
        kernel,
        "N * words per row",
        product(n, words_per_row(k)),
        MAX_ELEMENTS,
    )?;
    at_most(kernel, "M * N", product(m, n), MAX_ELEMENTS)
}

/// [`crate::BITLINEAR_GEMV`]: `y[m, n]` for f32 activations `[m, k]` and packed weights `[n, k]`.
pub fn bitlinear_gemv(
    m: usize,
    n: usize,
    k: usize,
    mode: OutputMode,
) -> Result<Dispatch, DispatchError> {
    const K: &str = "bitlinear_gemv";
    bitlinear_checks(K, m, n, k, GEMV_MAX_K)?;
    let gx = n.div_ceil(GEMV_ROWS_PER_GROUP);
    at_most(K, "ceil(N / 32) (grid x)", gx as u64, MAX_GRID_DIM as u64)?;
    at_most(K, "M (grid y)", m as u64, MAX_GRID_DIM as u64)?;
    Ok(Dispatch {
        params: [m as u32, n as u32, k as u32, mode as u32],
        workgroups: Workgroups::Grid([gx as u32, m as u32, 1]),
    })
}

/// [`crate::BITLINEAR_GEMM`]: `y[m, n]` for packed activations `[m, k]` (from
/// [`quantize_activations`]) and packed weights `[n, k]`.
pub fn bitlinear_gemm(
    m: usize,
    n: usize,
    k: usize,
    mode: OutputMode,
) -> Result<Dispatch, DispatchError> {
    const K: &str = "bitlinear_gemm";
    bitlinear_checks(K, m, n, k, GEMM_MAX_K)?;
    let gx = n.div_ceil(GEMM_TILE);
    let gy = m.div_ceil(GEMM_TILE);
    at_most(K, "ceil(N / 32) (grid x)", gx as u64, MAX_GRID_DIM as u64)?;
    at_most(K, "ceil(M / 32) (grid y)", gy as u64, MAX_GRID_DIM as u64)?;
    Ok(Dispatch {
        params: [m as u32, n as u32, k as u32, mode as u32],
        workgroups: Workgroups::Grid([gx as u32, gy as u32, 1]),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn levels_reduce_to_one_value() {
        assert_eq!(abs_sum_levels(1).unwrap(), vec![1]);
        assert_eq!(abs_sum_levels(4096).unwrap(), vec![4096]);
        assert_eq!(abs_sum_levels(4097).unwrap(), vec![4097, 2]);
        assert_eq!(
            abs_sum_levels(4096 * 4096 + 1).unwrap(),
            vec![4096 * 4096 + 1, 4097, 2]
        );
    }

    #[test]
    fn params_and_grids() {
        let d = quantize_weights(3, 17).unwrap();
        assert_eq!(d.params, [3, 17, 51.0f32.to_bits(), 0]);
        assert_eq!(d.workgroups, Workgroups::Linear(1));
        let d = bitlinear_gemv(2, 67, 301, OutputMode::Accumulators).unwrap();
        assert_eq!(d.params, [2, 67, 301, 1]);
        assert_eq!(d.workgroups, Workgroups::Grid([3, 2, 1]));
        assert_eq!(&d.params_bytes()[4..8], &67u32.to_le_bytes());
        let d = bitlinear_gemm(33, 65, 45, OutputMode::Scaled).unwrap();
        assert_eq!(d.workgroups, Workgroups::Grid([3, 2, 1]));
    }

    #[test]
    fn bad_shapes_are_typed_errors() {
        assert_eq!(
            bitlinear_gemv(1, 0, 4, OutputMode::Scaled),
            Err(DispatchError::ZeroDimension {
                kernel: "bitlinear_gemv",
                dim: "N"
            })
        );
        assert!(matches!(
            bitlinear_gemv(1, 4, GEMV_MAX_K + 1, OutputMode::Scaled),
            Err(DispatchError::TooLarge { what: "K", .. })
        ));
        assert!(matches!(
            bitlinear_gemm(1, 4, GEMM_MAX_K + 1, OutputMode::Scaled),
            Err(DispatchError::TooLarge { what: "K", .. })
        ));
        assert!(matches!(
            bitlinear_gemv(70_000, 4, 16, OutputMode::Scaled),
            Err(DispatchError::TooLarge { .. })
        ));
        assert!(matches!(
            quantize_weights(1 << 20, 1 << 12),
            Err(DispatchError::TooLarge { .. })
        ));
        assert!(abs_sum_level(0, true).is_err());
        assert!(quantize_activations(1, 1 << 24).is_err());
    }
}
