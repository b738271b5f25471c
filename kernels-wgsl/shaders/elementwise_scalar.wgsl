// Tensor-scalar elementwise op: out[i] = a[i] (op) s, with the scalar s passed as a parameter.
//
// op: 0 = add, 1 = sub, 2 = mul, 3 = div (same arithmetic as elementwise_binary.wgsl). Non-finite
// inputs (elements or the scalar) raise status bit 1; non-finite results of finite inputs (overflow,
// division by zero) raise status bit 2.
//
// Dispatch: ceil(len / 256) workgroups spread over x and y (x * 256 elements per row of workgroups).

struct Params {
    len: u32,
    op: u32,
    s: f32,
    _pad: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> a: array<f32>;
@group(0) @binding(2) var<storage, read_write> out: array<f32>;
@group(0) @binding(3) var<storage, read_write> status: atomic<u32>;

fn is_finite(x: f32) -> bool {
    // Exponent all ones means inf or NaN; tested on bits so no fast-math can fold it away.
    return (bitcast<u32>(x) & 0x7f800000u) != 0x7f800000u;
}

fn apply(op: u32, x: f32, y: f32) -> f32 {
    switch op {
        case 0u: { return x + y; }
        case 1u: { return x - y; }
        case 2u: { return x * y; }
        default: {
            // Shader division is only accurate for |y| in [2^-126, 2^126]; scale a huge divisor
            // (and the dividend, exactly) into range. Division by zero is reported by the caller.
            if (abs(y) > 8.5070592e37) {
                return (x * 0.25) / (y * 0.25);
            }
            return x / y;
        }
    }
}

@compute @workgroup_size(256, 1, 1)
fn main(
    @builtin(global_invocation_id) gid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
) {
    let i = gid.x + gid.y * nwg.x * 256u;
    if (i >= p.len) {
        return;
    }
    let x = a[i];
    if (!is_finite(x) || !is_finite(p.s)) {
        atomicOr(&status, 1u);
    }
    let r = apply(p.op, x, p.s);
    // IEEE division by zero gives inf or NaN, but shaders need not: report it explicitly.
    if (!is_finite(r) || (p.op == 3u && p.s == 0.0)) {
        atomicOr(&status, 2u);
    }
    out[i] = r;
}
