// BitLinear GEMV on quantized activations for 1 <= M <= 8 and K % 64 == 0 (vec4 weight loads),
// with subgroup reductions.
//
// Row blocks, lanes and the reduction are those of bitlinear_gemv_blocks.wgsl (its DEPTH is not
// used: one step is loaded ahead). MR = M is an override constant; each row's partial sums and
// activation sum are named variables updated by a helper called once per row with a constant m
// (rows m >= MR compile away): WGSL cannot unroll a row loop, and arrays indexed by it were kept
// in local memory (160 bytes per thread for M >= 2 on the H200, bench/examples/kernel_stats.rs).
// Activations are read straight from the (small, cache-resident) activation
// buffer as vec4 words; each thread also sums the activations it touched per row and subtracts
// that partial row sum from its partial accumulators before the reduction (exact: integer sums
// distribute), which turns the code-domain sums into sum(x * w).
//
// Needs bitlinear_common.wgsl and bitlinear_gemv_blocks.wgsl.

// Activation rows of this dispatch (override constant; the engine sets it to params.m).
override MR: u32 = 1u;

// Row m's products and activation sum for weight step w at vec4 j.
fn gq_step(acc: ptr<function, vec4<i32>>, rs: ptr<function, i32>, w: GvRows, m: u32, j: u32) {
    if (m < MR) {
        let b = m * params.words_per_row + 4u * j;
        let xa = act[b];
        let xb = act[b + 1u];
        let xc = act[b + 2u];
        let xd = act[b + 3u];
        *rs += bitlinear_sum_words(xa.x, xa.y, xa.z, xa.w)
            + bitlinear_sum_words(xb.x, xb.y, xb.z, xb.w)
            + bitlinear_sum_words(xc.x, xc.y, xc.z, xc.w)
            + bitlinear_sum_words(xd.x, xd.y, xd.z, xd.w);
        *acc += gv_dot(w, xa, xb, xc, xd);
    }
}

// Reduces row m's sums over the lanes, rescales and stores them (uniform control flow).
fn gq_store(acc: vec4<i32>, rs: i32, m: u32, ids: GvIds, s: f32) {
    if (m < MR) {
        let total = gv_reduce(acc - vec4<i32>(rs), ids);
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
    var a0 = vec4<i32>();
    var a1 = vec4<i32>();
    var a2 = vec4<i32>();
    var a3 = vec4<i32>();
    var a4 = vec4<i32>();
    var a5 = vec4<i32>();
    var a6 = vec4<i32>();
    var a7 = vec4<i32>();
    var s0 = 0i;
    var s1 = 0i;
    var s2 = 0i;
    var s3 = 0i;
    var s4 = 0i;
    var s5 = 0i;
    var s6 = 0i;
    var s7 = 0i;

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
        gq_step(&a0, &s0, w, 0u, j);
        gq_step(&a1, &s1, w, 1u, j);
        gq_step(&a2, &s2, w, 2u, j);
        gq_step(&a3, &s3, w, 3u, j);
        gq_step(&a4, &s4, w, 4u, j);
        gq_step(&a5, &s5, w, 5u, j);
        gq_step(&a6, &s6, w, 6u, j);
        gq_step(&a7, &s7, w, 7u, j);
        w = next;
        j = jn;
    }

    let s = weight_scale[0];
    gq_store(a0, s0, 0u, ids, s);
    gq_store(a1, s1, 1u, ids, s);
    gq_store(a2, s2, 2u, ids, s);
    gq_store(a3, s3, 3u, ids, s);
    gq_store(a4, s4, 4u, ids, s);
    gq_store(a5, s5, 5u, ids, s);
    gq_store(a6, s6, 6u, ids, s);
    gq_store(a7, s7, 7u, ids, s);
}
