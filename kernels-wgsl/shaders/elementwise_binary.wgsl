// Broadcasting binary elementwise op: out = a (op) b, NumPy broadcasting rules.
//
// The host right-aligns every shape to 6 axes (leading axes of extent 1) and passes, per axis, the
// output extent and the element strides of a and b in the output's index space, with stride 0 on
// a broadcast axis. Each invocation decomposes its flat output index into coordinates (innermost
// axis first) and dots them with the strides. When neither input broadcasts (`contiguous` = 1) the
// decomposition is skipped: all three share the flat index.
//
// op: 0 = add, 1 = sub, 2 = mul, 3 = div (correctly rounded, so every op matches the CPU reference
// bit for bit). Built with exact_div.wgsl prepended (see `kernels-wgsl/src/tensor.rs`).
//
// Chunking: the launch covers outputs out_base .. out_base + len of the full output, bound from
// out_base; a and b are bound from element a_off / b_off of theirs (0 when bound whole). Flat
// indices computed and reported are those of the full tensors.
//
// Non-finite status words: 0 = a, 1 = b, 2 = output (a non-finite result of finite inputs:
// overflow, division by zero). Dispatch: linear, ceil(len / 1024) workgroups (PER_THREAD
// outputs per invocation, float_common.wgsl).

struct Params {
    len: u32,
    op: u32,
    contiguous: u32,
    out_base: u32,
    a_off: u32,
    b_off: u32,
    _pad0: u32,
    _pad1: u32,
    // Output extents, axis 0 (outermost) .. 5 (innermost), as two vec4 (lanes 6 and 7 unused).
    shape: array<vec4<u32>, 2>,
    a_strides: array<vec4<u32>, 2>,
    b_strides: array<vec4<u32>, 2>,
}

@group(0) @binding(0) var<storage, read> a: array<f32>;
@group(0) @binding(1) var<storage, read> b: array<f32>;
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
            binary_at(i);
        }
    }
}

// Output i of this launch (flat index out_base + i of the full output).
fn binary_at(i: u32) {
    let o = params.out_base + i;
    var ia = o;
    var ib = o;
    if (params.contiguous == 0u) {
        ia = 0u;
        ib = 0u;
        var rest = o;
        for (var d = 6u; d > 0u; d--) {
            let axis = d - 1u;
            let v = axis / 4u;
            let lane = axis % 4u;
            let extent = params.shape[v][lane];
            let coord = rest % extent;
            rest = rest / extent;
            ia += coord * params.a_strides[v][lane];
            ib += coord * params.b_strides[v][lane];
        }
    }
    let x = a[ia - params.a_off];
    let y = b[ib - params.b_off];
    if (is_non_finite(x)) {
        atomicMin(&nonfinite[0], ia);
    }
    if (is_non_finite(y)) {
        atomicMin(&nonfinite[1], ib);
    }
    let r = apply(params.op, x, y);
    if (is_non_finite(r)) {
        atomicMin(&nonfinite[2], o);
    }
    out[i] = r;
}
