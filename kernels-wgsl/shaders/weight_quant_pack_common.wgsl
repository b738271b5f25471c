// Quantize-and-pack pieces shared by weight_quant_pack.wgsl, weight_quant_pack_vec4.wgsl and
// weight_quant_fused.wgsl: the factors that turn a weight into `w * inv_s` safely, and the codes
// of four consecutive weights. Each kernel supplies a `Params` with `zero: u32` (always 0).
//
// Arithmetic: inv_s = 1 / s correctly rounded (exact_div.wgsl), q = clamp(round(w * inv_s), -1, 1)
// (round = ties to even), code q + 1.

// An optimization barrier per component: XOR with a runtime zero hides how the value was made.
fn pin4(v: vec4<f32>) -> vec4<f32> {
    return bitcast<vec4<f32>>(bitcast<vec4<u32>>(v) ^ vec4<u32>(params.zero));
}

// (w_factor, inv) with w * inv_s = pin(w * w_factor) * inv for the scale s.
//
// s > 2^126 makes inv_s subnormal, and Vulkan lets GPUs flush subnormal operands to zero. Then
// multiply through normal stand-ins: w * inv_s = (w * 2^-32) * (inv_s * 2^32), where
// inv_s * 2^32 = frac * 2^-117 is exact. Every association of these products rounds to the same
// value while it is normal, and a subnormal product rounds to weight 0 either way — as long as
// the product is formed in this order: drivers may reassociate (w * f) * inv into w * (f * inv),
// whose subnormal factor is flushed to zero (seen on NVIDIA), so the first product goes through
// an optimization barrier (`pin4`).
fn pack_factors(s: f32) -> vec2<f32> {
    let inv_s = exact_div(1.0, s);
    let inv_bits = bitcast<u32>(inv_s);
    if ((inv_bits >> 23u) == 0u) {
        return vec2<f32>(0x1p-32f, f32(inv_bits) * 0x1p-117f);
    }
    return vec2<f32>(1.0, inv_s);
}

// The codes of four weights as bytes of a vec4<u32> (q + 1 in 0..=2).
fn codes4(w: vec4<f32>, f: vec2<f32>) -> vec4<u32> {
    let q = clamp(round(pin4(w * f.x) * f.y), vec4<f32>(-1.0), vec4<f32>(1.0));
    return vec4<u32>(vec4<i32>(q) + vec4<i32>(1));
}

// For K % 16 == 0 the packed words are a flat map of float vec4: float vec4 v (weights
// k = 16 j + 4 g + i, i < 4, g = v % 4) fills group g of word v / 4, codes at bits 8 i + 2 g
// (the interleaved layout of layout.rs). This vec4's share of its word.
fn group_bits(w: vec4<f32>, v: u32, f: vec2<f32>) -> u32 {
    let c = codes4(w, f);
    let g = 2u * (v & 3u);
    return (c.x << g) | (c.y << (8u + g)) | (c.z << (16u + g)) | (c.w << (24u + g));
}
