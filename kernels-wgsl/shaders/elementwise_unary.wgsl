// Unary activations, elementwise: out[i] = f(a[i]).
//
// op: the codes of `activation` (activation_common.wgsl, concatenated with this file, which also
// says how each activation is computed: cpu-ref's formulas operation for operation).
//
// Chunking: the launch covers elements base .. base + len, with a and out bound from base; flat
// indices reported are those of the full tensors.
//
// Non-finite status words: 0 = a, 1 = output (exp or relu² overflow). Dispatch: linear,
// ceil(len / 1024) workgroups (PER_THREAD values per invocation, float_common.wgsl).

struct Params {
    len: u32,
    op: u32,
    base: u32,
    _pad: u32,
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
            let r = activation(params.op, x);
            if (is_non_finite(r)) {
                atomicMin(&nonfinite[1], params.base + i);
            }
            out[i] = r;
        }
    }
}
