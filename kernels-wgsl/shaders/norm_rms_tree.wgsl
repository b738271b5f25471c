// The tree of the RMS norm kernels' row reduction (norm_rms_common.wgsl): the 256 partials
// summed in workgroup memory, strides 128, ..., 1 (the fused GEMVs run the same tree over their
// own workgroup memory, bitlinear_gemv_fused_norm.wgsl).

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

