// Last-axis reduction, one workgroup per row: out[r] = reduce(x[r, 0..len]) (contract, chunking
// and status words: reduce_common.wgsl, concatenated with this file and exact_div.wgsl).
//
// After each invocation's sequential fold, a tree in workgroup memory halves the 256 partials to
// one (strides 128, 64, ..., 1): exactly the summation order of the CPU reference (`lane_sum`), so
// sums and means match it bit for bit. Used for every op where subgroups are missing, and always
// for sum and mean (a subgroup reduction's order is unspecified).

var<workgroup> partial: array<f32, 256>;

@compute @workgroup_size(256, 1, 1)
fn main(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) t: u32,
) {
    // `row` is uniform across the workgroup, so this early exit keeps barriers in uniform control flow.
    let row = wid.x + wid.y * nwg.x;
    if (row >= params.rows) {
        return;
    }
    partial[t] = fold_row(row, t);
    workgroupBarrier();
    for (var stride = WG / 2u; stride > 0u; stride /= 2u) {
        if (t < stride) {
            partial[t] = combine(params.op, partial[t], partial[t + stride]);
        }
        workgroupBarrier();
    }
    if (t == 0u) {
        finish_row(row, partial[0]);
    }
}
