// Last-axis reduction, one workgroup per row: out[r] = reduce(x[r, 0..len]).
//
// op: 0 = sum, 1 = mean (sum / len), 2 = max, 3 = absmax (max |x|). Invocation t folds elements
// t, t + 256, t + 512, ... sequentially, then a tree in workgroup memory halves 256 partials to one
// (strides 128, 64, ..., 1). Portable fallback of reduce_last_subgroup.wgsl.
//
// Non-finite inputs raise status bit 1; a non-finite result of finite inputs (sum overflow) raises
// status bit 2. Dispatch: one workgroup per row, rows spread over x and y (row = wg.x + wg.y·nwg.x).

struct Params {
    rows: u32,
    len: u32,
    op: u32,
    _pad: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read_write> out: array<f32>;
@group(0) @binding(3) var<storage, read_write> status: atomic<u32>;

const WG: u32 = 256u;
var<workgroup> partial: array<f32, 256>;

fn is_finite(v: f32) -> bool {
    // Exponent all ones means inf or NaN; tested on bits so no fast-math can fold it away.
    return (bitcast<u32>(v) & 0x7f800000u) != 0x7f800000u;
}

// Sum for ops 0 and 1, max otherwise (inputs of absmax are made non-negative before folding).
fn combine(op: u32, u: f32, v: f32) -> f32 {
    if (op <= 1u) {
        return u + v;
    }
    return max(u, v);
}

@compute @workgroup_size(256, 1, 1)
fn main(
    @builtin(workgroup_id) wg: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) t: u32,
) {
    // `row` is uniform across the workgroup, so this early exit keeps barriers in uniform control flow.
    let row = wg.x + wg.y * nwg.x;
    if (row >= p.rows) {
        return;
    }
    let base = row * p.len;
    // Identity: 0 for sums and for absmax (|x| >= 0), the lowest finite f32 for max.
    var acc = select(0.0, -3.4028235e38, p.op == 2u);
    var bad = false;
    for (var i = t; i < p.len; i += WG) {
        var v = x[base + i];
        bad = bad || !is_finite(v);
        if (p.op == 3u) {
            v = abs(v);
        }
        acc = combine(p.op, acc, v);
    }
    if (bad) {
        atomicOr(&status, 1u);
    }
    partial[t] = acc;
    workgroupBarrier();
    for (var stride = WG / 2u; stride > 0u; stride /= 2u) {
        if (t < stride) {
            partial[t] = combine(p.op, partial[t], partial[t + stride]);
        }
        workgroupBarrier();
    }
    if (t == 0u) {
        var r = partial[0];
        if (p.op == 1u) {
            r = r / f32(p.len);
        }
        if (!is_finite(r)) {
            atomicOr(&status, 2u);
        }
        out[row] = r;
    }
}
