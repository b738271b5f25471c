//! The canonical absolute-value sum of `layout.rs`: a fixed, GPU-friendly summation order, so the
//! weight scale (and hence every quantized weight) is identical on every backend.

use rayon::prelude::*;

use crate::kernels::{Isa, float};
use crate::layout::{SUM_BLOCK, SUM_LANES};

/// Blocks per rayon task: below this many blocks a level is summed on the calling thread.
const PAR_MIN_BLOCKS: usize = 16;

/// `Σ |v|` in the canonical order of `layout.rs`: blocks of 4096 (last one zero-padded), 256 lanes
/// per block each summing 16 values with stride 256 sequentially from `0.0`, a pairwise tree over
/// the lanes (strides 128, 64, …, 1), then the same again over the block sums until one value
/// remains. An empty slice sums to `0.0`.
///
/// Infallible by design (GPU kernels replicate it); a NaN or infinity in `values`, or an overflow,
/// shows up as a non-finite result, which callers such as
/// [`quantize_weights`](crate::quantize_weights) turn into an error.
pub fn canonical_abs_sum(values: &[f32]) -> f32 {
    canonical_abs_sum_with_isa(values, Isa::best())
}

/// [`canonical_abs_sum`] on a chosen SIMD level; every level returns the same bits.
/// An unavailable level falls back to [`Isa::Scalar`].
pub fn canonical_abs_sum_with_isa(values: &[f32], isa: Isa) -> f32 {
    if values.is_empty() {
        return 0.0;
    }
    let mut level = block_sums(values, isa);
    while level.len() > 1 {
        // Block sums are >= 0 (or NaN), so taking their absolute value again changes nothing.
        level = block_sums(&level, isa);
    }
    level[0]
}

/// One level of the order: the sum of every 4096-value block of `values`.
fn block_sums(values: &[f32], isa: Isa) -> Vec<f32> {
    let one = |chunk: &[f32]| block_sum(chunk, isa);
    if values.len() >= PAR_MIN_BLOCKS * SUM_BLOCK {
        values.par_chunks(SUM_BLOCK).map(one).collect()
    } else {
        values.chunks(SUM_BLOCK).map(one).collect()
    }
}

/// The sum of one block (`chunk.len() <= 4096`, zero-padded to 4096).
fn block_sum(chunk: &[f32], isa: Isa) -> f32 {
    let mut lanes = [0.0f32; SUM_LANES];
    if chunk.len() == SUM_BLOCK {
        float::lane_abs_sums(chunk, &mut lanes, isa);
    } else {
        let mut padded = [0.0f32; SUM_BLOCK];
        padded[..chunk.len()].copy_from_slice(chunk);
        float::lane_abs_sums(&padded, &mut lanes, isa);
    }
    float::lane_tree(&mut lanes, isa)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The written order of `layout.rs`, emulated literally (one value at a time).
    fn emulate(values: &[f32]) -> f32 {
        let mut level: Vec<f32> = values.iter().map(|v| v.abs()).collect();
        if level.is_empty() {
            return 0.0;
        }
        loop {
            let mut next = Vec::new();
            for block in level.chunks(4096) {
                let e = |i: usize| block.get(i).copied().unwrap_or(0.0);
                let mut p = [0.0f32; 256];
                for (t, lane) in p.iter_mut().enumerate() {
                    for r in 0..16 {
                        *lane += e(t + 256 * r);
                    }
                }
                let mut stride = 128;
                while stride >= 1 {
                    for t in 0..stride {
                        p[t] += p[t + stride];
                    }
                    stride /= 2;
                }
                next.push(p[0]);
            }
            if next.len() == 1 {
                return next[0];
            }
            level = next;
        }
    }

    /// Deterministic pseudo-random values of both signs and varied magnitude.
    fn values(n: usize) -> Vec<f32> {
        let mut s = 0x9E37_79B9u32;
        (0..n)
            .map(|_| {
                s ^= s << 13;
                s ^= s >> 17;
                s ^= s << 5;
                (s as f32 / u32::MAX as f32 - 0.5) * 3.0
            })
            .collect()
    }

    #[test]
    fn matches_written_order_and_f64_sum() {
        for n in [0, 1, 4095, 4096, 4097, 3 * 4096 * 4096 + 5] {
            let v = values(n);
            let exact: f64 = v.iter().map(|x| f64::from(x.abs())).sum();
            let want = emulate(&v);
            for isa in Isa::available() {
                let got = canonical_abs_sum_with_isa(&v, isa);
                assert_eq!(got.to_bits(), want.to_bits(), "n = {n}, {isa:?}");
            }
            // Every partial sum is rounded once per add; with at most 16 + 12 + 12 + ... adds on
            // any path the relative error stays far below 1e-5.
            let rel = (f64::from(want) - exact).abs() / exact.max(1e-30);
            assert!(rel < 1e-5, "n = {n}: rel error {rel}");
        }
    }

    #[test]
    fn hand_computed_small_sums() {
        // |1| + |-2| + |0.5| = 3.5 (lanes 0, 1, 2; the tree adds exact values).
        assert_eq!(canonical_abs_sum(&[1.0, -2.0, 0.5]), 3.5);
        // 4097 ones: block 0 sums to 4096 and block 1 to 1; the second level adds them: 4097.
        assert_eq!(canonical_abs_sum(&vec![1.0; 4097]), 4097.0);
        assert_eq!(canonical_abs_sum(&[]), 0.0);
        // The order is observable: lane 0 holds 1e8, lane 1 sums sixteen ones (v[1 + 256 r]) to
        // 16 exactly, and the last tree step adds 1e8 + 16 = 100000016 (representable: the f32
        // spacing at 1e8 is 8). A sequential sum would give 1e8, each +1 being rounded away.
        let mut v = vec![0.0f32; 4096];
        v[0] = 1e8;
        for r in 0..16 {
            v[1 + 256 * r] = 1.0;
        }
        assert_eq!(canonical_abs_sum(&v), 100_000_016.0);
    }
}
