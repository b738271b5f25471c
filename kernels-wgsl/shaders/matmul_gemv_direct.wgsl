// The few-row matmul reading B straight from memory (matmul_gemv_common.wgsl says what it
// computes and how it sums): for B stored [K,N], where consecutive invocations take consecutive
// columns of one chunk, so their loads are contiguous. (Stored [N,K], the invocations sharing a
// column would read chunks 256 bytes apart: matmul_gemv_staged.wgsl stages those.) Four k at a
// time, all loads first; k past K loads zeros, whose products add nothing.

@compute @workgroup_size(256, 1, 1)
fn main(
    @builtin(workgroup_id) wg: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) t: u32,
) {
    let origin = gemv_origin(wg, nwg);
    let row0 = origin.x;
    let col0 = origin.y;
    let own = slot_column_lane(t);
    let gn = col0 + own.x;
    let checks_a = col0 == 0u && own.x == 0u;

    var total = vec4<f32>(0.0);
    var bad_a = NONE;
    var bad_b = NONE;
    for (var round = 0u; round < params.k; round += ROUND) {
        let k_begin = round + own.y * MM_CHUNK;
        var sum = vec4<f32>(0.0);
        if (k_begin < params.k && gn < params.n) {
            for (var kk = 0u; kk < MM_CHUNK; kk += 4u) {
                let k = k_begin + kk;
                var bv: vec4<f32>;
                var av: array<vec4<f32>, 4>; // av[j]: the 4 rows at k + j
                for (var j = 0u; j < 4u; j++) {
                    bv[j] = mm_b_at(k + j, gn);
                    for (var i = 0u; i < ROWS; i++) {
                        av[j][i] = mm_a_at(row0 + i, k + j);
                    }
                }
                for (var j = 0u; j < 4u; j++) {
                    if (is_non_finite(bv[j])) {
                        bad_b = min(bad_b, mm_b_index(k + j, gn));
                    }
                    if (checks_a) {
                        for (var i = 0u; i < ROWS; i++) {
                            if (is_non_finite(av[j][i])) {
                                bad_a = min(bad_a, (params.row_base + row0 + i) * params.k + k + j);
                            }
                        }
                    }
                    // Product rounded, then the sum (no fma), k ascending (mm_pin4).
                    sum = sum + mm_pin4(av[j] * bv[j]);
                }
            }
        }
        gemv_fold(t, own.x, own.y, round, sum, &total);
    }
    gemv_finish(t, row0, col0, total, bad_a, bad_b);
}
