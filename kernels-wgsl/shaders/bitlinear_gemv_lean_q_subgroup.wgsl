// BitLinear GEMV on quantized activations for 1 <= M <= 8 and K % 64 == 0 with no workgroup
// barrier when a 4-row block fits in a subgroup (TPR <= subgroup size): the second dispatch of
// the two-dispatch batched decode (act_quant of the M rows, then this). Autotune candidate.
//
// The main loop is bitlinear_gemv_vec4_subgroup.wgsl's (activations read straight from the
// small, cache-resident buffer, partial row sums subtracted per lane). The epilogue is the lean
// GEMV's (bitlinear_gemv_lean_subgroup.wgsl): a subgroupShuffleXor butterfly leaves every lane
// of the block with all 4 M totals and the lanes write them in parallel; blocks wider than a
// subgroup combine their subgroups' totals through workgroup memory (one barrier). Needs a
// subgroup size of at least 8 (the engine checks).
//
// Needs bitlinear_common.wgsl and bitlinear_gemv_blocks.wgsl.

// Activation rows of this dispatch (override constant; the engine sets it to params.m).
override MR: u32 = 1u;
const GV_MAX_M: u32 = 8u;

// Wide blocks only: each subgroup's totals, index subgroup * MR + m (subgroups of >= 8 lanes).
var<workgroup> gq_red: array<vec4<i32>, 256>;

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

    // Reduce over the block's lanes: butterfly within the subgroup (every lane ends with the
    // totals), then, for blocks wider than a subgroup, through workgroup memory.
    let seg = min(TPR, sg_size);
    for (var m = 0u; m < MR; m = m + 1u) {
        acc[m] -= vec4<i32>(row_sum[m]);
    }
    for (var o = seg >> 1u; o > 0u; o = o >> 1u) {
        for (var m = 0u; m < MR; m = m + 1u) {
            acc[m] += subgroupShuffleXor(acc[m], o);
        }
    }
    let wide = TPR > sg_size;
    if (wide) {
        if (lane == 0u) {
            for (var m = 0u; m < MR; m = m + 1u) {
                gq_red[sg * MR + m] = acc[m];
            }
        }
        workgroupBarrier();
    }
    // The block's first `seg` lanes write its 4 MR outputs, one each per round.
    let first = (ids.vt / TPR) * max(TPR / sg_size, 1u);
    if (ids.l < seg) {
        let s = weight_scale[0];
        for (var o = ids.l; o < 4u * MR; o = o + seg) {
            let mo = o >> 2u;
            let r = o & 3u;
            var total = 0i;
            for (var m = 0u; m < MR; m = m + 1u) {
                if (m == mo) {
                    total = acc[m][r];
                }
            }
            if (wide) {
                total = 0i;
                for (var sub = 0u; sub < TPR / sg_size; sub = sub + 1u) {
                    total += gq_red[(first + sub) * MR + mo][r];
                }
            }
            if (ids.n + r < params.n) {
                let idx = mo * params.out_stride + params.out_base + ids.n + r;
                bitlinear_write(idx, total, bitlinear_scale(s, act_absmax[params.m_base + mo]));
            }
        }
    }
}
