// util_copy_blocks: a strided copy of 32-bit words — `blocks` runs of `block_words` consecutive
// words, run b read from src[src_base + b * src_stride ..] and written to
// dst[dst_base + b * dst_stride ..].
//
// Why one kernel: slicing a row-major tensor along any axis, concatenating tensors along any
// axis, and appending rows to a preallocated KV cache are all this copy (outer dimensions =
// blocks, the axis and everything after it = one run). It moves bits: nothing is converted or
// checked (a non-finite value is reported by the op that computes with it), so any 4-byte dtype
// copies the same way. The bases are parameters, not binding offsets, so a destination run may
// start at any word (binding offsets need 256-byte alignment).
//
// Each invocation copies PER_THREAD words 256 apart, all loads before any store (see
// util_copy.wgsl; indexing in util_copy_blocks_common.wgsl): a workgroup covers 1024 words of
// the flattened runs. util_copy_blocks_pair.wgsl does two such copies in one dispatch. Dispatch:
// ceil(blocks * block_words / 1024) workgroups, folded into x and y.

struct Params {
    // Runs, and words per run; blocks * block_words fits u32 (the engine splits larger copies).
    blocks: u32,
    block_words: u32,
    // First word of run 0, and words from one run's start to the next, in each binding.
    src_base: u32,
    src_stride: u32,
    dst_base: u32,
    dst_stride: u32,
}

@group(0) @binding(0) var<storage, read> src: array<u32>;
@group(0) @binding(1) var<storage, read_write> dst: array<u32>;
@group(1) @binding(0) var<uniform> params: Params;

@compute @workgroup_size(256)
fn main(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    let first = (wid.x + wid.y * nwg.x) * (256u * PER_THREAD) + lid;
    let n = params.blocks * params.block_words;
    var w = vec4<u32>();
    for (var r = 0u; r < PER_THREAD; r++) {
        let i = first + r * 256u;
        if i < n {
            w[r] = src[run_word(i, params.block_words, params.src_base, params.src_stride)];
        }
    }
    for (var r = 0u; r < PER_THREAD; r++) {
        let i = first + r * 256u;
        if i < n {
            dst[run_word(i, params.block_words, params.dst_base, params.dst_stride)] = w[r];
        }
    }
}
