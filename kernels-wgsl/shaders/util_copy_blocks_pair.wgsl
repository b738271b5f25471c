// util_copy_blocks_pair: two independent strided word copies (util_copy_blocks.wgsl's) in one
// dispatch — src0 → dst0 and src1 → dst1, each with its own runs, bases and strides.
//
// Why: a KV-cache append writes a step's keys and its values, two copies of the same shape into
// two buffers; as one dispatch the step pays one barrier and one recording instead of two. The
// engine fuses two copies only when each fits one launch and no source shares a buffer with a
// destination (a buffer bound for reading and for writing in one dispatch is invalid);
// otherwise it launches util_copy_blocks.wgsl per copy.
//
// The grid is copy 0's workgroups then copy 1's: workgroup g < groups0 copies words
// g * 1024 .. of copy 0, the others words (g - groups0) * 1024 .. of copy 1 (every workgroup runs
// one copy: no divergence). Per workgroup, as util_copy_blocks.wgsl: PER_THREAD words 256 apart,
// all loads before any store. Dispatch: groups0 + ceil(words of copy 1 / 1024) workgroups, folded
// into x and y (the extra workgroups of the fold fall past copy 1's words and do nothing).

struct Params {
    // Copy 0: runs, words per run, run 0's first word and the run stride in src0 and in dst0.
    blocks0: u32,
    block_words0: u32,
    src_base0: u32,
    src_stride0: u32,
    dst_base0: u32,
    dst_stride0: u32,
    // The same for copy 1 (src1 → dst1).
    blocks1: u32,
    block_words1: u32,
    src_base1: u32,
    src_stride1: u32,
    dst_base1: u32,
    dst_stride1: u32,
    // Workgroups of copy 0: ceil(blocks0 * block_words0 / 1024).
    groups0: u32,
    _pad0: u32,
    _pad1: u32,
    _pad2: u32,
}

@group(0) @binding(0) var<storage, read> src0: array<u32>;
@group(0) @binding(1) var<storage, read> src1: array<u32>;
@group(0) @binding(2) var<storage, read_write> dst0: array<u32>;
@group(0) @binding(3) var<storage, read_write> dst1: array<u32>;
@group(1) @binding(0) var<uniform> params: Params;

// One copy's runs: words per run, run 0's first word and the run stride on each side.
struct Runs {
    words: u32,
    block_words: u32,
    src_base: u32,
    src_stride: u32,
    dst_base: u32,
    dst_stride: u32,
}

@compute @workgroup_size(256)
fn main(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    let g = wid.x + wid.y * nwg.x;
    // Uniform per workgroup: which copy, and which of its words.
    let second = g >= params.groups0;
    var c = Runs(params.blocks0 * params.block_words0, params.block_words0, params.src_base0,
        params.src_stride0, params.dst_base0, params.dst_stride0);
    if second {
        c = Runs(params.blocks1 * params.block_words1, params.block_words1, params.src_base1,
            params.src_stride1, params.dst_base1, params.dst_stride1);
    }
    let first = (g - select(0u, params.groups0, second)) * (256u * PER_THREAD) + lid;
    var w = vec4<u32>();
    for (var r = 0u; r < PER_THREAD; r++) {
        let i = first + r * 256u;
        if i < c.words {
            let j = run_word(i, c.block_words, c.src_base, c.src_stride);
            if second {
                w[r] = src1[j];
            } else {
                w[r] = src0[j];
            }
        }
    }
    for (var r = 0u; r < PER_THREAD; r++) {
        let i = first + r * 256u;
        if i < c.words {
            let j = run_word(i, c.block_words, c.dst_base, c.dst_stride);
            if second {
                dst1[j] = w[r];
            } else {
                dst0[j] = w[r];
            }
        }
    }
}
