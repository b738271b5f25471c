// Gated activation, elementwise: out[i] = activation(op, gate[i]) * up[i] — a feed-forward
// block's GLU (relu² for BitNet, silu for SwiGLU, gelu for GeGLU) in one dispatch instead of a
// unary and a binary mul.
//
// op: the codes of `activation` (activation_common.wgsl, shared with elementwise_unary.wgsl, so
// the activation is the unary kernel's operation for operation). The product is one IEEE f32
// multiply, activation first, as the binary kernel's mul of the unary output and up: bit for bit
// the two ops in sequence (nothing after the product for a compiler to contract into an fma).
//
// Chunking: the launch covers elements base .. base + len, with gate, up and out bound from base;
// flat indices reported are those of the full tensors.
//
// Non-finite status words: 0 = gate, 1 = up, 2 = output (a non-finite product of finite inputs:
// the activation overflowed — relu² above ~1.8e19, exp above ~88.72; inf · 0 is NaN — or the
// product did). Dispatch: linear, ceil(len / 1024) workgroups (PER_THREAD values per invocation,
// float_common.wgsl); one value at a time like the binary kernel, whose two loads already overlap.

struct Params {
    len: u32,
    op: u32,
    base: u32,
    _pad: u32,
}

@group(0) @binding(0) var<storage, read> gate: array<f32>;
@group(0) @binding(1) var<storage, read> up: array<f32>;
@group(0) @binding(2) var<storage, read_write> out: array<f32>;
@group(1) @binding(0) var<uniform> params: Params;
@group(1) @binding(1) var<storage, read_write> nonfinite: array<atomic<u32>, 4>;

@compute @workgroup_size(256, 1, 1)
fn main(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    let first = (wid.x + wid.y * nwg.x) * (256u * PER_THREAD) + lid;
    for (var k = 0u; k < PER_THREAD; k++) {
        let i = first + k * 256u;
        if (i < params.len) {
            let g = gate[i];
            let u = up[i];
            if (is_non_finite(g)) {
                atomicMin(&nonfinite[0], params.base + i);
            }
            if (is_non_finite(u)) {
                atomicMin(&nonfinite[1], params.base + i);
            }
            let r = activation(params.op, g) * u;
            if (is_non_finite(r)) {
                atomicMin(&nonfinite[2], params.base + i);
            }
            out[i] = r;
        }
    }
}
