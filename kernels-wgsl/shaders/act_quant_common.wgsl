// Shared snippet of every vec4 activation quantizer (act_quant_vec4.wgsl and the GEMVs with the
// quantization fused in): the absmax step and the quantized word, so they round alike.

const AQ_EXP_MASK: u32 = 0x7f800000u;
// No non-finite value seen (the `bad` index of aq_abs_bits starts here).
const AQ_NONE: u32 = 0xffffffffu;

// Index of the first true component (the vector has one).
fn aq_first_true(v: vec4<bool>) -> u32 {
    return select(select(select(3u, 2u, v.z), 1u, v.y), 0u, v.x);
}

// Largest sign-cleared bit pattern of v, the float vec4 i (non-negative floats order like their
// bits); flags the first non-finite value of it in `bad` (smallest flat index). The test is on
// bits because `x != x` may be optimized away.
fn aq_abs_bits(v: vec4<f32>, i: u32, bad: ptr<function, u32>) -> u32 {
    let b = bitcast<vec4<u32>>(v) & vec4<u32>(0x7fffffffu);
    let inf = (b & vec4<u32>(AQ_EXP_MASK)) == vec4<u32>(AQ_EXP_MASK);
    if (any(inf)) {
        *bad = min(*bad, 4u * i + aq_first_true(inf));
    }
    return max(max(b.x, b.y), max(b.z, b.w));
}

// xq = clamp(round(v * inv), -128, 127) (round = ties to even), inv = 127 / a.
fn aq_round(v: vec4<f32>, inv: f32) -> vec4<i32> {
    return vec4<i32>(clamp(round(v * inv), vec4<f32>(-128.0), vec4<f32>(127.0)));
}

// The packed word of 4 quantized values (byte i = value i).
fn aq_pack(q: vec4<i32>) -> u32 {
    return (u32(q.x) & 0xffu) | ((u32(q.y) & 0xffu) << 8u) | ((u32(q.z) & 0xffu) << 16u)
        | (u32(q.w) << 24u);
}
