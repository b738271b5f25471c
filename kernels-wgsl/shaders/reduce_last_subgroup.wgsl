// Last-axis reduction with subgroup operations (requires SUBGROUP), one workgroup per row
// (contract, chunking and status words: reduce_common.wgsl, concatenated with this file and
// exact_div.wgsl).
//
// The engine uses it for max and absmax, which are exact in any order; sums keep reduce_last.wgsl's
// fixed tree order. After each invocation's sequential fold, each subgroup reduces its partials
// with one subgroup operation, and invocation 0 folds the per-subgroup results in subgroup order.
// Nothing assumes a subgroup size: it comes from the builtins (8 on lavapipe, 32 on NVIDIA,
// anything from 4 to 128).

// One slot per subgroup; 64 covers the smallest subgroup size a device may report (4).
var<workgroup> per_subgroup: array<f32, 64>;

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
    let acc = fold_row(row, t);
    // Both reductions run in uniform control flow; the op picks which result is kept.
    let is_sum = params.op <= 1u;
    let sg_sum = subgroupAdd(acc);
    // Over ordered keys: a float subgroupMax may give either zero when both are in the subgroup.
    let sg_max = ordered_f32(subgroupMax(ordered_key(acc)));
    if (sg_lane == 0u) {
        per_subgroup[sg_id] = select(sg_max, sg_sum, is_sum);
    }
    workgroupBarrier();
    if (t == 0u) {
        var r = per_subgroup[0];
        for (var s = 1u; s < sg_count; s++) {
            r = combine(params.op, r, per_subgroup[s]);
        }
        finish_row(row, r);
    }
}
