// BitLinear GEMV on quantized activations for 1 <= M <= 8 and K % 64 == 0 (vec4 weight loads),
// with subgroup reductions.
//
// Row blocks, lanes and the reduction are those of bitlinear_gemv_blocks.wgsl (its DEPTH is not
// used: one step is loaded ahead). MR = M is an override constant, so the per-row loops have a
// constant trip count and the MR x 4 partial sums stay in registers. (A version with one named
// accumulator struct per row instead of these arrays ran 2-3x slower on the H200 for K >= 6912.) Activations are read straight from the (small, cache-resident) activation
// buffer as vec4 words; each thread also sums the activations it touched per row and subtracts
// that partial row sum from its partial accumulators before the reduction (exact: integer sums
// distribute), which turns the code-domain sums into sum(x * w).
//
// Needs bitlinear_common.wgsl and bitlinear_gemv_blocks.wgsl.

// Activation rows of this dispatch (override constant; the engine sets it to params.m).
override MR: u32 = 1u;
const GV_MAX_M: u32 = 8u;

@compute @workgroup_size(256)
fn main(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(subgroup_invocation_id) lane: u32,
    @builtin(subgroup_id) sg: u32,
    @builtin(subgroup_size) sg_size: u32,
) {
    let ids = gv_ids(wid, nwg, lane, sg, sg_size);
    let vpr = params.words_per_row / 4u;
    // Activation vec4 per row: 4 * words_per_row words.
    let xvr = params.words_per_row;
    var acc: array<vec4<i32>, GV_MAX_M>;
    var row_sum: array<i32, GV_MAX_M>;

    var w = GvRows();
    var j = ids.l;
    if (j < vpr) {
        w = gv_load(ids.n, j, vpr);
    }
    loop {
        if (j >= vpr) {
            break;
        }
        // Issue the next step's loads before this step's arithmetic.
        let jn = j + TPR;
        var next = w;
        if (jn < vpr) {
            next = gv_load(ids.n, jn, vpr);
        }
        for (var m = 0u; m < MR; m = m + 1u) {
            let b = m * xvr + 4u * j;
            let xa = act[b];
            let xb = act[b + 1u];
            let xc = act[b + 2u];
            let xd = act[b + 3u];
            row_sum[m] += bitlinear_sum_words(xa.x, xa.y, xa.z, xa.w)
                + bitlinear_sum_words(xb.x, xb.y, xb.z, xb.w)
                + bitlinear_sum_words(xc.x, xc.y, xc.z, xc.w)
                + bitlinear_sum_words(xd.x, xd.y, xd.z, xd.w);
            acc[m] += gv_dot(w, xa, xb, xc, xd);
        }
        w = next;
        j = jn;
    }

    let s = weight_scale[0];
    for (var m = 0u; m < MR; m = m + 1u) {
        let total = gv_reduce(acc[m] - vec4<i32>(row_sum[m]), ids);
        if (ids.l == 0u) {
            let scale = bitlinear_scale(s, act_absmax[params.m_base + m]);
            let base = m * params.out_stride + params.out_base + ids.n;
            for (var r = 0u; r < 4u; r = r + 1u) {
                if (ids.n + r < params.n) {
                    bitlinear_write(base + r, total[r], scale);
                }
            }
        }
    }
}
