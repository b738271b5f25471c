// BitLinear GEMV, workgroup-memory variant (adapters without SUBGROUP): one weight row at a
// time, every thread parks its GEMV_MAX_M partial sums in workgroup memory and a pairwise tree
// adds them (exact in i32).
//
// Needs bitlinear_common.wgsl and bitlinear_gemv_common.wgsl.

// [GEMV_MAX_M][GEMV_WORKGROUP] partial sums of one weight row.
var<workgroup> gemv_red: array<i32, 1024>;

@compute @workgroup_size(128)
fn main(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) t: u32,
) {
    let n0 = gemv_first_row(wid, nwg);
    let acc = gemv_accumulate(n0, t);
    for (var r = 0u; r < GEMV_ROWS; r = r + 1u) {
        for (var m = 0u; m < params.m; m = m + 1u) {
            gemv_red[m * GEMV_WORKGROUP + t] = acc[r * GEMV_MAX_M + m];
        }
        workgroupBarrier();
        for (var stride = GEMV_WORKGROUP / 2u; stride > 0u; stride = stride >> 1u) {
            if (t < stride) {
                for (var m = 0u; m < params.m; m = m + 1u) {
                    let i = m * GEMV_WORKGROUP + t;
                    gemv_red[i] += gemv_red[i + stride];
                }
            }
            workgroupBarrier();
        }
        if (t < params.m && n0 + r < params.n) {
            bitlinear_store(t, n0 + r, gemv_red[t * GEMV_WORKGROUP]);
        }
        workgroupBarrier();
    }
}
