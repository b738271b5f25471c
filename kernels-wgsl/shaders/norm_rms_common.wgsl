// The row reduction of the RMS norm kernels (norm_rms.wgsl, norm_rms_add.wgsl, and the fused
// GEMVs' normed input, bitlinear_gemv_fused_norm.wgsl), one workgroup per row: each invocation t
// has folded x² (x·x rounded, then added) for elements t, t + 256, ... sequentially; a tree in
// workgroup memory (strides 128, ..., 1; norm_rms_tree.wgsl) sums the 256 partials — the CPU
// reference's order (bitnet_cpu_ref::ops::rms_norm), so the sum of squares matches it bit for
// bit. The divisions are correctly rounded (exact_div.wgsl is prepended); sqrt is the shader's.
//
// The kernels walk a row four of an invocation's elements at a time (i, i + 256, i + 512,
// i + 768; past the row clamped to its last element, and left out): the four loads go out
// together. One element per iteration waited for each load in turn — the non-finite checks'
// atomics keep the compiler from overlapping iterations — and a decode step's norms (one row of
// 2560) took 14-17 µs each on the H200.

const WG: u32 = 256u;

// 1 / sqrt(sum_sq / len + eps).
fn rms_inv(sum_sq: f32, len: u32, eps: f32) -> f32 {
    return exact_div(1.0, sqrt(exact_div(sum_sq, u32_to_f32(len)) + eps));
}

// The four elements an iteration at i takes: i, i + WG, i + 2 WG, i + 3 WG, clamped to len - 1.
fn rms_lanes(i: u32, len: u32) -> vec4<u32> {
    let last = len - 1u;
    return vec4<u32>(i, min(i + WG, last), min(i + 2u * WG, last), min(i + 3u * WG, last));
}

// Which of rms_lanes(i, len) are in the row (the first always is).
fn rms_valid(i: u32, len: u32) -> vec4<bool> {
    return vec4<bool>(true, i + WG < len, i + 2u * WG < len, i + 3u * WG < len);
}

// acc with the valid elements' squares added in lane order (each x·x rounded, then added).
fn rms_fold(acc: f32, v: vec4<f32>, valid: vec4<bool>) -> f32 {
    var a = acc + v.x * v.x;
    a = select(a, a + v.y * v.y, valid.y);
    a = select(a, a + v.z * v.z, valid.z);
    return select(a, a + v.w * v.w, valid.w);
}
