// Weight quantization, pass (b), for K % 16 == 0: quantize and pack with coalesced vec4 loads.
//
// With K a multiple of 16 every packed word j of row n holds the 16 consecutive floats
// 16 (n * words_per_row + j) .. + 15 of the flat matrix, so the matrix is one flat sequence of
// words. Float vec4 v (4 consecutive weights k = 16 j + 4 g + i, i < 4, g = v % 4) fills group g of
// word v / 4: codes at bits 8 i + 2 g (the interleaved layout of layout.rs). Consecutive threads
// load consecutive vec4; each thread turns its vec4 into the group's bits, parks them in
// workgroup memory, and after one barrier each thread ORs the four groups of one word.
//
// Arithmetic as weight_quant_pack.wgsl: inv_s = 1 / s correctly rounded, q = clamp(round(w * inv_s),
// -1, 1) (round = ties to even), with the same normal stand-ins when inv_s is subnormal.
// Needs the exact_div.wgsl snippet (prepended by bitnet.rs).

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

// An optimization barrier per component: XOR with a runtime zero hides how the value was made.
fn pin4(v: vec4<f32>) -> vec4<f32> {
    return bitcast<vec4<f32>>(bitcast<vec4<u32>>(v) ^ vec4<u32>(params.zero));
}

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

    // Every thread derives inv_s itself (no barrier before the arithmetic).
    let inv_s = exact_div(1.0, scale[0]);
    // s > 2^126 makes inv_s subnormal, and Vulkan lets GPUs flush subnormal operands to zero.
    // Then multiply through normal stand-ins: w * inv_s = (w * 2^-32) * (inv_s * 2^32), where
    // inv_s * 2^32 = frac * 2^-117 is exact. Every association of these products rounds to the
    // same value while it is normal, and a subnormal product rounds to weight 0 either way — as
    // long as the product is formed in this order: drivers may reassociate (w * f) * inv into
    // w * (f * inv), whose subnormal factor is flushed to zero (seen on NVIDIA), so the first
    // product goes through an optimization barrier.
    var w_factor = 1.0;
    var inv = inv_s;
    let inv_bits = bitcast<u32>(inv_s);
    if ((inv_bits >> 23u) == 0u) {
        w_factor = 0x1p-32f;
        inv = f32(inv_bits) * 0x1p-117f;
    }

    for (var s = 0u; s < STEPS; s = s + 1u) {
        let v = s * WORKGROUP + t;
        let q = clamp(round(pin4(w[s] * w_factor) * inv), vec4<f32>(-1.0), vec4<f32>(1.0));
        let c = vec4<u32>(vec4<i32>(q) + vec4<i32>(1));
        let g = 2u * ((first_vec + v) & 3u);
        parts[v] = (c.x << g) | (c.y << (8u + g)) | (c.z << (16u + g)) | (c.w << (24u + g));
    }
    workgroupBarrier();

    let word = first_word + t;
    if (word < words) {
        packed[word] = parts[4u * t] | parts[4u * t + 1u] | parts[4u * t + 2u] | parts[4u * t + 3u];
    }
}
