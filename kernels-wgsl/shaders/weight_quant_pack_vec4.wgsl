// Weight quantization, pass (b), for K % 16 == 0: quantize and pack with coalesced vec4 loads.
//
// With K a multiple of 16 every packed word j of row n holds the 16 consecutive floats
// 16 (n * words_per_row + j) .. + 15 of the flat matrix, so the matrix is one flat sequence of
// words (`group_bits`, weight_quant_pack_common.wgsl). Consecutive threads load consecutive vec4;
// each thread turns its vec4 into the group's bits, parks them in workgroup memory, and after one
// barrier each thread ORs the four groups of one word. Needs exact_div.wgsl and
// weight_quant_pack_common.wgsl (prepended by bitnet.rs).

struct Params {
    // Rows in this dispatch (the host chunks large matrices over rows).
    rows: u32,
    // K: weights per row (a multiple of 16).
    k: u32,
    // K / 16: packed words per row.
    words_per_row: u32,
    // Always 0: the runtime zero of the optimization barrier (the compiler cannot know it).
    zero: u32,
}

@group(0) @binding(0) var<storage, read> weights: array<vec4<f32>>;
// The scale s written by weight_quant_sum (the ternary tensor's scale buffer).
@group(0) @binding(1) var<storage, read> scale: array<f32>;
@group(0) @binding(2) var<storage, read_write> packed: array<u32>;
@group(1) @binding(0) var<uniform> params: Params;

const WORKGROUP: u32 = 256u;
// Float vec4 per thread (one per step), so a workgroup packs WORKGROUP words.
const STEPS: u32 = 4u;

// Group bits of each float vec4 of this workgroup, index = vec4 - first vec4.
var<workgroup> parts: array<u32, 1024>;

@compute @workgroup_size(256)
fn main(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) t: u32,
) {
    let words = params.rows * params.words_per_row;
    let first_word = (wid.x + wid.y * nwg.x) * WORKGROUP;
    let first_vec = 4u * first_word;
    let vecs = 4u * words;

    // Issue the loads first (clamped index past the end; those parts are never used).
    var w: array<vec4<f32>, 4>;
    for (var s = 0u; s < STEPS; s = s + 1u) {
        w[s] = weights[min(first_vec + s * WORKGROUP + t, vecs - 1u)];
    }

    // Every thread derives the factors itself (no barrier before the arithmetic).
    let f = pack_factors(scale[0]);
    for (var s = 0u; s < STEPS; s = s + 1u) {
        let v = s * WORKGROUP + t;
        parts[v] = group_bits(w[s], first_vec + v, f);
    }
    workgroupBarrier();

    let word = first_word + t;
    if (word < words) {
        packed[word] = parts[4u * t] | parts[4u * t + 1u] | parts[4u * t + 2u] | parts[4u * t + 3u];
    }
}
