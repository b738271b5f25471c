// The row reduction of the RMS norm kernels (norm_rms.wgsl, norm_rms_add.wgsl), one workgroup
// per row: each invocation t has folded x² (x·x rounded, then added) for elements t, t + 256, ...
// sequentially; a tree in workgroup memory (strides 128, ..., 1) sums the 256 partials — the CPU
// reference's order (bitnet_cpu_ref::ops::rms_norm), so the sum of squares matches it bit for
// bit. The divisions are correctly rounded (exact_div.wgsl is prepended); sqrt is the shader's.

const WG: u32 = 256u;
var<workgroup> partial: array<f32, 256>;

// The row's sum of squares from invocation t's partial `acc`. Call from uniform control flow.
fn rms_sum_sq(acc: f32, t: u32) -> f32 {
    partial[t] = acc;
    workgroupBarrier();
    for (var stride = WG / 2u; stride > 0u; stride /= 2u) {
        if (t < stride) {
            partial[t] = partial[t] + partial[t + stride];
        }
        workgroupBarrier();
    }
    return partial[0];
}

// 1 / sqrt(sum_sq / len + eps).
fn rms_inv(sum_sq: f32, len: u32, eps: f32) -> f32 {
    return exact_div(1.0, sqrt(exact_div(sum_sq, u32_to_f32(len)) + eps));
}
