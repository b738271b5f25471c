// The row reduction of the RMS norm kernels (norm_rms.wgsl, norm_rms_add.wgsl, and the fused
// GEMVs' normed input, bitlinear_gemv_fused_norm.wgsl), one workgroup per row: each invocation t
// has folded x² (x·x rounded, then added) for elements t, t + 256, ... sequentially; a tree in
// workgroup memory (strides 128, ..., 1; norm_rms_tree.wgsl) sums the 256 partials — the CPU
// reference's order (bitnet_cpu_ref::ops::rms_norm), so the sum of squares matches it bit for
// bit. The divisions and the root are correctly rounded (exact_div.wgsl, exact_sqrt.wgsl).
//
// The kernels walk a row four of an invocation's elements at a time (i, i + 256, i + 512,
// i + 768; past the row clamped to its last element, and left out): the four loads go out
// together. One element per iteration waited for each load in turn — the non-finite checks'
// atomics keep the compiler from overlapping iterations — and a decode step's norms (one row of
// 2560) took 14-17 µs each on the H200.

const WG: u32 = 256u;

// 1 / sqrt(sum_sq / len + eps).
fn rms_inv(sum_sq: f32, len: u32, eps: f32) -> f32 {
    return exact_div(1.0, sqrt_rounded(exact_div(sum_sq, u32_to_f32(len)) + eps));
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

// acc with the valid elements' squares added in lane order (each x·x rounded, then added: pinned,
// so no driver fuses them into a multiply-add).
fn rms_fold(acc: f32, v: vec4<f32>, valid: vec4<bool>) -> f32 {
    let sq = rms_pin4(v * v);
    var a = acc + sq.x;
    a = select(a, a + sq.y, valid.y);
    a = select(a, a + sq.z, valid.z);
    return select(a, a + sq.w, valid.w);
}

// The normalized values (h · inv) · w, each product rounded (pinned: Vulkan lets drivers fuse and
// reassociate float operations, and NVIDIA's contracted the squares into multiply-adds).
fn rms_scale(h: vec4<f32>, inv: f32, w: vec4<f32>) -> vec4<f32> {
    return rms_pin4(rms_pin4(h * inv) * w);
}

// An optimization barrier for four floats (XOR with the kernel's runtime zero, params.zero): each
// value is rounded where it is computed, as the CPU reference rounds it.
fn rms_pin4(v: vec4<f32>) -> vec4<f32> {
    return bitcast<vec4<f32>>(bitcast<vec4<u32>>(v) ^ vec4<u32>(params.zero));
}
