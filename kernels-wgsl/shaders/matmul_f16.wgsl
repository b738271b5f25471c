// f16 element access of the float matmul kernels (matmul_common.wgsl, concatenated after this file;
// requires SHADER_F16): f16 in and out, values widened to f32 when loaded and rounded to f16 once,
// at the store. An f32 result whose magnitude rounds past f16's largest finite value (65504;
// anything >= 65520 rounds to inf) is flagged as a non-finite output before it is rounded, since
// the rounding would produce inf.

enable f16;

@group(0) @binding(0) var<storage, read> a: array<f16>;
@group(0) @binding(1) var<storage, read> b: array<f16>;
@group(0) @binding(2) var<storage, read_write> c: array<f16>;

fn load_a(i: u32) -> f32 {
    return f32(a[i]);
}

fn load_b(i: u32) -> f32 {
    return f32(b[i]);
}

fn c_non_finite(v: f32) -> bool {
    return is_non_finite(v) || abs(v) >= 65520.0;
}

fn store_c(i: u32, v: f32) {
    c[i] = f16(clamp(v, -65504.0, 65504.0));
}
