// Tensor-scalar elementwise op: out[i] = a[i] (op) s, the scalar s passed as a parameter.
//
// op: 0 = add, 1 = sub, 2 = mul, 3 = div (same arithmetic as elementwise_binary.wgsl). The host
// rejects a non-finite scalar before launching.
//
// Chunking: the launch covers elements base .. base + len, with a and out bound from base; flat
// indices reported are those of the full tensors.
//
// Non-finite status words: 0 = a, 1 = output (a non-finite result of finite inputs: overflow, or
// division by zero, flagged explicitly). Dispatch: linear, ceil(len / 256) workgroups.

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

// Exponent bits all ones <=> NaN or Inf. Bit test, because `x != x` may be optimised away.
fn is_non_finite(x: f32) -> bool {
    return (bitcast<u32>(x) & 0x7f800000u) == 0x7f800000u;
}

fn apply(op: u32, x: f32, y: f32) -> f32 {
    switch op {
        case 0u: { return x + y; }
        case 1u: { return x - y; }
        case 2u: { return x * y; }
        default: {
            // Shader division is only specified for |y| in [2^-126, 2^126]: scale a huge divisor
            // (and the dividend, exactly) into range.
            if (abs(y) > 8.5070592e37) {
                return (x * 0.25) / (y * 0.25);
            }
            return x / y;
        }
    }
}

@compute @workgroup_size(256, 1, 1)
fn main(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    let i = (wid.x + wid.y * nwg.x) * 256u + lid;
    if (i >= params.len) {
        return;
    }
    let x = a[i];
    if (is_non_finite(x)) {
        atomicMin(&nonfinite[0], params.base + i);
    }
    let r = apply(params.op, x, params.s);
    if (is_non_finite(r) || (params.op == 3u && params.s == 0.0)) {
        atomicMin(&nonfinite[1], params.base + i);
    }
    out[i] = r;
}
