//! Loop iterations of one invocation of the BitNet kernels, for CPU adapters: lavapipe
//! (llvmpipe's loop limiter) ends a shader's loops after 65 535 iterations in all, with no error
//! (`float_args::loops_fit`), and these kernels loop over K inside one invocation.
//!
//! The estimates count what lavapipe counts: every traversal of every loop, and a WGSL loop's
//! exit test is one more traversal (its lanes leave the loop masked, the loop ends a traversal
//! later), so a loop of `n` trips costs `n + 1`. Measured on lavapipe: activation quantization
//! with K % 4 != 0 returned truncated rows from K = 14M (K = 8M held).

use bitnet_cpu_ref::layout::activation_words_per_row;

use super::float_args::DIV_LOOPS;

/// Traversals of a loop over `items` with stride `step` (its trips and the exit test).
fn walk(items: u64, step: u64) -> u64 {
    items.div_ceil(step.max(1)) + 1
}

/// Iterations of one invocation of activation quantization of rows of `k` values
/// (`act_quant_vec4.wgsl` for K % 4 == 0, its longest rows with 256 threads per row and 16
/// registers each; `act_quant.wgsl` otherwise, one 256-thread workgroup per row).
pub(crate) fn act_quant_loops(k: usize) -> u64 {
    let k = k as u64;
    let words = activation_words_per_row(k as usize) as u64;
    let fixed = 2 * 17 + DIV_LOOPS;
    if k.is_multiple_of(4) {
        // Past the 16 registers of 256 threads: the absmax rest (4 loads a step), the pack rest.
        let kv = k / 4;
        let rest = kv.saturating_sub(16 * 256);
        walk(rest, 4 * 256) + walk(words.saturating_sub(16 * 256), 256) + fixed
    } else {
        walk(k, 256) + walk(words, 256) + fixed
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The estimate reaches the limit where lavapipe's results broke (K = 14M) and stays within
    /// it where they held (8M); the vec4 quantizer never reaches it below cpu-ref's K < 2^24.
    #[test]
    fn estimates_bracket_the_measured_limits() {
        const LIMIT: u64 = 65_535;
        assert!(act_quant_loops(14_000_001) > LIMIT);
        assert!(act_quant_loops(8_000_001) <= LIMIT);
        assert!(act_quant_loops((1 << 24) - 64) <= LIMIT);
    }
}
