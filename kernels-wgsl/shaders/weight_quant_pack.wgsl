// Weight quantization, pass (b): quantize and pack, one thread per output u32 word.
//
// Thread `idx` owns word j of row n (idx = n * words_per_row + j): the 16 weights k = 16 j + kk,
// each `clamp(round(w * inv_s), -1, 1)` (round = ties to even), stored as code w + 1 at bit
// 8 (kk % 4) + 2 (kk / 4) (the interleaved layout of layout.rs). Positions k >= K hold the padding
// code 1 (weight 0). `inv_s = 1 / s` (correctly rounded) is derived once per workgroup from the
// scale written by pass (a). Needs exact_div.wgsl and weight_quant_pack_common.wgsl (prepended
// by bitnet.rs).

struct Params {
    // Rows in this dispatch (the host chunks large matrices over rows).
    rows: u32,
    // K: weights per row.
    k: u32,
    // ceil(K / 16): packed words per row.
    words_per_row: u32,
    // Always 0: the runtime zero of the optimization barrier (the compiler cannot know it).
    zero: u32,
}

@group(0) @binding(0) var<storage, read> weights: array<f32>;
// The scale s written by weight_quant_sum (the ternary tensor's scale buffer).
@group(0) @binding(1) var<storage, read> scale: array<f32>;
@group(0) @binding(2) var<storage, read_write> packed: array<u32>;
@group(1) @binding(0) var<uniform> params: Params;

const WORKGROUP: u32 = 256u;

var<workgroup> factors: vec2<f32>;

// An optimization barrier: XOR with a runtime zero hides how the value was made.
fn pin(v: f32) -> f32 {
    return bitcast<f32>(bitcast<u32>(v) ^ params.zero);
}

@compute @workgroup_size(256)
fn main(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) t: u32,
) {
    // The factors of weight_quant_pack_common.wgsl, derived once per workgroup.
    if (t == 0u) {
        factors = pack_factors(scale[0]);
    }
    workgroupBarrier();
    let w_factor = factors.x;
    let inv = factors.y;

    let idx = (wid.x + wid.y * nwg.x) * WORKGROUP + t;
    if (idx >= params.rows * params.words_per_row) {
        return;
    }
    let row = idx / params.words_per_row;
    let k0 = (idx % params.words_per_row) * 16u;
    let base = row * params.k;

    var word = 0u;
    for (var kk = 0u; kk < 16u; kk = kk + 1u) {
        var code = 1u;
        if (k0 + kk < params.k) {
            let q = clamp(round(pin(weights[base + k0 + kk] * w_factor) * inv), -1.0, 1.0);
            code = u32(i32(q) + 1);
        }
        word = word | (code << (8u * (kk & 3u) + 2u * (kk >> 2u)));
    }
    packed[idx] = word;
}
