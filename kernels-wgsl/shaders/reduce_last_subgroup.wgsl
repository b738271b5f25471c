// Last-axis reduction with subgroup operations (requires SUBGROUP), one workgroup per row.
//
// The engine uses it for max and absmax, which are exact in any order; sums keep reduce_last.wgsl's
// fixed tree order. Built with exact_div.wgsl prepended (mean).
//
// Same contract as reduce_last.wgsl (op: 0 = sum, 1 = mean, 2 = max, 3 = absmax; chunking by
// rows with x_shift / out_shift; status words 0 = x, 1 = output; row = wid.x + wid.y · nwg.x).
// Invocation t folds elements t, t + 256, ... sequentially; each subgroup then reduces its
// partials with one subgroup operation, and invocation 0 folds the per-subgroup results in
// subgroup order. Nothing assumes a subgroup size: it comes from the builtins (8 on lavapipe, 32
// on NVIDIA, anything from 4 to 128).

struct Params {
    rows: u32,
    len: u32,
    op: u32,
    row_base: u32,
    x_shift: u32,    // row of x's binding holding launch row 0 (0 when bound from the chunk)
    out_shift: u32,  // element of out's binding holding launch row 0
    _pad0: u32,
    _pad1: u32,
}

@group(0) @binding(0) var<storage, read> x: array<f32>;
@group(0) @binding(1) var<storage, read_write> out: array<f32>;
@group(1) @binding(0) var<uniform> params: Params;
@group(1) @binding(1) var<storage, read_write> nonfinite: array<atomic<u32>, 4>;

const WG: u32 = 256u;
// One slot per subgroup; 64 covers the smallest subgroup size a device may report (4).
var<workgroup> per_subgroup: array<f32, 64>;

// Exponent bits all ones <=> NaN or Inf. Bit test, because `x != x` may be optimised away.
fn is_non_finite(v: f32) -> bool {
    return (bitcast<u32>(v) & 0x7f800000u) == 0x7f800000u;
}

// Signed, correctly rounded division on top of `exact_div` (prepended from exact_div.wgsl, which
// handles magnitudes): WGSL `/` is only accurate to 2.5 ulp, the CPU reference divides exactly.
fn div_rounded(x: f32, y: f32) -> f32 {
    let sign = (bitcast<u32>(x) ^ bitcast<u32>(y)) & 0x80000000u;
    return bitcast<f32>(bitcast<u32>(exact_div(x, y)) | sign);
}

@compute @workgroup_size(256, 1, 1)
fn main(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) t: u32,
    @builtin(subgroup_id) sg_id: u32,
    @builtin(num_subgroups) sg_count: u32,
    @builtin(subgroup_invocation_id) sg_lane: u32,
) {
    // `row` is uniform across the workgroup, so this early exit keeps barriers and subgroup
    // operations in uniform control flow.
    let row = wid.x + wid.y * nwg.x;
    if (row >= params.rows) {
        return;
    }
    let op = params.op;
    let len = params.len;
    let base = (params.x_shift + row) * len;
    let is_sum = op <= 1u;
    // Identity: 0 for sums and for absmax (|x| >= 0), the lowest finite f32 for max.
    var acc = select(0.0, -3.4028235e38, op == 2u);
    for (var i = t; i < len; i += WG) {
        var v = x[base + i];
        if (is_non_finite(v)) {
            atomicMin(&nonfinite[0], (params.row_base + row) * len + i);
        }
        if (op == 3u) {
            v = abs(v);
        }
        acc = select(max(acc, v), acc + v, is_sum);
    }
    // Both reductions run in uniform control flow; the op picks which result is kept.
    let sg_sum = subgroupAdd(acc);
    let sg_max = subgroupMax(acc);
    if (sg_lane == 0u) {
        per_subgroup[sg_id] = select(sg_max, sg_sum, is_sum);
    }
    workgroupBarrier();
    if (t == 0u) {
        var r = per_subgroup[0];
        for (var s = 1u; s < sg_count; s++) {
            r = select(max(r, per_subgroup[s]), r + per_subgroup[s], is_sum);
        }
        if (op == 1u) {
            r = div_rounded(r, f32(len));
        }
        if (is_non_finite(r)) {
            atomicMin(&nonfinite[1], params.row_base + row);
        }
        out[params.out_shift + row] = r;
    }
}
