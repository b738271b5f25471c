//! Engine utility kernels: buffer fill, checked copy and strided block copy (single and paired). They also serve as the reference example of
//! the engine's kernel conventions (bindings, params, linear grid, non-finite flag).

use crate::KernelSource;

/// Fills `n` `u32` words with one value. Bindings: 0 = `dst` (read_write). Params: `{ n, value }`.
pub const FILL: KernelSource = KernelSource {
    name: "util_fill",
    source: include_str!("../shaders/util_fill.wgsl"),
};

/// Copies `n` `f32` values, flagging the first non-finite input. Bindings: 0 = `src` (read),
/// 1 = `dst` (read_write). Params: `{ n }`.
pub const COPY: KernelSource = KernelSource {
    name: "util_copy",
    source: include_str!("../shaders/util_copy.wgsl"),
};

/// Strided copy of 32-bit words: `blocks` runs of `block_words` words from `src` to `dst`, each
/// side with its own base and run stride (slice, concat, KV-cache append). Bindings: 0 = `src`
/// (read), 1 = `dst` (read_write). Params: `{ blocks, block_words, src_base, src_stride,
/// dst_base, dst_stride }`, in words. Grid: `ceil(blocks * block_words / 1024)`.
pub const COPY_BLOCKS: KernelSource = KernelSource {
    name: "util_copy_blocks",
    source: concat!(
        include_str!("../shaders/util_copy_blocks_common.wgsl"),
        "\n",
        include_str!("../shaders/util_copy_blocks.wgsl")
    ),
};

/// Two independent [`COPY_BLOCKS`] copies in one dispatch (a KV-cache append's keys and values).
/// Bindings: 0 = `src0`, 1 = `src1` (read), 2 = `dst0`, 3 = `dst1` (read_write). Params: copy 0's
/// six [`COPY_BLOCKS`] params, copy 1's, then `groups0` (copy 0's workgroups) and three pad
/// words. Grid: `groups0 + ceil(words of copy 1 / 1024)`, copy 0's workgroups first.
pub const COPY_BLOCKS_PAIR: KernelSource = KernelSource {
    name: "util_copy_blocks_pair",
    source: concat!(
        include_str!("../shaders/util_copy_blocks_common.wgsl"),
        "\n",
        include_str!("../shaders/util_copy_blocks_pair.wgsl")
    ),
};

/// Marks the engine's bound status slot clean. No group-0 bindings, no params.
pub const STATUS_RESET: KernelSource = KernelSource {
    name: "status_reset",
    source: include_str!("../shaders/status_reset.wgsl"),
};

/// Copies up to 16 status slots out and marks them clean: slot 0 is the engine's group-1 status
/// binding, slots 1 .. 15 group-0 bindings 0 .. 14 (read_write), binding 15 = `out`
/// (read_write, `4 * slots` words). Grid: one workgroup per slot. No params.
pub const STATUS_GATHER: KernelSource = KernelSource {
    name: "status_gather",
    source: include_str!("../shaders/status_gather.wgsl"),
};

/// Checks the subgroup layout the subgroup kernels assume (vt = subgroup_id × size + lane is a
/// bijection, subgroups full and named alike, shuffles address that lane) on the device itself.
/// Standalone (no engine params or status): binding 0 = `words` (read_write, 257 zeroed words
/// per workgroup: a hit count per vt, then violation flags). Grid: any number of workgroups.
/// Override `SKEW` (tests): 1, 2 or 3 simulates a broken layout.
pub const SUBGROUP_LAYOUT_PROBE: KernelSource = KernelSource {
    name: "subgroup_layout_probe",
    source: include_str!("../shaders/subgroup_layout_probe.wgsl"),
};

/// Every utility kernel of this module.
pub const ALL: &[KernelSource] = &[
    FILL,
    COPY,
    COPY_BLOCKS,
    COPY_BLOCKS_PAIR,
    STATUS_RESET,
    STATUS_GATHER,
    SUBGROUP_LAYOUT_PROBE,
];
