// f32 element access of the float matmul kernels (matmul_common.wgsl, concatenated after this file):
// f32 in and out, a non-finite result flagged as such.

@group(0) @binding(0) var<storage, read> a: array<f32>;
@group(0) @binding(1) var<storage, read> b: array<f32>;
@group(0) @binding(2) var<storage, read_write> c: array<f32>;

fn load_a(i: u32) -> f32 {
    return a[i];
}

fn load_b(i: u32) -> f32 {
    return b[i];
}

fn c_non_finite(v: f32) -> bool {
    return is_non_finite(v);
}

fn store_c(i: u32, v: f32) {
    c[i] = v;
}
