// Broadcasting binary elementwise op: out = a (op) b, NumPy broadcasting rules.
//
// The host right-aligns every shape to 6 axes (leading axes of extent 1) and passes, per axis, the
// output extent and the element strides of a and b in that output index space, with stride 0 on a
// broadcast axis. Each invocation decomposes its linear output index into coordinates (innermost
// axis first) and dots them with the strides. When neither input broadcasts (`contiguous` = 1) the
// index decomposition is skipped: all three arrays share the linear index.
//
// op: 0 = add, 1 = sub, 2 = mul, 3 = div. Non-finite inputs raise status bit 1 (an input error);
// non-finite results of finite inputs (overflow, division by zero) raise status bit 2.
//
// Dispatch: ceil(len / 256) workgroups, spread over x and y (x * 256 elements per row of
// workgroups) because one grid axis holds at most 65535 workgroups.

struct Params {
    len: u32,
    op: u32,
    contiguous: u32,
    _pad: u32,
    // Output extents, axis 0 (outermost) .. 5 (innermost) as two vec4 (uniform arrays need 16-byte
    // elements); lanes beyond axis 5 are unused.
    shape: array<vec4<u32>, 2>,
    a_strides: array<vec4<u32>, 2>,
    b_strides: array<vec4<u32>, 2>,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> a: array<f32>;
@group(0) @binding(2) var<storage, read> b: array<f32>;
@group(0) @binding(3) var<storage, read_write> out: array<f32>;
@group(0) @binding(4) var<storage, read_write> status: atomic<u32>;

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
    var ia = i;
    var ib = i;
    if (p.contiguous == 0u) {
        ia = 0u;
        ib = 0u;
        var rest = i;
        for (var d = 6u; d > 0u; d--) {
            let axis = d - 1u;
            let lane = axis % 4u;
            let extent = p.shape[axis / 4u][lane];
            let coord = rest % extent;
            rest = rest / extent;
            ia += coord * p.a_strides[axis / 4u][lane];
            ib += coord * p.b_strides[axis / 4u][lane];
        }
    }
    let x = a[ia];
    let y = b[ib];
    if (!is_finite(x) || !is_finite(y)) {
        atomicOr(&status, 1u);
    }
    let r = apply(p.op, x, y);
    // IEEE division by zero gives inf or NaN, but shaders need not: report it explicitly.
    if (!is_finite(r) || (p.op == 3u && y == 0.0)) {
        atomicOr(&status, 2u);
    }
    out[i] = r;
}
