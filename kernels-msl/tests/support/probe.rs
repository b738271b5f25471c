//! Test-only kernels: deliberately broken variants of shipped kernels, compiled into the harness
//! next to them, that show a check of the emulation catches the mistake it is there for.

use std::sync::LazyLock;

use bitnet_kernels_msl::{ABS_SUM_BLOCKS, MslKernel};

/// Every test-only kernel (the harness generator adds them after the shipped ones).
pub fn all() -> [&'static MslKernel; 1] {
    [abs_sum_assumes_zeroed()]
}

/// `abs_sum_blocks`, except that each lane adds its sum to `partial[t]` instead of storing it:
/// right when threadgroup memory starts zeroed (as WGSL guarantees), wrong on Metal, where it
/// starts uninitialized. The emulation's threadgroup poison must make it fail.
pub fn abs_sum_assumes_zeroed() -> &'static MslKernel {
    static KERNEL: LazyLock<MslKernel> = LazyLock::new(|| {
        let source = replace_once(
            ABS_SUM_BLOCKS.source,
            "kernel void abs_sum_blocks(",
            "kernel void abs_sum_blocks_assumes_zeroed(",
        );
        let source = replace_once(
            &source,
            "    partial[t] = acc;\n",
            "    partial[t] = exact_abs_add(partial[t], acc);\n",
        );
        MslKernel {
            name: "abs_sum_blocks_assumes_zeroed_msl",
            entry_point: "abs_sum_blocks_assumes_zeroed",
            source: Box::leak(source.into_boxed_str()),
            ..ABS_SUM_BLOCKS
        }
    });
    &KERNEL
}

/// `text` with its single occurrence of `from` replaced (panics otherwise, so a change to the
/// shipped kernel cannot silently turn the probe into a copy of it).
fn replace_once(text: &str, from: &str, to: &str) -> String {
    assert_eq!(
        text.matches(from).count(),
        1,
        "probe: {from:?} must occur exactly once"
    );
    text.replacen(from, to, 1)
}
