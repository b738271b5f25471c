// Weight quantization reading w once, dispatch 3 of 3, for K % 16 == 0: re-packs, with the final
// s, the words dispatch 2 (weight_quant_once.wgsl) listed as holding a code that differed across
// the band — or every word, where s left the band or the list overflowed. Each lane re-reads a
// word's 16 weights (four float vec4) and packs them exactly as weight_quant_pack_vec4.wgsl
// does. Lane i of the grid takes entries (or words) i, i + lanes, ... Needs exact_div.wgsl,
// weight_quant_pack_common.wgsl and weight_quant_once_common.wgsl (prepended by bitnet.rs).

struct Params {
    // Packed words (N * K / 16).
    words: u32,
    // Room in the uncertain-word list.
    capacity: u32,
    // ceil(N K / 4096): where the list starts after the block sums.
    blocks: u32,
    // Always 0: the runtime zero of pack_factors' optimization barrier.
    zero: u32,
}

@group(0) @binding(0) var<storage, read> weights: array<vec4<f32>>;
@group(0) @binding(1) var<storage, read> scale: array<f32>;
@group(0) @binding(2) var<storage, read_write> packed: array<u32>;
@group(0) @binding(3) var<storage, read_write> scratch: array<atomic<u32>>;
@group(1) @binding(0) var<uniform> params: Params;

fn pack_word(w: u32, f: vec2<f32>) {
    let v = 4u * w;
    packed[w] = group_bits(weights[v], v, f) | group_bits(weights[v + 1u], v + 1u, f)
        | group_bits(weights[v + 2u], v + 2u, f) | group_bits(weights[v + 3u], v + 3u, f);
}

@compute @workgroup_size(256)
fn main(
    @builtin(global_invocation_id) gid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
) {
    let lanes = nwg.x * 256u;
    let f = pack_factors(scale[0]);
    if (atomicLoad(&scratch[SCRATCH_MODE]) == MODE_LIST) {
        let listed = min(atomicLoad(&scratch[SCRATCH_UNCERTAIN]), params.capacity);
        for (var i = gid.x; i < listed; i = i + lanes) {
            pack_word(atomicLoad(&scratch[SCRATCH_SUMS + params.blocks + i]), f);
        }
        return;
    }
    for (var w = gid.x; w < params.words; w = w + lanes) {
        pack_word(w, f);
    }
}
