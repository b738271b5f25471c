// Tensor-scalar elementwise op: out[i] = a[i] (op) s, the scalar s passed as a parameter.
//
// op: 0 = add, 1 = sub, 2 = mul, 3 = div (same arithmetic as elementwise_binary.wgsl: correctly
// rounded). Built with exact_div.wgsl prepended (see `kernels-wgsl/src/tensor.rs`).
//
// Chunking: the launch covers elements base .. base + len, with a and out bound from base; flat
// indices reported are those of the full tensors.
//
// Non-finite status words: 0 = a, 1 = s (index 0; the scalar is checked in the kernel so that a
// non-finite `a` is still reported first, as the CPU reference does), 2 = output (a non-finite
// result of finite inputs: overflow, division by zero). Dispatch: linear, ceil(len / 1024)
// workgroups (PER_THREAD values per invocation, float_common.wgsl).

struct Params {
    len: u32,
    op: u32,
    s: f32,
    base: u32,
}

@group(0) @binding(0) var<storage, read> a: array<f32>;
@group(0) @binding(1) var<storage, read_write> out: array<f32>;
@group(1) @binding(0) var<uniform> params: Params;
@group(1) @binding(1) var<storage, read_write> nonfinite: array<atomic<u32>, 4>;

@compute @workgroup_size(256, 1, 1)
fn main(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    let first = (wid.x + wid.y * nwg.x) * (256u * PER_THREAD) + lid;
    if (first == 0u && is_non_finite(params.s)) {
        atomicMin(&nonfinite[1], 0u);
    }
    // Every load before any store (float_common.wgsl).
    var xs = vec4<f32>();
    for (var k = 0u; k < PER_THREAD; k++) {
        let i = first + k * 256u;
        if (i < params.len) {
            xs[k] = a[i];
        }
    }
    for (var k = 0u; k < PER_THREAD; k++) {
        let i = first + k * 256u;
        if (i < params.len) {
            let x = xs[k];
            if (is_non_finite(x)) {
                atomicMin(&nonfinite[0], params.base + i);
            }
            let r = apply(params.op, x, params.s);
            if (is_non_finite(r)) {
                atomicMin(&nonfinite[2], params.base + i);
            }
            out[i] = r;
        }
    }
}
