// BitLinear GEMV, subgroup variant (adapters with SUBGROUP): each subgroup reduces its partial
// sums with subgroupAdd (exact in i32, so the order is irrelevant), lane 0 of every subgroup parks
// the result in workgroup memory, and one thread per (row, m) adds the subgroups' results.
// Works for any subgroup size from 4 (wgpu's guaranteed minimum) to 128.
//
// Needs bitlinear_common.wgsl and bitlinear_gemv_common.wgsl.

// wgpu guarantees subgroups of at least 4 invocations.
const GEMV_MAX_SUBGROUPS: u32 = GEMV_WORKGROUP / 4u;

// [GEMV_ACCS][GEMV_MAX_SUBGROUPS] subgroup results.
var<workgroup> gemv_red: array<i32, 1024>;

@compute @workgroup_size(128)
fn main(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) t: u32,
    @builtin(subgroup_invocation_id) lane: u32,
    @builtin(subgroup_id) sg: u32,
    @builtin(num_subgroups) nsg: u32,
) {
    let n0 = gemv_first_row(wid, nwg);
    let acc = gemv_accumulate(n0, t);
    for (var r = 0u; r < GEMV_ROWS; r = r + 1u) {
        for (var m = 0u; m < params.m; m = m + 1u) {
            let v = r * GEMV_MAX_M + m;
            let s = subgroupAdd(acc[v]);
            if (lane == 0u) {
                gemv_red[v * GEMV_MAX_SUBGROUPS + sg] = s;
            }
        }
    }
    workgroupBarrier();
    if (t < GEMV_ACCS) {
        let r = t / GEMV_MAX_M;
        let m = t % GEMV_MAX_M;
        if (m < params.m && n0 + r < params.n) {
            var total = 0i;
            for (var i = 0u; i < nsg; i = i + 1u) {
                total += gemv_red[t * GEMV_MAX_SUBGROUPS + i];
            }
            bitlinear_store(m, n0 + r, total);
        }
    }
}
